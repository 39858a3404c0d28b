"""The ClickHouse store on embedded chdb: migrations, idempotent replays, read-only queries."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from m1.settings import Settings
from sinks.clickhouse import TS_TYPE, Store, connect
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
    """``n`` points one second apart, starting with the ``first_offset``-th; a spike at 350."""
    out = []
    for i in range(first_offset, first_offset + n):
        value = i % 10 + 0.3 * math.sin(1.7 * i) + (40.0 if i == 350 else 0.0)
        point = MetricPoint(1_767_225_600.0 + i, tenant, "eu", "api", "rps", value, {"host": "a"})
        out.append(Record("metrics", 0, i, point.series_key.encode(), encode(point)))
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


def test_a_batch_spanning_hundreds_of_days_is_stored(store: Store, tmp_path: Path) -> None:
    """A backfill mixes many days in one batch: more partitions than ClickHouse's default limit
    of 100 per insert, which would fail the batch on every retry."""
    pipeline = MetricsPipeline(Settings(home=tmp_path, detector="zscore"), store)
    points = [MetricPoint(1_700_000_000.0 + 86_400 * i, "backfill", "eu", "api", "rps", float(i % 5), {"host": str(i % 4)})
              for i in range(300)]
    assert pipeline.process([Record("metrics", 0, i, p.series_key.encode(), encode(p)) for i, p in enumerate(points)]).stored == 300
    assert store.query("SELECT count(), uniqExact(toDate(ts)) FROM metric_points FINAL WHERE tenant = 'backfill'").rows == [(300, 300)]


def test_a_point_stamped_far_ahead_is_dead_lettered_and_the_series_keeps_learning(store: Store, tmp_path: Path) -> None:
    pipeline = MetricsPipeline(Settings(home=tmp_path, max_future_seconds=600), store)
    now = time.time()

    def record(offset: int, ts: float) -> Record:
        point = MetricPoint(ts, "ahead", "eu", "api", "rps", 5.0, {"host": "a"})
        return Record("metrics", 0, offset, point.series_key.encode(), encode(point))

    first = pipeline.process([record(0, now - 60), record(1, now + 30 * 86400), record(2, now - 30)])
    assert first.stored == 2 and [d.offset for d in first.dead_letters] == [1]
    assert "s ahead of the worker's clock (limit M1_MAX_FUTURE_SECONDS=600)" in first.dead_letters[0].reason
    pipeline.process([record(3, now - 20)])
    assert pipeline.bank.points("ahead|eu|api|rps|host=a") == 3  # every real point was learned


def test_replayed_or_twice_forwarded_points_are_stored_again_but_learned_once(store: Store, tmp_path: Path) -> None:
    """A crash replay, or a re-keyed record forwarded twice, must not make a model learn a point twice."""
    clean = MetricsPipeline(Settings(home=tmp_path / "a"), store)
    clean.process(records("clean", 300))
    clean.process(records("clean", 100, first_offset=300))  # the next 100 points
    replayed = MetricsPipeline(Settings(home=tmp_path / "b"), store)
    first = records("replayed", 300)
    replayed.process(first)
    again = replayed.process(first[200:] + [first[250]])  # a replay, with one record forwarded twice
    assert again.stored == 101
    series = MetricPoint(0.0, "replayed", "eu", "api", "rps", 0.0, {"host": "a"}).series_key
    assert replayed.bank.apply(series, 0, lambda model: model.learned) == 300
    replayed.process(records("replayed", 100, first_offset=300))
    # the model continued exactly as if nothing had been replayed: same scores as the clean run
    # (the replayed points themselves were re-scored against the later state)
    sql = "SELECT score FROM metric_points FINAL WHERE tenant = {t:String} AND ts >= toDateTime64(1767225900, 3) ORDER BY ts"
    scores = {t: [r[0] for r in store.query(sql, {"t": t}).rows] for t in ("clean", "replayed")}
    assert len(scores["clean"]) == 100 and max(scores["clean"]) > 0.6 and scores["clean"] == scores["replayed"]


def test_state_of_another_format_version_is_not_restored(store: Store, tmp_path: Path) -> None:
    """A checkpoint an older version pickled (other attributes) must not break the new worker."""
    first = MetricsPipeline(Settings(home=tmp_path), store)  # one home: one deployment's state key
    first.process(records("upgrade", 300))
    assert first.checkpoint() == 1
    series = MetricPoint(0.0, "upgrade", "eu", "api", "rps", 0.0, {"host": "a"}).series_key
    # what an older version left: the same series under the bare detector name, unusable state
    store.insert("model_state", {"series": [series], "detector": ["ensemble"], "points": [300],
                                 "state": pa.array([b"not a pickle of today's classes"], type=pa.binary()),
                                 "updated_at": pa.array([4_102_444_800_000], type=TS_TYPE)})
    restarted = MetricsPipeline(Settings(home=tmp_path), store)
    outcome = restarted.process(records("upgrade", 100, first_offset=300))
    assert outcome.stored == 100
    assert restarted.bank.points(series) == 400  # this version's checkpoint, not the old row
    old_only = MetricsPipeline(Settings(home=tmp_path / "c"), store)
    store.insert("model_state", {"series": ["never|saved|now"], "detector": ["ensemble"], "points": [5],
                                 "state": pa.array([b"junk"], type=pa.binary()),
                                 "updated_at": pa.array([4_102_444_800_000], type=TS_TYPE)})
    old_only._restore(["never|saved|now"])
    assert old_only.bank.points("never|saved|now") == 0  # not loaded: starts afresh


def test_models_built_with_other_detector_options_are_not_restored(store: Store, tmp_path: Path) -> None:
    """A changed M1_ENSEMBLE_* setting applies to every series, not only to new ones."""
    series = MetricPoint(0.0, "reconfigured", "eu", "api", "rps", 0.0, {"host": "a"}).series_key
    first = MetricsPipeline(Settings(home=tmp_path), store)  # default options: the plain key
    first.process(records("reconfigured", 300))
    assert first.checkpoint() == 1 and first.bank.state_key == "ensemble@2"
    changed = Settings(home=tmp_path, ensemble_components=["robust", "relative_entropy"])
    restarted = MetricsPipeline(changed, store)
    restarted.process(records("reconfigured", 100, first_offset=300))
    assert restarted.bank.points(series) == 100  # started afresh with the new components
    assert restarted.checkpoint() == 1
    again = MetricsPipeline(changed.model_copy(), store)
    again._restore([series])
    assert again.bank.points(series) == 100  # the same options find their own checkpoint
    default = MetricsPipeline(Settings(home=tmp_path), store)
    default._restore([series])
    assert default.bank.points(series) == 300


def test_remote_queries_are_read_only(store: Store) -> None:
    assert store.read_only_query("SELECT 1 AS one").rows == [(1,)]
    for statement in ("DROP TABLE metric_points", "INSERT INTO anomalies VALUES ()", "  ", "ALTER TABLE x"):
        with pytest.raises(ValueError, match="only .* statements are allowed"):
            store.read_only_query(statement)


@pytest.mark.parametrize("sql", [
    "SELECT * FROM file('/etc/hostname', 'LineAsString')",
    "select * from URL ('http://127.0.0.1:9/x', 'CSV', 'a String')",
    "SELECT count() FROM remote('127.0.0.1', system.one)",
    "SELECT 1 INTO OUTFILE '/tmp/m1-outfile.csv'",
])
def test_remote_queries_stay_inside_the_store(store: Store, sql: str) -> None:
    """Even a read-only query could read the worker's files, call URLs or write a file."""
    with pytest.raises(ValueError, match="only the store's own tables can be queried here"):
        store.read_only_query(sql)


def test_remote_query_results_are_bounded_and_the_engine_is_read_only(store: Store) -> None:
    assert len(store.read_only_query("SELECT number FROM numbers(100000)").rows) == 100_000
    with pytest.raises(Exception, match="Limit for result exceeded"):
        store.read_only_query("SELECT number FROM numbers(100001)")
    with pytest.raises(Exception, match="readonly"):  # past the keyword check, the engine refuses too
        store.read_only_query("WITH 1 AS x SELECT * FROM numbers(1) SETTINGS readonly = 0")
