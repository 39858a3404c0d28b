"""Versioned event types and their strict JSON decoding.

Every event is a JSON object whose ``schema`` field names its type and version
(``"metric/1"``, ``"span/1"``, ``"audit/1"``, ``"heartbeat/1"``, ``"region_event/1"``) and which carries
``tenant`` and ``region``. Decoding rejects malformed JSON, wrong types, missing
fields, unknown schema versions, non-finite numbers and oversize payloads with an
:class:`InvalidEvent` whose ``reason`` says exactly what was wrong.

>>> from schemas.events import decode_metric
>>> p = decode_metric(b'{"schema":"metric/1","ts":1700000000.5,"tenant":"acme","region":"eu-west-1",'
...                   b'"service":"api","metric":"latency_ms","value":12.5,"labels":{"host":"a"}}')
>>> p.series_key
'acme|eu-west-1|api|latency_ms|host=a'
>>> decode_metric(b'{"schema":"metric/2"}')
Traceback (most recent call last):
...
schemas.events.InvalidEvent: Invalid value 'metric/2' - at `$.schema`
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import msgspec

#: Payloads larger than this are rejected before parsing (override per decoder).
DEFAULT_MAX_BYTES = 65_536

# Plausible event time: 2000-01-01 .. 2100-01-01, in epoch seconds.
EpochSeconds = Annotated[float, msgspec.Meta(ge=946_684_800.0, lt=4_102_444_800.0)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-/]+$")]
LabelValue = Annotated[str, msgspec.Meta(max_length=256)]
Labels = Annotated[dict[Name, LabelValue], msgspec.Meta(max_length=32)]


class InvalidEvent(ValueError):
    """A record that is not a valid event; ``reason`` is the precise cause."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Event(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="schema"):
    """Fields every event has: when, whose and where."""

    ts: EpochSeconds
    tenant: Name
    region: Name


class MetricPoint(Event, tag="metric/1"):
    """One observation of one metric series."""

    service: Name
    metric: Name
    value: float
    labels: Labels = {}

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise ValueError(f"value must be finite, got {self.value!r}")

    @property
    def series_key(self) -> str:
        """Identity of the series: tenant|region|service|metric|k=v,... (labels sorted).

        Names cannot hold ``|``, ``,`` or ``=``; in label values ``\\`` and ``,`` are escaped
        with a backslash, so two different label sets never share a key."""
        labels = ",".join(f"{k}={_escape(v)}" for k, v in sorted(self.labels.items()))
        return f"{self.tenant}|{self.region}|{self.service}|{self.metric}|{labels}"


def _escape(label_value: str) -> str:
    return label_value.replace("\\", "\\\\").replace(",", "\\,")


class Span(Event, tag="span/1"):
    """One span of a distributed trace (the JSON form; OTLP has its own decoder)."""

    trace_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}$")]
    span_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{16}$")]
    service: Name
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    duration_ms: Annotated[float, msgspec.Meta(ge=0)]
    parent_span_id: str = ""
    status: Annotated[str, msgspec.Meta(pattern=r"^(ok|error|unset)$")] = "unset"
    attributes: Labels = {}


class AuditEvent(Event, tag="audit/1"):
    """Who did what to which resource, and with what outcome."""

    actor: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    action: Name
    resource: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    outcome: Annotated[str, msgspec.Meta(pattern=r"^(success|failure|denied)$")]
    details: Labels = {}


class RegionHeartbeat(Event, tag="heartbeat/1"):
    """A region's liveness beat, with its replication position for lag checks."""

    source: Name
    sequence: Annotated[int, msgspec.Meta(ge=0)]
    replicated_ts: EpochSeconds | None = None


HealthStateName = Annotated[str, msgspec.Meta(pattern=r"^(healthy|degraded|down)$")]


class RegionEvent(Event, tag="region_event/1"):
    """A change in the shared verdict about ``region``, decided by ``observer`` at ``ts``.

    ``kind`` is ``failover`` (into down), ``recovery`` (out of down, or degraded back to healthy)
    or ``degraded``; ``views`` holds each observer's local state of the region that the verdict
    was computed from (regions/verdict.py). ``tenant`` is ``platform``: regions are no tenant's data."""

    kind: Annotated[str, msgspec.Meta(pattern=r"^(failover|recovery|degraded)$")]
    observer: Name
    previous: HealthStateName
    state: HealthStateName
    reason: Annotated[str, msgspec.Meta(max_length=1024)]
    views: Annotated[dict[Name, HealthStateName], msgspec.Meta(max_length=64)] = {}


AnyEvent = MetricPoint | Span | AuditEvent | RegionHeartbeat | RegionEvent


class EventDecoder:
    """Strict decoder for one event type (or a union), with a size limit.

    ``decode`` raises :class:`InvalidEvent`; nothing else escapes it.
    """

    def __init__(self, type_: Any, max_bytes: int = DEFAULT_MAX_BYTES):
        self._decoder = msgspec.json.Decoder(type_)
        self.max_bytes = max_bytes

    def decode(self, payload: bytes | None) -> Any:
        if payload is None:
            raise InvalidEvent("empty record (no value)")
        if len(payload) > self.max_bytes:
            raise InvalidEvent(f"payload of {len(payload)} bytes exceeds the {self.max_bytes}-byte limit")
        try:
            return self._decoder.decode(payload)
        except msgspec.ValidationError as exc:
            raise InvalidEvent(str(exc)) from None
        except msgspec.DecodeError as exc:
            raise InvalidEvent(f"malformed JSON: {exc}") from None


_metric_decoder = EventDecoder(MetricPoint)


def decode_metric(payload: bytes | None) -> MetricPoint:
    """Decode one metric point with the default size limit."""
    return _metric_decoder.decode(payload)


def encode(event: AnyEvent) -> bytes:
    """The JSON form of an event, ``schema`` tag included."""
    return msgspec.json.encode(event)
