"""Kafka MirrorMaker 2 in dedicated mode between the regions' clusters, supervised like the brokers.

One java process (``org.apache.kafka.connect.mirror.MirrorMaker``, the ``connect-mirror`` jars
fetched with the broker's, heap 512 MB) replicates every ordered pair of clusters: an
active-active full mesh. The ``DefaultReplicationPolicy`` names a mirrored topic
``<source>.<topic>``; topics already carrying a region's prefix are not mirrored again (no
``b.a.x`` chains), except MirrorMaker's own ``heartbeats``, which it always follows. Heartbeats
and checkpoints are on, with short intervals so that a new topic, group or offset is picked up
within seconds (the defaults are 10 minutes). Connect worker settings only take effect with the
target cluster's prefix (``<target>.offset.flush.interval.ms``; a top-level one is ignored), and
every internal topic has replication factor 1 (single-broker clusters).

Its config, log and state (``mirror.json``: pid and the clusters) live in the directory given
(``<home>/regions/mirror``); ``stop`` sends SIGTERM, then SIGKILL. With ``targets``, the process
runs only the flows *into* those clusters (MirrorMaker's ``--clusters``): one such process per
region, placed in its target region ("consume remotely, produce locally"), is how a real
deployment runs it; ``netns`` starts it inside a network namespace (``ip netns exec``, for tests).
:mod:`regions.watchdog` restarts a process whose flows stop advancing.

>>> text = mirror_properties({"a": "127.0.0.1:1", "b": "127.0.0.1:2"})
>>> "a->b.enabled=true" in text and "b->a.enabled=true" in text
True
>>> "b.offset.flush.interval.ms=2000" in text
True
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.kafka.local_broker import LOG4J_PROPERTIES, KafkaError, LocalKafka, _pid_alive, terminate
from core.settings import Settings

MAIN_CLASS = "org.apache.kafka.connect.mirror.MirrorMaker"
HEAP = "-Xmx512m"
#: How often MirrorMaker looks for new topics and groups, emits heartbeats and checkpoints, and
#: syncs group offsets (seconds); offsets of the source connectors are flushed every 2 s.
INTERVALS = {
    "refresh.topics.interval.seconds": "2",
    "refresh.groups.interval.seconds": "2",
    "emit.heartbeats.interval.seconds": "1",
    "emit.checkpoints.interval.seconds": "2",
    "sync.group.offsets.enabled": "true",
    "sync.group.offsets.interval.seconds": "2",
    "sync.topic.configs.interval.seconds": "10",
}
#: Connect worker settings: they must carry the target cluster's prefix to take effect.
WORKER_SETTINGS = {
    "offset.flush.interval.ms": "2000",
    "offset.storage.replication.factor": "1",
    "status.storage.replication.factor": "1",
    "config.storage.replication.factor": "1",
    # Kafka's own connectors carry service manifests: no class-path scan (4-10 s each at start-up)
    "plugin.discovery": "service_load",
}
CONNECTOR_SETTINGS = {
    "replication.policy.class": "org.apache.kafka.connect.mirror.DefaultReplicationPolicy",
    "tasks.max": "1",
    "topics": ".*",
    "groups": ".*",
    "emit.heartbeats.enabled": "true",
    "emit.checkpoints.enabled": "true",
    "sync.topic.acls.enabled": "false",
    "replication.factor": "1",
    "heartbeats.topic.replication.factor": "1",
    "checkpoints.topic.replication.factor": "1",
    "offset-syncs.topic.replication.factor": "1",
}


@dataclass
class MirrorState:
    """What ``start`` recorded about the running MirrorMaker."""

    pid: int
    clusters: dict[str, str] = field(default_factory=dict)  # region -> bootstrap
    targets: list[str] | None = None  # None: every flow of the mesh
    netns: str | None = None


def mirror_properties(clusters: dict[str, str]) -> str:
    """MirrorMaker 2's configuration for a full mesh between ``clusters`` (name -> host:port)."""
    names = list(clusters)
    prefixed = "|".join(re.escape(name) for name in names)
    lines = [f"clusters={', '.join(names)}"]
    lines += [f"{name}.bootstrap.servers={bootstrap}" for name, bootstrap in clusters.items()]
    lines += [f"{src}->{dst}.enabled=true" for src in names for dst in names if src != dst]
    lines += [f"{key}={value}" for key, value in {**CONNECTOR_SETTINGS, **INTERVALS}.items()]
    lines.append(rf"topics.exclude=.*[\-\.]internal, .*\.replica, __.*, mm2-.*, (?:{prefixed})\..*")
    lines.append("groups.exclude=console-consumer-.*, connect-.*, __.*")
    lines.append(f"plugin.discovery={WORKER_SETTINGS['plugin.discovery']}")  # the driver's own scan
    lines += [f"{name}.{key}={value}" for name in names for key, value in WORKER_SETTINGS.items()]
    return "\n".join(lines) + "\n"


def flows(clusters: list[str], targets: list[str] | None = None) -> list[tuple[str, str]]:
    """The ``(source, target)`` flows of a full mesh between ``clusters``, into ``targets`` only
    when given.

    >>> flows(["a", "b", "c"], targets=["b"])
    [('a', 'b'), ('c', 'b')]
    """
    return [(src, dst) for dst in clusters if targets is None or dst in targets for src in clusters if src != dst]


class MirrorMaker:
    """Starts, checks and stops one dedicated MirrorMaker 2 process living in ``directory``: the
    whole mesh, or only the flows into ``targets``; in network namespace ``netns`` when given."""

    def __init__(self, settings: Settings, directory: Path, targets: list[str] | None = None,
                 netns: str | None = None):
        self.settings = settings
        self.dir = directory.resolve()
        self.targets = list(targets) if targets is not None else None
        self.netns = netns

    @classmethod
    def recorded(cls, settings: Settings, directory: Path) -> MirrorMaker:
        """The MirrorMaker last started in ``directory``, as it was started (targets, namespace)."""
        state = cls(settings, directory)._recorded()
        if state is None:
            raise KafkaError(f"no MirrorMaker was started in {directory}")
        return cls(settings, directory, state.targets, state.netns)

    def recorded_clusters(self) -> dict[str, str]:
        """The clusters it was last started between (``{}`` if never)."""
        state = self._recorded()
        return dict(state.clusters) if state is not None else {}

    def flows(self, clusters: list[str]) -> list[tuple[str, str]]:
        """The flows this process runs between ``clusters``."""
        return flows(clusters, self.targets)

    @property
    def state_file(self) -> Path:
        return self.dir / "mirror.json"

    @property
    def log_file(self) -> Path:
        return self.dir / "mirror.log"

    def status(self) -> MirrorState | None:
        """The running MirrorMaker's state, or ``None``."""
        state = self._recorded()
        return state if state is not None and _pid_alive(state.pid) else None

    def start(self, clusters: dict[str, str], timeout: float = 120.0) -> MirrorState:
        """Start MirrorMaker between ``clusters`` (or reuse the running one if it mirrors the same)
        and wait until every cluster holds every other one's mirrored ``heartbeats``."""
        running = self.status()
        if running is not None:
            if running.clusters == clusters and running.targets == self.targets:
                return running
            self.stop()
        libs = LocalKafka(self.settings).fetch()
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "mm2.properties"
        config.write_text(mirror_properties(clusters))
        log4j = self.dir / "log4j.properties"
        log4j.write_text(LOG4J_PROPERTIES.format(log_file=self.log_file))
        cmd = ["java", HEAP, f"-Dlog4j.configuration=file:{log4j}", "-cp", f"{libs}/*", MAIN_CLASS, str(config)]
        cmd = (["ip", "netns", "exec", self.netns] if self.netns else []) + cmd  # ip execs java: same pid
        if self.targets is not None:
            cmd += ["--clusters", *self.targets]
        with open(self.dir / "stdout.log", "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        state = MirrorState(pid=proc.pid, clusters=dict(clusters), targets=self.targets, netns=self.netns)
        self.state_file.write_text(json.dumps(state.__dict__))
        deadline = time.monotonic() + timeout
        while not asyncio.run(mirrored_heartbeats_everywhere(clusters, self.targets)):
            if proc.poll() is not None:
                raise KafkaError(f"MirrorMaker exited with {proc.returncode}; see {self.log_file}")
            if time.monotonic() > deadline:
                raise KafkaError(f"MirrorMaker did not mirror every cluster within {timeout:.0f}s; see {self.log_file}")
            time.sleep(1.0)
        return state

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop MirrorMaker (SIGTERM, then SIGKILL after ``timeout``; a stopped process is
        continued so that it can shut down cleanly); ``False`` if none ran."""
        state = self._recorded()
        if state is None or not _pid_alive(state.pid):
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.pid, signal.SIGCONT)
        return terminate(state.pid, timeout)

    def restart(self, timeout: float = 120.0, stop_timeout: float = 10.0) -> MirrorState:
        """Stop the running process (wedged or not) and start it again between the same clusters."""
        state = self._recorded()
        if state is None:
            raise KafkaError(f"no MirrorMaker was started in {self.dir}")
        self.stop(stop_timeout)
        return self.start(state.clusters, timeout)

    def _recorded(self) -> MirrorState | None:
        try:
            return MirrorState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None


async def mirrored_heartbeats_everywhere(clusters: dict[str, str], targets: list[str] | None = None) -> bool:
    """True when each cluster (of ``targets`` when given) holds ``<other>.heartbeats`` for every
    other cluster."""
    from aiokafka.admin import AIOKafkaAdminClient

    for name, bootstrap in clusters.items():
        if targets is not None and name not in targets:
            continue
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            topics = set(await admin.list_topics())
        except Exception:
            return False
        finally:
            await admin.close()
        if any(f"{other}.heartbeats" not in topics for other in clusters if other != name):
            return False
    return True
