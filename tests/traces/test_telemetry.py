"""Self-instrumentation against a real OTLP/HTTP receiver on 127.0.0.1, and W3C context in Kafka headers."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from opentelemetry import trace

from core import telemetry
from tests.otlp_receiver import OtlpReceiver


@pytest.fixture
def otel_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A clean OTEL_* environment; the provider is shut down afterwards."""
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    yield monkeypatch
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    telemetry.setup_tracing()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver().start()
    yield server
    server.stop()


def point_at(env: pytest.MonkeyPatch, receiver: OtlpReceiver) -> None:
    env.setenv("OTEL_TRACES_EXPORTER", "otlp")
    env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    env.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    env.setenv("OTEL_SERVICE_NAME", "m1-test")
    env.setenv("OTEL_RESOURCE_ATTRIBUTES", "tenant=acme,cloud.region=eu-west-1")


def test_spans_reach_the_receiver_with_resource(otel_env, receiver) -> None:
    point_at(otel_env, receiver)
    provider = telemetry.setup_tracing()
    with telemetry.tracer().start_as_current_span("batch"):
        for i in range(4):
            with telemetry.tracer().start_as_current_span(f"score-{i}"):
                pass
    assert provider.force_flush(5_000)
    assert sorted(receiver.span_names) == ["batch", "score-0", "score-1", "score-2", "score-3"]
    resource = {kv.key: kv.value.string_value for kv in receiver.requests[0].resource_spans[0].resource.attributes}
    assert resource["service.name"] == "m1-test" and resource["tenant"] == "acme"
    assert telemetry.export_stats() == telemetry.ExportStats(batches_ok=1, spans_ok=5)


def test_receiver_outage_is_counted_then_recovers(otel_env, receiver) -> None:
    point_at(otel_env, receiver)
    provider = telemetry.setup_tracing()
    receiver.stop()
    with telemetry.tracer().start_as_current_span("lost"):
        pass
    provider.force_flush(5_000)
    assert telemetry.export_stats().spans_failed == 1
    receiver.start()
    with telemetry.tracer().start_as_current_span("delivered"):
        pass
    assert provider.force_flush(5_000)
    assert receiver.span_names == ["delivered"]
    stats = telemetry.export_stats()
    assert (stats.spans_ok, stats.spans_failed, stats.success_rate) == (1, 1, 0.5)


def test_disabled_sdk_gives_no_provider_and_no_op_spans(otel_env) -> None:
    otel_env.setenv("OTEL_SDK_DISABLED", "true")
    assert telemetry.setup_tracing() is None
    with telemetry.tracer().start_as_current_span("x") as span:
        assert not span.is_recording()


def test_exporter_none_and_bad_settings(otel_env) -> None:
    otel_env.setenv("OTEL_TRACES_EXPORTER", "none")
    provider = telemetry.setup_tracing()
    with telemetry.tracer().start_as_current_span("kept local") as span:
        assert span.is_recording()
    assert provider.force_flush(1_000) and telemetry.export_stats() == telemetry.ExportStats()
    otel_env.setenv("OTEL_TRACES_EXPORTER", "otlp")
    otel_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="http/json"):
        telemetry.setup_tracing()
    otel_env.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ValueError, match="zipkin"):
        telemetry.setup_tracing()


def test_sampler_follows_env_with_spec_default(otel_env) -> None:
    otel_env.setenv("OTEL_TRACES_EXPORTER", "none")
    assert "ParentBased{root:AlwaysOnSampler" in telemetry.setup_tracing().sampler.get_description()
    otel_env.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    otel_env.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    assert "TraceIdRatioBased{0.25}" in telemetry.setup_tracing().sampler.get_description()


def test_w3c_context_round_trips_through_kafka_headers(otel_env) -> None:
    otel_env.setenv("OTEL_TRACES_EXPORTER", "none")
    telemetry.setup_tracing()
    with telemetry.tracer().start_as_current_span("produce") as producer:
        headers = telemetry.inject_headers([("content-type", b"application/x-protobuf")])
        telemetry.inject_headers(headers)  # injecting again replaces, never duplicates
    assert [k for k, _ in headers].count("traceparent") == 1
    assert headers[0] == ("content-type", b"application/x-protobuf")
    sent = producer.get_span_context()
    context = telemetry.extract_context(tuple(headers))
    with telemetry.tracer().start_as_current_span("consume", context=context) as consumer:
        assert consumer.get_span_context().trace_id == sent.trace_id
        assert consumer.parent.span_id == sent.span_id
    assert trace.get_current_span(telemetry.extract_context([])).get_span_context().is_valid is False
