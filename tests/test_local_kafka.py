"""The project's own broker: idempotent start, status, and a worker that rides out a broker restart."""

from __future__ import annotations

import base64
import time
from pathlib import Path

from core.kafka.local_broker import LocalKafka, cluster_id
from core.settings import Settings
from tests.helpers import isolated_settings, produce, scalar, start_worker, wait_for
from tests.test_metrics_path import points


def test_second_start_reuses_the_running_broker(kafka_bootstrap: str, tmp_path_factory) -> None:
    # The session broker's home is the parent of its "kafka" dir; find it through a fresh handle.
    broker = LocalKafka(Settings(home=_session_home(kafka_bootstrap, tmp_path_factory)))
    state = broker.status()
    assert state is not None and state.bootstrap == kafka_bootstrap
    started = time.monotonic()
    assert broker.start() == state
    assert time.monotonic() - started < 5.0  # no second JVM: it answered from the recorded state


def _session_home(bootstrap: str, tmp_path_factory) -> Path:
    for candidate in tmp_path_factory.getbasetemp().glob("kafka*"):
        broker = LocalKafka(Settings(home=candidate))
        state = broker.status()
        if state is not None and state.bootstrap == bootstrap:
            return candidate
    raise AssertionError("the session broker's home was not found")


def test_status_without_broker_is_none_and_stop_is_a_no_op(tmp_path: Path) -> None:
    broker = LocalKafka(Settings(home=tmp_path))
    assert broker.status() is None
    assert broker.stop() is False


def test_worker_survives_a_broker_restart(tmp_path: Path) -> None:
    broker = LocalKafka(Settings(home=tmp_path / "broker"))
    bootstrap = broker.start().bootstrap
    try:  # the broker goes even if the worker never comes up
        settings = isolated_settings(tmp_path, bootstrap)
        worker = start_worker(settings)
        try:
            data = points("restart", 4000, series=4)
            produce(settings, data[:2000])
            assert wait_for(lambda: scalar(settings, "SELECT count() FROM metric_points FINAL") >= 2000)
            broker.stop()
            assert broker.status() is None
            assert broker.start().bootstrap == bootstrap  # same port after the restart
            produce(settings, data[2000:])
            assert wait_for(lambda: scalar(settings, "SELECT count() FROM metric_points FINAL") >= 4000, timeout=120)
            assert scalar(settings, "SELECT count() FROM metric_points FINAL") == 4000
            assert worker.proc is not None and worker.proc.poll() is None
        finally:
            worker.stop()
    finally:
        broker.stop()


def test_cluster_ids_are_valid_for_the_storage_tool() -> None:
    """22 URL-safe base64 characters (16 bytes), never starting with '-' (read as an option)."""
    ids = {cluster_id() for _ in range(5000)}  # ~78 would start with '-' without the guard
    assert len(ids) == 5000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
