"""Compiled (numba) kernel of the forecasting path's default models, over many series held in arrays.

The same arithmetic as the point-by-point definition -- per series the bookkeeping of
``streams.forecast_pipeline.SeriesModels``, a :class:`~models.forecasting.holt_winters.HoltWintersForecaster`
(River's additive Holt-Winters, the EW-mean fallback, the warm-up buffer and the conformal intervals of
:mod:`models.forecasting.conformal`) and a :class:`~models.forecasting.risk.RiskPlanner` (``scale="spread"``)
-- in the same order of operations, so outputs and state agree to the last bit
(``tests/models/test_fast_forecast.py``). :class:`models.forecasting.fast_forecast.ForecastPool` holds the
arrays, one slot a series, and :func:`learn_batch` runs a batch of many series in one call.

Layout (``C`` slots, ``H`` horizon, ``S`` tracked steps, ``W`` residual window):

* ``fs[C, FS_COUNT]`` floats and ``fi[C, FI_COUNT]`` ints, indexed by the ``F_*`` and ``I_*`` constants:
  the series' first stamp and count (its last stamp is on its handle), the fallback mean, Holt-Winters
  level and trend (River's deques of two: ``*_LEN`` values, the older first), the planner's scalars and
  its per-slot parameters;
* ``buf[C, warmup]`` the warm-up buffer; ``sea[C, F + 1]`` Holt-Winters' season deque (a ring of
  ``season + 1``, ``I_SE_HEAD`` the oldest; ``F`` bounds the seasons ``detect_season`` finds);
* ``pts[C, H]`` the last forecast; ``lev[C, S]`` adapted levels; residual windows ``rring``/``rsrt[C, S, W]``
  and ``rmeta[C, S, 5]`` (:func:`models.detectors.ensemble_kernel.window_push`'s layout); ``pend[C, H, H]``
  the pending forecasts (a ring, ``I_PEND_HEAD`` the newest);
* ``peaks[C, P]`` the planner's window peaks (ring, ``I_PK_HEAD`` the oldest); ``sring``/``ssrt[C, M]`` and
  ``smeta[C, 5]`` its scores.

The state tuple ``st`` holds them in that order (``S_*`` indices). Parameters shared by every slot:
``fp`` (floats, ``P_*``), ``ip`` (ints, ``Q_*``) and ``steps`` (the tracked steps, ascending). What the definition would raise on (a plan that is not finite where whole replicas are
counted, a quantile read from a window holding non-finite scores) stops the series with :data:`FAILED`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from models.detectors.ensemble_kernel import bisect_left, window_push

INF = math.inf
# the state tuple
S_FS, S_FI, S_BUF, S_SEA, S_PTS, S_LEV, S_RRING, S_RSRT, S_RMETA, S_PEND, S_PEAKS, S_SRING, S_SSRT, S_SMETA = range(14)
# learn_batch's per-series status
DONE, PAUSED, FAILED = 0, 1, 2

# shared float parameters
P_ALPHA, P_BETA, P_GAMMA, P_FALLBACK, P_COVERAGE, P_ADAPT = range(6)
P_COUNT = 6
# shared int parameters
Q_WARMUP, Q_EVERY, Q_SCALING = range(3)
Q_COUNT = 3

# per-slot floats: series, forecaster, planner (state, then parameters)
(F_FIRST_TS, F_FB_MEAN, F_LV0, F_LV1, F_TR0, F_TR1,
 F_ALPHA, F_LEVEL, F_CHANGE, F_BASE, F_PLAN, F_OPEN_PEAK,
 F_TARGET, F_ADAPT, F_FLOOR, F_SMOOTHING, F_CAPACITY) = range(17)
FS_COUNT = 17
# per-slot ints: series, forecaster, planner (state, then parameters; I_MAX_R -1: no limit)
(I_N, I_HAS_F, I_FB_INIT, I_BUF_LEN, I_SEASON, I_INIT, I_N_MODEL, I_LV_LEN, I_TR_LEN, I_SE_LEN, I_SE_HEAD,
 I_PTS_LEN, I_PEND_LEN, I_PEND_HEAD,
 I_HAS_P, I_COUNT, I_WINDOWS, I_PK_LEN, I_PK_HEAD,
 I_WINDOW, I_BASE_WINDOWS, I_TAIL, I_MIN_R, I_MAX_R, I_P_SEASON, I_PK_MAX, I_MEMORY) = range(27)
FI_COUNT = 27


@njit(cache=True)
def _max(a, b):
    """Python's ``max(a, b)``: ``b`` only if it is larger (ties, signed zeros and NaN as Python has them)."""
    return b if b > a else a


@njit(cache=True)
def _min(a, b):
    return b if b < a else a


# -- Holt-Winters forecaster (models.forecasting.base, holt_winters, conformal) ----------------
@njit(cache=True)
def _ready(fi, s):
    season = fi[s, I_SEASON]
    return season >= 0 and fi[s, I_N_MODEL] >= max(2, season)


@njit(cache=True)
def _season_at(sea, fi, s, k):
    """River's ``season[k]`` (0-based from the oldest)."""
    return sea[s, (fi[s, I_SE_HEAD] + k) % (fi[s, I_SEASON] + 1)]


@njit(cache=True)
def _observe(st, fp, steps, s, y):
    """ConformalIntervals.observe."""
    fi, lev, rring, rsrt, rmeta, pend = st[S_FI], st[S_LEV], st[S_RRING], st[S_RSRT], st[S_RMETA], st[S_PEND]
    horizon = pend.shape[1]
    window = rring.shape[2]
    adapt, coverage = fp[P_ADAPT], fp[P_COVERAGE]
    waiting = fi[s, I_PEND_LEN]
    for index in range(len(steps)):
        lag = steps[index] - 1
        if lag >= waiting:
            break
        error = abs(y - pend[s, (fi[s, I_PEND_HEAD] + lag) % horizon, lag])
        if error - error != 0.0:
            continue
        meta = rmeta[s, index]
        n = meta[0]
        if adapt != 0.0 and n:
            rank = min(max(int(np.ceil((n + 1) * lev[s, index])), 1), n)
            miss = 1.0 if bisect_left(rsrt[s, index], meta[2], error) >= rank else 0.0
            level = lev[s, index] + adapt * (miss - (1.0 - coverage))
            lev[s, index] = _min(_max(level, 0.0), 1.0)
        window_push(rring[s, index], rsrt[s, index], meta, window, error)


@njit(cache=True)
def _clear(st, fp, s):
    """ConformalIntervals.clear."""
    fi, lev, rmeta = st[S_FI], st[S_LEV], st[S_RMETA]
    lev[s, :] = fp[P_COVERAGE]
    rmeta[s, :, :] = 0
    fi[s, I_PEND_LEN] = 0
    fi[s, I_PEND_HEAD] = 0


@njit(cache=True)
def _record(st, s):
    """Forecaster._record: the next forecast (Holt-Winters once ready, else the flat fallback), kept pending."""
    fs, fi, sea, pts, pend = st[S_FS], st[S_FI], st[S_SEA], st[S_PTS], st[S_PEND]
    horizon = pts.shape[1]
    if _ready(fi, s):
        season = fi[s, I_SEASON]
        level = fs[s, F_LV0 + fi[s, I_LV_LEN] - 1]
        trend = fs[s, F_TR0 + fi[s, I_TR_LEN] - 1]
        n_season = fi[s, I_SE_LEN]
        for h in range(horizon):
            a = level + (h + 1) * trend
            if n_season:
                pts[s, h] = a + _season_at(sea, fi, s, n_season - season + h % season)
            else:
                pts[s, h] = a + 0.0
    else:
        pts[s, :] = fs[s, F_FB_MEAN]
    fi[s, I_PTS_LEN] = horizon
    head = (fi[s, I_PEND_HEAD] - 1) % horizon
    pend[s, head, :] = pts[s]
    fi[s, I_PEND_HEAD] = head
    fi[s, I_PEND_LEN] = min(fi[s, I_PEND_LEN] + 1, horizon)


@njit(cache=True)
def _append2(fs, fi, s, base, length, v):
    """Append ``v`` to a deque of at most two values (``fs[s, base:base + 2]``, older first)."""
    if fi[s, length] < 2:
        fs[s, base + fi[s, length]] = v
        fi[s, length] += 1
    else:
        fs[s, base] = fs[s, base + 1]
        fs[s, base + 1] = v


@njit(cache=True)
def _learn_model(st, fp, s, y):
    """HoltWintersForecaster._learn_model (additive): River's update, or its first values and the seeds
    the pool wrote when the season was detected (level, trend and season at ``F_LV0``, ``F_TR0``, ``sea``)."""
    fs, fi, sea = st[S_FS], st[S_FI], st[S_SEA]
    season = fi[s, I_SEASON]
    if fi[s, I_INIT]:
        alpha, beta, gamma = fp[P_ALPHA], fp[P_BETA], fp[P_GAMMA]
        n_season = fi[s, I_SE_LEN]
        past = _season_at(sea, fi, s, n_season - season) if n_season else 0.0
        level1 = fs[s, F_LV0 + fi[s, I_LV_LEN] - 1]
        trend1 = fs[s, F_TR0 + fi[s, I_TR_LEN] - 1]
        _append2(fs, fi, s, F_LV0, I_LV_LEN, alpha * (y - past) + (1 - alpha) * (level1 + trend1))
        _append2(fs, fi, s, F_TR0, I_TR_LEN, beta * (fs[s, F_LV1] - fs[s, F_LV0]) + (1 - beta) * trend1)
        if n_season:
            v = gamma * (y - fs[s, F_LV0] - fs[s, F_TR0]) + (1 - gamma) * past
            ring = season + 1
            if n_season < ring:
                sea[s, (fi[s, I_SE_HEAD] + n_season) % ring] = v
                fi[s, I_SE_LEN] = n_season + 1
            else:
                sea[s, fi[s, I_SE_HEAD]] = v
                fi[s, I_SE_HEAD] = (fi[s, I_SE_HEAD] + 1) % ring
    elif fi[s, I_N_MODEL] + 1 >= max(2, season):  # initialise from the seeds
        fi[s, I_LV_LEN] = 1
        fi[s, I_TR_LEN] = 1
        fi[s, I_SE_LEN] = season
        fi[s, I_SE_HEAD] = 0
        fi[s, I_INIT] = 1
    fi[s, I_N_MODEL] += 1


@njit(cache=True)
def _step(st, fp, steps, s, y):
    """Forecaster._step."""
    fi = st[S_FI]
    was_ready = _ready(fi, s)
    _observe(st, fp, steps, s, y)
    _learn_model(st, fp, s, y)
    if not was_ready and _ready(fi, s):
        _clear(st, fp, s)
    _record(st, s)


@njit(cache=True)
def _forecaster_learn(st, fp, ip, steps, s, y):
    """Forecaster.learn_one; PAUSED when the warm-up buffer is full (the pool detects the season, seeds
    the model and calls :func:`_replay`)."""
    fs, fi, buf = st[S_FS], st[S_FI], st[S_BUF]
    ff = fp[P_FALLBACK]
    if fi[s, I_FB_INIT]:
        fs[s, F_FB_MEAN] = ff * y + (1.0 - ff) * fs[s, F_FB_MEAN]
    else:
        fs[s, F_FB_MEAN] = y
        fi[s, I_FB_INIT] = 1
    if fi[s, I_SEASON] >= 0:
        _step(st, fp, steps, s, y)
        return DONE
    buf[s, fi[s, I_BUF_LEN]] = y
    fi[s, I_BUF_LEN] += 1
    if fi[s, I_BUF_LEN] < ip[Q_WARMUP]:
        _observe(st, fp, steps, s, y)
        _record(st, s)
        return DONE
    return PAUSED


@njit(cache=True)
def _replay(st, fp, steps, s):
    """The buffered values into the model just built (its season and seeds set), then the buffer dropped."""
    fi, buf = st[S_FI], st[S_BUF]
    for j in range(fi[s, I_BUF_LEN]):
        _step(st, fp, steps, s, buf[s, j])
    fi[s, I_BUF_LEN] = 0


@njit(cache=True)
def _forecast_out(st, steps, s, out, i):
    """Forecaster.forecast at the tracked steps: ``out[i, j]`` = (point, lower, upper) of step ``steps[j]``."""
    pts, lev, rsrt, rmeta = st[S_PTS], st[S_LEV], st[S_RSRT], st[S_RMETA]
    for j in range(len(steps)):
        point = pts[s, steps[j] - 1]
        width = 0.0
        for index in range(j, -1, -1):
            n = rmeta[s, index, 0]
            if n:
                rank = min(max(int(np.ceil((n + 1) * lev[s, index])), 1), n)
                width = rsrt[s, index, rank - 1]
                break
        out[i, j, 0] = point
        out[i, j, 1] = point - width
        out[i, j, 2] = point + width


# -- risk planner (models.forecasting.risk, scale "spread") ----------------------------------
@njit(cache=True)
def _peak_at(peaks, fi, s, k):
    return peaks[s, (fi[s, I_PK_HEAD] + k) % fi[s, I_PK_MAX]]


@njit(cache=True)
def _unit(fs, s):
    return fs[s, F_CHANGE] + fs[s, F_FLOOR] * abs(fs[s, F_LEVEL])


@njit(cache=True)
def _kth(ssrt, smeta, s, k):
    """SortedWindow.kth_smallest, or NaN where the definition raises IndexError (k beyond the finite values)."""
    return ssrt[s, k - 1] if k - 1 < smeta[s, 2] else np.nan


@njit(cache=True)
def _provisioned(fs, fi, s):
    """RiskPlanner.provisioned, and whether the limits clamp (NaN where _bought raises)."""
    capacity = fs[s, F_CAPACITY]
    if capacity == 0.0:
        return fs[s, F_PLAN], False
    x = fs[s, F_PLAN] / capacity - 1e-9
    if x - x != 0.0:
        return np.nan, False
    bought = _max(np.ceil(x), 1.0)
    top = fi[s, I_MAX_R]
    clamped = bought < fi[s, I_MIN_R] or (top >= 0 and bought > top)
    replicas = _max(bought, float(fi[s, I_MIN_R]))
    if top >= 0:
        replicas = _min(replicas, float(top))
    return replicas * capacity, clamped


@njit(cache=True)
def _close(st, s, peak):
    """RiskPlanner._close; False where the definition raises."""
    fs, fi, peaks, sring, ssrt, smeta = st[S_FS], st[S_FI], st[S_PEAKS], st[S_SRING], st[S_SSRT], st[S_SMETA]
    fi[s, I_WINDOWS] += 1
    windows = fi[s, I_WINDOWS]
    n = fi[s, I_PK_LEN]
    if n:
        unit = _unit(fs, s)
        if windows != 2 and unit > 0:
            window_push(sring[s], ssrt[s], smeta[s], sring.shape[1], (peak - fs[s, F_BASE]) / unit)
        adapt = fs[s, F_ADAPT]
        if adapt != 0.0:
            provisioned, clamped = _provisioned(fs, fi, s)
            if provisioned != provisioned and fs[s, F_CAPACITY] != 0.0:
                return False
            if not clamped:
                missed = 1.0 if peak > provisioned else 0.0
                fs[s, F_ALPHA] = _min(_max(fs[s, F_ALPHA] + adapt * (fs[s, F_TARGET] - missed), 0.0), 1.0)
        weight = _max(fs[s, F_SMOOTHING], 1.0 / (windows - 1))
        fs[s, F_CHANGE] += weight * (abs(peak - _peak_at(peaks, fi, s, n - 1)) - fs[s, F_CHANGE])
    fs[s, F_LEVEL] += _max(fs[s, F_SMOOTHING], 1.0 / windows) * (peak - fs[s, F_LEVEL])
    top = fi[s, I_PK_MAX]
    if n < top:
        peaks[s, (fi[s, I_PK_HEAD] + n) % top] = peak
        fi[s, I_PK_LEN] = n = n + 1
    else:
        peaks[s, fi[s, I_PK_HEAD]] = peak
        fi[s, I_PK_HEAD] = (fi[s, I_PK_HEAD] + 1) % top
    # _base: the median of the last base_windows peaks, at least the peak one season before
    k = min(fi[s, I_BASE_WINDOWS], n)
    last = np.empty(k)
    for j in range(k):
        last[j] = _peak_at(peaks, fi, s, n - k + j)
    last.sort()
    base = last[k // 2] if k % 2 else (last[k // 2 - 1] + last[k // 2]) / 2
    season = fi[s, I_P_SEASON]
    if season and n >= season:
        base = _max(base, _peak_at(peaks, fi, s, n - season))
    fs[s, F_BASE] = base
    # _planned
    m = smeta[s, 0]
    if not m:
        fs[s, F_PLAN] = base
        return True
    rank = int(np.ceil((m + 1) * (1.0 - fs[s, F_ALPHA]) - 1e-9))
    tail = fi[s, I_TAIL]
    if tail and 2 * tail <= m and rank > m - tail:
        u = _kth(ssrt, smeta, s, m - tail)
        total = 0.0
        for j in range(tail):
            total += _kth(ssrt, smeta, s, m - j)
        if m > smeta[s, 2]:
            return False
        excess = total / tail - u
        q = u + excess * math.log(tail / (m * _max(fs[s, F_ALPHA], 1.0 / (m + 1))))
    else:
        k = min(max(rank, 1), m)
        if k - 1 >= smeta[s, 2]:
            return False
        q = ssrt[s, k - 1]
    fs[s, F_PLAN] = base + q * _unit(fs, s)
    return True


@njit(cache=True)
def _planner_learn(st, s, y):
    """RiskPlanner.learn_one; False where the definition raises."""
    fs, fi = st[S_FS], st[S_FI]
    if y - y != 0.0:
        return True
    fs[s, F_OPEN_PEAK] = _max(fs[s, F_OPEN_PEAK], y)
    fi[s, I_COUNT] += 1
    if fi[s, I_COUNT] == fi[s, I_WINDOW]:
        ok = _close(st, s, fs[s, F_OPEN_PEAK])
        fi[s, I_COUNT] = 0
        fs[s, F_OPEN_PEAK] = -INF
        return ok
    return True


# -- a batch --------------------------------------------------------------------------------
@njit(cache=True, nogil=True)  # other threads (the event loop, the insert thread) run meanwhile
def learn_batch(st, fp, ip, steps, slots, begins, ends, resume, xs, ts, status, at, n_out, forecasts, plans):
    """Learn the points ``begins[g]:ends[g]`` of ``xs``/``ts`` into slot ``slots[g]``, as
    ``ForecastPipeline._learn`` does; with ``resume[g] >= 0`` (not -1), from that point on, where the
    series PAUSED (its buffered values are replayed first). Per point ``i``: ``n_out[i]`` the series' count after it; where the
    forecast is due (every ``Q_EVERY`` points) ``forecasts[i]`` (see :func:`_forecast_out`); where a
    window closes (every ``Q_SCALING`` points) ``plans[i]`` the planned peak. ``status[g]`` is DONE,
    PAUSED (at point ``at[g]``: the season is to be detected) or FAILED (at point ``at[g]``)."""
    fs, fi = st[S_FS], st[S_FI]
    every, scaling = ip[Q_EVERY], ip[Q_SCALING]
    for g in range(len(slots)):
        s = slots[g]
        status[g] = DONE
        i = resume[g]
        replay = i >= 0
        if not replay:
            i = begins[g]
        while i < ends[g]:
            if replay:
                _replay(st, fp, steps, s)
                replay = False
            else:
                n = fi[s, I_N] + 1
                fi[s, I_N] = n
                if n == 1:
                    fs[s, F_FIRST_TS] = ts[i]
                n_out[i] = n
                if fi[s, I_HAS_F] and _forecaster_learn(st, fp, ip, steps, s, xs[i]) == PAUSED:
                    status[g], at[g] = PAUSED, i
                    break
            n = fi[s, I_N]
            if fi[s, I_HAS_F] and n % every == 0:
                _forecast_out(st, steps, s, forecasts, i)
            if fi[s, I_HAS_P]:
                if not _planner_learn(st, s, xs[i]):
                    status[g], at[g] = FAILED, i
                    break
                if n % scaling == 0:
                    plans[i] = fs[s, F_PLAN]
            i += 1
