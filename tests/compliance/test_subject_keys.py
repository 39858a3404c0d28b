"""Subject keys on the real engine: round trip, binding to tenant and subject, one key per subject,
persistence across a restart, erasure that leaves no key byte in any file of the store, and that
every instance on the store (workers sharing a server) stops using at once."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from compliance.policy import load_policy
from compliance.pseudonym import Pseudonymiser
from compliance.redact import Redactor
from compliance.subject_keys import ERASURE_CHECK_SECONDS, TABLE, KeyErased, SubjectKeys, pii_secret
from core.settings import Settings
from sinks.clickhouse import Store
from sinks.sql_guard import QueryRefused


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path)


@pytest.fixture
def store(settings_store: Store) -> Store:
    return settings_store


def stored_keys(store: Store) -> list[tuple[str, str, str]]:
    return store.query(f"SELECT tenant, subject_ref, key FROM {TABLE} ORDER BY tenant, subject_ref").rows


def files_holding(root: Path, needles: list[bytes]) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and any(n in p.read_bytes() for n in needles)]


def test_round_trip_and_one_key_per_subject(store: Store, settings: Settings) -> None:
    keys = SubjectKeys.from_settings(settings, store)
    assert SubjectKeys.from_settings(settings, store) is keys  # one cache per store: redaction and erasure share it
    a1 = keys.encrypt("acme", "alice", "alice@example.com")
    a2 = keys.encrypt("acme", "alice", "+1 555 0100")
    b = keys.encrypt("acme", "bob", "bob@example.com")
    assert a1 == keys.encrypt("acme", "alice", "alice@example.com")  # deterministic: a replay gives the same token
    assert [keys.decrypt("acme", t) for t in (a1, a2, b)] == ["alice@example.com", "+1 555 0100", "bob@example.com"]
    assert len(stored_keys(store)) == 2
    assert "alice" not in a1 and "example" not in a1
    assert keys.subject_ref("acme", "alice") == SubjectKeys(store, pii_secret(settings)).subject_ref("acme", "alice")
    assert keys.subject_ref("acme", "alice") != keys.subject_ref("globex", "alice")
    assert keys.subject_ref("acme", "alice") != SubjectKeys(store, b"another secret").subject_ref("acme", "alice")
    assert (settings.pii_key_file.stat().st_mode & 0o777) == 0o600


def test_tokens_are_bound_to_tenant_and_subject(store: Store) -> None:
    keys = SubjectKeys(store, bytes(32))
    token = keys.encrypt("acme", "alice", "secret value")
    keys.encrypt("globex", "alice", "x")
    with pytest.raises(KeyErased):  # another tenant has no key under this reference
        keys.decrypt("globex", token)
    prefix, body = token.rsplit(":", 1)
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[-1] ^= 1
    with pytest.raises(ValueError, match="does not authenticate"):
        keys.decrypt("acme", prefix + ":" + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("="))
    bob_ref = keys.subject_ref("acme", "bob")
    keys.encrypt("acme", "bob", "y")
    with pytest.raises(ValueError, match="does not authenticate"):  # moved to another subject's key
        keys.decrypt("acme", token.replace(keys.subject_ref("acme", "alice"), bob_ref))
    with pytest.raises(ValueError, match="not an enc:v1 token"):
        keys.decrypt("acme", "alice@example.com")


def test_keys_survive_a_new_process_cache(store: Store) -> None:
    token = SubjectKeys(store, bytes(32)).encrypt("acme", "alice", "kept")
    assert SubjectKeys(store, bytes(32)).decrypt("acme", token) == "kept"


def test_erase_destroys_the_key_everywhere(store: Store, settings: Settings) -> None:
    keys = SubjectKeys(store, bytes(32))
    told: list[tuple[str, str]] = []
    keys.on_erase(lambda tenant, subject: told.append((tenant, subject)))
    token = keys.encrypt("acme", "alice", "Alice Liddell")
    other = keys.encrypt("acme", "bob", "Bob")
    [(_, _, alice_key)] = [row for row in stored_keys(store) if row[1] == keys.subject_ref("acme", "alice")]
    raw_key = bytes.fromhex(alice_key)
    needles = [alice_key.encode(), raw_key, base64.b64encode(raw_key)]
    assert files_holding(settings.chdb_path, needles)  # the scan finds the key while it exists
    assert keys.erase("acme", "alice") is True
    with pytest.raises(KeyErased):
        keys.decrypt("acme", token)
    with pytest.raises(KeyErased):  # a fresh cache finds nothing either
        SubjectKeys(store, bytes(32)).decrypt("acme", token)
    assert keys.decrypt("acme", other) == "Bob"
    assert not keys.has_key("acme", "alice") and keys.has_key("acme", "bob")
    assert keys.outdated_parts() == 0
    assert files_holding(settings.chdb_path, needles) == []
    assert keys.erase("acme", "alice") is False
    assert told == [("acme", keys.subject_ref("acme", "alice"))] * 2


def test_every_instance_on_the_store_stops_using_an_erased_key(store: Store) -> None:
    """Two workers sharing one store (one ClickHouse server), each with its cache: once worker A's
    erasure answers, worker B neither decrypts nor encrypts with the key it cached, forgets the
    tokens it remembered, and a record B sees afterwards gets a new key (the old one stays gone)."""
    a, b = SubjectKeys(store, bytes(32)), SubjectKeys(store, bytes(32))
    redactor = Redactor(load_policy(), Pseudonymiser(bytes(32)), b.encrypt, b)
    old = b.encrypt("acme", "dora", "asthma")
    assert redactor._sealed_value("acme", "dora", "asthma") == old  # remembered by B's redactor
    assert a.decrypt("acme", old) == "asthma" and b.decrypt("acme", old) == "asthma"  # both caches hold the key
    started = time.monotonic()
    assert a.erase("acme", "dora") is True
    assert time.monotonic() - started >= ERASURE_CHECK_SECONDS  # it answers once every instance has looked
    for keys in (b, a):
        with pytest.raises(KeyErased):
            keys.decrypt("acme", old)  # B's cached key is dropped, at once
    new = redactor._sealed_value("acme", "dora", "asthma")
    assert new != old and b.decrypt("acme", new) == "asthma"  # a new key, not the old one written back
    for keys in (a, b):
        with pytest.raises(ValueError, match="does not authenticate"):
            keys.decrypt("acme", old)  # the new key does not open the old tokens
    [(_, ref, key)] = [row for row in stored_keys(store) if row[1] == a.subject_ref("acme", "dora")]
    assert a.decrypt("acme", new) == "asthma" and ref == b.subject_ref("acme", "dora") and len(key) == 64
    # an erasure notice read again later (compliance.erasure_notices) leaves the key made since
    assert a.erase_ref("acme", ref, made_before_ms=int((time.time() - 3600) * 1000)) is False
    assert b.decrypt("acme", new) == "asthma"


def test_no_api_sql_reads_the_keys(store: Store) -> None:
    SubjectKeys(store, bytes(32)).encrypt("acme", "alice", "x")
    with pytest.raises(QueryRefused, match="key material"):
        store.admin_query(f"SELECT key FROM {TABLE}")
    with pytest.raises(QueryRefused):
        store.tenant_query(f"SELECT key FROM {TABLE}", "acme")


def test_encryption_is_deterministic_per_subject_and_value(store: Store) -> None:
    """A replay (even by a new process) gets the same token; another value or subject does not."""
    keys = SubjectKeys(store, ref_secret=bytes(32))
    token = keys.encrypt("acme", "bob", "diagnosis: flu")
    fresh = SubjectKeys(store, ref_secret=bytes(32))  # a restarted worker: nothing cached
    assert fresh.encrypt("acme", "bob", "diagnosis: flu") == token
    assert keys.encrypt("acme", "bob", "diagnosis: cold") != token
    assert keys.encrypt("acme", "carol", "diagnosis: flu").split(":")[3] != token.split(":")[3]
