"""Tuned aiokafka producers: one for sending many keyed records (demo, benchmark, tests), and a
transactional one for the records a consumer forwards (``streams.publisher.Forwarder``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer

from core.kafka.security import client_kwargs
from core.settings import Settings

#: How long a transaction may stay open before the broker aborts it: the longest a crashed
#: worker's open transaction holds back ``read_committed`` readers of the partitions it wrote to.
TRANSACTION_TIMEOUT_MS = 60_000


def make_producer(settings: Settings, transactional_id: str | None = None) -> AIOKafkaProducer:
    """An all-acks producer that batches, logged in as the settings say (start it with ``await p.start()``);
    with ``transactional_id``, an idempotent producer whose sends must be in a transaction."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        acks="all",
        linger_ms=10,
        max_batch_size=512 * 1024,
        **({"transactional_id": transactional_id, "transaction_timeout_ms": TRANSACTION_TIMEOUT_MS}
           if transactional_id else {}),
        **client_kwargs(settings),
    )


async def send_all(producer: AIOKafkaProducer, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> int:
    """Send ``(key, value)`` records and wait until the broker has acknowledged all of them."""
    futures = [await producer.send(topic, value, key=key) for key, value in records]
    await asyncio.gather(*futures)
    return len(futures)
