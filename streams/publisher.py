"""Publish a batch's output records to Kafka in whole producer batches.

The metrics topic's handlers emit thousands of small records per batch (forecasts, anomalies,
dead letters, re-keyed points). Sent one by one through Faust's ``topic.send``, each costs far
more than its bytes (``docs/benchmarks.md``); :class:`Publisher` instead groups them by
topic-partition and hands the producer full batches, then waits for the broker's
acknowledgements, so a caller that awaits :meth:`Publisher.publish` knows every record is
stored before it commits its input offsets.

Keyed records go to the partition Kafka's default partitioner gives their key (murmur2, as the
Java client and aiokafka's ``send`` choose), so a series keeps its partition whoever produces
it; records without a key go to one partition per call, rotating between calls.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Iterable
from functools import lru_cache

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from mode import Service

from core.kafka.producer import make_producer
from core.settings import Settings

#: ``(topic, key, value)``: one record to publish.
OutputRecord = tuple[str, bytes | None, bytes]


@lru_cache(maxsize=1 << 17)
def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` among ``partitions``."""
    every = list(range(partitions))
    return DefaultPartitioner()(key, every, every)


class Publisher(Service):
    """An aiokafka producer that publishes many records per call in whole batches."""

    def __init__(self, settings: Settings, **kwargs: object):
        super().__init__(**kwargs)
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()
        self._keyless = itertools.count()

    async def on_start(self) -> None:
        await self._started_producer()

    async def on_stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _started_producer(self) -> AIOKafkaProducer:
        """The producer, started on first use (Faust starts agents before app services)."""
        async with self._starting:
            if self._producer is None:
                producer = make_producer(self.settings)
                await producer.start()
                self._producer = producer
        return self._producer

    async def publish(self, records: Iterable[OutputRecord]) -> int:
        """Send ``records`` and return their count once the broker acknowledged all of them."""
        producer = self._producer or await self._started_producer()
        grouped: dict[tuple[str, int], list[tuple[bytes | None, bytes]]] = defaultdict(list)
        partitions: dict[str, int] = {}
        spare = next(self._keyless)
        for topic, key, value in records:
            if topic not in partitions:
                partitions[topic] = len(await producer.partitions_for(topic))
            n = partitions[topic]
            grouped[topic, spare % n if key is None else partition_of(key, n)].append((key, value))
        acks = []
        for (topic, partition), items in grouped.items():
            batch = producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start
                    acks.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)  # an empty batch takes any record
            acks.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*acks)
        return sum(len(items) for items in grouped.values())
