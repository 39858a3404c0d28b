"""Delivery: the outbox consumer that brings every notification to its receiver, once, through failures.

The outbox is Kafka: the engine publishes each :class:`~integrations.notification.Notification`
to ``topic_notifications`` (key = id). :class:`DeliveryService` consumes it together with
``topic_notification_retries``, where a notification waiting for its next try is kept as a
:class:`Pending` (attempts so far, first try, due time, last reason). A record's offset is
committed only once its outcome is on Kafka: delivered or dead (on ``topic_deliveries``; a dead
one also on the dead-letter topic, with its reason), or to be retried (a new :class:`Pending` on
the retries topic). So a crash loses nothing: whatever had no recorded outcome is read again, and
a retry resumes at its due time with its attempt count.

Per attempt: a time limit (``delivery_timeout_seconds``), at most ``delivery_concurrency`` in
flight, and the endpoint's :class:`~integrations.breaker.Breaker` (an open circuit postpones the
attempt without spending one). A failed attempt that may succeed later (timeout, reset, 408/425/
429/5xx, SMTP 4xx) is retried after an exponential backoff with jitter
(:class:`streams.retry.RetryPolicy`), never sooner than the answer's ``Retry-After``; a final
refusal (another 4xx, a missing secret) or ``delivery_max_attempts`` tries or
``delivery_max_age_seconds`` of age make it dead. Every attempt's outcome goes to the deliveries
topic (and, in the worker, the ``deliveries`` table).

Duplicates: the notification id is the idempotency key every client sends (webhook-id, PagerDuty
dedup_key per incident, Opsgenie alias, Jira labels, Message-ID, Kafka key), so a replay after a
crash never makes an idempotent receiver act twice. On top of that the service remembers the ids
it finished and, on start, reads the last ``REMEMBER_SECONDS`` of the deliveries topic, so a replay
is mostly not even sent.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from mode import Service

from integrations import registry
from integrations.breaker import Breaker
from integrations.context import Context
from integrations.notification import Notification
from integrations.outcome import Outcome
from core.kafka.security import admin_client, client_kwargs
from core.settings import Settings
from core.kafka.topics import ensure_topics
from streams.metrics_pipeline import DeadLetter
from streams.publisher import OutputRecord, Publisher
from streams.retry import RetryPolicy

log = logging.getLogger(__name__)

#: Finished ids remembered (most recent first out when full), and how far back a start reads them.
REMEMBER_IDS = 500_000
REMEMBER_SECONDS = 3600.0
COMMIT_SECONDS = 1.0
FLUSH_SECONDS = 0.02


def delivery_topics(settings: Settings) -> list[str]:
    """The topics delivery reads and writes."""
    return [settings.topic_notifications, settings.topic_notification_retries, settings.topic_deliveries,
            settings.topic_dead_letter]


class Pending(msgspec.Struct, frozen=True):
    """A notification waiting for its next try (the retries topic's record, key = id)."""

    notification: Notification
    attempts: int = 0
    first_ts: float = 0.0
    due_ts: float = 0.0
    last_reason: str = ""


class Delivery(msgspec.Struct, frozen=True):
    """One attempt's outcome (``delivered``, ``failed``: to be retried, ``dead``), key = id."""

    id: str
    tenant: str
    workflow: str
    receiver: str
    receiver_type: str
    kind: str
    incident_id: str
    attempt: int
    outcome: str
    status: int
    reason: str
    ts: float
    source_ts: float
    created_ts: float
    first_attempt_ts: float


_pending = msgspec.json.Decoder(Pending)
_delivery = msgspec.json.Decoder(Delivery)
_notification = msgspec.json.Decoder(Notification)


def endpoint(n: Notification) -> str:
    """The breaker's key: receiver type and where it sends (a reference, not the secret behind it)."""
    url = n.receiver.url
    if not url.startswith(("env:", "file:")):
        parts = urlsplit(url)
        url = parts.netloc + parts.path
    return f"{n.receiver.type}:{url or n.receiver.options.get('topic', '')}"


@dataclass(order=True)
class Job:
    due: float
    seq: int
    tp: TopicPartition = field(compare=False)
    offset: int = field(compare=False)
    pending: Pending = field(compare=False)


class Offsets:
    """Offsets read but not finished, per partition: what may be committed is the lowest unfinished
    one (or the next after the highest read)."""

    def __init__(self) -> None:
        self.open: dict[TopicPartition, set[int]] = {}
        self.next: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}

    def read(self, tp: TopicPartition, offset: int) -> None:
        self.open.setdefault(tp, set()).add(offset)
        self.next[tp] = max(self.next.get(tp, 0), offset + 1)

    def finished(self, tp: TopicPartition, offset: int) -> None:
        self.open.get(tp, set()).discard(offset)

    def holds(self, tp: TopicPartition, offset: int) -> bool:
        return offset in self.open.get(tp, ())

    def to_commit(self) -> dict[TopicPartition, int]:
        out = {}
        for tp, nxt in self.next.items():
            position = min(self.open[tp]) if self.open.get(tp) else nxt
            if position > self.committed.get(tp, -1):
                out[tp] = position
        return out

    def drop(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self.open.pop(tp, None), self.next.pop(tp, None), self.committed.pop(tp, None)


class DeliveryService(Service):
    """Consumes the outbox and delivers (see the module docstring); a mode service, run in the worker
    (``wire``) or alone (``m1 integrations deliver``)."""

    def __init__(self, settings: Settings, publisher: Publisher | None = None, **kwargs: object):
        super().__init__(**kwargs)
        self.settings = settings
        self.publisher = publisher or Publisher(settings)
        self._own_publisher = publisher is None
        self.policy = RetryPolicy(settings.delivery_max_attempts, settings.delivery_base_seconds,
                                  settings.delivery_max_backoff_seconds)
        self.offsets = Offsets()
        self.finished_ids: OrderedDict[str, None] = OrderedDict()
        self.breakers: dict[str, Breaker] = {}
        self._heap: list[Job] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.delivery_concurrency)
        self._tasks: set[asyncio.Task] = set()
        self._outbox: list[tuple[Job, list[OutputRecord]]] = []  # outcomes not yet on Kafka
        self._flushed = asyncio.Event()
        self._publishing = asyncio.Lock()  # held from taking outcomes off the outbox to counting them finished
        self._consumer: AIOKafkaConsumer | None = None
        self._session: aiohttp.ClientSession | None = None
        self.stats = {"delivered": 0, "failed": 0, "dead": 0, "skipped": 0}

    async def on_first_start(self) -> None:
        if self._own_publisher:
            await self.add_runtime_dependency(self.publisher)

    async def on_start(self) -> None:
        await asyncio.to_thread(ensure_topics, self.settings, delivery_topics(self.settings))
        await self._remember_finished()
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.settings.delivery_concurrency))
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap, group_id=f"{self.settings.app_id}-delivery",
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=500,
            session_timeout_ms=10_000, heartbeat_interval_ms=1_000, **client_kwargs(self.settings))
        self._consumer.subscribe([self.settings.topic_notifications, self.settings.topic_notification_retries],
                                 listener=_Revocations(self))
        await self._consumer.start()

    async def on_stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:  # outcomes already known, or in flight in the flush: on Kafka before the commit, not attempted again
            await self._publish_outbox()
        except Exception as exc:
            log.warning("delivery: %d outcomes not published at stop (%s); they will be attempted again",
                        len(self._outbox), exc)
        if self._consumer is not None:
            await self.commit()
            await self._consumer.stop()
        if self._session is not None:
            await self._session.close()

    # -- input ---------------------------------------------------------------------------------
    @Service.task
    async def _consume(self) -> None:
        while not self.should_stop:
            consumer = self._consumer
            if len(self._heap) + len(self._tasks) + len(self._outbox) >= self.settings.delivery_max_pending:
                consumer.pause(*consumer.assignment())
            elif consumer.paused():
                consumer.resume(*consumer.paused())
            batch = await consumer.getmany(timeout_ms=500, max_records=500)
            now = time.time()
            dead: list[OutputRecord] = []
            bad: list[tuple[TopicPartition, int]] = []
            for tp, records in batch.items():
                for record in records:
                    self.offsets.read(tp, record.offset)
                    try:
                        pending = (_pending.decode(record.value) if tp.topic == self.settings.topic_notification_retries
                                   else Pending(_notification.decode(record.value), due_ts=now))
                        registry.check(pending.notification.receiver)
                    except (msgspec.DecodeError, ValueError) as exc:
                        dead.append(self._dead_letter(record.topic, record.partition, record.offset, record.value,
                                                      f"delivery: bad notification: {exc}", now))
                        bad.append((tp, record.offset))
                        continue
                    self._schedule(Job(pending.due_ts, next(self._seq), tp, record.offset, pending))
            if dead:  # not finished if Kafka refuses them: read again after a restart
                try:
                    await self.publisher.publish(dead)
                except Exception as exc:
                    log.warning("delivery: %d bad notifications not dead-lettered yet (%s)", len(dead), exc)
                    continue
                for tp, offset in bad:
                    self.offsets.finished(tp, offset)

    def _schedule(self, job: Job) -> None:
        heapq.heappush(self._heap, job)
        self._wake.set()

    # -- dispatch ------------------------------------------------------------------------------
    @Service.task
    async def _dispatch(self) -> None:
        while not self.should_stop:
            now = time.time()
            while self._heap and self._heap[0].due <= now:
                await self._slots.acquire()
                job = heapq.heappop(self._heap)
                task = asyncio.create_task(self._attempt(job))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            self._wake.clear()
            wait = min(0.5, self._heap[0].due - now) if self._heap else 0.5
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.005, wait))
            except asyncio.TimeoutError:
                pass

    @Service.task
    async def _flush(self) -> None:
        """Publish the attempts' outcomes together (one producer call, whole batches), and only then
        count their records finished: an outcome not on Kafka is an attempt to make again."""
        while not self.should_stop:
            await self._flushed.wait()
            await asyncio.sleep(FLUSH_SECONDS)  # let the outcomes of concurrent attempts gather
            self._flushed.clear()
            try:
                await self._publish_outbox()
            except Exception as exc:
                log.warning("delivery: %d outcomes not published (%s); trying again", len(self._outbox), exc)
                self._flushed.set()
                await asyncio.sleep(1.0)

    async def _publish_outbox(self) -> None:
        """Publish the outcomes gathered so far in one producer call, then count their records finished;
        on failure they go back to the outbox. The stop waits here for a flush in flight, so it never
        commits before outcomes already taken off the outbox are on Kafka."""
        async with self._publishing:
            done, self._outbox = self._outbox, []
            if not done:
                return
            try:
                await self.publisher.publish([r for _, records in done for r in records])
            except BaseException:
                self._outbox[:0] = done
                raise
            for job, _ in done:
                self.offsets.finished(job.tp, job.offset)

    @Service.task
    async def _commit_clock(self) -> None:
        while not self.should_stop:
            await self.sleep(COMMIT_SECONDS)
            await self.commit()

    async def commit(self) -> None:
        """Commit, per partition, every offset below the first one without a recorded outcome."""
        offsets = {tp: o for tp, o in self.offsets.to_commit().items() if tp in self._consumer.assignment()}
        if offsets:
            try:
                await self._consumer.commit(offsets)
                self.offsets.committed.update(offsets)
            except Exception as exc:  # a rebalance: the next owner reads from the last commit
                log.warning("delivery: commit failed (%s); those records may be delivered again", exc)

    # -- one attempt ---------------------------------------------------------------------------
    async def _attempt(self, job: Job) -> None:
        breaker: Breaker | None = None
        try:
            if not self.offsets.holds(job.tp, job.offset):
                return  # its partition went to another consumer, which reads it again
            n = job.pending.notification
            if n.id in self.finished_ids:
                self.stats["skipped"] += 1
                self.offsets.finished(job.tp, job.offset)
                return
            breaker = self.breakers.setdefault(endpoint(n), Breaker(
                self.settings.delivery_breaker_failures, self.settings.delivery_breaker_seconds,
                self.settings.delivery_max_backoff_seconds))
            now = time.time()
            if (wait := breaker.wait(now)) > 0:
                job.due = now + wait
                self._schedule(job)
                return
            ctx = Context(self._session, self.settings, self.publisher.publish)
            try:
                outcome = await asyncio.wait_for(registry.deliver(ctx, n), self.settings.delivery_timeout_seconds + 1)
            except asyncio.TimeoutError:
                outcome = Outcome(False, True, reason="timeout")
            if outcome.delivered:
                breaker.succeeded()
            elif outcome.retryable and outcome.status != 429:
                breaker.failed(time.time())
            else:  # a 429 (Retry-After paces it) or a refusal: no verdict on the endpoint's health
                breaker.released()
            self._outbox.append((job, self._records(job, outcome, time.time())))
            self._flushed.set()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivery: attempt of %s failed unexpectedly; retrying it", job.pending.notification.id)
            if breaker is not None:
                breaker.released()
            job.due = time.time() + self.policy.delay(job.pending.attempts + 1)
            self._schedule(job)
        finally:
            self._slots.release()

    def _records(self, job: Job, outcome: Outcome, now: float) -> list[OutputRecord]:
        """The outcome's records: the attempt on the deliveries topic and, by its verdict, a retry or
        a dead letter."""
        p, s = job.pending, self.settings
        n, attempts, first = p.notification, p.attempts + 1, p.first_ts or now
        reason, records = outcome.reason, []
        verdict = "delivered" if outcome.delivered else "failed"
        if not outcome.delivered:
            delay = max(self.policy.delay(attempts), min(outcome.retry_after or 0.0, s.delivery_max_backoff_seconds))
            age = now + delay - (n.created_ts or first)
            if not outcome.retryable:
                verdict, reason = "dead", f"refused: {reason}"
            elif attempts >= s.delivery_max_attempts:
                verdict, reason = "dead", f"{attempts} attempts failed, last: {reason}"
            elif age > s.delivery_max_age_seconds:
                verdict, reason = "dead", f"older than {s.delivery_max_age_seconds:.0f} s after {attempts} attempts, last: {reason}"
            else:
                retry = Pending(n, attempts, first, now + delay, reason)
                records.append((s.topic_notification_retries, n.id.encode(), msgspec.json.encode(retry)))
        if verdict == "dead":
            raw = msgspec.json.encode(n)
            records.append(self._dead_letter(job.tp.topic, job.tp.partition, job.offset, raw, f"delivery: {reason}", now))
        if verdict != "failed":
            self._finished(n.id)
        self.stats[verdict] += 1
        result = Delivery(n.id, n.tenant, n.workflow, n.receiver.name, n.receiver.type, n.kind,
                          str(n.incident.get("id", "")), attempts, verdict, outcome.status, reason, now,
                          n.source_ts, n.created_ts, first)
        records.append((s.topic_deliveries, n.id.encode(), msgspec.json.encode(result)))
        return records

    def _dead_letter(self, topic: str, partition: int, offset: int, value: bytes | None, reason: str,
                     now: float) -> OutputRecord:
        raw = value or b""
        letter = DeadLetter(reason, topic, partition, offset, base64.b64encode(raw[: self.settings.max_payload_bytes]).decode(),
                            now, len(raw))
        return self.settings.topic_dead_letter, None, msgspec.json.encode(letter)

    # -- what was finished ---------------------------------------------------------------------
    def _finished(self, notification_id: str) -> None:
        self.finished_ids[notification_id] = None
        self.finished_ids.move_to_end(notification_id)
        while len(self.finished_ids) > REMEMBER_IDS:
            self.finished_ids.popitem(last=False)

    async def _remember_finished(self) -> None:
        """Read the last ``REMEMBER_SECONDS`` of the deliveries topic: ids delivered or dead."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap, enable_auto_commit=False,
                                    **client_kwargs(self.settings))
        await consumer.start()
        await asyncio.sleep(0)  # aiokafka: a consumer stopped before its first loop turn raises CancelledError
        try:
            tps = [TopicPartition(self.settings.topic_deliveries, p) for p in await self._partitions(self.settings.topic_deliveries)]
            consumer.assign(tps)
            since = await consumer.offsets_for_times({tp: int((time.time() - REMEMBER_SECONDS) * 1000) for tp in tps})
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                start = since.get(tp)
                consumer.seek(tp, start.offset if start is not None else ends[tp])
            left = {tp for tp in tps if (await consumer.position(tp)) < ends[tp]}
            while left:
                batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
                if not batch:
                    break
                for tp, records in batch.items():
                    for record in records:
                        d = _delivery.decode(record.value)
                        if d.outcome != "failed":
                            self._finished(d.id)
                    if records and records[-1].offset + 1 >= ends[tp]:
                        left.discard(tp)
        finally:
            await consumer.stop()
        log.info("delivery: %d recently finished notifications remembered", len(self.finished_ids))

    async def _partitions(self, topic: str) -> list[int]:
        admin = admin_client(self.settings)
        await admin.start()
        try:
            [described] = await admin.describe_topics([topic])
            return sorted(p["partition"] for p in described["partitions"])
        finally:
            await admin.close()


class _Revocations(ConsumerRebalanceListener):
    """Commit what is finished before partitions move; forget the rest (their next owner reads it)."""

    def __init__(self, service: DeliveryService):
        self.service = service

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if revoked:
            await self.service.commit()
            self.service.offsets.drop(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        pass
