"""Enrichment reads the service's newest bottleneck report of the window from a real store."""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings
from sinks.clickhouse import Store, connect
from streams.bottleneck_job import _columns, report_dict, report_rows
from traces.analysis import Report
from traces.bottlenecks import Bottleneck
from traces.rules import Suggestion
from workflows.enrich import Bottlenecks

T0 = 1_700_000_000.0


def report(tenant: str, service: str, operation: str, at: float) -> dict:
    r = Report(traces=10, total_ns=10_000_000_000,
               bottlenecks=[Bottleneck(service="db", operation=operation, critical_ns=6_000_000_000, share=0.6, traces=10),
                            Bottleneck(service=service, operation="GET /", critical_ns=1_000_000_000, share=0.1, traces=10)],
               suggestions=[Suggestion(rule="n_plus_one", service="db", operation=operation, message="batch the queries")])
    return report_dict(r, tenant, service, 900, at)


def test_newest_report_of_the_tenants_service_in_the_window(tmp_path: Path) -> None:
    store = Store(connect(Settings(home=tmp_path, kafka_bootstrap="127.0.0.1:1")))
    store.migrate()
    rows = [row for rep in (report("acme", "api", "SELECT old", T0 - 1200), report("acme", "api", "SELECT users", T0 - 300),
                            report("globex", "api", "SELECT theirs", T0 - 10), report("acme", "web", "SELECT web", T0 - 10))
            for row in report_rows(rep)]
    store.insert("bottlenecks", _columns(rows))
    found = Bottlenecks(store)("acme", "api", T0, 900)
    assert found["analyzed_at"] == T0 - 300
    assert [(b["rank"], b["service"], b["operation"]) for b in found["bottlenecks"]] == [(1, "db", "SELECT users"), (2, "api", "GET /")]
    assert found["suggestions"] == [{"rule": "n_plus_one", "service": "db", "operation": "SELECT users",
                                     "message": "batch the queries"}]
    assert Bottlenecks(store)("acme", "api", T0, 60) == {}  # nothing that recent
    assert Bottlenecks(store)("acme", "nobody", T0, 900) == {}
    store.close()
