"""Item 7 of issue #10: a partition, not a crash. The regions' brokers run in network namespaces
(tests/regions/netns.py; the shared set of tests/regions/conftest.py); a broker stays up while its
link is cut, made lossy or slowed to WAN latency, and clients in the root namespace see exactly that.

Kafka client level (this module's first part): a producer and a consumer in the root namespace lose
the broker when the link is cut and regain it, with every acknowledged record delivered; a lossy
link delivers everything; a WAN link delays every acknowledgement by at least its round trip.

Region level (second part): the three regions with MirrorMaker 2 and their agents. A region whose
link is cut is failed over by both others (routing moves its geography) and recovers when the link
heals, with no other region failed over; 5 % loss fails nobody over; a 150 ms WAN raises the
measured replication lag by at least 150 ms and fails nobody over.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from core.kafka.local_broker import _pid_alive
from schemas.events import RegionEvent
from tests.regions.conftest import FAR
from tests.regions.mesh import NAMES, Mesh, events, lags, routes
from tests.regions.netns import NetnsBroker

pytestmark = [pytest.mark.slow, pytest.mark.kafka]
CUT = "us-east"  # reached directly; FAR (ap-south) through a WAN proxy (no delay unless a test sets one)


@pytest.fixture
def region(regions_mesh: Mesh) -> NetnsBroker:
    """A broker in a namespace of its own, behind a link the tests cut and heal."""
    return regions_mesh.brokers[CUT]


@pytest.fixture
def far_region(regions_mesh: Mesh) -> NetnsBroker:
    """A broker in a namespace whose listener is advertised through a WAN proxy, 100 ms one way."""
    broker = regions_mesh.brokers[FAR]
    broker.proxy.set_latency(0.1)
    return broker


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
        far_region.proxy.set_latency(0.0)
    assert min(slow) >= 0.2  # a produce request and its acknowledgement: one round trip
    assert min(slower) >= 0.5
    assert statistics.median(slower) > statistics.median(slow)


# -- region level: three regions, MirrorMaker 2 and their agents; one region partitioned ----------------
def _failover_of(region: str, since: float) -> Callable[[RegionEvent], bool]:
    return lambda e: e.kind == "failover" and e.region == region and e.ts >= since


async def _failovers_since(running: Mesh, since: float, observers: list[str]) -> list[RegionEvent]:
    """Every failover event the ``observers`` published since ``since`` (read now)."""
    found = []
    for observer in observers:
        async with events(running.bootstraps[observer]) as tail:
            await tail.drain()
            found += [e for e in tail.seen if e.kind == "failover" and e.ts >= since]
    return found


async def test_cut_region_is_failed_over_by_the_others_and_recovers_when_healed(regions_mesh: Mesh) -> None:
    survivors = [name for name in NAMES if name != CUT]
    link = regions_mesh.brokers[CUT].link
    cut_at = time.time()
    link.cut()
    try:
        for observer in survivors:
            async with events(regions_mesh.bootstraps[observer]) as tail:
                event = await tail.until(_failover_of(CUT, cut_at), 30)
            assert event is not None, f"{observer} did not fail {CUT} over within 30 s"
            assert event.observer == observer and set(event.views) >= set(survivors)
            async with routes(regions_mesh.bootstraps[observer]) as tail:
                moved = await tail.until(lambda r: r.geo == CUT and r.decided_at >= cut_at, 10)
            assert moved is not None and CUT not in moved.regions and moved.regions  # its clients go elsewhere
        assert regions_mesh.broker_alive(CUT)  # a partition, not a crash
        assert link.dropped() > 0
    finally:
        healed_at = time.time()
        link.heal()
    for observer in survivors:
        async with events(regions_mesh.bootstraps[observer]) as tail:
            back = await tail.until(lambda e: e.kind == "recovery" and e.region == CUT and e.ts >= healed_at, 90)
        assert back is not None, f"{observer} did not see {CUT} recover within 90 s of the heal"
        async with routes(regions_mesh.bootstraps[observer]) as tail:
            assert await tail.until(lambda r: r.geo == CUT and r.decided_at >= healed_at and r.regions[0] == CUT, 10)
    assert not [e for e in await _failovers_since(regions_mesh, cut_at, survivors) if e.region != CUT]


async def test_modest_loss_is_no_failover(regions_mesh: Mesh) -> None:
    link = regions_mesh.brokers[CUT].link
    began = time.time()
    link.set_loss(0.05)
    try:
        async with lags(regions_mesh.bootstraps["eu-west"]) as tail:
            await tail.until(lambda r: False, 15)  # 15 s of 5 % loss each way: 15 heartbeats, 7 times the down threshold
        assert link.dropped() > 0
    finally:
        link.clear_loss()
    heard = [r for r in tail.seen if r.source == CUT and r.ts >= began + 5]
    assert heard and all(r.samples > 0 for r in heard)  # its heartbeats kept arriving
    assert await _failovers_since(regions_mesh, began, NAMES) == []


async def test_wan_latency_grows_replication_lag_without_failover(regions_mesh: Mesh) -> None:
    proxy = regions_mesh.brokers[FAR].proxy
    assert proxy is not None

    async def lag_p50_ms(start: float, end: float) -> float:
        """Median of the eu-west agent's p50 lag of FAR -> eu-west over its reports from ``start`` to
        ``end`` (its reports are in time order: once one after ``end`` is read, all are)."""
        async with lags(regions_mesh.bootstraps["eu-west"]) as tail:
            await tail.until(lambda r: r.ts > end, 60)
        return statistics.median(r.lag_p50_ms for r in tail.seen
                                 if r.source == FAR and start <= r.ts <= end and r.lag_p50_ms is not None)

    began = time.time()
    near = await lag_p50_ms(began, began + 4)
    slowed_at = time.time()
    proxy.set_latency(0.15)
    try:
        far = await lag_p50_ms(slowed_at + 4, slowed_at + 8)  # a whole lag window (4 s) after the change
    finally:
        proxy.set_latency(0.0)
    print(f"replication lag {FAR} -> eu-west p50: {near:.0f} ms direct, {far:.0f} ms over a 150 ms (one way) WAN")
    assert far >= near + 150  # at least one crossing of the WAN more
    assert await _failovers_since(regions_mesh, began, NAMES) == []
