"""Publish a batch's output records to Kafka in whole producer batches.

The metrics topic's handlers emit thousands of small records per batch (forecasts, anomalies,
dead letters, re-keyed points). Sent one by one through Faust's ``topic.send``, each costs far
more than its bytes (``docs/benchmarks.md``); :class:`Publisher` instead groups them by
topic-partition and hands the producer full batches, then waits for the broker's
acknowledgements, so a caller that awaits :meth:`Publisher.publish` knows every record is
stored before it commits its input offsets.

Keyed records go to the partition Kafka's default partitioner gives their key (murmur2, as the
Java client and aiokafka's ``send`` choose), so a series keeps its partition whoever produces
it; records without a key go to one partition per call, rotating between calls.

:class:`Forwarder` sends the same way in Kafka transactions, for records a consumer forwards to
a topic the pipeline reads again (OTLP points and RED minutes to the metrics topic, re-keyed
points, RED spans): its consumer commits its input offsets in the same transaction
(``streams.batch_consumer``), so a ``read_committed`` reader sees each forwarded record once
whatever worker crashed or stopped in between (#14). A worker killed with a transaction open
leaves it to the broker, which aborts it only after its timeout (60 s), and meanwhile every
``read_committed`` reader of a partition it wrote to waits: a restarted worker ends it at once
(its forwarder has the same transactional id), and a worker that takes over the partitions of
one that is gone ends it with :func:`fence_departed`.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import re
import socket
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from functools import lru_cache
from operator import itemgetter

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from mode import Service

from core.kafka.admin import open_transactions
from core.kafka.producer import make_producer
from core.kafka.security import client_kwargs
from core.settings import Settings
from streams.tracing import in_thread

log = logging.getLogger(__name__)

#: ``(topic, key, value)``: one record to publish.
OutputRecord = tuple[str, bytes | None, bytes]
#: Sends records and returns their count once the broker acknowledged them (``Forwarder.send``).
Forward = Callable[[list[OutputRecord]], Awaitable[int]]


@lru_cache(maxsize=1 << 17)
def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` among ``partitions``."""
    every = list(range(partitions))
    return DefaultPartitioner()(key, every, every)


class Publisher(Service):
    """An aiokafka producer that publishes many records per call in whole batches."""

    def __init__(self, settings: Settings, **kwargs: object):
        super().__init__(**kwargs)
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()
        self._keyless = itertools.count()

    async def on_start(self) -> None:
        await self._started_producer()

    async def on_stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _started_producer(self) -> AIOKafkaProducer:
        """The producer, started on first use (Faust starts agents before app services)."""
        async with self._starting:
            if self._producer is None:
                producer = make_producer(self.settings)
                await producer.start()
                self._producer = producer
        return self._producer

    async def publish(self, records: Iterable[OutputRecord]) -> int:
        """Send ``records`` and return their count once the broker acknowledged all of them."""
        return await send_batches(self._producer or await self._started_producer(), list(records), next(self._keyless))


async def send_batches(producer: AIOKafkaProducer, records: list[OutputRecord], spare: int) -> int:
    """Send ``records`` in whole batches per partition (keyless ones to partition ``spare`` modulo
    the topic's count) and return their count once the broker acknowledged all of them. The
    batches are built in a thread (thousands of records a call: keys hashed, records framed), so
    only their sending runs on the event loop."""
    if not records:
        return 0
    partitions = {topic: len(await producer.partitions_for(topic)) for topic in set(map(_TOPIC, records))}
    batches = await in_thread(build_batches, producer.create_batch, records, partitions, spare)
    acks = [await producer.send_batch(batch, topic, partition=partition) for topic, partition, batch in batches]
    await asyncio.gather(*acks)
    return len(records)


def build_batches(create_batch: Callable[[], BatchBuilder], records: list[OutputRecord], partitions: dict[str, int],
                  spare: int) -> list[tuple[str, int, BatchBuilder]]:
    """``records`` in closed producer batches (a closed batch goes out at once; an open one would
    wait for the producer's ``linger_ms``) per topic-partition, as :func:`send_batches` sends them;
    ``partitions`` holds each topic's partition count."""
    grouped: dict[tuple[str, int], list[tuple[bytes | None, bytes]]] = defaultdict(list)
    for topic, key, value in records:
        n = partitions[topic]
        grouped[topic, spare % n if key is None else partition_of(key, n)].append((key, value))
    batches = []
    for (topic, partition), items in grouped.items():
        batch = create_batch()
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: close it, start another
                batch.close()
                batches.append((topic, partition, batch))
                batch = create_batch()
                batch.append(key=key, value=value, timestamp=None)  # an empty batch takes any record
        batch.close()
        batches.append((topic, partition, batch))
    return batches


_TOPIC = itemgetter(0)


def worker_forwarder(settings: Settings, group_id: str) -> Forwarder:
    """The forwarder of this worker's consumer in ``group_id``: its transactional id is the group's
    and this worker's (host name and ``M1_HOME``), so a restarted worker fences its predecessor."""
    worker = hashlib.sha256(f"{socket.gethostname()}:{settings.home.resolve()}".encode()).hexdigest()[:16]
    return Forwarder(settings, f"{group_id}-{worker}")


async def fence_departed(settings: Settings, group_id: str, own_id: str) -> list[str]:
    """End the open transactions of the forwarders of ``group_id`` (:func:`worker_forwarder`) whose
    workers are no longer in the group, other than ``own_id``; returns their transactional ids.

    A consumer's client id is its forwarder's transactional id (``streams.batch_consumer``), so an
    id with a transaction open and no member of the group is a departed worker's: starting a
    producer with it makes the broker abort that transaction now, not at its timeout, and fences a
    zombie still holding the id. Call it once the group assigned partitions (a worker that died
    has left the group by then); it needs DESCRIBE on the group and WRITE on those ids."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **client_kwargs(settings))
    await admin.start()
    try:
        members = {member["client_id"] for response in await admin.describe_consumer_groups([group_id])
                   for group in response.to_object()["groups"] for member in group["members"]}
        forwarder_id = re.compile(re.escape(group_id) + r"-[0-9a-f]{16}")
        departed = sorted(transactional_id for transactional_id in await open_transactions(admin)
                          if forwarder_id.fullmatch(transactional_id) and transactional_id not in members | {own_id})
    finally:
        await admin.close()
    for transactional_id in departed:
        producer = make_producer(settings, transactional_id)
        await producer.start()  # the broker aborts the open transaction before it hands this producer its epoch
        await producer.stop()
    return departed


class Forwarder:
    """A transactional producer for one consumer's forwarded records.

    :meth:`send` opens a transaction if none is open; :meth:`commit` commits it together with the
    consumer's input offsets, :meth:`abort` drops it. ``transactional_id`` must be the same for the
    same consumer of the same worker across restarts: starting a producer with it aborts what a
    crashed predecessor left open (otherwise the broker aborts that after
    ``core.kafka.producer.TRANSACTION_TIMEOUT_MS``). Not thread-safe: one consumer, one event loop."""

    def __init__(self, settings: Settings, transactional_id: str):
        self.settings = settings
        self.transactional_id = transactional_id
        self.sends = 0  # calls of send(): a caller tells whether a failed step sent anything
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()
        self._open = False
        self._keyless = itertools.count()

    @property
    def in_transaction(self) -> bool:
        """Whether records were sent since the last commit or abort."""
        return self._open

    async def start(self) -> None:
        """Start the producer unless it runs (this fences an older producer of ``transactional_id``)."""
        async with self._starting:
            if self._producer is None:
                producer = make_producer(self.settings, self.transactional_id)
                await producer.start()
                self._producer = producer

    async def stop(self) -> None:
        """Abort what is open and stop the producer."""
        if self._producer is not None:
            await self.abort()
            await self._producer.stop()
            self._producer = None

    async def send(self, records: Iterable[OutputRecord]) -> int:
        """Send ``records`` in the open transaction (opened first if none is); their count once
        the broker acknowledged them. If this raises, only :meth:`abort` may follow."""
        records = list(records)
        if not records:
            return 0
        self.sends += 1
        if self._producer is None:
            await self.start()
        assert self._producer is not None
        if not self._open:
            await self._producer.begin_transaction()
            self._open = True
        return await send_batches(self._producer, records, next(self._keyless))

    async def commit(self, offsets: dict[TopicPartition, int], group_id: str) -> bool:
        """Commit the open transaction with ``offsets`` (the next offset to read per partition) of
        ``group_id``; False if none is open (the caller commits the offsets itself)."""
        if not self._open:
            return False
        assert self._producer is not None
        if offsets:
            await self._producer.send_offsets_to_transaction(offsets, group_id)
        await self._producer.commit_transaction()
        self._open = False
        return True

    async def abort(self) -> None:
        """Drop the open transaction: its records stay invisible to ``read_committed`` readers. A
        producer that cannot abort (fenced, say) is replaced by a new one."""
        if not self._open or self._producer is None:
            return
        self._open = False
        try:
            await self._producer.abort_transaction()
        except Exception:  # noqa: BLE001 - the transaction is lost either way; a fresh producer aborts it
            log.warning("aborting the transaction of %s failed; restarting its producer", self.transactional_id,
                        exc_info=True)
            producer, self._producer = self._producer, None
            await producer.stop()
            await self.start()
