"""Exactly-once forwarding (#14, item 4), on the real broker: a batch consumer forwards a batch
through its :class:`streams.publisher.Forwarder` and is SIGKILLed after the send, before the
commit. Whether the same worker comes back (its transactional id fences the dead one's) or another
takes its partitions over (it fences the departed worker's id: :func:`streams.publisher.fence_departed`),
a ``read_committed`` batch consumer, as the metrics topic's is, reads each forwarded record once;
the topic itself holds the dead worker's aborted copies too. The dead worker's transaction
timeout is longer than the test may wait, so only an abort at takeover lets the reader through.

Records a batch consumer fetched before a rebalance and had not handled yet are handled once, by
one of the group (they were handled a second time after the rebalance sent the partition back to
its committed offset: session 6's gauge points stored twice after a stop).

And a RED key is held by one worker at a time: a worker that adopted a partition's keys and lost the
partition before a span of them came drops them too, or its idle timer would close their minutes a
second time after the new owner's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

import core.kafka.producer
from core.child_env import settings_env
from core.kafka.security import client_kwargs
from core.kafka.topics import ensure_topics
from core.settings import Settings
from streams.batch_consumer import BatchConsumer, KafkaEvent
from streams.publisher import worker_forwarder
from streams.red import RED_DURATION_METRIC, RedBank
from tests.helpers import isolated_settings, produce
from tests.traces.test_red_minutes import MINUTE, T0, red_record, span

RECORDS = 300
#: The dead worker's transaction timeout: the broker's longest (15 min), far past what the reader waits,
#: so the reader gets through only if its successor ends the dead worker's transaction.
LONG_TIMEOUT_MS = 900_000
#: The batch consumer's group session timeout (``streams.batch_consumer``).
SESSION_TIMEOUT_S = 10


def topics(settings: Settings) -> tuple[str, str]:
    """The source topic the forwarding consumer reads and the topic it forwards to."""
    return settings.topic_otlp_metrics, settings.topic_metrics


def forwarding_consumer(settings: Settings, die_before_commit: bool = False) -> BatchConsumer:
    """A batch consumer forwarding every record of the source topic, keyed as it came, in its
    forwarder's transaction; with ``die_before_commit`` its process is SIGKILLed when the batch's
    commit begins (the checkpoint runs right before the commit)."""
    source, target = topics(settings)
    group_id = f"{settings.app_id}-forward"
    forwarder = worker_forwarder(settings, group_id)

    async def forward(events: Sequence[KafkaEvent]) -> None:
        await forwarder.send([(target, event.key, event.value or b"") for event in events])

    def checkpoint() -> None:
        if die_before_commit and forwarder.in_transaction:  # not a clock's checkpoint before the batch
            os.kill(os.getpid(), signal.SIGKILL)

    return BatchConsumer(settings, source, group_id, forward, checkpoints=[checkpoint], checkpoint_due=lambda: True,
                         by_pattern=False, forwarder=forwarder)


def die_after_forwarding(timeout_ms: int) -> None:
    """The child process: forward, and die before the commit (settings from the environment)."""
    core.kafka.producer.TRANSACTION_TIMEOUT_MS = timeout_ms

    async def run() -> None:
        consumer = forwarding_consumer(Settings(), die_before_commit=True)
        await consumer.start()
        await asyncio.sleep(120)  # killed long before

    asyncio.run(run())


async def forward_until_committed(settings: Settings) -> None:
    """Forward (this process) until the group committed every record of the source topic."""
    await run_until_committed(settings, forwarding_consumer(settings))


async def run_until_committed(settings: Settings, consumer: BatchConsumer, timeout: float = 120.0,
                              linger: float = 0.0) -> None:
    """Run ``consumer`` until its group committed every record of the source topic, then ``linger``
    seconds more (what a replay would handle comes then), and stop it."""
    await consumer.start()
    try:
        async with asyncio.timeout(timeout):
            while not await all_committed(settings, consumer.group_id):
                await asyncio.sleep(0.5)
        await asyncio.sleep(linger)
    finally:
        await consumer.stop()


async def all_committed(settings: Settings, group_id: str) -> bool:
    """Whether ``group_id`` committed every record of the source topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=group_id, enable_auto_commit=False,
                                **client_kwargs(settings))
    await consumer.start()
    try:
        tps = [TopicPartition(topics(settings)[0], p) for p in range(settings.topic_partitions)]
        ends = await consumer.end_offsets(tps)
        return all([(await consumer.committed(tp) or 0) >= end for tp, end in ends.items()])
    finally:
        await consumer.stop()


async def read_committed(settings: Settings) -> list[bytes]:
    """What a batch consumer of the target topic (``read_committed``, as the metrics topic's) reads."""
    seen: list[bytes] = []

    async def collect(events: Sequence[KafkaEvent]) -> None:
        seen.extend(event.value or b"" for event in events)

    consumer = BatchConsumer(settings, topics(settings)[1], f"{settings.app_id}-reader", collect, checkpoints=[],
                             by_pattern=False)
    await consumer.start()
    try:
        async with asyncio.timeout(60):
            while len(seen) < RECORDS:
                await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # a second copy would come in the same or the next batch
    finally:
        await consumer.stop()
    return seen


async def every_record(settings: Settings) -> list[bytes]:
    """Every data record of the target topic, aborted ones included (``read_uncommitted``)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    try:
        tps = [TopicPartition(topics(settings)[1], p) for p in range(settings.topic_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[bytes] = []
        async with asyncio.timeout(30):
            while any([await consumer.position(tp) < end for tp, end in ends.items()]):
                for part in (await consumer.getmany(timeout_ms=500)).values():
                    out.extend(r.value for r in part)
        return out
    finally:
        await consumer.stop()


@pytest.mark.parametrize("successor", ["same worker", "another worker"])
def test_a_batch_forwarded_by_a_worker_killed_before_its_commit_is_read_once(
        tmp_path: Path, kafka_bootstrap: str, successor: str) -> None:
    settings = isolated_settings(tmp_path / "w0", kafka_bootstrap, topic_partitions=2)
    ensure_topics(settings)
    source, _ = topics(settings)
    values = [b"point %d" % i for i in range(RECORDS)]
    produce(settings, [(b"series %d" % (i % 7), value) for i, value in enumerate(values)], topic=source)

    child = subprocess.run(
        [sys.executable, "-c", f"from tests.test_exactly_once import die_after_forwarding; "
                               f"die_after_forwarding({LONG_TIMEOUT_MS})"],
        env=settings_env(settings), cwd=Path(__file__).parent.parent, timeout=120, capture_output=True)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    assert Counter(asyncio.run(every_record(settings))) == Counter(values)  # sent, not committed

    heir = settings if successor == "same worker" else settings.model_copy(update={"home": tmp_path / "w1"})
    asyncio.run(forward_until_committed(heir))

    assert Counter(asyncio.run(every_record(settings))) == Counter({value: 2 for value in values})  # both copies are there
    read = asyncio.run(read_committed(settings))
    assert Counter(read) == Counter(values)  # each once


def test_a_partition_given_up_takes_the_red_keys_adopted_with_it() -> None:
    owner = RedBank(bytes(32), grace_seconds=0)
    owner.add([red_record("a|cart", [span("a", T0)], offset=0)], partition="red:1")
    interim = RedBank(bytes(32), grace_seconds=0)  # held the partition for a while, got no span of it
    interim.restore(owner.checkpoint(), partition="red:1")  # the partition's changelog
    assert len(interim) == 1
    interim.release(["red:1"])
    assert len(interim) == 0 and interim.close_idle() == []


def test_records_fetched_before_a_rebalance_are_handled_once(tmp_path: Path, kafka_bootstrap: str) -> None:
    """The first consumer holds its batch for 4 s (``M1_FLUSH_SECONDS``); a second joins meanwhile."""
    settings = isolated_settings(tmp_path / "w0", kafka_bootstrap, topic_partitions=4, flush_seconds=4.0)
    ensure_topics(settings)
    source, _ = topics(settings)
    handled: list[tuple[int, int]] = []

    async def record(events: Sequence[KafkaEvent]) -> None:
        handled.extend((event.partition, event.offset) for event in events)

    def consumer() -> BatchConsumer:
        return BatchConsumer(settings, source, f"{settings.app_id}-rebalanced", record, checkpoints=[],
                             checkpoint_due=lambda: True, by_pattern=False)

    async def run() -> None:
        first = consumer()
        await first.start()
        try:
            async with asyncio.timeout(60):
                while not first._consumer.assignment():
                    await asyncio.sleep(0.1)
            await asyncio.to_thread(produce, settings, [(b"k%d" % i, b"v") for i in range(RECORDS)], source)
            await asyncio.sleep(1.0)  # the first has fetched them and waits for its batch to fill
            second = consumer()
            await second.start()
            try:
                async with asyncio.timeout(60):
                    while len(set(handled)) < RECORDS:
                        await asyncio.sleep(0.2)
                await asyncio.sleep(5.0)  # a second handling would come within a flush
            finally:
                await second.stop()
        finally:
            await first.stop()

    asyncio.run(run())
    assert len(set(handled)) == RECORDS and len(handled) == RECORDS, Counter(Counter(handled).values())


def test_an_idle_close_leaves_the_next_minutes_open() -> None:
    """A pause longer than the grace (a worker restarting, a partition moving) closes a key's open
    minutes, not the minutes its next spans fall in: they count as if there had been no pause."""
    paused = RedBank(bytes(32), grace_seconds=0)
    paused.add([red_record("a|cart", [span("a", T0 + 5 * 10**9, 12.0)], offset=0)])
    assert [p.ts for p in paused.close_idle() if p.metric == RED_DURATION_METRIC] == [T0 / 1e9]
    later = red_record("a|cart", [span("a", T0 + MINUTE + 5 * 10**9, 30.0)], offset=1)
    paused.add([later])
    assert paused.minutes("a|cart").open[("a", "unknown", "cart", "GET /cart", T0 + MINUTE)].spans == 1


def test_a_worker_the_group_dropped_saves_nothing_it_learned_meanwhile_and_reads_it_again(tmp_path: Path,
                                                                                             kafka_bootstrap: str) -> None:
    """The consumer's first batch blocks its event loop past the session timeout, so the group drops
    it (and may hand its partitions to another worker, which reads them from the last commit). Before
    its next checkpoint saves anything, the consumer finds it is no longer a member: it drops the
    models that learned the batch instead of saving them, and reads the batch again from the last
    commit. (Saved, those models would reach the other worker, which would score records again
    against models that had learned them: session 11's OTLP scale-out failure.) Each record is
    learned once in the end."""
    settings = isolated_settings(tmp_path / "w0", kafka_bootstrap, topic_partitions=2)
    ensure_topics(settings)
    source, _ = topics(settings)
    steps: list[str] = []  # "stalled", "cut", "forget", in order
    models: dict[str, int] = {}  # per key, how many of its records the model learned
    saved: dict[str, int] = {}  # the checkpoints

    async def learn(events: Sequence[KafkaEvent]) -> None:
        if "stalled" not in steps:
            time.sleep(SESSION_TIMEOUT_S + 3)  # no heartbeat: the group drops this member
            steps.append("stalled")
        for event in events:
            key = event.key.decode()
            models[key] = models.get(key, saved.get(key, 0)) + 1  # restored from its checkpoint first

    def cut() -> Callable[[], None]:
        steps.append("cut")
        snapshot = dict(models)
        return lambda: saved.update(snapshot)

    def forget(series: Iterable[str]) -> None:
        steps.append("forget")
        for key in series:
            models.pop(key, None)

    async def run() -> None:
        consumer = BatchConsumer(settings, source, f"{settings.app_id}-dropped", learn, checkpoints=[cut],
                                 checkpoint_due=lambda: True, forget=[forget], by_pattern=False)
        await asyncio.to_thread(produce, settings, [(b"k%d" % i, b"v") for i in range(RECORDS)], source)
        await run_until_committed(settings, consumer, timeout=90)

    asyncio.run(run())
    after_stall = steps[steps.index("stalled") + 1:]
    assert "cut" in after_stall and "forget" in after_stall, steps
    assert after_stall.index("forget") < after_stall.index("cut"), steps  # dropped before anything was saved
    assert saved == {f"k{i}": 1 for i in range(RECORDS)}, Counter(saved.values())


def test_a_commit_refused_after_its_checkpoint_was_written_is_made_when_the_worker_rejoins(
        tmp_path: Path, kafka_bootstrap: str) -> None:
    """The event loop stalls past the session timeout while the first checkpoint of handled records
    is written: the group drops the consumer between the write and the commit, and refuses the
    commit. The models saved have learned those records, so when the group takes the consumer back
    it commits those offsets and reads on from them: no record is handled twice."""
    settings = isolated_settings(tmp_path / "w0", kafka_bootstrap, topic_partitions=2)
    ensure_topics(settings)
    source, _ = topics(settings)
    handled: list[tuple[int, int]] = []
    stalled: list[int] = []  # how many records were handled when the loop stalled
    loop: asyncio.AbstractEventLoop | None = None

    async def record(events: Sequence[KafkaEvent]) -> None:
        handled.extend((event.partition, event.offset) for event in events)

    def stall_the_loop() -> None:  # in the writer's thread
        blocked = threading.Event()

        def block() -> None:
            blocked.set()
            time.sleep(SESSION_TIMEOUT_S + 3)  # no heartbeat: the group drops this member

        assert loop is not None
        loop.call_soon_threadsafe(block)
        blocked.wait(10)  # the write ends while the loop is blocked: the commit comes after the drop

    def cut() -> Callable[[], None] | None:
        if handled and not stalled:
            stalled.append(len(handled))
            return stall_the_loop
        return None

    async def run() -> None:
        nonlocal loop
        loop = asyncio.get_running_loop()
        consumer = BatchConsumer(settings, source, f"{settings.app_id}-refused", record, checkpoints=[cut],
                                 checkpoint_due=lambda: True, by_pattern=False)
        await asyncio.to_thread(produce, settings, [(b"k%d" % i, b"v") for i in range(RECORDS)], source)
        await run_until_committed(settings, consumer, timeout=90, linger=3.0)  # a replay from the older commit

    asyncio.run(run())
    assert stalled, "no checkpoint of handled records was written"
    assert len(set(handled)) == RECORDS and len(handled) == RECORDS, Counter(Counter(handled).values())


def test_a_worker_the_group_dropped_does_not_take_back_a_partition_another_moved_on(tmp_path: Path,
                                                                                   kafka_bootstrap: str) -> None:
    """As above, with a second consumer (its own event loop, in a thread): it takes both partitions
    while the first is stalled, and handles and commits them. When the first rejoins and gets one
    back, it reads on from the other's commit, not from its own refused one: from then on it handles
    nothing the second handled. (Before it rejoins, a dropped consumer may still handle what it had
    fetched: aiokafka cannot fence it, and its handler is idempotent on the store.)"""
    settings = isolated_settings(tmp_path / "w0", kafka_bootstrap, topic_partitions=2)
    ensure_topics(settings)
    source, _ = topics(settings)
    group_id = f"{settings.app_id}-dropped-twice"
    by_first: list[tuple[int, int]] = []
    by_second: list[tuple[int, int]] = []
    assignments: list[int] = []  # how many records the first had handled at each of its assignments
    second_started = threading.Event()

    def consumer(handler) -> BatchConsumer:  # noqa: ANN001
        return BatchConsumer(settings, source, group_id, handler, checkpoints=[], checkpoint_due=lambda: True,
                             by_pattern=False)

    async def stall_first(events: Sequence[KafkaEvent]) -> None:
        if not by_first:
            second_started.set()
            time.sleep(SESSION_TIMEOUT_S + 15)  # dropped; the second takes over meanwhile
        by_first.extend((event.partition, event.offset) for event in events)

    async def record(events: Sequence[KafkaEvent]) -> None:
        by_second.extend((event.partition, event.offset) for event in events)

    async def second() -> None:
        worker = consumer(record)
        await worker.start()
        try:
            await asyncio.to_thread(produce, settings, [(b"late%d" % i, b"v") for i in range(RECORDS)], source)
            await asyncio.sleep(SESSION_TIMEOUT_S + 25)
        finally:
            await worker.stop()

    async def run() -> None:
        worker = consumer(stall_first)
        assigned = worker.partitions_assigned

        async def counted(partitions: Iterable[TopicPartition]) -> None:
            assignments.append(len(by_first))
            await assigned(partitions)

        worker.partitions_assigned = counted
        await asyncio.to_thread(produce, settings, [(b"k%d" % i, b"v") for i in range(RECORDS)], source)
        await worker.start()
        helper = threading.Thread(target=lambda: second_started.wait(60) and asyncio.run(second()))
        helper.start()
        try:
            async with asyncio.timeout(120):
                while not await all_committed(settings, group_id):
                    await asyncio.sleep(0.5)
            await asyncio.sleep(3.0)  # a replay from the refused commit would come now
        finally:
            await worker.stop()
            await asyncio.to_thread(helper.join, 90)

    asyncio.run(run())
    assert len(set(by_first) | set(by_second)) == 2 * RECORDS  # every record handled
    assert len(assignments) >= 2, "the first consumer never rejoined"
    after_rejoining = set(by_first[assignments[1]:])
    assert sorted(after_rejoining & set(by_second)) == []
