"""``m1 eval``: offline evaluation of the anomaly detectors (NAB)."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Evaluate the anomaly detectors offline (Numenta Anomaly Benchmark).", no_args_is_help=True)

REPO = Path(__file__).resolve().parents[2]


class Profile(str, Enum):
    standard = "standard"
    reward_low_FP_rate = "reward_low_FP_rate"
    reward_low_FN_rate = "reward_low_FN_rate"
    all = "all"


def default_nab_data() -> Path:
    """$M1_NAB_DIR, else the shared corpus beside the repository."""
    env = os.environ.get("M1_NAB_DIR")
    if env:
        return Path(env)
    return (REPO / ".." / "shared" / "datasets" / "nab" / "data").resolve()


@app.callback()
def _main() -> None:
    """Offline evaluation commands."""


@app.command()
def nab(
    data: Annotated[Optional[Path], typer.Option("--data", help="NAB data dir (<category>/<file>.csv); default $M1_NAB_DIR or ../shared/datasets/nab/data")] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="combined_windows.json; default <data>/../labels/combined_windows.json")] = None,
    profile: Annotated[Profile, typer.Option("--profile", help="NAB scoring profile")] = Profile.all,
    detector: Annotated[Optional[list[str]], typer.Option("--detector", "-d", help="registry name; repeat for several (default: all)")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="write per-series scores in NAB's results layout here")] = None,
    workers: Annotated[int, typer.Option("--workers", help="worker processes")] = 2,
    cv: Annotated[bool, typer.Option("--cv", help="leave one group (<group>/<file>.csv: NAB category, ASD server) out; "
                                     "grid and thresholds chosen on the other groups")] = False,
    grid: Annotated[bool, typer.Option("--grid/--no-grid", help="with --cv: search the detector's declared grid "
                                       "(models.evaluation.nab_cv.GRIDS) or only the configured options")] = True,
    cache: Annotated[Optional[Path], typer.Option("--cache", help="with --cv: score cache dir (default $M1_HOME/nab-cache)")] = None,
    also: Annotated[Optional[list[Path]], typer.Option("--also", help="with --cv: another NAB-layout data dir (labels in "
                                                       "<dir>/../labels/combined_windows.json), cross-validated together "
                                                       "with --data under one threshold; repeatable")] = None,
) -> None:
    """Score detectors on a NAB-layout corpus: normalised score per profile, window precision/recall, us/point.

    Detectors are built with the options the worker would use (M1_HST_FEATURES, M1_ENSEMBLE_COMPONENTS,
    M1_ENSEMBLE_RARITY_K), so a configuration can be evaluated before it is deployed. With --cv the scores
    are cross-validated (one process, scores cached per series): per fold, mean, worst and pooled, and each
    fold's score at its threshold +-0.02."""
    from core.settings import Settings
    from models.evaluation.nab import load_profiles, run_benchmark
    from models.registry import DETECTORS

    console = Console(width=max(Console().width, 100))
    data_dir = data or default_nab_data()
    labels_file = labels or data_dir.parent / "labels" / "combined_windows.json"
    if not data_dir.is_dir():
        raise typer.BadParameter(f"{data_dir} is not a directory", param_hint="--data")
    if not labels_file.is_file():
        raise typer.BadParameter(f"{labels_file} not found", param_hint="--labels")
    names = detector or list(DETECTORS)
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        raise typer.BadParameter(f"unknown {unknown}; known: {', '.join(sorted(DETECTORS))}", param_hint="--detector")
    profiles = load_profiles(labels_file.parent.parent / "config" / "profiles.json")
    if profile is not Profile.all:
        profiles = {profile.value: profiles[profile.value]}

    settings = Settings()  # detector options (M1_HST_FEATURES, M1_ENSEMBLE_*) as the worker reads them
    options = {name: settings.detector_options(name) for name in names}
    if cv:
        if out is not None:
            raise typer.BadParameter("--out writes a plain run's scores; run without --cv", param_hint="--out")
        from models.evaluation.cv_report import print_cv
        from models.evaluation.nab_cv import grid_for, run_cv

        corpora = [(data_dir, labels_file), *[(d, d.parent / "labels" / "combined_windows.json") for d in also or []]]
        for d, lab in corpora:
            if not d.is_dir() or not lab.is_file():
                raise typer.BadParameter(f"{d} or {lab} not found", param_hint="--also")
        for name in detector or [settings.detector]:
            report = run_cv(corpora, name, grid_for(name, options[name], grid), profiles,
                            cache_dir=cache or settings.home / "nab-cache")
            print_cv(console, report, " + ".join(str(d) for d, _ in corpora))
        return
    runs = run_benchmark(data_dir, labels_file, names, profiles, out_dir=out, workers=workers, options=options)

    short = {"standard": "std", "reward_low_FP_rate": "low_FP", "reward_low_FN_rate": "low_FN"}
    table = Table(title=f"NAB normalised scores on {data_dir}", caption="precision/recall/windows/FP at the best threshold of the first profile")
    table.add_column("detector", style="bold", no_wrap=True)
    for p in profiles:
        table.add_column(short.get(p, p), justify="right")
    first = next(iter(profiles))
    table.add_column("prec", justify="right")
    table.add_column("recall", justify="right")
    table.add_column("windows", justify="right")
    table.add_column("FP pts", justify="right")
    table.add_column("us/point", justify="right")
    for run in runs:
        r0 = run.results[first]
        table.add_row(
            run.detector,
            *[f"{run.results[p].normalized:.1f}" for p in profiles],
            f"{r0.precision:.2f}",
            f"{r0.recall:.2f}",
            f"{r0.detected_windows}/{r0.windows}",
            str(r0.false_positives),
            f"{run.us_per_point:.1f}",
        )
    console.print(table)
    for run in runs:
        thr = ", ".join(f"{p}={run.results[p].threshold:.4f}" for p in profiles)
        console.print(f"[dim]{run.detector} thresholds: {thr}[/]")
    if out is not None:
        console.print(f"per-series results written under {out}")
