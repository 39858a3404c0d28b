"""The ``process <topic>`` spans of a batch (``streams.tracing.batch_span``): roots unless the batch
has one remote parent, linked to every remote context; the spans of one batch of the batch consumer
(metrics and forecast) scan its records' headers once."""

from __future__ import annotations

import pytest
from aiokafka import ConsumerRecord
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import core.telemetry
import streams.tracing
from core.telemetry import inject_headers, tracer
from streams.tracing import BatchRecords, batch_span


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(core.telemetry, "_provider", provider)  # what core.telemetry.tracer() hands out
    return exporter


def record(partition: int, offset: int, headers: tuple = ()) -> ConsumerRecord:
    return ConsumerRecord("metrics", partition, offset, 0, 0, b"k", b"v", None, 1, 1, headers)


def producer_headers() -> tuple[tuple[str, bytes], ...]:
    """The headers of a record sent inside a producer's span of its own."""
    with tracer("test-producer").start_as_current_span("send"):
        return tuple(inject_headers([]))


def test_the_spans_of_one_batch_scan_its_headers_once(exporter: InMemorySpanExporter,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = producer_headers(), producer_headers()
    events = BatchRecords()
    for partition, headers in ((2, first), (0, second), (2, ())):
        events.add(partition, [record(partition, len(events), headers)])
    scans = []
    scan = streams.tracing.remote_span_contexts
    monkeypatch.setattr(streams.tracing, "remote_span_contexts", lambda headers: scans.append(1) or scan(headers))
    with tracer("test").start_as_current_span("outer"):  # the handler's own context is not a parent
        for agent in ("metrics", "forecast"):
            with batch_span("metrics", events, agent=agent):
                pass
    spans = {s.attributes.get("m1.agent"): s for s in exporter.get_finished_spans() if s.name == "process metrics"}
    assert len(scans) == 1
    for span in spans.values():
        assert span.parent is None and len(span.links) == 2
        assert span.attributes["messaging.destination.partition.ids"] == ("0", "2")
    assert [link.context for link in spans["metrics"].links] == [link.context for link in spans["forecast"].links]


def test_a_batch_with_one_remote_context_is_its_child_and_a_plain_list_is_scanned(exporter: InMemorySpanExporter) -> None:
    headers = producer_headers()
    events = [record(1, 0, headers), record(1, 1, headers), record(3, 2)]
    with tracer("test").start_as_current_span("outer"):
        with batch_span("metrics", events):
            pass
    [span] = [s for s in exporter.get_finished_spans() if s.name == "process metrics"]
    assert span.parent is not None and span.parent.is_remote and len(span.links) == 1
    assert span.parent.span_id == span.links[0].context.span_id
    assert span.attributes["messaging.destination.partition.ids"] == ("1", "3")
