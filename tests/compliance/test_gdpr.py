"""GDPR export and erasure on the real engine, with the real redactor and audit chain: the export
holds the subject's data decrypted (and no one else's); after the erasure nothing of the subject is
recoverable from any table, any file of the store's data directory or the key table, the erasure
is in the audit chain, and the chain still verifies."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from audit.ingest import AuditIngest
from audit.signer import Signer
from audit.verify import verify_now
from compliance.redact import Redactor
from compliance.service import Compliance
from compliance.subject_keys import TABLE as KEY_TABLE
from core.settings import Settings
from schemas.events import AuditEvent, encode
from sinks.clickhouse import TS_TYPE, Store, connect

TENANT, ALICE, BOB = "acme", "alice@example.com", "bob@example.com"
ALICE_PHI = ("type 2 diabetes, HbA1c 8.1", "MRN-4417-XQ")
BOB_PHI = "asthma, inhaler twice daily"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Settings, Store, Compliance, AuditIngest]]:
    settings = Settings(home=tmp_path)
    store = Store(connect(settings))
    store.migrate()
    redactor = Redactor.from_settings(settings, store)
    ingest = AuditIngest(store, Signer(tmp_path / "audit.key", store), checkpoint_events=2, checkpoint_seconds=3600.0,
                         redact=redactor.event)

    async def audit(events: Any) -> None:  # the worker's audit topic, then its chainer
        ingest.process([encode(e) for e in events])

    compliance = Compliance(settings.model_copy(update={"audit_key_path": tmp_path / "audit.key"}), store, audit)
    assert compliance.gdpr.keys is redactor.keys  # one key cache per store: the redactor's and the erasure's
    yield settings, store, compliance, ingest
    store.close()


def plant(store: Store, compliance: Compliance, ingest: AuditIngest) -> None:
    """The subjects' data as the pipeline stores it: audit events through the redactor (PHI encrypted
    with the subject's key, the email pseudonymised) and metric points carrying tokens and pseudonyms."""
    events = [AuditEvent(ts=time.time(), tenant=TENANT, region="eu", actor="clinic-app", action="record.read",
                         resource=f"patient/{n}", outcome="success",
                         details={"subject": subject, "diagnosis": phi, "medical_record": mrn})
              for n, (subject, phi, mrn) in enumerate([(ALICE, ALICE_PHI[0], ALICE_PHI[1]), (BOB, BOB_PHI, "MRN-0")])]
    outcome = ingest.process([encode(e) for e in events])
    assert not outcome.rejected
    keys, pseudonymise = compliance.gdpr.keys, compliance.gdpr.pseudonymise
    labels = [[("patient", pseudonymise(TENANT, ALICE)), ("condition", keys.encrypt(TENANT, ALICE, ALICE_PHI[0]))],
              [("patient", pseudonymise(TENANT, BOB)), ("condition", keys.encrypt(TENANT, BOB, BOB_PHI))],
              [("patient", pseudonymise("globex", ALICE))]]  # the same person in another tenant: not acme's to export
    now = int(time.time() * 1000)
    store.insert("metric_points", {
        "ts": pa.array([now] * 3, TS_TYPE), "tenant": [TENANT, TENANT, "globex"], "region": ["eu"] * 3,
        "service": ["clinic"] * 3, "metric": ["visits"] * 3, "labels": pa.array(labels, pa.map_(pa.string(), pa.string())),
        "series": ["s1", "s2", "s3"], "value": [1.0, 2.0, 3.0], "score": pa.array([0.0] * 3, pa.float32()),
        "is_anomaly": pa.array([0] * 3, pa.uint8()), "ingested_at": pa.array([now] * 3, TS_TYPE)})


def tables_holding(store: Store, needles: list[str]) -> list[str]:
    """``table.column`` of every column of every table (the key table included) holding a needle."""
    found = []
    for table, column in store.query("SELECT table, name FROM system.columns WHERE database = currentDatabase() AND "
                                     "table IN (SELECT name FROM system.tables WHERE database = currentDatabase() "
                                     "AND engine LIKE '%MergeTree')").rows:
        for needle in needles:
            if store.query(f"SELECT count() FROM `{table}` WHERE position(toString(`{column}`), {{n:String}}) > 0",
                           {"n": needle}).rows[0][0]:
                found.append(f"{table}.{column}")
    return found


def files_holding(root: Path, needles: list[bytes]) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and any(n in p.read_bytes() for n in needles)]


def test_export_then_erase_leaves_nothing_recoverable(world) -> None:
    settings, store, compliance, ingest = world
    plant(store, compliance, ingest)
    clear = [*ALICE_PHI, ALICE]
    assert tables_holding(store, clear) == []  # nothing of alice in clear to begin with: the redactor saw to it

    export = asyncio.run(compliance.gdpr.run("export", TENANT, ALICE, actor="dpo@acme"))
    text = json.dumps(export)
    assert all(value in text for value in ALICE_PHI), text[:2000]
    assert BOB_PHI not in text and "globex" not in text  # another subject's data, another tenant's rows
    assert set(export["tables"]) == {"audit_log", "metric_points"} and export["rows"] == 2

    ref = compliance.gdpr.keys.subject_ref(TENANT, ALICE)
    [(key_hex,)] = store.query(f"SELECT key FROM {KEY_TABLE} WHERE subject_ref = {{r:String}}", {"r": ref}).rows
    key = bytes.fromhex(key_hex)
    key_forms = [key, key_hex.encode(), base64.b64encode(key), base64.urlsafe_b64encode(key)]
    token_prefix = f"enc:v1:{ref}:".encode()
    assert files_holding(settings.chdb_path, [key_hex.encode()])  # the scan sees the key while it exists
    assert files_holding(settings.chdb_path, [token_prefix])  # and the tokens in the tables' files

    erased = asyncio.run(compliance.gdpr.run("erase", TENANT, ALICE, actor="dpo@acme"))
    assert erased["key_destroyed"] and erased["rows_with_tokens"] == 2

    # nothing recoverable: no key in the key table, no key bytes and no clear value in any table or file
    assert store.query(f"SELECT count() FROM {KEY_TABLE} WHERE subject_ref = {{r:String}}", {"r": ref}).rows == [(0,)]
    assert tables_holding(store, [key_hex, *clear]) == []
    assert files_holding(settings.chdb_path, key_forms + [v.encode() for v in clear]) == []
    again = json.dumps(asyncio.run(compliance.gdpr.run("export", TENANT, ALICE, actor="dpo@acme")))
    assert not any(value in again for value in ALICE_PHI) and "enc:erased" in again
    assert BOB_PHI in json.dumps(asyncio.run(compliance.gdpr.run("export", TENANT, BOB, actor="dpo@acme")))

    # the erasure is in the chain (by reference, never the subject), and the chain verifies
    actions = store.query("SELECT action, resource, actor FROM audit_log WHERE tenant = {t:String} ORDER BY seq",
                          {"t": TENANT}).rows
    assert ("gdpr.erase", f"subject:{ref}") in [(a, r) for a, r, _ in actions]
    assert [a for a, _, _ in actions].count("gdpr.export") == 3
    report = verify_now(settings.model_copy(update={"audit_key_path": settings.home / "audit.key"}), store, TENANT)
    assert report["intact"] and report["events"] == len(actions), report


def test_erasing_an_unknown_subject_changes_nothing_and_is_audited(world) -> None:
    settings, store, compliance, ingest = world
    plant(store, compliance, ingest)
    answer = asyncio.run(compliance.gdpr.run("erase", TENANT, "nobody@example.com", actor="dpo@acme"))
    assert answer["key_destroyed"] is False and answer["rows_with_tokens"] == 0
    assert store.query(f"SELECT count() FROM {KEY_TABLE}").rows == [(2,)]
    assert store.query("SELECT outcome FROM audit_log WHERE action = 'gdpr.erase'").rows == [("success",)]
