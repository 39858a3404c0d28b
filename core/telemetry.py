"""Self-instrumentation: OpenTelemetry tracing configured only by the standard ``OTEL_*`` variables.

What each variable does here (the SDK reads most of them itself):

* ``OTEL_SDK_DISABLED=true``: no provider; ``setup_tracing`` returns None and tracers are no-ops.
* ``OTEL_TRACES_EXPORTER``: comma-separated ``otlp`` | ``console`` | ``none`` (default ``otlp``).
* ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` or ``OTEL_EXPORTER_OTLP_PROTOCOL``: ``http/protobuf``
  (default, as the OTLP exporter spec recommends; the Python SDK's own auto-configuration
  would pick gRPC) or ``grpc``.
* ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``, ``_HEADERS``, ``_TIMEOUT``, ``_COMPRESSION``,
  ``_CERTIFICATE``: read by the exporter. For HTTP the endpoint is a base URL such as
  ``http://127.0.0.1:4318`` (``/v1/traces`` is appended); for gRPC ``http://host:4317``.
* ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``: read by the SDK's ``TracerProvider``.
  Unset means the spec default ``parentbased_always_on``: keep every root trace, follow the
  caller's decision otherwise. A high-volume pipeline usually sets
  ``parentbased_traceidratio`` with e.g. ``0.01``; that is a deployment choice, not a default.
* ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``: the resource, via ``Resource.create``;
  ``service.name`` falls back to ``default_service_name`` instead of ``unknown_service``.
* ``OTEL_BSP_*``: batching, read by ``BatchSpanProcessor``. ``OTEL_PROPAGATORS``: the
  propagators used by ``inject_headers`` / ``extract_context`` (default W3C tracecontext, baggage).

Every exporter is wrapped in a ``CountingSpanExporter`` so a benchmark can read the export
success rate from ``export_stats()``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter, SpanExportResult

KafkaHeaders = list[tuple[str, bytes]]


@dataclass(frozen=True)
class ExportStats:
    """What exporters reported so far: batches and spans by outcome."""

    batches_ok: int = 0
    batches_failed: int = 0
    spans_ok: int = 0
    spans_failed: int = 0

    @property
    def success_rate(self) -> float:
        """Share of exported spans that were accepted; 1.0 when nothing was exported yet."""
        total = self.spans_ok + self.spans_failed
        return self.spans_ok / total if total else 1.0

    def __add__(self, other: ExportStats) -> ExportStats:
        return ExportStats(self.batches_ok + other.batches_ok, self.batches_failed + other.batches_failed,
                           self.spans_ok + other.spans_ok, self.spans_failed + other.spans_failed)


class CountingSpanExporter(SpanExporter):
    """Delegates to ``inner`` and counts each ``export`` result; an exception counts as a failure."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._stats = ExportStats()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = SpanExportResult.FAILURE
        try:
            result = self.inner.export(spans)
            return result
        finally:
            ok = result is SpanExportResult.SUCCESS
            delta = ExportStats(int(ok), int(not ok), len(spans) if ok else 0, 0 if ok else len(spans))
            with self._lock:
                self._stats += delta

    @property
    def stats(self) -> ExportStats:
        with self._lock:
            return self._stats

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


_lock = threading.Lock()
_provider: TracerProvider | None = None
_exporters: list[CountingSpanExporter] = []


def setup_tracing(default_service_name: str = "m1-analytics") -> TracerProvider | None:
    """Build the tracer provider from ``OTEL_*`` variables; None when the SDK is disabled.

    Calling it again shuts the previous provider down and replaces it (for tests and
    benchmarks). The first provider also becomes the OpenTelemetry global one, which the
    API allows to be set only once per process; ``tracer()`` always uses the latest.
    """
    global _provider, _exporters
    with _lock:
        if _provider is not None:
            _provider.shutdown()
        _provider, _exporters = None, []
        if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return None
        provider = TracerProvider(resource=_resource(default_service_name))
        for name in _exporter_names():
            exporter = CountingSpanExporter(_make_exporter(name))
            provider.add_span_processor(BatchSpanProcessor(exporter))
            _exporters.append(exporter)
        if not isinstance(trace.get_tracer_provider(), TracerProvider):
            trace.set_tracer_provider(provider)
        _provider = provider
        return provider


def _resource(default_service_name: str) -> Resource:
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: default_service_name}))
    return resource


def _exporter_names() -> list[str]:
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    return [] if names == ["none"] else names


def _make_exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    if name != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER: unsupported exporter {name!r} (use otlp, console or none)")
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    elif protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL: unsupported protocol {protocol!r} (use grpc or http/protobuf)")
    return OTLPSpanExporter()


def tracer(name: str = "m1") -> trace.Tracer:
    """A tracer from the provider of the last ``setup_tracing``; a no-op tracer before it or when disabled."""
    provider = _provider
    return provider.get_tracer(name) if provider is not None else trace.NoOpTracer()


def export_stats() -> ExportStats:
    """Export outcomes, summed over the current provider's exporters."""
    total = ExportStats()
    for exporter in list(_exporters):
        total += exporter.stats
    return total


class _KafkaHeaderSetter(Setter[KafkaHeaders]):
    def set(self, carrier: KafkaHeaders, key: str, value: str) -> None:
        carrier[:] = [(k, v) for k, v in carrier if k.lower() != key.lower()]
        carrier.append((key, value.encode("utf-8")))


class _KafkaHeaderGetter(Getter[KafkaHeaders]):
    def get(self, carrier: KafkaHeaders, key: str) -> list[str] | None:
        values = [v.decode("utf-8", "replace") for k, v in carrier if k.lower() == key.lower() and v is not None]
        return values or None

    def keys(self, carrier: KafkaHeaders) -> list[str]:
        return [k for k, _ in carrier]


_SETTER, _GETTER = _KafkaHeaderSetter(), _KafkaHeaderGetter()


def inject_headers(headers: KafkaHeaders | None = None, context: Context | None = None) -> KafkaHeaders:
    """Kafka headers carrying the (current or given) trace context, e.g. ``traceparent``.

    ``headers`` is updated in place (earlier values of the same keys are replaced) and returned.
    """
    carrier = [] if headers is None else headers
    propagate.inject(carrier, context=context, setter=_SETTER)
    return carrier


def extract_context(headers: Sequence[tuple[str, bytes]] | None) -> Context:
    """The trace context carried by Kafka headers; an empty context if there is none."""
    return propagate.extract(list(headers or []), getter=_GETTER)


def tracing_configured() -> bool:
    """True when the environment asks for self-tracing: an exporter or an OTLP endpoint is set.

    A worker started without any of ``OTEL_TRACES_EXPORTER``, ``OTEL_EXPORTER_OTLP_ENDPOINT``
    or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` does not trace, rather than retrying exports to
    a default collector that is not there. ``OTEL_SDK_DISABLED=true`` always wins.
    """
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(os.environ.get(name, "").strip() for name in (
        "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup_tracing_if_configured(default_service_name: str = "m1-analytics") -> TracerProvider | None:
    """``setup_tracing`` when ``tracing_configured()``; otherwise tracers stay no-ops."""
    return setup_tracing(default_service_name) if tracing_configured() else None


def force_flush(timeout_millis: int = 30_000) -> bool:
    """Export every ended span now (the current provider's processors); True if all finished in time."""
    provider = _provider
    return provider.force_flush(timeout_millis) if provider is not None else True


def remote_span_contexts(header_lists: Iterable[Sequence[tuple[str, bytes]] | None],
                         limit: int = 128) -> list[trace.SpanContext]:
    """Distinct valid remote span contexts carried by many records' Kafka headers (at most ``limit``).

    Records without headers cost one truth test; equal header sets are extracted once, so a
    batch of thousands of records from a few producers costs a few extractions.
    """
    seen: set[tuple] = set()
    out: list[trace.SpanContext] = []
    for headers in filter(None, header_lists):  # most records have none: skipped without a Python step each
        pairs = tuple(headers.items()) if isinstance(headers, Mapping) else tuple(headers)
        if pairs in seen:
            continue
        seen.add(pairs)
        context = trace.get_current_span(extract_context(pairs)).get_span_context()
        if context.is_valid and context not in out:
            out.append(context)
            if len(out) >= limit:
                break
    return out
