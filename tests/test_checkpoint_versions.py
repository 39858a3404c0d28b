"""Versioned checkpoints (``sinks.checkpoints``, "Versions"): a checkpoint written and never committed
is not what the next owner of the partition restores, in both locations (files under
``M1_STATE_DIR`` and the ``model_state`` table of a real embedded store), driven by the
consumer's :class:`streams.checkpoint_positions.PartitionPositions` as the batch consumer drives it.
The worker-level test is ``tests/test_scale_out.py``
(``test_a_worker_killed_between_its_checkpoint_and_its_commit_hands_over_the_committed_state``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

import sinks.state_versions
from models.bank import ModelBank
from sinks.clickhouse import Store
from sinks.model_state import StateLocation, StateTable, insert_rows
from sinks.state_files import StateDirectory
from streams.checkpoint_positions import PartitionPositions

TP = TopicPartition("metrics", 0)
SERIES = "acme|eu|api|latency_ms|"


@pytest.fixture(params=["files", "table"])
def location(request: pytest.FixtureRequest, tmp_path: Path, store: Store) -> Callable[[], StateLocation]:
    """A maker of one location's handles, each as a worker of its own would hold it (no memory shared)."""
    if request.param == "files":
        return lambda: StateDirectory(tmp_path)
    store.command("TRUNCATE TABLE model_state")
    return lambda: StateTable(store)


def bank() -> ModelBank:
    return ModelBank("zscore", key=bytes(32))


def learn(models: ModelBank, start: int, end: int) -> None:
    """Learn the series' records ``start`` to ``end`` (offsets; one point each)."""
    models.score_learn(SERIES, np.sin(np.arange(start, end, dtype=float)), np.arange(start, end, dtype=float))


def assigned(start: int, *series: str) -> PartitionPositions:
    """The positions of a worker just assigned the partition, whose commit stands at ``start``,
    handling its first batch there: a point of each of ``series`` (default: :data:`SERIES`)."""
    positions = PartitionPositions()
    records = [ConsumerRecord(TP.topic, TP.partition, start + i, 0, 0, key.encode(), b"", None, len(key), 0, ())
               for i, key in enumerate(series or [SERIES])]
    positions.reading({TP: start}, {TP: [records]})
    return positions


def checkpoint(where: StateLocation, models: ModelBank, positions: PartitionPositions, offset: int,
               commit: bool = True) -> None:
    """A checkpoint of ``offset``, as the batch consumer takes it: cut, written, then committed (or killed first)."""
    positions.cutting({TP: offset}, {TP: {SERIES.encode()}})
    assert where.snapshot(models, positions)() == 1
    positions.written({TP: offset})
    if commit:
        positions.committed({TP: offset})


def restored(where: StateLocation, positions: PartitionPositions) -> int:
    """The points learned of the series' state ``where`` gives a worker with ``positions``."""
    fresh = bank()
    where.restore_missing(fresh, [SERIES], positions)
    return fresh.points(SERIES)


def test_the_next_owner_restores_the_committed_version_not_one_written_after_it(location, caplog) -> None:
    first, models = location(), bank()
    positions = assigned(0)
    learn(models, 0, 10)
    checkpoint(first, models, positions, 10)
    learn(models, 10, 25)
    checkpoint(first, models, positions, 25, commit=False)  # killed between the write and the commit

    with caplog.at_level(logging.WARNING, logger="sinks.state_versions"):
        assert restored(location(), assigned(10)) == 10  # it reads on from offset 10: the state of offset 10
    assert "1 series of zscore@" in caplog.text and "newer than the offsets" in caplog.text  # the operator is told
    assert restored(first, positions) == 25  # the worker that wrote it (and commits it, or dies) takes its own
    assert restored(location(), PartitionPositions()) == 25  # a pipeline without a consumer: the newest


def test_a_successor_never_overwrites_the_committed_version_until_it_commits_its_own(location) -> None:
    """The successor replays offsets 10-25 from the state of 10, writes, and is killed before its commit
    too: the state of 10 must still be there for the third worker. Once a commit covers a newer
    version, the older slot is the one written next."""
    first, models = location(), bank()
    positions = assigned(0)
    learn(models, 0, 10)
    checkpoint(first, models, positions, 10)
    learn(models, 10, 25)
    checkpoint(first, models, positions, 25, commit=False)

    second, positions = location(), assigned(10)
    models = bank()
    second.restore_missing(models, [SERIES], positions)
    learn(models, 10, 30)
    checkpoint(second, models, positions, 30, commit=False)
    assert restored(location(), assigned(10)) == 10

    third, positions = location(), assigned(10)
    models = bank()
    third.restore_missing(models, [SERIES], positions)
    learn(models, 10, 30)
    checkpoint(third, models, positions, 30)
    learn(models, 30, 42)
    checkpoint(third, models, positions, 42, commit=False)
    assert restored(location(), assigned(30)) == 30
    assert restored(location(), assigned(42)) == 42  # had that commit gone through


def test_a_worker_that_lost_the_series_reads_its_slots_again(location) -> None:
    """What a worker remembers of a series' slots holds while it owns the series; once it forgot
    the series (its partition went elsewhere), another worker's writes are what it restores."""
    first, models = location(), bank()
    positions = assigned(0)
    learn(models, 0, 10)
    checkpoint(first, models, positions, 10)
    first.forget(models, [SERIES])

    second, other = location(), bank()
    later = assigned(10)
    second.restore_missing(other, [SERIES], later)
    learn(other, 10, 20)
    checkpoint(second, other, later, 20)

    models.discard(SERIES)
    back = assigned(20)
    first.restore_missing(models, [SERIES], back)
    assert models.points(SERIES) == 20
    learn(models, 20, 21)
    checkpoint(first, models, back, 21, commit=False)  # into the slot of 10, not over the committed 20
    assert restored(location(), assigned(20)) == 20


def test_state_saved_before_versions_is_restored_and_kept_until_a_commit_covers_a_newer_one(
        tmp_path: Path, store: Store) -> None:
    """A file or row written before versions (slot 0, cut 0) restores like a committed one."""
    models = bank()
    learn(models, 0, 7)
    [(series, points, sealed)] = models.checkpoint()
    files = StateDirectory(tmp_path)
    legacy = files.path(models.state_key, series, None)
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(points.to_bytes(8, "big") + sealed)  # the layout before versions: points, then the state
    store.command("TRUNCATE TABLE model_state")
    insert_rows(store, models.state_key, [(series, 0, 0, points, sealed)])  # the migration's defaults
    for make in (lambda: StateDirectory(tmp_path), lambda: StateTable(store)):
        where, positions = make(), assigned(7)
        resumed = bank()
        where.restore_missing(resumed, [SERIES], positions)
        assert resumed.points(SERIES) == 7
        learn(resumed, 7, 9)
        checkpoint(where, resumed, positions, 9, commit=False)
        assert restored(make(), assigned(7)) == 7


def test_a_location_that_forgot_a_series_slots_reads_them_before_it_writes(location, monkeypatch) -> None:
    """With room to remember one series, two series written in turn have their slots read again
    each time: the committed version of each is still never overwritten."""
    monkeypatch.setattr(sinks.state_versions, "REMEMBERED", 1)
    other = "acme|eu|api|errors|"
    where, models = location(), bank()
    positions = assigned(0, SERIES, other)
    for start, end, commit in ((0, 10, True), (10, 20, True), (20, 30, False)):
        learn(models, start, end)
        models.score_learn(other, np.arange(start, end, dtype=float), np.arange(start, end, dtype=float))
        positions.cutting({TP: end}, {TP: {SERIES.encode(), other.encode()}})
        assert where.snapshot(models, positions)() == 2
        positions.written({TP: end})
        if commit:
            positions.committed({TP: end})
    successor = bank()
    location().restore_missing(successor, [SERIES, other], assigned(20, SERIES, other))
    assert (successor.points(SERIES), successor.points(other)) == (20, 20)


@pytest.mark.parametrize("kind", ["files", "table"])
def test_a_latest_version_that_does_not_open_gives_way_to_the_older_one(kind: str, tmp_path: Path, store: Store) -> None:
    """A version cut short (a power cut: files are not fsynced) or altered is refused before it is
    unpickled; the series then resumes from its other trusted version, not from nothing."""
    if kind == "table":
        store.command("TRUNCATE TABLE model_state")
    make = (lambda: StateDirectory(tmp_path)) if kind == "files" else (lambda: StateTable(store))
    where, models = make(), bank()
    positions = assigned(0)
    learn(models, 0, 10)
    checkpoint(where, models, positions, 10)
    learn(models, 10, 25)
    checkpoint(where, models, positions, 25)
    if kind == "files":  # the latest version's file, cut short
        latest = where.path(models.state_key, SERIES, 1)
        latest.write_bytes(latest.read_bytes()[:40])
    else:  # the latest version's row, its state altered
        [(points, state)] = store.query("SELECT points, hex(state) FROM model_state FINAL WHERE slot = 1").rows
        insert_rows(store, models.state_key, [(SERIES, 1, 25, points, bytes.fromhex(state)[:-1] + b"!")])
    assert restored(make(), assigned(25)) == 10


def test_a_forged_version_with_a_far_cut_is_never_restored_and_the_next_write_replaces_it(location) -> None:
    """Whoever can write the state location can put a version in the slot the commit does not need,
    with any cut (cuts are not sealed): one past the commit is not restored, and the owner's next
    checkpoint goes over it; the committed version stays."""
    where, models = location(), bank()
    positions = assigned(0)
    learn(models, 0, 10)
    checkpoint(where, models, positions, 10)
    forger = bank()  # the series' own state, sealed with the key: re-inserting it is all the forger can do
    learn(forger, 0, 3)
    [(series, points, sealed)] = forger.checkpoint()
    forged = location()
    forged._write(forger.state_key, iter([(series, 1, 2**62, points, sealed)]))

    successor = bank()
    where_next, positions = location(), assigned(10)
    where_next.restore_missing(successor, [SERIES], positions)
    assert successor.points(SERIES) == 10
    learn(successor, 10, 20)
    checkpoint(where_next, successor, positions, 20)
    assert restored(location(), assigned(20)) == 20
    assert restored(location(), PartitionPositions()) == 20  # even trusting any cut: the forged one is gone
