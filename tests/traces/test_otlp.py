"""OTLP decoding: protobuf and OTLP/JSON give the same rows; bad payloads say what is wrong."""

from __future__ import annotations

import json

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from schemas.otlp import DecodeError, decode_metrics, decode_traces, metric_points, metric_rows, span_rows

TRACE_ID, SPAN_ID, PARENT_ID = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "eee19b7ec3c1b173"

# OTLP/JSON as the spec shows it: hex ids, lowerCamelCase, int64 as strings, enums as integers.
TRACE_JSON = {
    "resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "checkout"}},
            {"key": "tenant", "value": {"stringValue": "acme"}},
        ]},
        "scopeSpans": [{
            "scope": {"name": "my.library", "version": "1.0.0"},
            "spans": [{
                "traceId": TRACE_ID, "spanId": SPAN_ID, "parentSpanId": PARENT_ID,
                "name": "SELECT stock", "kind": 3,
                "startTimeUnixNano": "1544712660000000000", "endTimeUnixNano": "1544712661000000001",
                "attributes": [
                    {"key": "db.system", "value": {"stringValue": "postgresql"}},
                    {"key": "rows", "value": {"intValue": "42"}},
                    {"key": "cached", "value": {"boolValue": False}},
                    {"key": "ratio", "value": {"doubleValue": 0.5}},
                    {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "1"}]}}},
                ],
                "events": [{"timeUnixNano": "1544712660500000000", "name": "retry", "attributes": []}],
                "links": [{"traceId": TRACE_ID, "spanId": PARENT_ID}],
                "status": {"code": 2, "message": "timeout"},
            }],
        }],
    }],
}


def test_json_span_becomes_exporter_row() -> None:
    (row,) = span_rows(decode_traces(json.dumps(TRACE_JSON).encode(), "otlp_json"))
    assert row["TraceId"] == TRACE_ID and row["SpanId"] == SPAN_ID and row["ParentSpanId"] == PARENT_ID
    assert row["Timestamp"] == 1544712660000000000 and row["Duration"] == 1_000_000_001
    assert (row["SpanKind"], row["StatusCode"], row["StatusMessage"]) == ("Client", "Error", "timeout")
    assert (row["ServiceName"], row["ScopeName"], row["ScopeVersion"]) == ("checkout", "my.library", "1.0.0")
    assert row["SpanAttributes"] == {"db.system": "postgresql", "rows": "42", "cached": "false",
                                     "ratio": "0.5", "tags": '["a",1]'}
    assert row["ResourceAttributes"]["tenant"] == "acme"
    assert row["Events.Name"] == ["retry"] and row["Events.Timestamp"] == [1544712660500000000]
    assert row["Links.TraceId"] == [TRACE_ID] and row["Links.SpanId"] == [PARENT_ID]


def test_proto_and_snake_case_json_decode_to_the_same_rows() -> None:
    from_json = decode_traces(json.dumps(TRACE_JSON).encode(), "otlp_json")
    from_proto = decode_traces(from_json.SerializeToString(), "otlp_proto")
    snake = json.dumps(TRACE_JSON).replace('"traceId"', '"trace_id"').replace('"spanId"', '"span_id"') \
        .replace('"startTimeUnixNano"', '"start_time_unix_nano"')
    assert span_rows(from_proto) == span_rows(from_json) == span_rows(decode_traces(snake.encode(), "otlp_json"))


def test_truncated_protobuf_names_the_field() -> None:
    payload = decode_traces(json.dumps(TRACE_JSON).encode(), "otlp_json").SerializeToString()
    with pytest.raises(DecodeError) as err:
        decode_traces(payload[:-7])
    assert "truncated" in err.value.reason and "resource_spans" in err.value.reason


@pytest.mark.parametrize("payload, encoding, expected", [
    (b"\x0a\xff", "otlp_proto", "truncated"),
    (b"\x0f", "otlp_proto", "resource_spans: unsupported wire type 7"),
    (b"\x07", "otlp_proto", "invalid field number 0"),
    (b"{", "otlp_json", "invalid JSON at line 1"),
    (b"[]", "otlp_json", "must be an object"),
    (b'{"resourceSpans": 3}', "otlp_json", "resourceSpans"),
    (b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}', "otlp_json",
     "$.resourceSpans[0].scopeSpans[0].spans[0].traceId: 'zz' is not hex"),
    (b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"spanId":"abcd"}]}]}]}', "otlp_json", "expected 8 bytes"),
    (b"{}", "avro", "unknown encoding"),
    (b'{"resourceSpans":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "otlp_json", "nested too deeply"),
    (b'{"resourceSpans":[{"resource":{"attributes":[{"key":"a","value":' + b'{"arrayValue":{"values":[' * 500
     + b'{"stringValue":"x"}' + b"]}}" * 500 + b"}]}}]}", "otlp_json", "nested too deeply"),
])
def test_bad_payloads_raise_decode_error_with_reason(payload: bytes, encoding: str, expected: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_traces(payload, encoding)  # type: ignore[arg-type]
    assert expected in err.value.reason


def test_proto_span_with_short_trace_id_is_rejected() -> None:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(trace_id=b"\x01" * 15, span_id=b"\x02" * 8)
    with pytest.raises(DecodeError, match=r"spans\[0\]\.trace_id: expected 16 bytes, got 15"):
        span_rows(decode_traces(request.SerializeToString()))


def test_times_the_tables_cannot_hold_are_rejected_with_the_field() -> None:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(
        trace_id=b"\x01" * 16, span_id=b"\x02" * 8, start_time_unix_nano=2**64 - 1, end_time_unix_nano=2**64 - 1)
    with pytest.raises(DecodeError, match=r"spans\[0\]\.start_time_unix_nano: 18446744073709551615 ns is after 2262"):
        span_rows(decode_traces(request.SerializeToString()))
    metrics = _metrics_request()
    metrics.resource_metrics[1].scope_metrics[0].metrics[0].gauge.data_points[0].time_unix_nano = 2**63
    with pytest.raises(DecodeError, match=r"metrics\['cpu'\]\.gauge\.data_points\[0\]\.time_unix_nano"):
        metric_rows(decode_metrics(metrics.SerializeToString()))


def _metrics_request() -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    for tenant_key, region in (("tenant", "eu-west-1"), ("m1.tenant", None), (None, None)):
        rm = request.resource_metrics.add()
        rm.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="api")))
        if tenant_key:
            rm.resource.attributes.append(KeyValue(key=tenant_key, value=AnyValue(string_value="acme")))
        if region:
            rm.resource.attributes.append(KeyValue(key="cloud.region", value=AnyValue(string_value=region)))
        metrics = rm.scope_metrics.add().metrics
        gauge = metrics.add(name="cpu", unit="1")
        gauge.gauge.data_points.add(time_unix_nano=2_500_000_000, as_double=0.75,
                                    attributes=[KeyValue(key="core", value=AnyValue(int_value=3))])
        total = metrics.add(name="requests")
        total.sum.is_monotonic = True
        total.sum.aggregation_temporality = 2
        total.sum.data_points.add(time_unix_nano=3_000_000_000, as_int=17)
        metrics.add(name="latency").histogram.data_points.add(count=1)  # not a gauge or sum: skipped
    return request


def test_metrics_rows_and_points() -> None:
    payload = _metrics_request().SerializeToString()
    rows = metric_rows(decode_metrics(payload))
    assert len(rows.gauge) == 3 and len(rows.sum) == 3
    assert rows.sum[0]["IsMonotonic"] is True and rows.sum[0]["AggregationTemporality"] == 2
    assert rows.gauge[0]["Value"] == 0.75 and rows.sum[0]["Value"] == 17.0
    points = metric_points(rows)
    assert points[0] == {"ts": 2.5, "tenant": "acme", "region": "eu-west-1", "service": "api",
                         "metric": "cpu", "value": 0.75, "labels": {"core": "3"}}
    assert [(p["tenant"], p["region"]) for p in points[:3]] == [
        ("acme", "eu-west-1"), ("acme", "unknown"), ("default", "unknown")]
    assert [p["metric"] for p in points] == ["cpu"] * 3 + ["requests"] * 3


def test_metrics_json_matches_proto() -> None:
    from google.protobuf import json_format

    request = _metrics_request()
    as_json = json.dumps(json_format.MessageToDict(request)).encode()  # int64 become strings here
    assert metric_rows(decode_metrics(as_json, "otlp_json")) == metric_rows(request)
