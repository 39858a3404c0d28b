"""Where the metrics consumer's partitions stand, for versioned checkpoints (``sinks.checkpoints``, "Versions").

The batch consumer (``streams.batch_consumer``) tells it, on the event loop:

- :meth:`PartitionPositions.reading`, before a batch is handled: a partition's first offset read
  since the last assignment or roll-back is where the group's commit stands (the consumer reads
  on from there);
- :meth:`~PartitionPositions.cutting`: a checkpoint is cut, with the offsets it commits and the
  record keys read from each partition (a scored record is keyed by its series, so each series
  lives in one partition); :meth:`~PartitionPositions.written` and :meth:`~PartitionPositions.committed`
  as it is written and committed;
- :meth:`~PartitionPositions.reset`, at an assignment or a roll-back.

The pipelines' state locations ask it, from the handler's or a checkpoint writer's thread, for a
series' cut, its partition's commit, and the latest cut this worker may restore it from: its
partition's commit, or a later cut of its own that it wrote (it commits that, or dies).

>>> from aiokafka import TopicPartition
>>> from aiokafka.structs import ConsumerRecord
>>> tp = TopicPartition("metrics", 3)
>>> positions = PartitionPositions()
>>> positions.reading({tp: 100}, {tp: [[ConsumerRecord("metrics", 3, 100, 0, 0, b"a|x", b"", None, 3, 0, ())]]})
>>> positions.restorable("a|x")  # resumed from the commit at 100: a version cut later is not this worker's
100
>>> positions.cutting({tp: 180}, {tp: {b"a|x"}})
>>> positions.cut_of("a|x"), positions.committed_of("a|x")
(180, 100)
>>> positions.written({tp: 180})
>>> positions.restorable("a|x")  # its own version, written: it commits it, or dies
180
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import chain

from aiokafka import TopicPartition

from core.kafka.lean_records import ConsumedRecord


class PartitionPositions:
    """The offsets of the consumer's partitions that versioned checkpoints need (see the module docstring);
    implements :class:`sinks.checkpoints.Positions`."""

    def __init__(self) -> None:
        self._committed: dict[TopicPartition, int] = {}  # the group's commit, as far as this worker knows
        self._written: dict[TopicPartition, int] = {}  # the latest cut restorable: the commit or a later own write
        self._cut: dict[TopicPartition, int] = {}  # the offsets of the checkpoint cut last
        self._partition_of: dict[str, TopicPartition] = {}  # series -> its partition, at the last cut
        self._runs: Mapping[TopicPartition, Sequence[Sequence[ConsumedRecord]]] = {}  # the batch being handled
        self._in_batch: dict[bytes, TopicPartition] | None = None  # its record keys' partitions, worked out when asked

    def reading(self, starts: Mapping[TopicPartition, int],
                runs: Mapping[TopicPartition, Sequence[Sequence[ConsumedRecord]]]) -> None:
        """A batch is about to be handled: per partition its first offset and its runs of records."""
        for tp, start in starts.items():
            if tp not in self._committed:
                self._committed[tp] = self._written[tp] = start
        self._runs, self._in_batch = runs, None

    def cutting(self, offsets: Mapping[TopicPartition, int], keys: Mapping[TopicPartition, Iterable[bytes]]) -> None:
        """A checkpoint is cut now; it commits ``offsets`` once written (other partitions stay where
        they are); ``keys`` are the record keys handled per partition (those of its series)."""
        self._cut = {**self._committed, **offsets}
        self._partition_of = {key.decode(errors="replace"): tp for tp, held in keys.items() for key in held}

    def written(self, offsets: Mapping[TopicPartition, int]) -> None:
        """The checkpoint of ``offsets`` is written (its commit follows)."""
        for tp, offset in offsets.items():
            self._written[tp] = max(self._written.get(tp, 0), offset)

    def committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        """``offsets`` are committed."""
        for tp, offset in offsets.items():
            self._committed[tp] = max(self._committed.get(tp, 0), offset)
            self._written[tp] = max(self._written.get(tp, 0), offset)

    def reset(self) -> None:
        """An assignment or roll-back: every partition is read again from its commit."""
        self._committed, self._written, self._cut = {}, {}, {}

    def cut_of(self, series: str) -> int:
        return self._cut.get(self._partition_of.get(series), 0)  # type: ignore[arg-type]

    def committed_of(self, series: str) -> int | None:
        tp = self._partition_of.get(series)
        return None if tp is None else self._committed.get(tp)

    def restorable(self, series: str) -> int | None:
        tp = self._batch_partition(series)  # a restore is for a series of the batch being handled
        return None if tp is None else self._written.get(tp)

    def _batch_partition(self, series: str) -> TopicPartition | None:
        """The partition of ``series`` in the batch being handled."""
        if self._in_batch is None:
            self._in_batch = {record.key: tp for tp, runs in self._runs.items() for record in chain.from_iterable(runs)}
        return self._in_batch.get(series.encode())
