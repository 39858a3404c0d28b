"""Microsoft Teams: an Adaptive Card in a message attachment, as Teams' incoming webhooks and
Workflows (Power Automate "When a Teams webhook request is received") take it.

The URL carries its signature, so ``url`` should be a reference. Teams answers 200 (classic
connector) or 202 (Workflows); 429 when throttled.
"""

from __future__ import annotations

from typing import Any

from integrations import render, secrets
from integrations.context import Context
from integrations.notification import Notification
from integrations.outcome import Outcome, request

CARD_VERSION = "1.4"
COLOR = {"critical": "Attention", "warning": "Warning"}


def payload(n: Notification) -> dict[str, Any]:
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": render.title(n), "weight": "Bolder", "size": "Medium", "wrap": True,
         "color": "Good" if n.kind == "resolve" else COLOR.get(render.severity(n), "Default")},
        {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in render.facts(n)]},
    ]
    if cause := render.probable_cause(n):
        body += [{"type": "TextBlock", "text": "Probable cause (trace bottlenecks)", "weight": "Bolder", "wrap": True},
                 {"type": "TextBlock", "text": "\n".join(f"- {c}" for c in cause), "wrap": True}]
    if others := render.related(n):
        body += [{"type": "TextBlock", "text": "Related anomalies", "weight": "Bolder", "wrap": True},
                 {"type": "TextBlock", "text": "\n".join(f"- {o}" for o in others), "wrap": True}]
    card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
            "version": CARD_VERSION, "body": body}
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]}


async def deliver(ctx: Context, n: Notification) -> Outcome:
    return await request(ctx.session, "POST", secrets.maybe_ref(n.receiver.url), json_body=payload(n),
                         timeout=ctx.timeout)
