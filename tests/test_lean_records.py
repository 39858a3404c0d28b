"""The lean fetch path hands out what aiokafka's does, record for record and offset for offset."""

from __future__ import annotations

import asyncio
import struct
import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBase, DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition

from core.kafka.lean_records import READ_COMMITTED, KafkaRecord, LeanPartitionRecords, use_lean_records
from core.kafka.producer import make_producer, send_all
from core.kafka.security import client_kwargs
from core.kafka.topics import ensure_topics
from core.settings import Settings

READ_UNCOMMITTED = 0
TP = TopicPartition("metrics", 3)
ABORT, COMMIT = 0, 1
FIELDS = ("topic", "partition", "offset", "timestamp", "timestamp_type", "key", "value", "checksum",
          "serialized_key_size", "serialized_value_size")


def batch(base_offset: int, count: int, producer_id: int = -1, control: int | None = None) -> bytes:
    """A record batch of ``count`` records from ``base_offset``: transactional with a producer id,
    then with ``control`` a control batch holding that marker."""
    transactional = producer_id >= 0
    builder = DefaultRecordBatchBuilder(2, 0, int(transactional), producer_id, 0 if transactional else -1,
                                        0 if transactional else -1, 1 << 20)
    for i in range(count):
        if control is not None:
            builder.append(i, timestamp=5_000, key=struct.pack(">HH", 0, control), value=b"", headers=[])
        else:
            headers = [("traceparent", b"00-%d" % i)] if i % 3 == 0 else []
            builder.append(i, timestamp=1_000 + base_offset + i, key=None if i % 4 == 1 else b"k%d" % i,
                           value=None if i % 5 == 2 else b"v%d" % (base_offset + i), headers=headers)
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, base_offset)
    if control is not None:
        at = DefaultRecordBase.ATTRIBUTES_OFFSET
        attributes = struct.unpack_from(">h", data, at)[0] | DefaultRecordBase.CONTROL_MASK
        struct.pack_into(">h", data, at, attributes)
        struct.pack_into(">I", data, DefaultRecordBase.CRC_OFFSET, calc_crc32c(bytes(data[at:])))
    return bytes(data)


# plain records; an aborted transaction (producer 7) and its marker; a committed one (producer 8),
# interleaved with plain records; its marker; more plain records
LOG = (batch(0, 6) + batch(6, 4, producer_id=7) + batch(10, 3, producer_id=8) + batch(13, 2)
       + batch(15, 1, producer_id=7, control=ABORT) + batch(16, 2, producer_id=8) + batch(18, 1, producer_id=8, control=COMMIT)
       + batch(19, 5))
ABORTED = [(7, 6)]  # (producer id, first offset), as a fetch response lists them


def both(fetch_offset: int, isolation: int, data: bytes = LOG, check_crcs: bool = True
         ) -> tuple[PartitionRecords, LeanPartitionRecords]:
    def make(cls: type[PartitionRecords]) -> PartitionRecords:
        return cls(TP, MemoryRecords(data), list(ABORTED), fetch_offset, None, None, check_crcs, isolation)
    return make(PartitionRecords), make(LeanPartitionRecords)  # type: ignore[return-value]


def view(record: object) -> tuple:
    return (*(getattr(record, name) for name in FIELDS), tuple(record.headers))  # type: ignore[attr-defined]


@pytest.mark.parametrize("isolation", [READ_COMMITTED, READ_UNCOMMITTED])
@pytest.mark.parametrize("fetch_offset", [0, 3, 6, 17, 21])
@pytest.mark.parametrize("step", [1, 4, 100])
def test_lean_records_match_aiokafkas_record_for_record_and_position_for_position(isolation: int, fetch_offset: int,
                                                                                 step: int) -> None:
    theirs, ours = both(fetch_offset, isolation)
    assert ours.next_fetch_offset == theirs.next_fetch_offset == fetch_offset
    while True:  # as the consumer's getall reads them: up to max_records at a time, then the position
        their_part = [view(r) for _, r in zip(range(step), theirs)]
        our_part = [view(r) for _, r in zip(range(step), iter(ours))]
        assert our_part == their_part
        assert ours.next_fetch_offset == theirs.next_fetch_offset
        if len(their_part) < step:
            break
    assert theirs.next_fetch_offset == 24  # past the last batch
    assert next(ours, None) is None


def test_read_committed_skips_the_aborted_transaction_and_the_markers() -> None:
    _, ours = both(0, READ_COMMITTED)
    offsets = [record.offset for record in ours]
    assert offsets == [*range(6), *range(10, 15), 16, 17, *range(19, 24)]
    assert all(type(record) is KafkaRecord for record in both(0, READ_COMMITTED)[1])


def test_one_at_a_time_as_getone_reads() -> None:
    theirs, ours = both(2, READ_COMMITTED)
    for _ in range(30):
        their_record, our_record = next(theirs, None), next(ours, None)
        assert (their_record is None) == (our_record is None)
        if their_record is None:
            break
        assert view(our_record) == view(their_record)
        assert ours.next_fetch_offset == theirs.next_fetch_offset


def test_a_corrupt_batch_raises_as_aiokafkas_does() -> None:
    data = bytearray(LOG)
    data[-1] ^= 0xFF  # the last batch's last byte
    theirs, ours = both(0, READ_COMMITTED, bytes(data))
    with pytest.raises(CorruptRecordException):
        list(theirs)
    with pytest.raises(CorruptRecordException):
        list(ours)


def test_with_a_deserializer_it_reads_as_aiokafka_does() -> None:
    ours = LeanPartitionRecords(TP, MemoryRecords(LOG), list(ABORTED), 0, None, lambda v: v and v.upper(), True,
                                READ_COMMITTED)
    values = [record.value for record in ours]
    assert values[:3] == [b"V0", b"V1", None]
    assert ours.next_fetch_offset == 24


async def _read_all(settings: Settings, topic: str, isolation: str, max_records: int) -> list[tuple]:
    """Every record of ``topic`` (and each partition's position after it), read in small ``getmany`` steps."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, isolation_level=isolation, **client_kwargs(settings))
    await consumer.start()
    out: list[tuple] = []
    try:
        async with asyncio.timeout(30):
            while len(out) < 9 or not all(await _at_end(consumer)):
                for part in (await consumer.getmany(timeout_ms=200, max_records=max_records)).values():
                    out += [(type(r).__name__ == "KafkaRecord", *view(r)[1:]) for r in part]
        return sorted(out, key=lambda r: (r[1], r[2])) + sorted((tp.partition, consumer_position)
                                                                 for tp, consumer_position in await _positions(consumer))
    finally:
        await consumer.stop()


async def _at_end(consumer: AIOKafkaConsumer) -> list[bool]:
    ends = await consumer.end_offsets(list(consumer.assignment()))
    return [await consumer.position(tp) >= end for tp, end in ends.items()]


async def _positions(consumer: AIOKafkaConsumer) -> list[tuple[TopicPartition, int]]:
    return [(tp, await consumer.position(tp)) for tp in consumer.assignment()]


def test_on_the_broker_both_paths_read_the_same_records_and_positions(make_settings) -> None:  # type: ignore[no-untyped-def]
    """A real broker's log: plain records, a committed transaction, an aborted one, and one more."""
    settings = make_settings()
    topic = f"lean-{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, [topic])

    async def write() -> None:
        producer = make_producer(settings, transactional_id=f"lean-test-{topic}")
        await producer.start()
        try:
            for outcome, values in (("commit", [b"a", b"b", b"c"]), ("abort", [b"x", b"y"]), ("commit", [b"d", b"e"])):
                await producer.begin_transaction()
                for value in values:
                    await producer.send_and_wait(topic, value, key=value, headers=[("h", value)] if value == b"b" else [])
                await (producer.commit_transaction() if outcome == "commit" else producer.abort_transaction())
            plain = make_producer(settings)
            await plain.start()
            try:
                await send_all(plain, topic, [(b"f", b"f"), (None, b"g"), (b"h", b"h"), (b"i", b"i")])
            finally:
                await plain.stop()
        finally:
            await producer.stop()

    asyncio.run(write())
    try:
        for isolation in ("read_committed", "read_uncommitted"):
            for max_records in (1, 3):
                use_lean_records(False)
                theirs = asyncio.run(_read_all(settings, topic, isolation, max_records))
                use_lean_records(True)
                ours = asyncio.run(_read_all(settings, topic, isolation, max_records))
                assert [row[1:] for row in ours] == [row[1:] for row in theirs]
                assert all(row[0] for row in ours if len(row) > 2) and not any(row[0] for row in theirs if len(row) > 2)
                values = [row[6] for row in ours if len(row) > 2]
                assert (b"x" in values) == (isolation == "read_uncommitted")
    finally:
        use_lean_records(True)  # as the batch consumers of the session's workers leave it

