"""Every Grafana panel's SQL runs on the real ClickHouse engine against the pipeline's own tables.

Grafana's macros and the dashboards' variables are expanded the way the ClickHouse data source
does it; the tables are filled by the real metrics and forecasting pipelines, so a panel that
names a wrong column or table, or that shows nothing of what the pipeline writes, fails here.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from m1.settings import Settings
from sinks.clickhouse import Store, connect
from streams.bottleneck_job import BottleneckJob
from streams.forecast_pipeline import ForecastPipeline
from streams.metrics_pipeline import MetricsPipeline, Record
from streams.otlp_pipeline import OtlpPipeline
from tests.test_forecast_path import N, T0, interleaved, records, series_points
from traces.generator import generate_request

DASHBOARDS = sorted((Path(__file__).resolve().parents[1] / "dashboards").glob("*.json"))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    home = tmp_path_factory.mktemp("dashboards")
    store = Store(connect(Settings(home=home)))
    store.migrate()
    settings = Settings(home=home)
    batch = records(interleaved(series_points("acme", n=N)))
    metrics = MetricsPipeline(settings, store)
    metrics.process(batch)
    ForecastPipeline(settings, store).process(batch)
    spans = [Record("otlp_spans", 0, i, None, generate_request(20, seed=i).SerializeToString()) for i in range(3)]
    OtlpPipeline(settings, store, metrics, red_grace_seconds=0.0).process_spans(spans)
    BottleneckJob(settings, store).run()
    yield store
    store.close()


def expand(sql: str, variables: dict[str, str]) -> str:
    """Grafana's ClickHouse macros over a range that holds all test data, then the dashboard variables."""
    start, end = T0 - 86400, time.time() + 86400  # the metrics series start at T0, spans now
    sql = re.sub(r"\$__timeFilter\((\w+)\)",
                 lambda m: f"{m[1]} >= toDateTime64({start}, 3, 'UTC') AND {m[1]} <= toDateTime64({end}, 3, 'UTC')", sql)
    sql = re.sub(r"\$__timeInterval\((\w+)\)", lambda m: f"toStartOfInterval({m[1]}, INTERVAL 60 second)", sql)
    sql = sql.replace("$__interval_s", "60")
    for name, value in variables.items():
        sql = sql.replace("${" + name + "}", value)
    assert "$" not in sql, f"unexpanded macro or variable in {sql}"
    return sql


def variables_of(dashboard: dict, store: Store) -> dict[str, str]:
    """Each variable's first value: a query variable runs its query, a custom one takes its current value."""
    values = {}
    for var in dashboard.get("templating", {}).get("list", []):
        if var["type"] == "query":
            rows = store.query(expand(var["query"], values)).rows
            assert rows, f"variable {var['name']} has no values"
            values[var["name"]] = str(rows[0][0])
        else:
            values[var["name"]] = var["current"]["value"]
    return values


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_query_runs_on_the_pipelines_tables(path: Path, store: Store) -> None:
    dashboard = json.loads(path.read_text())
    variables = variables_of(dashboard, store)
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            store.query(expand(target["rawSql"], variables))  # raises on a wrong table, column or syntax


def panel_rows(name: str, store: Store) -> tuple[dict[str, str], dict[str, list[tuple]]]:
    """The dashboard's variables and each panel target's rows (keyed ``<panel id><refId>``); none may be empty."""
    dashboard = json.loads((DASHBOARDS[0].parent / name).read_text())
    variables = variables_of(dashboard, store)
    rows = {}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            rows[f"{panel['id']}{target['refId']}"] = store.query(expand(target["rawSql"], variables)).rows
            assert rows[f"{panel['id']}{target['refId']}"], f"panel {panel['title']!r} ({target['refId']}) shows nothing"
    return variables, rows


def test_forecast_dashboard_shows_forecasts_costs_and_recommendations(store: Store) -> None:
    variables, rows = panel_rows("m1-forecasts.json", store)
    assert variables["horizon"] == "12" and variables["series"].startswith("acme|")
    assert {period for _, period, *_ in rows["2A"]} == {"day", "month"}
    assert all(low <= total <= high for *_, total, low, high, _end in rows["2A"])


def test_traces_dashboard_shows_red_bottlenecks_and_slow_traces(store: Store) -> None:
    _, rows = panel_rows("m1-traces.json", store)
    assert sum(calls for _, _, calls in rows["1A"]) > 0
    assert [rank for _, rank, *_ in rows["4A"]] == sorted(rank for _, rank, *_ in rows["4A"])  # ranked per run
    assert {rule for _, _, rule, *_ in rows["5A"]} >= {"n_plus_one"}  # the generator's N+1 pattern is named
    durations = [d for _, _, _, d, *_ in rows["6A"]]
    assert durations == sorted(durations, reverse=True) and len(durations) == 20
