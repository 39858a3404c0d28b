"""Item 7 of issue #10: a partition, not a crash. A region's broker runs in a network namespace the
test creates (tests/regions/netns.py); the broker stays up while its link is cut, made lossy or
slowed to WAN latency, and clients in the root namespace see exactly that.

Kafka client level (this module's first part): a producer and a consumer in the root namespace lose
the broker when the link is cut and regain it, with every acknowledged record delivered; a lossy
link delivers everything; a WAN link delays every acknowledgement by at least its round trip.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from m1.kafka_local import _pid_alive
from tests.regions.netns import NetnsBroker, lab

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsBroker]:
    """A broker in a namespace of its own, behind a link the tests cut and heal."""
    with lab() as made:
        yield made.broker(tmp_path_factory.mktemp("region"))


@pytest.fixture(scope="module")
def far_region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsBroker]:
    """A broker in a namespace whose listener is advertised through a 100 ms (one way) WAN proxy."""
    with lab() as made:
        yield made.broker(tmp_path_factory.mktemp("far-region"), latency=0.1)


def _producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=3000,
                            retry_backoff_ms=200, metadata_max_age_ms=2000)


async def _consume_all(bootstrap: str, topic: str, expected: set[bytes], timeout: float = 60) -> set[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    seen: set[bytes] = set()
    try:
        deadline = time.monotonic() + timeout
        while not expected <= seen and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                seen.update(record.value for record in records)
    finally:
        await consumer.stop()
    return seen


async def _send_until_acked(producer: AIOKafkaProducer, topic: str, value: bytes, timeout: float) -> float:
    """Seconds until one record is acknowledged, retrying through failures, within ``timeout``."""
    began = time.monotonic()
    while True:
        try:
            await asyncio.wait_for(producer.send_and_wait(topic, value), 5)
            return time.monotonic() - began
        except (KafkaError, TimeoutError):
            if time.monotonic() - began > timeout:
                raise
            await asyncio.sleep(0.2)


@pytest.mark.parametrize("how", ["drop", "down"])
async def test_cut_link_loses_the_broker_and_healing_regains_it(region: NetnsBroker, how: str) -> None:
    topic = f"partition-{how}-{uuid.uuid4().hex[:6]}"
    producer = _producer(region.bootstrap)
    await producer.start()
    acked: set[bytes] = set()
    try:
        for i in range(20):
            await producer.send_and_wait(topic, b"before-%d" % i)
            acked.add(b"before-%d" % i)

        region.link.cut(how)
        try:
            with pytest.raises((KafkaError, TimeoutError)):
                await asyncio.wait_for(producer.send_and_wait(topic, b"during"), 15)
            assert _pid_alive(region.kafka._recorded().pid)  # a partition, not a crash
        finally:
            region.link.heal()

        await _send_until_acked(producer, topic, b"after-0", timeout=60)
        acked.add(b"after-0")
        for i in range(1, 20):
            await producer.send_and_wait(topic, b"after-%d" % i)
            acked.add(b"after-%d" % i)
    finally:
        await producer.stop()
    assert acked <= await _consume_all(region.bootstrap, topic, acked)


async def test_lossy_link_delivers_everything(region: NetnsBroker) -> None:
    topic = f"loss-{uuid.uuid4().hex[:6]}"
    region.link.set_loss(0.05)
    producer = AIOKafkaProducer(bootstrap_servers=region.bootstrap, acks="all", request_timeout_ms=30000)
    try:
        await producer.start()
        sent = {b"r-%d" % i for i in range(300)}
        for value in sorted(sent):
            await producer.send_and_wait(topic, value)
        await producer.stop()
        received = await _consume_all(region.bootstrap, topic, sent)
        assert region.link.dropped() > 0  # the loss was real
    finally:
        region.link.clear_loss()
    assert received == sent


async def test_wan_latency_delays_every_acknowledgement(far_region: NetnsBroker) -> None:
    topic = f"wan-{uuid.uuid4().hex[:6]}"
    producer = _producer(far_region.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"warm-up")  # metadata, topic creation
        assert {b.host for b in producer.client.cluster.brokers()} == {far_region.link.host_addr}  # via the proxy
        slow = [await _send_until_acked(producer, topic, b"100ms-%d" % i, timeout=30) for i in range(10)]
        far_region.proxy.set_latency(0.25)
        slower = [await _send_until_acked(producer, topic, b"250ms-%d" % i, timeout=30) for i in range(10)]
    finally:
        await producer.stop()
        far_region.proxy.set_latency(0.1)
    assert min(slow) >= 0.2  # a produce request and its acknowledgement: one round trip
    assert min(slower) >= 0.5
    assert statistics.median(slower) > statistics.median(slow)
