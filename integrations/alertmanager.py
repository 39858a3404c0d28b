"""Alertmanager-compatible webhook: the body Prometheus Alertmanager's ``webhook_config`` POSTs
(``version "4"``), so receivers written for Alertmanager take it unchanged.

The incident is one alert (``status`` firing, or resolved with ``endsAt``); its group is the
workflow's group (``groupKey``). Alertmanager has no acknowledgement: an ``acknowledge`` is sent as
firing with the annotation ``acknowledged: "true"``. Requests carry the Standard Webhooks headers
too (``webhook-id`` for de-duplication; a signature when the receiver has a secret).
"""

from __future__ import annotations

import hashlib
from typing import Any

from integrations import render, webhook
from integrations.context import Context
from integrations.notification import Notification
from integrations.outcome import Outcome

ZERO_TIME = "0001-01-01T00:00:00Z"


def payload(n: Notification, external_url: str = "") -> dict[str, Any]:
    status = "resolved" if n.kind == "resolve" else "firing"
    labels = {"alertname": str(n.incident.get("title") or "m1_anomaly"), "incident": str(n.incident.get("id", "")),
              **render.labels(n)}
    annotations = {"summary": render.title(n), "description": render.text(n)}
    if cause := render.probable_cause(n):
        annotations["probable_cause"] = "; ".join(cause)
    if n.kind == "acknowledge":
        annotations["acknowledged"] = "true"
    group_labels = {"tenant": n.tenant, "workflow": n.workflow}
    fingerprint = hashlib.sha256(render.incident_id(n).encode()).hexdigest()[:16]
    ends = render.iso(n.incident.get("resolved_at") or n.created_ts) if status == "resolved" else ZERO_TIME
    alert = {"status": status, "labels": labels, "annotations": annotations,
             "startsAt": render.iso(n.incident.get("started_at")) or render.iso(n.created_ts) or ZERO_TIME,
             "endsAt": ends or ZERO_TIME, "generatorURL": external_url, "fingerprint": fingerprint}
    return {
        "version": "4",
        "groupKey": "{}:{" + ", ".join(f'{k}="{v}"' for k, v in group_labels.items()) + "}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": n.receiver.name,
        "groupLabels": group_labels,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [alert],
    }


async def deliver(ctx: Context, n: Notification) -> Outcome:
    body = payload(n, ctx.settings.integrations_external_url)
    return await webhook.post(ctx.session, n.receiver, n.id, body, ctx.timeout)
