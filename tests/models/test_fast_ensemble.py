"""The compiled ensemble (models.detectors.fast_ensemble) scores as the point-by-point definition.

The definition is ``InOrder(Ensemble())`` fed one point at a time (``score_one`` then
``learn_one``). The fast path must match it to 1e-9 on the shared NAB and ASD data (read from
the evaluation's data directories, ``$M1_NAB_DIR`` / ``$M1_ASD_DIR``) and on the demo workload
(many series in one call, with replays), and hold the same state: a slot exports as the very
bytes the point-by-point model pickles and loads from them, and its checkpoint (a packed slot,
``EnsembleState``) restores into a pool or a point-by-point bank to the same state, which goes on
scoring exactly as a series never checkpointed.
"""

from __future__ import annotations

import pickle
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from core.settings import Settings
from m1.workload import Workload
from models.bank import ModelBank
from models.detectors.ensemble import Ensemble
from models.detectors.fast_ensemble import EnsemblePool, EnsembleState, export, freeze
from models.evaluation.cli import default_nab_data
from models.evaluation.series import default_asd_data, read_series
from models.ordered import InOrder
from schemas.events import decode_metric
from tests.models.test_detector_equivalence import random_batches

TOLERANCE = 1e-9
FILES = [  # level shifts, a flat line, recurring spikes, real CPU, traffic, ad exchange, and a server of ASD
    ("nab", "artificialWithAnomaly/art_daily_jumpsup.csv"),
    ("nab", "artificialNoAnomaly/art_flatline.csv"),
    ("nab", "artificialWithAnomaly/art_load_balancer_spikes.csv"),
    ("nab", "realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv"),
    ("nab", "realTraffic/speed_7578.csv"),
    ("nab", "realAdExchange/exchange-2_cpc_results.csv"),
    ("asd", "omi-1/omi-1_m05.csv"),
]


def reference() -> InOrder:
    return InOrder(Ensemble())


def one_by_one(model: InOrder, xs: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """The definition: score a point, then learn it."""
    out = []
    for x, t in zip(xs.tolist(), ts.tolist()):
        out.append(model.score_one(x, t))
        model.learn_one(x, t)
    return np.array(out)


def shared_file(corpus: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    path = (default_nab_data() if corpus == "nab" else default_asd_data()) / name
    if not path.exists():
        pytest.skip(f"shared data not here: {path}")
    ts, xs = read_series(path)
    return np.array(xs), np.array(ts)


@pytest.mark.parametrize("corpus,name", FILES)
def test_shared_data_scores_and_state_match_the_definition(corpus: str, name: str) -> None:
    xs, ts = shared_file(corpus, name)
    slow = reference()
    expected = one_by_one(slow, xs, ts)
    pool = EnsemblePool(reference)
    fast = pool.new()
    got = random_batches(fast, xs, ts, seed=len(xs), largest=200)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)
    assert (expected > 0.5).any() or name.endswith("art_flatline.csv")  # the comparison covers alerts
    assert pickle.dumps(fast.export()) == pickle.dumps(slow)


def workload_batches(series: int, ticks: int, batch: int) -> list[list[tuple[str, float, float]]]:
    """The demo workload's points as (series, value, ts), cut into batches of ``batch`` records."""
    workload = Workload(tenants=3, regions=2, series=series, anomalies=series // 10, ticks=ticks, seed=5)
    points = []
    for tick in range(ticks):
        for _, value, valid in workload.records(tick, 1_767_225_600.0 + 60.0 * tick, 0.0):
            if valid:
                p = decode_metric(value)
                points.append((p.series_key, p.value, p.ts))
    return [points[i : i + batch] for i in range(0, len(points), batch)]


def test_demo_workload_many_series_per_call_with_replays() -> None:
    """A batch of many series in one call against each series' point-by-point model; every fifth
    batch starts with a replay of the previous one's tail, whose points are scored after the
    batch's fresh ones and not learned (``InOrder.score_learn_many``)."""
    pool = EnsemblePool(reference)
    handles: dict[str, object] = {}
    slow: dict[str, InOrder] = defaultdict(reference)
    batches = workload_batches(series=60, ticks=400, batch=700)
    peak = 0.0
    for number, batch in enumerate(batches):
        if number % 5 == 4:
            batch = batches[number - 1][-200:] + batch  # a replay of the previous batch's tail
        by_series: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for series, value, ts in batch:
            by_series[series].append((value, ts))
        expected = []
        for series, points in by_series.items():
            xs, ts = np.array(points).T
            replayed = number % 5 == 4
            expected.extend(slow[series].score_learn_many(xs, ts) if replayed else one_by_one(slow[series], xs, ts))
        starts = np.concatenate(([0], np.cumsum([len(p) for p in by_series.values()])))
        flat = np.array([point for points in by_series.values() for point in points])
        got = pool.score_flat((handles.setdefault(s, pool.new()) for s in by_series), starts, flat[:, 0].copy(),
                              flat[:, 1].copy())
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)
        peak = max(peak, max(expected))
    assert peak > Settings().anomaly_threshold  # the planted anomalies were scored as alerts
    for series, handle in handles.items():
        assert pickle.dumps(handle.export()) == pickle.dumps(slow[series])


def fast_bank(pool: EnsemblePool, **options: object) -> ModelBank:
    """A bank on ``pool`` as the metrics pipeline makes it (its checkpoints are packed slots)."""
    return ModelBank("ensemble", factory=pool.new, adopt=pool.adopt, export=export, freeze=freeze, key=bytes(32),
                     **options)  # type: ignore[arg-type]


def slow_bank() -> ModelBank:
    """A point-by-point bank that restores packed slots as point-by-point models."""
    return ModelBank("ensemble", factory=reference, adopt=EnsemblePool(reference, capacity=1).point_by_point,
                     key=bytes(32))


def test_a_checkpoint_moves_between_the_fast_and_the_point_by_point_bank() -> None:
    """A fast bank's checkpoint restores into a point-by-point bank and back, mid-series, and
    both go on scoring alike; dropped series give their slots back."""
    xs, ts = shared_file("nab", "artificialWithAnomaly/art_daily_jumpsup.csv")
    pool = EnsemblePool(reference)
    fast, slow = fast_bank(pool), slow_bank()
    half = len(xs) // 2
    fast.score_learn("a|r|s|m", xs[:half], ts[:half])
    rows = fast.checkpoint()
    slow.restore(rows)
    assert slow.checkpoint() == []  # restored, not changed
    assert type(slow.apply("a|r|s|m", 0, lambda m: m)) is InOrder
    np.testing.assert_allclose(fast.score_learn("a|r|s|m", xs[half:-500], ts[half:-500]),
                               slow.score_learn("a|r|s|m", xs[half:-500], ts[half:-500]), rtol=0, atol=TOLERANCE)
    again = fast_bank(pool)
    again.restore(slow.checkpoint())
    np.testing.assert_allclose(again.score_learn("a|r|s|m", xs[-500:], ts[-500:]),
                               slow.score_learn("a|r|s|m", xs[-500:], ts[-500:]), rtol=0, atol=TOLERANCE)
    assert len(pool) == 2
    fast.discard("a|r|s|m")
    assert len(pool) == 1


@pytest.mark.parametrize("corpus,name", FILES)
def test_a_packed_checkpoint_restores_the_same_state_in_either_path(corpus: str, name: str) -> None:
    """A series checkpointed mid-stream as a packed slot and restored, into a pool and into a
    point-by-point bank, holds the state of the series it was taken from and scores on exactly
    as that series does, never checkpointed."""
    xs, ts = shared_file(corpus, name)
    half = len(xs) // 2
    pool = EnsemblePool(reference)
    fast, slow = fast_bank(pool), ModelBank("ensemble", factory=reference, key=bytes(32))
    fast.score_learn("a|r|s|m", xs[:half], ts[:half])
    slow.score_learn("a|r|s|m", xs[:half], ts[:half])
    ((series, points, sealed),) = rows = fast.checkpoint()
    assert type(pickle.loads(fast.open(series, points, sealed))) is EnsembleState
    into_pool, into_slow = fast_bank(pool), slow_bank()
    into_pool.restore(rows)
    into_slow.restore(rows)
    model = lambda bank: bank.export(bank.apply(series, 0, lambda m: m))  # noqa: E731
    assert pickle.dumps(model(into_pool)) == pickle.dumps(model(into_slow)) == pickle.dumps(model(fast))
    np.testing.assert_array_equal(into_pool.score_learn(series, xs[half:], ts[half:]),
                                  fast.score_learn(series, xs[half:], ts[half:]))
    np.testing.assert_array_equal(into_slow.score_learn(series, xs[half:], ts[half:]),
                                  slow.score_learn(series, xs[half:], ts[half:]))
    assert pickle.dumps(model(into_pool)) == pickle.dumps(model(fast))


def test_a_packed_slot_of_another_configuration_or_format_is_not_adopted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pool refuses the packed slot of a pool with other parameters, and a packing of another
    format does not unpickle: the bank starts those series afresh (logged), nothing else breaks."""
    xs, ts = shared_file("nab", "artificialWithAnomaly/art_daily_jumpsup.csv")
    other = EnsemblePool(lambda: InOrder(Ensemble(scale=3.0)))
    handle = other.new()
    handle.score_learn_many(xs[:500], ts[:500])
    with pytest.raises(ValueError, match="another configuration"):
        EnsemblePool(reference).adopt(handle.freeze())
    state = handle.freeze()
    with monkeypatch.context() as patch:  # a packing of the next format
        patch.setattr(EnsembleState, "VERSION", EnsembleState.VERSION + 1)
        newer = pickle.dumps(state)
    bank = fast_bank(EnsemblePool(reference))
    bank.restore([("a|r|s|m", 500, bank.seal("a|r|s|m", 500, newer))])
    assert "a|r|s|m" not in bank
    bank.restore([("a|r|s|m", 500, bank.seal("a|r|s|m", 500, pickle.dumps(state)))])
    assert "a|r|s|m" not in bank  # another configuration
    with pytest.raises(ValueError, match="format"):
        pickle.loads(newer)


def test_a_series_evicted_while_its_batch_is_gathered_is_saved_with_that_batch() -> None:
    """The bank evicts (and pickles) a series whose slot it handed out earlier in the same call:
    the points gathered so far are scored first, so the evicted state holds them."""
    xs, ts = shared_file("nab", "artificialWithAnomaly/art_daily_jumpsup.csv")
    pool = EnsemblePool(reference)
    bank = fast_bank(pool, max_series=2)
    names = ["t|r|s|a", "t|r|s|b", "t|r|s|c"]  # three series, room for two: "a" goes while "c" is handed out
    starts = np.arange(0, 3 * 300 + 1, 300)
    got = pool.score_flat((bank.apply(n, 300, lambda model: model) for n in names), starts,
                          np.concatenate([xs[:300]] * 3), np.concatenate([ts[:300]] * 3))
    expected = one_by_one(reference(), xs[:300], ts[:300])
    np.testing.assert_allclose(got, np.concatenate([expected] * 3), rtol=0, atol=TOLERANCE)
    assert "t|r|s|a" not in bank
    (row,) = [row for row in bank.checkpoint() if row[0] == "t|r|s|a"]
    slow = reference()
    one_by_one(slow, xs[:300], ts[:300])
    assert pickle.dumps(pool.adopt(pickle.loads(bank.open(*row))).export()) == pickle.dumps(slow)


def test_state_per_series_stays_under_50_kib() -> None:
    """A series past its warm-up, its season and a context halving pickles under 50 KiB, packed
    no larger than as the point-by-point model."""
    xs, ts = shared_file("nab", "realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv")
    handle = EnsemblePool(reference).new()
    handle.score_learn_many(xs, ts)
    packed = len(pickle.dumps(handle.freeze(), protocol=pickle.HIGHEST_PROTOCOL))
    assert packed < 50 * 1024
    assert packed <= len(pickle.dumps(handle.export(), protocol=pickle.HIGHEST_PROTOCOL))


def test_a_fresh_process_loads_the_compiled_kernel_from_its_cache() -> None:
    """The kernel compiles once (numba's on-disk cache): a second process starts it in well
    under the compile time."""
    import subprocess
    import sys

    code = "import time; from models.detectors.fast_ensemble import warm_up; warm_up(); print(time.process_time())"
    root = Path(__file__).resolve().parents[2]
    seconds = [float(subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                                    check=True).stdout) for _ in range(2)]
    assert seconds[1] < 10.0, seconds  # compiling the kernel takes tens of CPU seconds


@pytest.mark.parametrize("step,lag", [(21600.0, 4), (17280.0, 5), (2 * 86400.0, -1)])
def test_short_and_missing_seasons_match_the_definition(step: float, lag: int) -> None:
    """Spacings whose daily season is a few points (the seasonal ring keeps fewer values than the
    11 it held while the lag was measured) or none (seasonless) score and save alike."""
    rng = np.random.default_rng(5)
    ts = 1.7e9 + step * np.arange(3000)
    xs = np.round(50 + 10 * np.sin(2 * np.pi * ts / 86400) + rng.normal(0, 1, len(ts)), 1)
    xs[[900, 2000]] += 30
    slow = reference()
    expected = one_by_one(slow, xs, ts)
    fast = EnsemblePool(reference).new()
    np.testing.assert_allclose(random_batches(fast, xs, ts, seed=3, largest=50), expected, rtol=0, atol=TOLERANCE)
    assert slow.detector.components[1].lag == lag
    assert pickle.dumps(fast.export()) == pickle.dumps(slow)
