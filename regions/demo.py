"""``m1 regions demo --fail eu-west``: a failover and a recovery, end to end, in about a minute.

Starts (or reuses) the local multi-region set under ``<home>/regions`` with MirrorMaker 2, one
agent per region (child processes), waits until every region routes each geography to itself,
then SIGKILLs the failed region's broker, waits for every survivor's ``failover`` event and
re-routing, restarts the broker and waits for the ``recovery`` events and routes back. Every step
is read back from the real topics (:mod:`regions.watch`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass, field

from rich.console import Console

from core.settings import Settings
from regions.cluster import RegionSet
from regions.processes import start_agents, stop_agents
from regions.watch import wait_for_event, wait_for_route


@dataclass
class DemoResult:
    """Seconds from the kill to each survivor's failover event, and from the restarted broker's
    readiness to its recovery event; the broker's restart time; the whole demo's time."""

    failover_s: dict[str, float] = field(default_factory=dict)
    recovery_s: dict[str, float] = field(default_factory=dict)
    restart_s: float = 0.0
    total_s: float = 0.0
    routes_during: dict[str, list[str]] = field(default_factory=dict)
    routes_after: dict[str, list[str]] = field(default_factory=dict)


def _settings_of(region_set: RegionSet, region: str) -> Settings:
    return region_set.settings.model_copy(update={"kafka_bootstrap": region_set.kafka(region).bootstrap(), "region": region})


def run_demo(settings: Settings, names: list[str], failed: str, console: Console, keep: bool = False,
             timeout: float = 90.0) -> DemoResult:
    """Run the demo (see the module docstring); raises ``RuntimeError`` if a step does not happen
    within ``timeout`` seconds."""
    if failed not in names:
        raise ValueError(f"--fail {failed!r} is not one of the regions {names}")
    region_set = RegionSet(settings.model_copy(update={"regions": names}), names)
    survivors = [name for name in names if name != failed]
    result = DemoResult()
    started = time.monotonic()

    def need(value, what: str):  # noqa: ANN001, ANN202 - a step's outcome or a clear error
        if value is None:
            raise RuntimeError(f"{what} did not happen within {timeout:.0f}s (logs: {region_set.dir / 'logs'})")
        return value

    with console.status(f"starting {len(names)} clusters and MirrorMaker 2..."):
        region_set.start()
    agents = start_agents(region_set.settings, names, region_set.dir / "logs")
    try:
        with console.status("agents warming up: waiting until every region routes each geography to itself..."):
            for region in names:
                for geo in names:
                    need(asyncio.run(wait_for_route(_settings_of(region_set, region), geo,
                                                    lambda regions, geo=geo: regions[:1] == [geo], timeout)),
                         f"{region} routing {geo} to itself")
        console.print(f"[green]all {len(names)} regions healthy[/]; routing: each geography to its own region first")

        state = need(region_set.kafka(failed).status(), f"{failed}'s broker running")
        killed_at = time.time()
        os.kill(state.pid, signal.SIGKILL)
        console.print(f"[red]SIGKILL[/] {failed}'s broker (pid {state.pid})")
        with console.status(f"waiting for the survivors' failover of {failed}..."):
            for region in survivors:
                event = need(asyncio.run(wait_for_event(_settings_of(region_set, region), failed, "failover",
                                                        killed_at, timeout)), f"{region}'s failover of {failed}")
                result.failover_s[region] = event.ts - killed_at
                route = need(asyncio.run(wait_for_route(_settings_of(region_set, region), failed,
                                                        lambda regions: failed not in regions, timeout)),
                             f"{region}'s re-routing of {failed}")
                result.routes_during[region] = route.regions
                console.print(f"  {region}: [bold]failover[/] of {failed} after {result.failover_s[region]:.1f}s "
                              f"({event.reason}); clients of {failed} -> {route.regions}")

        restarted_at = time.time()
        with console.status(f"restarting {failed}'s broker..."):
            region_set.kafka(failed).start()
        result.restart_s = time.time() - restarted_at
        console.print(f"{failed}'s broker restarted and ready after {result.restart_s:.1f}s")
        restarted_at = time.time()
        with console.status(f"waiting for the survivors' recovery of {failed}..."):
            for region in survivors:
                event = need(asyncio.run(wait_for_event(_settings_of(region_set, region), failed, "recovery",
                                                        restarted_at, timeout)), f"{region}'s recovery of {failed}")
                result.recovery_s[region] = event.ts - restarted_at
                route = need(asyncio.run(wait_for_route(_settings_of(region_set, region), failed,
                                                        lambda regions: regions[:1] == [failed], timeout)),
                             f"{region}'s routing back to {failed}")
                result.routes_after[region] = route.regions
                console.print(f"  {region}: [bold]recovery[/] of {failed} {result.recovery_s[region]:.1f}s after its "
                              f"broker was ready; clients of {failed} -> {route.regions}")
    finally:
        stop_agents(agents)
        if not keep:
            region_set.stop()
    result.total_s = time.monotonic() - started
    return result
