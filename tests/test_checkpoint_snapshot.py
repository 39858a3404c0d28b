"""A checkpoint cut between batches and written later (``ModelBank.snapshot``, ``StateLocation.snapshot``).

The cut must hold exactly the rows a checkpoint at that moment gives, however much the bank learns
before (or while) they are sealed: the offsets committed after the write are the cut's, and a replay
from them must find the cut's state. Until the write, a series the bank drops comes back from the
cut, not from an older saved row; a failed write loses nothing: the next checkpoint writes its series.
Checked for the pooled ensemble, a point-by-point detector and the forecasting bank (pooled, with
cost projectors packed at the cut).
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.bank import ModelBank
from models.detectors.fast_ensemble import EnsemblePool
from models.slot_state import SlotHandle
from schemas.events import MetricPoint
from sinks.state_files import StateDirectory
from tests.models.test_fast_ensemble import fast_bank, reference
from tests.models.test_fast_forecast import pipelines, random_batches, workload_points

Batch = dict[str, list[MetricPoint]]
Feed = Callable[[Batch], None]


def ensemble(tmp_path: Path) -> tuple[ModelBank, Feed]:
    """The metrics path's bank: packed slots of a pool, a whole batch in one call."""
    pool = EnsemblePool(reference)
    bank = fast_bank(pool, max_series=16)

    def feed(batch: Batch) -> None:
        counts = [len(points) for points in batch.values()]
        flat = [point for points in batch.values() for point in points]
        pool.score_flat(bank.models(zip(batch, counts)), np.concatenate(([0], np.cumsum(counts))),
                        np.array([p.value for p in flat]), np.array([p.ts for p in flat]))

    return bank, feed


def point_by_point(tmp_path: Path) -> tuple[ModelBank, Feed]:
    """A detector without a pool: frozen and pickled at the cut."""
    bank = ModelBank("robust", max_series=16, key=bytes(32))

    def feed(batch: Batch) -> None:
        for series, points in batch.items():
            bank.score_learn(series, np.array([p.value for p in points]), np.array([p.ts for p in points]))

    return bank, feed


def forecasting(tmp_path: Path) -> tuple[ModelBank, Feed]:
    """The forecasting path's bank: packed slots, and cost projectors (which learn in place)."""
    _, fast = pipelines(tmp_path, max_series=10)
    return fast.bank, lambda batch: fast.process_points({s: list(points) for s, points in batch.items()})


KINDS = [ensemble, point_by_point, forecasting]


@pytest.fixture(scope="module")
def batches() -> list[Batch]:
    """The demo workload with a cost series per CPU series, in random batches with replays."""
    points = workload_points(series=24, ticks=120)
    points += [MetricPoint(p.ts, p.tenant, p.region, p.service, "cost_usd", abs(p.value) / 1000.0, p.labels)
               for p in points if p.metric == "cpu_pct"]
    points.sort(key=lambda p: p.ts)
    return random_batches(points, seed=11, largest=300)


def twins(kind: Callable[[Path], tuple[ModelBank, Feed]], tmp_path: Path, batches: list[Batch],
          save: Callable[[ModelBank], object] = ModelBank.checkpoint) -> tuple[ModelBank, Feed, ModelBank, Feed]:
    """Two banks of ``kind`` and their feeds, fed the same batches (the first two thirds; the second
    bank checkpoints where the first is cut); a third of the way, the first is saved with ``save``
    and the second checkpointed."""
    (bank, feed), (twin, twin_feed) = kind(tmp_path), kind(tmp_path)
    for number, batch in enumerate(batches[: 2 * len(batches) // 3]):
        feed(batch)
        twin_feed(batch)
        if number == len(batches) // 3:
            save(bank), twin.checkpoint()
    return bank, feed, twin, twin_feed


def frozen(bank: ModelBank, series: str) -> bytes:
    """The series' state as the bank's checkpoints pickle it."""
    return pickle.dumps(bank.freeze(bank.apply(series, 0, lambda model: model)), protocol=pickle.HIGHEST_PROTOCOL)


def loaded(bank: ModelBank, series: str, load: Callable[[], object]) -> tuple[int, bytes] | None:
    """The points and state of ``series`` once ``load()`` loaded it into ``bank`` (None if it did not),
    which then drops it again: states compare as they restore."""
    load()
    if series not in bank:
        return None
    state = bank.points(series), frozen(bank, series)
    bank.discard(series)
    return state


@pytest.mark.parametrize("kind", KINDS)
def test_a_snapshot_holds_the_rows_of_a_checkpoint_at_its_cut(kind: Any, tmp_path: Path, batches: list[Batch]) -> None:
    """Rows sealed after the bank learned on, and while it learns in another thread, are the very rows
    (bytes) a checkpoint at the cut gives: live series, pooled or not, and series evicted before it."""
    bank, feed, twin, _ = twins(kind, tmp_path, batches)
    snapshot = bank.snapshot()
    expected = twin.checkpoint()
    assert any(series not in bank for series, _, _ in expected)  # evicted before the cut
    models = [bank.apply(s, 0, lambda m: m) for s, _, _ in expected if s in bank]
    copied = {isinstance(model, SlotHandle) and model.objects() is not None for model in models}  # else packed
    assert copied == {True} if kind is ensemble else {False} if kind is point_by_point else {True, False}
    sealed: list[list[tuple[str, int, bytes]]] = []
    writer = threading.Thread(target=lambda: sealed.append(snapshot.rows()))
    writer.start()  # while the bank learns on
    for batch in batches[2 * len(batches) // 3 :]:
        feed(batch)
    writer.join()
    assert sorted(sealed[0]) == sorted(snapshot.rows()) == sorted(expected)
    assert all(bank.points(series) > points for series, points, _ in expected if series in bank)


@pytest.mark.parametrize("kind", KINDS)
def test_a_series_dropped_before_its_snapshot_is_written_comes_back_from_it(kind: Any, tmp_path: Path,
                                                                             batches: list[Batch]) -> None:
    """Series evicted before the cut, forgotten after it, or evicted after it without learning, load
    the cut's state, not the older saved one; once written, from the saved rows."""
    files = StateDirectory(tmp_path / "state")
    bank, _, twin, _ = twins(kind, tmp_path, batches, save=files.save)  # older rows, which must not come back
    write = files.snapshot(bank)
    at_cut = {row[0]: row for row in twin.checkpoint()}
    before = [series for series in at_cut if series not in bank]
    forgotten = [series for series in at_cut if series in bank][:2]
    for series in forgotten:
        bank.discard(series)
    tenants = sorted({series.split("|")[0] for series in at_cut})
    for i in range(bank.max_series):  # new series evict clean ones (nothing learned since the cut)
        bank.apply(f"{tenants[i % len(tenants)]}|new|{i}", 0, lambda model: model)
    dropped = [series for series in at_cut if series not in bank]
    assert before and set(forgotten) < set(dropped) and set(dropped) - set(before) - set(forgotten)
    fresh, _, _, _ = twins(kind, tmp_path / "fresh", [])
    for series in dropped:
        expected = loaded(fresh, series, lambda: fresh.restore([at_cut[series]]))
        assert loaded(fresh, series, lambda: files.restore_missing(fresh, [series])) != expected  # older
        assert loaded(bank, series, lambda: files.restore_missing(bank, [series])) == expected
    assert write() == len(at_cut)
    assert bank.missing(forgotten) == forgotten  # the snapshot no longer holds them
    for series in forgotten:
        assert loaded(bank, series, lambda: files.restore_missing(bank, [series])) == loaded(
            fresh, series, lambda: fresh.restore([at_cut[series]]))


@pytest.mark.parametrize("kind", KINDS)
def test_a_failed_write_is_written_by_the_next_checkpoint(kind: Any, tmp_path: Path, batches: list[Batch]) -> None:
    """A write that fails puts its series back: the next checkpoint writes what the failed one held and
    what changed since (the newer state wins), as a bank whose write had not failed would have by then,
    and nothing of a series forgotten since (whoever holds it now saves it)."""
    root = tmp_path / "state"
    root.write_bytes(b"")  # a file where the directory goes: writing fails
    files = StateDirectory(root)
    bank, feed, twin, twin_feed = twins(kind, tmp_path, batches)
    write = files.snapshot(bank)
    expected = {row[0]: row for row in twin.checkpoint()}
    forgotten = next(series for series in expected if series in bank)
    tenants = sorted({series.split("|")[0] for series in expected})
    for one in (bank, twin):  # the same since the cut: one forgotten, new series evict others
        one.discard(forgotten)
        for i in range(one.max_series // 2):
            one.apply(f"{tenants[i % len(tenants)]}|new|{i}", 0, lambda model: model)
    learning = {series for series in sorted(expected)[1::2] if series in bank} - {forgotten}  # live: none restores
    more = {series: points for series, points in batches[2 * len(batches) // 3].items() if series in learning}
    feed(more)
    twin_feed(more)
    with pytest.raises(OSError):
        write()
    root.unlink()
    root.mkdir()  # the store is back
    files.save(bank)
    del expected[forgotten]
    changed = {row[0]: row for row in twin.checkpoint()}
    assert set(expected) - set(changed) and learning <= set(changed) and forgotten not in changed
    expected.update(changed)
    fresh, _, _, _ = twins(kind, tmp_path / "fresh", [])
    for series in [*expected, forgotten]:
        want = loaded(fresh, series, lambda: fresh.restore([expected[series]])) if series in expected else None
        assert loaded(fresh, series, lambda: files.restore_missing(fresh, [series])) == want, series
