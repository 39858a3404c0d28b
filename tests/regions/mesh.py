"""Regions whose brokers live in network namespaces (tests/regions/netns.py), with MirrorMaker 2 and
one region agent per region (``m1 regions agent``) in the root namespace, and readers of what the
agents publish. Used by the partition tests and scripts/bench_failover.py.

Topology: the root namespace is the "internet". Each region's broker sits behind its own link;
MirrorMaker 2 and every agent reach the brokers over those links, so cutting a region's link
(``mesh.brokers[name].link.cut()``) partitions the region from everyone while its broker keeps
running, and killing its broker (:meth:`Mesh.kill_broker`) is a crash. A region started with a
``latency`` is reached by everyone through a WAN proxy (``mesh.brokers[name].proxy``).

:class:`Tail` reads one topic of one cluster from the beginning, decoded, and waits for a record
that satisfies a predicate: the failover event of a region, a routing change, a lag report.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import msgspec
from aiokafka import AIOKafkaConsumer

from m1.kafka_local import _pid_alive, terminate
from m1.settings import Settings
from regions.health import HealthState, RegionView
from regions.lag import RegionLag, decode_lag
from regions.mirror import MirrorMaker
from regions.routing import Route
from regions.verdict import decode_view
from schemas.events import RegionEvent
from tests.regions.netns import Lab, NetnsBroker, lab, track

NAMES = ["eu-west", "us-east", "ap-south"]
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
            batches = await self._consumer.getmany(timeout_ms=min(500, max(1, int((deadline - time.monotonic()) * 1000))))
            for records in batches.values():
                for record in records:
                    try:
                        item = self.decode(record.value)
                    except (msgspec.MsgspecError, ValueError):
                        continue
                    self.seen.append(item)
                    if predicate(item):
                        return item
        return None


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
    mirror: MirrorMaker
    agent_env: dict[str, str] = field(default_factory=dict)
    agents: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def bootstraps(self) -> dict[str, str]:
        return {name: broker.bootstrap for name, broker in self.brokers.items()}

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
        self.lab.defer(lambda: terminate(proc.pid, timeout=10) and proc.wait(10))

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
        """Stop MirrorMaker 2 and start it again between the same clusters."""
        self.mirror.stop(timeout=10)
        track(self.mirror.start(self.bootstraps, timeout=300).pid)

    def broker_alive(self, region: str) -> bool:
        return _pid_alive(self.brokers[region].kafka._recorded().pid)

    async def ready(self, timeout: float = 180.0) -> None:
        """Wait until every agent publishes a view with every region healthy."""
        began = time.time()
        for region, bootstrap in self.bootstraps.items():
            async with views(bootstrap) as tail:
                view = await tail.until(lambda v: v.at >= began and set(v.states) == set(self.brokers) and all(
                    state is HealthState.HEALTHY for state in v.states.values()), timeout)
            if view is None:
                raise TimeoutError(f"region {region}'s agent did not see every region healthy within {timeout:.0f}s; "
                                   f"see {self.home}/agent-{region}.log")


@contextlib.contextmanager
def mesh(home: Path, names: list[str] = NAMES, latency: dict[str, float] | None = None,
         agent_env: dict[str, str] | None = None) -> Iterator[Mesh]:
    """Brokers in namespaces (``latency``: regions behind a WAN proxy, one-way seconds; 0 = a proxy
    that does not delay yet), MirrorMaker 2 between them and an agent per region; all stopped and
    removed on the way out."""
    with lab() as made:
        brokers = {name: made.broker(home / name, (latency or {}).get(name)) for name in names}
        mirror = MirrorMaker(Settings(home=home), home / "mirror")
        made.defer(lambda: mirror.stop(timeout=10))
        track(mirror.start({name: broker.bootstrap for name, broker in brokers.items()}, timeout=300).pid)
        running = Mesh(made, home, brokers, mirror, dict(agent_env or {}))
        for name in names:
            running.start_agent(name)
        yield running

