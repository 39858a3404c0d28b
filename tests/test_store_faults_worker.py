"""Store faults in a real worker process: a batch its store rejects is dead-lettered with the
engine's reason, and the stream moves on. (A module of its own: the test opens the worker's chdb
directory before the worker starts, and a process opens one chdb directory at a time.)"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable

from core.settings import Settings
from m1.query_client import run_query
from schemas.events import MetricPoint, encode
from sinks.clickhouse import Store, connect
from tests.helpers import produce, read_json, scalar, start_worker, wait_for

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def test_the_worker_dead_letters_a_batch_its_store_rejects_and_moves_on(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(store_retry_attempts=2, store_retry_base_seconds=0.05)
    store = Store(connect(settings))  # before the worker owns it: a constraint that refuses the poison
    store.migrate()
    store.command("ALTER TABLE metric_points ADD CONSTRAINT test_poison CHECK value < 1e300")
    store.close()
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    points = [MetricPoint(T0 + i, tenant, "eu-west-1", "api", "latency_ms", 1e308 if i == 5 else 100.0 + i % 7, {})
              for i in range(40)]
    records = [(p.series_key.encode(), encode(p)) for p in points]
    worker = start_worker(settings)
    try:
        produce(settings, records[:10])
        assert read_json(settings, settings.topic_dead_letter, lambda got: any(g["offset"] == 5 for g in got))
        produce(settings, records[10:])
        later = f"SELECT count() FROM metric_points FINAL WHERE tenant = '{tenant}' AND ts >= toDateTime64({T0 + 10}, 3)"
        assert wait_for(lambda: scalar(settings, later) == 30)  # the stream moved on
        in_table = run_query(settings, f"SELECT offset, reason FROM dead_letters FINAL WHERE topic = '{settings.topic_metrics}'").rows
        stored = {r[0] for r in run_query(
            settings, f"SELECT toUnixTimestamp(ts) - {int(T0)} FROM metric_points FINAL WHERE tenant = '{tenant}'").rows}
    finally:
        worker.stop()
    letters = read_json(settings, settings.topic_dead_letter, lambda got: len(got) >= len(in_table))
    [reason] = {letter["reason"] for letter in letters}
    assert reason.startswith("store: Code: 469") and "VIOLATED_CONSTRAINT" in reason
    dead = {letter["offset"] for letter in letters}
    assert 5 in dead and all(base64.b64decode(g["payload_b64"]) == records[g["offset"]][1] for g in letters)
    assert sorted(offset for offset, _ in in_table) == sorted(dead) and {r for _, r in in_table} == {reason}
    assert stored == set(range(40)) - dead  # every record stored or dead-lettered with its bytes
