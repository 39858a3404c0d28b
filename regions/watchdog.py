"""MirrorMaker 2 watchdog: a replication flow that stops advancing gets its MirrorMaker restarted.

MirrorMaker's pid alone says nothing about its flows: after a broker restart, about one time in
ten one flow stayed stuck ("worker poll timeout has expired") while the process ran on. The
watchdog looks at what the flows deliver instead.

Interface::

    dog = MirrorWatchdog(settings, clusters, mirrors, status_file)   # clusters: region -> host:port
    await dog.step(now)   # one probe, and a restart when a flow is stuck; -> WatchdogStatus
    await dog.run()       # step every ``probe_s`` until cancelled (``m1 regions watchdog``)

Rules (defaults in brackets):

- The watched topic is the agents' heartbeat topic (``settings.topic_heartbeats``): every region's
  agent writes to its own cluster once per heartbeat interval, and each flow ``s → t`` mirrors it
  as ``s.<topic>`` on ``t``. Each probe [every 2 s] reads its end offset on ``s`` and its mirror's
  on ``t``.
- A flow is **stuck** when, for ``stall_s`` seconds [30], its mirror's end offset did not move while
  the source's did (the source is up and producing) and both clusters answered every probe. A
  probe that fails restarts the flow's clock: an unreachable region is the health state machine's
  business, not MirrorMaker's. An idle source (no agent) never makes a flow stuck. Until a flow's
  mirror has moved once, it is judged only ``grace_s`` [120] after the watch began or MirrorMaker
  was restarted: a starting MirrorMaker takes its time to pick up new topics.
- Run it where MirrorMaker runs (in the target region): then "the source answers" means the
  source answers MirrorMaker too, and a cut between the two regions restarts nothing.
- A stuck flow restarts the MirrorMaker process that runs it (SIGCONT, SIGTERM, SIGKILL after
  10 s, start again), and every flow's clock starts over. Restarts are **bounded**: the ``n``-th
  needs ``backoff_s * 2**(n-1)`` seconds [15, 30, 60, ...; at most 600] since the previous one,
  and after ``max_restarts`` [5] within ``window_s`` [3600] the watchdog gives up and says so
  (logged as an error, ``gave_up`` in the status): a flow that restarts do not cure needs a person.
- Every restart is logged (which flow, for how long) and counted in the status file
  (``<mirror dir>/watchdog.json``: restarts, the last ones with their reasons, each flow's last
  advance), which ``m1 regions status`` shows.

>>> clock = FlowClock(stall_s=10.0, grace_s=10.0)
>>> clock.observe(100, 50, now=0.0), clock.observe(110, 50, now=5.0), clock.observe(120, 50, now=10.0)
(False, False, True)
>>> clock.observe(130, 51, now=11.0)  # the mirror moved: not stuck any more
False
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from core.kafka.security import client_kwargs
from core.settings import Settings
from regions.mirror import MirrorMaker

log = logging.getLogger(__name__)
PROBE_TIMEOUT_SECONDS = 3.0


@dataclass
class FlowClock:
    """Whether one flow is stuck, from successive end offsets of its source topic and its mirror.
    Until its mirror has moved once since the watch (re)started, a flow is given ``grace_s``
    rather than ``stall_s``: a MirrorMaker that starts takes a while to pick up new topics."""

    stall_s: float
    grace_s: float = 120.0
    mirror_end: int | None = None
    source_at_advance: int | None = None  # the source's end offset when the mirror last moved
    advanced_at: float | None = None
    watching_since: float | None = None
    moved: bool = False

    def observe(self, source_end: int | None, mirror_end: int | None, now: float) -> bool:
        """Take one probe (``None``: that cluster did not answer); ``True`` when the flow is stuck."""
        if self.watching_since is None:
            self.watching_since = now
        if source_end is None or mirror_end is None or self.advanced_at is None or mirror_end != self.mirror_end:
            self.moved |= None not in (mirror_end, self.mirror_end) and mirror_end != self.mirror_end
            self._restart_clock(source_end, mirror_end, now)
            return False
        if not self.moved and now - self.watching_since < self.grace_s:
            return False
        return now - self.advanced_at >= self.stall_s and source_end > (self.source_at_advance or 0)

    def restarted(self, now: float) -> None:
        """MirrorMaker was (re)started at ``now``: watch from scratch, with the grace period."""
        self.watching_since, self.moved = now, False
        self._restart_clock(None, None, now)

    def _restart_clock(self, source_end: int | None, mirror_end: int | None, now: float) -> None:
        self.mirror_end, self.source_at_advance = mirror_end, source_end
        self.advanced_at = now if source_end is not None and mirror_end is not None else None


@dataclass
class RestartBudget:
    """When a restart is allowed (see the module docstring): backoff doubling from ``backoff_s`` up
    to ``max_backoff_s``, at most ``max_restarts`` within ``window_s``."""

    backoff_s: float = 15.0
    max_backoff_s: float = 600.0
    max_restarts: int = 5
    window_s: float = 3600.0
    times: list[float] = field(default_factory=list)

    def exhausted(self, now: float) -> bool:
        return len([t for t in self.times if now - t < self.window_s]) >= self.max_restarts

    def allowed(self, now: float) -> bool:
        """Whether a restart may happen at ``now``.

        >>> budget = RestartBudget(backoff_s=10, max_restarts=2)
        >>> budget.allowed(0.0), budget.record(0.0), budget.allowed(5.0), budget.allowed(10.0)
        (True, None, False, True)
        >>> budget.record(10.0); budget.allowed(1000.0), budget.exhausted(1000.0)
        (False, True)
        """
        if self.exhausted(now):
            return False
        recent = [t for t in self.times if now - t < self.window_s]
        if not recent:
            return True
        wait = min(self.backoff_s * 2 ** (len(recent) - 1), self.max_backoff_s)
        return now - recent[-1] >= wait

    def record(self, now: float) -> None:
        self.times.append(now)


@dataclass
class WatchdogStatus:
    """What the watchdog did: written to its status file after every step that changed it."""

    restarts: int = 0
    gave_up: bool = False
    stuck: list[str] = field(default_factory=list)  # flows stuck at the last probe, "a->b"
    last_restarts: list[dict[str, object]] = field(default_factory=list)  # at, flows, mirror, stalled_s (last 10)
    probed_at: float = 0.0

    @classmethod
    def read(cls, path: Path) -> WatchdogStatus | None:
        """The status last written at ``path``, or ``None`` (no watchdog ran there)."""
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


class MirrorWatchdog:
    """Watches every flow run by ``mirrors`` between ``clusters`` and restarts the one running a
    stuck flow (see the module docstring). ``restart`` is how a mirror is restarted (default
    :meth:`MirrorMaker.restart`, in a thread: it blocks until the flows are back)."""

    def __init__(self, settings: Settings, clusters: dict[str, str], mirrors: list[MirrorMaker], status_file: Path,
                 stall_s: float = 30.0, probe_s: float = 2.0, grace_s: float = 120.0, budget: RestartBudget | None = None,
                 restart: Callable[[MirrorMaker], object] = MirrorMaker.restart):
        self.settings = settings
        self.clusters = dict(clusters)
        self.probe_s = probe_s
        self.budget = budget or RestartBudget()
        self.restart = restart
        self.status_file = status_file
        self.status = WatchdogStatus.read(status_file) or WatchdogStatus()
        self.owner = {flow: mirror for mirror in mirrors for flow in mirror.flows(list(clusters))}
        self.clocks = {flow: FlowClock(stall_s, grace_s) for flow in self.owner}
        self._consumers: dict[str, AIOKafkaConsumer] = {}

    async def close(self) -> None:
        for consumer in self._consumers.values():
            await consumer.stop()
        self._consumers.clear()

    async def run(self) -> None:
        """Probe every ``probe_s`` seconds until cancelled."""
        try:
            while True:
                await self.step(time.time())
                await asyncio.sleep(self.probe_s)
        finally:
            await self.close()

    async def step(self, now: float) -> WatchdogStatus:
        """Probe every flow once; restart the mirror of the stuck ones when the budget allows."""
        topic = self.settings.topic_heartbeats
        ends = {}
        for region in self.clusters:
            wanted = [topic] + [f"{src}.{topic}" for src, dst in self.owner if dst == region]
            ends[region] = await self._end_offsets(region, wanted)
        stuck = []
        for (src, dst), clock in self.clocks.items():
            source = ends[src].get(topic) if ends[src] is not None else None
            mirror = ends[dst].get(f"{src}.{topic}") if ends[dst] is not None else None
            if clock.observe(source, mirror, now):
                stuck.append((src, dst))
        self.status.stuck, self.status.probed_at = [f"{s}->{d}" for s, d in stuck], now
        if stuck:
            await self._restart(stuck, now)
        self._write()
        return self.status

    async def _restart(self, stuck: list[tuple[str, str]], now: float) -> None:
        if self.budget.exhausted(now):
            if not self.status.gave_up:
                log.error("MirrorMaker watchdog: flows %s stuck after %d restarts within %.0f s; giving up (restart "
                          "MirrorMaker by hand and look at its log)", self.status.stuck, self.status.restarts,
                          self.budget.window_s)
            self.status.gave_up = True
            return
        if not self.budget.allowed(now):
            return  # backing off
        for mirror in {id(self.owner[f]): self.owner[f] for f in stuck}.values():
            flows = [f"{s}->{d}" for s, d in stuck if self.owner[(s, d)] is mirror]
            stalled = max(now - self.clocks[f].advanced_at for f in stuck if self.owner[f] is mirror)
            log.warning("MirrorMaker watchdog: flows %s delivered nothing for %.0f s while their sources produced; "
                        "restarting MirrorMaker in %s (restart %d)", flows, stalled, mirror.dir,
                        self.status.restarts + 1)
            self.budget.record(now)
            self.status.restarts += 1
            self.status.last_restarts = [*self.status.last_restarts, {"at": now, "flows": flows, "mirror": str(mirror.dir),
                                                                      "stalled_s": round(stalled, 1)}][-10:]
            self._write()
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.restart, mirror)
            except Exception:
                log.exception("MirrorMaker watchdog: the restart in %s failed; the next stuck probe tries again",
                              mirror.dir)
        after = time.time()
        for clock in self.clocks.values():  # every flow is watched afresh, with the grace period
            clock.restarted(after)

    async def _end_offsets(self, region: str, topics: list[str]) -> dict[str, int] | None:
        """End offset of partition 0 of each of ``topics`` on ``region``'s cluster (0 for a topic
        that does not exist yet), or ``None`` when the cluster did not answer in time."""
        try:
            return await asyncio.wait_for(self._ends(region, topics), PROBE_TIMEOUT_SECONDS)
        except Exception as exc:
            log.debug("watchdog probe of %s failed: %r", region, exc)
            consumer = self._consumers.pop(region, None)
            if consumer is not None:
                await consumer.stop()
            return None

    async def _ends(self, region: str, topics: list[str]) -> dict[str, int]:
        if region not in self._consumers:
            settings = self.settings.model_copy(update={"kafka_bootstrap": self.clusters[region]})
            consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=None, request_timeout_ms=3000,
                                        **client_kwargs(settings))
            self._consumers[region] = consumer
            await consumer.start()
        consumer = self._consumers[region]
        existing = await consumer.topics()
        partitions = [TopicPartition(t, 0) for t in topics if t in existing]
        ends = await consumer.end_offsets(partitions) if partitions else {}
        return {t: ends.get(TopicPartition(t, 0), 0) for t in topics}

    def _write(self) -> None:
        self.status_file.parent.mkdir(parents=True, exist_ok=True)
        self.status_file.write_text(json.dumps(asdict(self.status)))
