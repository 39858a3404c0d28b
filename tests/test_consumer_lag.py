"""The batch consumer's lag (``BatchConsumer.lag``, served as ``m1_consumer_lag_records``) on the
real broker: it counts what waits behind a batch that is not handled yet, and falls to zero."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from core.settings import Settings
from core.kafka.topics import ensure_topics
from streams.batch_consumer import BatchConsumer, KafkaEvent
from streams.publisher import Publisher

pytestmark = pytest.mark.kafka


async def lag_becomes(consumer: BatchConsumer, expected: Callable[[dict[int, int]], bool], timeout: float = 30.0) -> dict:
    """The consumer's lag by partition, once ``expected`` holds for it (TimeoutError otherwise)."""
    async with asyncio.timeout(timeout):
        while not expected(lag := {tp.partition: n for tp, n in (await consumer.lag()).items()}):
            await asyncio.sleep(0.2)
    return lag


async def test_lag_counts_records_behind_a_waiting_batch_then_falls_to_zero(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    await asyncio.to_thread(ensure_topics, settings)  # it runs a loop of its own
    release = asyncio.Event()

    async def handler(events: Sequence[KafkaEvent]) -> None:
        await release.wait()  # a batch the store does not take yet

    consumer = BatchConsumer(settings, settings.topic_metrics, f"{settings.app_id}-lag", handler, checkpoints=[])
    publisher = Publisher(settings)
    records = [(settings.topic_metrics, f"key-{i}".encode(), b"{}") for i in range(150)]
    await publisher.start()
    try:
        await publisher.publish(records[:100])
        await consumer.start()
        await lag_becomes(consumer, lambda lag: len(lag) == settings.topic_partitions and sum(lag.values()) == 100)
        await publisher.publish(records[100:])  # arrive while the batch waits: the lag grows
        await lag_becomes(consumer, lambda lag: sum(lag.values()) == 150)
        release.set()
        await lag_becomes(consumer, lambda lag: len(lag) == settings.topic_partitions and not any(lag.values()))
    finally:
        release.set()
        await consumer.stop()
        await publisher.stop()
