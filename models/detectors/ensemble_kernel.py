"""Compiled (numba) kernel of the default ensemble, over many series whose state is held in arrays.

The same arithmetic as the point-by-point definition (``InOrder(Ensemble())`` with the
``robust``, ``seasonal_robust`` and ``context`` views, their calibrators and rarity gates, see
:mod:`models.detectors.ensemble`), in the same order of operations, so scores agree to the last
bit or nearly (``tests/models/test_fast_ensemble.py`` holds them to 1e-9). Every function here
works on one series' slot of the arrays that :class:`models.detectors.fast_ensemble.EnsemblePool`
holds; :func:`score_batch` runs a whole batch of many series in one call.

Layout (``C`` slots): windows ``w`` 0 (robust's history), 1 (seasonal history), 2 (seasonal values)
in ``wring``/``wsorted`` ``[C, 3, size]`` with ``wmeta[C, 3, 5]`` = (len, head, sorted count,
non-finite count, hint); the seasonal ``past`` ring ``[C, cap]`` with ``pmeta[C, 5]`` = (len, head,
maxlen, lag, settling times held), wrapping at its maxlen (a settled season touches only its
first ``lag + halfwidth`` values) and ``t0[C, 11]``; per view ``v`` calibrator ``cal[C, 3, 2]``
(mean, var) and ``caln[C, 3]``; rarity gates ``gclosed[C, 3, blocks, k]``, ``gopen``/``gtop[C, 3, k]``
and ``gmeta[C, 3, 5]`` = (closed blocks, oldest block, open len, filled, top len); context
``ccounts[C, L*L]``, ``ctotals[C, L]``, ``crange[C, 4]`` = (lo, hi, lo_before, hi_before),
``cint[C, 2]`` = (prev, n); ensemble ``last_ts[C]``, ``learned[C]``, ``since[C]``.

Parameters: ``fp`` (floats) and ``ip`` (ints), indexed by the ``F_*`` and ``I_*`` constants.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

MAD_TO_STD = 1.4826
NAN = math.nan
INF = math.inf
SETTLE_POINTS = 11  # RobustZ._settle_lag: timestamps that fix the season's lag

# float parameters: per view v, F_VIEW + v * F_STRIDE + offset
F_ALPHA, F_MIN_STD, F_REL_STD, F_RANGE_FLOOR, F_REL_FLOOR, F_ABS_FLOOR = range(6)
F_STRIDE = 6
F_SEASON = 3 * F_STRIDE  # seasonal view's season (s)
F_CTX_ALPHA = F_SEASON + 1
F_SCALE = F_SEASON + 2  # ensemble squash scale
F_LEVEL = F_SEASON + 3  # ensemble suppressor
F_KEEP = F_SEASON + 4
F_COUNT = F_SEASON + 5
# int parameters: per view v, I_STRIDE * v + offset
I_WARMUP, I_GATE_K, I_GATE_BLOCK, I_GATE_BLOCKS, I_MIN_POINTS = range(5)
I_STRIDE = 5
I_WSIZE = 3 * I_STRIDE  # three window sizes follow
I_HALFWIDTH = I_WSIZE + 3
I_MAX_SEASON = I_WSIZE + 4
I_BINS = I_WSIZE + 5
I_HALVE = I_WSIZE + 6
I_SPAN = I_WSIZE + 7
I_COUNT = I_WSIZE + 8


# -- sorted window (models.sorted_window.SortedWindow) ------------------------------------------
@njit(cache=True)
def bisect_left(srt, n, v):
    """bisect.bisect_left over the first ``n`` values of ``srt``."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if srt[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def bisect_right(srt, n, v):
    """bisect.bisect_right over the first ``n`` values of ``srt``."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if v < srt[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(cache=True)
def window_push(ring, srt, meta, size, v):
    n, ns = meta[0], meta[2]
    if n < size:
        ring[n] = v
        meta[0] = n + 1
    else:
        head = meta[1]
        old = ring[head]
        ring[head] = v
        meta[1] = head + 1 if head + 1 < size else 0
        if old - old == 0.0:
            lo = bisect_left(srt, ns, old)
            for j in range(lo, ns - 1):
                srt[j] = srt[j + 1]
            ns -= 1
        else:
            meta[3] -= 1
    if v - v == 0.0:
        lo = bisect_right(srt, ns, v)  # insort
        for j in range(ns, lo, -1):
            srt[j] = srt[j - 1]
        srt[lo] = v
        ns += 1
    else:
        meta[3] += 1
    meta[2] = ns


@njit(cache=True)
def _kth_deviation(srt, meta, k, med):
    """SortedWindow._kth_deviation: (k-th smallest |v - med|, the next one or 0.0 for odd counts)."""
    n = meta[2]
    c = n // 2
    n_lo, n_hi = c, n - c
    lo = k + 1 - n_hi
    if lo < 0:
        lo = 0
    hi = k + 1 if k + 1 < n_lo else n_lo
    i = meta[4]
    if i < lo:
        i = lo
    elif i > hi:
        i = hi
    if i > lo and med - srt[c - i] >= srt[c + k - i + 1] - med:
        i -= 1
        while i > lo and med - srt[c - i] >= srt[c + k - i + 1] - med:
            i -= 1
    else:
        while i < hi and med - srt[c - 1 - i] < srt[c + k - i] - med:
            i += 1
    meta[4] = i
    j = k + 1 - i
    a = med - srt[c - i] if i > 0 else -INF
    b = srt[c + j - 1] - med if j > 0 else -INF
    kth = b if b > a else a
    if n % 2:
        return kth, 0.0
    a = med - srt[c - 1 - i] if i < n_lo else INF
    b = srt[c + j] - med if j < n_hi else INF
    return kth, (b if b < a else a)


@njit(cache=True)
def window_median_mad(srt, meta):
    n = meta[2]
    if meta[3] or not n:
        return NAN, NAN
    if n % 2:
        med = srt[n // 2]
        kth, _ = _kth_deviation(srt, meta, (n - 1) // 2, med)
        return med, kth
    med = (srt[n // 2 - 1] + srt[n // 2]) / 2
    kth, following = _kth_deviation(srt, meta, (n - 1) // 2, med)
    return med, (kth + following) / 2


@njit(cache=True)
def window_range(srt, meta):
    if meta[3] or not meta[2]:
        return NAN
    return srt[meta[2] - 1] - srt[0]


# -- calibrator and rarity gate (models.detectors.calibration, models.detectors.rarity) ----------
@njit(cache=True)
def calib_z(cal, n, raw, warmup, min_std, rel_std):
    """ScoreCalibrator.z."""
    if n <= warmup or raw != raw:
        return 0.0
    var = cal[1]
    std = math.sqrt(var if var > 0.0 else 0.0)
    if min_std > std:
        std = min_std
    floor = rel_std * abs(cal[0])
    if floor > std:
        std = floor
    z = (raw - cal[0]) / std
    return 0.0 if 0.0 > z else z


@njit(cache=True)
def calib_z_learn(cal, caln, v, raw, warmup, alpha, min_std, rel_std):
    """ScoreCalibrator.z_learn of a non-NaN raw measure."""
    mean, var, n = cal[0], cal[1], caln[v]
    z = calib_z(cal, n, raw, warmup, min_std, rel_std)
    n += 1
    caln[v] = n
    a = 1.0 / n
    if not a > alpha:
        a = alpha
    d = raw - mean
    cal[0] = mean + a * d
    cal[1] = (1.0 - a) * (var + a * d * d)
    return z


@njit(cache=True)
def gate_kth(gtop, gopen, gmeta, k):
    """RarityGate.kth_largest: the k-th largest of the closed blocks' top and the open block."""
    i, j = 0, gmeta[2] - 1  # gtop descending, gopen ascending
    top_len = gmeta[4]
    if top_len + gmeta[2] < k:
        return -INF
    value = -INF
    for _ in range(k):
        if i < top_len and (j < 0 or gtop[i] >= gopen[j]):
            value = gtop[i]
            i += 1
        else:
            value = gopen[j]
            j -= 1
    return value


@njit(cache=True)
def gate_learn(gclosed, gopen, gtop, gmeta, k, block, blocks, raw):
    """RarityGate.learn of a non-NaN raw measure: whether it passes, then remember it."""
    verdict = raw > gate_kth(gtop, gopen, gmeta, k)
    m = gmeta[2]
    if m < k or raw > gopen[0]:
        lo = bisect_right(gopen, m, raw)  # insort, then keep the k largest
        for j in range(m, lo, -1):
            gopen[j] = gopen[j - 1]
        gopen[lo] = raw
        m += 1
        if m > k:
            for j in range(m - 1):
                gopen[j] = gopen[j + 1]
            m = k
        gmeta[2] = m
    gmeta[3] += 1
    if gmeta[3] == block:
        count, head = gmeta[0], gmeta[1]
        if count < blocks:
            at = (head + count) % blocks
            gmeta[0] = count + 1
        else:
            at = head
            gmeta[1] = (head + 1) % blocks
        gclosed[at, :] = NAN
        gclosed[at, :m] = gopen[:m]
        values = gclosed[:, :k].ravel()
        values = np.sort(values[values == values])  # NaN marks an unfilled place
        top = min(k, len(values))
        for j in range(top):
            gtop[j] = values[len(values) - 1 - j]
        gmeta[4] = top
        gmeta[2] = 0
        gmeta[3] = 0
    return verdict


@njit(cache=True)
def _gated_z(cal, caln, gclosed, gopen, gtop, gmeta, fp, ip, v, raw):
    """CalibratedDetector.z_learn_one after raw_learn_one: calibrated, gated z; learns both."""
    if raw != raw:
        return 0.0
    f, i = v * F_STRIDE, v * I_STRIDE
    z = calib_z_learn(cal, caln, v, raw, ip[i + I_WARMUP], fp[f + F_ALPHA], fp[f + F_MIN_STD], fp[f + F_REL_STD])
    k = ip[i + I_GATE_K]
    if k > 0 and not gate_learn(gclosed, gopen, gtop, gmeta, k, ip[i + I_GATE_BLOCK], ip[i + I_GATE_BLOCKS], raw):
        return 0.0
    return z


@njit(cache=True)
def _peek_z(cal, n, gopen, gtop, gmeta, fp, ip, v, raw):
    """CalibratedDetector.peek_z given raw_one."""
    f, i = v * F_STRIDE, v * I_STRIDE
    k = ip[i + I_GATE_K]
    if k > 0 and not (raw == raw and raw > gate_kth(gtop, gopen, gmeta, k)):
        return 0.0
    return calib_z(cal, n, raw, ip[i + I_WARMUP], fp[f + F_MIN_STD], fp[f + F_REL_STD])


# -- robust views (models.detectors.robust) --------------------------------------------------------
@njit(cache=True)
def _robust_raw(hring_meta, hsrt, vsrt, vmeta, fp, v, y, has_y, min_points):
    """RobustZ._raw_y: NaN without y or before min_points; else |y - median| / spread."""
    if not has_y or hring_meta[0] < min_points:
        return NAN
    med, mad = window_median_mad(hsrt, hring_meta)
    f = v * F_STRIDE
    spread = MAD_TO_STD * mad
    floor = fp[f + F_RANGE_FLOOR] * window_range(vsrt, vmeta)
    if floor > spread:
        spread = floor
    floor = fp[f + F_REL_FLOOR] * abs(med)
    if floor > spread:
        spread = floor
    floor = fp[f + F_ABS_FLOOR]
    if floor > spread:
        spread = floor
    return abs(y - med) / spread


@njit(cache=True)
def _past_at(past, pmeta, i):
    """The i-th oldest value of the past ring (which wraps at its maxlen ``pmeta[2]``)."""
    at = pmeta[1] + i
    size = pmeta[2]
    return past[at - size] if at >= size else past[at]


@njit(cache=True)
def _past_append(past, pmeta, x):
    """deque.append under the ring's maxlen ``pmeta[2]``: the oldest value goes once full."""
    n, size = pmeta[0], pmeta[2]
    if n == size:
        pmeta[1] = pmeta[1] + 1 if pmeta[1] + 1 < size else 0
        n -= 1
    at = pmeta[1] + n
    past[at - size if at >= size else at] = x
    pmeta[0] = n + 1


@njit(cache=True)
def _seasonal_y(past, pmeta, x, k):
    """RobustZ._y of the seasonal view: (y, whether there is one)."""
    lag = pmeta[3]
    if lag < 0:
        return x, True
    if lag == 0 or pmeta[0] < lag + k:
        return 0.0, False
    if k == 0:
        return x - _past_at(past, pmeta, 0), True
    around = np.empty(2 * k + 1)
    for i in range(2 * k + 1):
        around[i] = _past_at(past, pmeta, i)
    around.sort()
    return x - around[k], True


@njit(cache=True)
def _settle_lag(past, pmeta, t0, t, season, k, max_season):
    """RobustZ._settle_lag: after 11 timestamps, the season in points (or -1: seasonless)."""
    held = pmeta[4]
    t0[held] = t
    held += 1
    pmeta[4] = held
    if held < SETTLE_POINTS:
        return
    diffs = np.sort(t0[1:held] - t0[: held - 1])
    m = len(diffs)
    step = diffs[m // 2] if m % 2 else (diffs[m // 2 - 1] + diffs[m // 2]) / 2
    lag = int(np.rint(season / step)) if step > 0 else 0
    low = k + 1 if k + 1 > 2 else 2
    lag = lag if low <= lag <= max_season else -1
    pmeta[3] = lag
    keep = lag + k if lag + k > 1 else 1  # deque(past, maxlen=keep): its last `keep` values, moved to the front
    n = pmeta[0] if pmeta[0] < keep else keep
    kept = np.empty(n)
    for i in range(n):
        kept[i] = _past_at(past, pmeta, pmeta[0] - n + i)
    past[:n] = kept
    pmeta[0], pmeta[1], pmeta[2] = n, 0, keep
    pmeta[4] = 0


@njit(cache=True)
def _seasonal_raw_learn(wring, wsorted, wmeta, s, past, pmeta, t0, fp, ip, x, t):
    """RobustZ.raw_learn_one of the seasonal view (view 1: history window 1, values window 2)."""
    k = ip[I_HALFWIDTH]
    lag = pmeta[3]
    hmeta, vmeta = wmeta[s, 1], wmeta[s, 2]
    y, has_y = _seasonal_y(past, pmeta, x, k)
    raw = _robust_raw(hmeta, wsorted[s, 1], wsorted[s, 2], vmeta, fp, 1, y, has_y, ip[I_STRIDE + I_MIN_POINTS])
    if lag == 0:  # RobustZ.learn_raw while the lag is being measured
        _settle_lag(past, pmeta, t0, t, fp[F_SEASON], k, ip[I_MAX_SEASON])
        if pmeta[3] != lag:
            y, has_y = _seasonal_y(past, pmeta, x, k)
    if has_y:
        window_push(wring[s, 1], wsorted[s, 1], hmeta, ip[I_WSIZE + 1], y)
    window_push(wring[s, 2], wsorted[s, 2], vmeta, ip[I_WSIZE + 2], x)
    if pmeta[3] != -1:
        _past_append(past, pmeta, x)
    return raw


# -- context view (models.detectors.context) ------------------------------------------------------
@njit(cache=True)
def _context_level(crange, n, bins, x):
    lo, hi, lo_before, hi_before = crange[0], crange[1], crange[2], crange[3]
    lo_all = lo_before if lo_before < lo else lo
    hi_all = hi_before if hi_before > hi else hi
    if n == 0 or x < lo_all:
        return 0
    if x > hi_all:
        return bins + 1
    if hi_all <= lo_all:
        return 1
    b = int((x - lo_all) / (hi_all - lo_all) * bins)
    return 1 + (b if b < bins - 1 else bins - 1)


@njit(cache=True)
def _context_raw(ccounts, ctotals, cint, alpha, bins, level):
    prev = cint[0]
    if prev < 0:
        return NAN
    levels = bins + 2
    return -math.log((ccounts[prev * levels + level] + alpha) / (ctotals[prev] + alpha * levels))


@njit(cache=True)
def _context_raw_learn(ccounts, ctotals, crange, cint, alpha, bins, halve, x):
    """ContextSurprise.raw_learn_one."""
    level = _context_level(crange, cint[1], bins, x)
    prev = cint[0]
    if prev < 0:
        raw = NAN
    else:
        levels = bins + 2
        at = prev * levels + level
        seen = ccounts[at]
        raw = -math.log((seen + alpha) / (ctotals[prev] + alpha * levels))
        ccounts[at] = seen + 1.0
        ctotals[prev] += 1.0
    cint[0] = level
    if x < crange[0]:
        crange[0] = x
    if x > crange[1]:
        crange[1] = x
    cint[1] += 1
    if cint[1] % halve == 0:
        crange[2], crange[3], crange[0], crange[1] = crange[0], crange[1], INF, -INF
        for j in range(len(ccounts)):
            ccounts[j] = ccounts[j] * 0.5
        for j in range(len(ctotals)):
            ctotals[j] = ctotals[j] * 0.5
    return raw


# -- the ensemble ----------------------------------------------------------------------------------
@njit(cache=True)
def _learn_point(st, fp, ip, s, x, t):
    """Ensemble.score_learn_many of one fresh point: the suppressed score; learns the point."""
    (wring, wsorted, wmeta, past, pmeta, t0, cal, caln, gclosed, gopen, gtop, gmeta,
     ccounts, ctotals, crange, cint, last_ts, learned, since) = st
    # view 0: robust (y = x, values = history)
    hmeta = wmeta[s, 0]
    raw = _robust_raw(hmeta, wsorted[s, 0], wsorted[s, 0], hmeta, fp, 0, x, True, ip[I_MIN_POINTS])
    window_push(wring[s, 0], wsorted[s, 0], hmeta, ip[I_WSIZE], x)
    z = _gated_z(cal[s, 0], caln[s], gclosed[s, 0], gopen[s, 0], gtop[s, 0], gmeta[s, 0], fp, ip, 0, raw)
    best = z if z > 0.0 else 0.0
    raw = _seasonal_raw_learn(wring, wsorted, wmeta, s, past[s], pmeta[s], t0[s], fp, ip, x, t)
    z = _gated_z(cal[s, 1], caln[s], gclosed[s, 1], gopen[s, 1], gtop[s, 1], gmeta[s, 1], fp, ip, 1, raw)
    if z > best:
        best = z
    raw = _context_raw_learn(ccounts[s], ctotals[s], crange[s], cint[s], fp[F_CTX_ALPHA], ip[I_BINS], ip[I_HALVE], x)
    z = _gated_z(cal[s, 2], caln[s], gclosed[s, 2], gopen[s, 2], gtop[s, 2], gmeta[s, 2], fp, ip, 2, raw)
    if z > best:
        best = z
    scale = fp[F_SCALE]
    score = best / (best + scale) if best > 0.0 else 0.0
    since[s] += 1
    if since[s] <= ip[I_SPAN]:
        return score * fp[F_KEEP]
    if score >= fp[F_LEVEL]:
        since[s] = 0
    return score


@njit(cache=True)
def _peek_point(st, fp, ip, s, x):
    """Ensemble.score_one (no learning)."""
    (wring, wsorted, wmeta, past, pmeta, t0, cal, caln, gclosed, gopen, gtop, gmeta,
     ccounts, ctotals, crange, cint, last_ts, learned, since) = st
    hmeta = wmeta[s, 0]
    raw = _robust_raw(hmeta, wsorted[s, 0], wsorted[s, 0], hmeta, fp, 0, x, True, ip[I_MIN_POINTS])
    best = _peek_z(cal[s, 0], caln[s, 0], gopen[s, 0], gtop[s, 0], gmeta[s, 0], fp, ip, 0, raw)
    y, has_y = _seasonal_y(past[s], pmeta[s], x, ip[I_HALFWIDTH])
    raw = _robust_raw(wmeta[s, 1], wsorted[s, 1], wsorted[s, 2], wmeta[s, 2], fp, 1, y, has_y, ip[I_STRIDE + I_MIN_POINTS])
    z = _peek_z(cal[s, 1], caln[s, 1], gopen[s, 1], gtop[s, 1], gmeta[s, 1], fp, ip, 1, raw)
    if z > best:
        best = z
    raw = _context_raw(ccounts[s], ctotals[s], cint[s], fp[F_CTX_ALPHA], ip[I_BINS],
                       _context_level(crange[s], cint[s, 1], ip[I_BINS], x))
    z = _peek_z(cal[s, 2], caln[s, 2], gopen[s, 2], gtop[s, 2], gmeta[s, 2], fp, ip, 2, raw)
    if z > best:
        best = z
    score = best / (best + fp[F_SCALE]) if best > 0.0 else 0.0
    return score * fp[F_KEEP] if since[s] + 1 <= ip[I_SPAN] else score


@njit(cache=True, nogil=True)  # other threads (the event loop, the insert thread) run meanwhile
def score_batch(st, fp, ip, slots, starts, xs, ts, out):
    """InOrder(Ensemble).score_learn_many for each series g: slot ``slots[g]``, points
    ``starts[g]:starts[g + 1]`` of ``xs``/``ts`` (in record order); scores into ``out``.
    A point later than every earlier one (and than the slot's last learned) is learned, in
    order; the others are scored after them, against the state they left, and not learned."""
    last_ts, learned = st[16], st[17]
    for g in range(len(slots)):
        s, start, end = slots[g], starts[g], starts[g + 1]
        before = last_ts[s]
        latest = before
        stale = 0
        for i in range(start, end):
            t = ts[i]
            if t > latest:
                out[i] = _learn_point(st, fp, ip, s, xs[i], t)
                latest = t
                learned[s] += 1
            else:
                stale += 1
        last_ts[s] = latest
        if stale:
            latest = before
            for i in range(start, end):
                t = ts[i]
                if t > latest:
                    latest = t
                else:
                    out[i] = _peek_point(st, fp, ip, s, xs[i])
