"""Bypass search on the SQL surface (issue #9, item 8): generated SQL trying to reach another
tenant's rows or the host must be refused, and tenant queries must see exactly their tenant's rows.

Everything runs on the real chdb engine. One engine path holds two databases: ``m1`` with the
rows of tenants acme and globex, and ``acmeonly`` with acme's rows alone. A query run as acme on
``m1`` must give what the same query gives an admin on ``acmeonly`` (the oracle), and must never
show a globex value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from core.settings import Settings
from sinks.clickhouse import TS_TYPE, QueryFailed, Store, connect
from sinks.sql_guard import SCALAR_TOO, QueryRefused, parse

N_ACME, N_GLOBEX = 40, 25
EXAMPLES = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def fill(store: Store, tenants: dict[str, int]) -> None:
    """``n`` rows per tenant in metric_points, anomalies and otel_traces; globex's values are all
    ``>= 1000`` and its series and services are named after it."""
    rows = [(t, i) for t, n in tenants.items() for i in range(n)]
    ts = pa.array([1_767_225_600_000 + 60_000 * i for _, i in rows], type=TS_TYPE)
    value = [float(i + (1000 if t == "globex" else 0)) for t, i in rows]
    common = {"ts": ts, "tenant": [t for t, _ in rows], "region": ["eu"] * len(rows), "service": [f"{t}-api" for t, _ in rows],
              "metric": ["rps"] * len(rows), "series": [f"{t}|s{i % 5}" for t, i in rows], "value": value}
    store.insert("metric_points", common)
    store.insert("anomalies", {**common, "score": [0.9] * len(rows), "severity": ["warning"] * len(rows),
                               "detector": ["ensemble"] * len(rows), "detected_at": ts})
    store.insert("otel_traces", {
        "Timestamp": pa.array([1_767_225_600_000_000_000 + 1_000_000 * i for _, i in rows], type=pa.timestamp("ns")),
        "TraceId": [f"{t}{i:030d}"[:32] for t, i in rows], "SpanId": [f"{i:016d}" for _, i in rows],
        "SpanName": ["GET /"] * len(rows), "ServiceName": [f"{t}-api" for t, _ in rows],
        "ResourceAttributes": pa.array([[("tenant", t)] for t, _ in rows], type=pa.map_(pa.string(), pa.string())),
        "Duration": [int(v) for v in value]})


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Store]]:
    home = tmp_path_factory.mktemp("guard")
    mixed, oracle = (Store(connect(Settings(home=home, clickhouse_database=db))) for db in ("m1", "acmeonly"))
    for store, tenants in ((mixed, {"acme": N_ACME, "globex": N_GLOBEX}), (oracle, {"acme": N_ACME})):
        store.migrate()
        fill(store, tenants)
    yield mixed, oracle
    oracle.close()
    mixed.close()


def outcome(run: Callable[[], Any]) -> Any:
    """Sorted rows, or the kind of error (messages name the database, so they differ)."""
    try:
        return sorted(map(repr, run().rows))
    except QueryFailed:
        return "engine error"
    except QueryRefused:  # a generated text that does not parse
        return "refused"


# --- isolation: valid queries over the tenant tables, run as acme ------------------------------------

TABLES = ("metric_points", "anomalies")
#: Conditions; the last ones raise an error on a globex row: evaluated before the tenant filter, the
#: error would tell about globex's values (the engine moves WHERE conditions into PREWHERE by default).
CONDITIONS = ("1", "tenant = 'globex'", "tenant != 'acme'", "tenant IN ('acme', 'globex')", "value >= 1000",
              "NOT (tenant = 'acme')", "like(tenant, 'glob%')", "series LIKE 'globex|%'", "value < 30",
              "throwIf(value = 1010) = 0", "intDiv(1, toInt64(value) - 1010) != 7", "throwIf(tenant = 'globex') = 0",
              "value > 5 AND throwIf(series = 'globex|s1') = 0", "toDate(ts) > '2020-01-01' AND throwIf(value > 1000) = 0")
PROJECTIONS = ("count()", "sum(value)", "min(value)", "max(value)", "uniqExact(series)",
               "arraySort(groupUniqArray(tenant))", "arraySort(groupArray(series))", "countIf(tenant = 'globex')",
               "sumIf(value, tenant != 'acme')", "arraySort(groupUniqArray(service))", "sum(throwIf(value = 1010))")


@st.composite
def source(draw: st.DrawFn, depth: int = 0) -> str:
    """A FROM clause reading tenant tables, each bare or qualified with ``{db}``."""
    table = draw(st.sampled_from(TABLES))
    name = draw(st.sampled_from([table, "{db}." + table, f"`{table}`", f'"{{db}}"."{table}"']))
    options = [name, f"{name} FINAL", f"{name} AS x"]
    if depth < 2:
        inner = draw(source(depth + 1))
        cond = draw(st.sampled_from(CONDITIONS))
        options += [f"(SELECT * FROM {inner} WHERE {cond})",
                    f"{name} AS a LEFT JOIN (SELECT series, value AS v2 FROM {inner}) AS b ON a.series = b.series",
                    f"{name} WHERE series IN (SELECT series FROM {inner} WHERE {cond})",
                    f"{name} ARRAY JOIN [1, 2] AS k"]
    return draw(st.sampled_from(options))


@st.composite
def isolation_query(draw: st.DrawFn) -> str:
    projection = draw(st.sampled_from(PROJECTIONS))
    select = f"SELECT {projection} FROM {draw(source())}"
    if " WHERE " not in select:
        select += f" WHERE {draw(st.sampled_from(CONDITIONS))}"
    cond = draw(st.sampled_from(CONDITIONS))
    table = draw(st.sampled_from(TABLES))
    return draw(st.sampled_from([
        select,
        f"WITH c AS (SELECT * FROM {{db}}.{table} WHERE {cond}) SELECT {projection} FROM c",
        f"{select} UNION ALL SELECT {projection} FROM {table} WHERE {cond}",
        f"SELECT {projection}, (SELECT count() FROM {table} WHERE {cond}) FROM {table}",
        f"SELECT * FROM ({select}) EXCEPT SELECT {projection} FROM {table} WHERE 0",
        f"SELECT tenant, {projection} FROM {table} WHERE {cond} GROUP BY tenant",
        f"SELECT {projection} FROM {table} WHERE (tenant, series) IN (SELECT tenant, series FROM {table} WHERE {cond})",
    ]))


@EXAMPLES
@given(sql=isolation_query())
def test_a_tenant_query_sees_what_the_tenant_alone_would_see(stores: tuple[Store, Store], sql: str) -> None:
    mixed, oracle = stores
    seen = outcome(lambda: mixed.tenant_query(sql.format(db="m1"), "acme"))
    assert seen == outcome(lambda: oracle.admin_query(sql.format(db="acmeonly")))
    # and no value of globex's own (1000.0 to 1024.0); acme's sums reach 1560.0 (with ARRAY JOIN [1, 2])
    assert "globex" not in str(seen) and not re.search(r"\b10(?:[01]\d|2[0-4])\.0\b", str(seen))


def test_the_oracle_sees_other_tenants_rows_as_admin(stores: tuple[Store, Store]) -> None:
    """The isolation property is not vacuous: the mixed store holds globex's rows, and without the
    tenant filter the same query gives another answer."""
    mixed, _ = stores
    sql = "SELECT count(), countIf(tenant = 'globex') FROM metric_points"
    assert mixed.admin_query(sql).rows == [(N_ACME + N_GLOBEX, N_GLOBEX)]
    assert mixed.tenant_query(sql, "acme").rows == [(N_ACME, 0)]
    assert mixed.tenant_query(sql, "globex").rows == [(N_GLOBEX, N_GLOBEX)]
    otel = "SELECT count(), groupUniqArray(ResourceAttributes['tenant']) FROM otel_traces"
    assert mixed.tenant_query(otel, "acme").rows == [(N_ACME, ["acme"])]


# --- bypass attempts: every one must be refused by the guard -----------------------------------------

GAPS = ("", " ", "\t", "\n", "/**/", "/* x */", " -- c\n", "  \n\t")


@st.composite
def spelled(draw: st.DrawFn, name: str) -> str:
    """``name`` in random case, plain or quoted (backquotes, double quotes), maybe with ``\\xNN`` escapes."""
    quoting = draw(st.sampled_from(["plain", "`", '"']))
    chars = [c.upper() if draw(st.booleans()) else c for c in name] if quoting == "plain" or draw(st.booleans()) else list(name)
    if quoting == "plain":
        return "".join(chars)
    escaped = "".join(f"\\x{ord(c):02x}" if c.isalpha() and draw(st.booleans()) else c for c in chars)
    return f"{quoting}{escaped}{quoting}"


def call(name: str, arguments: str) -> st.SearchStrategy[str]:
    return st.builds(lambda n, gap: f"{n}{gap}({arguments})", spelled(name), st.sampled_from(GAPS))


TABLE_FUNCTIONS = [
    ("file", "'/etc/hostname', 'LineAsString'"), ("url", "'http://127.0.0.1:9/', 'LineAsString'"), ("numbers", "3"),
    ("numbers_mt", "3"), ("zeros", "3"), ("remote", "'127.0.0.1', system.one"), ("remoteSecure", "'127.0.0.1', system.one"),
    ("cluster", "'default', system.one"), ("merge", "'system', 'one'"), ("view", "SELECT * FROM system.one"),
    ("viewIfPermitted", "SELECT 1 ELSE null('a UInt8')"), ("input", "'a String'"), ("generateRandom", "'a UInt8'"),
    ("values", "'a UInt8', 1"), ("null", "'a UInt8'"), ("s3", "'http://127.0.0.1:9/x', 'CSV', 'a String'"),
    ("executable", "'x.sh', 'TSV', 'a String'"), ("dictionary", "'d'"), ("loop", "numbers(1)"),
    ("mergeTreeIndex", "m1, metric_points"), ("fuzzJSON", "'{}'"), ("format", "CSV, '1'"), ("python", "'x'"),
    ("sqlite", "'/tmp/x.db', 't'"), ("mysql", "'127.0.0.1:9', 'd', 't', 'u', 'p'"), ("primes", "3"),
    ("timeSeriesData", "m1.metric_points"),
]
SCALAR_FUNCTIONS = [
    ("file", "'/etc/hostname'"), ("dictGet", "'d', 'a', 1"), ("dictGetString", "'d', 'a', 1"), ("dictHas", "'d', 1"),
    ("joinGet", "'m1.metric_points', 'value', 1"), ("hostName", ""), ("fqdn", ""), ("getSetting", "'readonly'"),
    ("currentUser", ""), ("sleep", "1"), ("getServerPort", "'tcp_port'"), ("filesystemAvailable", ""),
    ("hasColumnInTable", "'system', 'one', 'dummy'"), ("getMacro", "'x'"), ("showCertificate", ""),
    ("logTrace", "'x'"), ("__getScalar", "'x'"), ("url", "'http://127.0.0.1:9/'"), ("getServerSetting", "'x'"),
    ("catboostEvaluate", "'/tmp/m', 1"), ("globalVariable", "'x'"), ("getClientHTTPHeader", "'x'"),
    ("fullHostName", ""), ("session_user", ""), ("authUser", ""), ("dictGetOrNull", "'d', 'a', 1"),
]
OTHER_TABLES = ["system.one", "system.tables", "system.processes", "system.query_log", "system.users",
                "information_schema.tables", "INFORMATION_SCHEMA.TABLES", "default.t", "acmeonly.metric_points",
                "m1.model_state_no_such", "`system`.`one`", '"system"."one"', "system . one", "`system.one`"]
STATEMENTS = ["INSERT INTO metric_points (tenant) VALUES ('globex')", "ALTER TABLE metric_points DELETE WHERE 1",
              "DROP TABLE metric_points", "CREATE TABLE x (a UInt8) ENGINE = Memory", "SYSTEM FLUSH LOGS",
              "KILL QUERY WHERE 1", "OPTIMIZE TABLE metric_points FINAL", "ATTACH TABLE x", "DETACH TABLE metric_points",
              "RENAME TABLE metric_points TO x", "TRUNCATE TABLE metric_points", "SET readonly = 0", "USE system",
              "GRANT ALL ON *.* TO default", "SHOW TABLES", "DESCRIBE TABLE metric_points", "EXPLAIN SELECT 1",
              "EXISTS TABLE metric_points", "CHECK TABLE metric_points", "DELETE FROM metric_points WHERE 1",
              "UPDATE metric_points SET value = 0 WHERE 1", "BACKUP TABLE metric_points TO File('x')",
              "SELECT 1 INTO OUTFILE '/tmp/m1-guard-outfile'", "SELECT 1 FORMAT JSON", "SELECT 1 FORMAT TSV",
              "SELECT * FROM metric_points INTO OUTFILE '/tmp/m1-guard-outfile' FORMAT CSV"]
SETTINGS_CLAUSES = ["readonly = 0", "max_result_rows = 0", "max_execution_time = 0", "max_memory_usage = 0",
                    "additional_table_filters = {'m1.metric_points': '1'}", "allow_introspection_functions = 1"]

#: A query reading ``{X}`` (a table expression) in some position.
TABLE_CONTEXTS = ["SELECT * FROM {X}", "SELECT count() FROM metric_points CROSS JOIN {X} AS z",
                  "SELECT count() FROM metric_points AS a LEFT JOIN {X} AS z ON 1 = 1",
                  "SELECT count() FROM metric_points WHERE series IN (SELECT * FROM {X})",
                  "WITH c AS (SELECT * FROM {X}) SELECT * FROM c", "SELECT 1 UNION ALL SELECT * FROM {X}",
                  "SELECT * FROM (SELECT * FROM (SELECT * FROM {X}))", "SELECT (SELECT count() FROM {X})",
                  "SELECT count() FROM metric_points WHERE exists(SELECT 1 FROM {X})",
                  "SELECT 1 EXCEPT SELECT * FROM {X}", "SELECT * FROM metric_points AS m ARRAY JOIN "
                  "(SELECT groupArray(1) FROM {X}) AS k"]
#: A query evaluating ``{F}`` (a scalar expression) in some position.
SCALAR_CONTEXTS = ["SELECT {F}", "SELECT count() FROM metric_points WHERE series = {F}", "SELECT [{F}]",
                   "SELECT * FROM metric_points ARRAY JOIN [{F}] AS k", "SELECT series IN {F} FROM metric_points",
                   "WITH ({F}) AS v SELECT v", "SELECT 1 UNION ALL SELECT {F}", "SELECT (SELECT {F})",
                   "SELECT arrayMap(x -> {F}, [1])", "SELECT count() FROM metric_points GROUP BY {F}",
                   "SELECT * FROM metric_points ORDER BY {F}", "SELECT * REPLACE ({F} AS series) FROM metric_points",
                   "SELECT sum(value) OVER (PARTITION BY {F}) FROM metric_points"]


def placed(contexts: list[str], key: str, payload: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda context, p: context.replace("{" + key + "}", p), st.sampled_from(contexts), payload)


def other_table() -> st.SearchStrategy[str]:
    return st.sampled_from(OTHER_TABLES)


ATTEMPTS = st.one_of(
    placed(TABLE_CONTEXTS, "X", st.sampled_from(TABLE_FUNCTIONS).flatmap(lambda f: call(*f))),
    placed(TABLE_CONTEXTS, "X", other_table()),
    placed(SCALAR_CONTEXTS, "F", st.sampled_from(SCALAR_FUNCTIONS).flatmap(lambda f: call(*f))),
    placed(SCALAR_CONTEXTS, "F", st.sampled_from([f for f in TABLE_FUNCTIONS if f[0] not in SCALAR_TOO])
           .flatmap(lambda f: call(*f))),
    st.builds(lambda t, c: f"SELECT count() FROM metric_points WHERE series {c} {t}", other_table(),
              st.sampled_from(["IN", "NOT IN", "GLOBAL IN", "global not in"])),
    st.builds(lambda s, gap, g2: s.replace(" ", gap, 1).replace("SELECT", g2 + "SELECT", 1),
              st.sampled_from(STATEMENTS), st.sampled_from([g for g in GAPS if g]), st.sampled_from(GAPS)),
    st.builds(lambda s, order: f"SELECT 1;{s}" if order else f"{s}; SELECT 1", st.sampled_from(STATEMENTS), st.booleans()),
    st.builds(lambda c, q: q.format(c=c), st.sampled_from(SETTINGS_CLAUSES), st.sampled_from([
        "SELECT count() FROM metric_points SETTINGS {c}", "SELECT count() FROM (SELECT * FROM metric_points SETTINGS {c})",
        "SELECT 1 UNION ALL SELECT count() FROM metric_points SETTINGS {c}",
        "WITH c AS (SELECT * FROM metric_points SETTINGS {c}) SELECT count() FROM c",
        "SELECT count() FROM metric_points WHERE series IN (SELECT series FROM metric_points SETTINGS {c})"])),
    st.builds(lambda f: f"SELECT COLUMNS('series') APPLY({f}) FROM metric_points",
              st.sampled_from(["file", "hostName", "x -> file(x)", "toString"])),
)


@EXAMPLES
@given(sql=ATTEMPTS)
def test_every_bypass_attempt_is_refused(stores: tuple[Store, Store], sql: str) -> None:
    mixed, _ = stores
    with pytest.raises(QueryRefused):
        mixed.tenant_query(sql, "acme")
    with pytest.raises(QueryRefused):
        mixed.admin_query(sql)
    assert not Path("/tmp/m1-guard-outfile").exists()


@pytest.mark.parametrize("sql", [
    "SELECT file('/etc/hostname')", "SELECT * FROM `fi\\x6ce`('/etc/hostname', 'LineAsString')",
    "SELECT * FROM FiLe /* c */ ('/etc/hostname', 'LineAsString')", "SELECT count() FROM acmeonly.metric_points",
    "SELECT count() FROM system.tables", "SELECT 1; DROP TABLE metric_points",
    "SELECT count() FROM metric_points SETTINGS additional_table_filters = {'m1.metric_points': '1'}",
    "SELECT * FROM metric_points AS `x\n   TableIdentifier m1.metric_points`",  # forged dump rows in an alias
])
def test_examples_a_keyword_blocklist_missed_are_refused(stores: tuple[Store, Store], sql: str) -> None:
    mixed, _ = stores
    with pytest.raises(QueryRefused):
        mixed.tenant_query(sql, "acme")
    assert mixed.query("SELECT count() FROM metric_points").rows == [(N_ACME + N_GLOBEX,)]  # nothing was dropped


@pytest.mark.parametrize("sql", [
    "SELECT count() FROM metric_points PREWHERE throwIf(value = 1010) = 0",
    "SELECT count() FROM (SELECT * FROM anomalies FINAL PREWHERE value > 1 WHERE 1)",
    "SELECT max(_part_offset) FROM metric_points", "SELECT count() FROM metric_points AS m WHERE m._part != ''",
])
def test_what_runs_before_the_tenant_filter_is_refused_to_tenants(stores: tuple[Store, Store], sql: str) -> None:
    """An explicit PREWHERE meets every tenant's rows (an error it raises tells about them: it does
    here without the guard), and virtual columns describe storage shared with other tenants."""
    mixed, _ = stores
    with pytest.raises(QueryRefused, match="PREWHERE|virtual columns"):
        mixed.tenant_query(sql, "acme")
    mixed.admin_query(sql.replace("throwIf(value = 1010) = 0", "1"))  # fine over every tenant's rows


def test_generated_attempts_would_run_without_the_guard(stores: tuple[Store, Store]) -> None:
    """The attempts are real: past a guard that allowed everything, the engine would run them."""
    mixed, _ = stores
    for sql in ("SELECT file('/etc/hostname')", "SELECT * FROM system.one", "SELECT count() FROM acmeonly.metric_points",
                "SELECT number FROM numbers(3)", "SELECT COLUMNS('series') APPLY(length) FROM metric_points LIMIT 1"):
        assert mixed.query(sql, settings=mixed.limits.settings()).rows


def test_dump_rows_must_nest_by_indentation_and_count() -> None:
    """Rows forged through a multi-line alias cannot regroup the tree: a row one level off, a
    missing or an extra row, and the dump is refused even when the child counts add up."""
    rows = ["SelectWithUnionQuery (children 2)", " ExpressionList (children 1)", "  SelectQuery (children 1)",
            "   ExpressionList (children 1)", "    Literal UInt64_1", " Identifier Native"]
    assert parse(rows).children[1].name == "Native"
    for forged in (rows[:4] + ["Literal UInt64_1"] + rows[5:], rows[:-1], rows + [" Identifier Native"],
                   rows[:4] + ["    Literal UInt64_1 (alias x", "   Function file)"] + rows[5:]):
        with pytest.raises(QueryRefused, match="ambiguous"):
            parse(forged)
