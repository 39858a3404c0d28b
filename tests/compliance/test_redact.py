"""The redactor on each kind of input: metric points, audit events (with real subject keys in the
engine), OTLP rows, and the raw bytes of dead letters."""

from __future__ import annotations

import base64
import json

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from compliance.policy import load_policy
from compliance.pseudonym import Pseudonymiser
from compliance.redact import Redactor, scrub_payload, scrub_text
from compliance.subject_keys import SubjectKeys
from schemas.events import AuditEvent, MetricPoint
from schemas.otlp import decode_traces, metric_rows, span_rows
from sinks.clickhouse import Store
from streams.metrics_pipeline import Record, dead_letter
from tests.compliance.test_planted_pii import gauge_request, span_request

SECRET = bytes(range(32))
POLICY = load_policy()
pseudonym = Pseudonymiser(SECRET)


@pytest.fixture
def redactor(store: Store) -> Redactor:
    keys = SubjectKeys(store, SECRET)
    return Redactor(POLICY, pseudonym, keys.encrypt, keys)


def test_a_metric_point_keeps_its_tenant_and_gets_a_stable_series(redactor: Redactor) -> None:
    point = MetricPoint(1.7e9, "acme", "eu-west-1", "10.1.2.3", "latency_ms", 1.0,
                        {"user_id": "u1", "diagnosis": "flu", "peer": "x 203.0.113.5", "card": "4111111111111111", "host": "h1"})
    redacted = redactor.event(point)
    assert redacted.tenant == "acme" and redacted.service == pseudonym("acme", "10.1.2.3")
    assert redacted.labels == {"user_id": pseudonym("acme", "u1"), "diagnosis": pseudonym("acme", "flu"),  # PHI: stable
                               "peer": "x " + pseudonym("acme", "203.0.113.5"), "card": "redacted:card", "host": "h1"}
    assert redactor.event(point).series_key == redacted.series_key  # the same series every time
    assert redactor.event(redacted) == redacted  # redacting twice changes nothing (a re-keyed record)
    clean = MetricPoint(1.7e9, "acme", "eu-west-1", "api", "latency_ms", 1.0, {"host": "h1"})
    assert redactor.event(clean) is clean
    assert redactor.event(point).labels["user_id"] != Redactor(POLICY, pseudonym).event(
        MetricPoint(1.7e9, "beta", "eu-west-1", "api", "m", 1.0, {"user_id": "u1"})).labels["user_id"]  # per tenant


def test_audit_phi_is_encrypted_under_the_subjects_own_key(redactor: Redactor, store: Store) -> None:
    event = AuditEvent(ts=1.7e9, tenant="acme", region="eu", actor="key:1", action="record.read", resource="r",
                       outcome="success", details={"user_id": "u-7", "diagnosis": "asthma", "remote": "10.0.0.9"})
    redacted = redactor.event(event)
    token = redacted.details["diagnosis"]
    keys = redactor.keys
    assert keys is not None and token.startswith(f"enc:v1:{keys.subject_ref('acme', 'u-7')}:")
    assert keys.decrypt("acme", token) == "asthma"
    assert redactor.event(event) == redacted  # a replay gives the same token, so the same event id
    assert redacted.details["remote"] == pseudonym("acme", "10.0.0.9") and redacted.details["user_id"] == pseudonym("acme", "u-7")
    anonymous = redactor.event(AuditEvent(ts=1.7e9, tenant="acme", region="eu", actor="key:1", action="a", resource="r",
                                          outcome="success", details={"diagnosis": "asthma"}))
    assert anonymous.details["diagnosis"] == "redacted:phi"  # no subject: no key could recover it
    assert Redactor(POLICY, pseudonym).event(event).details["diagnosis"] == "redacted:phi"  # no keys at all


def test_span_rows_are_redacted_in_place_with_the_tenant_and_service_kept(redactor: Redactor) -> None:
    rows = span_rows(span_request(1_700_000_000 * 10**9, bytes(range(16))))
    rows[0]["ResourceAttributes"]["tenant"] = "acme"  # what the pipeline's claim sets
    redactor.spans(rows)
    row = rows[0]
    assert row["ResourceAttributes"]["tenant"] == "acme" and row["ServiceName"] == "checkout"
    assert row["ResourceAttributes"]["host.ip"] == pseudonym("acme", "203.0.113.77")
    assert row["SpanAttributes"]["enduser.id"] == pseudonym("acme", "planted.alice@example.com")
    assert row["SpanAttributes"]["patient.diagnosis"].startswith("enc:v1:")  # the span names its subject
    assert row["SpanAttributes"]["http.request.header.authorization"] == "redacted:secret"
    assert row["Events.Attributes"] == [{"note": "card redacted:card"}]
    assert "planted" not in json.dumps(row, default=str)


def test_metric_rows_keep_stable_attributes_since_they_become_labels(redactor: Redactor) -> None:
    rows = metric_rows(gauge_request(1_700_000_000 * 10**9))
    for row in rows.gauge:
        row["ResourceAttributes"]["tenant"] = "acme"
    redactor.metric_rows(rows.gauge)
    attributes = rows.gauge[0]["Attributes"]
    assert attributes["patient.diagnosis"] == pseudonym("acme", "planted-diagnosis-hypertension")
    assert attributes["user.email"] == pseudonym("acme", "planted.alice@example.com") and attributes["card"] == "redacted:card"


def test_dead_letter_bytes_and_reason_are_scrubbed_and_keep_their_size() -> None:
    raw = b'{"schema":"metric/1","labels":{"email":"a@b.io","ip":"10.0.0.1","diagnosis":"flu"},"value":"x"}'
    letter = dead_letter(Record("metrics", 0, 7, None, raw), "Invalid value 'a@b.io'", 1.7e9, 65_536)
    payload = base64.b64decode(letter.payload_b64)
    assert payload == (b'{"schema":"metric/1","labels":{"email":"redacted:direct_identifier","ip":"redacted:ipv4",'
                       b'"diagnosis":"redacted:phi"},"value":"x"}')
    assert letter.reason == "Invalid value 'redacted:email'" and letter.payload_bytes == len(raw)
    cut = dead_letter(Record("metrics", 0, 8, None, raw[:-30]), "malformed JSON", 1.7e9, 65_536)
    assert b"flu" not in base64.b64decode(cut.payload_b64)  # a classified value cut off by the end, too


def test_otlp_json_attributes_are_found_by_name() -> None:
    raw = b'{"attributes":[{"key":"patient.diagnosis","value":{"stringValue":"flu"}},{"key":"x","value":{"stringValue":"ok"}}]}'
    assert scrub_payload(raw, POLICY) == raw.replace(b'"flu"', b'"redacted:phi"')


def test_a_protobuf_dead_letter_still_parses_with_its_personal_data_masked() -> None:
    raw = span_request(1_700_000_000 * 10**9, bytes(range(16))).SerializeToString()
    scrubbed = scrub_payload(raw, POLICY)
    assert len(scrubbed) == len(raw) and b"planted" not in scrubbed.replace(b"redacted", b"")
    span = decode_traces(scrubbed).resource_spans[0].scope_spans[0].spans[0]
    values = {kv.key: kv.value.string_value for kv in span.attributes}
    assert values["patient.diagnosis"].startswith("redacted:phi") and values["auth.jwt"].startswith("redacted:jwt")
    assert values["client.address"].startswith("redacted:qua") and span.name.startswith("GET /users/redacted:email")
    assert isinstance(decode_traces(scrubbed), ExportTraceServiceRequest)


def test_free_text_reasons_are_scanned() -> None:
    assert scrub_text("store: cannot parse '203.0.113.9' for user x@y.org", POLICY) == \
        "store: cannot parse 'redacted:ipv4' for user redacted:email"


def test_a_spans_subject_named_by_its_resource_is_found_by_its_clear_name(redactor: Redactor) -> None:
    request = span_request(1_700_000_000 * 10**9, bytes(range(16)))
    resource = request.resource_spans[0].resource
    resource.attributes.add(key="enduser.id", value=resource.attributes[0].value.__class__(string_value="carol"))
    span = request.resource_spans[0].scope_spans[0].spans[0]
    kept = [kv for kv in span.attributes if kv.key != "enduser.id"]
    del span.attributes[:]
    span.attributes.extend(kept)
    rows = span_rows(request)
    rows[0]["ResourceAttributes"]["tenant"] = "acme"
    redactor.spans(rows)
    assert rows[0]["ResourceAttributes"]["enduser.id"] == pseudonym("acme", "carol")
    keys = redactor.keys
    assert keys is not None and rows[0]["SpanAttributes"]["patient.diagnosis"].startswith(
        f"enc:v1:{keys.subject_ref('acme', 'carol')}:")
