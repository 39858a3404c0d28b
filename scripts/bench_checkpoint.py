"""Time a model checkpoint of the metrics and forecasting pipelines, in process (no broker).

The pipelines are built as ``scripts/bench_metrics.py --cpu-split`` builds them (embedded store,
the defaults) and fed the demo workload, ``--warm`` batches first. Then, ``--reps`` times, one
more batch (every series of a batch dirty) and a checkpoint, alternating the two ways of taking it:
``save`` (cut and write at once, what ``SavedModels.checkpoint`` does between batches today) and
``cut`` then ``write`` (``StateLocation.snapshot``: only the cut has to happen between batches).
Milliseconds of wall clock and of this thread's CPU, median and every run; the machine's load is
printed with them (on a loaded machine the wall clock includes waiting for a core).

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_checkpoint.py --series 10000
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import typer

from bench_metrics import workload_records  # scripts/
from core.gc_tuning import tune_for_batches
from core.settings import Settings
from sinks.clickhouse import Store, connect
from streams.forecast_pipeline import ForecastPipeline
from streams.metrics_pipeline import MetricsPipeline, Record, SavedModels, decode_batch


def main(
    series: int = typer.Option(1_000, help="Distinct series."),
    batch: int = typer.Option(20_000, help="Records a batch (M1_BATCH_SIZE)."),
    warm: int = typer.Option(5, help="Batches before the first checkpoint measured."),
    reps: int = typer.Option(4, help="Checkpoints measured each way."),
) -> None:
    """Median wall time of a checkpoint's save, and of its cut and write, per pipeline."""
    tune_for_batches()  # the worker's collector settings
    settings = Settings(home=Path(tempfile.mkdtemp(prefix="m1-bench-checkpoint-")), snapshot_seconds=1e9)
    store = Store(connect(settings))
    store.migrate()
    metrics, forecasts = MetricsPipeline(settings, store), ForecastPipeline(settings, store)
    records = workload_records(batch * (warm + 2 * reps), series, time.time())
    batches = [[Record("bench", 0, i + j, k, v) for j, (k, v) in enumerate(records[i : i + batch])]
               for i in range(0, len(records), batch)]
    pipelines: dict[str, SavedModels] = {"metrics": metrics, "forecasting": forecasts}
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}  # (wall, CPU) seconds
    saved: dict[str, int] = {}
    for number, records_batch in enumerate(batches):
        now = time.time()
        outcome = decode_batch(metrics.decoder, records_batch, now, settings.max_future_seconds, metrics.tenant_of,
                               redact=metrics.series_of)
        metrics.score_and_store(outcome.points, now, outcome.dead_letters, outcome.sources)
        forecasts.process_points(outcome.points)
        for name, pipeline in pipelines.items():
            if number < warm - 1:
                continue
            start = clock()
            if number < warm or number % 2:
                saved[name] = pipeline.state.save(pipeline.bank)
                took = {"save": since(start)}
            else:
                write = pipeline.state.snapshot(pipeline.bank)
                took = {"cut": since(start)}
                start = clock()
                saved[name] = write()
                took["write"] = since(start)
            if number >= warm:
                for what, seconds in took.items():
                    times.setdefault((name, what), []).append(seconds)
    store.close()
    print(f"{series:,} series, batches of {batch:,}; series saved a checkpoint: "
          + ", ".join(f"{name} {count:,}" for name, count in saved.items())
          + f"; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for (name, what), values in sorted(times.items()):
        for index, kind in enumerate(("wall", "CPU")):
            runs = [1000 * value[index] for value in values]
            print(f"{name:12s} {what:6s} {kind:4s} median {statistics.median(runs):7.1f} ms   "
                  f"runs {' '.join(f'{run:.0f}' for run in runs)}")


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.thread_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    """(wall, CPU) seconds since ``start`` (a :func:`clock`)."""
    wall, cpu = clock()
    return wall - start[0], cpu - start[1]


if __name__ == "__main__":
    typer.run(main)
