"""Delivery through faults on the real broker: a receiver failing 30% of requests (500, 429 with
Retry-After, hangs, resets after processing), the deliverer SIGKILLed mid-stream and restarted.
Every notification arrives, none is acted on twice; the bar at scale is scripts/bench_delivery.py."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import msgspec
import pytest

from integrations.delivery import DeliveryService, Pending, delivery_topics
from integrations.notification import Receiver, encode
from core.kafka.producer import make_producer, send_all
from core.settings import Settings
from core.kafka.topics import ensure_topics
from streams.publisher import OutputRecord, Publisher
from tests.helpers import consume_records, isolated_settings
from tests.integrations.conftest import notification
from tests.integrations.fake_vendors import FakeVendors
from tests.integrations.fault_run import run_under_faults


def delivery_settings(home: Path, bootstrap: str, **overrides) -> Settings:
    values = dict(delivery_timeout_seconds=1.0, delivery_base_seconds=0.2, delivery_max_backoff_seconds=3.0,
                  delivery_breaker_failures=8, delivery_breaker_seconds=1.0)
    return isolated_settings(home, bootstrap, **{**values, **overrides})


@pytest.mark.slow
@pytest.mark.kafka
async def test_every_notification_arrives_once_through_faults_and_a_sigkill(tmp_path: Path, kafka_bootstrap: str) -> None:
    settings = delivery_settings(tmp_path, kafka_bootstrap)
    report = await run_under_faults(settings, n=300, fail_rate=0.3, kill_at=(0.3,), log=tmp_path / "deliver.log",
                                    deadline=150.0)
    assert report.kills == 1
    assert sum(report.faults.values()) > 50, report  # the faults did happen
    assert (report.delivered, report.lost, report.double_effects) == (300, 0, 0), report


async def _produce(settings: Settings, notes, age: float = 0.0) -> None:
    """Publish ``notes`` to the outbox as made ``age`` seconds ago (what delivery dead-letters by)."""
    notes = [msgspec.structs.replace(x, created_ts=time.time() - age) for x in notes]
    await asyncio.to_thread(ensure_topics, settings, delivery_topics(settings))
    producer = make_producer(settings)
    await producer.start()
    try:
        await send_all(producer, settings.topic_notifications, [(x.id.encode(), encode(x)) for x in notes])
    finally:
        await producer.stop()


async def deliveries(settings: Settings, n: int, vendors: FakeVendors) -> list:
    """Run a delivery service until ``n`` outcomes are on the deliveries topic; then stop it and ``vendors``."""
    service = DeliveryService(settings)
    await service.start()
    try:
        return await consume_records(settings, settings.topic_deliveries, n, timeout=60)
    finally:
        await service.stop()
        await vendors.stop()


@pytest.mark.kafka
async def test_refused_exhausted_and_too_old_notifications_are_dead_lettered_with_their_reason(
        tmp_path: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = delivery_settings(tmp_path, kafka_bootstrap, delivery_max_attempts=3, delivery_base_seconds=0.05)
    monkeypatch.setenv("M1_TEST_PD", "R0UTINGKEY")
    vendors = await FakeVendors().start()
    vendors.script("/v2/alerts", [503] * 10)  # opsgenie: down
    ok = notification(Receiver("pagerduty", "pd", f"{vendors.url}/v2/enqueue", "env:M1_TEST_PD"), nid="ok")
    refused = notification(Receiver("pagerduty", "pd", f"{vendors.url}/v2/enqueue", "env:M1_TEST_UNSET"), nid="refused")
    exhausted = notification(Receiver("opsgenie", "og", vendors.url, "env:M1_TEST_PD"), nid="exhausted")
    await _produce(settings, [ok, refused, exhausted])
    await _produce(settings, [notification(Receiver("opsgenie", "og", vendors.url, "env:M1_TEST_PD"), nid="stale")],
                   age=settings.delivery_max_age_seconds - 0.01)
    records = await deliveries(settings, 6, vendors)
    final = {r.key.decode(): json.loads(r.value) for r in records if json.loads(r.value)["outcome"] != "failed"}
    assert final["ok"]["outcome"] == "delivered" and final["ok"]["status"] == 202
    assert final["refused"]["outcome"] == "dead" and "secret env:M1_TEST_UNSET" in final["refused"]["reason"]
    assert final["exhausted"]["outcome"] == "dead" and final["exhausted"]["attempt"] == 3
    assert final["exhausted"]["reason"].startswith("3 attempts failed, last: http 503")
    assert final["stale"]["outcome"] == "dead" and final["stale"]["attempt"] == 1
    assert final["stale"]["reason"].startswith("older than 3600 s after 1 attempts, last: http 503")
    letters = [json.loads(r.value) for r in await consume_records(settings, settings.topic_dead_letter, 3, timeout=30)]
    assert sorted(letter["reason"].split(":")[0] for letter in letters) == ["delivery"] * 3
    assert any("3 attempts failed" in letter["reason"] for letter in letters)


class SlowAcks(Publisher):
    """A publisher whose calls return a second after their records are on Kafka: a broker slow to ack."""

    async def publish(self, records: Iterable[OutputRecord]) -> int:
        published = await super().publish(records)
        await asyncio.sleep(1.0)
        return published


@pytest.mark.kafka
async def test_a_pending_retry_survives_a_restart_with_its_attempt_count(tmp_path: Path, kafka_bootstrap: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A notification whose first try failed is on the retries topic; a new service (the old one
    stopped before the retry was due) delivers it as the second attempt. The old one is stopped while
    its publish of that retry still waits for the ack: the stop waits for it, and commits the
    notification's offset (session 11's CI: a stop in that moment left it uncommitted, and the new
    service tried it again as a first attempt)."""
    settings = delivery_settings(tmp_path, kafka_bootstrap, delivery_base_seconds=4.0, delivery_max_backoff_seconds=4.0)
    monkeypatch.setenv("M1_TEST_PD", "R0UTINGKEY")
    vendors = await FakeVendors().start()
    vendors.script("/v2/enqueue", [500])
    n = notification(Receiver("pagerduty", "pd", f"{vendors.url}/v2/enqueue", "env:M1_TEST_PD"), nid="later")
    await _produce(settings, [n])
    slow = SlowAcks(settings)
    await slow.start()
    first = DeliveryService(settings, publisher=slow)
    await first.start()
    retries = await consume_records(settings, settings.topic_notification_retries, 1, timeout=60)
    await first.stop()
    await slow.stop()
    pending = msgspec.json.decode(retries[0].value, type=Pending)
    assert pending.attempts == 1 and pending.last_reason.startswith("http 500")
    assert len(vendors.requests) == 1
    second = DeliveryService(settings)
    await second.start()
    try:
        records = await consume_records(settings, settings.topic_deliveries, 2, timeout=60)
    finally:
        await second.stop()
        await vendors.stop()
    outcomes = [(json.loads(r.value)["attempt"], json.loads(r.value)["outcome"]) for r in records]
    assert outcomes == [(1, "failed"), (2, "delivered")]
    assert vendors.pagerduty == {"acme/inc-1": ["trigger"]}


@pytest.mark.kafka
async def test_a_probe_answered_429_does_not_hold_the_circuit_shut(tmp_path: Path, kafka_bootstrap: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Two failures open the circuit; its probe gets a 429 (no verdict on the endpoint's health), so
    the next try probes again and delivers (session 8's CI: a probe answered 429 left the circuit
    waiting for a verdict forever, and the notification behind it was never tried again)."""
    settings = delivery_settings(tmp_path, kafka_bootstrap, delivery_breaker_failures=2, delivery_breaker_seconds=0.5,
                                 delivery_base_seconds=0.05, delivery_max_backoff_seconds=0.2)
    monkeypatch.setenv("M1_TEST_PD", "R0UTINGKEY")
    vendors = await FakeVendors().start()
    vendors.script("/v2/enqueue", [500, 500, 429])
    await _produce(settings, [notification(Receiver("pagerduty", "pd", f"{vendors.url}/v2/enqueue", "env:M1_TEST_PD"),
                                           nid="probed")])
    records = await deliveries(settings, 4, vendors)
    outcomes = [(json.loads(r.value)["attempt"], json.loads(r.value)["outcome"], json.loads(r.value)["status"])
                for r in records]
    assert outcomes == [(1, "failed", 500), (2, "failed", 500), (3, "failed", 429), (4, "delivered", 202)]


@pytest.mark.kafka
async def test_kafka_receiver_gets_the_event_keyed_by_notification_id(tmp_path: Path, kafka_bootstrap: str) -> None:
    settings = delivery_settings(tmp_path, kafka_bootstrap)
    out = f"incidents-out-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(ensure_topics, settings, [out])
    receiver = Receiver("kafka", "bus", options={"topic": out})
    await _produce(settings, [notification(receiver, nid="k1"), notification(receiver, "resolve", nid="k2")])
    service = DeliveryService(settings)
    await service.start()
    try:
        records = await consume_records(settings, out, 2, timeout=60)
    finally:
        await service.stop()
    events = {r.key.decode(): json.loads(r.value) for r in records}
    assert sorted(events) == ["k1", "k2"]
    assert events["k2"]["type"] == "incident.resolve" and events["k2"]["data"]["incident"]["id"] == "inc-1"
