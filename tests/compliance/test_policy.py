"""The policy file: the shipped default loads and covers what the issue names; every fault of a
bad file is reported with where it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from compliance.detect import DETECTORS
from compliance.policy import DATA_CLASSES, EVENT_TYPES, PolicyError, load_policy, load_policy_text, policy_of
from core.settings import Settings

VALID_HEAD = "version: 1\nclasses: {direct_identifier: pseudonymise, quasi_identifier: pseudonymise, phi: encrypt, secret: redact}\n"


def test_the_default_policy_covers_every_class_detector_event_type_and_the_named_attributes() -> None:
    policy = load_policy()
    assert set(policy.actions) == set(DATA_CLASSES) and set(policy.detector_class) == set(DETECTORS)
    assert set(policy.source.events) == set(EVENT_TYPES)
    assert {policy.otlp_span.of(k) for k in ("enduser.id", "user.email")} == {"direct_identifier"}
    assert policy.otlp_span.of("client.address") == policy.otlp_span.of("db.statement") == "quasi_identifier"
    assert policy.otlp_span.of("http.request.header.authorization") == "secret"
    assert policy.otlp_span.of("patient.blood_type") == "phi"  # a glob
    assert policy.event_field("audit/1", "details", "diagnosis") == "phi"
    assert policy.event_field("metric/1", "labels", "user_id") == "direct_identifier"
    assert policy.event_field("audit/1", "actor") is None  # scanned by the detectors only
    assert policy.event_field("metric/1", "labels", "host") is None


def test_settings_name_the_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(VALID_HEAD + "detectors: {email: direct_identifier}\n")
    assert set(policy_of(Settings(pii_policy_path=path)).detector_class) == {"email"}
    assert set(policy_of(Settings(pii_policy_path="")).detector_class) == set(DETECTORS)  # empty: the default
    with pytest.raises(PolicyError, match=r"missing\.yaml: cannot read the policy file: No such file"):
        load_policy(tmp_path / "missing.yaml")


@pytest.mark.parametrize(("text", "message"), [
    ("version: 1\nclasses: {phi: redact}", "every data class needs an action, missing: direct_identifier, quasi_identifier, secret"),
    (VALID_HEAD + "detectors: {passport: secret}", "detectors: unknown detectors passport"),
    (VALID_HEAD + "detectors: {email: personal}", "detectors.email: Input should be 'direct_identifier'"),
    (VALID_HEAD + "events: {metric/2: {}}", "unknown event type 'metric/2'"),
    (VALID_HEAD + "events: {audit/1: {details: phi}}", "'details' is a map; classify its keys as 'details.<key>'"),
    (VALID_HEAD + "events: {audit/1: {actor.name: phi}}", "'actor' is not a map, it has no key 'name'"),
    (VALID_HEAD + "events: {metric/1: {tenant: phi}}", "'tenant' is never classified"),
    (VALID_HEAD + "events: {metric/1: {value: phi}}", "no text field 'value'"),
    (VALID_HEAD + "otlp: {spans: {}}", "otlp.spans: Extra inputs are not permitted"),
    (VALID_HEAD + "surprise: 1", "surprise: Extra inputs are not permitted"),
    ("version: 2\n" + VALID_HEAD.split("\n", 1)[1], "version: Input should be 1"),
    ("classes: [", "not valid YAML at line 1"),
    ("- a\n- b", "a policy is a YAML mapping"),
])
def test_a_bad_policy_is_refused_saying_where(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match="^my.yaml: ") as caught:
        load_policy_text(text, "my.yaml")
    assert message in str(caught.value)


def test_every_fault_is_reported_at_once() -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(VALID_HEAD + "detectors: {mail: secret}\nevents: {audit/1: {details: phi, foo: secret}}", "x")
    assert all(part in str(caught.value) for part in ("unknown detectors mail", "'details' is a map", "no text field 'foo'"))


def test_m1_compliance_policy_check_and_show(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from m1.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["compliance", "policy", "check"])
    assert ok.exit_code == 0 and "default_policy.yaml: ok: 4 classes, 10 detectors" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nclasses: {phi: shred}\n")
    refused = runner.invoke(app, ["compliance", "policy", "check", str(bad)])
    assert refused.exit_code == 1 and "classes.phi: Input should be" in refused.output
    shown = runner.invoke(app, ["compliance", "policy", "show"])
    assert shown.exit_code == 0 and "http.request.header.authorization" in shown.output and "enduser.id" in shown.output
