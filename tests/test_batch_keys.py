"""The batch consumer remembers the keys it handled per partition (whose models ``forget`` drops)."""

from __future__ import annotations

from pathlib import Path

from aiokafka.structs import TopicPartition

from core.kafka.lean_records import KafkaRecord
from core.settings import Settings
from streams.batch_consumer import BatchConsumer, _Batch

A, B = TopicPartition("metrics", 0), TopicPartition("metrics", 1)


def records(tp: TopicPartition, keys: list[bytes | None]) -> list[KafkaRecord]:
    return [KafkaRecord(tp.topic, tp.partition, offset, 0, 0, key, b"{}", []) for offset, key in enumerate(keys)]


def handled(consumer: BatchConsumer, batch: _Batch) -> None:
    """What the consumer does with a batch's keys: looked at in a thread against those held, then noted."""
    for tp, keys in batch.keys(dict(consumer._keys)).items():
        consumer._note_keys(tp, *keys)


def test_keys_are_noted_per_partition_and_only_new_ones_are_added(tmp_path: Path) -> None:
    consumer = BatchConsumer(Settings(home=tmp_path), "metrics", "g", handler=None, checkpoints=[])  # type: ignore[arg-type]
    first = _Batch()
    first.add(A, records(A, [b"x", None, b"y"]))
    first.add(B, records(B, [b"z"]))
    handled(consumer, first)
    assert consumer._keys == {A: {b"x", b"y"}, B: {b"z"}}
    held = consumer._keys[A]
    second = _Batch()
    second.add(A, records(A, [b"y", b"w"]))
    [(keys, known, new)] = second.keys(dict(consumer._keys)).values()
    assert (keys, known, new) == ({b"y", b"w"}, held, {b"w"})
    consumer._note_keys(A, keys, known, new)
    assert consumer._keys[A] is held and held == {b"x", b"y", b"w"}


def test_a_set_dropped_while_the_batch_was_handled_gets_all_of_its_keys(tmp_path: Path) -> None:
    consumer = BatchConsumer(Settings(home=tmp_path), "metrics", "g", handler=None, checkpoints=[])  # type: ignore[arg-type]
    consumer._keys = {A: {b"x"}}
    batch = _Batch()
    batch.add(A, records(A, [b"x", b"y"]))
    looked = batch.keys(dict(consumer._keys))
    consumer._keys = {}  # a roll-back or rebalance dropped what was held meanwhile
    consumer._note_keys(A, *looked[A])
    assert consumer._keys == {A: {b"x", b"y"}}
