"""Regions whose brokers live in network namespaces (tests/regions/netns.py), with MirrorMaker 2 and
one region agent per region (``m1 regions agent``) in the root namespace, and readers of what the
agents publish. Used by the failover, partition, split-brain and watchdog tests (one set for the
whole session: tests/regions/conftest.py) and scripts/bench_failover.py.

Topology: the root namespace is the "internet". Each region's broker sits behind its own link, and
the namespaces reach each other through the root namespace (:meth:`Lab.route`). MirrorMaker 2 runs
as one process per region, *inside* that region's namespace, with the flows into it (MirrorMaker's
``--clusters <region>``: consume remotely, produce locally, as a real deployment places it). So:

- cutting a region's link (``mesh.brokers[name].link.cut()``) partitions the region from everyone
  while its broker keeps running; killing its broker (:meth:`Mesh.kill_broker`) is a crash;
- cutting the path between two regions (:meth:`Mesh.cut_between`: root FORWARD rules) stops both
  flows between them and nothing else: a split brain, each still reaching the third region;
- a region started with a ``latency`` is reached by everyone through a WAN proxy
  (``mesh.brokers[name].proxy``).

``m1 regions watchdog`` may supervise each MirrorMaker from its namespace (:meth:`Mesh.start_watchdogs`). :meth:`Mesh.reset` puts a set that a test changed back to its start.

:class:`Tail` reads one topic of one cluster from the beginning, decoded, and waits for a record
that satisfies a predicate: the failover event of a region, a routing change, a lag report.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from core.kafka.local_broker import _pid_alive, terminate
from core.settings import Settings
from regions.health import HealthState, RegionView
from regions.lag import RegionLag, decode_lag
from regions.mirror import MirrorMaker
from regions.watchdog import WatchdogStatus
from regions.routing import Route
from regions.verdict import decode_view
from schemas.events import RegionEvent
from tests.regions.netns import Lab, NetnsBroker, lab, track

NAMES = ["eu-west", "us-east", "ap-south"]
#: A set is ready when the corrected p99 lag of every pair is under this: half the degraded bar.
SETTLED_LAG_MS = 500.0
M1 = str(Path(sys.executable).with_name("m1"))
T = TypeVar("T")
_topics = Settings.model_construct()


class Tail(Generic[T]):
    """Every record of ``topic`` on the cluster at ``bootstrap``, from the beginning, as ``decode``
    gives it (records it rejects are skipped). Use with ``async with``."""

    def __init__(self, bootstrap: str, topic: str, decode: Callable[[bytes], T]):
        self.decode = decode
        self.seen: list[T] = []
        self._consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                          auto_offset_reset="earliest", enable_auto_commit=False,
                                          metadata_max_age_ms=2000, request_timeout_ms=5000)

    async def __aenter__(self) -> Tail[T]:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def until(self, predicate: Callable[[T], bool], timeout: float) -> T | None:
        """The first record read from now on (or already read) that satisfies ``predicate``,
        or ``None`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for item in self.seen:
            if predicate(item):
                return item
        while time.monotonic() < deadline:
            for item in await self._read(min(500, max(1, int((deadline - time.monotonic()) * 1000)))):
                if predicate(item):
                    return item
        return None

    async def drain(self, timeout: float = 15.0) -> list[T]:
        """Every record written until now (up to the end offsets at the call): ``seen``."""
        deadline = time.monotonic() + timeout
        while not self._consumer.assignment() and time.monotonic() < deadline:
            await self._read(200)
        ends = await self._consumer.end_offsets(list(self._consumer.assignment()))
        for tp, end in ends.items():
            while await self._consumer.position(tp) < end and time.monotonic() < deadline:
                await self._read(300)
        return self.seen

    async def _read(self, timeout_ms: int) -> list[T]:
        """One fetch: the records it brought, decoded (and added to ``seen``)."""
        new = []
        for records in (await self._consumer.getmany(timeout_ms=timeout_ms)).values():
            for record in records:
                try:
                    new.append(self.decode(record.value))
                except (msgspec.MsgspecError, ValueError):
                    continue
        self.seen += new
        return new


async def produce(bootstrap: str, topic: str, values: set[bytes]) -> None:
    """Send ``values`` to ``topic`` (in sorted order), each acknowledged by the broker."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in sorted(values):
            await producer.send(topic, value)
        await producer.flush()
    finally:
        await producer.stop()


def events(bootstrap: str) -> Tail[RegionEvent]:
    """The region's own ``region_events`` (its agent's verdict changes)."""
    return Tail(bootstrap, _topics.topic_region_events, msgspec.json.Decoder(RegionEvent).decode)


def views(bootstrap: str) -> Tail[RegionView]:
    return Tail(bootstrap, _topics.topic_region_views, decode_view)


def lags(bootstrap: str) -> Tail[RegionLag]:
    return Tail(bootstrap, _topics.topic_region_lag, decode_lag)


def routes(bootstrap: str) -> Tail[Route]:
    return Tail(bootstrap, _topics.topic_routing, msgspec.json.Decoder(Route).decode)


@dataclass
class Mesh:
    """Running regions (see the module docstring); ``agent_env`` is added to every agent's environment."""

    lab: Lab
    home: Path
    brokers: dict[str, NetnsBroker]
    mirrors: dict[str, MirrorMaker]  # target region -> the MirrorMaker running the flows into it
    agent_env: dict[str, str] = field(default_factory=dict)
    agents: dict[str, subprocess.Popen] = field(default_factory=dict)
    watchdogs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def bootstraps(self) -> dict[str, str]:
        return {name: broker.bootstrap for name, broker in self.brokers.items()}

    def start_mirror(self, region: str) -> None:
        """Start (or reuse) the MirrorMaker of the flows into ``region``, in its namespace."""
        track(self.mirrors[region].start(self.bootstraps, timeout=300).pid)

    def mirror_pid(self, region: str) -> int | None:
        state = self.mirrors[region].status()
        return state.pid if state else None

    def start_agent(self, region: str) -> None:
        """Run ``m1 regions agent --region <region>`` (logs in ``<home>/agent-<region>.log``)."""
        env = {**os.environ, "M1_HOME": str(self.home / f"agent-{region}"), "M1_REGION": region,
               "M1_REGIONS": ",".join(self.brokers), "M1_KAFKA_BOOTSTRAP": self.bootstraps[region],
               "M1_REGION_BOOTSTRAPS": ",".join(f"{k}={v}" for k, v in self.bootstraps.items()), **self.agent_env}
        with open(self.home / f"agent-{region}.log", "ab") as log:
            proc = subprocess.Popen([M1, "regions", "agent", "--region", region, "--loglevel", "info"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.agents[region] = proc
        track(proc.pid)

    def kill_broker(self, region: str) -> float:
        """SIGKILL the region's broker; returns the wall-clock time it was sent."""
        pid = self.brokers[region].kafka._recorded().pid
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        while _pid_alive(pid):
            time.sleep(0.05)
        return killed_at

    def restart_broker(self, region: str) -> None:
        """Start the region's broker again (same namespace, address and data)."""
        self.brokers[region].kafka.start(timeout=180)

    def restart_mirror(self) -> None:
        """Restart every MirrorMaker between the same clusters."""
        for mirror in self.mirrors.values():
            track(mirror.restart(timeout=300).pid)

    def broker_alive(self, region: str) -> bool:
        return _pid_alive(self.brokers[region].kafka._recorded().pid)

    def cut_between(self, a: str, b: str) -> None:
        """Cut only the path between regions ``a`` and ``b`` (see the module docstring)."""
        self.lab.cut_between(self.brokers[a].link, self.brokers[b].link)

    def start_watchdogs(self, stall_s: float) -> None:
        """``m1 regions watchdog`` beside each MirrorMaker, in its region's namespace (it probes the
        sources from where MirrorMaker reaches them); logs in ``<home>/watchdog-<region>.log``."""
        for region, mirror in self.mirrors.items():
            env = {**os.environ, "M1_HOME": str(self.home / f"watchdog-{region}")}
            with open(self.home / f"watchdog-{region}.log", "ab") as log:
                proc = subprocess.Popen(["ip", "netns", "exec", self.brokers[region].link.ns, M1, "regions", "watchdog",
                                         "--mirror-dir", str(mirror.dir), "--stall", str(stall_s), "--max-restarts", "10"],
                                        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
            self.watchdogs[region] = proc
        self.lab.defer(lambda: _stop_together(self.watchdogs.values()))  # before the agents and the mirrors

    def watchdog_status(self, region: str) -> WatchdogStatus:
        """What the watchdog of the flows into ``region`` last wrote (what ``m1 regions status`` shows)."""
        return WatchdogStatus.read(self.mirrors[region].dir / "watchdog.json") or WatchdogStatus()

    def reset(self) -> None:
        """Undo what a test may have left: cuts, loss and WAN delay removed, dead brokers, mirrors
        and agents started again (a stopped mirror is continued)."""
        self.lab.heal_between()
        for name, broker in self.brokers.items():
            broker.link.heal()
            broker.link.clear_loss()
            if broker.proxy is not None:
                broker.proxy.set_latency(0.0)
            if not self.broker_alive(name):
                self.restart_broker(name)
        for name in self.brokers:
            pid = self.mirror_pid(name)
            if pid is not None:
                os.kill(pid, signal.SIGCONT)
            else:
                self.start_mirror(name)
        for name, proc in self.agents.items():
            if proc.poll() is not None:
                self.start_agent(name)
        for name, proc in self.watchdogs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"the watchdog of {name} exited ({proc.returncode}): see {self.home}/watchdog-{name}.log")

    async def ready(self, timeout: float = 180.0) -> None:
        """Wait until every agent publishes a view with every region healthy, and then reports the
        heartbeats of every other region reaching it with a corrected p99 lag under
        :data:`SETTLED_LAG_MS` (the regions read together). The second wait is for a WAN delay
        the last test set and :meth:`reset` removed: for a few seconds the lag window still holds
        the delayed heartbeats while the skew estimate swings (the forward p50 falls before the
        reverse one, reported from the other side, does), and their sum can pass the degraded
        bar. Session 12's CI: the two regions of a split took ap-south for degraded that way,
        right after the WAN latency test (p99 732 ms, skew -277 ms)."""
        began = time.time()

        async def healthy_seen_by(region: str) -> None:
            async with views(self.bootstraps[region]) as tail:
                view = await tail.until(lambda v: v.at >= began and set(v.states) == set(self.brokers) and all(
                    state is HealthState.HEALTHY for state in v.states.values()), timeout)
            if view is None:
                raise TimeoutError(f"region {region}'s agent did not see every region healthy within {timeout:.0f}s; "
                                   f"see {self.home}/agent-{region}.log")

        async def settled_at(region: str) -> None:
            others, latest = set(self.brokers) - {region}, {}

            def settled(report: RegionLag) -> bool:
                if report.target == region and report.ts >= began:
                    latest[report.source] = report
                return latest.keys() >= others and all(
                    r.lag_p99_ms is not None and r.lag_p99_ms - r.skew_ms < SETTLED_LAG_MS for r in latest.values())

            async with lags(self.bootstraps[region]) as tail:
                if await tail.until(settled, timeout) is None:
                    raise TimeoutError(f"the lag into {region} did not settle within {timeout:.0f}s: {latest}")

        await asyncio.gather(*map(healthy_seen_by, self.brokers))
        await asyncio.gather(*map(settled_at, self.brokers))


def _stop_together(procs: Iterable[subprocess.Popen]) -> None:
    """SIGTERM every one of ``procs`` at once (SIGKILL after 10 s) and wait for them (an agent takes 3-4 s)."""
    procs = list(procs)
    with ThreadPoolExecutor(max(1, len(procs))) as pool:
        list(pool.map(lambda proc: terminate(proc.pid, timeout=10) and proc.wait(10), procs))


@contextlib.contextmanager
def mesh(home: Path, names: list[str] = NAMES, latency: dict[str, float] | None = None,
         agent_env: dict[str, str] | None = None) -> Iterator[Mesh]:
    """Brokers in namespaces (``latency``: regions behind a WAN proxy, one-way seconds; 0 = a proxy
    that does not delay yet) routed to each other, one MirrorMaker 2 per region in its namespace
    and an agent per region; all stopped and removed on the way out."""
    with ThreadPoolExecutor(len(names)) as pool, lab() as made:  # the lab closes first, with the pool
        # the brokers start together (each mostly waits for its JVM and its quorum), and so do the
        # MirrorMakers (each waits for the others' heartbeats); they stop together
        started = pool.map(lambda name: made.broker(home / name, (latency or {}).get(name)), names)
        brokers = dict(zip(names, started))
        made.route()
        mirrors = {name: MirrorMaker(Settings(home=home), home / f"mirror-{name}", targets=[name],
                                     netns=broker.link.ns) for name, broker in brokers.items()}
        running = Mesh(made, home, brokers, mirrors, dict(agent_env or {}))
        made.defer(lambda: list(pool.map(lambda mirror: mirror.stop(timeout=10), mirrors.values())))
        made.defer(lambda: _stop_together(running.agents.values()))  # the agents running then (reset restarts dead ones)
        list(pool.map(running.start_mirror, names))
        for name in names:
            running.start_agent(name)
        yield running
