"""The metrics topic's consumer: aiokafka batches inside the Faust app.

Faust's per-event stream machinery delivers about 3,000 events/s per process on the
development machines, while a plain aiokafka ``getmany`` loop reads the same topic 30 times
faster (docs/benchmarks.md). So the high-volume metrics topic is read here, in batches
flushed by size (``M1_BATCH_SIZE``) or time (``M1_FLUSH_SECONDS``), and each batch goes to
one handler (``streams.app`` wires the metrics path, then the forecasting path on the points
the metrics path decoded). A failing batch is retried as :mod:`streams.retry` says, with this
consumer's input paused meanwhile: a batch the store rejects is tried ``M1_STORE_RETRY_ATTEMPTS``
times and then dead-lettered; while the store is unavailable the batch waits, however long that
takes. Paused partitions return nothing, but the consumer keeps polling them, so the group keeps
the member (heartbeats run on their own; polling is what ``max_poll_interval_ms`` watches). The
low-volume topics keep their Faust agents.

Offsets are committed together with the models' checkpoints, every ``M1_SNAPSHOT_SECONDS`` (or
less often, when a checkpoint takes more than a ninth of that: see ``CHECKPOINT_SPACING``) and on a
clean stop: between two batches the models' changed state is cut (a cheap copy), then written
while the next batches are handled, and once written the offsets of every batch handled before
the cut are committed. After a crash the consumer resumes from the last commit with the models
of the checkpoint that commit covers (a checkpoint written and never committed is a newer version
beside it, not restored: ``positions``, ``sinks.checkpoints``), so each detector re-learns exactly
the points it had not saved, and the store's ReplacingMergeTree tables hide the rows written twice.
The next checkpoint, a rebalance, a roll-back and a stop wait for a write in progress.

Several workers may share the group (scale-out): every series lives in one partition (records
are keyed by series; ``streams.metrics_pipeline`` re-keys the others), so one worker scores it.
When a rebalance takes partitions away, the consumer first checkpoints (waiting for the batch in
hand; a batch waiting for the store is given up) and commits, before the group hands them to
another worker, then drops the models of the series it read from partitions it lost (``forget``);
a worker that gets a partition restores each series' saved state when its first point comes
(``restore_missing``). Checkpoints must then live where every worker finds them: the model_state
table of a ClickHouse server, or with the embedded store a directory the workers share
(``M1_STATE_DIR``, ``sinks.state_files``). If that checkpoint fails, the models of every revoked
partition are dropped, so state and offsets go back to the last checkpoint together. A worker
that crashes hands over its last checkpoint and commit, which match (see above). A worker the group
dropped (its event loop stalled past the session timeout) may have lost its partitions to another
worker, which reads them from the last commit; so before a checkpoint saves anything, the consumer
asks the group whether it is still a member (a commit of offsets it owns already, which moves
nothing). If not, it saves nothing more until the group assigns it partitions again, and then
drops every model and reads on from the commits (``partitions_assigned``), so no other worker
restores models that learned records it reads again. A commit refused after the checkpoint was
written (the group dropped the worker during the write) is made when the group takes the worker
back, which then reads on from there, not from the older commit (unless another worker committed
further meanwhile), with every model reloaded from the checkpoints; if that partition went to
another worker meanwhile, that worker reads it from the older commit with the models of that
commit (logged). Records fetched before a rebalance and not
handled yet are dropped: the new assignment reads every partition again from its committed
offset, so they would be handled twice (scored against models that learned them) or by two
workers.

A consumer that forwards records to a topic the pipeline reads again (OTLP points, RED spans and
minutes, re-keyed points) sends them through a :class:`streams.publisher.Forwarder`: in a Kafka
transaction that the checkpoint commits together with the input offsets (the RED consumer also
sends the RED state it changed, to its changelog topic: ``streams.red_changelog``), so a
``read_committed`` reader (every batch consumer is one) sees each forwarded record exactly once,
whoever crashed or stopped. A failed step that sent something, or any failed step of a consumer
whose handler is not idempotent (``replay_on_failure``), rolls back to the last commit: the
transaction is aborted, the state of every series or key read is dropped (restored from the
checkpoint when next needed), and the partitions are read again from their committed offsets.

With ``M1_TENANT_TOPICS`` the consumer reads every tenant's ``<tenant>.<topic>`` instead of
``topic``: it subscribes by pattern and refreshes its metadata every
``TENANT_TOPICS_REFRESH_MS``, so a new tenant's topic is read within that time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from operator import attrgetter

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from mode import Service

from core.kafka.lean_records import ConsumedRecord, use_lean_records
from core.kafka.security import client_kwargs
from core.settings import Settings
from core.kafka.topics import tenant_topic_pattern
from streams.checkpoint_positions import PartitionPositions
from streams.publisher import Forwarder, fence_departed
from streams.retry import RetryPolicy, handle_batch
from streams.tracing import BatchRecords

log = logging.getLogger(__name__)


#: What a batch handler gets for each record read: the fetch path's own record (``topic``, ``partition``,
#: ``offset``, ``key``, ``value``, ``timestamp``, ``headers``), as it is: a batch holds tens of thousands,
#: and a wrapper each would cost as much as reading them (``core.kafka.lean_records``).
KafkaEvent = ConsumedRecord


#: The longest a new assignment waits to end departed workers' transactions (:meth:`BatchConsumer._fence_departed`).
FENCE_SECONDS = 15.0


@dataclass
class _Batch:
    """Records read for one handler call: the events, and per partition the offset of the first one,
    the offset after the last one and the runs of records (for :meth:`keys`)."""

    events: BatchRecords = field(default_factory=BatchRecords)
    starts: dict[TopicPartition, int] = field(default_factory=dict)
    ends: dict[TopicPartition, int] = field(default_factory=dict)
    runs: dict[TopicPartition, list[list[KafkaEvent]]] = field(default_factory=dict)

    def add(self, tp: TopicPartition, records: list[KafkaEvent]) -> None:
        """Add one partition's records (in offset order, as ``getmany`` returns them)."""
        if records:
            self.events.add(tp.partition, records)
            self.starts.setdefault(tp, records[0].offset)
            self.ends[tp] = records[-1].offset + 1
            self.runs.setdefault(tp, []).append(records)

    def keys(self, held: dict[TopicPartition, set[bytes]]) -> dict[TopicPartition, _Keys]:
        """Per partition, the record keys (for ``forget``; None left out), and those of them not in
        ``held[tp]`` (the set itself, also returned: the caller adds just those if it still holds it).
        Blocking, over a batch of thousands: the consumer runs it in a thread while the batch is handled."""
        out = {}
        for tp, runs in self.runs.items():
            keys = set(map(_key, chain.from_iterable(runs)))
            keys.discard(None)
            known = held.get(tp)
            out[tp] = (keys, known, keys if known is None else keys - known)
        return out  # type: ignore[return-value]


#: A partition's keys in a batch: all of them, the set of keys held when they were looked at, and those not in it.
_Keys = tuple[set[bytes], "set[bytes] | None", set[bytes]]


_key = attrgetter("key")


def free_in_thread(holder: list[object]) -> None:
    """Empty ``holder`` in a thread of the default executor: a handled batch's teardown (tens of
    thousands of objects) then runs beside the event loop, not on it. The caller puts the last
    reference to each object in ``holder`` and keeps no other (``del`` its names first)."""
    asyncio.get_running_loop().run_in_executor(None, holder.clear)


BatchHandler = Callable[[Sequence[KafkaEvent]], Awaitable[None]]
#: Dead-letters every record of a batch with the given reason (once the store rejected it too often).
BatchDeadLetters = Callable[[Sequence[KafkaEvent], str], Awaitable[None]]
#: Drops the models of the given series (their partitions went to another worker).
Forget = Callable[[Iterable[str]], object]
#: After a rebalance, told the partitions assigned and those lost (blocking: run in a thread).
Moved = Callable[[set[TopicPartition], list[TopicPartition]], object]

TENANT_TOPICS_REFRESH_MS = 30_000
#: Longest wait of one poll of the paused partitions while a batch is retried.
PAUSED_POLL_SECONDS = 1.0
#: A timed checkpoint waits at least this many times the last one's duration: checkpoints then
#: hold batches up for at most a tenth of the time (10,000 series take seconds to save).
CHECKPOINT_SPACING = 9.0
#: How often a batch read while the last one is handled looks for more records past its deadline.
BUSY_POLL_SECONDS = 0.02


def flush_wait(fetched: Iterable[Sequence[KafkaEvent]], flush_seconds: float, now: float) -> float:
    """How long a batch whose first records are ``fetched`` may wait for more: what is left of
    ``flush_seconds`` for the oldest of them, by its Kafka timestamp (records that waited while the
    last batch was handled go at once), clamped to ``[0, flush_seconds]`` (a clock ahead or
    behind, or no timestamp, waits the whole interval at most).

    >>> from aiokafka import ConsumerRecord
    >>> def at(ts): return ConsumerRecord("metrics", 0, 0, int(ts * 1000), 0, None, b"", None, 0, 0, ())
    >>> flush_wait([[at(99.9), at(100.0)]], 0.25, now=100.0)  # the first came 0.1 s ago
    0.15
    >>> flush_wait([[at(99.5)], [at(99.95)]], 0.25, now=100.0)  # one waited 0.5 s already
    0.0
    >>> flush_wait([[at(4e9)]], 0.25, now=100.0), flush_wait([[at(-0.001)]], 0.25, now=100.0)  # forged, none
    (0.25, 0.25)
    """
    stamps = [records[0].timestamp for records in fetched if records and records[0].timestamp >= 0]
    if not stamps:
        return flush_seconds
    return round(min(flush_seconds, max(0.0, min(stamps) / 1000 + flush_seconds - now)), 6)


def checkpoint_wait(snapshot_seconds: float, last_took: float) -> float:
    """Seconds from the end of a timed checkpoint that took ``last_took`` to the next one.

    >>> checkpoint_wait(10.0, 0.4)  # 1,000 series: every 10 s
    10.0
    >>> checkpoint_wait(10.0, 3.0)  # 10,000 series: batches wait at most a tenth of the time
    27.0
    """
    return max(snapshot_seconds, CHECKPOINT_SPACING * last_took)


class BatchConsumer(Service):
    """Consumes ``topic`` (or every tenant's, see above) in batches for ``handler``; started and
    stopped with the Faust app.

    ``checkpoints`` (blocking callables, run in a thread between batches) cut the handler's
    models' state; each may return a writer (a blocking callable) that saves what it cut, run
    after the cut, off the batch path, in order with the others' writers. The offsets handled
    before the cut are committed once every writer succeeded. Checkpoints run every
    ``M1_SNAPSHOT_SECONDS``, and also after a batch when ``checkpoint_due()`` says so; a
    checkpoint that fails commits nothing, and the next one tries again.

    ``dead_letters`` takes the records of a batch the store rejected ``M1_STORE_RETRY_ATTEMPTS``
    times; without it such a batch is retried like any other failure.

    ``forget`` callables drop the models of the series (record keys) read from partitions this
    consumer lost in a rebalance (see the module docstring).

    ``moved`` callables are told, after ``forget``, the partitions assigned and those lost.

    ``by_pattern`` (default: ``M1_TENANT_TOPICS``) subscribes to every tenant's ``topic``; an
    internal topic of the pipeline is read by name (``False``).

    ``forwarder`` (started and stopped here) holds what the handler forwards until a checkpoint
    commits it with the offsets; ``replay_on_failure`` rolls back after any failed batch instead of
    retrying it in place, and ``reset`` callables then drop every state changed since the last
    checkpoint that ``forget`` does not reach (see the module docstring).

    ``ready``, if given, is told of each batch read while the one before it is handled as soon as
    it is complete (its records, the very list the handler gets next), so that it can prepare it
    meanwhile (the metrics path decodes it: ``streams.metrics_handler.DecodeAhead``); a rebalance
    may still drop that batch, and then the handler never gets it.

    ``positions``, if given, is told where each partition's batches, cuts, writes and commits stand,
    for the checkpoints' versions (``streams.checkpoint_positions``).
    """

    def __init__(self, settings: Settings, topic: str, group_id: str, handler: BatchHandler,
                 checkpoints: list[Callable[[], object]], checkpoint_due: Callable[[], bool] = lambda: False,
                 dead_letters: BatchDeadLetters | None = None, forget: Sequence[Forget] = (),
                 by_pattern: bool | None = None, moved: Sequence[Moved] = (), forwarder: Forwarder | None = None,
                 replay_on_failure: bool = False, reset: Sequence[Callable[[], object]] = (),
                 ready: Callable[[Sequence[KafkaEvent]], object] | None = None,
                 positions: PartitionPositions | None = None, **kwargs: object):
        super().__init__(**kwargs)
        self.settings = settings
        self.topic = topic
        self.group_id = group_id
        self.handler = handler
        self.checkpoints = checkpoints
        self.checkpoint_due = checkpoint_due
        self.dead_letters = dead_letters
        self.forget = forget
        self.by_pattern = settings.tenant_topics if by_pattern is None else by_pattern
        self.moved = moved
        self.forwarder = forwarder
        self.replay_on_failure = replay_on_failure
        self.reset = reset
        self.ready = ready
        self.positions = positions
        self.retry = RetryPolicy.of(settings)
        self._batch_assignment: frozenset[TopicPartition] = frozenset()  # the partitions when the batch was read
        self._consumer: AIOKafkaConsumer | None = None
        self._between_batches = asyncio.Lock()
        self._handled: dict[TopicPartition, int] = {}  # next offset per partition, not yet committed
        self._next: dict[TopicPartition, int] = {}  # next offset to handle per partition (lag())
        self._keys: dict[TopicPartition, set[bytes]] = {}  # record keys handled per partition (forget)
        self._assigned: set[TopicPartition] = set()  # the partitions of the last assignment (moved)
        self._revoking = False  # a rebalance waits for the batch in hand
        self._saved_at_revoke = True  # whether the last revocation's checkpoint succeeded
        self._replay = False  # a failed step must be rolled back to the last commit
        # Rebalances and roll-backs so far: each sends the partitions back to their committed
        # offsets, so records fetched before one are stale (handled, they would be handled twice).
        self._generation = 0
        self._checkpoint_took = 0.0  # seconds the last timed checkpoint took (_checkpoint_clock)
        self._writing: asyncio.Future[bool] | None = None  # a checkpoint written off the batch path
        # Offsets whose checkpoint was written but whose commit the group refused (it had dropped
        # this member): committed, and read on from, once the group takes the member back.
        self._unconfirmed: dict[TopicPartition, int] = {}
        # Per partition, an offset this member may commit without moving the group's commit: its own
        # last commit, or the first offset it handled since the partition was assigned (_still_member).
        self._own: dict[TopicPartition, int] = {}
        self._dropped = False  # the group dropped this member: its models are dropped at the next assignment

    async def on_start(self) -> None:
        use_lean_records()  # the process's consumers read records a batch at a time
        tenant_topics = self.by_pattern
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.settings.batch_size,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            isolation_level="read_committed",  # forwarded records once their transaction committed
            # a member names its forwarder's transactional id: a worker taking over tells the departed ones by it
            **({"client_id": self.forwarder.transactional_id} if self.forwarder is not None else {}),
            **({"metadata_max_age_ms": TENANT_TOPICS_REFRESH_MS} if tenant_topics else {}),
            **client_kwargs(self.settings),
        )
        listener = _Rebalance(self)
        if tenant_topics:
            self._consumer.subscribe(pattern=tenant_topic_pattern(self.topic), listener=listener)
        else:
            self._consumer.subscribe([self.topic], listener=listener)
        await self._consumer.start()

    async def on_stop(self) -> None:
        try:
            await self.checkpoint()
        finally:
            if self._consumer is not None:
                await self._consumer.stop()
            if self.forwarder is not None:
                await self.forwarder.stop()

    async def checkpoint(self, wait: bool = True) -> bool:
        """Cut the models' state between batches, write it, then commit the offsets of every batch
        handled before the cut; returns whether the state was cut (and, waited for, written and
        committed). With ``wait=False`` the write and commit run off the batch path, while batches
        go on (not while the forwarder's transaction is open: it must be committed with exactly the
        cut's offsets). A failed cut or write commits nothing: those offsets wait for the next
        checkpoint, which also writes the series whose write failed."""
        async with self._between_batches:
            await self._written()
            if self._dropped or not await self._still_member():
                self._dropped = True  # nothing is saved until the group assigns partitions again
                return False
            loop = asyncio.get_running_loop()
            if self.positions is not None:
                self.positions.cutting(self._handled, self._keys)
            try:
                writers = [await loop.run_in_executor(None, cut) for cut in self.checkpoints]
            except Exception:
                log.exception("checkpoint failed; offsets of %d partitions stay uncommitted until one succeeds",
                              len(self._handled))
                return False
            offsets, self._handled = self._handled, {}
            if wait or (self.forwarder is not None and self.forwarder.in_transaction):
                return await self._write_and_commit(writers, offsets, transactional=True)
            self._writing = asyncio.ensure_future(self._write_and_commit(writers, offsets, transactional=False))
            return True

    async def _still_member(self) -> bool:
        """Whether the group still counts this consumer as a member, asked before a checkpoint saves
        what it handled: a commit of offsets it already owns (:attr:`_own`, which moves nothing).
        A member the group dropped (its event loop stalled past the session timeout, say) may have
        lost the partitions to another worker, which reads them from the last commit: saved, these
        models would hand that worker state that already learned what it reads again. True when
        there is nothing to ask with (no batch handled since the last assignment)."""
        assert self._consumer is not None
        assigned = self._consumer.assignment()
        probe = {tp: offset for tp, offset in self._own.items() if tp in assigned and tp in self._handled}
        if not probe:
            return True
        try:
            await self._consumer.commit(probe)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("%s: the group no longer counts this worker a member (%s): what it handled since its last "
                        "commit is dropped, not saved, and read again", self.topic, type(exc).__name__)
            return False
        return True

    async def _write_and_commit(self, writers: list[object], offsets: dict[TopicPartition, int],
                                transactional: bool) -> bool:
        """Run the cut's ``writers`` (those results of the checkpoint callables that are callable), in
        order, in a thread; then commit ``offsets``. If one fails, the offsets go back to those
        waiting for the next checkpoint."""
        loop = asyncio.get_running_loop()
        try:
            for write in writers:
                if callable(write):
                    await loop.run_in_executor(None, write)
        except Exception:
            log.exception("checkpoint write failed; offsets of %d partitions stay uncommitted until one succeeds",
                          len(offsets))
            for tp, offset in offsets.items():
                self._handled[tp] = max(self._handled.get(tp, 0), offset)
            return False
        if self.positions is not None:
            self.positions.written(offsets)
        return await self._commit(offsets, transactional)

    async def _written(self) -> bool:
        """Wait for the checkpoint being written off the batch path, if any; whether it succeeded.
        (Shielded: a caller cancelled while it waits does not cancel the write.)"""
        writing = self._writing
        if writing is None:
            return True
        try:
            return await asyncio.shield(writing)
        finally:
            if self._writing is writing and writing.done():
                self._writing = None

    async def exclusively(self, step: Callable[[], Awaitable[object]], what: str) -> None:
        """Run ``step`` (which may forward records) between batches, then checkpoint if one is due;
        a failure is logged and rolled back like a failed batch's (see the module docstring). Before
        the consumer started, it does nothing."""
        if self._consumer is None:
            return
        async with self._between_batches:
            sends = self._sends()
            try:
                await step()
            except Exception:
                log.exception("%s failed", what)
                if self.replay_on_failure or self._sends() != sends:
                    await self._roll_back()
                return
        if self.checkpoint_due():
            await self.checkpoint()

    async def partitions_revoked(self) -> None:
        """Before the group moves partitions: checkpoint and commit (see the module docstring)."""
        self._revoking = True  # a batch waiting for the store gives up (backoff)
        self._generation += 1
        try:
            self._saved_at_revoke = await self.checkpoint()
        finally:
            self._revoking = False

    async def partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        """After the group moved partitions: forget the series of those lost, or of all if the
        revocation's checkpoint failed (their saved state and commit are older than the models) or
        the group had dropped this worker (its partitions may have had other owners since, and its
        models learned records whose offsets it could not commit)."""
        self._generation += 1
        if self.positions is not None:
            self.positions.reset()  # every partition is read again from its commit
        current = self._saved_at_revoke and not self._unconfirmed and not self._dropped
        self._dropped = False
        kept = set(assigned) if current else set()
        lost = [tp for tp in self._assigned | set(self._keys) if tp not in kept]  # read from or held
        self._assigned = set(assigned)
        self._own = {tp: offset for tp, offset in self._own.items() if tp in kept}  # others may have moved on
        if not current:
            self._handled = {}  # read again from the last commit (or the refused one: _confirm)
            await self._drop_uncommitted()
        await self._confirm(set(assigned))
        series = {key.decode() for tp in lost for key in self._keys.pop(tp, ())}
        if series:
            log.info("%d partitions of %s went elsewhere; their %d series' models are dropped", len(lost), self.topic, len(series))
            for forget in self.forget:  # in a thread: it waits for the pipeline's lock
                await asyncio.get_running_loop().run_in_executor(None, forget, series)
        for moved in self.moved:
            await asyncio.get_running_loop().run_in_executor(None, moved, set(assigned), lost)
        if self.forwarder is not None:
            await self._fence_departed()

    async def _fence_departed(self) -> None:
        """End what forwarders of workers that left the group left open (:func:`fence_departed`): until then,
        readers of the partitions they wrote to wait for the broker's transaction timeout."""
        assert self.forwarder is not None
        try:  # bounded: the group's assignment waits for it
            async with asyncio.timeout(FENCE_SECONDS):
                fenced = await fence_departed(self.settings, self.group_id, self.forwarder.transactional_id)
        except Exception as exc:  # noqa: BLE001 - then the broker ends them at their timeout
            log.warning("%s: could not end the transactions of workers that left the group (%r); the broker "
                        "aborts them at their timeout", self.topic, exc)
            return
        if fenced:
            log.info("%s: aborted the open transactions of %d workers that left the group: %s", self.topic,
                     len(fenced), ", ".join(fenced))

    @Service.task
    async def _start_forwarder(self) -> None:
        """Start the forwarder in the background, not holding up the worker's start (the first
        transactional producer on a broker waits for its transaction log); starting, it aborts
        what this worker's predecessor left open. A send starts it if this failed."""
        if self.forwarder is not None:
            try:
                await self.forwarder.start()
            except Exception:  # noqa: BLE001 - the first send tries again
                log.warning("%s: the forwarder did not start; the first send tries again", self.topic, exc_info=True)

    @Service.task
    async def _checkpoint_clock(self) -> None:
        """Checkpoint every ``M1_SNAPSHOT_SECONDS``, or less often when checkpoints are slow (many
        series): batches wait while one runs, so the next comes no sooner than
        ``CHECKPOINT_SPACING`` times the last one's duration after it ended."""
        while not self.should_stop:
            await self.sleep(checkpoint_wait(self.settings.snapshot_seconds, self._checkpoint_took))
            if not self.should_stop:
                started = time.monotonic()
                if await self.checkpoint(wait=False):
                    await self._written()
                self._checkpoint_took = time.monotonic() - started

    @Service.task
    async def _consume(self) -> None:
        """Handle batch after batch; the next one is read while the handler runs (see :meth:`_prefetch`)."""
        prefetched: asyncio.Task[tuple[_Batch, int]] | None = None
        try:
            while not self.should_stop:
                if prefetched is None:
                    batch, generation = await self._next_batch()
                else:
                    (batch, generation), prefetched = await prefetched, None
                events = batch.events
                if not events:
                    continue
                async with self._between_batches:
                    if self._generation != generation:  # fetched before a rebalance or roll-back: read again
                        log.info("%s: %d records fetched before a rebalance are read again", self.topic, len(events))
                        continue
                    self._batch_assignment = self._consumer.assignment()
                    handled = asyncio.Event()
                    prefetched = asyncio.ensure_future(self._next_batch(while_busy=handled))
                    if self.ready is not None:
                        prefetched.add_done_callback(self._tell_ready)
                    dead_letters = None if self.dead_letters is None else partial(self.dead_letters, events)
                    if self.positions is not None:
                        self.positions.reading(batch.starts, batch.runs)
                    keyed = asyncio.get_running_loop().run_in_executor(None, batch.keys, dict(self._keys))
                    try:
                        done = await handle_batch(partial(self._attempt, events), dead_letters, self.retry, self,
                                                  f"batch of {len(events)} records of {self.topic}")
                    finally:
                        handled.set()
                    if not done:
                        if self._replay:
                            await self._roll_back()
                        continue  # given up (see backoff): its offsets stay uncommitted, so it is read again
                    batch_keys = await keyed
                    for tp, end in batch.ends.items():
                        self._handled[tp] = max(self._handled.get(tp, 0), end)
                        self._own.setdefault(tp, batch.starts[tp])
                        self._note_keys(tp, *batch_keys[tp])
                    self._next.update(self._handled)
                    handled_batch = [batch, events, dead_letters, batch_keys]
                    del batch, events, dead_letters, batch_keys
                    free_in_thread(handled_batch)
                if self.checkpoint_due():
                    await self.checkpoint(wait=False)
        finally:
            if prefetched is not None:
                prefetched.cancel()

    def _note_keys(self, tp: TopicPartition, keys: set[bytes], known: set[bytes] | None, new: set[bytes]) -> None:
        """Add a handled batch's ``keys`` of ``tp`` to those held: just the ``new`` ones if the set
        held is still ``known`` (a rebalance or roll-back may have dropped it meanwhile)."""
        held = self._keys.setdefault(tp, set())
        held |= new if held is known else keys

    def _tell_ready(self, prefetched: asyncio.Future[tuple[_Batch, int]]) -> None:
        """Tell ``ready`` of a batch read in full while the one before it was handled (unless stale)."""
        if prefetched.cancelled() or prefetched.exception() is not None:
            return
        batch, generation = prefetched.result()
        if batch.events and generation == self._generation and self.ready is not None:
            self.ready(batch.events)

    async def _attempt(self, events: Sequence[KafkaEvent]) -> None:
        """One try of the handler; a failure that cannot be retried in place asks for a roll-back."""
        sends = self._sends()
        try:
            await self.handler(events)
        except Exception:
            self._replay = self.replay_on_failure or self._sends() != sends
            raise

    def _sends(self) -> int:
        return 0 if self.forwarder is None else self.forwarder.sends

    async def _roll_back(self) -> None:
        """Back to the last commit: drop what is uncommitted, read every partition again from its
        committed offset (or its first, without one). A checkpoint being written commits first."""
        await self._written()
        self._replay = False
        self._generation += 1
        self._handled = {}
        if self.positions is not None:
            self.positions.reset()
        await self._drop_uncommitted()
        assert self._consumer is not None
        assigned = self._consumer.assignment()
        for moved in self.moved:  # restore what the partitions held, as after an assignment
            await asyncio.get_running_loop().run_in_executor(None, moved, set(assigned), [])
        committed = {tp: await self._consumer.committed(tp) for tp in assigned}
        if never := [tp for tp, offset in committed.items() if offset is None]:
            await self._consumer.seek_to_beginning(*never)
        for tp, offset in committed.items():
            if offset is not None:
                self._consumer.seek(tp, offset)
        self._generation += 1  # what was fetched until now came from the old positions (no await since the seeks)
        log.warning("%s: rolled back to the last commit; %d partitions are read again", self.topic, len(assigned))

    async def _drop_uncommitted(self) -> None:
        """Abort the forwarder's transaction and drop the state of every series or key read (its
        changes since the last checkpoint may be in it)."""
        if self.forwarder is not None:
            await self.forwarder.abort()
        series = {key.decode() for keys in self._keys.values() for key in keys}
        self._keys = {}
        loop = asyncio.get_running_loop()
        for forget in self.forget:
            await loop.run_in_executor(None, forget, series)
        for reset in self.reset:
            await loop.run_in_executor(None, reset)

    async def lag(self) -> dict[TopicPartition, int]:
        """Records of each assigned partition not handled yet: its end offset, asked of the broker
        now (so the lag grows while input is paused or a batch is retried), minus the next offset
        to handle (before a batch of the partition was handled: the committed one, or without a
        commit the partition's first, as the consumer reads from the earliest)."""
        if self._consumer is None:
            return {}
        assigned = self._consumer.assignment()
        self._next = {tp: offset for tp, offset in self._next.items() if tp in assigned}
        unknown = {tp: await self._consumer.committed(tp) for tp in assigned if tp not in self._next}
        never = [tp for tp, committed in unknown.items() if committed is None]
        firsts = await self._consumer.beginning_offsets(never) if never else {}
        for tp, committed in unknown.items():
            self._next.setdefault(tp, firsts.get(tp, 0) if committed is None else committed)
        ends = await self._consumer.end_offsets(list(self._next)) if self._next else {}
        return {tp: max(0, ends[tp] - offset) for tp, offset in self._next.items() if tp in ends}

    def pause_input(self) -> None:
        """Pause every assigned partition (:class:`streams.retry.Backpressure`)."""
        assert self._consumer is not None
        self._consumer.pause(*self._consumer.assignment())

    def resume_input(self) -> None:
        """Resume every paused partition."""
        assert self._consumer is not None
        self._consumer.resume(*self._consumer.paused())

    def paused(self) -> set[TopicPartition]:
        """The partitions paused while a batch is retried."""
        return set() if self._consumer is None else set(self._consumer.paused())

    async def backoff(self, seconds: float) -> bool:
        """Wait ``seconds`` while polling the paused partitions (see the module docstring). False
        gives the batch up: the consumer stops, or a rebalance changed its partitions (those it
        keeps go back to their last commit, so it reads the batch's records again, and those it
        lost are their new owner's). Records fetched meanwhile are put back."""
        assert self._consumer is not None
        deadline = time.monotonic() + seconds
        if self._replay:
            self.resume_input()
            return False  # rolled back and read again (see _attempt)
        while not self.should_stop and (left := deadline - time.monotonic()) > 0:
            if self._revoking or self._consumer.assignment() != self._batch_assignment:
                log.warning("a rebalance changed the partitions while a batch waited; it is read again from the last commit")
                self.resume_input()
                return False
            self.pause_input()
            fetched = await self._consumer.getmany(timeout_ms=max(1, int(min(left, PAUSED_POLL_SECONDS) * 1000)))
            self._rewind([r for records in fetched.values() for r in records])
        return not self.should_stop

    async def _next_batch(self, while_busy: asyncio.Event | None = None) -> tuple[_Batch, int]:
        """Records until the batch is full or the first has waited ``flush_seconds`` (see
        :func:`flush_wait`), and the generation they were fetched in: records fetched before a rebalance or roll-back are dropped
        (the partitions went back to their committed offsets, so they are fetched again).

        With ``while_busy`` this reads the next batch while the handler has the last one (Kafka's
        per-record parsing then runs while the handler's thread is in the store engine or a compiled
        kernel, which release the GIL): the batch keeps filling until ``while_busy`` is set, even
        past its deadline, and an idle poll says nothing about positions (the last batch is not
        handled yet). A batch the handler is retrying pauses the input, so this then reads nothing.
        """
        assert self._consumer is not None
        size, batch, generation = self.settings.batch_size, _Batch(), self._generation
        deadline: float | None = None
        dropped = False
        while len(batch.events) < size and not self.should_stop:
            wait = 1.0 if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                if while_busy is None or while_busy.is_set():
                    break
                wait = BUSY_POLL_SECONDS
            fetched = await self._consumer.getmany(timeout_ms=int(wait * 1000), max_records=size - len(batch.events))
            if generation != self._generation:  # these records come from the new positions, not those before
                batch, deadline, generation, dropped = _Batch(), None, self._generation, True
            for tp, records in fetched.items():
                batch.add(tp, records)
            if batch.events and deadline is None:
                deadline = time.monotonic() + flush_wait(fetched.values(), self.settings.flush_seconds, time.time())
            if not batch.events:
                if while_busy is not None:
                    if while_busy.is_set():
                        break
                    continue  # nothing yet: keep reading while the handler works
                if not dropped:
                    await self._note_idle_positions(generation)
                break  # idle: let the caller loop (and notice a stop)
        return batch, generation

    async def _note_idle_positions(self, generation: int) -> None:
        """When idle since ``generation`` began, every record before a partition's position was
        handled: that position is the offset to commit, past the transaction markers and aborted
        records after the last record handled (they have offsets, and a reader of the committed
        offsets counts them as lag). Not while a rebalance or roll-back is under way."""
        assert self._consumer is not None
        if self._revoking:
            return
        positions = {}
        for tp in self._consumer.assignment() - self._consumer.paused():
            try:
                positions[tp] = await self._consumer.position(tp)
            except IllegalStateError:  # no longer assigned: a rebalance came in between
                return
        if generation != self._generation:
            return  # the positions may be those of records fetched before it and dropped
        for tp, position in positions.items():
            if position != self._next.get(tp):
                self._handled[tp] = self._next[tp] = position

    async def _commit(self, offsets: dict[TopicPartition, int], transactional: bool = True) -> bool:
        """Commit ``offsets`` of the partitions still assigned, with the forwarder's transaction if
        one is open (and ``transactional``: a checkpoint written off the batch path commits its
        offsets alone, the transaction holds records of later batches); the others are their new
        owner's to replay (a rebalance while a batch waited for the store, say). False if the
        transaction failed (then it is rolled back)."""
        if self._consumer is None:
            return True
        assigned = self._consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if transactional and self.forwarder is not None and self.forwarder.in_transaction:
            try:
                committed = await self.forwarder.commit(offsets, self.group_id)
            except Exception:
                log.exception("%s: committing the forwarded records with the offsets failed", self.topic)
                await self._roll_back()
                return False
            if committed:
                self._committed(offsets)
            return committed
        if not offsets:
            return True
        try:
            await self._consumer.commit(offsets)
            self._committed(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group dropped this member: the models saved with these offsets have learned their
            # records, so they are committed once the group takes it back (_confirm).
            for tp, offset in offsets.items():
                self._unconfirmed[tp] = max(self._unconfirmed.get(tp, 0), offset)
            log.warning("%s: commit refused (%s); made again once the group takes this worker back", self.topic,
                        type(exc).__name__)
        return True

    def _committed(self, offsets: dict[TopicPartition, int]) -> None:
        self._own.update(offsets)
        if self.positions is not None:
            self.positions.committed(offsets)

    async def _confirm(self, assigned: set[TopicPartition]) -> None:
        """Commit the refused offsets of the partitions the group gave back (:meth:`_commit`), and
        read them on from there: the models saved with them learned the records before (a replay
        would be scored against them). Unless another worker committed a later offset meanwhile:
        then the partition is read from that one. Those that went elsewhere are replayed there
        from the older commit (logged)."""
        unconfirmed, self._unconfirmed = self._unconfirmed, {}
        if lost := sorted(f"{tp.topic}-{tp.partition}" for tp in unconfirmed if tp not in assigned):
            log.warning("%s: partitions %s went elsewhere before their last checkpoint was committed; their new "
                        "owner reads again records their saved models learned", self.topic, ", ".join(lost))
        mine = {}
        for tp, offset in unconfirmed.items():
            if tp in assigned and (await self._consumer.committed(tp) or 0) < offset:
                self._consumer.seek(tp, offset)
                self._next[tp] = mine[tp] = offset
        if mine:
            await self._commit(mine, transactional=False)

    def _rewind(self, events: Sequence[KafkaEvent]) -> None:
        assert self._consumer is not None
        first: dict[TopicPartition, int] = {}
        for event in events:
            tp = TopicPartition(event.topic, event.partition)
            first[tp] = min(first.get(tp, event.offset), event.offset)
        assigned = self._consumer.assignment()
        for tp, offset in first.items():
            if tp in assigned:
                self._consumer.seek(tp, offset)


class _Rebalance(ConsumerRebalanceListener):
    """aiokafka's rebalance callbacks, handed to the consumer's own methods."""

    def __init__(self, consumer: BatchConsumer):
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.consumer.partitions_revoked()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.consumer.partitions_assigned(assigned)
