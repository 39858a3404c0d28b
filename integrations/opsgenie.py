"""Opsgenie Alert API: create (``POST /v2/alerts``), acknowledge and close
(``POST /v2/alerts/{alias}/acknowledge|close?identifierType=alias``), authorised by
``Authorization: GenieKey <key>`` (the key from ``secret_ref``).

``alias`` is the incident's id: Opsgenie keeps one open alert per alias, so a replayed create is
de-duplicated. Opsgenie answers 202 (the request is processed asynchronously); 429 when rate
limited.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote

from integrations import render, secrets
from integrations.context import Context
from integrations.notification import Notification
from integrations.outcome import Outcome, request

DEFAULT_URL = "https://api.opsgenie.com"
PRIORITIES = {"critical": "P1", "error": "P2", "warning": "P3", "info": "P5"}


def alias(n: Notification) -> str:
    """The alert's alias: readable, URL-safe and unique per incident."""
    digest = hashlib.sha256(render.incident_id(n).encode()).hexdigest()[:16]
    return f"m1-{n.tenant}-{digest}"


def responders(spec: str) -> list[dict[str, str]]:
    """``team:ops,user:a@b.c,escalation:x,schedule:y`` as Opsgenie responders."""
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        kind, _, name = item.partition(":")
        out.append({"type": kind, "username" if kind == "user" else "name": name})
    return out


def payload(n: Notification) -> dict[str, Any]:
    """The create body (trigger), or the acknowledge/close body."""
    if n.kind != "trigger":
        return {"user": "m1", "source": "M1 Analytics", "note": render.title(n)}
    body: dict[str, Any] = {
        "message": render.title(n)[:130], "alias": alias(n), "description": render.text(n)[:15000],
        "tags": [f"{k}:{v}"[:50] for k, v in render.labels(n).items()][:20],
        "details": {k: v for k, v in render.facts(n)}, "entity": str(n.incident.get("service", ""))[:512],
        "source": "M1 Analytics", "priority": PRIORITIES.get(render.severity(n), "P3"),
    }
    if spec := n.receiver.options.get("responders", ""):
        body["responders"] = responders(spec)
    return body


def endpoint(n: Notification) -> str:
    base = (secrets.maybe_ref(n.receiver.url) or DEFAULT_URL).rstrip("/") + "/v2/alerts"
    if n.kind == "trigger":
        return base
    action = "acknowledge" if n.kind == "acknowledge" else "close"
    return f"{base}/{quote(alias(n), safe='')}/{action}?identifierType=alias"


async def deliver(ctx: Context, n: Notification) -> Outcome:
    headers = {"Authorization": f"GenieKey {secrets.resolve(n.receiver.secret_ref)}"}
    return await request(ctx.session, "POST", endpoint(n), json_body=payload(n), headers=headers, timeout=ctx.timeout)
