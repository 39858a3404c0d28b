"""The OTLP paths and self-tracing end to end: real broker, real worker processes, real chdb store.

Two workers: ``proto`` reads its OTLP topics as ``otlp_proto`` (the default); ``json`` reads
``otlp_json`` and traces itself to a real OTLP/HTTP receiver on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from prometheus_client.parser import text_string_to_metric_families

from core.kafka.producer import make_producer
from m1.query_client import worker_url
from core.settings import Settings
from m1.worker_process import WorkerProcess
from schemas.events import MetricPoint, encode
from schemas.otlp import decode_traces, span_rows
from tests.helpers import add_tenant, isolated_settings, read_json, scalar, start_worker, wait_for
from tests.otlp_receiver import OtlpReceiver
from traces.cli import bottlenecks_from_worker
from traces.generator import COMPONENTS, ShopConfig, generate_request, generate_spans, to_otlp_json, to_request

MINUTE_NS = 60_000_000_000


def otlp_settings(home: Path, bootstrap: str, **overrides: object) -> Settings:
    """isolated_settings with the cheap detector and a bottleneck job every second."""
    return isolated_settings(home, bootstrap, detector="zscore", bottleneck_seconds=1.0, **overrides)


def send(settings: Settings, topic: str, values: list[bytes], headers: list[tuple[str, bytes]] | None = None,
         key: bytes | None = None) -> None:
    """Send ``values`` (with ``headers``); a ``key`` keeps them in one partition, in order."""

    async def run() -> None:
        producer = make_producer(settings)
        await producer.start()
        try:
            futures = [await producer.send(topic, value, key=key, headers=headers) for value in values]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(run())


@pytest.fixture(scope="module")
def proto(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Settings]:
    # The RED anomaly test stamps its spans a day ahead (after every other test's): allow two.
    settings = otlp_settings(tmp_path_factory.mktemp("otlp-proto"), kafka_bootstrap, max_future_seconds=2 * 86_400)
    worker = start_worker(settings)
    yield settings
    worker.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, receiver: OtlpReceiver) -> Iterator[Settings]:
    """A worker reading otlp_json, exporting its own spans to the receiver every 200 ms."""
    settings = otlp_settings(tmp_path_factory.mktemp("otlp-json"), kafka_bootstrap, otlp_encoding="otlp_json")
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_SERVICE_NAME": "m1-worker-test"}
    saved = {k: os.environ.get(k) for k in otel}
    os.environ.update(otel)
    try:
        worker = WorkerProcess(settings, settings.home / "worker.log").start()
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    yield settings
    worker.stop()


def spans_of(settings: Settings, trace_ids: set[str]) -> int:
    ids = ",".join(f"'{t}'" for t in trace_ids)
    return int(scalar(settings, f"SELECT count() FROM otel_traces FINAL WHERE TraceId IN ({ids})"))


def chunks(request_spans: list, size: int, tenant: str) -> list[bytes]:
    return [to_request(request_spans[i:i + size], {"tenant": tenant}).SerializeToString()
            for i in range(0, len(request_spans), size)]


def test_proto_spans_are_stored_exactly_and_rolled_up(proto: Settings) -> None:
    start = (time.time_ns() - 3 * 3600 * 10**9) // MINUTE_NS * MINUTE_NS  # a window no other test uses
    spans = generate_spans(40, ShopConfig(auth_error_rate=0.3), seed=11, start_ns=start, interval_ms=1500)
    send(proto, proto.topic_otlp_spans, chunks(spans, 170, "red"))
    trace_ids = {s.trace_id for s in spans}
    assert wait_for(lambda: spans_of(proto, trace_ids) >= len(spans))
    assert spans_of(proto, trace_ids) == len(spans)
    minutes = f"Minute BETWEEN fromUnixTimestamp({start // 10**9}) AND fromUnixTimestamp({start // 10**9 + 3600})"
    red = run_rows(proto, f"SELECT ServiceName, SpanName, sum(Calls), sum(Errors) FROM otel_red_1m WHERE {minutes} "
                          "GROUP BY ServiceName, SpanName")
    calls = Counter(s.operation for s in spans)
    errors = Counter(s.operation for s in spans if s.is_error)
    assert {(s, n): (c, e) for s, n, c, e in red} == {op: (calls[op], errors[op]) for op in calls}
    assert sum(errors.values()) > 0


def run_rows(settings: Settings, sql: str) -> list[tuple]:
    from m1.query_client import run_query

    return run_query(settings, sql).rows


def test_json_spans_are_stored_exactly(traced: Settings) -> None:
    request = generate_request(25, ShopConfig(tenant="json"), seed=12)
    rows = span_rows(request)
    send(traced, traced.topic_otlp_spans, [to_otlp_json(request)])
    trace_ids = {r["TraceId"] for r in rows}
    assert wait_for(lambda: spans_of(traced, trace_ids) >= len(rows))
    assert spans_of(traced, trace_ids) == len(rows)
    back = run_rows(traced, f"SELECT SpanId, Duration, StatusCode FROM otel_traces FINAL WHERE TraceId IN "
                            f"({','.join(repr(t) for t in trace_ids)})")
    assert sorted(back) == sorted((r["SpanId"], r["Duration"], r["StatusCode"]) for r in rows)


def test_truncated_protobuf_is_dead_lettered_with_reason(proto: Settings) -> None:
    start = time.time_ns() - 5 * 3600 * 10**9
    good = generate_request(3, ShopConfig(tenant="trunc"), seed=13, start_ns=start).SerializeToString()
    bad = generate_request(3, ShopConfig(tenant="trunc"), seed=14, start_ns=start).SerializeToString()[:-9]
    big = generate_request(300, ShopConfig(tenant="trunc"), seed=16, start_ns=start).SerializeToString()[:-9]
    send(proto, proto.topic_otlp_spans, [good, bad, good[:1], big])  # a one-byte record: a lone field tag
    letters = read_json(proto, proto.topic_dead_letter, lambda got: len(got) >= 3)
    reasons = sorted(letter["reason"] for letter in letters)
    assert all(letter["topic"] == proto.topic_otlp_spans for letter in letters)
    [large] = [letter for letter in letters if letter["payload_bytes"] == len(big)]  # ~680 kB
    assert base64.b64decode(large["payload_b64"]) == big[: proto.max_payload_bytes]  # its head only
    assert any("truncated at byte" in r and "declares" in r for r in reasons), reasons
    assert any("truncated" in r for r in reasons if "declares" not in r), reasons
    trace_ids = {r["TraceId"] for r in span_rows(decode_traces(good))}
    assert wait_for(lambda: spans_of(proto, trace_ids) == len(span_rows(decode_traces(good))))
    stored = run_rows(proto, f"SELECT reason FROM dead_letters FINAL WHERE topic = '{proto.topic_otlp_spans}'")
    assert sorted(r[0] for r in stored) == reasons


def test_bottleneck_job_names_slow_component_and_flags_n_plus_one(proto: Settings) -> None:
    # cart's redis GET stretched 60x (~60 ms) outweighs bank-api (~40 ms); inventory makes 8 queries.
    config = ShopConfig(slow="cart", slow_factor=60.0, n_plus_one=8, tenant="shop")
    request = generate_request(30, config, seed=15, start_ns=time.time_ns() - 30 * 10**9)
    send(proto, proto.topic_otlp_spans, [request.SerializeToString()])

    def latest() -> list[tuple]:
        return run_rows(proto, "SELECT kind, rank, service, operation, rule, traces FROM bottlenecks FINAL "
                               "WHERE entry_service = 'frontend' AND analyzed_at = "
                               "(SELECT max(analyzed_at) FROM bottlenecks WHERE entry_service = 'frontend') "
                               "ORDER BY kind, rank")

    assert wait_for(lambda: any(r[5] >= 30 for r in latest()), timeout=30)
    rows = latest()
    top = next(r for r in rows if r[0] == "bottleneck" and r[1] == 1)
    assert (top[2], top[3]) == COMPONENTS["cart"]
    assert ("inventory", "SELECT stock", "n_plus_one") in {(r[2], r[3], r[4]) for r in rows if r[0] == "suggestion"}
    reports = read_json(proto, proto.topic_bottlenecks, lambda got: len(got) >= 1)
    assert reports[0]["entry_service"] == "frontend" and reports[0]["bottlenecks"]
    # On demand, as `m1 traces bottlenecks --tenant shop` asks a running worker: traces that touched inventory.
    add_tenant(proto, "shop")  # the API serves registered tenants only
    report = bottlenecks_from_worker(proto, "shop", "inventory", 900, limit=3)
    assert report.traces == 30 and len(report.bottlenecks) == 3
    assert (report.bottlenecks[0].service, report.bottlenecks[0].operation) == COMPONENTS["cart"]
    assert "n_plus_one" in {s.rule for s in report.suggestions}


def gauge_request(tenant: str, values: list[float], start_s: float) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.extend([KeyValue(key="service.name", value=AnyValue(string_value="api")),
                                   KeyValue(key="tenant", value=AnyValue(string_value=tenant)),
                                   KeyValue(key="cloud.region", value=AnyValue(string_value="eu-west-1"))])
    metric = rm.scope_metrics.add().metrics.add(name="queue.depth", unit="1")
    for i, value in enumerate(values):
        metric.gauge.data_points.add(time_unix_nano=int((start_s + 10 * i) * 1e9), as_double=value,
                                     attributes=[KeyValue(key="host.name", value=AnyValue(string_value="h1"))])
    return request


def test_gauge_metrics_land_in_otel_tables_and_metric_points(proto: Settings) -> None:
    tenant = f"g-{uuid.uuid4().hex[:6]}"
    values = [100.0 + (i * 7) % 13 for i in range(59)] + [500.0]  # a spike after the detector's warm-up
    start = time.time() - 3600
    send(proto, proto.topic_otlp_metrics, [gauge_request(tenant, values[:30], start).SerializeToString(),
                                           gauge_request(tenant, values[30:], start + 300).SerializeToString()],
         key=tenant.encode())
    where = f"tenant = '{tenant}'"
    assert wait_for(lambda: int(scalar(proto, f"SELECT count() FROM metric_points FINAL WHERE {where}")) >= 60)
    assert int(scalar(proto, f"SELECT count() FROM metric_points FINAL WHERE {where}")) == 60
    assert int(scalar(proto, "SELECT count() FROM otel_metrics_gauge FINAL "
                             f"WHERE ResourceAttributes['tenant'] = '{tenant}'")) == 60
    series = scalar(proto, f"SELECT any(series) FROM metric_points WHERE {where}")
    assert series == f"{tenant}|eu-west-1|api|queue.depth|host.name=h1"
    top = run_rows(proto, f"SELECT value, severity FROM anomalies FINAL WHERE {where} ORDER BY score DESC LIMIT 1")
    assert top == [(500.0, "critical")]


def test_slow_minute_of_an_operation_becomes_a_duration_anomaly(proto: Settings) -> None:
    # Event time drives the RED minutes, so this test's spans lie after every other test's (a day
    # ahead; the bottleneck window ignores them), all in one partition so they arrive in order.
    start = (time.time_ns() + 24 * 3600 * 10**9) // MINUTE_NS * MINUTE_NS
    normal = generate_spans(3 * 36, ShopConfig(slow=None, n_plus_one=0), seed=16, start_ns=start, interval_ms=20_000)
    spike_start = start + 36 * MINUTE_NS
    spike = generate_spans(3, ShopConfig(slow="cart", slow_factor=40.0, n_plus_one=0), seed=17,
                           start_ns=spike_start, interval_ms=20_000)
    after = generate_spans(3 * 3, ShopConfig(slow=None, n_plus_one=0), seed=18,
                           start_ns=spike_start + MINUTE_NS, interval_ms=20_000)
    send(proto, proto.topic_otlp_spans, chunks(normal + spike + after, 400, "red-anomaly"), key=b"red-anomaly")
    series = "red-anomaly|unknown|cart|span.duration.p90_ms|operation=redis GET"
    where = f"series = '{series}'"
    assert wait_for(lambda: int(scalar(proto, f"SELECT count() FROM metric_points FINAL WHERE {where}")) >= 37)
    flagged = run_rows(proto, f"SELECT toUnixTimestamp(ts), value, severity FROM anomalies FINAL WHERE {where} "
                              "ORDER BY score DESC")
    assert flagged and flagged[0][0] == spike_start // 10**9, flagged
    assert flagged[0][1] > 20.0 and flagged[0][2] == "critical"  # p90 of redis GET in ms, normally ~1.3
    def is_spike(a: dict) -> bool:
        return a["series"] == series and a["ts"] == spike_start / 1e9

    published = read_json(proto, proto.topic_anomalies, lambda got: len(got) >= 1000 or is_spike(got[-1]), timeout=15.0)
    assert is_spike(published[-1])


STAGES = {"consume", "decode", "validate", "score", "produce", "sink"}


def test_worker_traces_every_stage_and_continues_the_producers_trace(traced: Settings, receiver: OtlpReceiver) -> None:
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    point = MetricPoint(time.time(), "traced", "eu-west-1", "api", "latency_ms", 12.0, {})
    records = [encode(point), b"{not json"]  # the invalid one makes the produce stage send a dead letter
    send(traced, traced.topic_metrics, records, headers=[("traceparent", f"00-{trace_id}-{parent_id}-01".encode())],
         key=point.series_key.encode())  # one partition: one batch

    def batch_spans() -> list:
        return [s for r in receiver.requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans
                if s.trace_id.hex() == trace_id]

    def metrics_batch() -> tuple:
        """The metrics agent's batch span and its children, once all stages arrived; other agents
        on the topic (forecasting) have their own batch spans in the same trace."""
        spans = batch_spans()
        for batch in spans:
            if batch.name == f"process {traced.topic_metrics}" and any(
                    a.key == "m1.agent" and a.value.string_value == "metrics" for a in batch.attributes):
                children = [s for s in spans if s.parent_span_id == batch.span_id]
                if {s.name for s in children} >= STAGES:
                    return batch, children
        return None, []

    assert wait_for(lambda: metrics_batch()[0] is not None, timeout=30)
    batch, stages = metrics_batch()
    assert batch.parent_span_id.hex() == parent_id  # the batch carried one context: it is the parent
    assert [(link.trace_id.hex(), link.span_id.hex()) for link in batch.links] == [(trace_id, parent_id)]
    attributes = {a.key: a.value for a in batch.attributes}
    assert attributes["m1.records"].int_value == 2 and attributes["m1.dead_letters"].int_value == 1
    assert attributes["m1.stored"].int_value == 1
    assert all(batch.start_time_unix_nano <= s.start_time_unix_nano <= s.end_time_unix_nano <= batch.end_time_unix_nano
               for s in stages)


def worker_metrics(settings: Settings) -> dict[str, float]:
    """The worker's Prometheus samples (``GET /v1/metrics``, platform-admin key), by name and labels."""
    request = urllib.request.Request(worker_url(settings) + "/v1/metrics",
                                     headers={"Authorization": f"Bearer {settings.api_key.get_secret_value()}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    return {f"{s.name}{sorted(s.labels.items())}": s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_otlp_batches_count_in_the_workers_metrics(proto: Settings) -> None:
    before = worker_metrics(proto)
    tenant = f"m-{uuid.uuid4().hex[:6]}"
    good = gauge_request(tenant, [1.0 + i % 3 for i in range(40)], time.time() - 600).SerializeToString()
    send(proto, proto.topic_otlp_metrics, [good, good[:-5]], key=tenant.encode())
    assert wait_for(lambda: int(scalar(proto, f"SELECT count() FROM metric_points FINAL WHERE tenant = '{tenant}'")) == 40)

    def grown(name: str) -> float:
        after = worker_metrics(proto)
        return sum(v - before.get(k, 0.0) for k, v in after.items() if k.startswith(name + "["))

    assert wait_for(lambda: grown("m1_points_stored_total") >= 40 and grown("m1_dead_letters_total") >= 1)
