"""The compiled ensemble (models.detectors.fast_ensemble) scores as the point-by-point definition.

The definition is ``InOrder(Ensemble())`` fed one point at a time (``score_one`` then
``learn_one``). The fast path must match it to 1e-9 on the shared NAB and ASD data (read from
the evaluation's data directories, ``$M1_NAB_DIR`` / ``$M1_ASD_DIR``) and on the demo workload
(many series in one call, with replays), and hold the same state: a slot saves as the very
bytes the point-by-point model pickles, and loads from them.
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
from models.detectors.fast_ensemble import EnsemblePool, export
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


def test_a_checkpoint_moves_between_the_fast_and_the_point_by_point_bank() -> None:
    """A fast bank's checkpoint restores into a point-by-point bank and back, mid-series, and
    both go on scoring alike; dropped series give their slots back."""
    xs, ts = shared_file("nab", "artificialWithAnomaly/art_daily_jumpsup.csv")
    key = bytes(32)
    pool = EnsemblePool(reference)
    fast = ModelBank("ensemble", factory=pool.new, adopt=pool.adopt, export=export, key=key)
    slow = ModelBank("ensemble", factory=reference, key=key)
    half = len(xs) // 2
    fast.score_learn("a|r|s|m", xs[:half], ts[:half])
    rows = fast.checkpoint()
    slow.restore(rows)
    assert slow.checkpoint() == []  # restored, not changed
    np.testing.assert_allclose(fast.score_learn("a|r|s|m", xs[half:-500], ts[half:-500]),
                               slow.score_learn("a|r|s|m", xs[half:-500], ts[half:-500]), rtol=0, atol=TOLERANCE)
    again = ModelBank("ensemble", factory=pool.new, adopt=pool.adopt, export=export, key=key)
    again.restore(slow.checkpoint())
    np.testing.assert_allclose(again.score_learn("a|r|s|m", xs[-500:], ts[-500:]),
                               slow.score_learn("a|r|s|m", xs[-500:], ts[-500:]), rtol=0, atol=TOLERANCE)
    assert len(pool) == 2
    fast.discard("a|r|s|m")
    assert len(pool) == 1


def test_a_series_evicted_while_its_batch_is_gathered_is_saved_with_that_batch() -> None:
    """The bank evicts (and pickles) a series whose slot it handed out earlier in the same call:
    the points gathered so far are scored first, so the evicted state holds them."""
    xs, ts = shared_file("nab", "artificialWithAnomaly/art_daily_jumpsup.csv")
    pool = EnsemblePool(reference)
    bank = ModelBank("ensemble", max_series=2, factory=pool.new, adopt=pool.adopt, export=export, key=bytes(32))
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
    assert bank.open(*row) == pickle.dumps(slow, protocol=pickle.HIGHEST_PROTOCOL)


def test_state_per_series_stays_under_50_kib() -> None:
    """A series past its warm-up, its season and a context halving pickles under 50 KiB."""
    xs, ts = shared_file("nab", "realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv")
    handle = EnsemblePool(reference).new()
    handle.score_learn_many(xs, ts)
    assert len(pickle.dumps(handle.export(), protocol=pickle.HIGHEST_PROTOCOL)) < 50 * 1024


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
