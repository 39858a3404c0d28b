"""Store faults (streams/retry.py): bounded retries and dead letters for a batch the store rejects,
backpressure while it is unreachable. Real broker, real chdb, real clickhouse-connect errors."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from clickhouse_connect.driver.exceptions import OperationalError

from core.kafka.security import client_kwargs
from core.settings import Settings
from core.kafka.topics import ensure_topics
from schemas.events import MetricPoint, encode
from sinks.clickhouse import Store, connect
from streams.batch_consumer import BatchConsumer, KafkaEvent
from streams.metrics_handler import batch_dead_letters, metrics_handler
from streams.metrics_pipeline import MetricsPipeline
from streams.publisher import Publisher
from streams.retry import UNAVAILABLE_CODES, Fault, RetryPolicy, fault_of, store_reason
from tests.helpers import consume_records

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
#: The value the test constraint refuses: a valid metric/1 point that this store will not take.
POISON = 1e308


def point(tenant: str, i: int, value: float | None = None) -> tuple[bytes, bytes]:
    """The ``i``-th point of ``tenant``'s one series (ts ``T0 + i``), keyed by its series."""
    p = MetricPoint(T0 + i, tenant, "eu-west-1", "api", "latency_ms", 100.0 + i % 7 if value is None else value, {})
    return p.series_key.encode(), encode(p)


@pytest.fixture(scope="module")
def refusing_store(store: Store) -> Store:
    """The migrated store, whose metric_points refuse :data:`POISON` (a real engine error)."""
    store.command(f"ALTER TABLE metric_points ADD CONSTRAINT test_poison CHECK value < {POISON / 10}")
    return store


@pytest.fixture
def unreachable() -> Iterator[Settings]:
    """Server-mode settings of a ClickHouse on a port that is bound but not listening: connecting
    is refused, as with a stopped server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield Settings(clickhouse_url=f"http://127.0.0.1:{sock.getsockname()[1]}")


def caught(call: Callable[[], object]) -> BaseException:
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("no error")


def test_faults_are_told_apart_on_the_engines_own_errors(refusing_store: Store, unreachable: Settings) -> None:
    refused = caught(lambda: connect(unreachable))
    assert isinstance(refused, OperationalError) and fault_of(refused) is Fault.UNAVAILABLE
    insert = "INSERT INTO metric_points (ts, tenant, region, service, metric, series, value) VALUES (now64(3), 't', 'r', 's', 'm', 'x', {})"
    rejected = caught(lambda: refusing_store.command(insert.format(POISON)))
    assert fault_of(rejected) is Fault.REJECTED
    reason = store_reason(rejected)
    assert reason.startswith("store: Code: 469") and "VIOLATED_CONSTRAINT" in reason and "\n" not in reason
    dropped = caught(lambda: refusing_store.command(insert.replace("metric_points", "no_such_table").format(1.0)))
    assert fault_of(dropped) is Fault.UNAVAILABLE  # every write would fail alike: not this batch's fault
    assert fault_of(ValueError("a bug")) is Fault.OTHER
    codes = ", ".join(map(str, UNAVAILABLE_CODES))
    assert dict(refusing_store.query(f"SELECT c, errorCodeToName(c) FROM (SELECT arrayJoin([{codes}]) AS c)").rows) == UNAVAILABLE_CODES


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    policy = RetryPolicy(attempts=5, base_seconds=0.5, max_seconds=30.0)
    for failures in range(1, 80):
        ceiling = min(30.0, 0.5 * 2 ** (failures - 1))
        assert ceiling / 2 <= policy.delay(failures) <= ceiling
    assert len({policy.delay(3) for _ in range(20)}) > 1


async def committed(settings: Settings, group: str) -> dict[int, int]:
    """The group's committed offset per partition of the metrics topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **client_kwargs(settings))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == settings.topic_metrics and meta.offset >= 0}


async def until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.1)


async def until_committed(settings: Settings, group: str, expected: dict[int, int], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while await committed(settings, group) != expected:
            await asyncio.sleep(0.2)


def offsets(events: Sequence[KafkaEvent]) -> list[tuple[int, int]]:
    return [(e.partition, e.offset) for e in events]


@pytest.mark.parametrize("table_refuses", [False, True], ids=["table-takes-letters", "table-refuses-letters-too"])
async def test_a_batch_the_store_rejects_is_tried_n_times_then_dead_lettered_and_the_stream_moves_on(
        refusing_store: Store, make_settings: Callable[..., Settings], table_refuses: bool) -> None:
    settings = make_settings(store_retry_attempts=3, store_retry_base_seconds=0.01, store_retry_max_seconds=0.05)
    store, tenant, group = refusing_store, f"t-{uuid.uuid4().hex[:6]}", f"{settings.app_id}-metrics"
    if table_refuses:  # the dead_letters table fails too: the topic still has every letter
        store.command(f"ALTER TABLE dead_letters ADD CONSTRAINT test_no_store CHECK NOT (startsWith(reason, 'store:') "
                      f"AND topic = '{settings.topic_metrics}')")
    before = [point(tenant, i) for i in range(10)] + [point(tenant, 10, POISON)] + [point(tenant, i) for i in range(11, 20)]
    after = [point(tenant, i) for i in range(20, 40)]
    publisher, pipeline = Publisher(settings), MetricsPipeline(settings, store)
    handle, tries = metrics_handler(pipeline, publisher, settings), []

    async def counted(events: Sequence[KafkaEvent]) -> None:
        tries.append(offsets(events))
        await handle(events)

    consumer = BatchConsumer(settings, settings.topic_metrics, group, counted, checkpoints=[pipeline.checkpoint],
                             dead_letters=batch_dead_letters(pipeline, publisher, settings))
    after_stored = f"SELECT count() FROM metric_points FINAL WHERE tenant = '{tenant}' AND ts >= toDateTime64({T0 + 20}, 3)"
    try:
        await publisher.start()
        await publisher.publish([(settings.topic_metrics, k, v) for k, v in before])
        await consumer.start()
        await consume_records(settings, settings.topic_dead_letter, 1)  # the poisoned batch is dead-lettered
        await publisher.publish([(settings.topic_metrics, k, v) for k, v in after])
        await until(lambda: store.query(after_stored).rows[0][0] == len(after))  # the stream moved on
    finally:
        await consumer.stop()  # its last checkpoint commits the offsets
        await publisher.stop()
        if table_refuses:
            store.command("ALTER TABLE dead_letters DROP CONSTRAINT test_no_store")

    poisoned = next(t for t in tries if any(o == 10 for _, o in t))  # one series: one partition, offsets = indices
    first = tries.index(poisoned)
    assert tries.count(poisoned) == 3 and tries[first:first + 3] == [poisoned] * 3  # store_retry_attempts tries in a row
    letters = [json.loads(r.value) for r in await consume_records(settings, settings.topic_dead_letter, len(poisoned))]
    assert sorted((letter["partition"], letter["offset"]) for letter in letters) == sorted(poisoned)
    [reason] = {letter["reason"] for letter in letters}
    assert reason.startswith("store: Code: 469") and "VIOLATED_CONSTRAINT" in reason and "test_poison" in reason
    assert all(base64.b64decode(letter["payload_b64"]) == before[letter["offset"]][1] for letter in letters)  # whole records
    in_table = store.query(f"SELECT count() FROM dead_letters FINAL WHERE topic = '{settings.topic_metrics}'").rows[0][0]
    assert in_table == (0 if table_refuses else len(poisoned))
    kept = {round(ts.timestamp() - T0) for (ts,) in store.query(f"SELECT ts FROM metric_points FINAL WHERE tenant = '{tenant}'").rows}
    assert kept == set(range(40)) - {o for _, o in poisoned}  # every other record stored, none of the batch's
    assert await committed(settings, group) == {poisoned[0][0]: 40}  # offsets advanced past the dead letters


async def test_while_the_store_is_unreachable_input_is_paused_and_nothing_is_dead_lettered_or_lost(
        store: Store, make_settings: Callable[..., Settings], unreachable: Settings,
        caplog: pytest.LogCaptureFixture) -> None:
    """A handler that writes through a real client of an unreachable server (connection refused)
    while the outage lasts, and to the real chdb store after."""
    settings = make_settings(store_retry_attempts=2, store_retry_base_seconds=0.01, store_retry_max_seconds=0.05)
    group, table = f"{settings.app_id}-metrics", f"faults_{uuid.uuid4().hex[:8]}"
    store.command(f"CREATE TABLE {table} (partition UInt32, offset UInt64) ENGINE = MergeTree ORDER BY (partition, offset)")
    records = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(200)]
    outage, down_calls, dead = asyncio.Event(), [], []
    failed_once, failed_enough = asyncio.Event(), asyncio.Event()
    outage.set()

    async def handler(events: Sequence[KafkaEvent]) -> None:
        if outage.is_set():
            down_calls.append((offsets(events), consumer.paused()))
            failed_once.set()
            if len(down_calls) >= 6:  # three times store_retry_attempts
                failed_enough.set()
            await asyncio.to_thread(connect, unreachable)  # raises: connection refused
        rows = offsets(events)
        await asyncio.to_thread(store.insert, table, {"partition": [p for p, _ in rows], "offset": [o for _, o in rows]})

    async def dead_letters(events: Sequence[KafkaEvent], reason: str) -> None:
        dead.append((offsets(events), reason))

    publisher = Publisher(settings)
    consumer = BatchConsumer(settings, settings.topic_metrics, group, handler, checkpoints=[],
                             checkpoint_due=lambda: True, dead_letters=dead_letters)  # commit after every batch
    count = f"SELECT count(), uniqExact(partition, offset) FROM {table}"
    caplog.set_level(logging.WARNING, logger="streams.retry")
    try:
        await asyncio.to_thread(ensure_topics, settings, [settings.topic_metrics])  # two partitions
        await publisher.start()
        await publisher.publish([(settings.topic_metrics, k, v) for k, v in records[:100]])
        await consumer.start()
        async with asyncio.timeout(60):
            await failed_once.wait()
            await publisher.publish([(settings.topic_metrics, k, v) for k, v in records[100:]])  # arrive during the outage
            await failed_enough.wait()
        assert await committed(settings, group) == {}  # nothing acknowledged while the batch waits
        outage.clear()
        await until(lambda: store.query(count).rows[0] == (200, 200))
        await until(lambda: not consumer.paused())  # resumed
        ends = {p: last + 1 for p, last in store.query(f"SELECT partition, max(offset) FROM {table} GROUP BY partition").rows}
        await until_committed(settings, group, ends)
    finally:
        await consumer.stop()
        await publisher.stop()

    first = down_calls[0][0]
    assert all(call == first for call, _ in down_calls)  # the same batch every time: no new batch handled
    partitions = {TopicPartition(settings.topic_metrics, p) for p, _ in first}
    assert all(partitions <= paused for _, paused in down_calls[1:])  # input paused between tries
    assert dead == []  # an outage is not the batch's fault
    assert store.query(count).rows[0] == (200, 200)  # every record stored exactly once
    messages = [r.getMessage() for r in caplog.records]
    assert sum("store unavailable (" in m for m in messages) == 1  # logged once (then every minute)
    assert sum("store available again" in m for m in messages) == 1
    assert not consumer.paused()



async def test_partitions_a_rebalance_takes_from_a_waiting_batch_are_left_to_their_new_owner(
        store: Store, make_settings: Callable[..., Settings], unreachable: Settings) -> None:
    """A second worker joins while the first waits for the store with a batch of both partitions:
    it takes one and handles it; the first gives its batch up and, once the store is back, reads
    the partition it kept again from its last commit. Every record is handled exactly once."""
    settings = make_settings(store_retry_base_seconds=0.01, store_retry_max_seconds=0.05)
    group, table = f"{settings.app_id}-metrics", f"faults_{uuid.uuid4().hex[:8]}"
    store.command(f"CREATE TABLE {table} (partition UInt32, offset UInt64) ENGINE = MergeTree ORDER BY (partition, offset)")
    outage, waiting, second_handled = asyncio.Event(), asyncio.Event(), asyncio.Event()
    outage.set()

    async def write(events: Sequence[KafkaEvent]) -> None:
        rows = offsets(events)
        await asyncio.to_thread(store.insert, table, {"partition": [p for p, _ in rows], "offset": [o for _, o in rows]})

    async def first_handler(events: Sequence[KafkaEvent]) -> None:
        if outage.is_set():
            waiting.set()
            await asyncio.to_thread(connect, unreachable)  # raises: connection refused
        await write(events)

    async def second_handler(events: Sequence[KafkaEvent]) -> None:
        await write(events)
        second_handled.set()

    publisher = Publisher(settings)
    first, second = (BatchConsumer(settings, settings.topic_metrics, group, handler, checkpoints=[], checkpoint_due=lambda: True)
                     for handler in (first_handler, second_handler))
    count = f"SELECT count(), uniqExact(partition, offset) FROM {table}"
    try:
        await asyncio.to_thread(ensure_topics, settings, [settings.topic_metrics])  # two partitions
        await publisher.start()
        await publisher.publish([(settings.topic_metrics, f"k{i}".encode(), b"v") for i in range(200)])
        await first.start()
        async with asyncio.timeout(60):
            await waiting.wait()
        await until(lambda: {tp.partition for tp in first.paused()} == {0, 1})  # its batch holds both
        async with asyncio.timeout(60):
            await second.start()
            await second_handled.wait()
        await until(lambda: len(first.paused()) == 1)  # it kept one partition, still paused
        outage.clear()
        await until(lambda: store.query(count).rows[0][1] == 200)
        ends = {p: last + 1 for p, last in store.query(f"SELECT partition, max(offset) FROM {table} GROUP BY partition").rows}
        await until_committed(settings, group, ends)
    finally:
        await second.stop()
        await first.stop()
        await publisher.stop()
    assert store.query(count).rows[0] == (200, 200)  # neither worker handled a record twice
