"""Every Grafana panel's SQL runs on the real ClickHouse engine against the pipeline's own tables.

Grafana's macros and the dashboards' variables are expanded the way the ClickHouse data source
does it; the tables are filled by the real metrics and forecasting pipelines, so a panel that
names a wrong column or table, or that shows nothing of what the pipeline writes, fails here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from m1.settings import Settings
from sinks.clickhouse import Store, connect
from streams.forecast_pipeline import ForecastPipeline
from streams.metrics_pipeline import MetricsPipeline
from tests.test_forecast_path import N, STEP, T0, interleaved, records, series_points

DASHBOARDS = sorted((Path(__file__).resolve().parents[1] / "dashboards").glob("*.json"))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    home = tmp_path_factory.mktemp("dashboards")
    store = Store(connect(Settings(home=home)))
    store.migrate()
    batch = records(interleaved(series_points("acme", n=N)))
    MetricsPipeline(Settings(home=home), store).process(batch)
    ForecastPipeline(Settings(home=home), store).process(batch)
    yield store
    store.close()


def expand(sql: str, variables: dict[str, str]) -> str:
    """Grafana's ClickHouse macros over the data's time range, then the dashboard variables."""
    start, end = T0, T0 + (N + 48) * STEP  # forecasts reach past the last point
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


def test_forecast_dashboard_shows_forecasts_costs_and_recommendations(store: Store) -> None:
    dashboard = json.loads((DASHBOARDS[0].parent / "m1-forecasts.json").read_text())
    variables = variables_of(dashboard, store)
    assert variables["horizon"] == "12" and variables["series"].startswith("acme|")
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            rows = store.query(expand(target["rawSql"], variables)).rows
            assert rows, f"panel {panel['title']!r} ({target['refId']}) shows nothing"
    costs = store.query(expand(dashboard["panels"][1]["targets"][0]["rawSql"], variables)).rows
    assert {period for _, period, *_ in costs} == {"day", "month"}
    assert all(low <= total <= high for *_, total, low, high, _end in costs)
