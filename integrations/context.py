"""What a receiver's client needs to send: an HTTP session, the settings, a Kafka publisher."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import aiohttp

from core.settings import Settings

#: Publishes ``(topic, key, value)`` records and returns once Kafka acknowledged them.
Publish = Callable[[Iterable[tuple[str, bytes | None, bytes]]], Awaitable[int]]


@dataclass(frozen=True)
class Context:
    session: aiohttp.ClientSession
    settings: Settings
    publish: Publish | None = None

    @property
    def timeout(self) -> float:
        return self.settings.delivery_timeout_seconds
