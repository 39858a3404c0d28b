"""A region's heartbeat: one ``heartbeat/1`` every ``M1_HEARTBEAT_INTERVAL`` seconds to its own cluster.

The record (:class:`schemas.events.RegionHeartbeat`, keyed by the region) carries the region
(``region`` and ``source``), a sequence number counting up from 0 for this run of the publisher,
and the origin time ``ts`` (the publisher's clock). MirrorMaker 2 mirrors the topic to every other
region as ``<region>.<topic>``; :mod:`regions.lag` reads them all there and turns their arrival into
replication lag and missed beats. A beat that the region's broker does not acknowledge within
:data:`SEND_TIMEOUT_BEATS` intervals is given up (logged) and the next one is numbered on: the
observers see the gap.

>>> beat = heartbeat("eu-west", 7, 1_700_000_000.25)
>>> beat.source, beat.sequence, beat.tenant
('eu-west', 7, 'platform')
>>> decode_heartbeat(encode_heartbeat(beat)) == beat
True
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import msgspec
from mode import Service

from core.settings import Settings
from schemas.events import EventDecoder, RegionHeartbeat
from streams.publisher import Publisher
from core.tenant_names import PLATFORM

log = logging.getLogger(__name__)
#: A beat not acknowledged within this many intervals (at least 2 s) is given up.
SEND_TIMEOUT_BEATS = 3
_decoder = EventDecoder(RegionHeartbeat)


def heartbeat(region: str, sequence: int, ts: float) -> RegionHeartbeat:
    """Region ``region``'s beat number ``sequence``, sent at ``ts`` (epoch seconds)."""
    return RegionHeartbeat(ts=ts, tenant=PLATFORM, region=region, source=region, sequence=sequence)


def encode_heartbeat(beat: RegionHeartbeat) -> bytes:
    return msgspec.json.encode(beat)


def decode_heartbeat(payload: bytes | None) -> RegionHeartbeat:
    """The beat in ``payload``; :class:`schemas.events.InvalidEvent` if it is none."""
    return _decoder.decode(payload)


class HeartbeatPublisher(Service):
    """Publishes ``settings.region``'s beats through ``publisher`` (whose settings point at the
    region's own cluster) until stopped; ``sent`` counts the acknowledged ones."""

    def __init__(self, settings: Settings, publisher: Publisher, clock: Callable[[], float] = time.time,
                 **kwargs: object):
        super().__init__(**kwargs)
        self.settings = settings
        self.publisher = publisher
        self.clock = clock
        self.sequence = 0
        self.sent = 0

    async def beat(self) -> None:
        """Send the next beat and wait for the broker's acknowledgement (or give it up)."""
        beat = heartbeat(self.settings.region, self.sequence, self.clock())
        self.sequence += 1
        record = (self.settings.topic_heartbeats, self.settings.region.encode(), encode_heartbeat(beat))
        try:
            await asyncio.wait_for(self.publisher.publish([record]),
                                   max(2.0, SEND_TIMEOUT_BEATS * self.settings.heartbeat_interval))
            self.sent += 1
        except Exception as exc:  # the region's broker is away: observers see the gap
            log.warning("heartbeat %d of %s not sent: %r", beat.sequence, beat.region, exc)

    @Service.task
    async def _beat_clock(self) -> None:
        interval = self.settings.heartbeat_interval
        next_at = time.monotonic()
        while not self.should_stop:
            await self.beat()
            next_at = max(next_at + interval, time.monotonic())
            await self.sleep(next_at - time.monotonic())
