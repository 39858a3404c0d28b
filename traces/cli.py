"""``bottlenecks`` command: which operations own a service's end-to-end latency, and what to do."""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from m1.query_client import worker_is_up, worker_url
from m1.settings import get_settings
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
                     thresholds: Thresholds = Thresholds()) -> Report:
    """Analyse the traces that touched ``service`` in the last ``since_seconds`` (see ``traces.analysis``)."""
    return analyze(load_spans(client, service, since_seconds), limit, thresholds)


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
    since: str = typer.Option("15m", "--since", help="Window, e.g. 15m, 1h."),
    limit: int = typer.Option(10, "--limit", "-n", help="Operations to show."),
) -> None:
    """Operations that own the end-to-end latency of SERVICE's traces, with optimisation suggestions."""
    settings = get_settings()
    try:
        client = connect(settings)
    except Exception:  # chdb: a running worker holds the embedded store; ask it instead
        if settings.clickhouse_url or not worker_is_up(settings):
            raise
        report = bottlenecks_from_worker(settings, service, parse_duration(since), limit)
    else:
        report = find_bottlenecks(client, service, parse_duration(since), limit)
    render(report, Console())


def bottlenecks_from_worker(settings: Any, service: str, since_seconds: int, limit: int = 10) -> Report:
    """The same analysis run by the worker (``POST /bottlenecks``); it also stores and publishes it."""
    request = urllib.request.Request(
        f"{worker_url(settings)}/bottlenecks",
        data=json.dumps({"services": [service], "window_seconds": since_seconds, "limit": limit}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        reports = json.load(response)["reports"]
    if not reports:
        return Report(0, 0, [], [])
    r = reports[0]
    fields = ("service", "operation", "critical_ns", "share", "traces")
    return Report(r["traces"], r["total_ns"], [Bottleneck(**{k: b[k] for k in fields}) for b in r["bottlenecks"]],
                  [Suggestion(**s) for s in r["suggestions"]])
