"""Cross-validated NAB scores: leave one group of files out (a NAB category, an ASD server).

Contract:

* Files are grouped by the first component of their name ``<group>/<file>.csv``: NAB's
  categories, ASD's servers (its ``data/<server>/`` directories).
* Each group in turn is the test fold. Every choice for it -- the configuration from the
  detector's declared grid and each profile's threshold -- is made on the *other* groups' files
  only: the configuration and threshold with the best summed NAB score there (NAB's threshold
  optimisation over the training files; ties keep the earlier configuration). The test fold's
  labels are read only to score it.
* A fold is scored at its chosen threshold and at that threshold plus each of ``deltas``.
  A fold without a scorable window has no normalised score (NAB normalises by the windows);
  it counts in the pooled score, which sums the raw scores of all test folds, each at its own
  threshold, and normalises over all their windows.
* Mean and worst are over the folds that have a normalised score.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.evaluation.nab import Layout, Series, SeriesScores, evaluate, layout, load_corpus, load_windows, run_series, sweep
from models.evaluation.score_cache import ScoreCache

#: Hyper-parameters searched in each training fold, per detector (every combination is run).
#: A detector not listed runs with its configured options only.
GRIDS: dict[str, dict[str, tuple[Any, ...]]] = {
    "ensemble": {"rarity_k": (5, 10), "view_rarity_k": ({"context": 3}, {"context": 5})},
}
DELTAS = (-0.02, 0.02)


def group_of(name: str) -> str:
    """The fold a series belongs to: the first component of ``<group>/<file>.csv``."""
    return name.split("/", 1)[0]


def grid_for(detector: str, base: Mapping[str, Any], use_grid: bool = True) -> list[dict[str, Any]]:
    """``base`` updated with each combination of the detector's declared grid (``[base]`` without one)."""
    axes = GRIDS.get(detector, {}) if use_grid else {}
    keys = list(axes)
    return [{**base, **dict(zip(keys, combo))} for combo in itertools.product(*(axes[k] for k in keys))]


def choose(candidates: Sequence[Sequence[SeriesScores]], cost: Mapping[str, float]) -> tuple[int, float]:
    """``(candidate index, threshold)`` with the highest summed raw score over the given files.

    Every candidate holds the same files (scored by one configuration each), so raw totals compare."""
    best = (-math.inf, 0, math.inf)
    for i, items in enumerate(candidates):
        thresholds, totals = sweep(items, dict(cost))
        j = int(np.argmax(totals))
        if totals[j] > best[0]:
            best = (float(totals[j]), i, float(thresholds[j]))
    return best[1], best[2]


@dataclass(frozen=True)
class FoldResult:
    """One test fold: what the training folds chose and what it scored."""

    group: str
    files: int
    windows: int
    choice: int  # index into the grid
    threshold: float
    raw: dict[float, float]  # threshold offset -> raw score of the fold
    detected: int  # windows detected at the chosen threshold
    false_positives: int  # points above it outside every window
    null: float
    perfect: float

    def score(self, delta: float = 0.0) -> float | None:
        """Normalised score at ``threshold + delta``; None without a window."""
        if self.perfect == self.null:
            return None
        return 100.0 * (self.raw[delta] - self.null) / (self.perfect - self.null)


@dataclass
class CVResult:
    """One detector and profile: the grid and every fold."""

    detector: str
    profile: str
    grid: list[dict[str, Any]]
    folds: list[FoldResult]

    def scored(self, delta: float = 0.0) -> list[float]:
        return [s for f in self.folds if (s := f.score(delta)) is not None]

    def mean(self, delta: float = 0.0) -> float:
        scores = self.scored(delta)
        return sum(scores) / len(scores) if scores else math.nan

    def worst(self, delta: float = 0.0) -> float:
        return min(self.scored(delta), default=math.nan)

    def pooled(self, delta: float = 0.0) -> float:
        null = sum(f.null for f in self.folds)
        perfect = sum(f.perfect for f in self.folds)
        raw = sum(f.raw[delta] for f in self.folds)
        return 100.0 * (raw - null) / (perfect - null) if perfect != null else math.nan


def cross_validate(
    candidates: Sequence[Mapping[str, SeriesScores]],
    profiles: Mapping[str, Mapping[str, float]],
    deltas: Sequence[float] = DELTAS,
    group: Callable[[str], str] = group_of,
) -> dict[str, list[FoldResult]]:
    """Leave-one-group-out folds per profile; ``candidates[i]`` maps series name -> scores of grid entry ``i``."""
    names = list(candidates[0])
    groups = sorted({group(n) for n in names})
    out: dict[str, list[FoldResult]] = {p: [] for p in profiles}
    for g in groups:
        train = [n for n in names if group(n) != g]
        test = [n for n in names if group(n) == g]
        for profile, cost in profiles.items():
            choice, threshold = choose([[c[n] for n in train] for c in candidates], cost)
            items = [candidates[choice][n] for n in test]
            raw = {d: evaluate(items, dict(cost), threshold + d)[0] for d in (0.0, *deltas)}
            _, detected, windows, fps = evaluate(items, dict(cost), threshold)
            out[profile].append(FoldResult(
                group=g, files=len(test), windows=windows, choice=choice, threshold=threshold, raw=raw,
                detected=detected, false_positives=fps,
                null=-cost["fnWeight"] * windows, perfect=cost["tpWeight"] * windows,
            ))
    return out


@dataclass
class CVReport:
    """Everything ``m1 eval nab --cv`` prints for one detector."""

    detector: str
    results: dict[str, CVResult]
    points: int = 0
    seconds: float = 0.0  # scoring time of the runs not found in the cache

    @property
    def us_per_point(self) -> float:
        return 1e6 * self.seconds / self.points if self.points else math.nan


def score_corpus(
    detector: str,
    grid: Sequence[dict[str, Any]],
    corpus: Sequence[Series],
    cache: ScoreCache,
    progress: bool = True,
) -> tuple[list[dict[str, np.ndarray]], int, float]:
    """Scores of every grid entry on every series (one process, cached); also points and seconds run."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out: list[dict[str, np.ndarray]] = [{} for _ in grid]
    points, seconds = 0, 0.0
    columns = (TextColumn(f"[bold]{detector}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"))
    with Progress(*columns, disable=not progress) as prog:
        task = prog.add_task("", total=len(grid) * len(corpus))
        for i, options in enumerate(grid):
            for s in corpus:
                prog.update(task, description=f"{i + 1}/{len(grid)} {s.name}")
                scores = cache.get(detector, options, s)
                if scores is None:
                    _, _, scores, secs = run_series(detector, s, options)
                    cache.put(detector, options, s, scores)
                    points, seconds = points + len(s.values), seconds + secs
                out[i][s.name] = scores
                prog.advance(task)
    return out, points, seconds


def run_cv(
    corpora: Sequence[tuple[str | os.PathLike[str], str | os.PathLike[str]]],
    detector: str,
    grid: Sequence[dict[str, Any]],
    profiles: Mapping[str, Mapping[str, float]],
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    deltas: Sequence[float] = DELTAS,
) -> CVReport:
    """Score ``detector`` with each entry of ``grid`` over the ``(data dir, labels file)`` corpora,
    then cross-validate every profile over all their groups at once.

    With several corpora each series is named ``<corpus>:<group>/<file>.csv`` (``<corpus>`` the
    name of the data dir's parent), so the groups stay apart and one threshold is chosen for all."""
    candidates: list[dict[str, SeriesScores]] = [{} for _ in grid]
    points, seconds = 0, 0.0
    cache = ScoreCache(cache_dir)
    for data_dir, labels_file in corpora:
        corpus = load_corpus(data_dir)
        if not corpus:
            raise FileNotFoundError(f"no <group>/<file>.csv under {data_dir}")
        prefix = f"{Path(data_dir).resolve().parent.name}:" if len(corpora) > 1 else ""
        windows = load_windows(labels_file)
        layouts: dict[str, Layout] = {s.name: layout(s.timestamps, windows.get(s.name, [])) for s in corpus}
        scores, n, secs = score_corpus(detector, grid, corpus, cache, progress)
        points, seconds = points + n, seconds + secs
        for entry, sc in zip(candidates, scores):
            entry.update({prefix + name: SeriesScores(prefix + name, sc[name], lay) for name, lay in layouts.items()})
    folds = cross_validate(candidates, profiles, deltas)
    results = {p: CVResult(detector, p, list(grid), f) for p, f in folds.items()}
    return CVReport(detector, results, points, seconds)
