"""Every Grafana panel's SQL runs on the real ClickHouse engine against the pipeline's own tables.

Grafana's macros and the dashboards' variables are expanded the way the ClickHouse data source
does it; the tables are filled by the real metrics and forecasting pipelines, so a panel that
names a wrong column or table, or that shows nothing of what the pipeline writes, fails here.

A variable's value is data (a series or service name a producer chose) or a URL parameter
(``?var-series=...``), so it must never become SQL. Every interpolation is
``decodeURLComponent('${name:percentencode}')``: Grafana's percentencode leaves only
``[A-Za-z0-9._~-]`` and ``%XX``, which cannot end a quoted literal (neither a quote nor a
backslash), and ClickHouse decodes it back to exactly the value. The tests check that no other
interpolation exists, and run every panel with hostile values stored in the tables and chosen
in the variables, against the same query with the value bound as a server-side parameter.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pytest

from core.settings import Settings
from sinks.clickhouse import Store, connect
from streams.bottleneck_job import BottleneckJob
from streams.forecast_pipeline import ForecastPipeline
from streams.metrics_pipeline import MetricsPipeline, Record
from streams.otlp_pipeline import OtlpPipeline
from tests.test_forecast_path import N, T0, interleaved, records, series_points
from traces.generator import generate_request

# The dashboards on the ClickHouse data source; the pipeline-health one queries Prometheus, and
# tests/test_prometheus.py runs its PromQL on a real Prometheus.
DASHBOARDS = sorted(p for p in (Path(__file__).resolve().parents[1] / "dashboards").glob("*.json")
                    if '"grafana-clickhouse-datasource"' in p.read_text())

# Grafana's template-variable syntax: $name, [[name:format]], ${name.field:format}
# (public/app/features/variables/utils.ts, variableRegex).
VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}")
# The data source's macros: it expands them from the request's time range, never from a value.
MACROS = {"__timeFilter", "__timeInterval", "__interval_s"}
SAFE = "decodeURLComponent('${{{name}:percentencode}}')"

# Values a producer can give a series or service, or anyone can put in a dashboard URL. Each
# starts with "~" so it sorts after the pipeline's own names (the variables' first values).
HOSTILE = [
    "~x' OR '1'='1",
    "~') OR 1=1 --",
    "~\\' OR 1=1 --",          # singlequote gives \\' : an escaped backslash, then a closing quote
    "~ends in a backslash\\",   # sqlstring gives ...\' : the closing quote escaped, the literal open
    "~\\\\''",
    "~%27 OR 1=1 --%",           # already percent-encoded text, and a bare %
    "~$series ${series} [[series]]",
    "~{a,b}",
    "~tab\tnew\nline\rnul\x00",
    "~naïve ü € 😀 \u202e",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    home = tmp_path_factory.mktemp("dashboards")
    store = Store(connect(Settings(home=home)))
    store.migrate()
    settings = Settings(home=home)
    store_hostile_names(store)
    batch = records(interleaved(series_points("acme", n=N)))
    metrics = MetricsPipeline(settings, store)
    metrics.process(batch)
    ForecastPipeline(settings, store).process(batch)
    spans = [Record("otlp_spans", 0, i, None, generate_request(20, seed=i).SerializeToString()) for i in range(3)]
    OtlpPipeline(settings, store, metrics, red_grace_seconds=0.0).process_spans(spans)
    BottleneckJob(settings, store).run()
    yield store
    store.close()


def store_hostile_names(store: Store) -> None:
    """Points, forecasts (horizon 12) and spans of series and services named by ``HOSTILE``."""
    n, now = len(HOSTILE), time.time()
    store.insert("metric_points", {
        "ts": pa.array([int((T0 + 30) * 1000)] * n, pa.timestamp("ms", "UTC")), "tenant": ["acme"] * n,
        "series": HOSTILE, "value": [float(i) for i in range(n)]})
    store.insert("forecasts", {
        "ts": pa.array([int(T0 * 1000)] * n, pa.timestamp("ms", "UTC")),
        "target_ts": pa.array([int((T0 + 60) * 1000)] * n, pa.timestamp("ms", "UTC")), "tenant": ["acme"] * n,
        "series": HOSTILE, "horizon": pa.array([12] * n, pa.uint16()), "point": [float(i) for i in range(n)],
        "lower": [0.0] * n, "upper": [100.0] * n})
    store.insert("otel_traces", {
        "Timestamp": pa.array([int(now * 1e9)] * n, pa.timestamp("ns", "UTC")), "TraceId": [f"hostile{i}" for i in range(n)],
        "SpanId": [f"span{i}" for i in range(n)], "ParentSpanId": ["parent"] * n, "SpanName": ["op"] * n,
        "SpanKind": ["Server"] * n, "ServiceName": HOSTILE, "Duration": pa.array([1000] * n, pa.uint64()),
        "StatusCode": ["Ok"] * n})


def grafana_format(value: str, fmt: str | None) -> str:
    """One single value formatted the way Grafana's template service does (``None``: the
    ClickHouse data source's default, the value as it is).

    >>> grafana_format("{foo()bar BAZ,test2}", "percentencode")  # Grafana's own test vector
    '%7Bfoo%28%29bar%20BAZ%2Ctest2%7D'
    >>> grafana_format("it's", "singlequote"), grafana_format("it's", "sqlstring")
    ("'it\\\\'s'", "'it''s'")
    """
    if fmt == "percentencode":  # encodeURIComponent, and !'()* too (Grafana's encodeURIComponentStrict)
        return quote(value, safe="-_.~")
    if fmt == "singlequote":
        return "'" + value.replace("'", "\\'") + "'"
    if fmt == "sqlstring":
        return "'" + value.replace("'", "''") + "'"
    if fmt in (None, "raw"):
        return value
    raise AssertionError(f"the tests do not model Grafana's {fmt!r} format")


def expand_macros(sql: str) -> str:
    """The data source's macros over a range that holds all test data."""
    start, end = T0 - 86400, time.time() + 86400  # the metrics series start at T0, spans now
    sql = re.sub(r"\$__timeFilter\((\w+)\)",
                 lambda m: f"{m[1]} >= toDateTime64({start}, 3, 'UTC') AND {m[1]} <= toDateTime64({end}, 3, 'UTC')", sql)
    sql = re.sub(r"\$__timeInterval\((\w+)\)", lambda m: f"toStartOfInterval({m[1]}, INTERVAL 60 second)", sql)
    return sql.replace("$__interval_s", "60")


def expand(sql: str, variables: dict[str, str]) -> str:
    """The macros, then the dashboard variables in whichever syntax and format the SQL uses."""
    def value(m: re.Match) -> str:
        name, fmt = (m[1], None) if m[1] else (m[2], m[3]) if m[2] else (m[4], m[6])
        return grafana_format(variables[name], fmt)

    sql = VARIABLE.sub(value, expand_macros(sql))
    assert "$" not in sql, f"unexpanded macro or variable in {sql}"
    return sql


# An interpolation meant as one string literal: the safe form, and the unsafe ones it replaces.
LITERAL = re.compile(r"decodeURLComponent\('\$\{(\w+):percentencode\}'\)|'(?:\$(\w+)|\$\{(\w+)\})'"
                     r"|\$\{(\w+):(?:singlequote|sqlstring)\}")


def bound(sql: str) -> str:
    """The reference: each variable meant as a string literal bound as a server-side parameter instead."""
    return expand_macros(LITERAL.sub(lambda m: "{%s:String}" % next(g for g in m.groups() if g), sql))


def sql_texts(dashboard: dict) -> Iterator[tuple[str, str]]:
    """(where, SQL) of every panel target and every query variable."""
    for var in dashboard.get("templating", {}).get("list", []):
        for key in ("query", "definition"):
            if isinstance(var.get(key), str) and var["type"] == "query":
                yield f"variable {var['name']} {key}", var[key]
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield f"panel {panel['title']!r} {target['refId']}", target["rawSql"]


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
def test_variables_reach_the_sql_only_percent_encoded(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    variables = dashboard.get("templating", {}).get("list", [])
    for var in variables:  # one value each (a multi-value or "All" selection is formatted otherwise)
        assert var["type"] in ("query", "custom"), f"variable {var['name']}: type {var['type']} is not allowed"
        assert var.get("multi") is False and var.get("includeAll") is False, f"variable {var['name']} must be single-value"
    names = {var["name"] for var in variables}
    for where, sql in sql_texts(dashboard):
        for name in names:
            sql = sql.replace(SAFE.format(name=name), "")
        unsafe = [m[0] for m in VARIABLE.finditer(sql) if m[1] not in MACROS]
        assert not unsafe, f"{path.name}, {where}: {unsafe} must be written {SAFE.format(name='<name>')}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_hostile_variable_values_select_only_their_own_rows(path: Path, store: Store) -> None:
    dashboard = json.loads(path.read_text())
    variables = variables_of(dashboard, store)
    from_data = {var["name"] for var in dashboard.get("templating", {}).get("list", []) if var["type"] == "query"}
    for name in from_data:  # the hostile names are real choices in the dropdown
        var = next(v for v in dashboard["templating"]["list"] if v["name"] == name)
        assert set(HOSTILE) <= {row[0] for row in store.query(var["query"]).rows}
    for where, sql in sql_texts(dashboard):
        for name in {m[1] or m[2] or m[4] for m in VARIABLE.finditer(sql)} - MACROS:
            for hostile in HOSTILE:
                chosen = {**variables, name: hostile}
                rows = store.query(expand(sql, chosen)).rows
                assert rows == store.query(bound(sql), parameters=chosen).rows, f"{where}: {name}={hostile!r}"
                assert rows or name not in from_data, f"{where}: {name}={hostile!r} found none of its own rows"


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
