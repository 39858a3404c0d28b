"""The forecasting path for one batch of metric records, without Faust: learn, forecast, store.

For every batch of the metrics topic, the forecast handler (``streams.forecast_handler``)
hands :meth:`ForecastPipeline.process_points` the points that the metrics path decoded from it
(``BatchOutcome.points`` in ``streams.metrics_pipeline``), so no record is decoded twice;
:meth:`ForecastPipeline.process` decodes records itself, the same way (tests, benchmarks).
Per series (bounded :class:`~models.bank.ModelBank`, checkpointed to ``model_state`` as
``forecast:<model>``), by metric name:

* ``forecast_metrics``: a forecaster (``models.forecasting.registry``); every
  ``forecast_every`` points it publishes one :class:`ForecastEvent` per horizon in
  ``forecast_horizons`` (table ``forecasts``);
* ``cost_metrics``: a :class:`~models.forecasting.cost.CostProjector`; every
  ``forecast_every`` points a :class:`CostEvent` for the rest of the UTC day (model
  ``cost:<forecast_model>``) and one for the month (``cost:run-rate``: the month's run rate,
  once its cost has accrued over a day; before, like the day) (table ``cost_projections``);
* metrics in ``replica_capacity``: a :class:`~models.forecasting.risk.RiskPlanner` at the
  service's overload target and within the replica limits (the default
  ``scaling_planner="risk"``), or with ``scaling_planner="peak"`` a
  :class:`~models.forecasting.peak.PeakForecaster` plus ``scaling_headroom``; every
  ``scaling_window`` points a :class:`RecommendationEvent` for the next window (table
  ``recommendations``).

Forecast and cost events go to the forecasts topic (``kind`` says which), recommendations to
the recommendations topic. Points not newer than the last one a series learned are skipped,
so a batch replayed after a crash does not train a model twice; outputs are identified by
series, origin time and horizon/period, so replayed outputs collapse in the ReplacingMergeTree
tables. Invalid and re-keyed records are not among the decoded points: the metrics path
dead-letters the invalid ones (here they are only counted) and sends the others again with
their series key (they are learned when they come back).

>>> from types import SimpleNamespace
>>> from core.settings import Settings
>>> from schemas.events import MetricPoint, encode
>>> class NoStore:  # the pipeline only needs insert() and query()
...     def insert(self, table, columns): return 0
...     def query(self, sql, parameters=None): return SimpleNamespace(rows=[])
>>> pipeline = ForecastPipeline(Settings(forecast_every=4, scaling_window=4), NoStore())
>>> points = [MetricPoint(1_767_225_600.0 + 60 * i, "acme", "eu", "api", "requests_per_s", 250.0) for i in range(8)]
>>> out = pipeline.process([Record("metrics", 0, i, p.series_key.encode(), encode(p)) for i, p in enumerate(points)])
>>> len(out.forecasts), [f.horizon for f in out.forecasts[:3]], out.forecasts[0].target_ts - out.forecasts[0].ts
(6, [1, 6, 12], 60.0)
>>> [(r.replicas, r.planned_load, r.headroom) for r in out.recommendations]  # a flat 250: plan 250, 250 / 100 -> 3
[(3, 250.0, 0.0), (3, 250.0, 0.0)]
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain, compress, islice
from operator import attrgetter, lt
from collections.abc import Iterable
from typing import Any, TypeVar

import msgspec
import numpy as np
import pyarrow as pa

from compliance.redact import Redactor
from core.settings import Settings
from models.bank import ModelBank
from models.forecasting.base import Forecaster
from models.forecasting.cost import DAY, CostProjector
from models.forecasting.fast_forecast import ForecastPool, ForecastSeries, Learned, export, freeze
from models.forecasting.holt_winters import HoltWintersForecaster
from models.forecasting.peak import PeakForecaster
from models.forecasting.risk import RiskPlanner, target_for
from models.forecasting.registry import make_forecaster
from models.forecasting.scaling import ScalingPolicy
from models.ordered import fresh_mask
from schemas.events import EventDecoder, MetricPoint
from sinks.model_state import StoreLike, load_state_key, state_location
from sinks.clickhouse import TS_TYPE
from streams.metrics_pipeline import Record, SavedModels, decode_batch, topic_tenants
from streams.tracing import stage

T = TypeVar("T")
log = logging.getLogger(__name__)
_value, _ts = attrgetter("value"), attrgetter("ts")


class ForecastEvent(msgspec.Struct, frozen=True, tag_field="kind", tag="forecast", gc=False):
    """The forecast of one series ``horizon`` points after the point at ``ts``. The events are not tracked
    by the garbage collector (``gc=False``: strings and numbers only, so in no cycle)."""

    ts: float  # origin: time of the last point learned
    target_ts: float  # ts + horizon * the series' mean spacing
    tenant: str
    region: str
    service: str
    metric: str
    series: str
    horizon: int
    point: float
    lower: float
    upper: float
    coverage: float
    model: str
    points: int  # points the model had learned


class CostEvent(msgspec.Struct, frozen=True, tag_field="kind", tag="cost", gc=False):
    """Cost ``spent`` so far in the UTC day or month, and the projection of the rest until ``until``."""

    ts: float
    tenant: str
    region: str
    service: str
    metric: str
    series: str
    period: str  # "day" or "month"
    until: float
    spent: float
    point: float  # projected cost from ts until `until`
    lower: float
    upper: float
    total: float  # spent + point: the projected cost of the whole period
    coverage: float
    model: str


class RecommendationEvent(msgspec.Struct, frozen=True, tag_field="kind", tag="recommendation", gc=False):
    """Replicas to run for the ``window_points`` points after ``ts``."""

    ts: float
    window_end: float
    tenant: str
    region: str
    service: str
    metric: str
    series: str
    replicas: int
    planned_load: float  # forecast peak of the next window
    current_load: float  # the value at ts
    capacity_per_replica: float
    headroom: float
    window_points: int


@dataclass
class ForecastOutcome:
    """What a batch produced; the caller sends it to Kafka before acknowledging the batch."""

    learned: int = 0
    skipped_invalid: int = 0
    forecasts: list[ForecastEvent] = field(default_factory=list)
    costs: list[CostEvent] = field(default_factory=list)
    recommendations: list[RecommendationEvent] = field(default_factory=list)

    def add(self, other: ForecastOutcome) -> None:
        """Add ``other``'s counts and events to these."""
        self.learned += other.learned
        self.skipped_invalid += other.skipped_invalid
        self.forecasts.extend(other.forecasts)
        self.costs.extend(other.costs)
        self.recommendations.extend(other.recommendations)


class SeriesModels:
    """The models of one series (built on its first point, by metric) and its time bookkeeping."""

    def __init__(self) -> None:
        self.forecaster: Forecaster | None = None
        self.cost: CostProjector | None = None
        self.peak: PeakForecaster | RiskPlanner | None = None
        self.n = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None

    @property
    def spacing(self) -> float:
        """Mean seconds between points (0 before the second point)."""
        if self.n < 2 or self.first_ts is None or self.last_ts is None:
            return 0.0
        return (self.last_ts - self.first_ts) / (self.n - 1)


class ForecastPipeline(SavedModels):
    """Run the per-series forecasters, cost projectors and scaling on decoded metric points.

    Call :meth:`checkpoint` only between batches whose outputs were delivered (the agent does): a
    series never learns a point twice, so a checkpoint taken after learning a point but before its
    outputs reached Kafka would lose those outputs in a replay."""

    def __init__(self, settings: Settings, store: StoreLike, compiled: bool = True):
        if settings.forecast_every < 1 or settings.scaling_window < 1:
            raise ValueError("forecast_every and scaling_window must be >= 1")
        if not settings.forecast_horizons or min(settings.forecast_horizons) < 1:
            raise ValueError("forecast_horizons must be positive steps")
        self.settings = settings
        self.store = store
        self.decoder = EventDecoder(MetricPoint, max_bytes=settings.max_payload_bytes)
        self.horizons = sorted(set(settings.forecast_horizons))
        self.forecast_metrics = set(settings.forecast_metrics)
        self.cost_metrics = set(settings.cost_metrics)
        self.wanted = self.forecast_metrics | self.cost_metrics | set(settings.replica_capacity)
        headroom = settings.scaling_headroom if settings.scaling_planner == "peak" else 0.0  # risk: the quantile is the headroom
        self.policies = {
            metric: ScalingPolicy(capacity, headroom, settings.scaling_min_replicas, settings.scaling_max_replicas)
            for metric, capacity in settings.replica_capacity.items()
        }
        for target in [settings.scaling_overload_target, *settings.scaling_overload_targets.values()]:
            RiskPlanner(target=target)  # fail at start on a target outside (0, 1)
        make_forecaster(settings.forecast_model, season=0)  # fail at start on an unknown name
        self.model = settings.forecast_model
        self.cost_model = f"cost:{settings.forecast_model}"
        # the default models run compiled, all series of a batch in one call (models.forecasting.fast_forecast);
        # compiled=False runs every series point by point (the definition, which tests hold the fast path to)
        risk = lambda: self._risk_planner(settings.scaling_overload_target, ScalingPolicy(1.0))  # noqa: E731
        planner = risk if settings.scaling_planner == "risk" else lambda: PeakForecaster(window=settings.scaling_window)
        self.pool = ForecastPool.serving(SeriesModels, self._forecaster, planner, settings.forecast_every,
                                         settings.scaling_window, capacity=settings.max_series + 1) if compiled else None
        # without a pool (compiled=False, or the peak planner), a checkpoint of a compiled series (a packed slot)
        # loads as the point-by-point models it stands for
        converter = None if self.pool is not None else ForecastPool.serving(
            SeriesModels, self._forecaster, risk, settings.forecast_every, settings.scaling_window, capacity=1)
        restored = (self.pool.adopt if self.pool is not None
                    else None if converter is None else converter.point_by_point)  # (a pool's truth is its length)
        self.bank = ModelBank(f"forecast:{settings.forecast_model}", max_series=settings.max_series,
                              factory=SeriesModels if self.pool is None else self.pool.new,
                              adopt=restored, export=export, freeze=freeze,
                              key=load_state_key(settings.state_key_file))
        self.state = state_location(settings.state_dir, store)  # where checkpoints go (M1_STATE_DIR)
        self._lock = threading.RLock()

    @cached_property
    def redactor(self) -> Redactor:
        """The personal-data policy for :meth:`process` (the worker's points come redacted by the metrics path)."""
        return Redactor.from_settings(self.settings)

    def process(self, records: list[Record]) -> ForecastOutcome:
        """Decode one batch of records as the metrics path does, then :meth:`process_points`."""
        decoded = decode_batch(self.decoder, records, time.time(), self.settings.max_future_seconds,
                               topic_tenants(self.settings), redact=self.redactor.event)
        return self.process_points(decoded.points, skipped_invalid=len(decoded.dead_letters))

    def process_points(self, points: dict[str, list[MetricPoint]], skipped_invalid: int = 0) -> ForecastOutcome:
        """:meth:`learn_points`, then :meth:`store_outputs`; raises only if the store fails (then
        nothing may be acked)."""
        outcome = self.learn_points(points, skipped_invalid)
        self.store_outputs(outcome)
        return outcome

    def learn_points(self, points: dict[str, list[MetricPoint]], skipped_invalid: int = 0) -> ForecastOutcome:
        """Learn one batch's valid, rightly keyed points (by series, in record order; the batch
        had ``skipped_invalid`` invalid records); returns what they produced, not stored yet."""
        outcome = ForecastOutcome(skipped_invalid=skipped_invalid)
        with self._lock, stage("score"):
            wanted = [series for series, batch in points.items() if batch[0].metric in self.wanted]
            self._restore(wanted)
            outcome.add(self._learn_series(points, wanted))
        return outcome

    def _learn_series(self, points: dict[str, list[MetricPoint]], wanted: list[str]) -> ForecastOutcome:
        """What the ``wanted`` series' fresh points produced (events in ``wanted`` order); a replay is not
        learned again. A model that raises gives way to a fresh one, not a stalled batch."""
        if self.pool is None:  # every series point by point
            outcome = ForecastOutcome()
            for series in wanted:
                fresh = _fresh(points[series], self.bank.apply(series, 0, _itself).last_ts)
                if fresh:
                    outcome.add(self.bank.apply_or_restart(series, len(fresh), lambda m: self._learn(m, series, fresh)))
            return outcome
        return self._learn_pooled(points, wanted, self.pool)

    def _learn_pooled(self, points: dict[str, list[MetricPoint]], wanted: list[str], pool: ForecastPool) -> ForecastOutcome:
        """:meth:`_learn_series` with a pool: the series in its slots are gathered and learned in one
        compiled call (earlier if the bank evicts one of them on the way: its state then holds its
        points); others (restored models the kernel does not run) are learned point by point."""
        results: dict[int, ForecastOutcome] = {}  # by position in wanted (the gathered ones: those with events)
        # the gathered series, in parallel lists: position in wanted, name, handle, fresh points
        index: list[int] = []
        names: list[str] = []
        handles: list[ForecastSeries] = []
        fresh_points: list[list[MetricPoint]] = []
        failed: list[tuple[int, str, list[MetricPoint]]] = []
        done = learned = 0

        def flush() -> None:
            nonlocal done, learned
            if len(index) > done:
                learned += self._learn_fast(index[done:], names[done:], handles[done:], fresh_points[done:], results, failed)
            done = len(index)

        apply = self.bank.apply
        pool.gathering(flush)
        try:
            batches = [points[series] for series in wanted]
            held = self.bank.models(zip(wanted, map(len, batches)))  # counted as fresh, first
            for position, (series, batch, models) in enumerate(zip(wanted, batches, held)):
                last = models.last_ts
                if last is None or (batch[0].ts > last and (len(batch) == 1 or _increasing(batch))):
                    fresh = batch  # the usual case
                else:  # a replay is not learned again, nor counted
                    fresh = _fresh(batch, last)
                    apply(series, len(fresh) - len(batch), _itself)
                    if not fresh:
                        continue
                if type(models) is not ForecastSeries:
                    try:
                        results[position] = apply(series, 0, lambda m: self._learn(m, series, fresh))
                    except Exception:
                        log.exception("the %s model of %s failed; it starts afresh", self.bank.detector, series)
                        failed.append((position, series, fresh))
                    continue
                if last is None:  # its first points
                    built = SeriesModels()
                    self._build(built, fresh[0].metric, fresh[0].service)
                    pool.load(models, built)
                index.append(position)
                names.append(series)
                handles.append(models)
                fresh_points.append(fresh)
            flush()
        finally:
            pool.gathered()
        for position, series, fresh in failed:  # afresh: point by point, then into a slot
            self.bank.discard(series)
            models = SeriesModels()
            results[position] = self._learn(models, series, fresh)
            apply(series, len(fresh), lambda handle: pool.load(handle, models))
        outcome = ForecastOutcome(learned=learned)
        for position in sorted(results):
            outcome.add(results[position])
        return outcome

    def _learn_fast(self, index: list[int], names: list[str], handles: list[ForecastSeries],
                    fresh_points: list[list[MetricPoint]], results: dict[int, ForecastOutcome],
                    failed: list[tuple[int, str, list[MetricPoint]]]) -> int:
        """Learn the gathered series (at ``index`` in wanted, ``names``, ``handles``, ``fresh_points``) in one
        call; the events of those that produced some go to ``results``, the series whose models raise (in
        the definition) to ``failed``. Returns the points the others learned."""
        assert self.pool is not None
        s = self.settings
        flat = list(chain.from_iterable(fresh_points))
        sizes = list(map(len, fresh_points))
        learned = self.pool.learn(handles, sizes, np.fromiter(map(_value, flat), dtype=np.float64, count=len(flat)),
                                  np.fromiter(map(_ts, flat), dtype=np.float64, count=len(flat)))
        group = np.repeat(np.arange(len(handles)), sizes)
        bad = set(np.flatnonzero(learned.failed).tolist())
        events: dict[int, ForecastOutcome] = {}
        counts, first_ts = learned.counts, learned.first_ts.tolist()
        for i in np.flatnonzero((counts % s.forecast_every == 0) & (learned.forecasting & ~learned.failed)[group]).tolist():
            g, p, n = int(group[i]), flat[i], int(counts[i])
            events.setdefault(g, ForecastOutcome()).forecasts.extend(self._forecast_events(
                names[g], p, n, _spacing(first_ts[g], p.ts, n), learned.forecasts[i].tolist(), s.forecast_coverage))
        for i in np.flatnonzero((counts % s.scaling_window == 0) & (learned.planning & ~learned.failed)[group]).tolist():
            g, p, n = int(group[i]), flat[i], int(counts[i])
            if p.metric in self.policies and g not in bad:
                try:
                    recommendation = self._recommend(names[g], p, float(learned.plans[i]), _spacing(first_ts[g], p.ts, n))
                except ValueError:  # a NaN plan, as the definition raises on it
                    bad.add(g)
                    continue
                events.setdefault(g, ForecastOutcome()).recommendations.append(recommendation)
        starts = np.concatenate(([0], np.cumsum(sizes))).tolist()
        for g in sorted(bad.union(g for g, handle in enumerate(handles) if handle.cost is not None)):
            try:
                if g in bad:
                    raise ArithmeticError("a plan the definition cannot compute or count replicas for")
                events.setdefault(g, ForecastOutcome()).costs = self._learn_costs(
                    handles[g].cost, names[g], fresh_points[g], counts[starts[g] : starts[g + 1]].tolist())
            except Exception:
                log.exception("the %s model of %s failed; it starts afresh", self.bank.detector, names[g])
                failed.append((index[g], names[g], fresh_points[g]))
                bad.add(g)
        for g, out in events.items():
            if g not in bad:
                results[index[g]] = out
        return len(flat) - sum(sizes[g] for g in bad)

    def _learn_costs(self, cost: CostProjector, series: str, fresh: list[MetricPoint], counts: Iterable[int]) -> list[CostEvent]:
        """Learn ``fresh`` (the series' ``counts``-th points) into ``cost``; the projections that fall due."""
        out = []
        for p, n in zip(fresh, counts):
            cost.learn_one(p.value, p.ts)
            if n % self.settings.forecast_every == 0:
                out.extend(self._costs(cost, series, p))
        return out

    def _learn(self, models: SeriesModels, series: str, batch: list[MetricPoint]) -> ForecastOutcome:
        """Learn the series' points; returns what they produced (added to the batch's outcome by the caller)."""
        outcome = ForecastOutcome()
        first = batch[0]
        if models.n == 0:
            self._build(models, first.metric, first.service)
        s = self.settings
        if models.cost is not None:  # independent of the other models: its projections in point order
            outcome.costs = self._learn_costs(models.cost, series, batch, range(models.n + 1, models.n + len(batch) + 1))
        for p in batch:
            models.n += 1
            models.first_ts = p.ts if models.first_ts is None else models.first_ts
            models.last_ts = p.ts
            outcome.learned += 1
            if models.forecaster is not None:
                models.forecaster.learn_one(p.value, p.ts)
                if models.n % s.forecast_every == 0:
                    steps = models.forecaster.forecast(self.horizons[-1])
                    rows = [(steps[h - 1].point, steps[h - 1].lower, steps[h - 1].upper) for h in self.horizons]
                    outcome.forecasts.extend(self._forecast_events(series, p, models.n, models.spacing, rows,
                                                                   models.forecaster.coverage))
            if models.peak is not None:
                models.peak.learn_one(p.value, p.ts)
                if models.n % s.scaling_window == 0 and p.metric in self.policies:
                    outcome.recommendations.append(self._recommend(series, p, models.peak.forecast_peak(), models.spacing))
        return outcome

    def _build(self, models: SeriesModels, metric: str, service: str) -> None:
        s = self.settings
        if metric in self.forecast_metrics:
            models.forecaster = self._forecaster()
        if metric in self.cost_metrics:
            models.cost = CostProjector(cost_forecaster(s.cost_step_seconds, s.forecast_coverage), step_seconds=s.cost_step_seconds)
        if metric in self.policies and s.scaling_planner == "risk":
            target = target_for(service, s.scaling_overload_target, s.scaling_overload_targets)
            policy = self.policies[metric]  # the planner adapts only on windows its plan decided (not at a limit)
            models.peak = self._risk_planner(target, policy)
        elif metric in self.policies:
            models.peak = PeakForecaster(window=s.scaling_window)

    def _forecaster(self) -> Forecaster:
        """A series' forecaster (intervals only for the published steps)."""
        s = self.settings
        return make_forecaster(s.forecast_model, coverage=s.forecast_coverage, horizon=self.horizons[-1], steps=self.horizons)

    def _risk_planner(self, target: float, policy: ScalingPolicy) -> RiskPlanner:
        """A series' risk planner at ``target`` under ``policy``."""
        s = self.settings
        return RiskPlanner(s.scaling_window, target, capacity=policy.capacity_per_replica, min_replicas=policy.min_replicas,
                           max_replicas=policy.max_replicas, season=s.scaling_season)

    def _forecast_events(self, series: str, p: MetricPoint, n: int, spacing: float,
                         rows: list[Any], coverage: float) -> list[ForecastEvent]:
        """The forecast events at ``p`` (the series' ``n``-th point): ``rows`` holds (point, lower, upper)
        per published horizon."""
        return [
            ForecastEvent(p.ts, p.ts + h * spacing, p.tenant, p.region, p.service, p.metric, series, h,
                          point, lower, upper, coverage, self.model, n)
            for h, (point, lower, upper) in zip(self.horizons, rows)
        ]

    def _costs(self, cost: CostProjector, series: str, p: MetricPoint) -> list[CostEvent]:
        day, month = cost.project(p.ts)
        coverage = cost.forecaster.coverage
        return [
            CostEvent(p.ts, p.tenant, p.region, p.service, p.metric, series, period, proj.until, proj.spent,
                      proj.point, proj.lower, proj.upper, proj.spent + proj.point, coverage,
                      self.cost_model if proj.method == "forecast" else f"cost:{proj.method}")
            for period, proj in (("day", day), ("month", month))
        ]

    def _recommend(self, series: str, p: MetricPoint, peak: float, spacing: float) -> RecommendationEvent:
        """The replicas for the window after ``p``, planned for ``peak``."""
        policy = self.policies[p.metric]
        window = self.settings.scaling_window
        return RecommendationEvent(p.ts, p.ts + window * spacing, p.tenant, p.region, p.service, p.metric,
                                   series, policy.replicas_for(peak), peak, p.value, policy.capacity_per_replica,
                                   policy.headroom, window)

    # --- sink ----------------------------------------------------------------------------

    def store_outputs(self, outcome: ForecastOutcome) -> None:
        """Store the events of ``outcome`` (created now)."""
        created = int(time.time() * 1000)
        with stage("sink"):
            if outcome.forecasts:
                self.store.insert("forecasts", _columns(outcome.forecasts, ("ts", "target_ts"), created))
            if outcome.costs:
                self.store.insert("cost_projections", _columns(outcome.costs, ("ts", "until"), created))
            if outcome.recommendations:
                self.store.insert("recommendations", _columns(outcome.recommendations, ("ts", "window_end"), created))


def cost_forecaster(step_seconds: int, coverage: float) -> HoltWintersForecaster:
    """The cost projector's default forecaster (daily season of buckets), at ``coverage``."""
    per_day = DAY // step_seconds if DAY % step_seconds == 0 else 0
    return HoltWintersForecaster(alpha=0.2, beta=0.01, gamma=0.2, season=per_day if per_day > 1 else 0,
                                 horizon=max(per_day, 1), coverage=coverage)


def _fresh(batch: list[MetricPoint], last: float | None) -> list[MetricPoint]:
    """The points of ``batch`` later than ``last`` and than every point before them."""
    if (last is None or batch[0].ts > last) and _increasing(batch):
        return batch  # the usual case
    return list(compress(batch, fresh_mask([p.ts for p in batch], last)))


def _increasing(batch: list[MetricPoint]) -> bool:
    """Whether the points' times increase (compared in C: a batch holds thousands of series)."""
    times = list(map(_ts, batch))
    return all(map(lt, times, islice(times, 1, None)))


def _spacing(first_ts: float, last_ts: float, n: int) -> float:
    """``SeriesModels.spacing`` of a series whose ``n``-th point is at ``last_ts``."""
    return (last_ts - first_ts) / (n - 1) if n >= 2 else 0.0


def _itself(model: T) -> T:
    return model


def _columns(events: list[Any], times: tuple[str, ...], created_ms: int) -> dict[str, Any]:
    """Arrow-ready columns of a list of events (fields in ``times`` as UTC milliseconds)."""
    columns: dict[str, Any] = dict(zip(events[0].__struct_fields__, map(list, zip(*map(msgspec.structs.astuple, events)))))
    for name in times:  # round half to even, as round() does
        columns[name] = pa.array(np.rint(np.array(columns[name]) * 1000).astype(np.int64), type=TS_TYPE)
    columns["created_at"] = pa.array([created_ms] * len(events), type=TS_TYPE)
    return columns
