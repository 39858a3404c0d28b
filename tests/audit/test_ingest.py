"""Chaining into the real engine: dedupe before chaining, recovery, signed heads, proofs, rotation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit import keys, log
from audit.proofs import check_inclusion, consistency, prove
from audit.verify import verify_tenant
from sinks.clickhouse import Store
from tests.audit.support import ingest, payload


def test_events_are_chained_and_a_head_signed_every_n(store: Store, tmp_path: Path) -> None:
    chainer = ingest(store, tmp_path / "k.pem")
    out = chainer.process([payload("t-chain", i) for i in range(25)])
    assert [r.seq for r in out.rows] == list(range(25)) and [h.tree_size for h in out.heads] == [25]
    out = chainer.process([payload("t-chain", i) for i in range(25, 37)])
    assert [h.tree_size for h in out.heads] == [37]
    report = verify_tenant(store, "t-chain", keys.trusted_keys(tmp_path / "k.pem"))
    assert report.problem is None and (report.events, report.heads) == (37, 2)
    assert store.query("SELECT engine FROM system.tables WHERE name = 'audit_log' AND database = currentDatabase()").rows == [("MergeTree",)]


def test_a_replay_adds_nothing_even_spelled_differently_or_after_a_restart(store: Store, tmp_path: Path) -> None:
    first = [payload("t-replay", i) for i in range(30)]
    assert len(ingest(store, tmp_path / "k.pem").process(first).rows) == 30
    respelled = [json.dumps(dict(reversed(json.loads(p).items())), indent=1).encode() for p in first[10:]]
    restarted = ingest(store, tmp_path / "k.pem", dedupe_window=5)  # ids beyond the window: looked up in the table
    out = restarted.process(respelled + [payload("t-replay", 30), payload("t-replay", 30)])
    assert out.duplicates == 21 and [r.seq for r in out.rows] == [30]
    assert store.query("SELECT count(), uniqExact(id), max(seq) FROM audit_log WHERE tenant = 't-replay'").rows == [(31, 31, 30)]
    assert verify_tenant(store, "t-replay", keys.trusted_keys(tmp_path / "k.pem")).problem is None


def test_invalid_records_are_rejected_with_their_reason(store: Store, tmp_path: Path) -> None:
    out = ingest(store, tmp_path / "k.pem").process([b"{", None, payload("t-bad", 0)])
    assert [i for i, _ in out.rejected] == [0, 1] and "malformed JSON" in out.rejected[0][1] and len(out.rows) == 1


def test_due_heads_sign_tenants_that_grew_and_waited(store: Store, tmp_path: Path) -> None:
    now = [1000.0]
    chainer = ingest(store, tmp_path / "k.pem", checkpoint_events=1000, checkpoint_seconds=5.0, clock=lambda: now[0])
    chainer.process([payload("t-timer", i) for i in range(3)])
    assert chainer.due_heads() == []
    now[0] += 6
    assert [h.tree_size for h in chainer.due_heads()] == [3]
    now[0] += 6
    assert chainer.due_heads() == []  # nothing new


def test_an_inclusion_proof_holds_without_the_log_and_fails_for_another_key(store: Store, tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    chainer = ingest(store, key)
    chainer.process([payload("t-proof", i) for i in range(23)])
    event = log.columns(store, "t-proof", ("id",))["id"][7].hex()
    proof = prove(store, event)
    pem = keys.history(key)[0]["public_key"]
    assert (proof["leaf_index"], proof["tree_size"]) == (7, 23) and check_inclusion(proof, pem) is None
    foreign = keys.public_pem(keys.new_private_key().public_key())
    assert "not signed by this key" in check_inclusion(proof, foreign)
    forged = {**proof, "event": proof["event"].replace("key:abc", "key:evil")}
    assert check_inclusion(forged, pem) is not None
    moved = {**proof, "leaf_index": 6}
    assert check_inclusion(moved, pem) is not None


def test_consistency_between_heads(store: Store, tmp_path: Path) -> None:
    chainer = ingest(store, tmp_path / "k.pem")
    for batch in (range(10), range(10, 31)):  # a head after each batch that grew the chain by 10 or more
        chainer.process([payload("t-cons", i) for i in batch])
    proof = consistency(store, "t-cons", 10, 31)
    assert proof["verified"] and [h["tree_size"] for h in proof["signed_heads"]] == [10, 31]
    assert consistency(store, "t-cons", 3, 17)["verified"]


def test_heads_signed_before_a_rotation_still_verify(store: Store, tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    chainer = ingest(store, key)
    chainer.process([payload("t-rot", i) for i in range(10)])
    old = keys.history(key)[0]["key_id"]
    keys.rotate(key)
    out = chainer.process([payload("t-rot", i) for i in range(10, 20)])
    assert out.heads[0].key_id != old  # the signer reloads the replaced file
    assert verify_tenant(store, "t-rot", keys.trusted_keys(key)).problem is None
    rows = store.query("SELECT key_id, retired_at IS NULL FROM audit_keys WHERE key_id = {k:String}", {"k": old}).rows
    assert sorted(rows) == [(old, False), (old, True)]  # created, then retired: append-only


class FailingOnce:
    """The store, except that its next insert into ``table`` fails."""

    def __init__(self, store: Store, table: str) -> None:
        self.store, self.table, self.failed = store, table, False

    def insert(self, table: str, columns: dict) -> int:
        if table == self.table and not self.failed:
            self.failed = True
            raise ConnectionError("store unavailable")
        return self.store.insert(table, columns)

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)


def test_a_batch_the_store_refused_is_chained_again_when_retried(store: Store, tmp_path: Path) -> None:
    flaky = FailingOnce(store, "audit_log")
    flaky.failed = True  # not yet
    chainer = ingest(flaky, tmp_path / "k.pem")  # type: ignore[arg-type]
    chainer.process([payload("t-retry", i) for i in range(5)])
    batch = [payload("t-retry", i) for i in range(5, 15)]
    flaky.failed = False
    with pytest.raises(ConnectionError):
        chainer.process(batch)
    out = chainer.process(batch)  # the batch consumer's retry
    assert [r.seq for r in out.rows] == list(range(5, 15)) and out.duplicates == 0 and out.heads
    assert verify_tenant(store, "t-retry", keys.trusted_keys(tmp_path / "k.pem")).problem is None


def test_since_rehashes_only_the_window_and_still_checks_every_head(store: Store, tmp_path: Path) -> None:
    chainer = ingest(store, tmp_path / "k.pem")
    chainer.process([payload("t-since", i) for i in range(30)])  # ts 1_700_000_000 + i/1000
    assert log.first_seq_since(store, "t-since", 1_700_000_000.012) == 12
    assert log.first_seq_since(store, "t-since", 1_800_000_000.0) == 30
    report = verify_tenant(store, "t-since", keys.trusted_keys(tmp_path / "k.pem"), since_seq=12)
    assert report.problem is None and report.events == 30 and report.heads == 1
