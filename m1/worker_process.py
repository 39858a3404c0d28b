"""Run ``m1 worker`` as a child process: for the demo, the benchmark and the tests.

The child gets the caller's settings as ``M1_*`` environment variables, so it uses
the same broker, topics, store and web port.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from core.child_env import settings_env
from m1.query_client import worker_is_up
from core.settings import Settings




class WorkerProcess:
    """A pipeline worker (``role``: see ``m1 worker --help``) in a child process, with its log in a file."""

    def __init__(self, settings: Settings, log_path: Path, role: str = "all"):
        self.settings = settings
        self.log_path = log_path
        self.role = role
        self.proc: subprocess.Popen | None = None
        self._log_start = 0  # where this start's output begins in the log

    def is_up(self) -> bool:
        """Whether the child's API answers ``GET /v1/health`` (a scorer, which serves none: whether
        Faust logged that the worker is ready)."""
        if self.role == "scorer":
            return self.log_path.exists() and b"Ready" in self.log_path.read_bytes()[self._log_start:]
        return worker_is_up(self.settings, timeout=0.5)

    def start(self, timeout: float = 60.0) -> WorkerProcess:
        """Start the child and wait until it is up (:meth:`is_up`)."""
        return self.launch().wait_up(timeout)

    def launch(self) -> WorkerProcess:
        """Start the child without waiting (:meth:`wait_up` waits): several children can start at once."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "m1.cli", "worker", "--loglevel", "info", "--role", self.role],
                env=settings_env(self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def wait_up(self, timeout: float = 60.0) -> WorkerProcess:
        """Wait until the launched child is up; kill it if it is not within ``timeout`` seconds."""
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while not self.is_up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the worker exited with {self.proc.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the worker did not come up within {timeout:.0f}s; see {self.log_path}")
            time.sleep(0.3)
        return self

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop gracefully (SIGTERM, SIGKILL after ``timeout``); returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int | None:
        """SIGKILL: the crash the pipeline must survive."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()
