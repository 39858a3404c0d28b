"""A batch decoded at once gives each record what that record gets alone, in a batch of its own.

``decode_batch`` takes the usual records (a remembered series' points, keyed by it) in runs, and
every other record on its own; whatever the mix, the dead letters, reasons, re-keyed records,
points (redacted), series keys and sources must be those of the record-by-record definition.
"""

from __future__ import annotations

import msgspec

from compliance.policy import load_policy
from compliance.pseudonym import Pseudonymiser
from compliance.redact import Redactor
from schemas.events import EventDecoder, MetricPoint, encode
from streams.metrics_pipeline import BatchOutcome, Record, SeriesOf, decode_batch

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
NOW, AHEAD = T0 + 600, 3600.0
OWNERS = {"acme.metrics": "acme", "beta.metrics": "beta"}
REDACTOR = Redactor(load_policy(), Pseudonymiser(bytes(range(32))))


def point(i: int, service: str = "api", tenant: str = "acme", **labels: str) -> MetricPoint:
    return MetricPoint(T0 + i, tenant, "eu-west-1", service, "latency_ms", float(i), labels or {"host": "h1"})


def keyed(p: MetricPoint) -> bytes:
    """The key a producer gives ``p``: its series key once redacted."""
    return REDACTOR.event(p).series_key.encode()


def mixed() -> list[tuple[str, bytes | None, bytes | None]]:
    """(topic, key, value) of a batch of usual records with every kind of unusual one among them."""
    plain, pii = point(0), point(0, "10.1.2.3", user_id="u1", host="h1")  # the second is pseudonymised
    fresh = point(0, "fresh")  # a series first seen in the batch, then usual
    rows: list[tuple[str, bytes | None, bytes | None]] = []
    for i in range(60):
        usual = [msgspec.structs.replace(p, ts=T0 + i, value=float(i)) for p in (plain, pii)]
        rows += [("acme.metrics", keyed(p), encode(p)) for p in usual]
        unusual = [
            ("acme.metrics", keyed(plain), encode(msgspec.structs.replace(plain, ts=T0 + 7200))),  # ahead
            ("beta.metrics", keyed(plain), encode(usual[0])),  # acme's point on beta's topic
            ("acme.metrics", keyed(plain), encode(usual[1])),  # keyed by another series: re-keyed
            ("acme.metrics", keyed(pii), encode(usual[1]).replace(b'"value":', b'"x":1,"value":')),
            ("acme.metrics", keyed(plain), encode(usual[0]).replace(b'"value":%d.0' % i, b'"value":1e400')),
            ("acme.metrics", keyed(plain), b"{not json"), ("acme.metrics", keyed(plain), None),
            ("acme.metrics", keyed(plain), encode(msgspec.structs.replace(plain, labels={"host": "h" * 300}))),
            ("acme.metrics", keyed(pii), encode(msgspec.structs.replace(pii, labels={"host": "h1", "user_id": "u1"}))),
            ("acme.metrics", keyed(fresh), encode(msgspec.structs.replace(fresh, ts=T0 + i))),
            ("acme.metrics", None, encode(usual[0])),
            # a field twice: the last one is the point's, yet the first is checked too (msgspec keeps the last)
            ("acme.metrics", keyed(plain), encode(usual[0]).replace(b'"tenant":', b'"tenant":"%s","tenant":' % (b"t" * 129))),
            ("acme.metrics", keyed(plain), encode(usual[0]).replace(b'{"host"', b'{"host":"%s","host"' % (b"h" * 257))),
        ]
        rows.append(unusual[i % len(unusual)])
    return rows


def alone(rows: list[tuple[str, bytes | None, bytes | None]]) -> BatchOutcome:
    """The definition: each record in a batch of its own, with a fresh decoder and nothing remembered."""
    total = BatchOutcome()
    for offset, (topic, key, value) in enumerate(rows):
        one = decode_batch(EventDecoder(MetricPoint), [Record(topic, 0, offset, key, value)], NOW, AHEAD, OWNERS.get,
                           redact=REDACTOR.event)
        total.dead_letters += one.dead_letters
        total.rekeyed += one.rekeyed
        total.records += one.records
        total.keys += one.keys
        for series, points in one.points.items():
            total.points.setdefault(series, []).extend(points)
    return total


def view(out: BatchOutcome) -> tuple:
    return ([(d.offset, d.reason, d.payload_b64) for d in out.dead_letters], out.rekeyed, out.points,
            [r.offset for r in out.records], out.keys)


def test_a_batch_gives_every_record_what_it_gets_alone_batch_after_batch() -> None:
    rows = mixed()
    records = [Record(topic, 0, offset, key, value) for offset, (topic, key, value) in enumerate(rows)]
    expected = view(alone(rows))
    dead, rekeyed, points, _, _ = expected
    assert len(dead) == 43 and len(rekeyed) == 9 and len(points) == 3  # every kind is there
    assert {reason.split(" ")[0] for _, reason, _ in dead} == {"ts", "tenant", "Object", "Number", "malformed", "empty",
                                                               "Expected"}
    decoder, series_of = EventDecoder(MetricPoint), SeriesOf(REDACTOR.event)
    for round_ in range(3):  # nothing remembered, then every series and name
        got = decode_batch(decoder, records, NOW, AHEAD, OWNERS.get, redact=series_of)
        assert view(got) == expected
        assert all(type(p) is MetricPoint for ps in got.points.values() for p in ps)
        maps = len({id(p.labels) for ps in got.points.values() for p in ps})  # made from a template: its map
        assert maps == len(got.records) if round_ == 0 else maps < len(got.records) // 4


def test_a_batch_of_usual_records_in_one_run_is_what_it_is_alone() -> None:
    usual = [p for i in range(50) for p in (point(i), point(i, "10.1.2.3", user_id="u1", host=f"h{i % 2}"))]
    rows = [("acme.metrics", keyed(p), encode(p)) for p in usual]
    records = [Record(topic, 0, offset, key, value) for offset, (topic, key, value) in enumerate(rows)]
    decoder, series_of = EventDecoder(MetricPoint), SeriesOf(REDACTOR.event)
    decode_batch(decoder, records[:3], NOW, AHEAD, OWNERS.get, redact=series_of)  # the series remembered
    got = decode_batch(decoder, records, NOW, AHEAD, OWNERS.get, redact=series_of)
    assert view(got) == view(alone(rows)) and len(got.records) == 100 and len(got.points) == 3
    assert got.points == {s: [REDACTOR.event(p) for p in usual if keyed(p).decode() == s] for s in got.points}
