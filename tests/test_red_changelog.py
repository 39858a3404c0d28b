"""The RED state lives in a compacted changelog topic written in the RED consumer's transaction
(#14, item 4), on the real broker: a worker SIGKILLed after its batch's state was written and
before the commit leaves the next owner of the partition the state of its last commit, so the
replayed spans are accounted again and the minutes they close are forwarded once.

(With the state saved beside the transaction, to ``M1_STATE_DIR``, the next owner got the newer
state, skipped the replayed spans as accounted, and the minute never closed: session 6's
missing RED points.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

import core.kafka.producer
from core.child_env import settings_env
from core.kafka.security import client_kwargs
from core.kafka.topics import ensure_topics
from core.settings import Settings
from schemas.events import decode_metric
from sinks.clickhouse import Store, connect
from streams.metrics_pipeline import MetricsPipeline
from streams.otlp_agents import red_consumer, red_group
from streams.otlp_pipeline import OtlpPipeline
from streams.publisher import Forwarder, worker_forwarder
from streams.red import RedBank, decode_red, red_records, red_topic
from streams.red_changelog import CHANGELOG_CONFIGS, RedChangelog, changelog_topic
from tests.helpers import isolated_settings, produce
from tests.traces.test_red_minutes import MINUTE, T0, span

KEYS = ("a", "b", "c")  # tenants: keys a|cart, b|cart, c|cart
GRACE = 30.0
#: The dead worker's transaction timeout (the broker aborts it then, and the heir's restore goes on).
SHORT_TIMEOUT_MS = 3_000


def first_batch() -> list[tuple[bytes, bytes]]:
    """Spans of minute T0 per key, closing nothing."""
    return [(key, value) for i in range(5) for tenant in KEYS
            for _, key, value in red_records([span(tenant, T0 + i * 5 * 10**9, 10.0 + i, error=i == 2)], "red",
                                             "otlp_spans:0", i)]


def second_batch() -> list[tuple[bytes, bytes]]:
    """A span per key 45 s into the next minute: it closes minute T0 (grace 30 s)."""
    return [(key, value) for tenant in KEYS
            for _, key, value in red_records([span(tenant, T0 + MINUTE + 45 * 10**9)], "red", "otlp_spans:0", 5)]


def reference(records: list[tuple[bytes, bytes]]) -> RedBank:
    """A bank that accounted ``records`` once, in order."""
    bank = RedBank(b"\0" * 32, GRACE)
    bank.add([(key.decode(), decode_red(value)) for key, value in records])
    return bank


def pipeline_of(settings: Settings, store: Store) -> OtlpPipeline:
    return OtlpPipeline(settings, store, MetricsPipeline(settings, store), red_grace_seconds=GRACE)


def die_at_the_commit_of_minutes(timeout_ms: int) -> None:
    """The child process: the RED consumer as the worker wires it, SIGKILLed when it commits a
    transaction that forwarded minutes (their state was written before: at the send or before it)."""
    core.kafka.producer.TRANSACTION_TIMEOUT_MS = timeout_ms
    settings = Settings()
    store = Store(connect(settings))
    store.migrate()
    pipeline = pipeline_of(settings, store)
    forwarder = worker_forwarder(settings, red_group(settings))
    topics: set[str] = set()
    send, commit = forwarder.send, forwarder.commit

    async def sending(records: list) -> int:
        topics.update(topic for topic, _, _ in records)
        return await send(records)

    async def committing(offsets: dict, group_id: str) -> bool:
        if settings.topic_metrics in topics:
            os.kill(os.getpid(), signal.SIGKILL)
        return await commit(offsets, group_id)

    forwarder.send, forwarder.commit = sending, committing  # type: ignore[method-assign]

    async def run() -> None:
        consumer = red_consumer(settings, pipeline, forwarder, None)
        await consumer.start()
        await asyncio.sleep(120)  # killed long before

    asyncio.run(run())


async def committed_all(settings: Settings) -> bool:
    """Whether the RED group committed every record of the RED topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=red_group(settings),
                                enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    try:
        tps = [TopicPartition(red_topic(settings), p) for p in range(settings.topic_partitions)]
        ends = await consumer.end_offsets(tps)
        return all([(await consumer.committed(tp) or 0) >= end for tp, end in ends.items()])
    finally:
        await consumer.stop()


async def wait_committed(settings: Settings, timeout: float = 120) -> None:
    async with asyncio.timeout(timeout):
        while not await committed_all(settings):
            await asyncio.sleep(0.5)


async def minutes_forwarded(settings: Settings) -> Counter[tuple[str, float]]:
    """The (series, minute) of every point a ``read_committed`` reader finds on the metrics topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed", **client_kwargs(settings))
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topic_metrics, p) for p in range(settings.topic_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        seen: Counter[tuple[str, float]] = Counter()
        async with asyncio.timeout(60):
            while any([await consumer.position(tp) < end for tp, end in ends.items()]):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    seen.update((p.series_key, p.ts) for p in map(decode_metric, (r.value for r in records)))
        return seen
    finally:
        await consumer.stop()


async def take_over(settings: Settings, store: Store) -> OtlpPipeline:
    """Run the RED consumer of another worker until the group committed the whole RED topic."""
    pipeline = pipeline_of(settings, store)
    consumer = red_consumer(settings, pipeline, worker_forwarder(settings, red_group(settings)), None)
    await consumer.start()
    try:
        await wait_committed(settings, timeout=180)
    finally:
        await consumer.stop()
    return pipeline


def test_a_red_batch_killed_before_its_commit_leaves_the_old_state_and_its_minutes_close_once(
        tmp_path: Path, kafka_bootstrap: str, store: Store) -> None:
    settings = isolated_settings(tmp_path / "w0", kafka_bootstrap, topic_partitions=2, state_dir=tmp_path / "state",
                                state_key_path=tmp_path / "state.key")  # both workers'
    ensure_topics(settings, [red_topic(settings), settings.topic_metrics])
    ensure_topics(settings, [changelog_topic(settings)], CHANGELOG_CONFIGS)
    produce(settings, first_batch(), topic=red_topic(settings))
    child = subprocess.Popen(
        [sys.executable, "-c", f"from tests.test_red_changelog import die_at_the_commit_of_minutes; "
                               f"die_at_the_commit_of_minutes({SHORT_TIMEOUT_MS})"],
        env=settings_env(settings), cwd=Path(__file__).parent.parent, stderr=subprocess.PIPE)
    try:
        asyncio.run(wait_committed(settings))  # the first batch: state, no minute, committed
        produce(settings, second_batch(), topic=red_topic(settings))
        assert child.wait(timeout=120) == -signal.SIGKILL, child.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
    finally:
        child.kill()

    heir = settings.model_copy(update={"home": tmp_path / "w1"})
    pipeline = asyncio.run(take_over(heir, store))

    whole = reference(first_batch() + second_batch())
    expected = {(p.series_key, p.ts) for p in reference(first_batch()).add(
        [(key.decode(), decode_red(value)) for key, value in second_batch()])}
    assert len(expected) == 2 * len(KEYS)  # p90 and error rate of minute T0 per key
    assert asyncio.run(minutes_forwarded(settings)) == Counter({minute: 1 for minute in expected})
    for tenant in KEYS:  # the heir's state: as if no worker had died
        assert pipeline.red._dump(f"{tenant}|cart") == whole._dump(f"{tenant}|cart")


def test_the_changelog_gives_each_partition_its_keys_last_committed_state(tmp_path: Path, kafka_bootstrap: str) -> None:
    """What the RED consumer forwards is what a new owner reads back, per partition; an aborted
    transaction's states are not."""
    settings = isolated_settings(tmp_path, kafka_bootstrap, topic_partitions=2)
    changelog = RedChangelog(settings)
    ensure_topics(settings, [changelog.topic], CHANGELOG_CONFIGS)
    bank = reference(first_batch())
    committed = bank.checkpoint()
    bank.add([(key.decode(), decode_red(value)) for key, value in second_batch()])
    aborted = bank.checkpoint()

    async def forward() -> None:
        forwarder = Forwarder(settings, f"{settings.app_id}-test")
        try:
            await forwarder.send(changelog.records(committed))
            await forwarder.commit({}, f"{settings.app_id}-test")
            await forwarder.send(changelog.records(aborted))
            await forwarder.abort()
        finally:
            await forwarder.stop()

    asyncio.run(forward())
    read = changelog.read([0, 1])
    assert sorted(row for rows in read.values() for row in rows) == sorted(committed)
    for partition, rows in read.items():
        restored = RedBank(b"\0" * 32, GRACE)
        restored.restore(rows, partition=f"red:{partition}")
        assert restored.unrestored(["red:0", "red:1"]) == [f"red:{1 - partition}"]
        for key, _, _ in rows:
            assert restored._dump(key) == reference(first_batch())._dump(key)
