"""The region agent: heartbeats, lag, health, the shared verdict and routing of one region, as one service.

A worker runs it when ``M1_REGION`` is set (``streams.app``, with the store: it also writes the
``region_lag``, ``region_events`` and ``routes`` tables); ``m1 regions agent --region X`` runs it
alone, writing only to topics. Everything goes to and comes from the region's own cluster
(``settings.bootstrap``); MirrorMaker 2 carries it to the other regions as ``<region>.<topic>``.

* :class:`regions.heartbeat.HeartbeatPublisher` sends ``heartbeat/1`` every ``M1_HEARTBEAT_INTERVAL``.
* :class:`regions.feed.RegionFeed` reads, own and mirrored: heartbeats (→ lag tracker and health),
  ``region_lag`` reports (→ clock skew, table), ``region_views`` (→ verdict board), ``anomalies``
  (error-rate anomalies, metric names containing ``error``, → health), ``region_events`` and
  ``routing`` (→ tables). Records that do not decode are dead-lettered with the reason.
* Every interval, one **decision** (after a warm-up that ends once every region's heartbeat has
  arrived, or after :data:`WARM_UP_SECONDS`: mirrored topics take a few seconds to appear, and a
  region must not be failed over for that): lag reports and ``metric/1`` points
  (:mod:`regions.lag`), the local health (:mod:`regions.health`), this region's view published and
  offered to the :class:`~regions.verdict.VerdictBoard`, the verdict's changes published as
  ``region_event/1`` (``failover``, ``recovery``, ``degraded``), and the routing table recomputed
  from the verdict in the same decision (:mod:`regions.routing`), its changed routes published on
  the compacted ``routing`` topic. A failover is thus published ``M1_HEALTH_DOWN_MISSED`` (unset:
  2 with three or more regions, 3 with two) intervals after the region's last heartbeat arrived,
  plus at most one interval.
* Every :data:`OFFSET_PROBE_SECONDS`, MirrorMaker's offset lag of each source → this region, when
  the other clusters' addresses are known (``M1_REGION_BOOTSTRAPS``, or the local set under
  ``<home>/regions``).

``decisions`` counts them; ``table`` and ``board.verdict`` are the current routing and verdict, and
after each decision ``status`` (:class:`regions.status.RegionStatus`, which the worker's API serves
at ``/v1/route`` and ``/v1/regions``) holds both as one snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

import msgspec
from aiokafka import ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from mode import Service, ServiceT

from core.kafka.security import client_kwargs
from core.settings import Settings
from regions.feed import RegionFeed
from regions.health import HealthPolicy, RegionHealth
from regions.heartbeat import HeartbeatPublisher, decode_heartbeat
from regions.lag import LagTracker, OffsetLagProbe, decode_lag, lag_metrics_topic, lag_records
from regions.routing import Route, Router, RoutingTable
from regions.sink import RegionRows
from regions.status import RegionSnapshot, RegionStatus
from regions.verdict import VerdictBoard, decode_view, encode_view
from schemas.events import InvalidEvent, RegionEvent
from sinks.clickhouse import Store
from streams.metrics_handler import alert_records
from streams.metrics_pipeline import Record, dead_letter
from streams.publisher import OutputRecord, Publisher

log = logging.getLogger(__name__)
OFFSET_PROBE_SECONDS = 2.0
WARM_UP_SECONDS = 20.0
#: Substring of the metric names whose anomalies count as a region's error-rate anomalies.
ERROR_METRIC = "error"
_route_decoder = msgspec.json.Decoder(Route)
_event_decoder = msgspec.json.Decoder(RegionEvent)


class _AnomalySeen(msgspec.Struct):
    """The fields of an anomaly record the health needs (others are ignored)."""

    ts: float
    region: str
    metric: str


_anomaly_decoder = msgspec.json.Decoder(_AnomalySeen)


def region_bootstraps(settings: Settings) -> dict[str, str]:
    """Every region's cluster address: ``M1_REGION_BOOTSTRAPS``, else the local set's recorded ones."""
    if settings.region_bootstraps:
        return dict(settings.region_bootstraps)
    from regions.cluster import RegionSet

    return RegionSet(settings).bootstraps() if (settings.home / "regions" / "regions.json").exists() else {}


class RegionAgent(Service):
    """One region's agent (see the module docstring). ``publisher`` is the worker's when it runs
    there; ``store`` makes it write the region tables; ``clock`` is the wall clock (epoch s);
    ``status`` is where each decision's snapshot goes (the API's, in a worker)."""

    def __init__(self, settings: Settings, store: Store | None = None, publisher: Publisher | None = None,
                 clock: Callable[[], float] = time.time, status: RegionStatus | None = None, **kwargs: object):
        super().__init__(**kwargs)
        if not settings.region:
            raise ValueError("the region agent needs M1_REGION")
        self.settings = settings
        self.region = settings.region
        self.bootstraps = region_bootstraps(settings)
        self.regions = sorted({self.region, *settings.regions, *self.bootstraps})
        self.store = store
        self.clock = clock
        self._own_publisher = publisher is None
        self.publisher = publisher or Publisher(settings)
        self.beats = HeartbeatPublisher(settings, self.publisher, clock)
        self._begin(clock())
        self.board = VerdictBoard(self.region, self.regions)
        self.router = Router(settings.region_proximity) if settings.region_proximity else Router.for_regions(self.regions)
        self.table: RoutingTable | None = None
        self._restored_routes: list[bytes] = []  # own routing topic's values, for the version to go on from
        self.rows = RegionRows() if store is not None else None
        self.probe = OffsetLagProbe(settings, self.bootstraps)
        self.offset_lags: dict[str, int] = {}
        self.decisions = 0
        self.status = status or RegionStatus()
        self.feed = RegionFeed(settings, {
            settings.topic_heartbeats: self._on_heartbeat,
            settings.topic_region_lag: self._on_lag,
            settings.topic_region_views: self._on_view,
            settings.topic_anomalies: self._on_anomaly,
            settings.topic_region_events: self._on_event,
            settings.topic_routing: self._on_route,
        }, self.publisher, clock)

    def _begin(self, now: float) -> None:
        """Lag, health and warm-up counted from ``now``: the agent's start (a worker builds it
        long before it starts)."""
        self.tracker = LagTracker(self.region, self.settings.lag_window_seconds, since=now)
        self.health = RegionHealth(self.region, self.regions, HealthPolicy.from_settings(self.settings, len(self.regions)),
                                   now=now)
        self.warm_until = now + WARM_UP_SECONDS
        self._heard: set[str] = set()  # regions whose heartbeats sent since the start arrived

    def on_init_dependencies(self) -> Iterable[ServiceT]:
        return [*([self.publisher] if self._own_publisher else []), self.beats, self.feed]

    async def on_first_start(self) -> None:
        await ensure_region_topics(self.settings)
        self._begin(self.clock())  # before the feed starts: nothing was counted yet

    async def on_stop(self) -> None:
        await self.probe.close()

    # -- feed handlers: (origin region, record, arrival) -> records to publish -----------------
    def _rejected(self, record: ConsumerRecord, reason: str, now: float) -> list[OutputRecord]:
        rec = Record(record.topic, record.partition, record.offset, record.key, record.value)
        return alert_records(self.settings, [dead_letter(rec, f"region: {reason}", now, self.settings.max_payload_bytes)], [])

    def _on_heartbeat(self, origin: str, record: ConsumerRecord, at: float) -> list[OutputRecord]:
        try:
            beat = decode_heartbeat(record.value)
        except InvalidEvent as exc:
            return self._rejected(record, f"heartbeat: {exc.reason}", at)
        if beat.source != origin:
            return self._rejected(record, f"heartbeat of {beat.source!r} on a topic of {origin!r}", at)
        self.tracker.beat(beat, at)
        if beat.source in self.regions and beat.ts >= self._history_before:
            self._heard.add(beat.source)
            self.health.heartbeat(beat.source, beat.ts, at)
        return []

    @property
    def _history_before(self) -> float:
        """Heartbeats and views older than this were sent before the agent started: history,
        neither a sign of life nor a vote."""
        return self.tracker.since - 2 * self.settings.heartbeat_interval

    def _on_lag(self, origin: str, record: ConsumerRecord, at: float) -> list[OutputRecord]:
        try:
            report = decode_lag(record.value)
        except msgspec.MsgspecError as exc:
            return self._rejected(record, f"region_lag: {exc}", at)
        self.tracker.remote_report(report)
        if self.rows is not None:
            self.rows.lag(report)
        return []

    def _on_view(self, origin: str, record: ConsumerRecord, at: float) -> list[OutputRecord]:
        try:
            view = decode_view(record.value or b"")
        except msgspec.MsgspecError as exc:
            return self._rejected(record, f"region_view: {exc}", at)
        if view.observer != origin:
            return self._rejected(record, f"view of {view.observer!r} on a topic of {origin!r}", at)
        if view.at >= self._history_before:
            self.board.offer(view)
        return []

    def _on_anomaly(self, origin: str, record: ConsumerRecord, at: float) -> list[OutputRecord]:
        try:  # the pipeline's own output: one it cannot read is the pipeline's bug, not input
            seen = _anomaly_decoder.decode(record.value or b"")
        except msgspec.MsgspecError:
            return []
        if ERROR_METRIC in seen.metric.lower() and seen.region in self.regions:
            self.health.anomaly(seen.region, seen.ts)
        return []

    def _on_event(self, origin: str, record: ConsumerRecord, at: float) -> list[OutputRecord]:
        try:
            event = _event_decoder.decode(record.value or b"")
        except msgspec.MsgspecError as exc:
            return self._rejected(record, f"region_event: {exc}", at)
        if self.rows is not None:
            self.rows.event(event)
        return []

    def _on_route(self, origin: str, record: ConsumerRecord, at: float) -> list[OutputRecord]:
        try:
            route = _route_decoder.decode(record.value or b"")
        except msgspec.MsgspecError as exc:
            return self._rejected(record, f"route: {exc}", at)
        if origin == self.region and self.table is None:
            self._restored_routes.append(record.value)
        if self.rows is not None:
            self.rows.route(origin, route)
        return []

    # -- decisions -------------------------------------------------------------------------------
    def warm(self, now: float) -> bool:
        """Whether decisions have begun: every region heard from, or the warm-up is over."""
        if now < self.warm_until and self._heard != set(self.regions):
            return False
        self.warm_until = 0.0
        return True

    def decide(self, now: float) -> list[OutputRecord]:
        """One decision at ``now``: the records it publishes (lag, view, events, changed routes);
        during the warm-up only the lag."""
        s = self.settings
        reports = self.tracker.reports(now, self.offset_lags)
        out = lag_records(s, reports, self.tracker.points(now, self.offset_lags))
        for report in reports:
            if report.lag_p99_ms is not None and report.source in self.regions:
                self.health.lag(report.source, max(0.0, report.lag_p99_ms - report.skew_ms) / 1000)
        if not self.warm(now):
            return out
        for change in self.health.evaluate(now):
            log.info("region %s sees %s %s -> %s (%s)", self.region, change.region, change.previous.value,
                     change.state.value, change.kind)
        view = self.health.view(now)
        self.board.offer(view)
        events = self.board.decide(now)
        for event in events:
            log.warning("region %s: %s of %s (%s)", self.region, event.kind, event.region, event.reason)
        previous = self.table
        if previous is None and self._restored_routes:
            previous = RoutingTable.from_records(self._restored_routes)
        self.table = self.router.route(self.board.verdict.states, now, previous)
        self.decisions += 1
        self.status.update(RegionSnapshot(self.region, now, self.board.verdict, self.table, self.board.views))
        out.append((s.topic_region_views, self.region.encode(), encode_view(view)))
        out += [(s.topic_region_events, e.region.encode(), msgspec.json.encode(e)) for e in events]
        if self.table is not previous or self.decisions == 1:
            out += [(s.topic_routing, key, value) for key, value in self.table.records(since=previous)]
        return out

    @Service.task
    async def _decision_clock(self) -> None:
        interval = self.settings.heartbeat_interval
        while not self.should_stop:
            await self.sleep(interval)
            if self.should_stop:
                break
            records = self.decide(self.clock())
            try:
                await asyncio.wait_for(self.publisher.publish(records), max(2.0, 3 * interval))
            except Exception as exc:  # the region's broker is away: the next decision publishes anew
                log.warning("region %s: decision records not published: %r", self.region, exc)
            if self.rows is not None:
                try:
                    await asyncio.get_running_loop().run_in_executor(None, self.rows.flush, self.store, self.clock())
                except Exception:
                    log.exception("region tables: insert failed; the rows wait for the next decision")

    @Service.task
    async def _offset_clock(self) -> None:
        while not self.should_stop and len(self.bootstraps) > 1:
            self.offset_lags = await self.probe.measure()
            await self.sleep(OFFSET_PROBE_SECONDS)


#: Heartbeats, lag reports and views are kept an hour (MirrorMaker copies the setting to the
#: mirrored topics): an agent reads them from the start, and history belongs in the tables.
OPERATIONAL = {"retention.ms": str(3600 * 1000)}


async def ensure_region_topics(settings: Settings) -> None:
    """Create the region topics on the region's cluster if missing: one partition each (ordered),
    heartbeats, lag and views kept an hour, ``routing`` compacted; and the metrics topic the lag
    points go to (the pipeline's partitions)."""
    wanted = {settings.topic_heartbeats: (1, OPERATIONAL), settings.topic_region_lag: (1, OPERATIONAL),
              settings.topic_region_views: (1, OPERATIONAL), settings.topic_region_events: (1, {}),
              settings.topic_routing: (1, {"cleanup.policy": "compact"}),
              lag_metrics_topic(settings): (settings.topic_partitions, {})}
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **client_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(name, partitions, 1, topic_configs=configs)
                   for name, (partitions, configs) in wanted.items() if name not in existing]
        if missing:
            await admin.create_topics(missing)
    finally:
        await admin.close()
