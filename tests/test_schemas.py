"""Strict decoding of events: every kind of bad input is rejected with a precise reason."""

from __future__ import annotations

import msgspec
import pytest

from schemas.events import (
    AuditEvent,
    EventDecoder,
    InvalidEvent,
    MetricPoint,
    RegionHeartbeat,
    Span,
    decode_metric,
    encode,
)

GOOD = {"schema": "metric/1", "ts": 1767225600.25, "tenant": "acme", "region": "eu-west-1",
        "service": "api", "metric": "latency_ms", "value": 12.5, "labels": {"host": "a", "az": "b"}}


def raw(**changes: object) -> bytes:
    doc = {**GOOD, **changes}
    return msgspec.json.encode({k: v for k, v in doc.items() if v is not ...})


def test_valid_point_round_trips_and_keys_by_sorted_labels() -> None:
    point = decode_metric(raw())
    assert point.value == 12.5 and point.labels == {"host": "a", "az": "b"}
    assert point.series_key == "acme|eu-west-1|api|latency_ms|az=b,host=a"
    assert decode_metric(encode(point)) == point


def test_label_values_with_separators_never_share_a_series_key() -> None:
    def key(labels: dict[str, str]) -> str:
        return MetricPoint(1767225600.0, "acme", "eu", "api", "hits", 1.0, labels).series_key

    assert key({"a": "1,b=2"}) != key({"a": "1", "b": "2"})
    assert key({"a": "x\\", "b": "y"}) != key({"a": "x,b=y"})  # why backslashes are escaped too
    assert key({"path": "/v1/items?id=3"}) == "acme|eu|api|hits|path=/v1/items?id=3"  # '=' needs no escape


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{nope", "malformed JSON"),
        (b"", "malformed JSON"),
        (raw(value="12"), "Expected `float`, got `str` - at `$.value`"),
        (raw(metric=...), "Object missing required field `metric`"),
        (raw(tenant=...), "Object missing required field `tenant`"),
        (raw(schema="metric/2"), "Invalid value 'metric/2' - at `$.schema`"),
        (raw(extra=1), "Object contains unknown field `extra`"),
        (raw(ts=12), "Expected `float` >= 946684800.0 - at `$.ts`"),
        (raw(labels={"k": 1}), "Expected `str`, got `int` - at `$.labels[...]`"),
        (raw(metric="bad name!"), "Expected `str` matching regex"),
        (b'{"schema":"metric/1","ts":1767225600,"tenant":"a","region":"r","service":"s","metric":"m","value":1e400}',
         "Number out of range - at `$.value`"),
    ],
)
def test_invalid_points_are_rejected_with_a_precise_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_metric(payload)
    assert reason in info.value.reason


def test_non_finite_value_is_rejected_even_when_json_allows_it() -> None:
    with pytest.raises(ValueError, match="finite"):
        MetricPoint(1767225600.0, "a", "r", "s", "m", float("nan"))


def test_oversize_payload_is_rejected_before_parsing() -> None:
    decoder = EventDecoder(MetricPoint, max_bytes=100)
    with pytest.raises(InvalidEvent, match="exceeds the 100-byte limit"):
        decoder.decode(raw(labels={"k": "v" * 200}))
    with pytest.raises(InvalidEvent, match="empty record"):
        decoder.decode(None)


def test_every_event_type_carries_tenant_and_region_and_decodes_by_tag() -> None:
    decoder = EventDecoder(MetricPoint | Span | AuditEvent | RegionHeartbeat)
    events = [
        Span(1767225600.0, "acme", "eu", "0" * 32, "1" * 16, "api", "GET /", 3.5),
        AuditEvent(1767225600.0, "acme", "eu", "alice", "user.delete", "users/42", "denied"),
        RegionHeartbeat(1767225600.0, "acme", "eu", "eu-west-1", 7),
    ]
    for event in events:
        assert decoder.decode(encode(event)) == event
    with pytest.raises(InvalidEvent, match="Invalid value 'audit/9'"):
        decoder.decode(b'{"schema":"audit/9","ts":1767225600,"tenant":"a","region":"r"}')
