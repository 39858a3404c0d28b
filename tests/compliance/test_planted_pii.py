"""Personal data planted in every input path of a real worker (real broker, real engine) is found
nowhere in clear: not in any column of any table, not in any topic the pipeline writes. And it
did arrive, in the form the default policy gives it (pseudonym, redaction mark or ciphertext), so
a path that dropped the records would fail here too.

Paths: metric/1 labels (keyed by their clear series key, so the worker re-keys them), OTLP spans
and metrics (protobuf), audit/1 events, and malformed records of the metrics, OTLP and audit
topics (their raw bytes become dead letters).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from compliance.pseudonym import Pseudonymiser
from compliance.subject_keys import SubjectKeys, pii_secret
from core.kafka.security import client_kwargs
from m1.query_client import QueryError, api_call, run_query
import schemas
from core.settings import Settings
from schemas.events import AuditEvent, MetricPoint, encode
from tests.helpers import add_tenant, isolated_settings, produce, scalar, start_worker, wait_for

TENANT = "acme"
#: One value of every class the policy names, each unique enough to be searched for.
PLANTED = {
    "email": "planted.alice@example.com",
    "ipv4": "203.0.113.77",
    "ipv6": "2001:db8:85a3::8a2e:370:7334",
    "phone": "+1-202-555-0147",
    "card": "4111111111111111",
    "ssn": "123-45-6789",
    "bearer": "Bearer plantedBearer0123456789",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwbGFudGVkIn0.cGxhbnRlZC1zaWduYXR1cmU",
    "cloud_key": "AKIAPLANTED123456789",
    "phi": "planted-diagnosis-hypertension",
}
#: What must never be seen in clear (for a bearer token: the token itself).
NEEDLES = {**PLANTED, "bearer": "plantedBearer0123456789"}
P = PLANTED


def attrs(values: dict[str, str]) -> list[KeyValue]:
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in values.items()]


# ---------------------------------------------------------------------- what goes in

LABELS = {"user": P["email"], "src": P["ipv4"], "src6": P["ipv6"], "phone": P["phone"], "card": P["card"],
          "ssn": P["ssn"], "auth": P["bearer"], "jwt": P["jwt"], "aws": P["cloud_key"], "diagnosis": P["phi"]}


def metric_records(now: float) -> list[tuple[bytes, bytes]]:
    """A load series with every class in its labels, keyed by its clear series key; a spike at the end."""
    values = [100.0 + (i % 5) for i in range(48)] + [100_000.0]
    points = [MetricPoint(now - 600 + 10 * i, TENANT, "eu-west-1", "shop", "requests_per_s", v, LABELS)
              for i, v in enumerate(values)]
    return [(p.series_key.encode(), encode(p)) for p in points]


def span_request(start_ns: int, trace_id: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.extend(attrs({"service.name": "checkout", "tenant": TENANT, "host.ip": P["ipv4"]}))
    span = resource.scope_spans.add().spans.add()
    span.trace_id, span.span_id = trace_id, bytes.fromhex("00f067aa0ba902b7")
    span.name = f"GET /users/{P['email']}"
    span.start_time_unix_nano, span.end_time_unix_nano = start_ns, start_ns + 5_000_000
    span.status.message = f"failed for {P['phone']}"
    span.attributes.extend(attrs({
        "enduser.id": P["email"], "client.address": P["ipv4"], "net.peer.ip6": P["ipv6"], "contact": P["phone"],
        "payment.card": P["card"], "ssn": P["ssn"], "http.request.header.authorization": P["bearer"],
        "auth.jwt": P["jwt"], "aws.key": P["cloud_key"], "patient.diagnosis": P["phi"],
        "db.statement": f"SELECT * FROM users WHERE email = '{P['email']}'"}))
    event = span.events.add()
    event.name, event.time_unix_nano = f"lookup {P['ssn']}", start_ns + 1000
    event.attributes.extend(attrs({"note": f"card {P['card']}"}))
    return request


def gauge_request(time_ns: int) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    resource = request.resource_metrics.add()
    resource.resource.attributes.extend(attrs({"service.name": "checkout", "tenant": TENANT, "host.ip": P["ipv4"]}))
    metric = resource.scope_metrics.add().metrics.add()
    metric.name = "queue.depth"
    point = metric.gauge.data_points.add()
    point.time_unix_nano, point.as_double = time_ns, 3.0
    point.attributes.extend(attrs({"user.email": P["email"], "client.address": P["ipv4"], "src6": P["ipv6"],
                                   "phone": P["phone"], "card": P["card"], "ssn": P["ssn"], "auth": P["bearer"],
                                   "jwt": P["jwt"], "aws": P["cloud_key"], "patient.diagnosis": P["phi"]}))
    return request


def audit_record(now: float) -> bytes:
    return encode(AuditEvent(ts=now, tenant=TENANT, region="eu-west-1", actor=P["email"], action="record.read",
                             resource=f"patient/{P['ssn']}", outcome="success",
                             details={"user_id": "u-42", "client_ip": P["ipv4"], "ip6": P["ipv6"], "phone": P["phone"],
                                      "card": P["card"], "ssn": P["ssn"], "auth": P["bearer"], "jwt": P["jwt"],
                                      "aws": P["cloud_key"], "diagnosis": P["phi"]}))


def malformed_json() -> list[bytes]:
    """A truncated metric/1 record and one of the wrong type, both carrying every class."""
    body = json.dumps({"schema": "metric/1", "ts": time.time(), "tenant": TENANT, "region": "eu-west-1",
                       "service": "shop", "metric": "m", "value": "high", "labels": LABELS}).encode()
    return [body, body[:-12]]  # the second cut off inside the diagnosis


# ---------------------------------------------------------------------- what comes out


def tables() -> list[str]:
    """Every table the store creates (the API's SQL may not read system.tables): its DDL's."""
    ddl = " ".join(path.read_text() for path in (Path(schemas.__file__).parent / "ddl").glob("*.sql"))
    return sorted(set(re.findall(r"CREATE TABLE IF NOT EXISTS \{database\}\.(\w+)", ddl)))


def in_clear_in_table(settings: Settings, table: str) -> list[str]:
    """The planted classes found in clear in any column of ``table``: searched by the engine in each
    row's bytes (binary columns included), and in the rows as the API answers them (all but
    aggregate states, which the engine searched)."""
    needles = "[" + ", ".join(f"'{n}'" for n in NEEDLES.values()) + "]"
    found = run_query(settings, f"SELECT DISTINCT arrayJoin(arrayFilter(n -> position(row, n) > 0, {needles})) "
                                f"FROM (SELECT formatRow('TabSeparated', *) AS row FROM {table})").rows
    try:
        answered = json.dumps([list(r) for r in run_query(settings, f"SELECT * FROM {table}").rows], default=str,
                              ensure_ascii=False)
    except QueryError as exc:
        assert "AggregateFunction" in str(exc), exc
        answered = ""
    return sorted({name for name, needle in NEEDLES.items() if (needle,) in found} | set(in_clear(answered)))


def topic_bytes(settings: Settings, topics: list[str]) -> dict[str, bytes]:
    """Every key, value and header of every record of ``topics``, per topic."""

    async def run() -> dict[str, bytes]:
        consumer = AIOKafkaConsumer(*topics, bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest", **client_kwargs(settings))
        await consumer.start()
        out = {t: bytearray() for t in topics}
        try:
            async with asyncio.timeout(60):
                while {tp.topic for tp in consumer.assignment()} != set(topics):  # every partition, without a group
                    await consumer.getmany(timeout_ms=200)
                partitions = list(consumer.assignment())
                ends = await consumer.end_offsets(partitions)
                await consumer.seek_to_beginning(*partitions)
                pending = {tp for tp in partitions if ends[tp] > 0}
                while pending:
                    for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                        for r in records:
                            out[tp.topic] += (r.key or b"") + b"\0" + (r.value or b"") + b"\0"
                            out[tp.topic] += b"".join(k.encode() + v for k, v in r.headers)
                    pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
            return {t: bytes(b) for t, b in out.items()}
        finally:
            await consumer.stop()

    return asyncio.run(run())


async def all_topics(settings: Settings) -> list[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, **client_kwargs(settings))
    await consumer.start()
    try:
        return sorted(await consumer.topics())
    finally:
        await consumer.stop()


def in_clear(text: str | bytes) -> list[str]:
    """The planted classes whose value ``text`` holds in clear."""
    return [name for name, needle in NEEDLES.items()
            if (needle.encode() if isinstance(text, bytes) else needle) in text]


# ---------------------------------------------------------------------- the test


@pytest.fixture
def worker(tmp_path: Path, kafka_bootstrap: str):
    run = uuid.uuid4().hex[:8]
    settings = isolated_settings(tmp_path, kafka_bootstrap, detector="zscore", topic_audit=f"audit-{run}",
                                 topic_audit_checkpoints=f"audit-heads-{run}", audit_checkpoint_seconds=1.0,
                                 forecast_every=6, bottleneck_seconds=1.0)
    add_tenant(settings, TENANT)
    process = start_worker(settings)
    yield settings
    process.stop()


@pytest.mark.kafka
def test_planted_personal_data_is_nowhere_in_clear(worker: Settings) -> None:
    settings, now = worker, time.time()
    pseudonym = Pseudonymiser(pii_secret(settings))  # the worker's secret file (made on its first use)
    ps = lambda value: pseudonym(TENANT, value)  # noqa: E731
    subject_ref = SubjectKeys(None, pii_secret(settings)).subject_ref  # type: ignore[arg-type]
    trace_id = uuid.uuid4().bytes
    spans = span_request(int((now - 120) * 1e9), trace_id).SerializeToString()
    gauge = gauge_request(int((now - 60) * 1e9)).SerializeToString()

    metrics = metric_records(now)
    produce(settings, metrics)
    produce(settings, [(None, value) for value in malformed_json()])
    produce(settings, [(None, spans), (None, spans + b"\xff")], topic=settings.topic_otlp_spans)  # the 2nd: malformed
    produce(settings, [(None, gauge)], topic=settings.topic_otlp_metrics)
    produce(settings, [(TENANT.encode(), audit_record(now)), (TENANT.encode(), audit_record(now)[:-30])],
            topic=settings.topic_audit)

    # ---- everything arrived, in the form the default policy gives it
    expected_labels = {"user": ps(P["email"]), "src": ps(P["ipv4"]), "src6": ps(P["ipv6"]), "phone": ps(P["phone"]),
                       "card": "redacted:card", "ssn": ps(P["ssn"]), "auth": "redacted:bearer", "jwt": "redacted:jwt",
                       "aws": "redacted:cloud_key", "diagnosis": ps(P["phi"])}
    series = MetricPoint(now, TENANT, "eu-west-1", "shop", "requests_per_s", 0.0, expected_labels).series_key
    count = lambda sql: int(scalar(settings, sql))  # noqa: E731
    assert wait_for(lambda: count(f"SELECT count() FROM metric_points FINAL WHERE series = '{series}'") == 49, 120), \
        run_query(settings, "SELECT DISTINCT series FROM metric_points").rows
    assert wait_for(lambda: count("SELECT count() FROM otel_traces") >= 1 and count("SELECT count() FROM otel_metrics_gauge") >= 1)
    assert wait_for(lambda: count(f"SELECT count() FROM audit_log WHERE tenant = '{TENANT}' AND action = 'record.read'") == 1)
    # 2 metric/1 and 1 span request (audit/1 dead letters go to the topic only)
    assert wait_for(lambda: count("SELECT count() FROM dead_letters") >= 3), run_query(settings, "SELECT reason FROM dead_letters").rows
    assert wait_for(lambda: count(f"SELECT count() FROM anomalies WHERE series = '{series}'") >= 1)
    assert wait_for(lambda: count(f"SELECT count() FROM forecasts WHERE series = '{series}'") >= 1)
    assert wait_for(lambda: count(f"SELECT count() FROM model_state WHERE series = '{series}'") >= 1, 60)

    span = run_query(settings, "SELECT SpanName, StatusMessage, SpanAttributes, ResourceAttributes, Events.Name "
                               f"FROM otel_traces WHERE TraceId = '{trace_id.hex()}'").rows[0]
    assert span[0] == f"GET /users/{ps(P['email'])}" and span[1] == f"failed for {ps(P['phone'])}"
    attributes = span[2]
    assert attributes["enduser.id"] == ps(P["email"]) and attributes["client.address"] == ps(P["ipv4"])
    assert attributes["http.request.header.authorization"] == "redacted:secret" and attributes["payment.card"] == "redacted:card"
    assert attributes["patient.diagnosis"].startswith(f"enc:v1:{subject_ref(TENANT, P['email'])}:")  # PHI, recoverable
    assert attributes["db.statement"] == ps(f"SELECT * FROM users WHERE email = '{P['email']}'")
    assert span[3]["host.ip"] == ps(P["ipv4"]) and span[3]["tenant"] == TENANT and span[4] == [f"lookup {ps(P['ssn'])}"]
    gauge_attributes = run_query(settings, "SELECT Attributes FROM otel_metrics_gauge WHERE MetricName = 'queue.depth'").rows[0][0]
    assert gauge_attributes["user.email"] == ps(P["email"]) and gauge_attributes["patient.diagnosis"] == ps(P["phi"])
    assert count(f"SELECT count() FROM metric_points WHERE metric = 'queue.depth' AND labels['card'] = 'redacted:card'") == 1
    event = json.loads(str(scalar(settings, f"SELECT event FROM audit_log WHERE tenant = '{TENANT}' AND action = 'record.read'")))
    assert event["actor"] == ps(P["email"]) and event["resource"] == f"patient/{ps(P['ssn'])}"
    assert event["details"]["client_ip"] == ps(P["ipv4"]) and event["details"]["jwt"] == "redacted:jwt"
    assert event["details"]["diagnosis"].startswith(f"enc:v1:{subject_ref(TENANT, 'u-42')}:")
    assert wait_for(lambda: api_call(settings, "GET", f"/v1/tenants/{TENANT}/audit/verify")["heads"] >= 1, 30)
    verified = api_call(settings, "GET", f"/v1/tenants/{TENANT}/audit/verify")
    assert verified["intact"] and verified["events"] >= 1, verified  # the chain holds the redacted event, and verifies
    letters = [base64.b64decode(p) for (p,) in run_query(settings, "SELECT base64Encode(payload) FROM dead_letters").rows]
    by_name_and_pattern = (b"redacted:phi", b"redacted:direct_identifier", b"redacted:ipv4", b"redacted:card")
    assert sum(all(mark in p for mark in by_name_and_pattern) for p in letters) >= 2, letters  # the JSON ones
    assert not any(b"planted-diag" in p for p in letters)  # nor a part of one cut off by a truncated record
    assert any(b"patient.diagnosis" in p and b"redac" in p for p in letters)  # the protobuf one: masked in place

    remotes = {r for (r,) in run_query(settings, "SELECT DISTINCT remote FROM access_log").rows}
    assert remotes and all(r.startswith("pii:") for r in remotes), remotes  # our own requests' address, too

    # ---- and nowhere in clear: every column of every table
    found = {table: in_clear_in_table(settings, table) for table in tables() if table != "subject_keys"}
    assert {t: f for t, f in found.items() if f} == {}
    assert {"metric_points", "otel_traces", "otel_metrics_gauge", "audit_log", "dead_letters", "anomalies",
            "forecasts", "model_state"} <= set(found)

    # ---- every topic the pipeline writes (the inputs hold the planted records themselves)
    inputs = {settings.topic_metrics, settings.topic_otlp_spans, settings.topic_otlp_metrics, settings.topic_audit}
    outputs = [t for t in asyncio.run(all_topics(settings)) if t not in inputs and not t.startswith("__")]
    content = topic_bytes(settings, outputs)
    assert {t: in_clear(b) for t, b in content.items() if in_clear(b)} == {}
    for topic in (settings.topic_dead_letter, settings.topic_anomalies, settings.topic_forecasts,
                  settings.topic_recommendations, settings.topic_audit_checkpoints):
        assert content[topic], f"nothing reached {topic}: the scan would prove nothing"
    letters = [json.loads(line) for line in content[settings.topic_dead_letter].split(b"\0") if line.startswith(b"{")]
    assert len(letters) >= 4 and any(d["reason"].startswith("audit: ") for d in letters)
    assert series.encode() in content[settings.topic_anomalies] and series.encode() in content[settings.topic_forecasts]
    # the worker re-keyed the metric records (keyed by their clear series): what it wrote back is redacted
    rewritten = topic_bytes(settings, [settings.topic_metrics])[settings.topic_metrics]
    assert rewritten.count(series.encode()) >= len(metrics)
    produced = [key + value for key, value in metrics] + malformed_json()
    assert rewritten.count(P["email"].encode()) == sum(r.count(P["email"].encode()) for r in produced)
