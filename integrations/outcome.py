"""One HTTP attempt and its :class:`Outcome`: delivered, worth retrying (when), or refused for good.

2xx is delivered. 408, 425, 429 and 5xx, a timeout or a broken connection are retried, honouring
``Retry-After`` (seconds or an HTTP date). Any other answer is final: the request is wrong and
sending it again would not change that.

>>> classify(202, {}).delivered, classify(429, {"Retry-After": "7"}).retry_after, classify(400, {}).retryable
(True, 7.0, False)
>>> classify(503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}).retry_after
0.0
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import msgspec

RETRYABLE_STATUSES = frozenset({408, 425, 429})
REASON_CHARS = 300


class Outcome(msgspec.Struct, frozen=True):
    """What one attempt came to. ``status``: the HTTP status or SMTP code, 0 without an answer."""

    delivered: bool
    retryable: bool = False
    status: int = 0
    reason: str = ""
    retry_after: float | None = None
    body: Any = None  # the parsed JSON answer, when there is one


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds ``Retry-After`` asks to wait (an HTTP date in the past is 0), or ``None``."""
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def classify(status: int, headers: Mapping[str, str], body: Any = None, text: str = "") -> Outcome:
    """The outcome of an answer with ``status``."""
    if 200 <= status < 300:
        return Outcome(True, status=status, body=body)
    retryable = status in RETRYABLE_STATUSES or status >= 500
    reason = f"http {status}: {' '.join(text.split())[:REASON_CHARS]}".rstrip(": ")
    return Outcome(False, retryable, status, reason, retry_after(headers) if retryable else None, body)


def failure(exc: BaseException) -> Outcome:
    """The outcome of an attempt that got no answer (timeout, refused or reset connection)."""
    if isinstance(exc, asyncio.TimeoutError):
        return Outcome(False, True, reason="timeout")
    return Outcome(False, True, reason=f"connection: {type(exc).__name__}: {exc}"[:REASON_CHARS])


async def request(session: aiohttp.ClientSession, method: str, url: str, *, json_body: Any = None,
                  data: bytes | None = None, headers: Mapping[str, str] | None = None,
                  timeout: float = 10.0) -> Outcome:
    """Send one request and classify its answer; the answer's JSON (if any) is in ``body``."""
    if json_body is not None:
        data = msgspec.json.encode(json_body)
        headers = {"Content-Type": "application/json", **(headers or {})}
    try:
        async with session.request(method, url, data=data, headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            text = await response.text()
            try:
                body = msgspec.json.decode(text) if text else None
            except msgspec.DecodeError:
                body = None
            return classify(response.status, response.headers, body, text)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        return failure(exc)
