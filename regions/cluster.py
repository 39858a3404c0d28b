"""A set of named local Kafka clusters, one per region, with MirrorMaker 2 between them.

Each region is a single-node KRaft cluster (:class:`core.kafka.local_broker.LocalKafka`) in its own home
``<home>/regions/<name>/`` with its own ports and data; MirrorMaker 2 (:mod:`regions.mirror`)
runs beside them in ``<home>/regions/mirror/``. The set's names are recorded in
``<home>/regions/regions.json``, so ``stop`` and ``status`` need no arguments. The brokers are
tuned for fast recovery after a crash (``broker.session.timeout.ms=3000``,
``broker.heartbeat.interval.ms=500``: ready in ~7.5 s instead of ~17 s after a SIGKILL).

``m1 regions start|stop|status`` (``regions.cli``) drive it.

>>> RegionSet.check_names(["eu-west", "us-east"])
['eu-west', 'us-east']
>>> RegionSet.check_names(["eu-west", "eu-west"])
Traceback (most recent call last):
...
ValueError: region names must be distinct, got ['eu-west', 'eu-west']
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from core.kafka.local_broker import BrokerState, LocalKafka
from core.settings import Settings
from regions.mirror import MirrorMaker, MirrorState

#: Server properties of every region's broker (after a SIGKILL the restarted broker is fenced
#: and re-registered within seconds).
REGION_BROKER_PROPERTIES = {
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
}
#: Java heap of a region's broker: several clusters share one machine.
REGION_BROKER_HEAP = "-Xmx384m"
DEFAULT_REGIONS = ["eu-west", "us-east", "ap-south"]
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


@dataclass(frozen=True)
class RegionStatus:
    """One region's broker: its state when running, else ``None``."""

    name: str
    broker: BrokerState | None


class RegionSet:
    """The regions recorded under ``<settings.home>/regions`` (or ``names`` for a new set)."""

    def __init__(self, settings: Settings, names: list[str] | None = None):
        self.settings = settings
        self.dir = (settings.home / "regions").resolve()
        self.names = self.check_names(names or self.recorded_names() or DEFAULT_REGIONS)

    @staticmethod
    def check_names(names: list[str]) -> list[str]:
        """``names`` if they are distinct valid region names (lower case, digits, ``-``)."""
        if len(set(names)) != len(names):
            raise ValueError(f"region names must be distinct, got {names}")
        for name in names:
            if not _NAME.match(name):
                raise ValueError(f"bad region name {name!r}: lower-case letters, digits and '-', starting with a letter")
        return list(names)

    @property
    def names_file(self) -> Path:
        return self.dir / "regions.json"

    def recorded_names(self) -> list[str]:
        """The names of the set last started here, or ``[]``."""
        try:
            return list(json.loads(self.names_file.read_text()))
        except (OSError, ValueError):
            return []

    def add_region(self, name: str) -> None:
        """Record region ``name`` with the set's recorded ones (``m1 kafka start --region``), so that
        ``m1 regions start|status|stop`` include it."""
        names = self.recorded_names()
        RegionSet(self.settings, names if name in names else [*names, name]).record()

    def record(self) -> None:
        """Record the set's names under ``<home>/regions``."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.names_file.write_text(json.dumps(self.names))

    def kafka(self, name: str) -> LocalKafka:
        """The local broker of region ``name``."""
        return LocalKafka(self.settings, home=self.dir / name, extra_properties=REGION_BROKER_PROPERTIES,
                          heap=REGION_BROKER_HEAP)

    @property
    def mirror(self) -> MirrorMaker:
        return MirrorMaker(self.settings, self.dir / "mirror")

    @property
    def watchdog_file(self) -> Path:
        """Where ``m1 regions watchdog`` keeps its status (regions/watchdog.py)."""
        return self.dir / "mirror" / "watchdog.json"

    def bootstraps(self) -> dict[str, str]:
        """host:port of every region's broker as last started (running or not)."""
        found = {name: self.kafka(name).recorded_bootstrap() for name in self.names}
        return {name: bootstrap for name, bootstrap in found.items() if bootstrap}

    def start_brokers(self, timeout: float = 120.0) -> dict[str, BrokerState]:
        """Start (or reuse) every region's broker, in parallel; returns their states."""
        self.record()
        self.kafka(self.names[0]).fetch()  # one download for all
        with ThreadPoolExecutor(len(self.names)) as pool:
            states = list(pool.map(lambda name: self.kafka(name).start(timeout=timeout), self.names))
        return dict(zip(self.names, states, strict=True))

    def start(self, timeout: float = 120.0) -> tuple[dict[str, BrokerState], MirrorState]:
        """Start the brokers, then MirrorMaker 2 between all of them (active-active full mesh)."""
        brokers = self.start_brokers(timeout)
        mirror = self.mirror.start({name: state.bootstrap for name, state in brokers.items()}, timeout=timeout)
        return brokers, mirror

    def stop(self) -> list[str]:
        """Stop MirrorMaker 2, then every broker; returns what was running (``mirror``, names)."""
        stopped = ["mirror"] if self.mirror.stop() else []
        with ThreadPoolExecutor(len(self.names)) as pool:
            flags = list(pool.map(lambda name: self.kafka(name).stop(), self.names))
        return stopped + [name for name, flag in zip(self.names, flags, strict=True) if flag]

    def status(self) -> list[RegionStatus]:
        """Every region's broker state (``None``: not running or not answering)."""
        return [RegionStatus(name, self.kafka(name).status()) for name in self.names]
