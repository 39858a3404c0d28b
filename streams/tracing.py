"""Self-tracing of the agents: one span per processed batch, one child span per stage.

Span tree of one batch (``m1.stage`` names the stage; see docs/tracing.md)::

    process <topic>          CONSUMER; records, partitions, dead letters, anomalies, ...
      consume                Faust events -> records, trace context from Kafka headers
      decode                 bytes -> typed objects (msgspec / protobuf; schema checks included)
      validate               routing and semantic checks (keys, ids, points)
      score                  detectors
      sink                   ClickHouse inserts
      produce                dead letters, anomalies, re-keyed records to Kafka, until acked

A metrics batch read while the one before it is handled (a backlog) is decoded and validated
then, in a ``prepare <topic>`` span of its own (:func:`prepare_span`), and its ``process`` span
has the other stages.

W3C trace context in the records' headers (``traceparent``): every distinct context becomes
a link of the batch span; when the whole batch carries one context, it is also the parent,
so a single producer's trace continues through the pipeline. Tracers are no-ops unless
``core.telemetry`` set up a provider, so this costs next to nothing when tracing is off.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from operator import attrgetter
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind

from core.kafka.lean_records import ConsumedRecord
from core.telemetry import remote_span_contexts, tracer

T = TypeVar("T")
STAGES = ("consume", "decode", "validate", "score", "produce", "sink")


_HEADERS, _PARTITION, _MESSAGE = attrgetter("headers"), attrgetter("partition"), attrgetter("message")


def _messages(events: Sequence[Any]) -> Sequence[Any]:
    """The Kafka records of a batch: the batch consumer's as they are, a Faust event's message."""
    return events if not events or isinstance(events[0], ConsumedRecord) else list(map(_MESSAGE, events))


class BatchRecords(list):
    """The records of one batch (a list) that knows their partitions, the headers of those that have
    any, and their remote trace contexts once a span looked for them: the spans of one batch (metrics,
    forecast) extract them once."""

    def __init__(self) -> None:
        super().__init__()
        self.partitions: set[int] = set()
        self.headers: list[Sequence[tuple[str, bytes]]] = []
        self.remote: list[trace.SpanContext] | None = None

    def add(self, partition: int, records: Sequence[Any]) -> None:
        """Append ``records`` of ``partition``. Their headers are looked at now, just fetched: a later
        pass over a batch of tens of thousands of records, gone cold, costs several times more."""
        self += records
        self.partitions.add(partition)
        self.headers += filter(None, map(_HEADERS, records))


def _remote_and_partitions(events: Sequence[Any]) -> tuple[list[trace.SpanContext], list[str]]:
    """The distinct remote span contexts in a batch's headers and the partitions it came from."""
    if isinstance(events, BatchRecords):
        if events.remote is None:
            events.remote = remote_span_contexts(events.headers)
        return events.remote, sorted(map(str, events.partitions))
    messages = _messages(events)
    return remote_span_contexts(map(_HEADERS, messages)), sorted(map(str, set(map(_PARTITION, messages))))


@contextlib.contextmanager
def batch_span(topic: str, events: Sequence[Any], agent: str = "") -> Iterator[trace.Span]:
    """The span of one batch of Kafka events (Faust's or the batch consumer's) from ``topic``.

    ``agent`` (attribute ``m1.agent``) tells apart handlers that consume the same topic."""
    remote, partitions = _remote_and_partitions(events)  # map and attrgetter: a batch holds thousands
    # a root unless the batch has one remote parent (not a child of the span it is handled in)
    parent = trace.set_span_in_context(trace.NonRecordingSpan(remote[0]), Context()) if len(remote) == 1 else Context()
    attributes = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.batch.message_count": len(events),
        "m1.records": len(events),
        "messaging.destination.partition.ids": partitions,
    }
    if agent:
        attributes["m1.agent"] = agent
    with tracer("m1.streams").start_as_current_span(
        f"process {topic}", context=parent, kind=SpanKind.CONSUMER,
        links=[Link(c) for c in remote], attributes=attributes,
    ) as span:
        yield span


def prepare_span(topic: str, records: int, agent: str) -> contextlib.AbstractContextManager[trace.Span]:
    """The span of a batch's stages done before its ``process`` span, while the batch before it is
    handled (the metrics path decodes and validates the next batch meanwhile): a root of its own."""
    return tracer("m1.streams").start_as_current_span(f"prepare {topic}", attributes={"m1.agent": agent, "m1.records": records})


def stage(name: str, **attributes: Any) -> contextlib.AbstractContextManager[trace.Span]:
    """A child span for one pipeline stage (``name`` is one of ``STAGES`` or ``checkpoint``)."""
    return tracer("m1.streams").start_as_current_span(name, attributes={"m1.stage": name, **attributes})


def record_outcome(span: trace.Span, **counts: int) -> None:
    """Counts of what the batch produced, as ``m1.<name>`` attributes of its span."""
    if span.is_recording():
        span.set_attributes({f"m1.{name}": value for name, value in counts.items()})


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in the default executor, inside the caller's context (so its spans nest)."""
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(None, context.run, fn, *args)
