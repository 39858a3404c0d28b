"""Delivery inside the worker: a notification on the outbox reaches its receiver, and every
attempt's outcome is in the deliveries table (read through the worker's API)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import msgspec
import pytest

from integrations.notification import Receiver, encode
from tests.helpers import isolated_settings, produce, scalar, start_worker, wait_for
from tests.integrations.conftest import SECRET, notification
from tests.integrations.fake_vendors import vendors_in_thread


@pytest.mark.kafka
def test_the_worker_delivers_the_outbox_and_records_each_attempt(tmp_path: Path, kafka_bootstrap: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    run = uuid.uuid4().hex[:8]
    monkeypatch.setenv("M1_TEST_WHSEC", SECRET)  # the worker inherits the environment: the secret is a reference
    settings = isolated_settings(tmp_path, kafka_bootstrap, delivery_base_seconds=0.2)
    with vendors_in_thread(secret=SECRET) as vendors:
        vendors.script("/hooks", [503])  # the first attempt fails, the second delivers
        receiver = Receiver("webhook", "ops", f"{vendors.url}/hooks/ops", "env:M1_TEST_WHSEC")
        n = msgspec.structs.replace(notification(receiver, nid=f"w-{run}"), created_ts=time.time())
        worker = start_worker(settings)
        try:
            produce(settings, [(n.id.encode(), encode(n))], topic=settings.topic_notifications)
            assert wait_for(lambda: vendors.effects[n.id] == 1, timeout=60)
            sql = (f"SELECT groupArray((attempt, outcome, status)) FROM (SELECT * FROM deliveries FINAL "
                   f"WHERE id = '{n.id}' ORDER BY attempt)")
            assert wait_for(lambda: len(scalar(settings, sql)) == 2, timeout=60)
            assert [tuple(x) for x in scalar(settings, sql)] == [(1, "failed", 503), (2, "delivered", 200)]
        finally:
            worker.stop()
