"""Slack incoming webhook with Block Kit: a header, the facts as fields, the probable cause and
the related anomalies. ``text`` is the notification fallback Slack shows where blocks cannot be.

The webhook URL carries its token, so ``url`` should be a reference (``env:``/``file:``). Slack
answers 200 ``ok``; 429 with ``Retry-After`` when rate limited; 400/403/404 for a bad payload or
a revoked hook (final). Incoming webhooks have no idempotency key: delivery sends each
notification once per success (a crash between Slack's answer and the record of it may repeat it).
"""

from __future__ import annotations

from typing import Any

from integrations import render, secrets
from integrations.context import Context
from integrations.notification import Notification
from integrations.outcome import Outcome, request

MAX_TEXT = 3000  # a section's text limit


def payload(n: Notification) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": render.title(n)[:150], "emoji": True}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in render.facts(n)[:10]]},
    ]
    if cause := render.probable_cause(n):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": (
            "*Probable cause (trace bottlenecks)*\n" + "\n".join(f"• {c}" for c in cause))[:MAX_TEXT]}})
    if others := render.related(n):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": (
            "*Related anomalies*\n" + "\n".join(f"• {o}" for o in others))[:MAX_TEXT]}})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"m1 · workflow `{n.workflow}` · notification `{n.id}`"}]})
    return {"text": render.title(n), "blocks": blocks}


async def deliver(ctx: Context, n: Notification) -> Outcome:
    return await request(ctx.session, "POST", secrets.maybe_ref(n.receiver.url), json_body=payload(n),
                         timeout=ctx.timeout)
