"""Generic webhook, signed per Standard Webhooks (https://www.standardwebhooks.com/).

Headers: ``webhook-id`` (the notification id: the same on every retry, so a receiver drops
duplicates by it), ``webhook-timestamp`` (Unix seconds of the attempt) and ``webhook-signature``:
``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` under the ``whsec_<base64 key>`` secret. During a
rotation the secret reference holds two secrets (whitespace-separated) and each gets its signature,
space-delimited, so a receiver that knows either verifies.

The body is ``{"type": "incident.<kind>", "timestamp": RFC 3339, "data": {...}}``.

>>> signature("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
...           b'{"test": 2432232314}')
'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import aiohttp
import msgspec

from integrations import render, secrets
from integrations.context import Context
from integrations.notification import Notification, Receiver
from integrations.outcome import Outcome, request


def key_of(secret: str) -> bytes:
    """The HMAC key of a ``whsec_``-prefixed base64 secret (any other string is used as bytes)."""
    return base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_") else secret.encode()


def signature(secrets_: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one ``v1,<sig>`` per whitespace-separated secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join("v1," + base64.b64encode(hmac.new(key_of(s), signed, hashlib.sha256).digest()).decode()
                    for s in secrets_.split())


def signed_headers(secret: str, msg_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The Standard Webhooks headers of ``body`` (no signature without a secret)."""
    ts = int(time.time() if now is None else now)
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(ts), "Content-Type": "application/json"}
    if secret:
        headers["webhook-signature"] = signature(secret, msg_id, ts, body)
    return headers


def payload(n: Notification) -> dict[str, Any]:
    """The event body: type, timestamp and the notification's data (secrets excluded)."""
    return {
        "type": f"incident.{n.kind}",
        "timestamp": render.iso(n.created_ts or time.time()),
        "data": {"id": n.id, "tenant": n.tenant, "workflow": n.workflow, "kind": n.kind,
                 "receiver": n.receiver.name, "title": render.title(n), "incident": n.incident,
                 "enrichment": n.enrichment},
    }


async def post(session: aiohttp.ClientSession, receiver: Receiver, msg_id: str, body: dict[str, Any],
               timeout: float) -> Outcome:
    """POST ``body`` to the receiver's URL, signed with its secret."""
    raw = msgspec.json.encode(body)
    headers = signed_headers(secrets.resolve(receiver.secret_ref), msg_id, raw)
    return await request(session, "POST", secrets.maybe_ref(receiver.url), data=raw, headers=headers, timeout=timeout)


async def deliver(ctx: Context, n: Notification) -> Outcome:
    return await post(ctx.session, n.receiver, n.id, payload(n), ctx.timeout)


async def call(receiver: Receiver, body: dict[str, Any], msg_id: str | None = None,
               timeout: float = 10.0) -> tuple[int, Any]:
    """POST ``body`` signed, and return ``(status, parsed JSON answer or None)``; status 0 when no
    answer came (timeout, refused connection). For a workflow step that branches on the answer."""
    msg_id = msg_id or "msg_" + hashlib.sha256(msgspec.json.encode(body)).hexdigest()[:32]
    async with aiohttp.ClientSession() as session:
        outcome = await post(session, receiver, msg_id, body, timeout)
    return outcome.status, outcome.body
