"""The span record the analysis works on, and how to build it from ``otel_traces`` rows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Span:
    """One finished span; times in epoch nanoseconds, ``parent_span_id`` empty for a root."""

    trace_id: str
    span_id: str
    parent_span_id: str
    service: str
    name: str
    start_ns: int
    end_ns: int
    status: str = "Unset"  # Unset | Ok | Error, as in otel_traces.StatusCode
    kind: str = "Internal"  # Server | Client | Internal | Producer | Consumer | Unspecified
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def operation(self) -> tuple[str, str]:
        """(service, span name): the unit bottlenecks are reported in."""
        return self.service, self.name

    @property
    def is_error(self) -> bool:
        return self.status == "Error"


def span_from_row(row: Mapping[str, Any]) -> Span:
    """A ``Span`` from an ``otel_traces`` row (as produced by ``schemas.otlp.span_rows``)."""
    start = int(row["Timestamp"])
    return Span(
        trace_id=row["TraceId"],
        span_id=row["SpanId"],
        parent_span_id=row["ParentSpanId"],
        service=row["ServiceName"],
        name=row["SpanName"],
        start_ns=start,
        end_ns=start + int(row["Duration"]),
        status=row["StatusCode"],
        kind=row["SpanKind"],
        attributes=dict(row["SpanAttributes"]),
    )


def group_traces(spans: Iterable[Span]) -> dict[str, list[Span]]:
    """Spans grouped by trace id; a span id seen twice in a trace (Kafka replay) is kept once."""
    traces: dict[str, dict[str, Span]] = defaultdict(dict)
    for span in spans:
        traces[span.trace_id].setdefault(span.span_id, span)
    return {trace_id: list(by_id.values()) for trace_id, by_id in traces.items()}
