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
(``<home>/regions/mirror``); ``stop`` sends SIGTERM, then SIGKILL.

>>> text = mirror_properties({"a": "127.0.0.1:1", "b": "127.0.0.1:2"})
>>> "a->b.enabled=true" in text and "b->a.enabled=true" in text
True
>>> "b.offset.flush.interval.ms=2000" in text
True
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from m1.kafka_local import LOG4J_PROPERTIES, KafkaError, LocalKafka, _pid_alive, terminate
from m1.settings import Settings

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
    lines += [f"{name}.{key}={value}" for name in names for key, value in WORKER_SETTINGS.items()]
    return "\n".join(lines) + "\n"


class MirrorMaker:
    """Starts, checks and stops one dedicated MirrorMaker 2 process living in ``directory``."""

    def __init__(self, settings: Settings, directory: Path):
        self.settings = settings
        self.dir = directory.resolve()

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
            if running.clusters == clusters:
                return running
            self.stop()
        libs = LocalKafka(self.settings).fetch()
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "mm2.properties"
        config.write_text(mirror_properties(clusters))
        log4j = self.dir / "log4j.properties"
        log4j.write_text(LOG4J_PROPERTIES.format(log_file=self.log_file))
        cmd = ["java", HEAP, f"-Dlog4j.configuration=file:{log4j}", "-cp", f"{libs}/*", MAIN_CLASS, str(config)]
        with open(self.dir / "stdout.log", "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        state = MirrorState(pid=proc.pid, clusters=dict(clusters))
        self.state_file.write_text(json.dumps(state.__dict__))
        deadline = time.monotonic() + timeout
        while not asyncio.run(mirrored_heartbeats_everywhere(clusters)):
            if proc.poll() is not None:
                raise KafkaError(f"MirrorMaker exited with {proc.returncode}; see {self.log_file}")
            if time.monotonic() > deadline:
                raise KafkaError(f"MirrorMaker did not mirror every cluster within {timeout:.0f}s; see {self.log_file}")
            time.sleep(1.0)
        return state

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop MirrorMaker (SIGTERM, then SIGKILL after ``timeout``); ``False`` if none ran."""
        state = self._recorded()
        return state is not None and terminate(state.pid, timeout)

    def _recorded(self) -> MirrorState | None:
        try:
            return MirrorState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None


async def mirrored_heartbeats_everywhere(clusters: dict[str, str]) -> bool:
    """True when each cluster holds ``<other>.heartbeats`` for every other cluster."""
    from aiokafka.admin import AIOKafkaAdminClient

    for name, bootstrap in clusters.items():
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
