"""Decode what the OpenTelemetry Collector's Kafka exporter writes, and flatten it into rows.

Two encodings are accepted, named as in the Collector's Kafka exporter config:

* ``otlp_proto``: binary protobuf ``ExportTraceServiceRequest`` / ``ExportMetricsServiceRequest``;
* ``otlp_json``: OTLP/JSON, i.e. protobuf JSON mapping with two OTLP twists handled here:
  trace and span ids are hex strings (not base64), and unknown fields are ignored.
  Field names may be lowerCamelCase or the original snake_case; int64 may be strings.

Rows match the ClickHouse tables of ``schemas/ddl/020_otel.sql`` (the Collector's
ClickHouse exporter layout): ``span_rows`` for ``otel_traces``, ``metric_rows`` for
``otel_metrics_gauge`` / ``otel_metrics_sum``. Timestamps are integer nanoseconds since
the epoch (clickhouse-connect writes ints into ``DateTime64(9)`` as raw ticks). Nested
columns use their flat names (``Events.Name``). ``metric_points`` turns gauge and sum
points into the pipeline's plain metric points.

Anything that is not a well-formed request raises ``DecodeError`` with a precise reason.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Literal

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError as _ProtoDecodeError
from google.protobuf.message import Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope
from opentelemetry.proto.metrics.v1.metrics_pb2 import NumberDataPoint
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

Encoding = Literal["otlp_proto", "otlp_json"]
ENCODINGS: tuple[str, ...] = ("otlp_proto", "otlp_json")

# OTLP/JSON fields holding ids as hex (both JSON spellings), with their byte length.
_ID_FIELDS = {
    "traceId": 16, "trace_id": 16,
    "spanId": 8, "span_id": 8,
    "parentSpanId": 8, "parent_span_id": 8,
}


class DecodeError(ValueError):
    """A payload that is not a valid OTLP request; ``reason`` says what is wrong and where."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- decoding


def decode_traces(payload: bytes, encoding: Encoding = "otlp_proto") -> ExportTraceServiceRequest:
    """Parse one Kafka message value into an ``ExportTraceServiceRequest``."""
    return _decode(payload, encoding, ExportTraceServiceRequest())


def decode_metrics(payload: bytes, encoding: Encoding = "otlp_proto") -> ExportMetricsServiceRequest:
    """Parse one Kafka message value into an ``ExportMetricsServiceRequest``."""
    return _decode(payload, encoding, ExportMetricsServiceRequest())


def _decode(payload: bytes, encoding: str, message: Message) -> Any:
    if encoding == "otlp_proto":
        return _decode_proto(payload, message)
    if encoding == "otlp_json":
        return _decode_json(payload, message)
    raise DecodeError(f"unknown encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")


def _decode_proto(payload: bytes, message: Message) -> Message:
    try:
        message.ParseFromString(payload)
    except _ProtoDecodeError as exc:
        where = _wire_error(memoryview(payload), message.DESCRIPTOR, 0, message.DESCRIPTOR.name)
        raise DecodeError(where or f"{message.DESCRIPTOR.name}: {exc}") from None
    return message


def _decode_json(payload: bytes, message: Message) -> Message:
    try:
        doc = json.loads(payload)
    except UnicodeDecodeError as exc:
        raise DecodeError(f"OTLP/JSON is not UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise DecodeError("OTLP/JSON is nested too deeply to parse") from None
    if not isinstance(doc, dict):
        raise DecodeError(f"OTLP/JSON must be an object, got {type(doc).__name__}")
    try:
        json_format.ParseDict(_hex_ids_to_base64(doc, "$"), message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise DecodeError(f"OTLP/JSON does not fit {message.DESCRIPTOR.name}: {exc}") from None
    except RecursionError:  # nested within JSON's limit, but not within the converters'
        raise DecodeError("OTLP/JSON is nested too deeply to parse") from None
    return message


def _hex_ids_to_base64(node: Any, path: str) -> Any:
    """Copy of an OTLP/JSON tree with hex ids re-encoded as the base64 that json_format expects."""
    if isinstance(node, list):
        return [_hex_ids_to_base64(item, f"{path}[{i}]") for i, item in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in _ID_FIELDS and isinstance(value, str):
            out[key] = _hex_to_base64(value, _ID_FIELDS[key], f"{path}.{key}")
        else:
            out[key] = _hex_ids_to_base64(value, f"{path}.{key}")
    return out


def _hex_to_base64(value: str, size: int, path: str) -> str:
    if value == "":
        return ""
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise DecodeError(f"{path}: {value!r} is not hex") from None
    if len(raw) != size:
        raise DecodeError(f"{path}: expected {size} bytes ({2 * size} hex digits), got {len(raw)}")
    return base64.b64encode(raw).decode()


def _wire_error(data: memoryview, descriptor: Descriptor, base: int, path: str) -> str | None:
    """First wire-format fault in ``data`` read as ``descriptor``, as a sentence; None if none found."""
    pos = 0
    while pos < len(data):
        start = pos
        tag, pos = read_varint(data, pos)
        if tag is None:
            return f"{path}: truncated field tag at byte {base + start}"
        number, wire_type = tag >> 3, tag & 7
        field = descriptor.fields_by_number.get(number)
        name = f"{path}.{field.name}" if field else f"{path}.<field {number}>"
        if number == 0:
            return f"{path}: invalid field number 0 at byte {base + start}"
        if wire_type == 0:
            value, pos = read_varint(data, pos)
            if value is None:
                return f"{name}: truncated varint at byte {base + start}"
        elif wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
            if pos > len(data):
                return f"{name}: truncated fixed-width value at byte {base + start}"
        elif wire_type == 2:
            length, pos = read_varint(data, pos)
            if length is None:
                return f"{name}: truncated length at byte {base + start}"
            if pos + length > len(data):
                return (f"{name}: truncated at byte {base + start}: declares {length} bytes, "
                        f"only {len(data) - pos} remain")
            body = data[pos:pos + length]
            if field is not None and field.type == FieldDescriptor.TYPE_MESSAGE:
                inner = _wire_error(body, field.message_type, base + pos, name)
                if inner:
                    return inner
            elif field is not None and field.type == FieldDescriptor.TYPE_STRING:
                try:
                    bytes(body).decode("utf-8")
                except UnicodeDecodeError:
                    return f"{name}: invalid UTF-8 at byte {base + pos}"
            pos += length
        else:
            return f"{name}: unsupported wire type {wire_type} at byte {base + start}"
    return None


def read_varint(data: bytes | memoryview, pos: int, end: int | None = None) -> tuple[int | None, int]:
    """(value, next position) of the protobuf varint at ``pos`` of ``data`` (read up to ``end``,
    default its length); value is None if it runs off the end or past 64 bits.

    >>> read_varint(b"\\x96\\x01", 0), read_varint(b"\\x96", 0)
    ((150, 2), (None, 1))
    """
    end = len(data) if end is None else end
    value = shift = 0
    while pos < end and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None, pos


# --------------------------------------------------------------------------- attributes


def any_value_str(value: AnyValue) -> str:
    """An attribute value as the Collector's ClickHouse exporter stores it (pcommon ``AsString``)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return ""
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind in ("array_value", "kvlist_value"):
        return json.dumps(_any_value_py(value), separators=(",", ":"))
    return str(getattr(value, kind))


def _any_value_py(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_any_value_py(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value_py(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind) if kind else None


def attributes(pairs: Any) -> dict[str, str]:
    """Repeated ``KeyValue`` as a ``Map(String, String)`` dict."""
    return {kv.key: any_value_str(kv.value) for kv in pairs}


# --------------------------------------------------------------------------- traces

_SPAN_KINDS = {
    Span.SPAN_KIND_UNSPECIFIED: "Unspecified", Span.SPAN_KIND_INTERNAL: "Internal",
    Span.SPAN_KIND_SERVER: "Server", Span.SPAN_KIND_CLIENT: "Client",
    Span.SPAN_KIND_PRODUCER: "Producer", Span.SPAN_KIND_CONSUMER: "Consumer",
}
_STATUS_CODES = {Status.STATUS_CODE_UNSET: "Unset", Status.STATUS_CODE_OK: "Ok", Status.STATUS_CODE_ERROR: "Error"}


def span_rows(request: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    """One ``otel_traces`` row per span; ids as lower-case hex, strings as the exporter writes them."""
    rows = []
    for rs_i, resource_spans in enumerate(request.resource_spans):
        resource = attributes(resource_spans.resource.attributes)
        service = resource.get("service.name", "")
        for ss_i, scope_spans in enumerate(resource_spans.scope_spans):
            scope = scope_spans.scope
            for sp_i, span in enumerate(scope_spans.spans):
                where = f"resource_spans[{rs_i}].scope_spans[{ss_i}].spans[{sp_i}]"
                rows.append(_span_row(span, resource, service, scope, where))
    return rows


def _span_row(span: Span, resource: dict[str, str], service: str,
              scope: InstrumentationScope, where: str) -> dict[str, Any]:
    return {
        "Timestamp": _time_ns(span.start_time_unix_nano, f"{where}.start_time_unix_nano"),
        "TraceId": _hex_id(span.trace_id, 16, f"{where}.trace_id", required=True),
        "SpanId": _hex_id(span.span_id, 8, f"{where}.span_id", required=True),
        "ParentSpanId": _hex_id(span.parent_span_id, 8, f"{where}.parent_span_id"),
        "TraceState": span.trace_state,
        "SpanName": span.name,
        "SpanKind": _SPAN_KINDS.get(span.kind, "Unspecified"),
        "ServiceName": service,
        "ResourceAttributes": resource,
        "ScopeName": scope.name,
        "ScopeVersion": scope.version,
        "SpanAttributes": attributes(span.attributes),
        "Duration": max(0, _time_ns(span.end_time_unix_nano, f"{where}.end_time_unix_nano") - span.start_time_unix_nano),
        "StatusCode": _STATUS_CODES.get(span.status.code, "Unset"),
        "StatusMessage": span.status.message,
        "Events.Timestamp": [_time_ns(e.time_unix_nano, f"{where}.events.time_unix_nano")
                             for e in span.events],
        "Events.Name": [e.name for e in span.events],
        "Events.Attributes": [attributes(e.attributes) for e in span.events],
        "Links.TraceId": [_hex_id(k.trace_id, 16, f"{where}.links.trace_id") for k in span.links],
        "Links.SpanId": [_hex_id(k.span_id, 8, f"{where}.links.span_id") for k in span.links],
        "Links.TraceState": [k.trace_state for k in span.links],
        "Links.Attributes": [attributes(k.attributes) for k in span.links],
    }


#: The latest time the tables can hold (int64 nanoseconds, DateTime64(9): 2262-04-11).
MAX_TIME_NS = 2**63 - 1


def _time_ns(value: int, where: str) -> int:
    """``value`` (fixed64 nanoseconds) if the tables can hold it, else ``DecodeError``."""
    if value > MAX_TIME_NS:
        raise DecodeError(f"{where}: {value} ns is after 2262, the latest time the tables hold")
    return value


def _hex_id(raw: bytes, size: int, where: str, required: bool = False) -> str:
    if not raw and not required:
        return ""
    if len(raw) != size:
        raise DecodeError(f"{where}: expected {size} bytes, got {len(raw)}")
    return raw.hex()


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class MetricRows:
    """Rows for ``otel_metrics_gauge`` and ``otel_metrics_sum``; other metric types are skipped."""

    gauge: list[dict[str, Any]]
    sum: list[dict[str, Any]]


def metric_rows(request: ExportMetricsServiceRequest) -> MetricRows:
    """Flatten gauge and sum data points into the exporter's metric-table rows."""
    out = MetricRows(gauge=[], sum=[])
    for resource_metrics in request.resource_metrics:
        resource = attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope
            common = {
                "ResourceAttributes": resource,
                "ResourceSchemaUrl": resource_metrics.schema_url,
                "ScopeName": scope.name,
                "ScopeVersion": scope.version,
                "ScopeAttributes": attributes(scope.attributes),
                "ScopeDroppedAttrCount": scope.dropped_attributes_count,
                "ScopeSchemaUrl": scope_metrics.schema_url,
                "ServiceName": resource.get("service.name", ""),
            }
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind not in ("gauge", "sum"):
                    continue
                described = {**common, "MetricName": metric.name,
                             "MetricDescription": metric.description, "MetricUnit": metric.unit}
                data = getattr(metric, kind)
                extra = ({"AggregationTemporality": data.aggregation_temporality,
                          "IsMonotonic": data.is_monotonic} if kind == "sum" else {})
                where = f"metrics[{metric.name!r}].{kind}.data_points"
                getattr(out, kind).extend({**described, **_point_columns(p, f"{where}[{i}]"), **extra}
                                          for i, p in enumerate(data.data_points))
    return out


def _point_columns(point: NumberDataPoint, where: str) -> dict[str, Any]:
    return {
        "Attributes": attributes(point.attributes),
        "StartTimeUnix": _time_ns(point.start_time_unix_nano, f"{where}.start_time_unix_nano"),
        "TimeUnix": _time_ns(point.time_unix_nano, f"{where}.time_unix_nano"),
        "Value": _number(point),
        "Flags": point.flags,
        "Exemplars.FilteredAttributes": [attributes(e.filtered_attributes) for e in point.exemplars],
        "Exemplars.TimeUnix": [_time_ns(e.time_unix_nano, f"{where}.exemplars.time_unix_nano")
                               for e in point.exemplars],
        "Exemplars.Value": [_number(e) for e in point.exemplars],
        "Exemplars.SpanId": [e.span_id.hex() for e in point.exemplars],
        "Exemplars.TraceId": [e.trace_id.hex() for e in point.exemplars],
    }


def _number(point: Any) -> float:
    """Value of a NumberDataPoint or Exemplar, whichever of as_double / as_int it holds."""
    return float(point.as_int) if point.WhichOneof("value") == "as_int" else point.as_double


def metric_points(rows: MetricRows) -> list[dict[str, Any]]:
    """Gauge and sum rows as the pipeline's plain metric points.

    Each point is ``{ts, tenant, region, service, metric, value, labels}``: ``ts`` in epoch
    seconds; ``tenant`` from resource attribute ``tenant`` or ``m1.tenant`` (default
    ``"default"``); ``region`` from ``cloud.region`` (default ``"unknown"``); ``labels`` are
    the data point's attributes.
    """
    points = []
    for row in (*rows.gauge, *rows.sum):
        resource = row["ResourceAttributes"]
        points.append({
            "ts": row["TimeUnix"] / 1e9,
            "tenant": resource.get("tenant") or resource.get("m1.tenant") or "default",
            "region": resource.get("cloud.region") or "unknown",
            "service": row["ServiceName"],
            "metric": row["MetricName"],
            "value": row["Value"],
            "labels": dict(row["Attributes"]),
        })
    return points


__all__ = [
    "DecodeError", "ENCODINGS", "Encoding", "MetricRows", "any_value_str", "attributes",
    "decode_metrics", "decode_traces", "metric_points", "metric_rows", "span_rows",
]
