"""One tenant's rows cannot replace or merge into another's (schemas/ddl/070_tenant_keys.sql), on
the real chdb engine, through the real pipelines; and a store at the previous version keeps every
row when it migrates, with its materialized views still firing.

Each attack runs twice: on the keys before version 070, where it must succeed (so the scenario
is really the attack), and on the current keys, where it must not.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from core.settings import Settings
from sinks.clickhouse import Store, connect
from sinks.sql_guard import quote
from streams.bottleneck_job import BottleneckJob
from streams.metrics_pipeline import MetricsPipeline, Record
from streams.otlp_pipeline import OtlpPipeline
from tests.cityhash import preimage16, second_halves
from traces.generator import ShopConfig, generate_request, to_request
from traces.model import Span
from traces.store import load_spans_from_store

BEFORE = "070"  # the DDL version that moved the keys
SETTINGS = {"kafka_bootstrap": "127.0.0.1:1", "tenant_topics": True}  # each tenant writes to its own topics


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[Callable[[str | None], tuple[Store, OtlpPipeline]]]:
    """Opens a store migrated up to (not including) a version, or fully, with an OTLP pipeline on it."""
    opened: list[Store] = []

    def at(before: str | None) -> tuple[Store, OtlpPipeline]:
        settings = Settings(home=tmp_path, **SETTINGS)
        store = Store(connect(settings))
        store.migrate(before)
        opened.append(store)
        return store, OtlpPipeline(settings, store, MetricsPipeline(settings, store))

    yield at
    for store in opened:
        store.close()  # chdb: one data directory per process at a time


def send_spans(pipeline: OtlpPipeline, tenant: str, spans: list[Span]) -> None:
    """``spans`` as one OTLP record on the tenant's own topic (the pipeline stamps the tenant)."""
    record = Record(f"{tenant}.otlp_spans", 0, 0, None, to_request(spans).SerializeToString())
    assert pipeline.process_spans([record]).spans == len(spans)


def victim_span(author: str, start_ns: int) -> Span:
    """acme's root span; mallory copies its trace and span id, service, name and time."""
    return Span("5b8efff798038103d269b633813fc60c", "eb9e4b5e8e4f1c2a", "", "checkout", "POST /pay",
                start_ns, start_ns + 2_000_000, kind="Server", attributes={"author": author})


def surviving(store: Store, sql: str) -> list[tuple]:
    """Rows of ``sql`` after every part of every table is merged (what replacement leaves)."""
    for table in ("otel_traces", "otel_metrics_gauge", "otel_metrics_sum", "bottlenecks"):
        store.command(f"OPTIMIZE TABLE {table} FINAL")
    return store.query(sql).rows


SPAN_OWNERS = "SELECT ResourceAttributes['tenant'], SpanAttributes['author'] FROM otel_traces ORDER BY 1"


def test_before_070_a_tenant_erases_another_tenants_span(open_store) -> None:
    store, pipeline = open_store(BEFORE)
    now = time.time_ns() // 10**9 * 10**9  # mallory's copy starts 1 µs later, in the same second
    send_spans(pipeline, "acme", [victim_span("acme", now)])
    send_spans(pipeline, "mallory", [victim_span("mallory", now + 1000)])
    assert surviving(store, SPAN_OWNERS) == [("mallory", "mallory")]  # acme's span is gone


def test_a_tenant_cannot_erase_another_tenants_span(open_store) -> None:
    store, pipeline = open_store(None)
    now = time.time_ns() // 10**9 * 10**9  # mallory's copy starts 1 µs later, in the same second
    send_spans(pipeline, "acme", [victim_span("acme", now)])
    send_spans(pipeline, "mallory", [victim_span("mallory", now + 1000)])
    assert surviving(store, SPAN_OWNERS) == [("acme", "acme"), ("mallory", "mallory")]
    for tenant in ("acme", "mallory"):  # each tenant's own view: tenant SQL, the trace reader, the RED rollup
        assert store.tenant_query("SELECT SpanAttributes['author'] FROM otel_traces FINAL", tenant).rows == [(tenant,)]
        [span] = load_spans_from_store(store, "checkout", 600, tenant=tenant)
        assert span.attributes["author"] == tenant and span.start_ns == (now if tenant == "acme" else now + 1000)
        assert store.tenant_query("SELECT sum(Calls) FROM otel_red_1m", tenant).rows == [(1,)]
        assert store.tenant_query("SELECT count() FROM otel_traces_trace_id_ts", tenant).rows == [(1,)]


def metrics_request(resource: dict[str, str], scope: str, value: float, time_ns: int) -> ExportMetricsServiceRequest:
    """One gauge and one sum point of ``resource`` and ``scope`` at ``time_ns``."""
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.extend(KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in resource.items())
    sm = rm.scope_metrics.add()
    sm.scope.name = scope
    sm.metrics.add(name="cpu").gauge.data_points.add(time_unix_nano=time_ns, as_double=value)
    total = sm.metrics.add(name="requests").sum
    total.is_monotonic, total.aggregation_temporality = True, 2
    total.data_points.add(time_unix_nano=time_ns, as_double=value)
    return request


def send_metrics(pipeline: OtlpPipeline, tenant: str, request: ExportMetricsServiceRequest, offset: int = 0) -> None:
    record = Record(f"{tenant}.otlp_metrics", 0, offset, None, request.SerializeToString())
    outcome = pipeline.process_metrics([record])
    assert (outcome.gauge, outcome.sum) == (1, 1), outcome.dead_letters


def forge_metrics(store: Store, pipeline: OtlpPipeline) -> None:
    """acme's points, then mallory's with the same service, names, attributes and time, and a
    resource and scope forged so that cityHash64(ResourceAttributes, ScopeName) is acme's."""
    now = time.time_ns()
    send_metrics(pipeline, "acme", metrics_request({"service.name": "api", "tenant": "acme"}, "acme-scope", 1.0, now))
    [(target,)] = store.query("SELECT cityHash64(ResourceAttributes, ScopeName) FROM otel_metrics_gauge").rows
    for n in range(50):  # about one resource in three has no second half: vary it until one has
        forged = {"service.name": "api", "tenant": "mallory", "n": str(n)}
        literal = ", ".join(quote(part) for item in forged.items() for part in item)
        [(lo,)] = store.query(f"SELECT cityHash64(CAST(map({literal}), 'Map(LowCardinality(String), String)'))").rows
        if halves := second_halves(lo, target):
            break
    send_metrics(pipeline, "mallory", metrics_request(forged, preimage16(halves[0], random.Random(n)), 2.0, now), 1)
    for table in ("otel_metrics_gauge", "otel_metrics_sum"):  # the premise: the engine's hashes collide
        assert store.query(f"SELECT uniqExact(cityHash64(ResourceAttributes, ScopeName)), count() FROM {table}").rows == [(1, 2)]


METRIC_OWNERS = ("SELECT * FROM (SELECT ResourceAttributes['tenant'], Value FROM otel_metrics_gauge UNION ALL "
                 "SELECT ResourceAttributes['tenant'], Value FROM otel_metrics_sum) ORDER BY 1, 2")


def test_before_070_a_forged_hash_erases_another_tenants_metric_points(open_store) -> None:
    store, pipeline = open_store(BEFORE)
    forge_metrics(store, pipeline)
    assert surviving(store, METRIC_OWNERS) == [("mallory", 2.0), ("mallory", 2.0)]


def test_a_forged_hash_cannot_erase_another_tenants_metric_points(open_store) -> None:
    store, pipeline = open_store(None)
    forge_metrics(store, pipeline)
    assert surviving(store, METRIC_OWNERS) == [("acme", 1.0), ("acme", 1.0), ("mallory", 2.0), ("mallory", 2.0)]
    for tenant, value in (("acme", 1.0), ("mallory", 2.0)):
        assert store.tenant_query("SELECT Value FROM otel_metrics_gauge FINAL UNION ALL "
                                  "SELECT Value FROM otel_metrics_sum FINAL", tenant).rows == [(value,), (value,)]


def collide_reports(store: Store, analyzed_at: str) -> None:
    """Two tenants' reports of one run (one analyzed_at) for an entry service of the same name."""
    store.command("INSERT INTO bottlenecks (analyzed_at, tenant, entry_service, kind, rank, service, message) VALUES "
                  f"('{analyzed_at}', 'acme', 'frontend', 'bottleneck', 1, 'bank-api', 'acme'), "
                  f"('{analyzed_at}', 'globex', 'frontend', 'bottleneck', 1, 'db', 'globex')")


def test_before_070_one_run_kept_one_tenants_report(open_store) -> None:
    store, _ = open_store(BEFORE)
    collide_reports(store, "2020-01-01 10:00:00.123")
    assert len(surviving(store, "SELECT tenant FROM bottlenecks")) == 1


def test_one_run_over_every_tenant_keeps_each_tenants_reports(open_store, tmp_path: Path) -> None:
    """The timer's run analyses every tenant with one ``analyzed_at``: tenants whose entry services
    share a name wrote reports with the same (entry_service, analyzed_at, kind, rank)."""
    store, pipeline = open_store(None)
    for offset, tenant in enumerate(("acme", "globex")):
        spans = generate_request(5, ShopConfig(tenant=tenant), seed=offset).SerializeToString()
        assert pipeline.process_spans([Record(f"{tenant}.otlp_spans", 0, offset, None, spans)]).spans > 0
    reports = BottleneckJob(Settings(home=tmp_path), store).run()
    assert [(r["tenant"], r["entry_service"]) for r in reports] == [("acme", "frontend"), ("globex", "frontend")]
    assert len({r["analyzed_at"] for r in reports}) == 1
    rows = surviving(store, "SELECT tenant, count() FROM bottlenecks GROUP BY tenant ORDER BY tenant")
    ranked = len(reports[0]["bottlenecks"]) + len(reports[0]["suggestions"])
    assert rows == [("acme", ranked), ("globex", len(reports[1]["bottlenecks"]) + len(reports[1]["suggestions"]))]
    collide_reports(store, "2020-01-01 10:00:00.123")
    assert surviving(store, "SELECT tenant, message FROM bottlenecks WHERE toYear(analyzed_at) = 2020 ORDER BY tenant") == [
        ("acme", "acme"), ("globex", "globex")]


#: What must be the same after the migration: every stored row (``*`` is the exporter's columns:
#: the materialised Tenant is not among them), every RED total and every trace's time range.
SNAPSHOT = {
    "spans": "SELECT * FROM otel_traces ORDER BY TraceId, SpanId",
    "gauge": "SELECT * FROM otel_metrics_gauge ORDER BY ResourceAttributes['tenant'], MetricName, TimeUnix",
    "sum": "SELECT * FROM otel_metrics_sum ORDER BY ResourceAttributes['tenant'], MetricName, TimeUnix",
    "reports": "SELECT * FROM bottlenecks ORDER BY tenant, entry_service, kind, rank",
    "red": "SELECT ServiceName, SpanName, SpanKind, Minute, sum(Calls), sum(Errors), sum(DurationSum), "
           "quantilesMerge(0.5, 0.9, 0.99)(DurationQuantiles) FROM otel_red_1m GROUP BY ALL ORDER BY ALL",
    "lookup": "SELECT TraceId, min(Start), max(End) FROM otel_traces_trace_id_ts GROUP BY TraceId ORDER BY TraceId",
}


def snapshot(store: Store) -> dict[str, list[tuple]]:
    return {name: store.query(sql).rows for name, sql in SNAPSHOT.items()}


def test_a_store_at_the_previous_version_keeps_every_row_and_its_views_keep_firing(open_store) -> None:
    store, pipeline = open_store(BEFORE)
    for offset, tenant in enumerate(("acme", "globex")):
        spans = generate_request(10, ShopConfig(tenant=tenant, auth_error_rate=0.3), seed=offset).SerializeToString()
        assert pipeline.process_spans([Record(f"{tenant}.otlp_spans", 0, offset, None, spans)]).spans > 0
        send_metrics(pipeline, tenant, metrics_request({"service.name": "api"}, "m1", 1.0 + offset, time.time_ns()))
    store.command("INSERT INTO bottlenecks (analyzed_at, tenant, entry_service, kind, rank) VALUES "
                  "(now64(3), 'acme', 'frontend', 'bottleneck', 1), (now64(3), 'globex', 'shop', 'suggestion', 1), "
                  "(now64(3), '', 'written-before-061', 'bottleneck', 1)")
    before = snapshot(store)
    assert all(before.values()) and len(before["spans"]) > 20 and len(before["reports"]) == 3

    assert "070_tenant_keys.sql" in store.migrate()  # with any later version
    assert snapshot(store) == before
    assert store.query("SELECT Tenant, count() FROM otel_traces WHERE Tenant = ResourceAttributes['tenant'] "
                       "GROUP BY Tenant ORDER BY Tenant").rows == store.query(
        "SELECT ResourceAttributes['tenant'], count() FROM otel_traces GROUP BY 1 ORDER BY 1").rows
    assert store.query("SELECT DISTINCT Tenant FROM otel_traces_trace_id_ts ORDER BY Tenant").rows == [("acme",), ("globex",)]
    assert store.query("SELECT DISTINCT Tenant FROM otel_red_1m").rows == [("",)]  # summed every tenant: no one's
    assert store.query("SELECT DISTINCT Tenant FROM otel_metrics_sum ORDER BY Tenant").rows == [("acme",), ("globex",)]

    def send_and_count(seed: int) -> tuple[int, list[tuple]]:
        """Sends acme spans; how many, and acme's RED calls and trace ranges the views wrote."""
        spans = generate_request(3, ShopConfig(tenant="acme"), seed=seed)
        sent = pipeline.process_spans([Record("acme.otlp_spans", 0, seed, None, spans.SerializeToString())]).spans
        return sent, store.query("SELECT (SELECT sum(Calls) FROM otel_red_1m WHERE Tenant = 'acme'), "
                                 "(SELECT count() FROM otel_traces_trace_id_ts WHERE Tenant = 'acme')").rows

    sent, views = send_and_count(7)
    assert views == [(sent, 10 + 3)]  # the RED view counts acme's new spans; the lookup has 3 more traces

    # A crash after the tables were moved but before the version was recorded: the file runs again.
    store.command("ALTER TABLE schema_migrations DELETE WHERE name = '070_tenant_keys.sql' SETTINGS mutations_sync = 1")
    after = snapshot(store)
    assert "070_tenant_keys.sql" in store.migrate()  # with any later version
    assert snapshot(store) == after
    assert store.query("SELECT sum(Calls) FROM otel_red_1m WHERE Tenant = 'acme'").rows == [(sent,)]  # kept its tenant
    again, views = send_and_count(8)
    assert views == [(sent + again, 10 + 6)]


def test_tenant_is_the_resource_attribute_and_no_writer_can_set_it(open_store) -> None:
    """An exporter writing otel_traces directly cannot give a span another tenant than its resource names."""
    store, _ = open_store(None)
    resource = pa.array([[("tenant", "mallory")]], type=pa.map_(pa.string(), pa.string()))
    for table in ("otel_traces", "otel_metrics_gauge", "otel_metrics_sum"):
        with pytest.raises(Exception, match="MATERIALIZED"):
            store.insert(table, {"ResourceAttributes": resource, "Tenant": ["acme"]})
        store.insert(table, {"ResourceAttributes": resource})
        assert store.query(f"SELECT Tenant FROM {table}").rows == [("mallory",)]


def test_without_tenant_topics_spans_are_stored_under_the_tenant_they_are_scored_for(tmp_path: Path) -> None:
    """Trusted-producer mode: a resource naming its tenant only as ``m1.tenant``, or not at all, is
    filed (Tenant column, tenant SQL, RED rollup) under the tenant its RED points are scored for."""
    settings = Settings(home=tmp_path, kafka_bootstrap="127.0.0.1:1")
    store = Store(connect(settings))
    try:
        store.migrate()
        pipeline = OtlpPipeline(settings, store, MetricsPipeline(settings, store))
        now = time.time_ns()
        for offset, resource in enumerate([{"m1.tenant": "acme"}, {}]):
            spans = [victim_span("x", now + offset)]
            request = to_request(spans)
            request.resource_spans[0].resource.attributes.extend(
                KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in resource.items())
            assert pipeline.process_spans([Record("otlp_spans", 0, offset, None, request.SerializeToString())]).spans == 1
        assert store.query("SELECT Tenant, count() FROM otel_traces GROUP BY Tenant ORDER BY Tenant").rows == [
            ("acme", 1), ("default", 1)]
        assert store.tenant_query("SELECT count() FROM otel_traces", "acme").rows == [(1,)]
    finally:
        store.close()  # chdb: one data directory per process at a time


#: Merging tables whose key need not start with the tenant, and why no two tenants' rows share a key.
NOT_LED_BY_TENANT = {
    "dead_letters": "(topic, partition, offset): a record's own Kafka coordinates; tenant topics are the tenant's own",
    "model_state": "(detector, series): the series key starts with the tenant, a name that cannot hold its '|'",
    "schema_migrations": "the store's own DDL versions, no tenant's rows",
    "region_events": "platform data (regions fail over for every tenant): no tenant column, no tenant SQL",
    "region_lag": "platform data: replication lag between regions, no tenant column",
    "routes": "platform data: the routing table of client geographies, no tenant column",
}


def test_every_merging_key_starts_with_the_tenant(open_store) -> None:
    """A table that replaces, aggregates, collapses or sums rows by key is keyed by tenant first: a
    new table without it fails here until it is given the tenant or a reason above."""
    store, _ = open_store(None)
    keys = dict(store.query("SELECT name, sorting_key FROM system.tables WHERE database = currentDatabase() "
                            "AND engine LIKE '%MergeTree' AND engine != 'MergeTree'").rows)
    assert {"otel_traces", "bottlenecks", "otel_red_1m", "metric_points"} <= keys.keys()
    unled = {table for table, key in keys.items() if key.split(",")[0] not in ("tenant", "Tenant")}
    assert unled == NOT_LED_BY_TENANT.keys(), {table: keys[table] for table in unled}
