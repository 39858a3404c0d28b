"""One consumer on a region's own cluster reading a topic and every mirrored copy of it.

MirrorMaker 2 names a mirrored topic ``<source>.<topic>``, so the region agent subscribes by
pattern (:func:`mirrored_pattern`) and learns each record's origin region from its topic name
(:func:`origin_of`; an unprefixed topic is the region's own). :class:`RegionFeed` dispatches each
record to the handler registered for its base topic and publishes what the handlers return
(dead letters of records they reject, say). It has no consumer group and starts at the
earliest offsets, so nothing mirrored is skipped when a topic appears after it started; handlers
that only care about the present ignore records older than they want. New mirrored topics are
found within :data:`METADATA_REFRESH_MS`.

>>> import re
>>> pattern = mirrored_pattern(["region_heartbeats", "region_lag"])
>>> [bool(re.fullmatch(pattern, t)) for t in ("region_heartbeats", "eu-west.region_lag", "a.b.region_lag", "x")]
[True, True, False, False]
>>> origin_of("eu-west.region_lag", "us-east"), origin_of("region_lag", "us-east")
('eu-west', 'us-east')
>>> base_of("eu-west.region_lag")
'region_lag'
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from mode import Service

from core.kafka.security import client_kwargs
from core.settings import Settings
from streams.publisher import OutputRecord, Publisher

log = logging.getLogger(__name__)
METADATA_REFRESH_MS = 2000
#: ``handler(origin_region, record, arrival_time)`` -> records to publish.
FeedHandler = Callable[[str, ConsumerRecord, float], Iterable[OutputRecord]]


def mirrored_pattern(bases: list[str]) -> str:
    """A regular expression matching each of ``bases`` and its one-hop mirrored copies."""
    return rf"^(?:[a-z][a-z0-9-]*\.)?(?:{'|'.join(re.escape(base) for base in bases)})$"


def origin_of(topic: str, own_region: str) -> str:
    """The region a record of ``topic`` was produced in."""
    prefix, dot, _ = topic.partition(".")
    return prefix if dot else own_region


def base_of(topic: str) -> str:
    """The topic's name in its origin region."""
    return topic.rpartition(".")[2]


class RegionFeed(Service):
    """Reads ``handlers``' topics (own and mirrored) on the cluster of ``settings`` (its
    ``bootstrap``) for region ``settings.region``; each record goes to its base topic's handler
    with the wall-clock time it arrived; what they return goes out through ``publisher``."""

    def __init__(self, settings: Settings, handlers: dict[str, FeedHandler], publisher: Publisher,
                 clock: Callable[[], float], **kwargs: object):
        super().__init__(**kwargs)
        self.settings = settings
        self.publisher = publisher
        self.handlers = handlers
        self.clock = clock
        self._consumer: AIOKafkaConsumer | None = None

    async def on_start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", metadata_max_age_ms=METADATA_REFRESH_MS, fetch_max_wait_ms=100,
            **client_kwargs(self.settings))
        self._consumer.subscribe(pattern=mirrored_pattern(list(self.handlers)))
        await self._consumer.start()

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    @Service.task
    async def _read(self) -> None:
        while not self.should_stop:
            batches = await self._consumer.getmany(timeout_ms=500)
            arrival = self.clock()
            out: list[OutputRecord] = []
            for records in batches.values():
                for record in records:
                    handler = self.handlers.get(base_of(record.topic))
                    if handler is None:
                        continue
                    try:
                        out.extend(handler(origin_of(record.topic, self.settings.region), record, arrival))
                    except Exception:  # a handler's bug must not stop the feed
                        log.exception("region feed: record %s[%d]@%d not handled", record.topic,
                                      record.partition, record.offset)
            if out:
                try:
                    await self.publisher.publish(out)
                except Exception as exc:  # the region's own broker is away; the next batch tries again
                    log.warning("region feed: %d output records not published: %r", len(out), exc)
