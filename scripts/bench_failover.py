"""Benchmark failover detection: how long after a region's broker is killed (SIGKILL), or its link is
cut (a partition: the broker keeps running), the other regions publish the ``failover`` event.

Three regions (``--regions``), each a real KRaft broker in a network namespace of its own, with
MirrorMaker 2 and one ``m1 regions agent`` per region (tests/regions/mesh.py; needs root and
``ip``/``iptables``). Each trial starts from every agent seeing every region healthy, then
fails ``--victim`` at t0 (wall clock) and reads each surviving region's own ``region_events`` topic:
a trial's detection time is the ``ts`` (decided at) of the last survivor's failover event minus t0,
i.e. when every survivor has failed the victim over; the first survivor's is shown too. Then the
broker is restarted (kill) or the link healed (partition), and the time to the last survivor's
``recovery`` event is recorded. Results go to docs/benchmarks.md by hand ("Failover detection").

Run (as root):  .venv/bin/python scripts/bench_failover.py --trials 10
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the partition lab lives with the tests
from regions.health import HealthPolicy  # noqa: E402
from tests.regions.mesh import NAMES, Mesh, Tail, events, mesh  # noqa: E402

console = Console()


async def _last_event(tails: list[Tail], kind: str, region: str, since: float, timeout: float) -> tuple[float, float]:
    """(first, last) ``ts`` of the survivors' ``kind`` events about ``region`` since ``since``."""
    found = [await tail.until(lambda e: e.kind == kind and e.region == region and e.ts >= since, timeout)
             for tail in tails]
    if any(event is None for event in found):
        raise TimeoutError(f"no {kind} of {region} from every survivor within {timeout:.0f}s")
    stamps = [event.ts for event in found]
    return min(stamps), max(stamps)


async def _trials(running: Mesh, victim: str, kinds: list[str], trials: int, cut: str) -> dict[str, list[float]]:
    survivors = [name for name in running.brokers if name != victim]
    results: dict[str, list[float]] = {}
    async with contextlib.AsyncExitStack() as stack:
        tails = [await stack.enter_async_context(events(running.bootstraps[name])) for name in survivors]
        with Progress(console=console) as progress:
            for kind in kinds:
                task = progress.add_task(f"{kind} trials", total=trials)
                for _ in range(trials):
                    await _healthy(running, results)
                    if kind == "kill":
                        t0 = running.kill_broker(victim)
                    else:
                        t0 = time.time()
                        running.brokers[victim].link.cut(cut)
                    first, last = await _last_event(tails, "failover", victim, t0, 60)
                    results.setdefault(f"{kind}: first survivor", []).append(first - t0)
                    results.setdefault(f"{kind}: every survivor", []).append(last - t0)
                    back_at = time.time()
                    if kind == "kill":
                        await asyncio.to_thread(running.restart_broker, victim)
                    else:
                        running.brokers[victim].link.heal()
                    _, recovered = await _last_event(tails, "recovery", victim, back_at, 120)
                    results.setdefault(f"{kind}: recovery after {'restart' if kind == 'kill' else 'heal'}",
                                       []).append(recovered - back_at)
                    progress.console.print(f"{kind}: failover first {first - t0:.2f} s, every survivor "
                                           f"{last - t0:.2f} s; recovery {recovered - back_at:.2f} s")
                    progress.advance(task)
    return results


async def _healthy(running: Mesh, results: dict[str, list[float]]) -> None:
    """Wait until every agent sees every region healthy. If that takes over 3 minutes (seen once in
    about ten broker restarts on the loaded machine: a MirrorMaker flow into the restarted cluster
    stayed stuck), restart MirrorMaker as its supervisor would, and count it."""
    try:
        await running.ready(timeout=180)
    except TimeoutError as exc:
        console.print(f"[yellow]{exc}: restarting MirrorMaker[/]")
        results.setdefault("mesh stalls (MirrorMaker restarted)", []).append(1.0)
        await asyncio.to_thread(running.restart_mirror)
        await running.ready(timeout=300)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(trials: int = typer.Option(10, min=1, help="Trials of each kind."),
         kind: str = typer.Option("both", help="kill, partition or both."),
         victim: str = typer.Option("us-east", help="The region failed in every trial."),
         regions: str = typer.Option(",".join(NAMES), help="Comma list of regions (3 or more for a quorum)."),
         cut: str = typer.Option("drop", help="How a partition cuts the link: drop (iptables) or down (link down)."),
         home: Path | None = typer.Option(None, help="Directory for the clusters (default: a new temporary one).")) -> None:
    """Measure failover detection for a broker kill and for a partition, each over ``--trials``."""
    names = [name.strip() for name in regions.split(",") if name.strip()]
    if victim not in names:
        raise typer.BadParameter(f"{victim!r} is not one of {names}", param_hint="--victim")
    kinds = ["kill", "partition"] if kind == "both" else [kind]
    home = home or Path(tempfile.mkdtemp(prefix="bench-failover-"))
    began = time.monotonic()
    console.print(f"starting {len(names)} brokers in namespaces, MirrorMaker 2 and the agents in {home} ...")
    with mesh(home, names) as running:
        console.print(f"started in {time.monotonic() - began:.0f} s")
        results = asyncio.run(_trials(running, victim, kinds, trials, cut))
    table = Table("measure (s)", "trials", "p50", "p90", "max", "min")
    stalls = results.pop("mesh stalls (MirrorMaker restarted)", [])
    for name, values in results.items():
        table.add_row(name, str(len(values)), f"{statistics.median(values):.2f}", f"{_percentile(values, 0.9):.2f}",
                      f"{max(values):.2f}", f"{min(values):.2f}")
    console.print(table)
    console.print(f"mesh stalls (no return to all-healthy within 180 s; MirrorMaker restarted): {len(stalls)}")
    console.print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                  f"load {os.getloadavg()[0]:.1f}; heartbeat 1 s, down after {HealthPolicy.for_set(len(names)).down_missed} "
                  "missed (the defaults)")


if __name__ == "__main__":
    typer.run(main)
