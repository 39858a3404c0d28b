"""A checkpoint written off the batch path, on the real broker: the cut is taken between batches,
batches go on while its writer runs, and its offsets (exactly those handled before the cut) are
committed only once the writer succeeded; a failed write commits nothing, and the next checkpoint
commits them with its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from core.kafka.topics import ensure_topics
from core.settings import Settings
from streams.batch_consumer import BatchConsumer, KafkaEvent
from streams.publisher import Publisher
from tests.helpers import isolated_settings
from tests.test_store_faults import committed, until, until_committed

pytestmark = pytest.mark.kafka


class Checkpoints:
    """The consumer's handler and checkpoint: it records what was handled; each cut snapshots the
    handled ends and returns a writer that waits for ``release`` and then fails or succeeds as told."""

    def __init__(self) -> None:
        self.ends: dict[int, int] = {}  # partition -> offset after the last record handled
        self.handled = 0
        self.cuts: list[dict[int, int]] = []
        self.due = False
        self.release = threading.Event()
        self.fail_next_write = False
        self.writes: list[bool] = []

    async def handle(self, events: Sequence[KafkaEvent]) -> None:
        for event in events:
            self.ends[event.partition] = event.offset + 1
        self.handled += len(events)

    def cut(self) -> Callable[[], None] | None:
        if not self.ends:
            return None  # the first join's revocation: nothing handled, nothing to write
        self.due = False
        self.cuts.append(dict(self.ends))
        fail, self.fail_next_write = self.fail_next_write, False

        def write() -> None:
            self.release.wait(30)
            self.writes.append(not fail)
            if fail:
                raise OSError("the store refused the checkpoint")

        return write


async def publish(settings: Settings, first: int, count: int) -> None:
    publisher = Publisher(settings)
    await publisher.start()
    try:
        await publisher.publish([(settings.topic_metrics, f"k{i}".encode(), b"v") for i in range(first, first + count)])
    finally:
        await publisher.stop()


async def run(tmp_path: Path, kafka_bootstrap: str, fail_first_write: bool) -> tuple[Checkpoints, BatchConsumer, Settings]:
    settings = isolated_settings(tmp_path, kafka_bootstrap, snapshot_seconds=3600.0)  # only the cuts asked for below
    await asyncio.to_thread(ensure_topics, settings, [settings.topic_metrics])
    state = Checkpoints()
    state.fail_next_write = fail_first_write
    consumer = BatchConsumer(settings, settings.topic_metrics, f"{settings.app_id}-metrics", state.handle,
                             checkpoints=[state.cut], checkpoint_due=lambda: state.due)
    return state, consumer, settings


async def test_batches_go_on_while_a_checkpoint_is_written_and_its_offsets_wait_for_the_write(
        tmp_path: Path, kafka_bootstrap: str) -> None:
    state, consumer, settings = await run(tmp_path, kafka_bootstrap, fail_first_write=False)
    group = f"{settings.app_id}-metrics"
    await publish(settings, 0, 100)
    await consumer.start()
    try:
        await until(lambda: state.handled == 100)
        state.due = True
        await publish(settings, 100, 1)  # a batch after which the checkpoint is cut
        await until(lambda: len(state.cuts) == 1)
        await publish(settings, 101, 99)
        await until(lambda: state.handled == 200)  # batches went on while the writer waits
        assert not any((await committed(settings, group)).values())  # nothing past the first record before the write
        state.release.set()
        await until_committed(settings, group, state.cuts[0])  # exactly the cut's offsets
        assert sum(state.cuts[0].values()) == 101 and state.writes == [True]
    finally:
        state.release.set()
        await consumer.stop()
    assert await committed(settings, group) == state.ends  # the stop's checkpoint: everything handled
    assert sum(state.ends.values()) == 200


async def test_a_failed_write_commits_nothing_and_the_next_checkpoint_commits_its_offsets(
        tmp_path: Path, kafka_bootstrap: str) -> None:
    state, consumer, settings = await run(tmp_path, kafka_bootstrap, fail_first_write=True)
    group = f"{settings.app_id}-metrics"
    state.release.set()
    await publish(settings, 0, 100)
    await consumer.start()
    try:
        await until(lambda: state.handled == 100)
        state.due = True
        await publish(settings, 100, 1)
        await until(lambda: state.writes == [False])
        await asyncio.sleep(1.0)  # a commit would have landed by now
        assert not any((await committed(settings, group)).values())  # (the first record's offset: _still_member)
        state.due = True
        await publish(settings, 101, 1)
        await until(lambda: state.writes == [False, True])
        await until_committed(settings, group, state.cuts[1])  # covers the failed cut's offsets too
        assert all(state.cuts[1][p] >= offset for p, offset in state.cuts[0].items())
        assert sum(state.cuts[1].values()) == 102
    finally:
        await consumer.stop()
