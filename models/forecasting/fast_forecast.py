"""The forecasting path's fast path: the models of many series held in arrays, one compiled call a batch.

:class:`ForecastPool` holds, one slot a series, the state of what the forecasting path keeps per series
(``streams.forecast_pipeline.SeriesModels``: its count and stamps, a
:class:`~models.forecasting.holt_winters.HoltWintersForecaster` and a
:class:`~models.forecasting.risk.RiskPlanner`) in the arrays of :mod:`models.forecasting.forecast_kernel`;
:meth:`ForecastPool.learn` learns a batch of many series in one compiled call. The point-by-point classes
stay the definition: the kernel does their arithmetic in their order
(``tests/models/test_fast_forecast.py`` holds the two together), and a slot loads from and exports as
exactly the object they pickle. A series' cost projector stays a
Python object on its handle (:attr:`ForecastSeries.cost`): it learns one hourly bucket at a time.

A :class:`ForecastSeries` is a slot's handle, what a :class:`~models.bank.ModelBank` holds: the bank
pickles its slot packed (:class:`ForecastState`, :func:`freeze`), a checkpoint it loads becomes a handle
again (:meth:`ForecastPool.adopt`: a packed slot, or point-by-point models as older checkpoints hold; a
model the kernel does not run stays as it is), a bank without a pool loads a packed slot as the
point-by-point models (:meth:`ForecastPool.point_by_point`), and the slot is freed when the bank drops
the handle. A checkpoint's cut copies many slots at once (:meth:`ForecastPool.copy_slots`, see
:class:`~models.slot_state.SlotCut`; a series with a cost projector, which learns in place, is packed at
the cut instead) and packs them from the copies as :func:`freeze` would have.

>>> import pickle
>>> import numpy as np
>>> from models.forecasting.holt_winters import HoltWintersForecaster
>>> from models.forecasting.risk import RiskPlanner
>>> class Models:  # what the pipeline keeps per series (streams.forecast_pipeline.SeriesModels)
...     def __init__(self):
...         self.forecaster, self.cost, self.peak, self.n, self.first_ts, self.last_ts = None, None, None, 0, None, None
>>> forecaster = lambda: HoltWintersForecaster(horizon=12, steps=[1, 6, 12])
>>> pool = ForecastPool(Models, forecaster, RiskPlanner, every=12, scaling_window=12)
>>> slow = Models(); slow.forecaster, slow.peak = forecaster(), RiskPlanner()
>>> fast = pool.new(); pool.load(fast, slow)
True
>>> xs = [100.0 + (i % 24) for i in range(300)]
>>> for i, x in enumerate(xs):
...     slow.n, slow.first_ts, slow.last_ts = slow.n + 1, slow.first_ts or 60.0, 60.0 * (i + 1)
...     slow.forecaster.learn_one(x); slow.peak.learn_one(x)
>>> _ = pool.learn([fast], [300], np.array(xs), 60.0 * np.arange(1.0, 301.0))
>>> state = lambda m: pickle.dumps((m.forecaster, m.peak, m.n, m.first_ts, m.last_ts))
>>> state(fast.export()) == state(slow)
True
>>> state(pool.point_by_point(pickle.loads(pickle.dumps(fast.freeze())))) == state(slow)
True
"""

from __future__ import annotations

import pickle
import statistics
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from numba import njit

from models.forecasting import forecast_kernel as k
from models.forecasting.holt_winters import HoltWintersForecaster
from models.forecasting.risk import RiskPlanner
from models.forecasting.seasonality import detect_season
from models.slot_state import SlotHandle, SlotState, Unpacker, digest, load_window, ring_into
from models.sorted_window import SortedWindow

#: The kernel's state arrays, in the order of its state tuple (``k.S_*``); ``first`` is the pool's own.
FIELDS = ("fs", "fi", "buf", "sea", "pts", "lev", "rring", "rsrt", "rmeta", "pend", "peaks", "sring", "ssrt", "smeta")
#: The arrays a slot packs from (:func:`_freeze`): all but the sorted copies of the windows.
PACKED = ("first", *(name for name in FIELDS if name not in ("rsrt", "ssrt")))


class Learned(NamedTuple):
    """What :meth:`ForecastPool.learn` gives back: per point, and per series (in the order given)."""

    failed: np.ndarray  # per series: the definition raises on its points (its state is not to be used)
    counts: np.ndarray  # per point: the series' count of points after it
    forecasts: np.ndarray  # [point, step, (point, lower, upper)] where the forecast is due
    plans: np.ndarray  # per point: the planned peak where a window closed (NaN elsewhere)
    forecasting: np.ndarray  # per series: whether it has a forecaster
    planning: np.ndarray  # per series: whether it has a replica planner
    first_ts: np.ndarray  # per series: the time of its first point


class ForecastState(SlotState):
    """A :class:`ForecastPool` slot as a checkpoint pickles it (see :mod:`models.slot_state`); its objects
    are the handle's cost projector and last stamp."""

    __slots__ = ()


def export(model: Any) -> Any:
    """The point-by-point models of ``model``: a handle's (see :meth:`ForecastSeries.export`), any other as they are."""
    return model.export() if type(model) is ForecastSeries else model


def freeze(model: Any) -> Any:
    """What a bank pickles of ``model`` (its ``freeze``): a handle's packed slot (:class:`ForecastState`),
    any other models as they are."""
    return model.freeze() if type(model) is ForecastSeries else model


class ForecastSeries(SlotHandle):
    """A series' slot in a :class:`ForecastPool`, and its cost projector (None: none)."""

    __slots__ = ("pool", "slot", "cost", "last_ts", "__weakref__")

    def __init__(self, pool: ForecastPool, slot: int):
        self.pool = pool
        self.slot = slot
        self.cost: Any = None
        self.last_ts: float | None = None  # time of the series' last point (None before the first)

    def export(self) -> Any:
        """The point-by-point models in this slot's state."""
        return self.pool.export(self)

    def freeze(self) -> ForecastState:
        """This slot's state, packed (what a checkpoint pickles)."""
        return self.pool.freeze(self)

    def objects(self) -> tuple[Any, ...] | None:
        """The objects the packed slot holds (cost projector, last stamp); None if there is a cost
        projector, which learns in place."""
        return None if self.cost is not None else (None, self.last_ts)

    def __del__(self) -> None:
        try:
            self.pool.release(self.slot)
        except Exception:  # interpreter shutdown: the pool may be gone already
            pass


class ForecastPool:
    """Slots of per-series forecasting state (see the module docstring).

    ``container()`` makes the empty per-series holder (attributes ``forecaster``, ``cost``, ``peak``, ``n``,
    ``first_ts``, ``last_ts``), ``forecaster()`` the forecaster every series gets, ``planner()`` a planner
    whose window memory and peaks bound those of the planners slots hold; ``every`` and
    ``scaling_window`` are the points between forecasts and between window plans.
    """

    @classmethod
    def serving(cls, container: Callable[[], Any], forecaster: Callable[[], Any], planner: Callable[[], Any],
                every: int, scaling_window: int, capacity: int = 1024) -> ForecastPool | None:
        """A pool for these models, or None if the kernel does not run them."""
        f, p = forecaster(), planner()
        if type(f) is not HoltWintersForecaster or f.multiplicative or not f.beta or f.season is not None:
            return None
        if type(p) is not RiskPlanner or p.scale != "spread":
            return None
        return cls(container, forecaster, planner, every, scaling_window, capacity)

    def __init__(self, container: Callable[[], Any], forecaster: Callable[[], HoltWintersForecaster],
                 planner: Callable[[], RiskPlanner], every: int, scaling_window: int, capacity: int = 1024):
        self.container = container
        self.forecaster = forecaster
        f, p = forecaster(), planner()
        ci = f.intervals
        self.steps = np.array(ci.steps, dtype=np.int64)
        self.fp = np.zeros(k.P_COUNT)
        self.fp[[k.P_ALPHA, k.P_BETA, k.P_GAMMA, k.P_FALLBACK, k.P_COVERAGE, k.P_ADAPT]] = (
            f.alpha, f.beta, f.gamma, f.fallback.fading_factor, ci.coverage, ci.adapt_rate)
        self.ip = np.zeros(k.Q_COUNT, dtype=np.int64)
        self.ip[[k.Q_WARMUP, k.Q_EVERY, k.Q_SCALING]] = (f.warmup, every, scaling_window)
        self._signature = _forecaster_signature(f)
        self._fallback_state = f.fallback._ewmean.__getstate__()  # mean (8 bytes), ..., initialised (byte 24), ...
        self.first_cap = max(2, f.warmup // 2)  # the longest season detect_season finds is warmup // 2 - 1
        self.shapes = {"fs": (k.FS_COUNT,), "fi": (k.FI_COUNT,), "buf": (f.warmup,), "first": (self.first_cap,),
                       "sea": (self.first_cap + 1,), "pts": (ci.horizon,), "lev": (len(ci.steps),),
                       "rring": (len(ci.steps), ci.window), "rsrt": (len(ci.steps), ci.window),
                       "rmeta": (len(ci.steps), 5), "pend": (ci.horizon, ci.horizon),
                       "peaks": (max(p.base_windows, p.season, 1),), "sring": (p.scores.size,),
                       "ssrt": (p.scores.size,), "smeta": (5,)}
        self.params = digest(self.fp, self.ip, self.steps, np.array([f.warmup, ci.horizon, ci.window]))
        self.capacity = 0
        self.state: dict[str, np.ndarray] = {}
        self.free: list[int] = []
        self._flush: Callable[[], None] | None = None  # learns the batch being gathered (see gathering)
        self._grow(capacity)

    def __len__(self) -> int:
        """Slots in use."""
        return self.capacity - len(self.free)

    def _grow(self, capacity: int) -> None:
        ints = {"fi", "rmeta", "smeta"}
        for name, shape in self.shapes.items():
            grown = np.zeros((capacity, *shape), dtype=np.int64 if name in ints else np.float64)
            if self.capacity:
                grown[: self.capacity] = self.state[name]
            self.state[name] = grown
        self.free.extend(range(capacity - 1, self.capacity - 1, -1))
        self.capacity = capacity

    def release(self, slot: int) -> None:
        """Give ``slot`` back (its handle is gone)."""
        self.free.append(slot)

    def new(self) -> ForecastSeries:
        """A handle on a fresh series without models (:meth:`load` gives it some)."""
        if not self.free:
            self._grow(2 * self.capacity)
        slot = self.free.pop()
        for name in ("fi", "fs", "lev", "rmeta", "smeta"):  # all a packed slot holds past its lengths
            self.state[name][slot] = 0
        self.state["fi"][slot, k.I_SEASON] = -1
        return ForecastSeries(self, slot)

    def load(self, handle: ForecastSeries, models: Any) -> bool:
        """Load the point-by-point ``models`` into ``handle``'s slot; False (slot state undefined) if the
        kernel does not run them (another forecaster or planner, or this pool's forecaster otherwise
        configured)."""
        st, s = self.state, handle.slot
        f, p = models.forecaster, models.peak
        if f is not None and (type(f) is not HoltWintersForecaster or _forecaster_signature(f) != self._signature):
            return False
        if p is not None and (type(p) is not RiskPlanner or p.scale != "spread" or p.scores.size > st["sring"].shape[1]
                              or max(p.base_windows, p.season, 1) > st["peaks"].shape[1]):
            return False
        try:
            st["fi"][s] = 0
            st["fi"][s, k.I_SEASON] = -1
            st["fi"][s, k.I_N] = models.n
            st["fs"][s, k.F_FIRST_TS] = models.first_ts or 0.0
            if f is not None:
                self._load_forecaster(s, f)
            if p is not None:
                self._load_planner(s, p)
        except (ValueError, IndexError, TypeError, AttributeError):
            return False
        handle.cost, handle.last_ts = models.cost, models.last_ts
        return True

    def adopt(self, models: Any) -> Any:
        """A handle on a slot loaded with ``models`` (a checkpoint just unpickled): a :class:`ForecastState`
        of a pool configured as this one (else ``ValueError``), or point-by-point models if the kernel runs
        them and saves them as the same bytes; else ``models`` as they are (the pipeline runs them point by
        point)."""
        handle = self.new()
        if type(models) is ForecastState:
            if models.params != self.params:
                raise ValueError("the state of forecasting models of another configuration")
            _thaw(self.state, handle.slot, models)
            handle.cost, handle.last_ts = models.objects
            return handle
        if self.load(handle, models) and pickle.dumps(self.export(handle)) == pickle.dumps(models):
            return handle
        return models

    def point_by_point(self, models: Any) -> Any:
        """``models`` (a checkpoint just unpickled) as a bank without a pool holds them: a
        :class:`ForecastState` as the point-by-point models, any other models as they are."""
        return self.adopt(models).export() if type(models) is ForecastState else models

    def freeze(self, handle: ForecastSeries) -> ForecastState:
        """The slot's state packed (what a checkpoint pickles; the batch being gathered learned first)."""
        if self._flush is not None:
            self._flush()
        return self.pack(self.state, handle.slot, (handle.cost, handle.last_ts))

    def copy_slots(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """Copies of the arrays a slot packs from, row ``i`` slot ``slots[i]``'s (the batch being gathered
        learned first)."""
        if self._flush is not None:
            self._flush()
        return {name: np.take(self.state[name], slots, axis=0) for name in PACKED}

    def pack(self, state: dict[str, np.ndarray], row: int, objects: tuple[Any, ...]) -> ForecastState:
        """Row ``row`` of ``state`` (the pool's arrays or a :meth:`copy_slots`) packed, holding ``objects``."""
        return _freeze(state, row, self.params, objects)

    def export(self, handle: ForecastSeries) -> Any:
        """The point-by-point models holding the slot's state. A slot of the batch being gathered is
        learned first, so its state includes that batch."""
        if self._flush is not None:
            self._flush()
        st, s = self.state, handle.slot
        fs, fi = st["fs"][s], st["fi"][s]
        models = self.container()
        models.n = n = int(fi[k.I_N])
        models.first_ts = float(fs[k.F_FIRST_TS]) if n else None
        models.last_ts = handle.last_ts
        models.forecaster = self._save_forecaster(s) if fi[k.I_HAS_F] else None
        models.cost = handle.cost
        models.peak = self._save_planner(s) if fi[k.I_HAS_P] else None
        return models

    def gathering(self, flush: Callable[[], None]) -> None:
        """While a caller gathers a batch: ``flush()`` learns the series gathered so far (an export calls
        it first, so a series the bank evicts meanwhile is saved with its points). ``gathered()`` ends it."""
        self._flush = flush

    def gathered(self) -> None:
        self._flush = None

    def learn(self, handles: Sequence[ForecastSeries], sizes: Sequence[int], xs: np.ndarray, ts: np.ndarray) -> Learned:
        """Learn values ``xs`` at times ``ts`` (float64), the first ``sizes[0]`` of them into ``handles[0]``'s
        series, the next ``sizes[1]`` into ``handles[1]``'s, ... (points later than the series' last, in time
        order), as ``ForecastPipeline._learn`` does point by point; the season of a series whose warm-up
        ends here is detected on the way (``detect_season``, as the definition does)."""
        total = len(xs)
        starts = np.zeros(len(handles) + 1, dtype=np.int64)
        np.cumsum(sizes, out=starts[1:])
        slots = np.fromiter((h.slot for h in handles), dtype=np.int64, count=len(handles))
        counts = np.zeros(total, dtype=np.int64)
        forecasts = np.zeros((total, len(self.steps), 3))
        plans = np.full(total, np.nan)
        at = np.zeros(len(handles), dtype=np.int64)
        state = tuple(self.state[name] for name in FIELDS)
        groups = np.arange(len(handles))
        resume = np.full(len(handles), -1, dtype=np.int64)
        failed = np.zeros(len(handles), dtype=bool)
        while len(groups):
            sub_status, sub_at = np.zeros(len(groups), dtype=np.int64), np.zeros(len(groups), dtype=np.int64)
            k.learn_batch(state, self.fp, self.ip, self.steps, slots[groups], starts[groups], starts[groups + 1],
                          resume[groups], xs, ts, sub_status, sub_at, counts, forecasts, plans)
            at[groups] = sub_at
            paused = [int(g) for g in groups[sub_status == k.PAUSED]]
            for g in groups[sub_status == k.FAILED].tolist():
                failed[g] = True
            for g in paused:
                if not self._seed(int(slots[g])):
                    failed[g] = True
            groups = np.array([g for g in paused if not failed[g]], dtype=np.int64)
            resume[groups] = at[groups]
        for handle, last in zip(handles, ts[starts[1:] - 1].tolist()):
            handle.last_ts = last
        fi = self.state["fi"]
        return Learned(failed, counts, forecasts, plans, fi[slots, k.I_HAS_F] != 0, fi[slots, k.I_HAS_P] != 0,
                       self.state["fs"][slots, k.F_FIRST_TS])

    def _seed(self, s: int) -> bool:
        """Build the Holt-Winters model of a series whose warm-up buffer is full, as
        ``Forecaster.learn_one`` and ``HoltWintersForecaster._learn_model`` do: the season of the buffer,
        and the level, trend and season its first values give; False where the definition raises."""
        st = self.state
        buffer = st["buf"][s, : st["fi"][s, k.I_BUF_LEN]].tolist()
        try:
            season = detect_season(buffer)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError):
            return False
        first = buffer[: max(2, season)]
        level = statistics.fmean(first)
        st["fi"][s, [k.I_SEASON, k.I_INIT, k.I_N_MODEL, k.I_LV_LEN, k.I_TR_LEN, k.I_SE_LEN, k.I_SE_HEAD]] = (
            season, 0, 0, 0, 0, 0, 0)
        st["first"][s, : len(first)] = first
        st["fs"][s, k.F_LV0] = level
        st["fs"][s, k.F_TR0] = statistics.fmean(b - a for a, b in zip(first, first[1:]))
        if season:
            st["sea"][s, :season] = [v - level for v in first]
        return True

    # --- point-by-point models <-> slots ------------------------------------------------------

    def _load_forecaster(self, s: int, f: HoltWintersForecaster) -> None:
        st = self.state
        fi, fs = st["fi"][s], st["fs"][s]
        fi[k.I_HAS_F] = 1
        ewmean = f.fallback._ewmean.__getstate__()
        fs[k.F_FB_MEAN] = np.frombuffer(ewmean[:8])[0]
        fi[k.I_FB_INIT] = ewmean[24]
        if len(f.buffer) >= f.warmup:
            raise ValueError("a full warm-up buffer")
        fi[k.I_BUF_LEN] = len(f.buffer)
        st["buf"][s, : len(f.buffer)] = f.buffer
        fi[k.I_N_MODEL] = f.n_model
        if f.model is not None:
            model, season = f.model, f.season
            if not model._initialized or season > self.first_cap - 1 or len(model._first_values) != max(2, season):
                raise ValueError("a model the kernel does not hold")
            fi[k.I_SEASON], fi[k.I_INIT] = season, 1
            st["first"][s, : len(model._first_values)] = model._first_values
            fi[k.I_LV_LEN], fi[k.I_TR_LEN] = len(model.level), len(model.trend)
            fs[k.F_LV0 : k.F_LV0 + len(model.level)] = list(model.level)
            fs[k.F_TR0 : k.F_TR0 + len(model.trend)] = list(model.trend)
            values = list(model.season) if model.season is not None else []
            fi[k.I_SE_LEN], fi[k.I_SE_HEAD] = len(values), 0
            st["sea"][s, : len(values)] = values
        fi[k.I_PTS_LEN] = len(f.points)
        st["pts"][s, : len(f.points)] = f.points
        ci = f.intervals
        st["lev"][s] = ci.levels
        for index, window in enumerate(ci.residuals):
            _load_window(st["rring"][s, index], st["rsrt"][s, index], st["rmeta"][s, index], window)
        fi[k.I_PEND_LEN], fi[k.I_PEND_HEAD] = len(ci.pending), 0
        for row, issued in enumerate(ci.pending):
            st["pend"][s, row] = issued

    def _save_forecaster(self, s: int) -> HoltWintersForecaster:
        st = self.state
        fi, fs = st["fi"][s], st["fs"][s]
        f = self.forecaster()
        mean = np.array([fs[k.F_FB_MEAN]]).tobytes()
        template = self._fallback_state
        f.fallback._ewmean.__setstate__(mean + template[8:24] + bytes([int(fi[k.I_FB_INIT])]) + template[25:])
        f.buffer = st["buf"][s, : fi[k.I_BUF_LEN]].tolist()
        season = int(fi[k.I_SEASON])
        if season >= 0:
            f.season = season
            f.model = model = f._build(season)
            n_first = min(int(fi[k.I_N_MODEL]), max(2, season))
            model._first_values = st["first"][s, :n_first].tolist()
            model._initialized = bool(fi[k.I_INIT])
            model.level.extend(fs[k.F_LV0 : k.F_LV0 + fi[k.I_LV_LEN]].tolist())
            model.trend.extend(fs[k.F_TR0 : k.F_TR0 + fi[k.I_TR_LEN]].tolist())
            if model.season is not None:
                at = (fi[k.I_SE_HEAD] + np.arange(fi[k.I_SE_LEN])) % (season + 1)
                model.season.extend(st["sea"][s, at].tolist())
        f.n_model = int(fi[k.I_N_MODEL])
        f.points = st["pts"][s, : fi[k.I_PTS_LEN]].tolist()
        ci = f.intervals
        ci.levels = st["lev"][s].tolist()
        ci.residuals = [_save_window(st["rring"][s, index], st["rmeta"][s, index], ci.window)
                        for index in range(len(ci.steps))]
        horizon = ci.horizon
        ci.pending.extend(st["pend"][s, (fi[k.I_PEND_HEAD] + j) % horizon].tolist() for j in range(fi[k.I_PEND_LEN]))
        return f

    def _load_planner(self, s: int, p: RiskPlanner) -> None:
        st = self.state
        fi, fs = st["fi"][s], st["fs"][s]
        fi[k.I_HAS_P] = 1
        fs[[k.F_ALPHA, k.F_LEVEL, k.F_CHANGE, k.F_BASE, k.F_PLAN, k.F_OPEN_PEAK, k.F_TARGET, k.F_ADAPT, k.F_FLOOR,
            k.F_SMOOTHING, k.F_CAPACITY]] = (p.alpha, p.level, p.change, p.base, p.plan, p.open_peak, p.target,
                                             p.adapt_rate, p.floor, p.smoothing, p.capacity)
        fi[[k.I_COUNT, k.I_WINDOWS, k.I_PK_LEN, k.I_PK_HEAD, k.I_WINDOW, k.I_BASE_WINDOWS, k.I_TAIL, k.I_MIN_R,
            k.I_MAX_R, k.I_P_SEASON, k.I_PK_MAX, k.I_MEMORY]] = (
            p.count, p.windows, len(p.peaks), 0, p.window, p.base_windows, p.tail, p.min_replicas,
            -1 if p.max_replicas is None else p.max_replicas, p.season, p.peaks.maxlen, p.scores.size)
        st["peaks"][s, : len(p.peaks)] = list(p.peaks)
        _load_window(st["sring"][s], st["ssrt"][s], st["smeta"][s], p.scores)

    def _save_planner(self, s: int) -> RiskPlanner:
        st = self.state
        fi, fs = st["fi"][s], st["fs"][s]
        top = int(fi[k.I_MAX_R])
        p = RiskPlanner(window=int(fi[k.I_WINDOW]), target=float(fs[k.F_TARGET]), base_windows=int(fi[k.I_BASE_WINDOWS]),
                        memory=int(fi[k.I_MEMORY]), adapt_rate=float(fs[k.F_ADAPT]), floor=float(fs[k.F_FLOOR]),
                        smoothing=float(fs[k.F_SMOOTHING]), capacity=float(fs[k.F_CAPACITY]), tail=int(fi[k.I_TAIL]),
                        min_replicas=int(fi[k.I_MIN_R]), max_replicas=None if top < 0 else top,
                        season=int(fi[k.I_P_SEASON]))
        p.alpha, p.level, p.change, p.base, p.plan, p.open_peak = fs[
            [k.F_ALPHA, k.F_LEVEL, k.F_CHANGE, k.F_BASE, k.F_PLAN, k.F_OPEN_PEAK]].tolist()
        p.count, p.windows = int(fi[k.I_COUNT]), int(fi[k.I_WINDOWS])
        at = (fi[k.I_PK_HEAD] + np.arange(fi[k.I_PK_LEN])) % fi[k.I_PK_MAX]
        p.peaks.extend(st["peaks"][s, at].tolist())
        p.scores = _save_window(st["sring"][s], st["smeta"][s], p.scores.size)
        return p


def warm_up() -> None:
    """Compile the kernel and the packing into numba's on-disk cache (or load them from there):
    ``scripts/install.sh``."""
    class Models:
        forecaster, cost, peak, n, first_ts, last_ts = None, None, None, 0, None, None

    pool = ForecastPool(Models, HoltWintersForecaster, RiskPlanner, every=1, scaling_window=1, capacity=1)
    handle, models = pool.new(), Models()
    models.forecaster, models.peak = HoltWintersForecaster(), RiskPlanner(window=1)
    pool.load(handle, models)
    pool.learn([handle], [3], np.ones(3), np.arange(3.0))
    pool.adopt(pickle.loads(pickle.dumps(pool.freeze(handle))))  # the packing and unpacking


def _forecaster_signature(f: HoltWintersForecaster) -> tuple[Any, ...]:
    """What must match for a forecaster to run in a pool made for another."""
    ci = f.intervals
    return (f.alpha, f.beta, f.gamma, f.multiplicative, f.warmup, f.fallback.fading_factor, ci.steps, ci.horizon,
            ci.window, ci.coverage, ci.adapt_rate)


def _load_window(ring: np.ndarray, srt: np.ndarray, meta: np.ndarray, window: SortedWindow) -> None:
    load_window(ring, srt, meta, np.array(list(window), dtype=np.float64))


def _save_window(ring: np.ndarray, meta: np.ndarray, size: int) -> SortedWindow:
    n, head = int(meta[0]), int(meta[1])
    return SortedWindow(size, np.concatenate((ring[head:n], ring[:head])).tolist())


@njit(cache=True, nogil=True)
def _frozen_lengths(fi: np.ndarray) -> tuple[int, int]:
    """(season values, first values) a slot with ints ``fi`` packs: the season ring once the model is
    initialised, else the seeds ``_seed`` wrote; the first values once a season is detected."""
    season = fi[k.I_SEASON]
    if season < 0:
        return 0, 0
    return (fi[k.I_SE_LEN] if fi[k.I_INIT] else season), max(2, season)


def _freeze(st: dict[str, np.ndarray], s: int, params: bytes, objects: tuple[Any, ...]) -> ForecastState:
    """Slot ``s`` packed: ints ``fi`` (ring heads 0) and the residual and score window lengths; floats
    ``fs``, the warm-up buffer, first values, season, last forecast, levels, residual windows, pending
    forecasts, peaks and scores, rings oldest first."""
    ints, floats = _pack(*[st[name] for name in PACKED], s)
    return ForecastState(params, ints, floats, objects)


@njit(cache=True, nogil=True)
def _pack(first, fs, fi, buf, sea, pts, lev, rring, rmeta, pend, peaks, sring, smeta, s):
    """Row ``s`` of the arrays of :data:`PACKED` (in that order) packed as :func:`_freeze` says: (ints, floats)."""
    f = fi[s]
    season_len, first_len = _frozen_lengths(f)
    horizon, steps = pend.shape[1], lev.shape[1]
    size = (fs.shape[1] + f[k.I_BUF_LEN] + first_len + season_len + f[k.I_PTS_LEN] + steps + f[k.I_PEND_LEN] * horizon
            + f[k.I_PK_LEN] + smeta[s, 0])
    for index in range(steps):
        size += rmeta[s, index, 0]
    floats = np.empty(size)
    at = fs.shape[1] + f[k.I_BUF_LEN] + first_len
    floats[: fs.shape[1]] = fs[s]
    floats[fs.shape[1] : fs.shape[1] + f[k.I_BUF_LEN]] = buf[s, : f[k.I_BUF_LEN]]
    floats[fs.shape[1] + f[k.I_BUF_LEN] : at] = first[s, :first_len]
    at = ring_into(floats, at, sea[s], f[k.I_SE_HEAD], season_len, f[k.I_SEASON] + 1)
    floats[at : at + f[k.I_PTS_LEN]] = pts[s, : f[k.I_PTS_LEN]]
    floats[at + f[k.I_PTS_LEN] : at + f[k.I_PTS_LEN] + steps] = lev[s]
    at += f[k.I_PTS_LEN] + steps
    for index in range(steps):
        at = ring_into(floats, at, rring[s, index], rmeta[s, index, 1], rmeta[s, index, 0], rmeta[s, index, 0])
    at = ring_into(floats, at, pend[s], f[k.I_PEND_HEAD], f[k.I_PEND_LEN], horizon)
    at = ring_into(floats, at, peaks[s], f[k.I_PK_HEAD], f[k.I_PK_LEN], f[k.I_PK_MAX])
    ring_into(floats, at, sring[s], smeta[s, 1], smeta[s, 0], smeta[s, 0])
    ints = np.empty(f.size + steps + 1, dtype=np.int64)
    ints[: f.size] = f
    ints[k.I_SE_HEAD] = ints[k.I_PEND_HEAD] = ints[k.I_PK_HEAD] = 0  # rings packed from their oldest
    ints[f.size : f.size + steps] = rmeta[s, :, 0]
    ints[-1] = smeta[s, 0]
    return ints, floats


def _thaw(st: dict[str, np.ndarray], s: int, state: ForecastState) -> None:
    """Slot ``s`` := the packed ``state`` (:func:`_freeze`'s layout; sorted windows rebuilt)."""
    ints, floats = Unpacker(state.ints), Unpacker(state.floats)
    fi = ints.take(k.FI_COUNT)
    season_len, first_len = _frozen_lengths(fi)
    horizon, steps = st["pend"].shape[1], st["lev"].shape[1]
    st["fi"][s] = fi
    st["fs"][s] = floats.take(k.FS_COUNT)
    st["buf"][s, : fi[k.I_BUF_LEN]] = floats.take(fi[k.I_BUF_LEN])
    st["first"][s, :first_len] = floats.take(first_len)
    st["sea"][s, :season_len] = floats.take(season_len)
    st["pts"][s, : fi[k.I_PTS_LEN]] = floats.take(fi[k.I_PTS_LEN])
    st["lev"][s] = floats.take(steps)
    for index, n in enumerate(ints.take(steps).tolist()):
        load_window(st["rring"][s, index], st["rsrt"][s, index], st["rmeta"][s, index], floats.take(n))
    st["pend"][s, : fi[k.I_PEND_LEN]] = floats.take(fi[k.I_PEND_LEN] * horizon).reshape(-1, horizon)
    st["peaks"][s, : fi[k.I_PK_LEN]] = floats.take(fi[k.I_PK_LEN])
    load_window(st["sring"][s], st["ssrt"][s], st["smeta"][s], floats.take(ints.take(1)[0]))
    if not (ints.at_end() and floats.at_end()):
        raise ValueError("a packed slot state longer than its lengths say")
