"""Does the ensemble's rarity gate help on parts of the NAB corpus it was not tuned on?

Scores the default ensemble with and without the gate (``M1_ENSEMBLE_RARITY_K`` 5 / 0) on
four halves of a NAB-layout corpus, each scored on its own (threshold searched per half, as NAB
does): realAWSCloudwatch vs the other categories, and the files sorted by ``<category>/<file>``
at even vs odd positions. Each half is a directory of symlinks, so ``m1 eval nab`` runs on it
unchanged. The table is in docs/benchmarks-nab.md (round 3).

Run:  .venv/bin/python scripts/nab_halves.py [--data DIR] [--labels FILE]
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from core.settings import Settings
from models.evaluation.cli import default_nab_data
from models.evaluation.nab import load_profiles, run_benchmark

console = Console()


def halves(data: Path) -> dict[str, list[str]]:
    """The four halves, as lists of ``<category>/<file>.csv``."""
    files = sorted(p.relative_to(data).as_posix() for p in data.glob("*/*.csv"))
    return {
        "realAWSCloudwatch": [f for f in files if f.startswith("realAWSCloudwatch/")],
        "other categories": [f for f in files if not f.startswith("realAWSCloudwatch/")],
        "even positions": files[0::2],
        "odd positions": files[1::2],
    }


def main(
    data: Path = typer.Option(None, help="NAB data dir; default $M1_NAB_DIR or ../shared/datasets/nab/data"),
    labels: Path = typer.Option(None, help="combined_windows.json; default <data>/../labels/combined_windows.json"),
) -> None:
    """Standard-profile NAB score of the ensemble with and without the rarity gate, per half."""
    data = (data or default_nab_data()).resolve()
    labels = labels or data.parent / "labels" / "combined_windows.json"
    profiles = {"standard": load_profiles(data.parent / "config" / "profiles.json")["standard"]}
    table = Table(title="ensemble, NAB standard score per half of the corpus")
    for column in ("half", "series", "no gate (k=0)", "gate (k=5)"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for name, files in halves(data).items():
            root = Path(tmp) / name.replace(" ", "_")
            for f in files:
                (root / f).parent.mkdir(parents=True, exist_ok=True)
                os.symlink(data / f, root / f)
            scores = []
            for k in (0, 5):
                options = {"ensemble": Settings(ensemble_rarity_k=k).detector_options("ensemble")}
                run = run_benchmark(root, labels, ["ensemble"], profiles, options=options, progress=False)[0]
                scores.append(f"{run.results['standard'].normalized:.1f}")
            table.add_row(name, str(len(files)), *scores)
            console.print(f"{name}: done")
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
