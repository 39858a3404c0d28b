"""A tuned aiokafka producer for sending many keyed records (demo, benchmark, tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer

from core.kafka.security import client_kwargs
from core.settings import Settings


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """An all-acks producer that batches, logged in as the settings say (start it with ``await p.start()``)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        acks="all",
        linger_ms=10,
        max_batch_size=512 * 1024,
        **client_kwargs(settings),
    )


async def send_all(producer: AIOKafkaProducer, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> int:
    """Send ``(key, value)`` records and wait until the broker has acknowledged all of them."""
    futures = [await producer.send(topic, value, key=key) for key, value in records]
    await asyncio.gather(*futures)
    return len(futures)
