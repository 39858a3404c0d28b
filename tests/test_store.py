"""The ClickHouse store on embedded chdb: migrations, idempotent replays, guarded and limited queries,
reads that do not wait for inserts."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from core.settings import Settings
from models.bank import STATE_VERSION
from sinks.clickhouse import STRING_MAP_TYPE, TS_TYPE, QueryFailed, Store, connect, string_maps
from sinks.model_state import CHUNK_BYTES, insert_rows, row_binary
from sinks.sql_guard import QueryRefused
from streams.metrics_pipeline import MetricsPipeline, Record
from schemas.events import MetricPoint, encode

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


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
    assert replayed.bank.apply(series, 0, lambda model: replayed.bank.export(model).learned) == 300
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
    assert first.checkpoint() == 1 and first.bank.state_key == f"ensemble@{STATE_VERSION}"
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


def two_tenants(store: Store, n: int = 300) -> None:
    """``n`` points of tenant acme and ``n`` of globex, once per module."""
    if store.query("SELECT count() FROM metric_points WHERE tenant IN ('acme', 'globex')").rows != [(0,)]:
        return
    rows = [(tenant, i) for tenant in ("acme", "globex") for i in range(n)]
    store.insert("metric_points", {
        "ts": pa.array([1_767_225_600_000 + 1000 * i for _, i in rows], type=TS_TYPE), "tenant": [t for t, _ in rows],
        "region": ["eu"] * len(rows), "service": ["api"] * len(rows), "metric": ["rps"] * len(rows),
        "series": [f"{t}|s{i % 7}" for t, i in rows], "value": [float(i) for _, i in rows]})


@pytest.fixture(scope="module")
def limited(store: Store) -> Iterator[Store]:
    """The same store under small query limits (a second set of clients on the same data)."""
    home = Path(store.client.uri.removeprefix("chdb://")).parent
    limited = Store(connect(Settings(home=home, query_max_seconds=2, query_max_rows=5, query_max_memory_bytes=20 << 20)))
    two_tenants(limited)
    yield limited
    limited.close()


def test_admin_and_tenant_queries_run_only_selects(store: Store) -> None:
    assert store.admin_query("SELECT 1 AS one").rows == [(1,)]
    for statement in ("DROP TABLE metric_points", "INSERT INTO anomalies VALUES ()", "ALTER TABLE x DELETE WHERE 1",
                      "SHOW TABLES", "EXPLAIN SELECT 1", "SELECT 1; DROP TABLE metric_points"):
        for run in (store.admin_query, lambda sql: store.tenant_query(sql, "acme")):
            with pytest.raises(QueryRefused, match="only a SELECT|one statement"):
                run(statement)
    with pytest.raises(QueryRefused, match="empty"):
        store.admin_query("  ")
    assert store.query("SELECT count() FROM system.tables WHERE database = 'm1' AND name = 'metric_points'").rows == [(1,)]


@pytest.mark.parametrize("sql", [
    "SELECT * FROM file('/etc/hostname', 'LineAsString')",
    "SELECT * FROM FILE /**/ ('/etc/hostname', 'LineAsString')",
    "SELECT file('/etc/hostname')",  # the scalar function reads host files even with readonly=1
    "select * from URL ('http://127.0.0.1:9/x', 'CSV', 'a String')",
    "SELECT count() FROM remote('127.0.0.1', system.one)",
    "SELECT * FROM system.one",
    "SELECT number FROM numbers(10)",
    "SELECT COLUMNS('tenant') APPLY(file) FROM metric_points",
    "SELECT 1 INTO OUTFILE '/tmp/m1-outfile.csv'",
])
def test_queries_stay_inside_the_store(store: Store, sql: str) -> None:
    """Even a read-only query could read the worker's files, call URLs or write a file."""
    with pytest.raises(QueryRefused, match="not allowed"):
        store.admin_query(sql)


def test_a_tenant_query_sees_only_its_tenants_rows(store: Store) -> None:
    two_tenants(store)
    sql = "SELECT tenant, count() FROM metric_points WHERE tenant IN ('acme', 'globex') GROUP BY tenant ORDER BY tenant"
    assert store.admin_query(sql).rows == [("acme", 300), ("globex", 300)]
    assert store.tenant_query(sql, "acme").rows == [("acme", 300)]
    assert store.tenant_query(sql.replace("FROM metric_points", "FROM m1.metric_points"), "globex").rows == [("globex", 300)]
    with pytest.raises(QueryRefused, match="holds no tenant's own rows"):
        store.tenant_query("SELECT count() FROM model_state", "acme")
    with pytest.raises(ValueError, match="invalid tenant name"):
        store.tenant_query("SELECT 1", "acme' OR 1")


def test_result_rows_are_bounded_also_after_a_union(limited: Store) -> None:
    assert len(limited.tenant_query("SELECT value FROM metric_points LIMIT 5", "acme").rows) == 5
    # a SETTINGS clause appended to a bare UNION/EXCEPT belongs to its last SELECT: the engine then skipped the limit
    for sql in ("SELECT value FROM metric_points", "SELECT value FROM metric_points UNION ALL SELECT 1",
                "SELECT value FROM metric_points EXCEPT SELECT 1"):
        with pytest.raises(QueryFailed, match="Limit for result exceeded"):
            limited.tenant_query(sql, "acme")
        with pytest.raises(QueryFailed, match="Limit for result exceeded"):
            limited.admin_query(sql)


def test_time_and_memory_limits_stop_a_query(limited: Store) -> None:
    heavy = "SELECT count() FROM metric_points AS a, metric_points AS b, metric_points AS c, metric_points AS d"
    with pytest.raises(QueryFailed, match="Timeout exceeded"):
        limited.tenant_query(heavy, "acme")
    with pytest.raises(QueryFailed, match="memory limit exceeded"):
        limited.admin_query("SELECT length(groupArray(range(100000))) FROM metric_points")


def test_a_query_cannot_lift_its_limits_even_past_the_guard(limited: Store) -> None:
    """Under readonly=1 the engine itself refuses a SETTINGS clause (the guard refuses it first)."""
    for clause in ("max_result_rows = 1000", "readonly = 0", "additional_table_filters = {'m1.metric_points': '1'}",
                   "max_execution_time = 0"):
        sql = f"SELECT value FROM metric_points SETTINGS {clause}"
        with pytest.raises(QueryRefused, match="SETTINGS"):
            limited.tenant_query(sql, "acme")
        with pytest.raises(Exception, match="Cannot modify .* in readonly mode"):
            limited.query(sql, settings=limited.limits.settings())


def test_a_long_read_does_not_delay_an_insert(limited: Store) -> None:
    """The read runs until its time limit; the insert must complete while it still runs."""
    inserted, outcome = threading.Event(), {}

    def read() -> None:
        with pytest.raises(QueryFailed, match="Timeout exceeded"):
            limited.admin_query("SELECT count(), 'longread' FROM metric_points AS a, metric_points AS b, "
                                "metric_points AS c, metric_points AS d")
        outcome["inserted while the read ran"] = inserted.is_set()

    reader = threading.Thread(target=read)
    reader.start()
    while not limited.query("SELECT count() FROM system.processes WHERE query LIKE '%''longread''%' "
                            "AND query NOT LIKE '%system.processes%'").rows[0][0]:
        assert reader.is_alive()
    limited.insert("metric_points", {"ts": pa.array([0], type=TS_TYPE), "tenant": ["concurrent"], "region": ["eu"],
                                     "service": ["api"], "metric": ["rps"], "series": ["c"], "value": [1.0]})
    inserted.set()
    reader.join()
    assert outcome == {"inserted while the read ran": True}


def test_a_checkpoint_is_written_while_the_write_client_is_busy(store: Store) -> None:
    """Model state goes in on a handle of its own: a checkpoint's large insert neither waits for nor
    holds up the batches' inserts on the write client."""
    done = threading.Event()

    def write() -> None:
        insert_rows(store, "aside-test", [("s1", 0, 7, 3, b"state")])
        done.set()

    with store._lock:  # the write client is busy (a batch's insert)
        writer = threading.Thread(target=write)
        writer.start()
        assert done.wait(30), "the checkpoint waited for the write client"
    writer.join()
    assert store.query("SELECT points FROM model_state FINAL WHERE detector = 'aside-test'").rows == [(3,)]


def checkpoint_rows(count: int) -> list[tuple[str, int, int, int, bytes]]:
    """Rows a checkpoint could hold: names of any characters, and long enough for a two-byte length
    prefix, both slots, cuts past 32 bits, state of every byte value and of sizes around the prefix's
    steps (0, 127, 128, 16,384 bytes), 333 kB every seven rows."""
    sizes = [0, 1, 127, 128, 16_383, 16_384, 300_000]
    names = ["t|eu|svc|x\n\t\x00'\"\\|é🔥", "t|eu|svc|" + "x" * 130]  # any text: framed by its length
    return [(f"{names[i % 2]}{i}", i % 2, 2**33 + 7 * i, 2**40 + i, bytes(range(256)) * (sizes[i % len(sizes)] // 256)
             + bytes(sizes[i % len(sizes)] % 256)) for i in range(count)]


def test_checkpoint_rows_stream_into_model_state_byte_for_byte(store: Store) -> None:
    """A checkpoint goes in as RowBinary chunks (several here: 6.6 MB of state in 1 MiB chunks) in one
    insert, and reads back as written, whatever bytes its state holds."""
    rows = checkpoint_rows(140)
    assert sum(len(row[-1]) for row in rows) > 6 * CHUNK_BYTES
    insert_rows(store, "stream-test", iter(rows))
    stored = store.query("SELECT series, slot, cut, points, hex(state) FROM model_state FINAL "
                         "WHERE detector = 'stream-test' ORDER BY series").rows
    assert [(*row[:4], bytes.fromhex(row[4])) for row in stored] == sorted(rows)


def test_a_checkpoint_stream_reads_its_rows_as_it_goes() -> None:
    """The stream holds at most about a chunk of rows: its first chunk is out before the rows end."""
    taken = 0

    def source() -> Iterator[tuple[str, int, int, int, bytes]]:
        nonlocal taken
        for row in checkpoint_rows(140):
            taken += 1
            yield row

    chunks = row_binary("stream-test", source(), 0)
    first = next(chunks)
    assert CHUNK_BYTES <= len(first) < CHUNK_BYTES + 400_000 and taken < 140
    assert sum(map(len, chunks)) + len(first) > 6 * CHUNK_BYTES and taken == 140


def test_a_store_without_streams_gets_a_checkpoint_as_columns(store: Store) -> None:
    """A store that only takes columns (a scorer's ForwardingStore) stores the rows the stream stores."""

    class ColumnsOnly:
        def insert(self, table: str, columns: dict) -> int:
            return store.insert(table, columns)

    rows = checkpoint_rows(14)
    insert_rows(ColumnsOnly(), "columns-test", iter(rows))
    insert_rows(store, "stream-test-2", iter(rows))
    read = "SELECT series, slot, cut, points, state, updated_at > now() - 600 FROM model_state FINAL WHERE detector = {d:String} ORDER BY series"
    assert store.query(read, {"d": "columns-test"}).rows == store.query(read, {"d": "stream-test-2"}).rows
    assert len(store.query(read, {"d": "columns-test"}).rows) == 14


def test_labels_are_stored_as_sent_each_map_in_its_own_order(store: Store) -> None:
    """string_maps builds the labels column from two flat lists; it must be the column pa.array
    builds from the maps (pairs in each map's order, empty maps included) and store as such."""
    maps = [{"host": "a", "az": "1"}, {}, {"az": "1", "host": "a"}, {"ключ": "värde, \\ =", "k": ""}]
    column = string_maps(maps)
    assert column.equals(pa.array(maps, type=STRING_MAP_TYPE))
    store.command("CREATE TABLE labels_probe (n UInt8, labels Map(String, String)) ENGINE = MergeTree ORDER BY n")
    store.insert("labels_probe", {"n": pa.array(range(len(maps)), type=pa.uint8()), "labels": column})
    stored = store.query("SELECT labels FROM labels_probe ORDER BY n").rows
    assert [list(row[0].items()) for row in stored] == [list(m.items()) for m in maps]


def test_the_pipeline_stores_each_points_labels_in_the_order_it_sent_them(store: Store, tmp_path: Path) -> None:
    """A series' points share one label set; the labels column is built once a series unless a
    point lists its labels in another order, which is then stored as sent (labels_column)."""
    pipeline = MetricsPipeline(Settings(home=tmp_path), store)
    orders = [{"host": "a", "az": "1"}, {"az": "1", "host": "a"}, {"host": "a", "az": "1"}]
    points = [MetricPoint(T0 + 60 * i, "orders", "eu", "api", "latency_ms", 1.0, labels) for i, labels in enumerate(orders)]
    points += [MetricPoint(T0 + 60 * i, "orders", "eu", "api", "errors", 1.0, {"host": "b"}) for i in range(3)]
    pipeline.process([Record("metrics", 0, i, p.series_key.encode(), encode(p)) for i, p in enumerate(points)])
    stored = store.query("SELECT metric, labels FROM metric_points WHERE tenant = 'orders' ORDER BY metric DESC, ts").rows
    assert [(metric, list(labels.items())) for metric, labels in stored] == \
        [(p.metric, list(p.labels.items())) for p in points]  # latency_ms first (DESC), each in time order
