"""The metrics path end to end: real broker, real worker process, real chdb store."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator

import pytest

from core.settings import Settings
from m1.worker_process import WorkerProcess
from schemas.events import MetricPoint, encode
from m1.query_client import run_query
from tests.helpers import isolated_settings, produce, read_json, scalar, start_worker, wait_for

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def points(tenant: str, n: int, series: int = 5, start: float = T0) -> list[tuple[bytes, bytes]]:
    """``n`` valid points spread over ``series`` series, keyed by series."""
    out = []
    for i in range(n):
        p = MetricPoint(start + i // series, tenant, "eu-west-1", "api", "latency_ms", 100.0 + (i * 7) % 13,
                        {"host": f"h{i % series}"})
        out.append((p.series_key.encode(), encode(p)))
    return out


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Settings]:
    """One worker for the tests of this module; each test uses its own tenant."""
    settings = isolated_settings(tmp_path_factory.mktemp("worker"), kafka_bootstrap)
    worker = start_worker(settings)
    yield settings
    worker.stop()


def stored(settings: Settings, tenant: str, final: bool = True) -> int:
    return int(scalar(settings, f"SELECT count() FROM metric_points {'FINAL' if final else ''} WHERE tenant = '{tenant}'"))


def test_every_valid_point_is_stored_exactly_once(running: Settings) -> None:
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    produce(running, points(tenant, 3000))
    assert wait_for(lambda: stored(running, tenant) >= 3000)
    assert stored(running, tenant) == 3000
    assert stored(running, tenant, final=False) == 3000  # no crash, so not even duplicates on disk
    assert scalar(running, f"SELECT uniqExact(series) FROM metric_points WHERE tenant = '{tenant}'") == 5


def test_records_keyed_otherwise_are_rekeyed_and_stored(running: Settings) -> None:
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    produce(running, [(None, value) for _, value in points(tenant, 200)])
    assert wait_for(lambda: stored(running, tenant) >= 200)
    assert stored(running, tenant) == 200


BAD = {
    b"{not json": "malformed JSON",
    b'{"schema":"metric/1","ts":1767225600,"tenant":"x","region":"r","service":"s","metric":"m","value":"hi"}': "Expected `float`, got `str` - at `$.value`",
    b'{"schema":"metric/7","ts":1767225600,"tenant":"x","region":"r","service":"s","metric":"m","value":1}': "Invalid value 'metric/7' - at `$.schema`",
    b'{"schema":"metric/1","ts":1767225600,"tenant":"x","region":"r","service":"s","value":1}': "missing required field `metric`",
    b'{"schema":"metric/1","ts":1767225600,"tenant":"x","region":"r","service":"s","metric":"m","value":1e999}': "Number out of range - at `$.value`",
    b"{" + b" " * 70_000 + b"}": "exceeds the 65536-byte limit",
}


def test_invalid_records_are_dead_lettered_and_neighbours_stored(running: Settings) -> None:
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    good = points(tenant, 60, series=1)
    mixed: list[tuple[bytes | None, bytes]] = []
    for i, bad in enumerate(BAD):
        mixed += good[i * 10 : (i + 1) * 10] + [(good[0][0], bad)]
    produce(running, mixed)

    letters = read_json(running, running.topic_dead_letter, lambda got: len(got) >= len(BAD))
    reasons = sorted(letter["reason"] for letter in letters)
    for expected in BAD.values():
        assert any(expected in r for r in reasons), (expected, reasons)
    assert all(letter["topic"] == running.topic_metrics and letter["offset"] >= 0 for letter in letters)
    keep = running.max_payload_bytes  # the oversize record's letter keeps its head and its size
    assert {letter["payload_b64"] for letter in letters} == {base64.b64encode(b[:keep]).decode() for b in BAD}
    assert sorted(letter["payload_bytes"] for letter in letters) == sorted(len(b) for b in BAD)
    assert wait_for(lambda: stored(running, tenant) >= 60)
    assert stored(running, tenant) == 60


def test_a_record_near_the_broker_limit_is_dead_lettered_without_stalling_the_stream(running: Settings) -> None:
    """Its dead letter keeps the first ``max_payload_bytes`` and the full size: the whole record
    in base64 (4/3 larger) would exceed what the broker accepts and stop every later batch."""
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    huge = b"{" + b" " * 900_000 + b"}"
    after = points(tenant, 20, series=1)
    produce(running, [(after[0][0], huge)] + after)
    letters = read_json(running, running.topic_dead_letter,
                        lambda got: any(g["payload_bytes"] == len(huge) for g in got))
    [letter] = [g for g in letters if g["payload_bytes"] == len(huge)]
    assert "payload of 900002 bytes exceeds the 65536-byte limit" in letter["reason"]
    assert base64.b64decode(letter["payload_b64"]) == huge[: running.max_payload_bytes]
    assert wait_for(lambda: stored(running, tenant) >= 20)
    assert run_query(running, f"SELECT payload_bytes, length(payload) FROM dead_letters FINAL WHERE offset = "
                              f"{letter['offset']} AND topic = '{running.topic_metrics}'").rows == [
        (len(huge), running.max_payload_bytes)]


def test_spike_becomes_an_anomaly_event(running: Settings) -> None:
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    series = points(tenant, 300, series=1)
    spike = MetricPoint(T0 + 300, tenant, "eu-west-1", "api", "latency_ms", 500.0, {"host": "h0"})
    produce(running, series + [(spike.series_key.encode(), encode(spike))])
    anomalies = read_json(running, running.topic_anomalies, lambda got: len(got) >= 1)
    assert anomalies[0]["series"] == spike.series_key and anomalies[0]["value"] == 500.0
    assert wait_for(lambda: stored(running, tenant) >= 301)
    flagged = scalar(running, f"SELECT groupArray(value) FROM metric_points FINAL WHERE tenant = '{tenant}' AND is_anomaly = 1")
    assert flagged == [500.0]


def test_worker_killed_mid_stream_loses_nothing_and_restores_models(make_settings) -> None:
    settings = make_settings()
    tenant = "crash"
    data = points(tenant, 6000, series=4)
    worker = start_worker(settings)
    produce(settings, data[:3000])
    assert wait_for(lambda: stored(settings, tenant) >= 1000)
    models_before = wait_for(lambda: int(scalar(settings, "SELECT uniqExact(series) FROM model_state FINAL")) == 4)
    worker.kill()  # SIGKILL: no graceful shutdown, no final checkpoint
    produce(settings, data[3000:])
    worker = WorkerProcess(settings, worker.log_path).start()
    try:
        assert wait_for(lambda: stored(settings, tenant) >= 6000, timeout=90)
        assert stored(settings, tenant) == 6000
        assert models_before
        # A restored model keeps counting from its checkpoint: each series saw 1500 points (its newer version).
        restored = ("SELECT min(points) FROM (SELECT max(points) AS points FROM model_state FINAL "
                    "WHERE series LIKE 'crash|%' GROUP BY detector, series)")
        assert wait_for(lambda: int(scalar(settings, restored)) >= 1500), run_query(settings, "SELECT series, detector, points FROM model_state FINAL").rows
    finally:
        worker.stop()


def test_a_burst_of_new_series_checkpoints_early_instead_of_holding_their_state(make_settings) -> None:
    """With the timed checkpoint an hour away, series evicted from a small bank are saved (and
    their offsets committed) after the batch that evicted a tenth of ``max_series``."""
    settings = make_settings(max_series=20, snapshot_seconds=3600.0)
    worker = start_worker(settings)
    try:
        produce(settings, points("burst", 400, series=100))
        assert wait_for(lambda: stored(settings, "burst") >= 400)
        saved = "SELECT uniqExact(series) FROM model_state FINAL WHERE series LIKE 'burst|%'"
        assert wait_for(lambda: int(scalar(settings, saved)) >= 80, timeout=30)
    finally:
        worker.stop()
