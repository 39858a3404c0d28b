"""Apply the personal-data policy to what enters the pipeline, before anything is written.

A :class:`Redactor` (one per worker) handles every input path; each path calls it once, right
after decoding:

* :meth:`Redactor.event`: a decoded event (metric/1 in ``streams.metrics_pipeline``, audit/1 in
  ``audit.ingest``). Map fields (labels, attributes, details) by key, other text fields by name;
  whatever the policy does not classify is scanned by the detectors. ``tenant`` and ``ts`` are
  never touched. A metric point's values form its series key, which must be the same for the
  same point every time and outlive an erasure: there ``encrypt`` becomes ``pseudonymise``.
* :meth:`Redactor.spans` / :meth:`Redactor.metric_rows`: OTLP rows (``streams.otlp_pipeline``),
  in place: resource, span, span event and link, data point and exemplar attributes, span and
  metric names, status messages. Data point attributes become metric labels (stable, as above).
* :func:`scrub_dead_letter`: the raw bytes of a rejected record and the reason (``dead_letter``
  in ``streams.metrics_pipeline``, which makes every dead letter). Its structure is unknown and
  no tenant is trusted, so it is scrubbed by pattern: JSON fields the policy names anywhere and
  every detector hit become ``redacted:<class or detector>``.

What a value becomes: ``redacted:<class>`` (or ``redacted:<detector>`` for a hit in free text),
a pseudonym ``pii:<hex16>`` (:mod:`compliance.pseudonym`), or ``enc:v1:...`` under the data
subject's key (:class:`compliance.subject_keys.SubjectKeys`; the subject is the first of the
policy's ``subject_fields`` the record has; without one, or without keys, the value is redacted).
A detector hit inside free text is pseudonymised when its class says encrypt (free text names
no subject). Values that already are such tokens are left alone, so redacting twice (a replay,
a record re-keyed to its partition) changes nothing. Results are remembered per value (bounded
caches): label values and attributes repeat with every point.

>>> from compliance.pseudonym import Pseudonymiser
>>> from compliance.policy import load_policy
>>> from schemas.events import AuditEvent
>>> r = Redactor(load_policy(), Pseudonymiser(bytes(32)), encrypt=lambda tenant, subject, text: f"enc:v1:{subject}")
>>> e = r.event(AuditEvent(ts=1.7e9, tenant="acme", region="eu", actor="bob@example.com", action="read",
...             resource="GET /v1/x?card=4111111111111111", outcome="success",
...             details={"user_id": "u1", "diagnosis": "flu", "remote": "10.0.0.7", "via": "api_key"}))
>>> e.actor, e.resource, e.details["diagnosis"], e.details["via"], e.tenant
('pii:23d6ab26ba783260', 'GET /v1/x?card=redacted:card', 'enc:v1:u1', 'api_key', 'acme')
>>> e.details["user_id"] == r.pseudonymise("acme", "u1") and r.event(e) == e
True
>>> scrub_payload(b'{"labels":{"diagnosis":"flu","ip":"203.0.113.9"}', load_policy())
b'{"labels":{"diagnosis":"redacted:phi","ip":"redacted:ipv4"}'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache, partial
from typing import Any, TypeVar

import msgspec

from compliance.detect import TOKEN, Hit
from compliance.policy import EVENT_TYPES, STRUCTURAL, FieldRules, Policy, load_policy, policy_of
from compliance.pseudonym import Pseudonymiser
from compliance.subject_keys import SubjectKeys
from core.settings import Settings, get_settings
from schemas.otlp import read_varint

#: ``encrypt(tenant, subject, plaintext) -> "enc:v1:..."`` (``SubjectKeys.encrypt``).
Encrypt = Callable[[str, str, str], str]
#: The data subject of a record, or a function finding it (called only if a value is to be encrypted).
Subject = str | Callable[[], str | None] | None
E = TypeVar("E", bound=msgspec.Struct)

REDACTED = "redacted:"
_TOKEN = re.compile(TOKEN)
#: Resource attributes naming the tenant: never redacted (the tables' Tenant column is made of them).
TENANT_ATTRIBUTES = frozenset({"tenant", "m1.tenant"})
#: Most remembered results per cache; a full cache starts afresh.
CACHE_SIZE = 200_000


def is_token(value: str) -> bool:
    """Whether ``value`` is what the pipeline writes in place of personal data."""
    return _TOKEN.fullmatch(value) is not None


class Redactor:
    """The policy applied to events, OTLP rows and values (see the module docstring)."""

    def __init__(self, policy: Policy, pseudonymise: Callable[[str, str], str], encrypt: Encrypt | None = None,
                 keys: SubjectKeys | None = None) -> None:
        self.policy = policy
        self.keys = keys  # the subject keys behind ``encrypt``, for the GDPR rights to share
        self.pseudonymise = pseudonymise
        self._encrypt = encrypt
        self._clean: set[str] = set()  # texts without a detector hit (in any tenant)
        self._scanned: dict[tuple[str, str], str] = {}
        self._sealed: dict[tuple[str, str, str], str] = {}
        self._plans = {t: _text_fields(cls) for t, cls in EVENT_TYPES.items()}
        self._tags = {cls: t for t, cls in EVENT_TYPES.items()}
        if keys is not None:  # an erased subject's remembered tokens go with its key
            keys.on_erase(self.forget_subject)

    @classmethod
    def from_settings(cls, settings: Settings, store: Any = None) -> Redactor:
        """The deployment's redactor: its policy, pseudonyms and, with the ``store``, subject keys
        (without a store, values to encrypt are redacted)."""
        keys = SubjectKeys.from_settings(settings, store) if store is not None else None
        return cls(policy_of(settings), Pseudonymiser.from_settings(settings), keys.encrypt if keys else None, keys)

    # ------------------------------------------------------------------ values

    def classified(self, tenant: str, data_class: str, value: str, subject: Subject = None,
                   stable: bool = False) -> str:
        """``value`` of ``data_class`` as the policy wants it stored (``stable``: part of an identity;
        ``subject``: whose key encrypts it, or a function finding that out when it is needed)."""
        if not value or _TOKEN.fullmatch(value):
            return value
        action = self.policy.actions[data_class]
        if action == "encrypt":
            if callable(subject):
                subject = subject()
            if stable:
                action = "pseudonymise"
            elif subject and self._encrypt is not None:
                return self._sealed_value(tenant, subject, value)
            else:
                action = "redact"
        if action == "pseudonymise":
            return self.pseudonymise(tenant, value)
        return REDACTED + data_class

    def scan(self, tenant: str, text: str) -> str:
        """``text`` with every detector hit replaced as its class says."""
        if text in self._clean or not text:
            return text
        cached = self._scanned.get((tenant, text))
        if cached is not None:
            return cached
        result = self.policy.detector.replace(text, lambda hit: self._hit(tenant, hit))
        if result is text:
            if len(self._clean) >= CACHE_SIZE:
                self._clean.clear()
            self._clean.add(text)
        else:
            if len(self._scanned) >= CACHE_SIZE:
                self._scanned.clear()
            self._scanned[(tenant, text)] = result
        return result

    def _hit(self, tenant: str, hit: Hit) -> str:
        if self.policy.actions[self.policy.detector_class[hit.detector]] == "redact":
            return REDACTED + hit.detector
        return self.pseudonymise(tenant, hit.text)

    def _sealed_value(self, tenant: str, subject: str, value: str) -> str:
        """The subject's token for ``value`` (deterministic, ``SubjectKeys.encrypt``), remembered to spare the cipher."""
        key = (tenant, subject, value)
        token = self._sealed.get(key)
        if token is None:
            assert self._encrypt is not None
            token = self._encrypt(tenant, subject, value)
            if len(self._sealed) >= CACHE_SIZE:
                self._sealed.clear()
            self._sealed[key] = token
        return token

    def forget_subject(self, tenant: str, ref: str) -> None:
        """Drop the remembered tokens of the subject whose reference is ``ref``: :attr:`keys` calls
        it when the key is erased, so that values arriving later are encrypted under a new key."""
        sealed_by = f"enc:v1:{ref}:"  # a token names its subject's reference
        self._sealed = {k: v for k, v in self._sealed.items() if not (k[0] == tenant and v.startswith(sealed_by))}

    def mapping(self, tenant: str, values: dict[str, str], rules: FieldRules, subject: Subject = None,
                stable: bool = False, keep: frozenset[str] = frozenset()) -> dict[str, str]:
        """``values`` (a label, attribute or detail map) redacted; the same dict if nothing changed."""
        out: dict[str, str] | None = None
        for key, value in values.items():
            if key in keep:
                continue
            data_class = rules.of(key) if rules else None
            new = self.classified(tenant, data_class, value, subject, stable) if data_class else self.scan(tenant, value)
            if new != value:
                if out is None:
                    out = dict(values)
                out[key] = new
        return values if out is None else out

    def subject(self, *sources: Mapping[str, Any]) -> str | None:
        """The data subject: the first of the policy's ``subject_fields`` found in ``sources``, in order."""
        for name in self.policy.subject_fields:
            for source in sources:
                value = source.get(name)
                if isinstance(value, str) and value:
                    return value
        return None

    # ------------------------------------------------------------------ events

    def event(self, event: E) -> E:
        """``event`` (metric/1, span/1, audit/1, heartbeat/1) as the policy wants it stored."""
        tag = self._tags[type(event)]
        tenant, stable, rules = event.tenant, tag == "metric/1", self.policy.events[tag]  # type: ignore[attr-defined]
        plan = self._plans[tag]

        def subject() -> str | None:  # asked only when a value is to be encrypted
            fields = {name: getattr(event, name) for name, _ in plan}
            return self.subject(*(v for v in fields.values() if isinstance(v, dict)), fields)

        changes: dict[str, Any] = {}
        for name, is_map in plan:
            value = getattr(event, name)
            rule = rules.get(name)
            if is_map:
                new = self.mapping(tenant, value, rule if isinstance(rule, FieldRules) else _NONE, subject, stable)
            elif isinstance(rule, str):
                new = self.classified(tenant, rule, value, subject, stable)
            else:
                new = self.scan(tenant, value)
            if new is not value and new != value:
                changes[name] = new
        return msgspec.structs.replace(event, **changes) if changes else event

    # ------------------------------------------------------------------ OTLP rows

    def spans(self, rows: list[dict[str, Any]]) -> None:
        """``otel_traces`` rows (``schemas.otlp.span_rows``, tenant claimed) redacted in place."""
        resources: dict[int, dict[str, str]] = {}
        span_rules = self.policy.otlp_span
        for row in rows:
            original = row["ResourceAttributes"]
            resource = self._resource(row, resources)
            tenant = resource["tenant"]
            attrs = row["SpanAttributes"]
            subject = partial(self.subject, attrs, original)  # named in clear: its key is found by the clear name
            row["SpanAttributes"] = self.mapping(tenant, attrs, span_rules, subject)
            row["Events.Attributes"] = [self.mapping(tenant, a, span_rules, subject) for a in row["Events.Attributes"]]
            row["Links.Attributes"] = [self.mapping(tenant, a, span_rules, subject) for a in row["Links.Attributes"]]
            for name in ("SpanName", "StatusMessage", "TraceState", "ScopeName", "ScopeVersion"):
                row[name] = self.scan(tenant, row[name])
            row["Events.Name"] = [self.scan(tenant, n) for n in row["Events.Name"]]
            row["Links.TraceState"] = [self.scan(tenant, s) for s in row["Links.TraceState"]]

    def metric_rows(self, rows: list[dict[str, Any]]) -> None:
        """``otel_metrics_gauge`` / ``otel_metrics_sum`` rows (``schemas.otlp.metric_rows``, tenant
        claimed) redacted in place; data point attributes stably, since they become labels."""
        resources: dict[int, dict[str, str]] = {}
        metric_rules = self.policy.otlp_metric
        for row in rows:
            resource = self._resource(row, resources)
            tenant = resource["tenant"]
            row["ScopeAttributes"] = self.mapping(tenant, row["ScopeAttributes"], self.policy.otlp_resource, stable=True)
            row["Attributes"] = self.mapping(tenant, row["Attributes"], metric_rules, stable=True)
            row["Exemplars.FilteredAttributes"] = [self.mapping(tenant, a, metric_rules, stable=True)
                                                   for a in row["Exemplars.FilteredAttributes"]]
            for name in ("MetricName", "MetricDescription", "MetricUnit", "ScopeName", "ScopeVersion",
                         "ResourceSchemaUrl", "ScopeSchemaUrl"):
                row[name] = self.scan(tenant, row[name])

    def _resource(self, row: dict[str, Any], done: dict[int, dict[str, str]]) -> dict[str, str]:
        """The row's resource attributes redacted (once per resource: its rows share the dict), and
        ``ServiceName`` made from them again. Stable: service and region name series."""
        original = row["ResourceAttributes"]
        resource = done.get(id(original))
        if resource is None:
            resource = done[id(original)] = self.mapping(original["tenant"], original, self.policy.otlp_resource,
                                                         stable=True, keep=TENANT_ATTRIBUTES)
        row["ResourceAttributes"] = resource
        row["ServiceName"] = resource.get("service.name", "")
        return resource


_NONE = FieldRules({})


def _text_fields(event_type: type[msgspec.Struct]) -> list[tuple[str, bool]]:
    """``(field, is_map)`` of the text and map fields of an event type, structural ones left out."""
    out = []
    for f in msgspec.inspect.type_info(event_type).fields:  # type: ignore[attr-defined]
        t = f.type.value_type if isinstance(f.type, msgspec.inspect.Metadata) else f.type
        if f.name in STRUCTURAL:
            continue
        if isinstance(t, msgspec.inspect.DictType):
            out.append((f.name, True))
        elif isinstance(t, msgspec.inspect.StrType):
            out.append((f.name, False))
    return out


# ---------------------------------------------------------------------- raw payloads (dead letters)

_JSON_STRING = r'"((?:[^"\\]|\\.)*)(?:"|\Z)'  # a value cut off by the end of a truncated record, too
_BINARY = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_CONTROL = re.compile(r"[\x00-\x1f]")  # in protobuf, also the tags 0x09, 0x0a, 0x0d


@lru_cache(maxsize=8)
def _field_patterns(names: tuple[str, ...]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Fields named ``names`` in JSON (``"name": "value"`` and OTLP/JSON's ``"key": "name", "value":
    {"stringValue": "value"}``: the value is group 2 or 4) and in protobuf (an OTLP ``KeyValue``
    with a string value: the value's length is group ``len``, the value follows the match)."""
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    json = re.compile(rf'"(?P<name>{alternatives})"\s*:\s*{_JSON_STRING}'
                      rf'|"key"\s*:\s*"(?P<okey>{alternatives})"\s*,\s*"value"\s*:\s*\{{\s*"\w+"\s*:\s*{_JSON_STRING}')
    proto = re.compile(rf"\n(?P<klen>[\x01-\x7f])(?P<key>{alternatives})\x12[\x00-\x7f]\n(?P<len>[\x00-\x7f])", re.DOTALL)
    return json, proto


def _mark(label: str, original: str) -> str:
    return REDACTED + label


def _mask(label: str, original: str) -> str:
    """The mark cut or padded to the original's length: binary formats (protobuf) keep their lengths."""
    return (REDACTED + label)[:len(original)].ljust(len(original), "*")


def scrub_text(text: str, policy: Policy, mark: Callable[[str, str], str] = _mark) -> str:
    """``text`` with the values of fields the policy classifies (by exact name, in JSON or
    protobuf) and every detector hit replaced by ``mark(class or detector, value)``."""
    text = _scrub_fields(text, policy, mark)
    return policy.detector.replace(text, lambda hit: mark(hit.detector, hit.text))


def _scrub_fields(text: str, policy: Policy, mark: Callable[[str, str], str]) -> str:
    classes = policy.classified_names()
    if not classes:
        return text
    json, proto = _field_patterns(tuple(classes))

    def json_field(match: re.Match[str]) -> str:
        name, group = (match["name"], 2) if match["name"] is not None else (match["okey"], 4)
        value = match[group]
        if not value or _TOKEN.fullmatch(value):
            return match.group()
        at, to, whole = match.start(group) - match.start(), match.end(group) - match.start(), match.group()
        return whole[:at] + mark(classes[name], value) + whole[to:]

    text = json.sub(json_field, text)
    parts, last = [], 0
    for match in proto.finditer(text):
        if ord(match["klen"]) == len(match["key"]):
            value = text[match.end():match.end() + ord(match["len"])]
            parts += (text[last:match.end()], _mask(classes[match["key"]], value))
            last = match.end() + len(value)
    return "".join(parts) + text[last:] if parts else text


def _scrub_protobuf(text: str, policy: Policy) -> str:
    """Binary ``text`` (bytes as latin-1) scrubbed as protobuf: every string field at any depth
    by the detectors, masked length for length; whatever does not parse (a truncated or
    corrupt tail, a bytes field) is scanned as it is."""
    out = list(text)

    def scan(start: int, end: int) -> None:
        masked = policy.detector.replace(text[start:end], lambda hit: _mask(hit.detector, hit.text))
        out[start:end] = masked

    raw = text.encode("latin-1")  # the bytes again: one character per byte

    def walk(start: int, end: int, depth: int) -> int:
        """Scrub the fields in [start, end); returns where parsing stopped (``end`` if it all parsed)."""
        pos = start
        while pos < end:
            field_start = pos
            tag, pos = read_varint(raw, pos, end)
            if tag is None or tag >> 3 == 0:
                return field_start
            wire = tag & 7
            if wire == 0:
                value, pos = read_varint(raw, pos, end)
                if value is None:
                    return field_start
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            elif wire == 2:
                size, pos = read_varint(raw, pos, end)
                if size is None or pos + size > end:
                    return field_start
                body = text[pos:pos + size]
                if not _CONTROL.search(body):  # a string (or bytes that look like one)
                    scan(pos, pos + size)
                elif depth >= 32 or walk(pos, pos + size, depth + 1) != pos + size:
                    scan(pos, pos + size)  # not a message after all: bytes
                pos += size
            else:
                return field_start
            if pos > end:
                return field_start
        return pos

    stopped = walk(0, len(text), 0)
    if stopped < len(text):
        scan(stopped, len(text))
    return "".join(out)


def scrub_payload(payload: bytes, policy: Policy) -> bytes:
    """``payload`` (any bytes: JSON, protobuf, text) scrubbed like :func:`scrub_text`, byte for byte
    outside the redacted stretches. A binary payload is read as protobuf (the OTLP topics'
    encoding) and every redacted stretch keeps its length, so a record that parsed still parses
    (and replays) with its personal data masked.

    >>> scrub_payload(b"\\x0a\\x11patient.diagnosis\\x12\\x05\\x0a\\x03flu", load_policy())
    b'\\n\\x11patient.diagnosis\\x12\\x05\\n\\x03red'
    >>> scrub_payload(b"\\x0a\\x0c203.0.113.77z\\x03abc\\xff", load_policy())  # a field tag right after the value
    b'\\n\\x0credacted:ipvz\\x03abc\\xff'
    """
    text = payload.decode("latin-1")
    if _BINARY.search(text):
        scrubbed = _scrub_protobuf(_scrub_fields(text, policy, _mask), policy)
    else:
        scrubbed = scrub_text(text, policy)
    return payload if scrubbed == text else scrubbed.encode("latin-1")


@lru_cache(maxsize=1)
def _process_policy() -> Policy:
    return policy_of(get_settings())


def scrub_dead_letter(payload: bytes, reason: str) -> tuple[bytes, str]:
    """A rejected record's bytes and its reason (which may quote it), scrubbed under this
    process's policy (``M1_PII_POLICY_PATH``)."""
    policy = _process_policy()
    return scrub_payload(payload, policy), scrub_text(reason, policy)
