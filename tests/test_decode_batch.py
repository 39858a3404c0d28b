"""Batch decoding of the metrics path gives each record what the strict, record-by-record path gives.

``EventDecoder.decode_each`` checks names against the names it has seen instead of the
regular expression, and ``SeriesOf`` remembers each series' redaction and key: both must leave
every result and every reason as they were, record by record, batch after batch.
"""

from __future__ import annotations

import gc

import msgspec
import pytest

from compliance.policy import load_policy
from compliance.pseudonym import Pseudonymiser
from compliance.redact import Redactor
from schemas.events import EventDecoder, InvalidEvent, MetricPoint, encode
from streams.metrics_pipeline import Record, SeriesOf, decode_batch, too_far_ahead

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
GOOD = {"schema": "metric/1", "ts": T0, "tenant": "acme", "region": "eu-west-1", "service": "api",
        "metric": "latency_ms", "value": 12.5, "labels": {"host": "a"}}


def raw(**changes: object) -> bytes:
    return msgspec.json.encode({k: v for k, v in {**GOOD, **changes}.items() if v is not ...})


PAYLOADS = [
    raw(), raw(value=13.0), raw(labels={}), raw(labels=...), raw(labels={"host": "b", "az": "1"}),
    raw(service="new.svc-2"),  # a new name: checked by the pattern, then known
    raw(service="bad name!"), raw(metric="bad name!"), raw(labels={"host": "a", "bad key": "x"}),
    raw(tenant="api\n"), raw(tenant="api"),  # '$' in the pattern matches before a final newline
    raw(region=""), raw(service="x" * 129), raw(labels={f"k{i}": "v" for i in range(33)}), raw(labels={"host": "v" * 257}),
    raw(ts=12), raw(ts=5e9), raw(value="12"), raw(value=...), raw(extra=1), raw(schema="metric/2"),
    raw(service="bad name!", ts=12),  # the first fault in the document is named: here ts, there the service
    b'{"schema":"metric/1","service":"bad name!","ts":12,"tenant":"a","region":"r","metric":"m","value":1}',
    raw(labels={"k": 1}), raw(value=1) + b" ", b" " + raw(),
    b'{"schema":"metric/1","ts":1767225600,"tenant":"a","region":"r","service":"s","metric":"m","value":1e400}',
    b"{not json", b"", b"[]", b"null", raw() + raw(), None, raw(labels={"host": "v" * 600}),
]


def outcome(payload: bytes | None, decoder: EventDecoder) -> object:
    try:
        return decoder.decode(payload)
    except InvalidEvent as exc:
        return exc.reason


@pytest.mark.parametrize("rounds", [1, 3])
def test_decode_each_gives_each_payload_what_decode_gives(rounds: int) -> None:
    strict, batch = EventDecoder(MetricPoint, max_bytes=600), EventDecoder(MetricPoint, max_bytes=600)
    expected = [outcome(p, strict) for p in PAYLOADS]
    assert sum(isinstance(e, MetricPoint) for e in expected) == 10 and len({e for e in expected if isinstance(e, str)}) == 22
    for _ in range(rounds):  # later rounds: every valid name is known
        got = batch.decode_each(PAYLOADS)
        assert [g.reason if isinstance(g, InvalidEvent) else g for g in got] == expected
        assert all(type(g) in (MetricPoint, InvalidEvent) for g in got)


def test_a_known_name_in_another_field_still_needs_its_own_checks() -> None:
    decoder = EventDecoder(MetricPoint)
    decoder.decode_each([raw(service="x" * 128)])
    [point] = decoder.decode_each([raw(labels={"x" * 128: "v"})])  # a label key is a Name too
    assert point.labels == {"x" * 128: "v"}
    [refused] = decoder.decode_each([raw(labels={"x" * 128: "v" * 257})])
    assert refused.reason == outcome(raw(labels={"x" * 128: "v" * 257}), decoder)


def test_a_raw_twin_with_the_identity_text_of_an_accepted_payload_becomes_what_decode_gives() -> None:
    """``from_templates`` makes, of a payload whose identity fields have the very JSON text of a
    template's payload, what a strict decode gives it; a payload of other text has another identity."""
    decoder = EventDecoder(MetricPoint, max_bytes=600)
    infinite = raw().replace(b'"value":12.5', b'"value":1e400')
    accepted = [p for p in PAYLOADS if isinstance(outcome(p, decoder), MetricPoint)]
    [*raws] = decoder.read_raw_each([*PAYLOADS, infinite, raw() + b" " * 600])
    matched = 0
    for template_payload in accepted:
        template, [template_raw] = decoder.decode(template_payload), decoder.read_raw_each([template_payload])
        for payload, twin in zip([*PAYLOADS, infinite, raw() + b" " * 600], raws):
            expected = outcome(payload, decoder)
            if twin is None:  # refused by a check of its own (the reason may still name a pattern found first)
                assert isinstance(expected, str)
                continue
            if decoder.identity(twin) != decoder.identity(template_raw):  # another text: not this template's
                continue
            matched += 1
            [made] = decoder.from_templates([template], [twin])
            if isinstance(expected, MetricPoint):
                assert made == expected and type(made) is MetricPoint
                assert made.labels is template.labels  # the identity's values are shared, not copied
            else:
                assert made is None and expected.startswith("value must be finite")
    assert matched >= 12


def test_records_keyed_by_a_remembered_series_get_what_the_definition_gives_them() -> None:
    """A record keyed by a series seen before, with that series' fields, skips the names' check:
    its names are the series' own. Every other record of that key, bad or good, is decoded in full."""
    decoder, series_of = EventDecoder(MetricPoint, max_bytes=600), SeriesOf(lambda p: p)
    key = decoder.decode(raw()).series_key.encode()
    infinite = raw().replace(b'"value":12.5', b'"value":1e400')
    values = [raw(), *PAYLOADS, infinite, raw() + b" " * 600, raw(ts=T0 + 7200), raw(value=7.0)]
    for _ in range(2):  # then: the series and every valid name remembered
        records = [Record("metrics", 0, i, key, value) for i, value in enumerate(values)]
        out = decode_batch(decoder, records, T0 + 100, 3600.0, redact=series_of)
        dead, points, rekeyed = {}, [], []  # the definition: each record decoded strictly, then checked
        for record in records:
            event = outcome(record.value, EventDecoder(MetricPoint, max_bytes=600))
            if isinstance(event, str):
                dead[record.offset] = event
            elif event.ts > T0 + 100 + 3600.0:
                dead[record.offset] = too_far_ahead(event.ts, T0 + 100, 3600.0)
            elif event.series_key.encode() == key:
                points.append(event)
            else:
                rekeyed.append(record.value)
        assert {d.offset: d.reason for d in out.dead_letters} == dead and len(dead) == 27
        assert out.points == {key.decode(): points} and len(points) == 6
        assert all(type(p) is MetricPoint for p in points)
        assert [value for _, _, value in out.rekeyed] == rekeyed and len(rekeyed) == 6


def grouped(points: list[MetricPoint]) -> dict[str, list[MetricPoint]]:
    """``points`` by series key, in record order."""
    out: dict[str, list[MetricPoint]] = {}
    for point in points:
        out.setdefault(point.series_key, []).append(point)
    return out


def test_a_batch_dead_letters_each_bad_record_with_its_own_reason_and_keeps_every_good_one() -> None:
    decoder = EventDecoder(MetricPoint, max_bytes=600)
    points = [MetricPoint(T0 + i, "acme", "eu-west-1", "api", "latency_ms", float(i), {"host": f"h{i % 3}"}) for i in range(50)]
    records = []
    for i, point in enumerate(points):  # each good record followed by one of the payloads, keyed otherwise
        records.append(Record("metrics", 0, 2 * i, point.series_key.encode(), encode(point)))
        records.append(Record("metrics", 0, 2 * i + 1, b"k", PAYLOADS[i % len(PAYLOADS)]))
    ahead = MetricPoint(T0 + 7200, "acme", "eu-west-1", "api", "latency_ms", 1.0, {"host": "h0"})
    records.append(Record("metrics", 0, 100, ahead.series_key.encode(), encode(ahead)))
    expected = {r.offset: outcome(r.value, decoder) for r in records[1:-1:2]}

    out = decode_batch(decoder, records, T0 + 100, 3600.0, redact=lambda p: p)
    reasons = {d.offset: d.reason for d in out.dead_letters}
    assert reasons.pop(100).startswith("ts is 7,100 s ahead of the worker's clock")
    assert reasons == {offset: e for offset, e in expected.items() if isinstance(e, str)}
    assert [value for _, _, value in out.rekeyed] == [records[o].value for o, e in expected.items() if isinstance(e, MetricPoint)]
    assert out.points == grouped(points)
    assert {s: [r.offset for r in out.sources(s)] for s in out.points} == {
        s: [2 * int(p.ts - T0) for p in ps] for s, ps in grouped(points).items()}
    assert out.sources("no such series") == []


def redactor() -> Redactor:
    return Redactor(load_policy(), Pseudonymiser(bytes(range(32))))


def test_series_of_redacts_every_point_as_the_redactor_does_and_once_per_series() -> None:
    plain = redactor()
    calls = 0

    def counted(point: MetricPoint) -> MetricPoint:
        nonlocal calls
        calls += 1
        return plain.event(point)

    series_of = SeriesOf(counted)
    pii = {"user_id": "u1", "peer": "x 203.0.113.5", "host": "h1"}
    batches = [[MetricPoint(T0 + 60 * b + i, "acme", "eu-west-1", service, "latency_ms", float(i), labels)
                for i in range(5) for service, labels in (("api", {"host": "h1"}), ("10.1.2.3", pii), ("db", pii))]
               for b in range(4)]
    decoder = EventDecoder(MetricPoint)
    for batch in batches:
        redacted = [plain.event(p) for p in batch]
        records = [Record("metrics", 0, i, r.series_key.encode(), encode(p)) for i, (p, r) in enumerate(zip(batch, redacted))]
        out = decode_batch(decoder, records, T0 + 3600, 60.0, redact=series_of)
        assert out.points == grouped(redacted) and not out.rekeyed and not out.dead_letters
        got = [p for points in out.points.values() for p in points]
        assert all(p.labels["user_id"] == plain.pseudonymise("acme", "u1") for p in got if "user_id" in p.labels)
    assert calls == 3  # once per series, the first time it was seen


def test_series_of_takes_nothing_remembered_for_a_point_whose_fields_differ_from_its_keys_series() -> None:
    plain = redactor()
    series_of = SeriesOf(plain.event)
    point = MetricPoint(T0, "acme", "eu-west-1", "api", "latency_ms", 1.0, {"host": "h1"})
    key = point.series_key.encode()
    assert series_of(key, point) == (point, point.series_key, True)
    forged = msgspec.structs.replace(point, labels={"host": "h1", "user_id": "u1"})  # keyed by another series
    redacted, series, keyed = series_of(key, forged)
    assert redacted == plain.event(forged) and redacted.labels["user_id"] != "u1" and not keyed
    assert series == redacted.series_key != point.series_key
    clear = msgspec.structs.replace(point, service="10.1.2.3")  # keyed by its clear key: re-keyed, redacted
    redacted, series, keyed = series_of(clear.series_key.encode(), clear)
    assert not keyed and redacted.service == plain.pseudonymise("acme", "10.1.2.3") and series == redacted.series_key


def test_decoded_points_and_records_are_not_tracked_by_the_garbage_collector() -> None:
    [point] = EventDecoder(MetricPoint).decode_each([raw()])
    assert not gc.is_tracked(point) and not gc.is_tracked(Record("metrics", 0, 0, None, raw()))


@pytest.mark.parametrize("template_labels", [{}, ...])
def test_a_field_named_twice_in_a_remembered_series_record_is_checked_as_decode_checks_it(template_labels: object) -> None:
    """The raw twin keeps the last of a field named twice, unchecked; such a record must not pass for its
    series' usual record, even when it leaves out an optional field to keep the count of its fields."""
    decoder, series_of = EventDecoder(MetricPoint), SeriesOf(lambda p: p)
    template = raw(labels=template_labels)
    key = decoder.decode(template).series_key.encode()
    bad_tenant = b'"tenant":"%s",' % (b"t" * 129)
    twice = [template.replace(b'"tenant":', bad_tenant + b'"tenant":'),  # one field more
             raw(labels=...).replace(b'"tenant":', bad_tenant + b'"tenant":'),  # and one less
             raw(labels={}).replace(b'"tenant":', bad_tenant + b'"tenant":'),
             raw(labels=template_labels, schema=...).replace(b'"tenant":', bad_tenant + b'"tenant":')]  # no tag
    decode_batch(decoder, [Record("metrics", 0, 0, key, template)], T0, 60.0, redact=series_of)  # the template
    records = [Record("metrics", 0, i, key, value) for i, value in enumerate([template, *twice, template])]
    out = decode_batch(decoder, records, T0, 60.0, redact=series_of)
    assert [d.offset for d in out.dead_letters] == [1, 2, 3, 4]
    assert {d.reason for d in out.dead_letters} == {"Expected `str` of length <= 128 - at `$.tenant`"}
    assert [r.offset for r in out.records] == [0, 5]
