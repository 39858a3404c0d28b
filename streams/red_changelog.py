"""The RED state's changelog: a compacted Kafka topic holding the last state of every RED key (#14).

The RED topic's consumer forwards the changed keys' states (:meth:`streams.red.RedBank.checkpoint`
rows) here in the same Kafka transaction as the minutes they closed and its input offsets
(``streams.publisher.Forwarder``): either a batch's state, minutes and offsets are all committed,
or none is. A record's key is the RED key (``<tenant>|<service>``) and its partition is the one
the default partitioner gives it, as in the RED topic, which has as many partitions: partition
``p`` of the changelog holds the keys of the RED topic's partition ``p``. Its value is the points
count (8 bytes, big-endian) and the sealed state; compaction keeps the last one per key.

A worker assigned RED partitions reads theirs (:meth:`RedChangelog.read`, ``read_committed``) up
to the end the broker had when the read began: a transaction still open there (a worker killed
before its commit) holds the read back until the broker aborts it, so what is read always matches
the committed input offsets.

>>> rows = [("a|cart", 3, b"sealed")]
>>> RedChangelog.records_of("m1-red-state-changelog", rows)
[('m1-red-state-changelog', b'a|cart', b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x03sealed')]
>>> RedChangelog.row_of(b"a|cart", RedChangelog.records_of("t", rows)[0][2]) == rows[0]
True
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from core.kafka.producer import TRANSACTION_TIMEOUT_MS
from core.kafka.security import client_kwargs
from core.settings import Settings
from sinks.checkpoints import StateRow
from streams.publisher import OutputRecord

#: Topic configuration: compacted, segments rolled often enough for compaction to keep restores
#: short, and records as large as a key's state may grow (2,000 open buckets of 2,048 durations).
CHANGELOG_CONFIGS = {"cleanup.policy": "compact", "segment.ms": str(10 * 60 * 1000),
                     "max.message.bytes": str(64 * 1024 * 1024)}
#: Longest wait for a dead worker's open transaction to be aborted by the broker (its timeout,
#: checked every 10 s) before a read gives up (the partition is read again at the next try).
READ_TIMEOUT_SECONDS = 2 * TRANSACTION_TIMEOUT_MS / 1000 + 10


def changelog_topic(settings: Settings) -> str:
    """The changelog of the RED state (created by the worker, like Faust's ``<app>-<table>-changelog``)."""
    return f"{settings.app_id}-red-state-changelog"


class RedChangelog:
    """Records for, and reads of, the RED state's changelog (see the module docstring)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.topic = changelog_topic(settings)

    def records(self, rows: Iterable[StateRow]) -> list[OutputRecord]:
        """The changelog records of ``rows`` (to forward in the transaction of the batch that made them)."""
        return self.records_of(self.topic, rows)

    @staticmethod
    def records_of(topic: str, rows: Iterable[StateRow]) -> list[OutputRecord]:
        return [(topic, key.encode(), spans.to_bytes(8, "big", signed=True) + sealed) for key, spans, sealed in rows]

    @staticmethod
    def row_of(key: bytes, value: bytes) -> StateRow:
        """The state row of one changelog record."""
        return key.decode(), int.from_bytes(value[:8], "big", signed=True), value[8:]

    def read(self, partitions: list[int]) -> dict[int, list[StateRow]]:
        """The last committed row of every key in each of ``partitions`` (blocking; not on an event
        loop's thread). Raises ``TimeoutError`` if an open transaction held the read back too long."""
        return asyncio.run(self._read(partitions))

    async def _read(self, partitions: list[int]) -> dict[int, list[StateRow]]:
        tps = [TopicPartition(self.topic, p) for p in partitions]
        ends = await self._ends(tps)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap, enable_auto_commit=False,
                                    isolation_level="read_committed", max_partition_fetch_bytes=8 * 1024 * 1024,
                                    **client_kwargs(self.settings))
        await consumer.start()
        latest: dict[int, dict[bytes, bytes]] = {p: {} for p in partitions}
        try:
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            async with asyncio.timeout(READ_TIMEOUT_SECONDS):
                while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                    for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                        for record in records:
                            if record.value is None:  # a tombstone: the key was dropped
                                latest[tp.partition].pop(record.key, None)
                            else:
                                latest[tp.partition][record.key] = record.value
        finally:
            await consumer.stop()
        return {p: [self.row_of(key, value) for key, value in keys.items()] for p, keys in latest.items()}

    async def _ends(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Each partition's end (high watermark, open transactions included): what a read must reach."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap, enable_auto_commit=False,
                                    **client_kwargs(self.settings))
        await consumer.start()
        try:
            return await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
