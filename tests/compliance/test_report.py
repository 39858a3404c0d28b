"""The compliance report's checks on the real engine: each one passes on a deployment that does
what it checks and fails (with evidence) on one that does not; the score and the formats."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pytest

from audit.ingest import AuditIngest
from audit.signer import Signer
from compliance import report
from compliance.redact import Redactor
from compliance.retention import Retention
from core.settings import Settings
from schemas.events import AuditEvent, encode
from sinks.clickhouse import TS_TYPE, Store


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, audit_key_path=tmp_path / "audit.key")


@pytest.fixture
def store(settings_store: Store) -> Store:
    return settings_store


def chain(settings: Settings, store: Store, actions: list[str], tenant: str = "acme") -> None:
    ingest = AuditIngest(store, Signer(settings.audit_key_path, store), checkpoint_events=1, checkpoint_seconds=3600.0,
                         redact=Redactor.from_settings(settings).event)
    outcome = ingest.process([encode(AuditEvent(ts=time.time() + i / 1000, tenant=tenant, region="eu", actor="key:abc",
                                                action=a, resource=f"r{i}", outcome="success"))
                              for i, a in enumerate(actions)])
    assert not outcome.rejected


def access_row(store: Store, remote: str = "pii:0123456789abcdef") -> None:
    store.insert("access_log", {"ts": pa.array([int(time.time() * 1000)], TS_TYPE), "tenant": ["acme"], "subject": ["key:abc"],
                                "via": ["api_key"], "roles": [["viewer"]], "method": ["GET"], "path": ["/v1/whoami"],
                                "permission": ["authenticated"], "decision": ["allow"], "status": pa.array([200], pa.uint16()),
                                "reason": [""], "remote": [remote], "duration_ms": pa.array([1.0], pa.float32())})


def test_audit_checks_pass_on_a_working_trail_and_fail_on_a_tampered_or_missing_one(settings: Settings, store: Store) -> None:
    assert report.audit_chains_verify(settings, store).status == "fail"  # no trail at all
    assert report.access_audited(settings, store).status == "fail"
    assert report.changes_recorded(settings, store).status == "fail"
    chain(settings, store, ["config.start", "api.request", "audit.verify", "api.request"])
    access_row(store)
    for check in (report.audit_chains_verify, report.access_audited, report.monitoring_runs, report.changes_recorded):
        assert check(settings, store).status == "pass", check.__name__
    store.command("ALTER TABLE audit_log UPDATE event = replace(event, 'r2', 'r9') WHERE seq = 2 SETTINGS mutations_sync = 2")
    tampered = report.audit_chains_verify(settings, store)
    assert tampered.status == "fail" and "first bad seq 2" in str(tampered.evidence)


def test_retention_check(settings: Settings, store: Store, tmp_path: Path) -> None:
    failed = report.retention_set(settings, store)
    assert failed.status == "fail" and "NO TTL" in str(failed.evidence)
    Retention(settings, store).apply(materialize=False)
    assert report.retention_set(settings, store).status == "pass"
    short_audit = Settings(home=tmp_path, retention_days={"audit": 365})
    Retention(short_audit, store).apply(materialize=False)
    assert report.retention_set(short_audit, store).status == "fail"  # HIPAA wants 6 years


def test_personal_data_scan_finds_clear_values_without_showing_them(settings: Settings, store: Store) -> None:
    access_row(store)
    assert report.no_personal_data_in_clear(settings, store).status == "pass"
    store.insert("dead_letters", {"received_at": pa.array([0], TS_TYPE), "topic": ["metrics"], "partition": [0],
                                  "offset": [7], "reason": ["bad json"], "payload": ['{"user": "carol@example.org"}']})
    found = report.no_personal_data_in_clear(settings, store)
    assert found.status == "fail" and "dead_letters.payload: email x1" in str(found.evidence)
    assert "carol" not in str(found.evidence)


def test_transport_check(tmp_path: Path, store: Store) -> None:
    def status(**values: object) -> str:
        return report.transport_encrypted(Settings(home=tmp_path, **values), store).status

    assert status() == "pass"  # the local broker, the embedded store, the API on loopback
    assert status(kafka_bootstrap="kafka.internal:9092") == "fail"
    assert status(kafka_bootstrap="kafka.internal:9093", kafka_security_protocol="SASL_SSL") == "pass"
    assert status(clickhouse_url="http://ch.internal:8123") == "fail"
    assert status(web_bind="0.0.0.0") == "fail"


def test_key_files_check(settings: Settings, store: Store) -> None:
    chain(settings, store, ["api.request"])  # creates the signing key, 0600
    assert report.keys_protected(settings, store).status == "pass"
    settings.audit_key_path.chmod(0o644)
    exposed = report.keys_protected(settings, store)
    assert exposed.status == "fail" and "644" in str(exposed.evidence)


def test_report_scores_controls_and_never_claims_certification(settings: Settings, store: Store) -> None:
    full = report.run(settings, store)
    assert {c["framework"] for c in full["controls"]} == {"soc2", "hipaa", "gdpr"} and len(full["controls"]) == 11
    assert full["score"]["applicable"] == 11 and full["score"]["passed"] < 11  # a fresh store has no trail, no TTL
    failing = {c["id"] for c in full["controls"] if c["status"] == "fail"}
    assert {"CC7.2", "164.312(b)", "Art. 5(1)(e)"} <= failing
    assert {"Art. 17", "Art. 20", "164.312(e)(1)"}.isdisjoint(failing)
    gdpr = report.run(settings, store, "gdpr")
    assert [c["id"] for c in gdpr["controls"]] == ["Art. 5(1)(e)", "Art. 17", "Art. 20", "Art. 30", "Art. 32"]
    text = report.markdown(gdpr)
    assert "not a certification" in text and "## retention_set: fail" in text and "`M1_RETENTION_DAYS`" in text
    assert "certified" not in text.lower() and "compliant" not in text.lower()
    with pytest.raises(ValueError, match="unknown framework"):
        report.run(settings, store, "pci")
