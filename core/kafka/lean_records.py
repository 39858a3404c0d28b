"""aiokafka's fetch path with one Python step per record batch instead of several per record.

aiokafka turns each fetched record into a ``ConsumerRecord`` (a dataclass built in Python) inside
a generator that the consumer advances record by record: about 1 µs a record on the development
machines, a fifth of the worker's interpreter time at 100,000 records/s. :class:`LeanPartitionRecords`
reads the same record batches with the same rules (CRC check, aborted transactions skipped under
``read_committed``, control batches skipped, records before the fetch offset skipped) but builds
each batch's records in one list of :class:`KafkaRecord` (a compiled struct with the same
attributes), and hands the consumer a compiled iterator over them: about 0.45 µs a record.

:func:`use_lean_records` installs it for every consumer of the process (aiokafka looks the class
up by name when a fetch response arrives). The pinned aiokafka version is the one it is tested
with (``tests/test_lean_records.py`` compares it record for record and offset for offset).

>>> from aiokafka.record.default_records import DefaultRecordBatchBuilder
>>> from aiokafka.record.memory_records import MemoryRecords
>>> from aiokafka.structs import TopicPartition
>>> builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
>>> for i in range(3):
...     _ = builder.append(i, timestamp=1_000 + i, key=b"k", value=b"v%d" % i, headers=[])
>>> records = LeanPartitionRecords(TopicPartition("metrics", 0), MemoryRecords(bytes(builder.build())), [], 1,
...                                None, None, True, READ_COMMITTED)
>>> [(r.offset, r.value) for r in records], records.next_fetch_offset
([(1, b'v1'), (2, b'v2')], 3)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain
from operator import length_hint

import msgspec
from aiokafka import ConsumerRecord
from aiokafka.consumer import fetcher
from aiokafka.consumer.fetcher import READ_COMMITTED, PartitionRecords
from aiokafka.errors import CorruptRecordException

__all__ = ["ConsumedRecord", "KafkaRecord", "LeanPartitionRecords", "use_lean_records", "READ_COMMITTED"]


class KafkaRecord(msgspec.Struct, frozen=True, gc=False):
    """A consumed record, with the attributes of aiokafka's ``ConsumerRecord`` (the sizes and the
    deprecated checksum are worked out when asked). Untracked by the garbage collector: it holds
    no references back, and a batch holds tens of thousands."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]

    @property
    def serialized_key_size(self) -> int:
        return -1 if self.key is None else len(self.key)

    @property
    def serialized_value_size(self) -> int:
        return -1 if self.value is None else len(self.value)

    @property
    def checksum(self) -> None:
        return None


#: What a consumer of this process hands out: a :class:`KafkaRecord`, or aiokafka's own record
#: (before :func:`use_lean_records`, or with a deserializer).
ConsumedRecord = KafkaRecord | ConsumerRecord


class LeanPartitionRecords(PartitionRecords):
    """A fetch response's records of one partition, read a record batch at a time (see the module
    docstring). With a key or value deserializer it reads as aiokafka does."""

    def _unpack_records(self) -> Iterator:  # type: ignore[override]
        if self._key_deserializer or self._value_deserializer:
            return super()._unpack_records()
        return chain.from_iterable(self._runs())

    def __iter__(self) -> Iterator:
        # the consumer's loop then runs over the records without a Python step each
        if self._key_deserializer or self._value_deserializer:
            return self
        return self._records_iterator if self._records_iterator is not None else iter(())

    # where the consumer is: the offset of the next record of the batch being read, or past the batch
    @property
    def next_fetch_offset(self) -> int:
        left = length_hint(self._left)
        return self._run[-left].offset if left else self._run_end

    @next_fetch_offset.setter
    def next_fetch_offset(self, offset: int) -> None:
        self._run: list[KafkaRecord] = []
        self._left: Iterator[KafkaRecord] = iter(self._run)
        self._run_end = offset

    def _runs(self) -> Iterator[Iterator[KafkaRecord]]:
        """One iterator over each record batch's records to hand out, after the batch's checks."""
        records, topic, partition = self._records, self._tp.topic, self._tp.partition
        while records.has_next():
            batch = records.next_batch()
            if self._check_crcs and not batch.validate_crc():
                raise CorruptRecordException(f"Invalid CRC - {self._tp}")
            if self._skipped(batch):
                self.next_fetch_offset = batch.next_offset
                continue
            start = self.next_fetch_offset
            run = [KafkaRecord(topic, partition, r.offset, r.timestamp, r.timestamp_type, r.key, r.value, r.headers)
                   for r in batch]
            if run and run[0].offset < start:  # a batch fetched from one of its middle records
                run = [record for record in run if record.offset >= start]
            self._run, self._left, self._run_end = run, iter(run), batch.next_offset
            yield self._left

    def _skipped(self, batch: object) -> bool:
        """Whether ``batch`` holds nothing to hand out: a control batch, or under ``read_committed``
        a batch of an aborted transaction (aiokafka's rules: the aborted transactions of the fetch
        response, up to the batch, and the abort markers met so far)."""
        if self._isolation_level == READ_COMMITTED and batch.producer_id is not None:  # type: ignore[attr-defined]
            self._consume_aborted_up_to(batch.base_offset)  # type: ignore[attr-defined]
            if batch.is_control_batch and self._contains_abort_marker(batch):  # type: ignore[attr-defined]
                self._aborted_producers.discard(batch.producer_id)  # type: ignore[attr-defined]
            if batch.is_transactional and batch.producer_id in self._aborted_producers:  # type: ignore[attr-defined]
                return True
        return bool(batch.is_control_batch)  # type: ignore[attr-defined]


def use_lean_records(lean: bool = True) -> None:
    """Make every consumer of this process read fetched records with :class:`LeanPartitionRecords`
    (with ``lean=False``: as aiokafka does again)."""
    fetcher.PartitionRecords = LeanPartitionRecords if lean else PartitionRecords  # type: ignore[misc]
