"""The bottleneck job: ``traces.analysis`` over a recent window of ``otel_traces``, stored and published.

One tenant's traces at a time (the spans whose resource names the tenant): for every entry
service of the tenant (a service with root spans in the window, or the ones asked for), it
loads the window's whole traces, ranks the operations that own end-to-end latency and
applies the optimisation rules, then writes the report, stamped with the tenant, to the
``bottlenecks`` table (``schemas/ddl/030_bottlenecks.sql``, ``061_bottlenecks_tenant.sql``)
and returns it as JSON-ready dicts for the ``bottlenecks`` topic. The worker runs it for every
tenant on a timer (``M1_BOTTLENECK_SECONDS``, leader only), and for one tenant on demand
through the API (``POST /v1/tenants/{tenant}/bottlenecks``).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import pyarrow as pa

from core.settings import Settings
from sinks.clickhouse import TS_TYPE, Store
from traces.analysis import Report, analyze
from traces.store import entry_services, load_spans_from_store
from streams.tracing import stage



def report_dict(report: Report, tenant: str, service: str, window_seconds: int, analyzed_at: float) -> dict[str, Any]:
    """A report as published on the bottlenecks topic (and returned by the API's on-demand run)."""
    return {
        "analyzed_at": analyzed_at,
        "tenant": tenant,
        "entry_service": service,
        "window_seconds": window_seconds,
        "traces": report.traces,
        "total_ns": report.total_ns,
        "mean_ms": report.total_ns / report.traces / 1e6 if report.traces else 0.0,
        "bottlenecks": [
            {**asdict(b), "critical_ms": b.critical_ns / report.traces / 1e6 if report.traces else 0.0}
            for b in report.bottlenecks
        ],
        "suggestions": [asdict(s) for s in report.suggestions],
    }


def report_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``bottlenecks`` table rows of one published report."""
    head = {k: report[k] for k in ("analyzed_at", "tenant", "entry_service", "window_seconds", "traces", "mean_ms")}
    rows = [
        {**head, "kind": "bottleneck", "rank": i, "service": b["service"], "operation": b["operation"],
         "share": b["share"], "critical_ms": b["critical_ms"], "on_path_traces": b["traces"], "rule": "",
         "message": f"{b['share']:.1%} of end-to-end latency", "evidence": {}}
        for i, b in enumerate(report["bottlenecks"], 1)
    ]
    rows += [
        {**head, "kind": "suggestion", "rank": i, "service": s["service"], "operation": s["operation"],
         "share": float(s["evidence"].get("share", 0.0)), "critical_ms": 0.0, "on_path_traces": 0,
         "rule": s["rule"], "message": s["message"], "evidence": {k: float(v) for k, v in s["evidence"].items()}}
        for i, s in enumerate(report["suggestions"], 1)
    ]
    return rows


class BottleneckJob:
    """Analyse, store, and hand back the reports of one run."""

    def __init__(self, settings: Settings, store: Store, limit: int = 10) -> None:
        self.store = store
        self.window_seconds = settings.bottleneck_window_seconds
        self.limit = limit

    def run(self, tenant: str | None = None, services: list[str] | None = None, window_seconds: int | None = None,
            limit: int | None = None) -> list[dict[str, Any]]:
        """Reports of ``tenant`` (default: every tenant with root spans in the window), one per
        service asked for (default: every entry service in the window) with at least one trace."""
        window = window_seconds or self.window_seconds
        analyzed_at = round(time.time(), 3)
        with stage("score", **{"m1.job": "bottlenecks"}):
            entries = entry_services(self.store, window, tenant)
            if services:
                tenants = [tenant] if tenant is not None else sorted({t for t, _ in entries})
                entries = [(t, service) for t in tenants for service in services]
            reports = []
            for owner, service in entries:
                report = analyze(load_spans_from_store(self.store, service, window, tenant=owner), limit or self.limit)
                if report.traces:
                    reports.append(report_dict(report, owner, service, window, analyzed_at))
        rows = [row for report in reports for row in report_rows(report)]
        if rows:
            with stage("sink", **{"db.collection.name": "bottlenecks"}):
                self.store.insert("bottlenecks", _columns(rows))
        return reports


def _columns(rows: list[dict[str, Any]]) -> dict[str, Any]:
    columns: dict[str, Any] = {name: [row[name] for row in rows] for name in rows[0]}
    columns["analyzed_at"] = pa.array([int(r["analyzed_at"] * 1000) for r in rows], type=TS_TYPE)
    columns["window_seconds"] = pa.array(columns["window_seconds"], type=pa.uint32())
    columns["traces"] = pa.array(columns["traces"], type=pa.uint32())
    columns["rank"] = pa.array(columns["rank"], type=pa.uint16())
    columns["on_path_traces"] = pa.array(columns["on_path_traces"], type=pa.uint32())
    columns["evidence"] = pa.array([list(r["evidence"].items()) for r in rows], type=pa.map_(pa.string(), pa.float64()))
    return columns
