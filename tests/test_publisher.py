"""The publisher on the real broker: every record arrives once, keyed ones where Kafka's own
partitioner puts them and in order per key, across more records than one producer batch holds;
a worker taking over ends the open transactions of departed workers' forwarders, and only theirs."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from core.kafka.producer import make_producer
from core.kafka.security import client_kwargs
from core.settings import Settings
from core.kafka.topics import ensure_topics
from streams.publisher import Forwarder, Publisher, fence_departed
from tests.helpers import consume_records


async def partitions_chosen_by_aiokafka(settings: Settings, topic: str, keys: list[bytes]) -> dict[bytes, int]:
    producer = make_producer(settings)
    await producer.start()
    try:
        acks = [await producer.send(topic, b"probe", key=k) for k in keys]
        return {k: (await ack).partition for k, ack in zip(keys, acks)}
    finally:
        await producer.stop()


def test_records_arrive_once_in_their_key_partition_and_order(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    ensure_topics(settings)
    keys = [f"tenant|eu|api|cpu|host=h{i}".encode() for i in range(40)]
    padding = b"x" * 1000  # 2,400 records of ~1 kB: several 512 kB producer batches per partition
    keyed = [(settings.topic_forecasts, keys[i % 40], b"%d|" % i + padding) for i in range(2400)]
    keyless = [(settings.topic_dead_letter, None, b"letter %d" % i) for i in range(30)]

    async def run() -> tuple[int, list, list, dict[bytes, int]]:
        publisher = Publisher(settings)
        await publisher.start()
        try:
            sent = await publisher.publish(keyed + keyless)
        finally:
            await publisher.stop()
        return (sent, await consume_records(settings, settings.topic_forecasts, len(keyed)),
                await consume_records(settings, settings.topic_dead_letter, len(keyless)),
                await partitions_chosen_by_aiokafka(settings, settings.topic_anomalies, keys))

    sent, forecasts, letters, expected = asyncio.run(run())
    assert sent == len(keyed) + len(keyless)
    assert sorted(r.value for r in forecasts) == sorted(v for _, _, v in keyed)  # each once
    assert sorted(r.value for r in letters) == sorted(v for _, _, v in keyless)
    assert {r.partition for r in forecasts} == {0, 1}
    assert all(r.partition == expected[r.key] for r in forecasts)  # as aiokafka's send would place it
    sequence: dict[bytes, list[int]] = defaultdict(list)
    for r in sorted(forecasts, key=lambda r: (r.partition, r.offset)):
        sequence[r.key].append(int(r.value.split(b"|")[0]))
    assert all(s == sorted(s) for s in sequence.values())  # per-key order kept


def test_a_publisher_used_before_the_app_starts_it_starts_its_producer(make_settings: Callable[..., Settings]) -> None:
    """Faust starts agents before app services: an early publish must not fail or be lost."""
    settings = make_settings()
    ensure_topics(settings)

    async def run() -> tuple[int, list]:
        publisher = Publisher(settings)  # never start()ed
        try:
            sent = await publisher.publish([(settings.topic_anomalies, b"k", b"early")])
        finally:
            await publisher.stop()
        return sent, await consume_records(settings, settings.topic_anomalies, 1)

    sent, records = asyncio.run(run())
    assert sent == 1 and [r.value for r in records] == [b"early"]


def test_a_takeover_ends_only_the_open_transactions_of_its_groups_departed_workers(
        make_settings: Callable[..., Settings]) -> None:
    """Four forwarders of one group hold a transaction open: one whose worker is still a member
    (its consumer's client id names it), one whose worker left, one of another group and the
    caller's own. Only the departed worker's is ended, and its producer is fenced."""
    settings = make_settings()
    topic = settings.topic_metrics
    ensure_topics(settings)
    group = f"{settings.app_id}-forward"
    live, gone, mine = (Forwarder(settings, f"{group}-{digit * 16}") for digit in "abd")
    other = Forwarder(settings, f"{group}-otlp-{'c' * 16}")  # another group's (its name extends this one's)

    async def run() -> tuple[list[str], list[str]]:
        for forwarder in (live, gone, mine, other):
            await forwarder.send([(topic, b"k", b"v")])
        member = AIOKafkaConsumer(topic, group_id=group, client_id=live.transactional_id,
                                  bootstrap_servers=settings.bootstrap, **client_kwargs(settings))
        await member.start()
        try:
            async with asyncio.timeout(30):
                while not member.assignment():
                    await member.getmany(timeout_ms=200)
            fenced = await fence_departed(settings, group, mine.transactional_id)
            again = await fence_departed(settings, group, mine.transactional_id)
            assert await live.commit({}, group) and await mine.commit({}, group) and await other.commit({}, group)
            with pytest.raises(KafkaError):  # fenced: its transaction was aborted and its epoch is an old one
                await gone.commit({}, group)
            return fenced, again
        finally:
            await member.stop()
            for forwarder in (live, gone, mine, other):
                await forwarder.stop()

    fenced, again = asyncio.run(run())
    assert fenced == [gone.transactional_id]
    assert again == []  # nothing of it is open any more
