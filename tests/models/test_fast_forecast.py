"""The compiled forecasting path (models.forecasting.fast_forecast) gives what the point-by-point one gives.

The definition is ``ForecastPipeline(..., compiled=False)``: every series' ``SeriesModels`` (Holt-Winters
forecaster with its conformal intervals, risk planner, cost projector) learns point by point. The fast
path must publish the same forecasts, cost projections and recommendations (floats to 1e-9) on the shared
NAB data (read from the evaluation's data directory, ``$M1_NAB_DIR``) and on the demo workload, in random
batch sizes with replays, and hold the same state: its checkpoints (packed slots, ``ForecastState``)
restore to the same point-by-point models as the definition's, and either path's load into either path.
"""

from __future__ import annotations

import math
import pickle
from types import SimpleNamespace
from typing import Any

import msgspec
import numpy as np
import pytest

from core.settings import Settings
from m1.workload import Workload
from models.evaluation.cli import default_nab_data
from models.evaluation.series import read_series
from models.forecasting.fast_forecast import ForecastSeries, ForecastState
from schemas.events import MetricPoint
from streams.forecast_pipeline import ForecastOutcome, ForecastPipeline

TOLERANCE = 1e-9
FILES = [  # a daily season with level shifts, a flat line, recurring spikes, real CPU, traffic, ad exchange
    "artificialWithAnomaly/art_daily_jumpsup.csv",
    "artificialNoAnomaly/art_flatline.csv",
    "artificialWithAnomaly/art_load_balancer_spikes.csv",
    "realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv",
    "realTraffic/speed_7578.csv",
    "realAdExchange/exchange-2_cpc_results.csv",
]
METRICS = ("requests_per_s", "cpu_pct", "cost_usd")  # forecast and planned, forecast and planned, cost


class NoStore:
    """The two store calls the pipeline makes: nothing stored, no checkpoint to restore."""

    def insert(self, table: str, columns: dict) -> int:
        return 0

    def query(self, sql: str, parameters: dict | None = None) -> SimpleNamespace:
        return SimpleNamespace(rows=[])


def pipelines(tmp_path: Any, **overrides: Any) -> tuple[ForecastPipeline, ForecastPipeline]:
    """(point by point, compiled), with the same bank key so that their checkpoints compare as bytes."""
    settings = Settings(home=tmp_path, **overrides)
    slow, fast = ForecastPipeline(settings, NoStore(), compiled=False), ForecastPipeline(settings, NoStore())
    assert slow.pool is None and fast.pool is not None
    fast.bank.key = slow.bank.key = bytes(32)
    return slow, fast


def assert_same(got: ForecastOutcome, expected: ForecastOutcome) -> None:
    """The same counts and events in the same order; floats within TOLERANCE (NaN where NaN)."""
    assert (got.learned, got.skipped_invalid) == (expected.learned, expected.skipped_invalid)
    for name in ("forecasts", "costs", "recommendations"):
        a, b = getattr(got, name), getattr(expected, name)
        assert len(a) == len(b), name
        for x, y in zip(a, b):
            assert type(x) is type(y)
            for u, v in zip(msgspec.structs.astuple(x), msgspec.structs.astuple(y)):
                if isinstance(v, float) and not (math.isnan(u) and math.isnan(v)):
                    assert abs(u - v) <= TOLERANCE * max(1.0, abs(v)), (name, x, y)
                else:
                    assert u == v, (name, x, y)


def states(pipeline: ForecastPipeline, points: list[MetricPoint]) -> dict[str, bytes]:
    """The model of every series of ``points`` that the bank holds live, as it pickles it."""
    bank = pipeline.bank
    return {series: pickle.dumps(bank.export(bank.apply(series, 0, lambda m: m)), protocol=pickle.HIGHEST_PROTOCOL)
            for series in sorted({p.series_key for p in points}) if series in bank}


def restored(tmp_path: Any, rows: list[tuple[str, int, bytes]]) -> dict[str, bytes]:
    """The point-by-point models checkpoint ``rows`` restore to in a fresh point-by-point pipeline, pickled."""
    slow, _ = pipelines(tmp_path)
    slow.bank.restore(rows)
    assert all(series in slow.bank for series, _, _ in rows)
    return {series: pickle.dumps(slow.bank.apply(series, 0, lambda m: m), protocol=pickle.HIGHEST_PROTOCOL)
            for series, _, _ in rows}


def feed(pipelines: tuple[ForecastPipeline, ...], batches: list[dict[str, list[MetricPoint]]]) -> list[ForecastOutcome]:
    """Each batch through every pipeline; the outcomes of the first."""
    outs = []
    for batch in batches:
        results = [p.process_points({s: list(points) for s, points in batch.items()}) for p in pipelines]
        for other in results[1:]:
            assert_same(other, results[0])
        outs.append(results[0])
    return outs


def random_batches(points: list[MetricPoint], seed: int, largest: int = 200) -> list[dict[str, list[MetricPoint]]]:
    """``points`` (in record order) cut at random, by series; every fifth batch also carries a replay of
    points before it (not learned again)."""
    rng = np.random.default_rng(seed)
    batches, i = [], 0
    while i < len(points):
        size = int(rng.integers(1, largest + 1))
        chunk = points[i : i + size]
        if len(batches) % 5 == 4 and i:
            back = int(rng.integers(1, min(i, 300) + 1))
            chunk = points[i - back : i] + chunk
        batch: dict[str, list[MetricPoint]] = {}
        for p in chunk:
            batch.setdefault(p.series_key, []).append(p)
        batches.append(batch)
        i += size
    return batches


def nab_points(name: str) -> list[MetricPoint]:
    path = default_nab_data() / name
    if not path.exists():
        pytest.skip(f"shared data not here: {path}")
    ts, xs = read_series(path)
    return [MetricPoint(t, "acme", "eu", "api", metric, abs(x) if metric == "cost_usd" else x)
            for t, x in zip(ts, xs) for metric in METRICS]


@pytest.mark.parametrize("name", FILES)
def test_shared_data_outputs_and_state_match_the_definition(tmp_path: Any, name: str) -> None:
    points = nab_points(name)
    slow, fast = pipelines(tmp_path)
    outs = feed((slow, fast), random_batches(points, seed=len(points)))
    assert sum(len(o.forecasts) for o in outs) and sum(len(o.recommendations) for o in outs)
    assert sum(len(o.costs) for o in outs)
    assert restored(tmp_path, fast.bank.checkpoint()) == restored(tmp_path, slow.bank.checkpoint())
    assert states(fast, points) == states(slow, points)
    series = points[0].series_key
    assert type(fast.bank.apply(series, 0, lambda m: m)) is ForecastSeries  # it did run compiled
    assert fast.bank.export(fast.bank.apply(series, 0, lambda m: m)).forecaster.ready


def workload_points(series: int, ticks: int) -> list[MetricPoint]:
    workload = Workload(tenants=3, regions=2, series=series, anomalies=series // 10, ticks=ticks, seed=5)
    metrics = [s.metric for s in workload.series]
    assert {"requests_per_s", "cpu_pct"} <= set(metrics)
    return [p for tick in range(ticks) for p in workload.tick(tick, 1_767_225_600.0 + 60.0 * tick)]


def test_demo_workload_with_replays_evictions_and_checkpoints(tmp_path: Any) -> None:
    """Many series a batch (the demo workload plus a cost series for each CPU series), random cuts with
    replays, a bank small enough to evict series while a batch is gathered, and halfway a restart from
    each path's checkpoint into the other path."""
    points = workload_points(series=48, ticks=300)
    points += [MetricPoint(p.ts, p.tenant, p.region, p.service, "cost_usd", abs(p.value) / 1000.0, p.labels)
               for p in points if p.metric == "cpu_pct"]
    points.sort(key=lambda p: p.ts)
    batches = random_batches(points, seed=7, largest=900)
    half = len(batches) // 2
    slow, fast = pipelines(tmp_path)
    bounded_slow, bounded_fast = pipelines(tmp_path, max_series=20)  # 60 series: every batch evicts
    feed((slow, fast), batches[:half])
    feed((bounded_slow, bounded_fast), batches[:half])
    assert states(fast, points) == states(slow, points)
    rows_slow, rows_fast = slow.bank.checkpoint(), fast.bank.checkpoint()
    assert {type(pickle.loads(fast.bank.open(*row))) for row in rows_fast} == {ForecastState}
    assert restored(tmp_path, rows_fast) == restored(tmp_path, rows_slow)
    # evicted and live alike
    assert restored(tmp_path, bounded_fast.bank.checkpoint()) == restored(tmp_path, bounded_slow.bank.checkpoint())
    # restart: each path from either path's checkpoint
    again_slow, again_fast = pipelines(tmp_path)
    packed_slow, packed_fast = pipelines(tmp_path)
    again_fast.bank.restore(rows_slow)
    again_slow.bank.restore(rows_fast)
    packed_fast.bank.restore(rows_fast)
    packed_slow.bank.restore(rows_slow)
    assert all(type(again_fast.bank.apply(s, 0, lambda m: m)) is ForecastSeries for s, _, _ in rows_slow)
    assert all(type(packed_fast.bank.apply(s, 0, lambda m: m)) is ForecastSeries for s, _, _ in rows_fast)
    outs = feed((slow, fast, again_slow, again_fast, packed_slow, packed_fast), batches[half:])
    feed((bounded_slow, bounded_fast), batches[half:])  # (what the checkpoint above took of them went to no store)
    assert sum(len(o.recommendations) for o in outs) and sum(len(o.costs) for o in outs)
    assert states(again_fast, points) == states(slow, points) == states(fast, points)
    assert states(again_slow, points) == states(packed_fast, points) == states(packed_slow, points) == states(slow, points)
    seasons = {fast.bank.export(fast.bank.apply(p.series_key, 0, lambda m: m)).forecaster.season
               for p in points if p.metric == "requests_per_s"}
    assert seasons - {0}  # the seasonal arithmetic ran too
    assert restored(tmp_path, bounded_fast.bank.checkpoint()) == restored(tmp_path, bounded_slow.bank.checkpoint())


def test_a_packed_checkpoint_loads_point_by_point_where_no_pool_runs(tmp_path: Any) -> None:
    """A compiled series' checkpoint (a packed slot) restores as the point-by-point models it stands for
    in a pipeline without a pool: run point by point, or with the peak planner (which keeps the risk
    planner it was checkpointed with, as any checkpoint keeps its configuration)."""
    points = workload_points(series=24, ticks=120)
    slow, fast = pipelines(tmp_path)
    feed((slow, fast), random_batches(points, seed=5))
    rows = fast.bank.checkpoint()
    peak = ForecastPipeline(Settings(home=tmp_path, scaling_planner="peak"), NoStore())
    peak.bank.key = bytes(32)
    assert peak.pool is None
    peak.bank.restore(rows)
    assert {type(peak.bank.apply(s, 0, lambda m: m)).__name__ for s, _, _ in rows} == {"SeriesModels"}
    assert states(peak, points) == restored(tmp_path, rows) == states(slow, points)


def test_a_model_the_kernel_does_not_run_stays_point_by_point(tmp_path: Any) -> None:
    """A checkpoint of a forecaster otherwise configured (another coverage) loads as it is, not into a
    slot, and learns point by point next to compiled series."""
    points = workload_points(series=24, ticks=120)
    other = ForecastPipeline(Settings(home=tmp_path, forecast_coverage=0.8), NoStore(), compiled=False)
    other.bank.key = bytes(32)
    other.process_points({s: ps for s, ps in _by_series(points[: len(points) // 2]).items()})
    slow, fast = pipelines(tmp_path)
    rows = other.bank.checkpoint()
    slow.bank.restore(rows)
    fast.bank.restore(rows)
    kinds = {type(fast.bank.apply(s, 0, lambda m: m)).__name__ for s, _, _ in rows}
    assert kinds == {"SeriesModels"}
    feed((slow, fast), random_batches(points[len(points) // 2 :], seed=3))
    assert states(fast, points) == states(slow, points)


def _by_series(points: list[MetricPoint]) -> dict[str, list[MetricPoint]]:
    out: dict[str, list[MetricPoint]] = {}
    for p in points:
        out.setdefault(p.series_key, []).append(p)
    return out
