"""Every command of ``m1`` answers --help; ``m1 query`` and ``m1 traces bottlenecks`` work against a running
worker's API with the key in M1_API_KEY; ``m1 api`` serves the API without a worker."""

from __future__ import annotations

import subprocess
import sys
from functools import partial

import pytest
from pydantic import SecretStr
from typer._click import Context
from typer.main import get_command
from typer.testing import CliRunner

from m1.cli import app
from m1.query_client import QueryError, run_query, worker_is_up
from core.settings import Settings
from core.child_env import settings_env
from tests.helpers import add_tenant, isolated_settings, m1_in_process, new_key, start_worker, wait_for
from traces.cli import bottlenecks_from_worker


def command_paths(command=None, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command's path, the lazily imported ones too (m1.lazy_commands)."""
    command = command or get_command(app)
    paths = [prefix]
    if hasattr(command, "list_commands"):
        ctx = Context(command)
        for name in command.list_commands(ctx):
            paths += command_paths(command.get_command(ctx, name), prefix + (name,))
    return paths


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "m1")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    out = CliRunner().invoke(app, [*path, "--help"], prog_name="m1")
    assert out.exit_code == 0, out.output
    assert f"Usage: m1 {' '.join(path)}".rstrip() in out.output


def test_the_installed_command_answers_help() -> None:
    out = subprocess.run([sys.executable, "-m", "m1.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout


def m1(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``m1 ARGS`` in a child process with ``settings`` (and ``env``) as its environment; wide output."""
    return subprocess.run([sys.executable, "-m", "m1.cli", *args], capture_output=True, text=True,
                          env={**settings_env(settings), "COLUMNS": "200", **env})


def test_query_goes_through_the_running_worker(tmp_path, kafka_bootstrap: str) -> None:
    settings = isolated_settings(tmp_path, kafka_bootstrap)
    worker = start_worker(settings)  # holds the chdb directory: a direct open would fail
    acme = new_key(settings, "acme", ["analyst"])
    try:
        query = partial(m1_in_process, settings, "query")  # the worker is up: m1 query asks its API
        ok = query("SELECT name FROM schema_migrations ORDER BY name")
        assert ok.exit_code == 0 and "001_metrics.sql" in ok.stdout
        refused = query("DROP TABLE metric_points")
        assert refused.exit_code == 2 and "only" in refused.stdout
        anonymous = query("SELECT 1", M1_API_KEY="")
        assert anonymous.exit_code == 2 and "401" in anonymous.stdout and "M1_API_KEY" in anonymous.stdout
        own = query("--tenant", "acme", "SELECT 41 + 1", M1_API_KEY=acme)
        assert own.exit_code == 0 and "42" in own.stdout
        everyone = query("SELECT 1", M1_API_KEY=acme)  # every tenant's rows: platform-admin only
        assert everyone.exit_code == 2 and "403" in everyone.stdout
        # m1 traces bottlenecks tries the store first, and m1 api opens it: children
        report = m1(settings, "traces", "bottlenecks", "-s", "frontend", "--tenant", "acme")
        assert report.returncode == 0 and "0 traces" in report.stdout
        untenanted = m1(settings, "traces", "bottlenecks", "-s", "frontend")
        assert untenanted.returncode == 2 and "--tenant is required" in untenanted.stdout
        second = m1(settings, "api")  # the worker holds the store and serves the API already
        assert second.returncode == 2 and "cannot open the store" in second.stdout
        assert "Traceback" not in second.stdout + second.stderr
    finally:
        worker.stop()


def test_api_command_serves_the_store_no_worker_holds(tmp_path) -> None:
    settings = isolated_settings(tmp_path, "127.0.0.1:1")  # no broker: the standalone API needs none
    server = subprocess.Popen([sys.executable, "-m", "m1.cli", "api"], env=settings_env(settings),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: server.poll() is not None or worker_is_up(settings), timeout=60)
        assert server.poll() is None, "m1 api exited"
        names = [row[0] for row in run_query(settings, "SELECT name FROM schema_migrations ORDER BY name").rows]
        assert "001_metrics.sql" in names  # migrated by m1 api
        with pytest.raises(QueryError) as refused:
            run_query(settings.model_copy(update={"api_key": SecretStr("")}), "SELECT 1")
        assert refused.value.status == 401
        add_tenant(settings, "acme")
        assert bottlenecks_from_worker(settings, "acme", "frontend", 900).traces == 0  # runs there, no traces yet
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0


def test_query_explains_a_store_another_process_holds(tmp_path) -> None:
    env = {**settings_env(isolated_settings(tmp_path, "127.0.0.1:1")), "M1_HOME": str(tmp_path)}
    holder = subprocess.Popen(  # a process other than a worker holds the data directory
        [sys.executable, "-c", "import sys\nfrom core.settings import Settings\nfrom sinks.clickhouse import "
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
