"""``bottlenecks`` command: which operations own a service's end-to-end latency, and what to do."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import typer
from rich.console import Console
from rich.table import Table

from m1.query_client import QueryError, api_call, worker_is_up
from core.settings import get_settings
from sinks.clickhouse import connect
from traces.analysis import Report, analyze
from traces.bottlenecks import Bottleneck
from traces.rules import Suggestion, Thresholds
from traces.store import load_spans

app = typer.Typer(no_args_is_help=True)


@app.callback()
def traces() -> None:
    """Distributed-tracing analysis over ClickHouse otel_traces."""


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds in a duration like ``90s``, ``15m``, ``2h``, ``1d`` (a bare number is seconds)."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not match:
        raise typer.BadParameter(f"{text!r} is not a duration like 15m, 90s, 2h or 1d")
    return int(match[1]) * _UNITS[match[2] or "s"]


def find_bottlenecks(client: Any, service: str, since_seconds: int, limit: int = 10,
                     thresholds: Thresholds = Thresholds(), tenant: str | None = None) -> Report:
    """Analyse the traces that touched ``service`` in the last ``since_seconds`` (see ``traces.analysis``),
    only ``tenant``'s spans when one is given."""
    return analyze(load_spans(client, service, since_seconds, tenant=tenant), limit, thresholds)


def render(report: Report, console: Console) -> None:
    """The report as a rich table of bottlenecks followed by the suggestions."""
    mean_ms = report.total_ns / report.traces / 1e6 if report.traces else 0.0
    table = Table(title=f"{report.traces} traces, mean end-to-end {mean_ms:.1f} ms")
    for column in ("service", "operation", "share", "critical ms / trace", "on path in"):
        table.add_column(column, justify="right" if column not in ("service", "operation") else "left")
    for b in report.bottlenecks:
        table.add_row(b.service, b.operation, f"{b.share:.1%}",
                      f"{b.critical_ns / report.traces / 1e6:.2f}", f"{b.traces} traces")
    console.print(table)
    for s in report.suggestions:
        console.print(f"[bold]{s.rule}[/bold]: {s.message}")


@app.command()
def bottlenecks(
    service: str = typer.Option(..., "--service", "-s", help="Analyse traces in which this service took part."),
    tenant: str = typer.Option(None, "--tenant", "-t",
                               help="Only this tenant's traces (required while a worker runs; its API needs an "
                                    "operator key of the tenant in M1_API_KEY)."),
    since: str = typer.Option("15m", "--since", help="Window, e.g. 15m, 1h."),
    limit: int = typer.Option(10, "--limit", "-n", help="Operations to show."),
) -> None:
    """Operations that own the end-to-end latency of SERVICE's traces, with optimisation suggestions.

    While a worker runs, its API analyses one tenant's traces (--tenant, M1_API_KEY).
    With no worker the store is opened directly: every tenant's traces unless --tenant."""
    settings = get_settings()
    console = Console()
    try:
        client = connect(settings)
    except Exception:  # chdb: a running worker holds the embedded store; ask its API instead
        if settings.clickhouse_url or not worker_is_up(settings):
            raise
        if tenant is None:
            console.print("[red]--tenant is required while a worker runs[/] (its API analyses one tenant's traces)")
            raise typer.Exit(2) from None
        try:
            report = bottlenecks_from_worker(settings, tenant, service, parse_duration(since), limit)
        except QueryError as exc:
            console.print(f"[red]bottleneck analysis refused:[/] {exc}")
            raise typer.Exit(2) from None
    else:
        report = find_bottlenecks(client, service, parse_duration(since), limit, tenant=tenant)
    render(report, console)


def bottlenecks_from_worker(settings: Any, tenant: str, service: str, since_seconds: int, limit: int = 10) -> Report:
    """The same analysis of ``tenant``'s traces, run by the worker (``POST /v1/tenants/<tenant>/bottlenecks``
    with ``M1_API_KEY``); the worker also stores and publishes it. Refusals raise ``QueryError``."""
    body = {"services": [service], "window_seconds": since_seconds, "limit": limit}
    reports = api_call(settings, "POST", f"/v1/tenants/{quote(tenant, safe='')}/bottlenecks", body, timeout=120)["reports"]
    if not reports:
        return Report(0, 0, [], [])
    r = reports[0]
    fields = ("service", "operation", "critical_ns", "share", "traces")
    return Report(r["traces"], r["total_ns"], [Bottleneck(**{k: b[k] for k in fields}) for b in r["bottlenecks"]],
                  [Suggestion(**s) for s in r["suggestions"]])
