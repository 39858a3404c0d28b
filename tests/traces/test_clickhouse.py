"""The OTel DDL in embedded ClickHouse (chdb): decoded rows go in, come back, and feed the views."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from core.settings import Settings, get_settings
from schemas.otlp import decode_metrics, decode_traces, metric_rows, span_rows
from sinks.clickhouse import Store, connect
from streams.bottleneck_job import BottleneckJob
from streams.metrics_pipeline import MetricsPipeline, Record
from streams.otlp_pipeline import OtlpPipeline
from traces.cli import app, find_bottlenecks
from traces.generator import COMPONENTS, ShopConfig, generate_request
from traces.model import span_from_row
from tests.traces.test_otlp import _metrics_request

TRACES = 40


def insert(client, table: str, rows: list[dict]) -> None:
    columns = list(rows[0])
    client.insert(table, [[row[c] for c in columns] for row in rows], column_names=columns)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("m1-traces")


@pytest.fixture(scope="module")
def loaded(home) -> Iterator[tuple[object, list[dict]]]:
    """A chdb store with the DDL applied and one batch of generated shop traces inserted."""
    client = connect(Settings(home=home))
    Store(client).migrate()
    config = ShopConfig(slow="bank-api", auth_error_rate=0.2)
    rows = span_rows(decode_traces(generate_request(TRACES, config, seed=3).SerializeToString()))
    insert(client, "otel_traces", rows)
    yield client, rows
    client.close()


def test_spans_round_trip(loaded) -> None:
    client, rows = loaded
    result = client.query("SELECT toUnixTimestamp64Nano(Timestamp) AS Timestamp, * EXCEPT Timestamp "
                          "FROM otel_traces").named_results()
    back = {r["SpanId"]: span_from_row(r) for r in result}
    assert back == {r["SpanId"]: span_from_row(r) for r in rows}


def test_trace_id_lookup_view(loaded) -> None:
    client, rows = loaded
    lookup = client.query("SELECT TraceId, min(Start), max(End) FROM otel_traces_trace_id_ts GROUP BY TraceId").result_rows
    assert {r[0] for r in lookup} == {r["TraceId"] for r in rows}
    assert all(start <= end for _, start, end in lookup)


def test_red_view_counts_calls_and_errors(loaded) -> None:
    client, rows = loaded
    red = client.query(
        "SELECT ServiceName, SpanName, sum(Calls), sum(Errors), quantilesMerge(0.5, 0.9, 0.99)(DurationQuantiles) "
        "FROM otel_red_1m GROUP BY ServiceName, SpanName"
    ).result_rows
    calls = Counter((r["ServiceName"], r["SpanName"]) for r in rows)
    errors = Counter((r["ServiceName"], r["SpanName"]) for r in rows if r["StatusCode"] == "Error")
    assert {(s, n): (c, e) for s, n, c, e, _ in red} == {op: (calls[op], errors[op]) for op in calls}
    assert sum(errors.values()) > 0
    for service, name, _, _, (p50, p90, p99) in red:
        durations = [r["Duration"] for r in rows if (r["ServiceName"], r["SpanName"]) == (service, name)]
        assert min(durations) <= p50 <= p90 <= p99 <= max(durations)


def test_replayed_batch_is_not_counted_twice(loaded) -> None:
    client, rows = loaded
    insert(client, "otel_traces", rows)  # the same Kafka batch again
    assert client.query("SELECT count() FROM otel_traces").result_rows == [(len(rows),)]
    assert client.query("SELECT sum(Calls) FROM otel_red_1m").result_rows == [(len(rows),)]


def test_metric_tables_accept_decoded_rows(loaded) -> None:
    client, _ = loaded
    rows = metric_rows(decode_metrics(_metrics_request().SerializeToString()))
    insert(client, "otel_metrics_gauge", rows.gauge)
    insert(client, "otel_metrics_sum", rows.sum)
    assert client.query("SELECT MetricName, Value, Attributes FROM otel_metrics_gauge LIMIT 1").result_rows == [
        ("cpu", 0.75, {"core": "3"})]
    assert client.query("SELECT sum(Value), any(IsMonotonic) FROM otel_metrics_sum").result_rows == [(51.0, True)]


def test_find_bottlenecks_reads_whole_traces(loaded) -> None:
    client, rows = loaded
    report = find_bottlenecks(client, "inventory", since_seconds=900, limit=3)
    assert report.traces == TRACES
    assert len(report.bottlenecks) == 3
    assert (report.bottlenecks[0].service, report.bottlenecks[0].operation) == COMPONENTS["bank-api"]
    assert {s.rule for s in report.suggestions} >= {"slow_external", "n_plus_one", "retries", "error_burst"}
    assert find_bottlenecks(client, "no-such-service", 900, 3).traces == 0
    assert find_bottlenecks(client, "inventory", 900, 3, tenant="acme").traces == TRACES  # the generator's tenant
    assert find_bottlenecks(client, "inventory", 900, 3, tenant="globex").traces == 0


def test_bottleneck_job_analyses_one_tenant_at_a_time(loaded, home) -> None:
    client, _ = loaded
    job = BottleneckJob(Settings(home=home), Store(client))
    every = job.run()  # the timer's run: every tenant with root spans in the window
    assert [(r["tenant"], r["entry_service"]) for r in every] == [("acme", "frontend")]
    assert job.run("globex") == [] and job.run("globex", ["inventory"]) == []
    [mine] = job.run("acme", ["inventory"])
    assert mine["tenant"] == "acme" and mine["traces"] == TRACES
    stored = client.query("SELECT DISTINCT tenant FROM bottlenecks").result_rows
    assert stored == [("acme",)]


def test_cli_prints_table_and_suggestions(loaded, home, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M1_HOME", str(home))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["bottlenecks", "--service", "checkout", "--since", "15m", "--limit", "2"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert f"{TRACES} traces" in result.output and "POST /authorize" in result.output
    assert "n_plus_one" in result.output


def test_otlp_records_with_times_past_2262_are_dead_lettered_not_raised(loaded, home) -> None:
    """Such a time overflows int64 nanoseconds: the batch would fail on every retry."""
    client, _ = loaded
    store, settings = Store(client), Settings(home=home)
    pipeline = OtlpPipeline(settings, store, MetricsPipeline(settings, store))
    spans = generate_request(2, ShopConfig(), seed=5)
    spans.resource_spans[0].scope_spans[0].spans[0].end_time_unix_nano = 2**64 - 1
    metrics = _metrics_request()
    metrics.resource_metrics[0].scope_metrics[0].metrics[1].sum.data_points[0].start_time_unix_nano = 2**63
    span_out = pipeline.process_spans([Record("otlp_spans", 0, 7, None, spans.SerializeToString())])
    metric_out = pipeline.process_metrics([Record("otlp_metrics", 0, 8, None, metrics.SerializeToString())])
    assert span_out.spans == 0 and [d.offset for d in span_out.dead_letters] == [7]
    assert "end_time_unix_nano" in span_out.dead_letters[0].reason
    assert metric_out.gauge == metric_out.sum == 0 and [d.offset for d in metric_out.dead_letters] == [8]
    assert "metrics['requests'].sum.data_points[0].start_time_unix_nano" in metric_out.dead_letters[0].reason


def test_otlp_points_stamped_far_ahead_are_stored_but_not_scored(loaded, home) -> None:
    client, _ = loaded
    store, settings = Store(client), Settings(home=home, max_future_seconds=600)
    pipeline = OtlpPipeline(settings, store, MetricsPipeline(settings, store))
    metrics = _metrics_request()
    now_ns = time.time_ns()
    for rm, ahead_s in zip(metrics.resource_metrics, (0, 30 * 86400, 0)):
        rm.scope_metrics[0].metrics[0].gauge.data_points[0].time_unix_nano = now_ns + ahead_s * 10**9
    out = pipeline.process_metrics([Record("otlp_metrics", 0, 9, None, metrics.SerializeToString())])
    assert out.gauge == 3 and not out.dead_letters
    [ahead] = [u for u in out.unscored if "ahead of the worker's clock" in u]
    assert ahead.startswith("api cpu point 1: ts is 2,59")  # 30 days: 2,592,000 s
