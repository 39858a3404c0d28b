"""How close to the scaling bar could *any* planner get that sees the last few window peaks?

``m1 eval scaling-tolerance`` scores real planners. This script bounds them from above: for every
decision window it takes the *state* -- the oracle replica counts of the last ``k`` windows
(what a planner of the last ``k`` peaks can know) -- and, with hindsight, gives every window
of a state the one recommendation that is within tolerance of the most of that state's
oracles. No causal planner that decides from those ``k`` peaks can do better; the more states
(larger ``k``) the more this table memorises the data, so small ``k`` are the honest bounds.
Same series, warm-up, capacity and policy as ``m1 eval scaling-tolerance``. The table is in
docs/benchmarks-forecast.md.

Run:  .venv/bin/python scripts/scaling_ceiling.py [--data DIR] [--memory 1 --memory 2 ...]
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from models.evaluation.series import LOAD_SERIES, default_scaling_data, default_warmup, read_series
from models.evaluation.scaling import hindsight_ceiling


def main(
    data: Path = typer.Option(None, help="Directory of NAB CSVs; default $M1_NAB_DIR/realAWSCloudwatch."),
    memory: list[int] = typer.Option([1, 2, 3], help="How many recent window peaks the planner may see (repeatable)."),
) -> None:
    """Print, per series and overall, the hindsight ceiling for each memory."""
    data = data or default_scaling_data()
    files = sorted(p for p in data.glob("*.csv") if LOAD_SERIES.search(p.stem))
    table = Table(title="Scaling: hindsight ceiling of planners that see the last k window peaks (share within 20 %)")
    table.add_column("series", no_wrap=True)
    for k in memory:
        table.add_column(f"k={k}\n(states)", justify="right")
    totals = {k: [0, 0] for k in memory}
    for path in files:
        values = read_series(path)[1]
        cells = []
        for k in memory:
            good, n, states = hindsight_ceiling(values, default_warmup(len(values)), k)
            totals[k][0] += good
            totals[k][1] += n
            cells.append(f"{good / n:.3f} ({states})")
        table.add_row(path.stem, *cells)
    table.add_row("all", *(f"{good / n:.3f}" for good, n in totals.values()))
    Console().print(table)


if __name__ == "__main__":
    typer.run(main)
