"""Region agents as child processes (``m1 regions agent --region X``): for the demo, the benchmark
and the tests. Each child gets the caller's settings as ``M1_*`` variables, with its region's
cluster (``M1_REGION_BOOTSTRAPS`` or the local set's) as ``M1_KAFKA_BOOTSTRAP``, and writes its log
to a file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from core.kafka.local_broker import terminate
from core.settings import Settings
from core.child_env import settings_env
from regions.agent import region_bootstraps


class AgentProcess:
    """``region``'s agent in a child process."""

    def __init__(self, settings: Settings, region: str, log_path: Path):
        self.settings = settings
        self.region = region
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> AgentProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        bootstrap = region_bootstraps(self.settings)[self.region]
        env = settings_env(self.settings.model_copy(update={"kafka_bootstrap": bootstrap}))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "m1.cli", "regions", "agent", "--region", self.region, "--loglevel", "info"],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (a clean stop), SIGKILL after ``timeout``."""
        if self.proc is not None and terminate(self.proc.pid, timeout):
            self.proc.wait()


def start_agents(settings: Settings, regions: list[str], log_dir: Path) -> list[AgentProcess]:
    """One agent per region, started."""
    return [AgentProcess(settings, region, log_dir / f"agent-{region}.log").start() for region in regions]


def stop_agents(agents: list[AgentProcess]) -> None:
    for agent in agents:
        agent.stop()
