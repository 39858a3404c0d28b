"""The contract between the workflow engine and delivery: a ``Notification`` to one ``Receiver``.

The engine's notify step publishes each Notification as JSON (key = ``id``) to the outbox topic
``settings.topic_notifications``; the delivery agent consumes it. ``id`` is the idempotency key:
stable across replays, so a receiver that de-duplicates on it never notifies twice.

>>> r = Receiver(type="webhook", name="ops", url="http://127.0.0.1:9/hook", secret_ref="env:OPS")
>>> n = Notification(id="n1", tenant="acme", workflow="wf", kind="trigger", receiver=r,
...                  incident={"id": "inc-1", "title": "latency", "severity": "critical"})
>>> decode(encode(n)) == n
True
>>> notification_id("acme", "wf", "svc=a", "inc-1", 0, "trigger", "ops") != notification_id(
...     "acme", "wf", "svc=a", "inc-1", 0, "trigger", "pager")
True
"""

from __future__ import annotations

import hashlib

import msgspec

RECEIVER_TYPES = ("webhook", "alertmanager", "slack", "teams", "pagerduty", "opsgenie", "jira",
                  "email", "kafka")
KINDS = ("trigger", "acknowledge", "resolve")


class Receiver(msgspec.Struct, frozen=True):
    """Where a notification goes. ``secret_ref`` is ``env:NAME`` or ``file:/path``, never a
    secret in clear; ``options`` are per type (routing_key_ref, project, to, topic, ...)."""

    type: str
    name: str
    url: str = ""
    secret_ref: str = ""
    options: dict[str, str] = {}


class Notification(msgspec.Struct, frozen=True):
    """One thing to tell one receiver about one incident (``kind``: trigger|acknowledge|resolve).

    ``incident`` holds id, title, severity, status, service, region, started_at, timeline[],
    labels; ``enrichment`` the service's trace bottlenecks at that time and related anomalies."""

    id: str
    tenant: str
    workflow: str
    kind: str
    receiver: Receiver
    incident: dict
    enrichment: dict = {}
    created_ts: float = 0.0
    source_ts: float = 0.0


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Notification)


def encode(notification: Notification) -> bytes:
    """The notification as JSON bytes (the outbox record's value)."""
    return _encoder.encode(notification)


def decode(raw: bytes | str) -> Notification:
    """A notification from JSON; raises ``msgspec.ValidationError`` on a bad record."""
    return _decoder.decode(raw)


def notification_id(tenant: str, workflow: str, group_key: str, incident_id: str, step: int,
                    kind: str, receiver: str, level: int = 0) -> str:
    """The idempotency key: a stable hash of what makes a notification the same one on replay.

    The receiver is part of it: one acknowledge or resolve told to two receivers is two
    notifications, and delivery skips an id it has finished."""
    parts = "\x1f".join((tenant, workflow, group_key, incident_id, str(step), kind, receiver, str(level)))
    return hashlib.sha256(parts.encode()).hexdigest()[:32]
