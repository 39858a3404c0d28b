"""Every command of ``m1`` answers --help, and ``m1 query`` works against a running worker."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.main import get_command

from m1.cli import app
from m1.worker_process import settings_env
from tests.helpers import isolated_settings, start_worker


def command_paths(command=None, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    command = command or get_command(app)
    paths = [prefix]
    for name, sub in getattr(command, "commands", {}).items():
        paths += command_paths(sub, prefix + (name,))
    return paths


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "m1")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    out = subprocess.run([sys.executable, "-m", "m1.cli", *path, "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout


def test_query_goes_through_the_running_worker(tmp_path, kafka_bootstrap: str) -> None:
    settings = isolated_settings(tmp_path, kafka_bootstrap)
    worker = start_worker(settings)  # holds the chdb directory: a direct open would fail

    def run(sql: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "m1.cli", "query", sql], capture_output=True, text=True,
                              env=settings_env(settings))

    try:
        ok = run("SELECT name FROM schema_migrations ORDER BY name")
        assert ok.returncode == 0 and "001_metrics.sql" in ok.stdout
        refused = run("DROP TABLE metric_points")
        assert refused.returncode == 2 and "only" in refused.stdout
    finally:
        worker.stop()


def test_query_explains_a_store_another_process_holds(tmp_path) -> None:
    env = {**settings_env(isolated_settings(tmp_path, "127.0.0.1:1")), "M1_HOME": str(tmp_path)}
    holder = subprocess.Popen(  # a process other than a worker holds the data directory
        [sys.executable, "-c", "import sys\nfrom m1.settings import Settings\nfrom sinks.clickhouse import "
                               "Store, connect\nstore = Store(connect(Settings()))\nprint('open', flush=True)\n"
                               "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "open"
        out = subprocess.run([sys.executable, "-m", "m1.cli", "query", "SELECT 1"], capture_output=True, text=True,
                             env=env)
        assert out.returncode == 2 and "Traceback" not in out.stdout + out.stderr
        assert "Only one process may open it at a time" in " ".join(out.stdout.split())
    finally:
        holder.communicate("", timeout=30)
