"""Tenant from the topic, without a broker: the decode paths of metric/1 and OTLP records."""

from __future__ import annotations

from core.settings import Settings
from core.kafka.topics import pipeline_topics, tenant_of_topic
from schemas.events import EventDecoder, MetricPoint, encode
from schemas.otlp import metric_rows
from streams.metrics_pipeline import Record, decode_batch, topic_tenants
from streams.otlp_pipeline import claim_for_topic
from tests.test_otlp_path import gauge_request

T0 = 1_767_225_600.0
ON = Settings(kafka_bootstrap="127.0.0.1:1", tenant_topics=True)
OFF = Settings(kafka_bootstrap="127.0.0.1:1")


def unchanged(point: MetricPoint) -> MetricPoint:
    """No personal data here: the points pass the policy as they are."""
    return point


def record(topic: str, tenant: str, offset: int = 0) -> Record:
    point = MetricPoint(T0, tenant, "eu-west-1", "api", "latency_ms", 1.0)
    return Record(topic, 0, offset, point.series_key.encode(), encode(point))


def decode(settings: Settings, records: list[Record]) -> tuple[list[str], list[str]]:
    """(tenants of the points kept, reasons of the dead letters)."""
    outcome = decode_batch(EventDecoder(MetricPoint), records, T0, 3600.0, topic_tenants(settings), redact=unchanged)
    return [p.tenant for points in outcome.points.values() for p in points], [d.reason for d in outcome.dead_letters]


def test_a_record_belongs_to_its_topics_tenant() -> None:
    kept, dead = decode(ON, [record("acme.metrics", "acme"), record("acme.metrics", "beta", 1),
                             record("metrics", "acme", 2), record("Not-a-tenant.metrics", "acme", 3)])
    assert kept == ["acme"]
    assert dead == ["tenant mismatch: payload says 'beta', topic belongs to 'acme'",
                    "tenant mismatch: topic 'metrics' belongs to no tenant",
                    "tenant mismatch: topic 'Not-a-tenant.metrics' belongs to no tenant"]


def test_without_tenant_topics_the_payload_is_trusted() -> None:
    assert decode(OFF, [record("metrics", "beta"), record("acme.metrics", "beta", 1)]) == (["beta", "beta"], [])
    assert tenant_of_topic(OFF, "acme.metrics") is None


def test_records_keyed_otherwise_go_back_to_their_own_topic() -> None:
    stray = record("acme.metrics", "acme")
    outcome = decode_batch(EventDecoder(MetricPoint), [Record(stray.topic, 0, 0, b"other", stray.value)], T0, 3600.0,
                           topic_tenants(ON), redact=unchanged)
    assert outcome.rekeyed == [("acme.metrics", stray.key, stray.value)]


def test_otlp_resources_take_the_topics_tenant_or_are_refused() -> None:
    unnamed = gauge_request("acme", [1.0], T0)
    del unnamed.resource_metrics[0].resource.attributes[1]
    rows = metric_rows(unnamed).gauge
    assert claim_for_topic(rows, "acme.otlp_metrics", topic_tenants(ON)) is None
    assert rows[0]["ResourceAttributes"]["tenant"] == "acme"
    forged = gauge_request("beta", [1.0], T0)
    assert claim_for_topic(metric_rows(forged).gauge, "acme.otlp_metrics", topic_tenants(ON)) == \
        "tenant mismatch: payload says 'beta', topic belongs to 'acme'"
    via_m1 = metric_rows(unnamed).gauge
    via_m1[0]["ResourceAttributes"]["m1.tenant"] = "beta"  # the other attribute a tenant may hide in
    assert claim_for_topic(via_m1, "acme.otlp_metrics", topic_tenants(ON)).startswith("tenant mismatch")


def test_with_tenant_topics_the_shared_input_topics_are_not_created() -> None:
    assert {"metrics", "otlp_spans", "otlp_metrics"} <= set(pipeline_topics(OFF))
    assert not {"metrics", "otlp_spans", "otlp_metrics"} & set(pipeline_topics(ON))
