"""``m1 regions``: bring up, inspect and stop a multi-region set of local clusters, and run a
region's agent.

``m1 regions start --regions eu-west,us-east,ap-south`` starts one KRaft cluster per region and
MirrorMaker 2 between them (:mod:`regions.cluster`); ``status`` shows each broker, MirrorMaker,
its watchdog's restarts and the replication lag the agents last measured; ``stop`` stops them all;
``watchdog`` restarts MirrorMaker when a flow is stuck (:mod:`regions.watchdog`).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from core.settings import get_settings

app = typer.Typer(help="Multi-region: local clusters with MirrorMaker 2, heartbeats, lag, health and routing.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
console = Console()


def _names(regions: str) -> list[str] | None:
    return [name.strip() for name in regions.split(",") if name.strip()] or None


def _ms(value: float | None) -> str:
    """A lag in ms, or ``-`` when none was measured in the window."""
    return "-" if value is None else f"{value:.1f}"


@app.command("start")
def start(regions: str = typer.Option("", help="Comma list of region names (default: the set last started "
                                               "here, else eu-west,us-east,ap-south)."),
          timeout: float = typer.Option(120.0, help="Seconds to wait for each broker and for MirrorMaker.")) -> None:
    """Start one local Kafka cluster per region and MirrorMaker 2 between all of them."""
    from regions.cluster import RegionSet

    region_set = RegionSet(get_settings(), _names(regions))
    with console.status(f"starting {len(region_set.names)} clusters (the first start downloads the jars)..."):
        brokers = region_set.start_brokers(timeout)
    for name, state in brokers.items():
        console.print(f"region [bold]{name}[/]: Kafka at {state.bootstrap} (pid {state.pid})")
    with console.status("starting MirrorMaker 2 (full mesh) and waiting for its first heartbeats..."):
        mirror = region_set.mirror.start({name: state.bootstrap for name, state in brokers.items()}, timeout=timeout)
    console.print(f"MirrorMaker 2 is up (pid {mirror.pid}); mirrored topics are named '<region>.<topic>'")
    console.print(f"workers: M1_REGION=<name> M1_REGIONS={','.join(region_set.names)} "
                  f"M1_KAFKA_BOOTSTRAP=<its region's address>")


@app.command("stop")
def stop() -> None:
    """Stop MirrorMaker 2 and every region's broker."""
    from regions.cluster import RegionSet

    stopped = RegionSet(get_settings()).stop()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command("status")
def status(window: float = typer.Option(3.0, help="Seconds to read the agents' latest lag records.")) -> None:
    """Show each region's broker, MirrorMaker 2 and the replication lag last measured; exits 1
    when any part is down."""
    import asyncio

    from regions.cluster import RegionSet
    from regions.lag import latest_lag
    from regions.watchdog import WatchdogStatus

    region_set = RegionSet(get_settings())
    table = Table("part", "state", "address / pid")
    down = False
    for region in region_set.status():
        down |= region.broker is None
        table.add_row(f"region {region.name}", "up" if region.broker else "[red]down[/]",
                      f"{region.broker.bootstrap} (pid {region.broker.pid})" if region.broker else "")
    mirror = region_set.mirror.status()
    down |= mirror is None
    table.add_row("MirrorMaker 2", "up" if mirror else "[red]down[/]", f"pid {mirror.pid}" if mirror else "")
    dog = WatchdogStatus.read(region_set.watchdog_file)
    if dog is not None:
        down |= dog.gave_up
        state = "[red]gave up[/]" if dog.gave_up else ("stuck: " + ", ".join(dog.stuck) if dog.stuck else "flows advancing")
        table.add_row("MirrorMaker watchdog", state, f"{dog.restarts} restart(s)")
    console.print(table)
    live = {r.name: r.broker.bootstrap for r in region_set.status() if r.broker}
    lags = asyncio.run(latest_lag(get_settings(), live, window))
    if lags:
        lag_table = Table("source", "target", "lag p50 ms", "lag p99 ms", "skew ms", "offset lag", "heartbeats lost")
        for row in lags:
            lag_table.add_row(row.source, row.target, _ms(row.lag_p50_ms), _ms(row.lag_p99_ms),
                              f"{row.skew_ms:+.1f}", str(row.offset_lag), str(row.missing))
        console.print(lag_table)
    else:
        console.print("no lag measured yet (run `m1 regions agent --region <name>` or workers with M1_REGION)")
    if down:
        raise typer.Exit(1)


@app.command("watchdog")
def watchdog(stall: float = typer.Option(30.0, help="Seconds a flow may deliver nothing while its source "
                                                    "produces before MirrorMaker 2 is restarted."),
             max_restarts: int = typer.Option(5, help="Restarts within an hour before giving up."),
             mirror_dir: Path | None = typer.Option(None, help="The directory of the MirrorMaker to watch "
                                                              "(default: the local set's, <home>/regions/mirror).")) -> None:
    """Watch every flow of a MirrorMaker 2 started by m1 and restart it when one is stuck (bounded,
    with backoff; counted in `m1 regions status`), until interrupted. Run it where MirrorMaker runs."""
    import asyncio
    import logging

    from core.kafka.local_broker import KafkaError
    from regions.cluster import RegionSet
    from regions.mirror import MirrorMaker
    from regions.watchdog import MirrorWatchdog, RestartBudget

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = get_settings()
    try:
        mirror = MirrorMaker.recorded(settings, mirror_dir or RegionSet(settings).mirror.dir)
    except KafkaError as exc:
        console.print(f"[red]{exc}[/] (m1 regions start starts one)")
        raise typer.Exit(2) from None
    clusters = mirror.recorded_clusters()
    dog = MirrorWatchdog(settings, clusters, [mirror], mirror.dir / "watchdog.json", stall_s=stall,
                         budget=RestartBudget(max_restarts=max_restarts))
    console.print(f"watching {len(dog.clocks)} flows between {', '.join(clusters)} (stall: {stall:.0f}s)")
    try:
        asyncio.run(dog.run())
    except KeyboardInterrupt:
        pass


def agent_settings(region: str):  # noqa: ANN201 - Settings
    """The settings of ``region``'s agent: its cluster is ``M1_KAFKA_BOOTSTRAP`` if set, else the
    local set's broker of that region."""
    from regions.agent import region_bootstraps

    settings = get_settings()
    bootstraps = region_bootstraps(settings)
    bootstrap = settings.kafka_bootstrap or bootstraps.get(region, "")
    if not bootstrap:
        raise typer.BadParameter(f"no cluster known for region {region!r}: set M1_KAFKA_BOOTSTRAP or start "
                                 "the local set (m1 regions start)", param_hint="--region")
    return settings.model_copy(update={"region": region, "kafka_bootstrap": bootstrap,
                                       "regions": sorted({region, *settings.regions, *bootstraps})})


@app.command("agent")
def agent(region: str = typer.Option(..., "--region", help="The region this agent speaks for."),
          loglevel: str = typer.Option("warn", help="crit, error, warn, info or debug.")) -> None:
    """Run a region's agent alone (no store): heartbeats, lag, health, verdict and routing, all on
    topics of the region's own cluster, until interrupted."""
    from mode import Worker

    from regions.agent import RegionAgent

    settings = agent_settings(region)
    console.print(f"region agent of [bold]{region}[/] on {settings.kafka_bootstrap} "
                  f"(regions: {', '.join(settings.regions)})")
    Worker(RegionAgent(settings), loglevel=loglevel, quiet=True).execute_from_commandline()


@app.command("simulate")
def simulate(regions: int = typer.Option(5, help="Regions (2..10), at real cloud locations."),
             geos: int = typer.Option(50, help="Client geographies (seeded random places)."),
             hours: float = typer.Option(6.0, help="Simulated hours."),
             seed: int = typer.Option(1, help="Seed: the same seed gives the same report."),
             as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Simulate regions and client geographies under random crashes, partitions, loss and latency
    changes, driving the real health, verdict and routing code; report routing accuracy,
    failover detection times and false failovers (regions/simulation.py)."""
    import json

    from rich.progress import Progress

    from regions.simulation import SimConfig
    from regions.simulation import simulate as run

    config = SimConfig(regions=regions, geos=geos, hours=hours, seed=seed)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"simulating {hours:g} h", total=hours * 3600)
        report = run(config, progress=lambda done: progress.update(task, completed=done))
    if as_json:
        console.print_json(json.dumps(report.summary()))
        return
    det = report.detection_quantiles()
    table = Table("measure", "value")
    table.add_row("requests routed", f"{report.requests:,}")
    table.add_row("routing accuracy", f"{report.accuracy:.4%}  (misses: "
                  + ", ".join(f"{k} {v}" for k, v in report.misses.items()) + ")")
    table.add_row("incidents (crash / isolation)", f"{report.incidents} ({report.undetected} undetected)")
    table.add_row("detection time s p50 / p90 / p99 / max",
                  " / ".join(f"{det[k]:.2f}" for k in ("p50", "p90", "p99", "max")) if det else "-")
    table.add_row("failover events", str(report.failovers))
    table.add_row("false failovers", f"{report.false_failovers} = {report.false_failover_rate:.5%} of "
                  f"{report.decisions:,} decisions")
    console.print(table)


def route(geo: str = typer.Option("", "--geo", help="The client's geography; empty: every geography."),
          as_json: bool = typer.Option(False, "--json", help="Print the API's answer as JSON.")) -> None:
    """The regions a client in a geography should use now, in order, from the running worker's
    region agent (GET /v1/route with M1_API_KEY; a key with regions:read). Exits 2 on failure."""
    import json
    import urllib.parse

    from m1.query_client import QueryError, api_call

    path = "/v1/route" + (f"?geo={urllib.parse.quote(geo, safe='')}" if geo else "")
    try:
        answer = api_call(get_settings(), "GET", path)
    except QueryError as exc:
        console.print(f"[red]route failed:[/] {exc}")
        raise typer.Exit(2) from None
    if as_json:
        console.print_json(json.dumps(answer))
        return
    routes = {answer["geo"]: answer["regions"]} if geo else answer["routes"]
    table = Table("geography", "regions, in order")
    for name, regions in routes.items():
        table.add_row(name, ", ".join(regions) or "[red]none up[/]")
    console.print(table)
    console.print(f"version {answer['version']}, decided by {answer['decided_by']}")


@app.command("demo")
def demo(fail: str = typer.Option("eu-west", "--fail", help="The region whose broker is killed, then restarted."),
         regions: str = typer.Option("eu-west,us-east,ap-south", help="Comma list of the regions (3 or more "
                                                                       "to have a witness)."),
         keep: bool = typer.Option(False, help="Leave the clusters running afterwards (m1 regions stop).")) -> None:
    """A failover and a recovery end to end (about a minute): local clusters with MirrorMaker 2,
    one agent per region, a region's broker SIGKILLed and restarted."""
    from regions.demo import run_demo

    names = _names(regions) or []
    try:
        result = run_demo(get_settings(), names, fail, console, keep=keep)
    except (RuntimeError, ValueError) as exc:
        console.print(f"[red]demo failed:[/] {exc}")
        raise typer.Exit(1) from None
    worst = max(result.failover_s.values())
    console.print(f"[green]done[/] in {result.total_s:.0f}s: failover detected in {worst:.1f}s at worst (bar: 30 s, "
                  f"goal: 10 s); recovery {max(result.recovery_s.values()):.1f}s after the broker was ready again")
