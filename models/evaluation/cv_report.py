"""Tables of a cross-validated NAB run (``m1 eval nab --cv``)."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

from models.evaluation.nab_cv import CVReport, CVResult

SHORT = {"standard": "std", "reward_low_FP_rate": "low_FP", "reward_low_FN_rate": "low_FN"}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.1f}"


def _changed(options: dict[str, Any], grid: list[dict[str, Any]]) -> str:
    """The options that vary across the grid, as ``k=v``."""
    varying = [k for k in options if len({repr(g.get(k)) for g in grid}) > 1]
    return ", ".join(f"{k}={options[k]}" for k in varying) or "-"


def fold_table(result: CVResult, title: str) -> Table:
    """One row per fold, then mean, worst and pooled, at the chosen threshold and at +-delta."""
    deltas = sorted(d for d in result.folds[0].raw if d != 0.0) if result.folds else []
    table = Table(title=title)
    for column in ("fold", "files", "windows", "chosen", "threshold", "score", *[f"thr{d:+.2f}" for d in deltas], "detected", "FP pts"):
        table.add_column(column, justify="left" if column in ("fold", "chosen") else "right", no_wrap=column == "fold")
    for f in result.folds:
        table.add_row(f.group, str(f.files), str(f.windows), _changed(result.grid[f.choice], result.grid), f"{f.threshold:.4f}",
                      _fmt(f.score()), *[_fmt(f.score(d)) for d in deltas], f"{f.detected}/{f.windows}", str(f.false_positives))
    for label, fn in (("mean", result.mean), ("worst", result.worst), ("pooled", result.pooled)):
        table.add_row(f"[bold]{label}[/]", "", "", "", "", f"[bold]{_fmt(fn())}[/]", *[_fmt(fn(d)) for d in deltas], "", "")
    return table


def print_cv(console: Console, report: CVReport, corpus: str) -> None:
    """Every profile's fold table, then a one-line summary per profile."""
    for profile, result in report.results.items():
        console.print(fold_table(result, f"{report.detector}, {SHORT.get(profile, profile)}, leave one group out, {corpus}"))
    for profile, result in report.results.items():
        console.print(f"{report.detector} {SHORT.get(profile, profile)}: mean {_fmt(result.mean())} "
                      f"worst {_fmt(result.worst())} pooled {_fmt(result.pooled())}")
    if report.points:
        console.print(f"[dim]{report.points} points scored in {report.seconds:.1f} s ({report.us_per_point:.1f} us/point); "
                      f"the rest came from the cache[/]")
