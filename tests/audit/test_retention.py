"""Audit retention on the real engine: TTL deletes a trail's oldest events up to the newest signed
head older than the retention, and `verify` goes on from that head (its anchor): the events
before it are reported as expired, not as tampering; a change after it, or events deleted that
retention still keeps, are still found with their first bad seq; a held tenant loses nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from audit import keys, log
from audit.paths import key_file
from audit.verify import verify_configured, verify_tenant
from compliance.retention import Retention
from core.settings import Settings
from sinks.clickhouse import Store
from tests.audit.support import ingest, payload
from tests.helpers import wait_for

DAY = 86_400.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, retention_days={"audit": 30})


@pytest.fixture
def store(settings_store: Store) -> Store:
    return settings_store


def chain(settings: Settings, store: Store, tenant: str) -> None:
    """45 events: heads at 10, 20, 30 signed 100 days ago, at 40 and 45 signed now."""
    now = [time.time() - 100 * DAY]
    chainer = ingest(store, key_file(settings), checkpoint_events=10, clock=lambda: now[0])
    for start in range(0, 30, 10):
        chainer.process([payload(tenant, i) for i in range(start, start + 10)])
    now[0] = time.time()
    chainer.process([payload(tenant, i) for i in range(30, 40)])
    chainer.process([payload(tenant, i) for i in range(40, 45)])
    now[0] += 3600
    assert [h.tree_size for h in chainer.due_heads()] == [45]


def seqs(store: Store, tenant: str) -> list[int]:
    return log.seqs(store, tenant).tolist()


def test_expired_events_are_reported_as_such_and_the_rest_is_verified(settings: Settings, store: Store) -> None:
    chain(settings, store, "acme")
    chain(settings, store, "globex")
    retention = Retention(settings, store)
    retention.hold("globex", True, actor="legal", reason="case 7")
    assert retention.audit_horizons(retention.holds()) == {"acme": 30}
    retention.apply(materialize=True)
    store.command("OPTIMIZE TABLE audit_log FINAL")
    assert seqs(store, "acme") == list(range(30, 45))  # deleted from the start, up to the anchor head
    assert [h.tree_size for h in log.heads(store, "acme")] == [30, 40, 45]  # the anchor head is kept
    assert seqs(store, "globex") == list(range(45))  # held: nothing deleted

    report = verify_configured(settings, store, "acme")
    assert (report.problem, report.expired, report.events, report.newest.tree_size) == (None, 30, 15, 45)
    assert verify_configured(settings, store, "globex").problem is None

    # verified as if retention were longer: the same gap is tampering
    trusted = keys.trusted_keys(key_file(settings))
    strict = verify_tenant(store, "acme", trusted, expire_before_ms=int((time.time() - 200 * DAY) * 1000))
    assert strict.problem is not None and strict.problem.seq == 0 and "no signed tree head old enough" in strict.problem.reason
    assert verify_tenant(store, "acme", trusted).problem.seq == 0  # kept forever: no gap allowed


def test_the_worker_s_hourly_apply_lets_ttl_merges_delete(settings: Settings, store: Store) -> None:
    """Without `retention apply`: the rule moves to the new horizon and the parts written before it
    (under no TTL) get their TTL information recalculated, so the engine's own TTL merges (every
    second here instead of every four hours) delete up to the anchor; nothing forces a merge."""
    chain(settings, store, "acme")
    for table in ("audit_log", "audit_checkpoints"):
        store.command(f"OPTIMIZE TABLE {table} FINAL")  # one old part each: no ordinary merge will come
        store.command(f"ALTER TABLE {table} MODIFY SETTING merge_with_ttl_timeout = 1")
    assert {"audit_log", "audit_checkpoints"} <= set(Retention(settings, store).apply(materialize=False))
    assert wait_for(lambda: seqs(store, "acme") == list(range(30, 45)), timeout=60), seqs(store, "acme")
    assert wait_for(lambda: [h.tree_size for h in log.heads(store, "acme")] == [30, 40, 45], timeout=60)
    assert verify_configured(settings, store, "acme").expired == 30


def test_tampering_after_the_anchor_is_still_found(settings: Settings, store: Store) -> None:
    chain(settings, store, "acme")
    Retention(settings, store).apply(materialize=True)
    assert seqs(store, "acme")[0] == 30
    store.command("ALTER TABLE audit_log UPDATE event = replace(event, 'key:abc', 'key:abd') "
                  "WHERE tenant = 'acme' AND seq = 37 SETTINGS mutations_sync = 2")
    report = verify_configured(settings, store, "acme")
    assert report.problem is not None and report.problem.seq == 37, report


@pytest.mark.parametrize(("deleted", "heads_deleted", "first_bad"), [
    ("seq = 35", "0", 35),                    # one event retention keeps
    ("seq < 40", "tree_size < 40", 0),        # up to a head too young to anchor
    ("seq >= 40", "0", 40),                   # the tail
])
def test_deleting_events_retention_keeps_is_found(settings: Settings, store: Store, deleted: str, heads_deleted: str,
                                                 first_bad: int) -> None:
    chain(settings, store, "acme")
    Retention(settings, store).apply(materialize=True)
    store.command(f"ALTER TABLE audit_log DELETE WHERE tenant = 'acme' AND {deleted} SETTINGS mutations_sync = 2")
    store.command(f"ALTER TABLE audit_checkpoints DELETE WHERE tenant = 'acme' AND {heads_deleted} SETTINGS mutations_sync = 2")
    report = verify_configured(settings, store, "acme")
    assert report.problem is not None, report
    assert report.problem.seq == first_bad, report


def test_a_forged_anchor_is_refused(settings: Settings, store: Store) -> None:
    chain(settings, store, "acme")
    Retention(settings, store).apply(materialize=True)
    store.command("ALTER TABLE audit_checkpoints UPDATE frontier = concat(substring(frontier, 1, 63), "
                  "if(substring(frontier, 64, 1) = '0', '1', '0'), substring(frontier, 65)) "
                  "WHERE tenant = 'acme' AND tree_size = 30 SETTINGS mutations_sync = 2")
    report = verify_configured(settings, store, "acme")
    assert report.problem is not None and report.problem.seq == 0 and "does not fold" in report.problem.reason, report
