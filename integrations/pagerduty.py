"""PagerDuty Events API v2 (``POST /v2/enqueue``): trigger, acknowledge and resolve one alert.

``dedup_key`` is the incident's tenant-qualified id, so every notification of an incident acts on
the same PagerDuty alert and a replayed trigger is merged into it. The routing (integration) key
comes from the option ``routing_key_ref`` or else ``secret_ref``. PagerDuty answers 202; 400 for an invalid event (final); 429 and 5xx are
retried.
"""

from __future__ import annotations

from typing import Any

from integrations import render, secrets
from integrations.context import Context
from integrations.notification import Notification
from integrations.outcome import Outcome, request

DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"
SEVERITIES = {"critical": "critical", "error": "error", "warning": "warning", "info": "info"}


def payload(n: Notification, routing_key: str) -> dict[str, Any]:
    event: dict[str, Any] = {"routing_key": routing_key, "event_action": n.kind,
                             "dedup_key": render.incident_id(n)[:255]}
    if n.kind == "trigger":
        event["payload"] = {
            "summary": render.title(n)[:1024],
            "source": str(n.incident.get("service") or n.tenant),
            "severity": SEVERITIES.get(render.severity(n), "warning"),
            "timestamp": render.iso(n.incident.get("started_at") or n.created_ts) or None,
            "component": n.incident.get("service"),
            "group": n.incident.get("region"),
            "class": "anomaly",
            "custom_details": {"facts": dict(render.facts(n)), "probable_cause": render.probable_cause(n),
                               "related": render.related(n), "labels": render.labels(n)},
        }
        event["payload"] = {k: v for k, v in event["payload"].items() if v not in (None, "")}
        event["client"] = "M1 Analytics"
    return event


async def deliver(ctx: Context, n: Notification) -> Outcome:
    body = payload(n, secrets.resolve(n.receiver.options.get("routing_key_ref") or n.receiver.secret_ref))
    return await request(ctx.session, "POST", secrets.maybe_ref(n.receiver.url) or DEFAULT_URL, json_body=body,
                         timeout=ctx.timeout)
