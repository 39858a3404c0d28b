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
import operator
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from itertools import starmap
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


class MetricPoint(Event, tag="metric/1", gc=False):
    """One observation of one metric series. Not tracked by the garbage collector (``gc=False``:
    its fields hold no references back, so it can be in no cycle): a batch holds thousands."""

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

    ``decode`` raises :class:`InvalidEvent`; nothing else escapes it. ``decode_each`` decodes a
    batch, faster for one event type with :data:`Name` fields (see :class:`_KnownNames`).
    """

    def __init__(self, type_: Any, max_bytes: int = DEFAULT_MAX_BYTES):
        self._decoder = msgspec.json.Decoder(type_)
        self.max_bytes = max_bytes
        self._fast = _KnownNames.of(type_)
        #: The identity fields of a raw twin from :meth:`read_raw_each`, as JSON text (a compiled getter).
        self.identity: Callable[[Any], tuple[msgspec.Raw, ...]] = _no_raw_twins if self._fast is None else self._fast.identity

    def decode_each(self, payloads: Iterable[bytes | None]) -> list[Any]:
        """What :meth:`decode` makes of each payload, in order: the event, or the
        :class:`InvalidEvent` it raises (returned, not raised), with the same reason."""
        out: list[Any] = []
        fast, limit = self._fast, self.max_bytes
        for payload in payloads:
            if fast is not None and payload is not None and len(payload) <= limit:
                event = fast.decode(payload)
                if event is not None:
                    out.append(event)
                    continue
            try:
                event = self.decode(payload)
            except InvalidEvent as exc:
                out.append(exc)
                continue
            if fast is not None:
                fast.learn(event)
            out.append(event)
        return out

    def read_raw_each(self, payloads: list[bytes | None]) -> list[Any]:
        """Each payload read with every check of :meth:`decode` but those of its identity (its
        ``schema`` tag, :data:`Name` and label-map fields), which stay as their JSON text
        (``msgspec.Raw``; an absent one as the empty text): a raw twin of the event; None where that
        reading refuses it, where it is None or over the size limit, and everywhere if this decoder
        has no such reading (not one event type). See :meth:`from_templates`."""
        if self._fast is None:
            return [None] * len(payloads)
        return self._fast.read_raw_each(payloads, self.max_bytes)

    def from_templates(self, templates: list[Any], raws: list[Any]) -> list[Any]:
        """What :meth:`decode` gives the payload of each raw twin, for twins whose :meth:`identity`
        equals that of a payload :meth:`decode` accepted as the template beside it, and whose payload
        names no field twice (the raw twin keeps the last of a field named twice, unchecked, where
        :meth:`decode` checks both; the caller's proof, for instance: with the identities equal, the
        same fields are present, so a payload with as many ``:`` as the template's has each once):
        the template with the twin's other fields (sharing the template's identity values); None
        where the event's own checks refuse that (``__post_init__``). Nothing is parsed again."""
        assert self._fast is not None
        return self._fast.from_templates(templates, raws)

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


class _KnownNames:
    """Decoding of one event type with its :data:`Name` patterns checked against names seen
    before instead of the regular expression (which costs more than the rest of a decode).

    Its twin type reads the same JSON with every other constraint in place; a payload whose
    names are all known becomes the event, built from the twin's fields. Anything else (a
    payload the twin refuses, a new name) is for the strict decoder, which gives the exact
    result and reason a strict decode gives; :meth:`learn` then adds its names."""

    #: Most names remembered; the set starts afresh beyond it.
    LIMIT = 100_000

    def __init__(self, event_type: type[msgspec.Struct], fields: list[tuple[str, Any, Any]],
                 names: tuple[str, ...], keyed: tuple[str, ...]):
        config = event_type.__struct_config__
        twin = msgspec.defstruct(f"Unchecked{event_type.__name__}", fields, tag_field=config.tag_field,
                                 tag=config.tag, forbid_unknown_fields=config.forbid_unknown_fields, gc=False)
        self._decoder = msgspec.json.Decoder(twin)
        # the raw twin reads the tag as a field of its own (optional in a payload, so its presence and
        # text are part of the identity: with the identity's text equal, a payload of as many fields
        # as its template's names none twice) and the identity fields as their JSON text
        tagged = (config.tag_field,) if config.tag_field else ()
        identity = (*tagged, *names, *keyed)
        raw_fields = [(t, str, msgspec.field(default="")) for t in tagged] + fields
        raw_twin = msgspec.defstruct(f"Raw{event_type.__name__}",
                                     [_raw_field(f) if f[0] in identity else f for f in raw_fields],
                                     forbid_unknown_fields=config.forbid_unknown_fields, kw_only=True, gc=False)
        self._raw_decoder = msgspec.json.Decoder(raw_twin)
        self.identity = operator.attrgetter(*identity)  # of a raw twin: tuples of msgspec.Raw
        # the event's fields in order, each as (from the template?, its getter)
        self._sources = [(f[0] in identity, operator.attrgetter(f[0])) for f in fields]
        self._make = event_type
        getter = operator.attrgetter(*names)
        self._names = getter if len(names) > 1 else lambda event: (getter(event),)  # the Name fields' values
        self._keyed = keyed  # maps keyed by Names
        self._known: set[str] = set()

    @classmethod
    def of(cls, type_: Any) -> _KnownNames | None:
        """The fast decoding of ``type_``, or None if it is not one event type (every one has Name fields)."""
        if not (isinstance(type_, type) and issubclass(type_, Event)):
            return None
        fields: list[tuple[str, Any, Any]] = []
        names, keyed = [], []
        for f in msgspec.structs.fields(type_):
            kind = f.type
            if kind == Name:
                names.append(f.name)
                kind = _UncheckedName
            elif kind == Labels:
                keyed.append(f.name)
                kind = _UncheckedLabels
            fields.append((f.name, kind, msgspec.field(default=f.default, default_factory=f.default_factory)))
        return cls(type_, fields, tuple(names), tuple(keyed)) if names else None

    def decode(self, payload: bytes) -> Any:
        """The event in ``payload`` if the twin reads it and every name in it is known, else None."""
        try:
            twin = self._decoder.decode(payload)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        known = self._known
        if not known.issuperset(self._names(twin)):
            return None
        for name in self._keyed:
            if not known.issuperset(getattr(twin, name)):
                return None
        return self.make(twin)

    def read_raw_each(self, payloads: list[bytes | None], max_bytes: int) -> list[Any]:
        """The raw twin of each payload, or None where the raw twin refuses it or it is None or over ``max_bytes``."""
        decode, errors = self._raw_decoder.decode, (msgspec.ValidationError, msgspec.DecodeError)
        if payloads and None not in payloads and max(map(len, payloads)) <= max_bytes:  # type: ignore[arg-type]
            return _each(partial(map, decode), payloads, errors)
        out: list[Any] = []
        for payload in payloads:
            if payload is None or len(payload) > max_bytes:
                out.append(None)
                continue
            try:
                out.append(decode(payload))
            except errors:
                out.append(None)
        return out

    def make(self, twin: Any) -> Any:
        """The event of ``twin``'s fields, or None if the event's own checks (``__post_init__``) refuse them."""
        try:
            return self._make(*msgspec.structs.astuple(twin))
        except ValueError:  # __post_init__
            return None

    def from_templates(self, templates: list[Any], raws: list[Any]) -> list[Any]:
        """Each template with its raw twin's other fields (see ``EventDecoder.from_templates``), None
        where the event's checks refuse them; the fields are gathered and the events made in C."""
        columns = [map(get, templates if templated else raws) for templated, get in self._sources]
        return _each(partial(starmap, self._make), zip(*columns), (ValueError,))

    def learn(self, event: Any) -> None:
        """Remember the names of ``event``, which the strict decoder accepted."""
        if len(self._known) >= self.LIMIT:
            self._known.clear()
        self._known.update(self._names(event))
        for name in self._keyed:
            self._known.update(getattr(event, name))


def _no_raw_twins(raw: Any) -> tuple[msgspec.Raw, ...]:
    raise TypeError("this decoder reads no raw twins (it decodes more than one event type)")


def _each(mapped: Callable[[Iterator[Any]], Iterable[Any]], items: Iterable[Any],
          refusals: tuple[type[Exception], ...]) -> list[Any]:
    """What ``mapped`` (an iterator's items, each mapped to one result) makes of each item, None
    where that raises one of ``refusals``: the items between two refusals go in one run, without a
    Python step an item.

    >>> _each(partial(map, lambda x: 1 / x), [1, 0, 2, 0, 4], (ZeroDivisionError,))
    [1.0, None, 0.5, None, 0.25]
    """
    out: list[Any] = []
    rest = iter(items)
    while True:
        try:  # list.extend keeps what it took before the item that raised
            out.extend(mapped(rest))
            return out
        except refusals:  # rest has moved past that item
            out.append(None)


def _raw_field(field: tuple[str, Any, Any]) -> tuple[str, Any, Any]:
    """``field`` of a twin kept as its JSON text (``msgspec.Raw``); absent, an optional one is the
    empty text, which no field present has (so its absence is part of the identity too)."""
    name, _, default = field
    optional = default.default is not msgspec.NODEFAULT or default.default_factory is not msgspec.NODEFAULT
    return name, msgspec.Raw, msgspec.field(default=msgspec.Raw(b"")) if optional else msgspec.field()


_UncheckedName = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_UncheckedLabels = Annotated[dict[_UncheckedName, LabelValue], msgspec.Meta(max_length=32)]

_metric_decoder = EventDecoder(MetricPoint)


def decode_metric(payload: bytes | None) -> MetricPoint:
    """Decode one metric point with the default size limit."""
    return _metric_decoder.decode(payload)


def encode(event: AnyEvent) -> bytes:
    """The JSON form of an event, ``schema`` tag included."""
    return msgspec.json.encode(event)
