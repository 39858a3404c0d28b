"""Receiver types and their clients: ``deliver(ctx, notification) -> Outcome`` and ``payload``.

>>> from integrations.notification import RECEIVER_TYPES
>>> sorted(CLIENTS) == sorted(RECEIVER_TYPES)
True
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from integrations import (alertmanager, email_smtp, jira, kafka_topic, opsgenie, pagerduty, slack, teams,
                          webhook)
from integrations.context import Context
from integrations.notification import Notification, Receiver
from integrations.outcome import Outcome
from integrations.secrets import MissingSecret, check_ref

CLIENTS: dict[str, ModuleType] = {
    "webhook": webhook, "alertmanager": alertmanager, "slack": slack, "teams": teams, "pagerduty": pagerduty,
    "opsgenie": opsgenie, "jira": jira, "email": email_smtp, "kafka": kafka_topic,
}


def check(receiver: Receiver) -> Receiver:
    """``receiver`` if its type is known and its secrets are references; ``ValueError`` otherwise."""
    if receiver.type not in CLIENTS:
        raise ValueError(f"receiver {receiver.name!r}: unknown type {receiver.type!r} (one of {', '.join(CLIENTS)})")
    check_ref(receiver.secret_ref)
    for key, value in receiver.options.items():
        if key.endswith("_ref"):
            check_ref(value)
    return receiver


async def deliver(ctx: Context, n: Notification) -> Outcome:
    """One attempt to deliver ``n``; a bad receiver or a missing secret is a final failure."""
    try:
        check(n.receiver)
        return await CLIENTS[n.receiver.type].deliver(ctx, n)
    except (ValueError, MissingSecret) as exc:
        return Outcome(False, reason=f"config: {exc}")


@lru_cache(maxsize=None)
def schema(receiver_type: str) -> dict:
    """The JSON Schema of ``receiver_type``'s payload, written from the vendor's documentation."""
    return json.loads((Path(__file__).parent / "schemas" / f"{receiver_type}.json").read_text())
