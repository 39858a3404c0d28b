"""Numenta Anomaly Benchmark (NAB) scoring, after Lavin & Ahmad (2015).

Our own implementation of the published rules:

* the first ``min(floor(0.15 * n), 0.15 * 5000)`` rows of each series are a
  probationary period that is never scored;
* a point inside a labelled window weighs ``tpWeight * S(p) / S(-1)``, where
  ``S`` is NAB's scaled sigmoid and ``p = -(right - i + 1) / width`` its
  relative position (the window's first point is worth exactly ``tpWeight``);
  a window is worth the best (i.e. earliest) detection in it, or ``-fnWeight``
  when nothing in it fires;
* a point outside every window weighs ``fpWeight * S(d)``, ``d`` its distance
  past the end of the preceding window relative to that window's width (``-fpWeight``
  when no window precedes it);
* one threshold per profile, shared by the whole corpus, is chosen to maximise
  the summed score, and the total is normalised to
  ``100 * (raw - null) / (perfect - null)`` with ``null = -fnWeight * windows``
  (never fires) and ``perfect = tpWeight * windows`` (fires at every window start).

A point is a detection when ``anomaly_score >= threshold``.

>>> round(scaled_sigmoid(-1.0), 5), scaled_sigmoid(0.0), scaled_sigmoid(3.0)
(0.98661, 0.0, -1.0)
>>> probationary_length(1000), probationary_length(10000)
(150, 750)
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PROBATION_PERCENT = 0.15

DEFAULT_PROFILES: dict[str, dict[str, float]] = {
    "standard": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11, "tnWeight": 1.0},
    "reward_low_FP_rate": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.22, "tnWeight": 1.0},
    "reward_low_FN_rate": {"tpWeight": 1.0, "fnWeight": 2.0, "fpWeight": 0.11, "tnWeight": 1.0},
}


# --------------------------------------------------------------------------- data


@dataclass
class Series:
    """One NAB data file: ``name`` is ``<category>/<file>.csv``."""

    name: str
    timestamps: np.ndarray  # datetime64[us]
    values: np.ndarray  # float64

    @property
    def epoch_seconds(self) -> np.ndarray:
        return self.timestamps.astype("datetime64[us]").astype(np.int64) / 1e6


def _parse_times(texts: Sequence[str]) -> np.ndarray:
    return np.array([t.strip().replace(" ", "T") for t in texts], dtype="datetime64[us]")


def read_series(path: Path, name: str) -> Series:
    """Read a NAB ``timestamp,value`` csv."""
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    header = [h.strip() for h in rows[0]]
    ti, vi = header.index("timestamp"), header.index("value")
    body = rows[1:]
    return Series(
        name=name,
        timestamps=_parse_times([r[ti] for r in body]),
        values=np.array([float(r[vi]) for r in body], dtype=np.float64),
    )


def load_corpus(data_dir: str | os.PathLike[str]) -> list[Series]:
    """Every ``<category>/<file>.csv`` under ``data_dir``, sorted by name."""
    root = Path(data_dir)
    paths = sorted(p for p in root.glob("*/*.csv") if p.is_file())
    return [read_series(p, p.relative_to(root).as_posix()) for p in paths]


def load_windows(labels_file: str | os.PathLike[str]) -> dict[str, list[tuple[np.datetime64, np.datetime64]]]:
    """NAB ``combined_windows.json``: series name -> sorted ``(start, end)`` windows."""
    with open(labels_file) as f:
        raw = json.load(f)
    out: dict[str, list[tuple[np.datetime64, np.datetime64]]] = {}
    for name, wins in raw.items():
        pairs = [(_parse_times([a])[0], _parse_times([b])[0]) for a, b in wins]
        out[name] = sorted(pairs)
    return out


def load_profiles(path: str | os.PathLike[str] | None) -> dict[str, dict[str, float]]:
    """NAB ``profiles.json`` as ``{profile: cost matrix}``; NAB's defaults when absent."""
    if path is None or not Path(path).is_file():
        return dict(DEFAULT_PROFILES)
    with open(path) as f:
        raw = json.load(f)
    return {name: dict(p.get("CostMatrix", p)) for name, p in raw.items()}


# ------------------------------------------------------------------------ weights


def scaled_sigmoid(x: float | np.ndarray) -> float | np.ndarray:
    """NAB's ``2 / (1 + exp(5x)) - 1``, and exactly -1 from ``x >= 3``."""
    arr = np.asarray(x, dtype=np.float64)
    val = np.where(arr >= 3.0, -1.0, 2.0 / (1.0 + np.exp(np.clip(5.0 * arr, -700, 700))) - 1.0)
    return float(val) if val.ndim == 0 else val


MAX_TP = float(scaled_sigmoid(-1.0))


def probationary_length(n: int, percent: float = PROBATION_PERCENT) -> int:
    """Rows at the start of an ``n``-row series that are not scored."""
    return int(min(math.floor(percent * n), percent * 5000))


@dataclass
class Layout:
    """Per-point window membership and unweighted NAB weights of one series.

    ``window[i]`` is the index of the window holding point ``i`` (or -1);
    ``tp[i]`` is ``S(p) / S(-1)`` inside windows, ``fp[i]`` is ``S(d)`` outside;
    ``scorable[i]`` is False in the probationary period.
    """

    window: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    scorable: np.ndarray
    n_windows: int  # windows with at least one scorable point


def layout(timestamps: np.ndarray, windows: Sequence[tuple[np.datetime64, np.datetime64]], probation_percent: float = PROBATION_PERCENT) -> Layout:
    """Window membership, TP/FP weights and the probation mask for one series."""
    n = len(timestamps)
    idx = np.arange(n)
    window = np.full(n, -1, dtype=np.int64)
    tp = np.zeros(n)
    fp = np.full(n, -1.0)
    bounds: list[tuple[int, int]] = []
    for start, end in windows:
        lo = int(np.searchsorted(timestamps, start, side="left"))
        hi = int(np.searchsorted(timestamps, end, side="right")) - 1
        if hi >= lo:
            bounds.append((lo, hi))
    for w, (lo, hi) in enumerate(bounds):
        width = hi - lo + 1
        window[lo : hi + 1] = w
        pos = -(hi - idx[lo : hi + 1] + 1) / width
        tp[lo : hi + 1] = np.asarray(scaled_sigmoid(pos)) / MAX_TP
        nxt = bounds[w + 1][0] if w + 1 < len(bounds) else n
        after = idx[hi + 1 : nxt]
        if len(after):
            dist = np.abs(after - hi) / max(width - 1, 1)
            fp[hi + 1 : nxt] = scaled_sigmoid(dist)
    scorable = idx >= probationary_length(n, probation_percent)
    n_windows = len(set(window[scorable & (window >= 0)].tolist()))
    return Layout(window=window, tp=tp, fp=fp, scorable=scorable, n_windows=n_windows)


# ---------------------------------------------------------------------- sweeping


@dataclass
class SeriesScores:
    """A detector's scores on one series, with the series' layout."""

    name: str
    scores: np.ndarray
    layout: Layout


@dataclass
class ProfileResult:
    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    normalized: float
    detected_windows: int
    windows: int
    false_positives: int
    precision: float
    recall: float


def _flatten(items: Sequence[SeriesScores]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Scorable points of all series: scores, global window id, tp weight, fp weight."""
    scores, wins, tps, fps = [], [], [], []
    offset = 0
    for item in items:
        lay = item.layout
        m = lay.scorable
        w = lay.window[m]
        # renumber this series' windows into a corpus-wide id space
        uniq = np.unique(w[w >= 0])
        remap = {int(u): offset + k for k, u in enumerate(uniq)}
        wins.append(np.array([remap.get(int(v), -1) for v in w], dtype=np.int64))
        offset += len(uniq)
        scores.append(np.asarray(item.scores, dtype=np.float64)[m])
        tps.append(lay.tp[m])
        fps.append(lay.fp[m])
    cat = lambda parts, dt: np.concatenate(parts) if parts else np.zeros(0, dtype=dt)  # noqa: E731
    return cat(scores, np.float64), cat(wins, np.int64), cat(tps, np.float64), cat(fps, np.float64), offset


def sweep(items: Sequence[SeriesScores], cost: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Total raw NAB score for every candidate threshold, thresholds in decreasing order.

    Returns ``(thresholds, totals)``; the first candidate is ``inf`` (nothing fires).
    """
    scores, wins, tps, fps, n_windows = _flatten(items)
    tpw, fpw, fnw = cost["tpWeight"], cost["fpWeight"], cost["fnWeight"]
    order = np.argsort(-scores, kind="stable")
    s, w = scores[order], wins[order]
    tp_sorted = tpw * tps[order]
    delta = np.where(w < 0, fpw * fps[order], 0.0)
    for wid in range(n_windows):
        pos = np.flatnonzero(w == wid)
        best = np.maximum.accumulate(tp_sorted[pos])
        prev = np.concatenate(([-fnw], best[:-1]))
        delta[pos] = np.maximum(best, -fnw) - np.maximum(prev, -fnw)
    totals = -fnw * n_windows + np.cumsum(delta)
    # a threshold admits every point scoring >= it: evaluate at the end of each run of ties
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) if len(s) else np.zeros(0, dtype=np.int64)
    return np.r_[np.inf, s[last]], np.r_[-fnw * n_windows, totals[last]]


def evaluate(items: Sequence[SeriesScores], cost: dict[str, float], threshold: float) -> tuple[float, int, int, int]:
    """Raw score, detected windows, counted windows and false-positive points at ``threshold``."""
    scores, wins, tps, fps, n_windows = _flatten(items)
    fired = scores >= threshold
    raw = cost["fpWeight"] * float(fps[fired & (wins < 0)].sum())
    detected = 0
    for wid in range(n_windows):
        hit = fired & (wins == wid)
        if hit.any():
            detected += 1
            raw += max(cost["tpWeight"] * float(tps[hit].max()), -cost["fnWeight"])
        else:
            raw -= cost["fnWeight"]
    return raw, detected, n_windows, int((fired & (wins < 0)).sum())


def score_profile(items: Sequence[SeriesScores], profile: str, cost: dict[str, float]) -> ProfileResult:
    """Best-threshold NAB result of one profile over the corpus ``items``."""
    thresholds, totals = sweep(items, cost)
    best = int(np.argmax(totals))
    threshold = float(thresholds[best])
    raw, detected, n_windows, fps = evaluate(items, cost, threshold)
    null = -cost["fnWeight"] * n_windows
    perfect = cost["tpWeight"] * n_windows
    norm = 100.0 * (raw - null) / (perfect - null) if perfect != null else 0.0
    return ProfileResult(
        profile=profile,
        threshold=threshold,
        raw=raw,
        null=null,
        perfect=perfect,
        normalized=norm,
        detected_windows=detected,
        windows=n_windows,
        false_positives=fps,
        precision=detected / (detected + fps) if detected + fps else 0.0,
        recall=detected / n_windows if n_windows else 0.0,
    )


# ----------------------------------------------------------------------- running


@dataclass
class DetectorRun:
    """One detector over the corpus: per-series scores and timings."""

    detector: str
    series: list[SeriesScores] = field(default_factory=list)
    points: int = 0
    seconds: float = 0.0
    results: dict[str, ProfileResult] = field(default_factory=dict)

    @property
    def us_per_point(self) -> float:
        return 1e6 * self.seconds / self.points if self.points else 0.0


def run_series(detector: str, series: Series, options: dict | None = None) -> tuple[str, str, np.ndarray, float]:
    """Score one series with a fresh detector (built with ``options``); returns ``(detector, name, scores, seconds)``."""
    from models.registry import make_detector

    det = fast_detector(detector, options or {}, series.epoch_seconds) or make_detector(detector, **(options or {}))
    start = time.perf_counter()
    scores = det.score_learn_many(series.values.copy(), series.epoch_seconds)  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - start
    return detector, series.name, np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0), elapsed


def fast_detector(detector: str, options: dict, ts: np.ndarray) -> Any:
    """The compiled fast path of ``detector`` (``models.detectors.fast_ensemble``) for a series
    stamped ``ts``, or None. It is ``InOrder``-wrapped, as in the stream, so it serves only series
    whose stamps strictly increase (there ``InOrder`` changes nothing); the others (6 of NAB's and
    ASD's files repeat a stamp) take the point-by-point detector."""
    from models.detectors.fast_ensemble import EnsemblePool
    from models.ordered import InOrder
    from models.registry import make_detector

    if not (len(ts) < 2 or bool(np.all(np.diff(ts) > 0))):
        return None
    pool = EnsemblePool.serving(lambda: InOrder(make_detector(detector, **options)), capacity=1)
    return None if pool is None else pool.new()


def nab_name(detector: str) -> str:
    """``detector`` as NAB's scorer can read it: no ``_`` (NAB splits result names on it).

    Registry names become camelCase, as NAB's own detectors are named (``windowedGaussian``).

    >>> nab_name("seasonal_robust"), nab_name("ensemble"), nab_name("a__b_")
    ('seasonalRobust', 'ensemble', 'aB')
    """
    head, *rest = [part for part in detector.split("_") if part]
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def write_results(out_dir: Path, detector: str, series: Series, scores: np.ndarray, lay: Layout) -> Path:
    """``<out>/<name>/<category>/<name>_<file>.csv`` in NAB's results layout, ``name = nab_name(detector)``."""
    category, file = series.name.split("/", 1)
    name = nab_name(detector)
    path = out_dir / name / category / f"{name}_{file}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value", "anomaly_score", "label"])
        stamps = np.datetime_as_string(series.timestamps, unit="s")
        for ts, v, s, lab in zip(stamps, series.values.tolist(), scores.tolist(), (lay.window >= 0).tolist()):
            w.writerow([ts.replace("T", " "), repr(v) if not float(v).is_integer() else int(v), f"{s:.6f}", int(lab)])
    return path


def run_benchmark(
    data_dir: str | os.PathLike[str],
    labels_file: str | os.PathLike[str],
    detectors: Iterable[str],
    profiles: dict[str, dict[str, float]],
    out_dir: str | os.PathLike[str] | None = None,
    workers: int = 2,
    progress: bool = True,
    options: dict[str, dict] | None = None,
) -> list[DetectorRun]:
    """Run every detector (built with ``options[name]``) over every series (``workers`` processes)
    and score each profile."""
    corpus = load_corpus(data_dir)
    if not corpus:
        raise FileNotFoundError(f"no <category>/<file>.csv under {data_dir}")
    windows = load_windows(labels_file)
    layouts = {s.name: layout(s.timestamps, windows.get(s.name, [])) for s in corpus}
    by_name = {s.name: s for s in corpus}
    names = list(dict.fromkeys(detectors))
    runs = {d: DetectorRun(d) for d in names}
    collected: dict[tuple[str, str], tuple[np.ndarray, float]] = {}
    tasks = [(d, s) for d in names for s in corpus]

    def _record(det: str, name: str, scores: np.ndarray, secs: float) -> None:
        collected[(det, name)] = (scores, secs)

    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        prog = Progress(TextColumn("[bold]NAB[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"))
    else:
        prog = None
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_series, d, s, (options or {}).get(d)) for d, s in tasks]
        if prog is not None:
            with prog:
                tid = prog.add_task("", total=len(futures))
                for fut in as_completed(futures):
                    det, name, scores, secs = fut.result()
                    _record(det, name, scores, secs)
                    prog.update(tid, advance=1, description=f"{det} {name}")
        else:
            for fut in as_completed(futures):
                _record(*fut.result())

    for det in names:
        run = runs[det]
        for s in corpus:
            scores, secs = collected[(det, s.name)]
            run.series.append(SeriesScores(s.name, scores, layouts[s.name]))
            run.points += len(s.values)
            run.seconds += secs
            if out_dir is not None:
                write_results(Path(out_dir), det, by_name[s.name], scores, layouts[s.name])
        for prof, cost in profiles.items():
            run.results[prof] = score_profile(run.series, prof, cost)
    return [runs[d] for d in names]
