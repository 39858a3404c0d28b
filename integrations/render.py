"""What every receiver says about an incident: a title, facts, what is probably wrong, and links.

The payload modules shape these into each vendor's format; the words are the same everywhere.

>>> from integrations.notification import Notification, Receiver
>>> n = Notification(id="n1", tenant="acme", workflow="latency", kind="trigger",
...     receiver=Receiver(type="slack", name="ops"),
...     incident={"id": "inc-1", "title": "checkout p99 latency", "severity": "critical", "status": "open",
...               "service": "checkout", "region": "eu-west-1", "started_at": 1700000000.0},
...     enrichment={"bottlenecks": [{"operation": "SELECT orders", "service": "db", "share": 0.62}],
...                 "related": [{"service": "checkout", "metric": "error_rate", "score": 0.81}]})
>>> title(n)
'[CRITICAL] checkout p99 latency'
>>> facts(n)[:3]
[('Service', 'checkout'), ('Region', 'eu-west-1'), ('Severity', 'critical')]
>>> probable_cause(n)
['db SELECT orders: 62% of the time']
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from integrations.notification import Notification

KIND_WORDS = {"trigger": "", "acknowledge": "Acknowledged: ", "resolve": "Resolved: "}


def incident_id(n: Notification) -> str:
    """The incident's id, tenant-qualified (ids are unique per tenant)."""
    return f"{n.tenant}/{n.incident.get('id', '')}"


def iso(ts: Any) -> str:
    """An RFC 3339 UTC time of a Unix time (``""`` for none)."""
    if not isinstance(ts, (int, float)) or ts <= 0:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def severity(n: Notification) -> str:
    return str(n.incident.get("severity", "warning"))


def title(n: Notification) -> str:
    """``[SEVERITY] title``, prefixed by what happened for an acknowledgement or a resolve."""
    name = n.incident.get("title") or f"{n.incident.get('service', '?')} anomaly"
    return f"{KIND_WORDS.get(n.kind, '')}[{severity(n).upper()}] {name}"


def facts(n: Notification) -> list[tuple[str, str]]:
    """Name/value facts about the incident, in a fixed order, empty ones left out."""
    pairs = [("Service", n.incident.get("service")), ("Region", n.incident.get("region")),
             ("Severity", severity(n)), ("Status", n.incident.get("status")),
             ("Started", iso(n.incident.get("started_at"))), ("Incident", n.incident.get("id")),
             ("Tenant", n.tenant), ("Workflow", n.workflow)]
    return [(name, str(value)) for name, value in pairs if value not in (None, "")]


def probable_cause(n: Notification) -> list[str]:
    """One line per trace bottleneck of the service at that time (the likeliest first)."""
    lines = []
    for b in n.enrichment.get("bottlenecks", [])[:5]:
        share = b.get("share")
        where = " ".join(str(x) for x in (b.get("service"), b.get("operation")) if x)
        lines.append(f"{where}: {share:.0%} of the time" if isinstance(share, (int, float)) else where)
    return lines


def related(n: Notification) -> list[str]:
    """One line per other anomaly of the same incident."""
    return [" ".join(f"{k}={v}" for k, v in a.items() if v not in (None, ""))
            for a in n.enrichment.get("related", [])[:10]]


def text(n: Notification) -> str:
    """The whole message as plain text (email body, Jira and Opsgenie descriptions)."""
    out = [title(n), ""] + [f"{k}: {v}" for k, v in facts(n)]
    if cause := probable_cause(n):
        out += ["", "Probable cause (trace bottlenecks):"] + [f"- {line}" for line in cause]
    if others := related(n):
        out += ["", "Related anomalies:"] + [f"- {line}" for line in others]
    return "\n".join(out)


def labels(n: Notification) -> dict[str, str]:
    """The incident's labels with tenant, service, region and severity, as strings."""
    base = {k: str(v) for k, v in (n.incident.get("labels") or {}).items()}
    for key in ("service", "region"):
        if n.incident.get(key):
            base.setdefault(key, str(n.incident[key]))
    return {"tenant": n.tenant, "severity": severity(n), **base}
