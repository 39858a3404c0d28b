"""The ClickHouse store on embedded chdb: migrations, idempotent replays, read-only queries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from m1.settings import Settings
from sinks.clickhouse import Store, connect
from streams.metrics_pipeline import MetricsPipeline, Record
from schemas.events import MetricPoint, encode


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = Store(connect(Settings(home=tmp_path_factory.mktemp("store"))))
    store.migrate()
    yield store
    store.close()  # chdb: one data directory per process at a time


def test_migrations_apply_once_and_are_recorded(store: Store) -> None:
    first = store.query("SELECT name FROM schema_migrations FINAL ORDER BY name").rows
    assert store.migrate() == [name for (name,) in first]
    assert ("001_metrics.sql",) in first
    assert store.query("SELECT count() FROM schema_migrations").rows == [(len(first),)]


def records(tenant: str, n: int, first_offset: int = 0) -> list[Record]:
    out = []
    for i in range(n):
        point = MetricPoint(1_767_225_600.0 + i, tenant, "eu", "api", "rps", float(i % 10), {"host": "a"})
        out.append(Record("metrics", 0, first_offset + i, point.series_key.encode(), encode(point)))
    return out


def test_replayed_batch_is_counted_once(store: Store, tmp_path: Path) -> None:
    pipeline = MetricsPipeline(Settings(home=tmp_path), store)
    batch = records("replay", 400) + [Record("metrics", 0, 400, None, b"{broken")]
    first = pipeline.process(batch)
    again = pipeline.process(batch)  # what Kafka redelivers after a crash before the commit
    assert first.stored == again.stored == 400
    assert len(first.dead_letters) == 1 and "malformed JSON" in first.dead_letters[0].reason
    count = "SELECT count() FROM metric_points {} WHERE tenant = 'replay'"
    assert store.query(count.format("")).rows == [(800,)]  # both copies on disk until a merge
    assert store.query(count.format("FINAL")).rows == [(400,)]
    assert store.query("SELECT count() FROM dead_letters FINAL WHERE offset = 400").rows == [(1,)]


def test_remote_queries_are_read_only(store: Store) -> None:
    assert store.read_only_query("SELECT 1 AS one").rows == [(1,)]
    for statement in ("DROP TABLE metric_points", "INSERT INTO anomalies VALUES ()", "  ", "ALTER TABLE x"):
        with pytest.raises(ValueError, match="only .* statements are allowed"):
            store.read_only_query(statement)
