"""Erasure across workers with stores of their own (real broker, two real worker processes, each
with its own chdb store): a subject erased through worker A's API is erased on worker B's store
too, by the erasure notice; each store audits that it applied it (``gdpr.erase-applied``)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from core.kafka.local_broker import free_port
from core.kafka.producer import make_producer
from m1.query_client import api_call, run_query
from core.settings import Settings
from schemas.events import AuditEvent, encode
from core.tenant_names import PLATFORM
from tests.helpers import add_tenant, isolated_settings, new_key, start_together, wait_for, worker_process

TENANT, ALICE, PHI = "acme", "alice@example.com", "type 2 diabetes, HbA1c 8.1"


def member(shared: Settings, home: Path) -> Settings:
    """A worker of the group with its own home (store, registry, platform key) and port."""
    settings = shared.model_copy(update={"home": home, "web_port": free_port()})
    add_tenant(settings, TENANT)
    return settings.model_copy(update={"api_key": SecretStr(new_key(settings, PLATFORM, ["platform-admin"]))})


def produce_to_every_partition(settings: Settings, n: int) -> None:
    """One audit event about Alice (her diagnosis encrypted with her key) to each audit partition."""

    async def run() -> None:
        producer = make_producer(settings)
        await producer.start()
        try:
            for partition in range(settings.topic_partitions):
                event = AuditEvent(ts=time.time(), tenant=TENANT, region="eu", actor="clinic-app", action="record.read",
                                   resource=f"patient/{n}-{partition}", outcome="success",
                                   details={"subject": ALICE, "diagnosis": PHI})
                await producer.send_and_wait(settings.topic_audit, encode(event), key=TENANT.encode(), partition=partition)
        finally:
            await producer.stop()

    asyncio.run(run())


def audit_rows(settings: Settings, where: str) -> int:
    return int(run_query(settings, f"SELECT count() FROM audit_log WHERE tenant = '{TENANT}' AND {where}").rows[0][0])


def export(settings: Settings) -> dict:
    return api_call(settings, "POST", f"/v1/tenants/{TENANT}/gdpr/export", {"subject": ALICE}, timeout=300)


@pytest.mark.kafka
def test_an_erasure_through_one_worker_reaches_the_others_store(tmp_path: Path, kafka_bootstrap: str) -> None:
    shared = isolated_settings(tmp_path / "a", kafka_bootstrap, topic_partitions=2, pii_key_path=tmp_path / "pii.key",
                               audit_checkpoint_events=1, audit_checkpoint_seconds=1.0)
    a, b = member(shared, tmp_path / "a"), member(shared, tmp_path / "b")
    workers = start_together([worker_process(a), worker_process(b)])
    try:
        n = 0
        while not (audit_rows(a, "action = 'record.read'") and audit_rows(b, "action = 'record.read'")):
            assert n < 60, "the two workers never shared the audit partitions"
            produce_to_every_partition(a, n)  # until the group has settled with a partition each
            n += 1
            time.sleep(2)
        assert PHI in json.dumps(export(b)) and export(b)["key_present"]  # B's store has Alice's own key

        erased = api_call(a, "POST", f"/v1/tenants/{TENANT}/gdpr/erase", {"subject": ALICE}, timeout=300)
        assert erased["key_destroyed"] is True
        assert wait_for(lambda: not export(b)["key_present"], timeout=60)  # the notice reached B's store
        after = json.dumps(export(b))
        assert PHI not in after and "enc:erased" in after
        applied = "action = 'gdpr.erase-applied'"
        assert wait_for(lambda: audit_rows(a, applied) + audit_rows(b, applied) == 2, timeout=90)  # both stores say so
        destroyed = "position(event, '\"key_destroyed\":\"True\"') > 0"
        assert audit_rows(a, f"{applied} AND {destroyed}") + audit_rows(b, f"{applied} AND {destroyed}") == 1  # B's key
    finally:
        assert [w.stop() for w in workers] == [0, 0]
