"""GDPR rights, legal holds and the report through a real worker (real broker, real engine), from
the command line as an operator runs them: `m1 gdpr`, `m1 compliance` go through the worker's API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from m1.query_client import QueryError, api_call
from core.settings import Settings
from core.child_env import settings_env
from schemas.events import AuditEvent, encode
from sinks.clickhouse import Store, connect
from tests.helpers import new_key, produce, scalar, start_worker, wait_for

TENANT, ALICE, PHI = "acme", "alice@example.com", "type 2 diabetes, HbA1c 8.1"


def m1(settings: Settings, *args: str, key: str | None = None) -> subprocess.CompletedProcess:
    env = settings_env(settings)
    if key is not None:
        env["M1_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "m1.cli", *args], env=env, capture_output=True, text=True, timeout=300)


def count(settings: Settings, where: str) -> int:
    return int(scalar(settings, f"SELECT count() FROM audit_log WHERE tenant = '{TENANT}' AND {where}"))


def api(settings: Settings, key: str, method: str, path: str, body: object = None) -> object:
    return api_call(settings.model_copy(update={"api_key": SecretStr(key)}), method, path, body, timeout=300)


@pytest.mark.kafka
def test_gdpr_and_legal_hold_from_the_command_line(make_settings, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    settings = make_settings(topic_audit=f"audit-{run}", topic_audit_checkpoints=f"audit-heads-{run}",
                             audit_checkpoint_events=1, audit_checkpoint_seconds=1.0)
    admin = new_key(settings, TENANT, ["tenant-admin"])
    viewer = new_key(settings, TENANT, ["viewer"])
    platform = settings.api_key.get_secret_value()
    gdpr, hold = f"/v1/tenants/{TENANT}/gdpr", f"/v1/tenants/{TENANT}/legal-hold"
    worker = start_worker(settings)
    try:
        event = AuditEvent(ts=time.time(), tenant=TENANT, region="eu", actor="clinic-app", action="record.read",
                           resource="patient/1", outcome="success", details={"subject": ALICE, "diagnosis": PHI})
        produce(settings, [(TENANT.encode(), encode(event))], topic=settings.topic_audit)
        assert wait_for(lambda: count(settings, "action = 'record.read'") == 1, timeout=90)
        assert int(scalar(settings, f"SELECT count() FROM audit_log WHERE position(event, '{PHI}') > 0")) == 0

        with pytest.raises(QueryError) as refused:
            api(settings, viewer, "POST", f"{gdpr}/export", {"subject": ALICE})
        assert refused.value.status == 403
        out = tmp_path / "alice.json"
        exported = m1(settings, "gdpr", "export", "--tenant", TENANT, "--subject", ALICE, "--out", str(out), key=admin)
        assert exported.returncode == 0, exported.stderr
        export = json.loads(out.read_text())
        assert export["format"] == "m1-gdpr-export/1" and PHI in out.read_text() and "audit_log" in export["tables"]
        assert out.stat().st_mode & 0o777 == 0o600

        erased = m1(settings, "gdpr", "erase", "--tenant", TENANT, "--subject", ALICE, "--yes", key=admin)
        assert erased.returncode == 0 and "key destroyed" in erased.stderr, erased.stderr
        again = json.dumps(api(settings, admin, "POST", f"{gdpr}/export", {"subject": ALICE}))
        assert PHI not in again and "enc:erased" in again

        assert wait_for(lambda: count(settings, "action = 'gdpr.erase'") == 1, timeout=60)
        assert wait_for(lambda: count(settings, "action = 'gdpr.export'") == 2, timeout=60)
        assert count(settings, f"position(event, '{ALICE}') > 0") == 0  # the trail names the subject by reference only
        verified = api(settings, platform, "GET", f"/v1/tenants/{TENANT}/audit/verify")
        assert verified["intact"] and verified["events"] >= 4, verified

        held = m1(settings, "compliance", "legal-hold", "set", "--tenant", TENANT, "--reason", "case 42")
        assert held.returncode == 0, held.stderr
        assert [h["reason"] for h in api(settings, platform, "GET", "/v1/compliance/legal-holds")["items"]] == ["case 42"]
        rules = api(settings, platform, "GET", "/v1/compliance/retention")["tables"]
        # every TTL rule leaves the held tenant out; the trail has none while no signed head is old
        assert all(f"'{TENANT}'" in r["applied"] if r["class"] != "audit" else r["applied"] is None for r in rules), rules
        with pytest.raises(QueryError) as not_theirs:
            api(settings, admin, "PUT", hold, {"reason": "x"})
        assert not_theirs.value.status == 403
        api(settings, platform, "DELETE", hold)
        assert api(settings, platform, "GET", "/v1/compliance/legal-holds")["items"] == []
        assert wait_for(lambda: count(settings, "action = 'compliance.legal-hold'") == 2, timeout=60)

        report = m1(settings, "compliance", "report", "--framework", "gdpr", "--format", "json")
        assert report.returncode in (0, 1), report.stderr
        body = json.loads(report.stdout)
        assert "not a certification" in body["disclaimer"] and body["score"]["applicable"] == 5
        assert body["checks"]["erasure_ready"]["status"] == "pass"
        assert body["checks"]["retention_set"]["status"] == "pass"  # the worker applied the rules at start
    finally:
        assert worker.stop() == 0

    store = Store(connect(settings))  # the worker is gone: the key table, read directly
    try:
        assert store.query("SELECT count() FROM subject_keys WHERE tenant = {t:String} AND subject_ref = {r:String}",
                           {"t": TENANT, "r": export["subject_ref"]}).rows == [(0,)]
    finally:
        store.close()
