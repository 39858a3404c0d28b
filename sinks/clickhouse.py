"""The ClickHouse store: a write client, a read client, versioned DDL applied on start, Arrow
batch inserts, and guarded SQL for admins and tenants.

``connect`` returns a clickhouse-connect client: the embedded chdb engine in
``<M1_HOME>/chdb`` by default, or a ClickHouse server when ``M1_CLICKHOUSE_URL`` is
set, so everything above this module is the same code for both. chdb lets only one
process open a data directory: the worker owns it, and other processes reach it
through the worker's API (see ``m1 query``).

A :class:`Store` writes (inserts, migrations) through the client it is given, one statement
at a time, and reads through clients of its own on the same store (chdb: more handles on the
same engine, which run concurrently), so no read waits for an insert and a slow SQL query
holds up neither ingestion nor the pipeline's own reads.

SQL from callers goes through :meth:`Store.admin_query` (every tenant's rows) or
:meth:`Store.tenant_query` (one tenant's rows). Both are decided from the engine's own parse
(:mod:`sinks.sql_guard`: one SELECT over the store's own tables, no table functions, no other
databases, no functions that reach outside) and run with ``readonly=1`` and the limits of
:class:`QueryLimits`, which the query's own SETTINGS clause cannot change (the guard refuses
the clause, and ``readonly=1`` would refuse the change). A tenant query reads each table
through ``additional_table_filters`` = that tenant's rows; on a ClickHouse server it also runs
as the tenant's own read-only user, under its row policies (:mod:`sinks.server_access`).

>>> import tempfile
>>> from core.settings import Settings
>>> store = Store(connect(Settings(home=tempfile.mkdtemp())))
>>> store.migrate()[0]
'001_metrics.sql'
>>> store.query("SELECT count() FROM metric_points").rows
[(0,)]
>>> store.tenant_query("SELECT count() FROM metric_points", "acme").rows
[(0,)]
>>> store.tenant_query("SELECT * FROM file('/etc/passwd')", "acme")
Traceback (most recent call last):
...
sinks.sql_guard.QueryRefused: table function file() is not allowed: only the store's own tables can be queried
>>> store.close()  # chdb: one data directory per process at a time
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from itertools import chain
from typing import Any
from weakref import WeakKeyDictionary

import clickhouse_connect
import numpy as np
import pyarrow as pa
from clickhouse_connect.driver.client import Client

from core.settings import Settings
from sinks.sql_guard import Catalog, QueryRefused, first_line, guard, load_catalog, tenant_condition
from core.tenant_names import check_tenant


#: Arrow type of the DateTime64(3, 'UTC') columns.
TS_TYPE = pa.timestamp("ms", tz="UTC")
#: A ``Map(String, String)`` column (labels, attributes).
STRING_MAP_TYPE = pa.map_(pa.string(), pa.string())


def string_maps(maps: list[dict[str, str]]) -> pa.MapArray:
    """``maps`` as a :data:`STRING_MAP_TYPE` column, each map's pairs in its order: what
    ``pa.array(maps, type=STRING_MAP_TYPE)`` gives, at a quarter of its cost (keys and values go
    to Arrow as two flat lists, not map by map).

    >>> string_maps([{"host": "a", "az": "1"}, {}]).to_pylist()
    [[('host', 'a'), ('az', '1')], []]
    """
    offsets = np.zeros(len(maps) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, maps), dtype=np.int32, count=len(maps)), out=offsets[1:])
    keys = pa.array(list(chain.from_iterable(maps)), type=pa.string())
    values = pa.array(list(chain.from_iterable(map(dict.values, maps))), type=pa.string())
    return pa.MapArray.from_arrays(pa.array(offsets), keys, values)


#: Tables never open to tenant SQL even though they have a tenant column: the access log and the
#: hash-chained audit trail (audit/) are served to auditors by their own endpoint and commands; the
#: subject keys, their erasure tombstones and legal holds (compliance/) are the platform's.
NOT_FOR_TENANT_SQL = frozenset({"access_log", "audit_log", "audit_checkpoints", "subject_keys", "subject_key_erasures",
                                "legal_holds"})
#: Tables no SQL of the API may read, an admin's included: the data subjects' keys (compliance/subject_keys.py).
NOT_FOR_SQL = frozenset({"subject_keys"})


#: The settings each client of :func:`connect` was made with: a Store of it uses them by default.
_CONNECTED_WITH: WeakKeyDictionary[Client, Settings] = WeakKeyDictionary()


class StoreUnavailable(RuntimeError):
    """The embedded store could not be opened; the message says why and what to do."""


def connect(settings: Settings) -> Client:
    """A client for the configured store, with ``settings.clickhouse_database`` created and selected.

    Raises :class:`StoreUnavailable` if the embedded data directory cannot be opened (most
    often because another process has it: chdb allows one process per directory)."""
    if settings.clickhouse_url:  # no session: one client may then run statements from several threads
        client = clickhouse_connect.get_client(dsn=settings.clickhouse_url, autogenerate_session_id=False)
    else:
        settings.chdb_path.mkdir(parents=True, exist_ok=True)
        try:
            client = clickhouse_connect.get_client(dsn=f"chdb://{settings.chdb_path}")
        except Exception as exc:
            raise StoreUnavailable(
                f"cannot open the embedded ClickHouse data directory {settings.chdb_path} ({exc}). Only one "
                "process may open it at a time: stop the process that has it (a worker not answering on "
                "M1_WEB_PORT, another m1 command, a script), or set M1_HOME to another directory."
            ) from None
    client.command(f"CREATE DATABASE IF NOT EXISTS {settings.clickhouse_database}")
    client.database = settings.clickhouse_database
    _CONNECTED_WITH[client] = settings
    return client


def ddl_files() -> list[tuple[str, str]]:
    """``(name, text)`` of every versioned DDL file in ``schemas/ddl``, in version order."""
    folder = resources.files("schemas") / "ddl"
    return sorted((f.name, f.read_text()) for f in folder.iterdir() if f.name.endswith(".sql"))


@dataclass
class QueryResult:
    """Column names and rows of a query."""

    columns: list[str]
    rows: list[tuple[Any, ...]]


class QueryFailed(ValueError):
    """The engine stopped an admin or tenant query (a limit, an unknown column, ...); the
    message is the engine's first line."""


@dataclass(frozen=True)
class QueryLimits:
    """Limits of every admin and tenant SQL query (``M1_QUERY_MAX_*``)."""

    seconds: float
    memory_bytes: int
    rows: int

    @classmethod
    def of(cls, settings: Settings) -> QueryLimits:
        return cls(settings.query_max_seconds, settings.query_max_memory_bytes, settings.query_max_rows)

    def settings(self) -> dict[str, Any]:
        """The engine settings: bounded, and read-only (so the query cannot change any setting;
        last, so settings put before it stay settable however they are applied)."""
        return {"max_execution_time": self.seconds, "max_memory_usage": self.memory_bytes,
                "max_result_rows": self.rows, "result_overflow_mode": "throw", "readonly": 1}


#: Settings of every tenant query besides its filters and limits. ``additional_table_filters`` is applied
#: after PREWHERE: with conditions moved there (the engine's default), an error a condition raises on
#: another tenant's row (``WHERE intDiv(1, value - 42) > 0``) told about its values (measured). The
#: query condition cache, shared by all queries, is not used either.
TENANT_SETTINGS = {"optimize_move_to_prewhere": 0, "optimize_move_to_prewhere_if_final": 0,
                   "query_plan_optimize_prewhere": 0, "use_query_condition_cache": 0}

#: Settings of every insert (see :meth:`Store.insert`).
INSERT_SETTINGS = {"max_partitions_per_insert_block": 0}


class Store:
    """Thread-safe store: migrations and Arrow inserts through the write client (one statement
    at a time), reads through clients of their own (see the module docstring).

    ``settings`` gives the query limits and, on a server, the URL and tenant secret the read
    clients need; by default those ``client`` was connected with (:func:`connect`), else the
    environment's. ``on_insert(table, seconds)``, if given, is told how long each insert took.
    """

    def __init__(self, client: Client, settings: Settings | None = None,
                 on_insert: Callable[[str, float], None] | None = None):
        self.client = client
        self.on_insert = on_insert
        self.database = client.database
        self.settings = settings or _CONNECTED_WITH.get(client) or Settings()
        self.limits = QueryLimits.of(self.settings)
        self.embedded = client.uri.startswith("chdb:")
        self._lock = threading.Lock()
        self._idle: list[Client] = []  # read clients nobody is using
        self._tenant_clients: dict[str, Client] = {}  # server mode: one per tenant's ClickHouse user
        self._clients_lock = threading.Lock()

    def migrate(self, before: str | None = None) -> list[str]:
        """Apply DDL files not applied yet (only those named before ``before``, e.g. ``'070'``, if
        given: the store as an earlier version left it); returns the names of all applied files."""
        with self._lock:
            self.client.command(
                f"CREATE TABLE IF NOT EXISTS {self.database}.schema_migrations "
                "(name String, applied_at DateTime DEFAULT now()) ENGINE = ReplacingMergeTree ORDER BY name"
            )
            done = {r[0] for r in self.client.query("SELECT name FROM schema_migrations").result_rows}
            for name, text in ddl_files():
                if name in done or (before is not None and name >= before):
                    continue
                for statement in text.format(database=self.database).split("\n;\n"):
                    if _has_sql(statement):
                        self.client.command(statement)
                self.client.insert("schema_migrations", [[name]], column_names=["name"])
                done.add(name)
            return sorted(done)

    def insert(self, table: str, columns: dict[str, pa.Array | list]) -> int:
        """Insert one batch given as named columns; returns the row count.

        A batch may span any number of partitions (a backfill mixes many days): ClickHouse's
        default limit of 100 per insert would fail the batch, and it would fail again on
        every retry."""
        batch = pa.table(columns)
        if batch.num_rows:
            with self._lock:
                self._insert(self.client, table, batch)
        return batch.num_rows

    def insert_stream(self, table: str, columns: Sequence[str], chunks: Iterable[bytes], fmt: str = "RowBinary") -> None:
        """Insert rows given as ``chunks`` of ``fmt`` (``columns`` in order), read one by one while they
        are sent: one insert that never holds all its rows in memory (a checkpoint's model state:
        hundreds of MB at 10,000 series). On a handle of its own instead of the write client, so that
        it does not hold up the batches' inserts, which wait for the write client (the engine takes
        both at once)."""
        started = time.perf_counter()
        with self._reader() as client:
            client.raw_insert(table, list(columns), chunks, settings=INSERT_SETTINGS, fmt=fmt)
        if self.on_insert is not None:
            self.on_insert(table, time.perf_counter() - started)

    def _insert(self, client: Client, table: str, batch: pa.Table) -> None:
        started = time.perf_counter()
        client.insert_arrow(table, batch, settings=INSERT_SETTINGS)
        if self.on_insert is not None:
            self.on_insert(table, time.perf_counter() - started)

    def command(self, sql: str) -> None:
        """Run a trusted statement (DDL, access management) on the write client."""
        with self._lock:
            self.client.command(sql)

    def catalog(self) -> Catalog:
        """The store's tables as the guard sees them (:func:`sinks.sql_guard.load_catalog`)."""
        with self._reader() as client:
            return load_catalog(client, self.database)

    def query(self, sql: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None) -> QueryResult:
        """Run the pipeline's own query (trusted SQL, no guard) and return its columns and rows."""
        with self._reader() as client:
            result = client.query(sql, parameters=parameters, settings=settings)
        return QueryResult(list(result.column_names), [tuple(r) for r in result.result_rows])

    def query_arrow(self, sql: str, parameters: dict[str, Any] | None = None) -> pa.Table:
        """Run the pipeline's own query (trusted SQL, no guard) and return an Arrow table (bulk reads)."""
        with self._reader() as client:
            return client.query_arrow(sql, parameters=parameters)

    def admin_query(self, sql: str) -> QueryResult:
        """A platform-admin's SQL over every tenant's rows: guarded (:mod:`sinks.sql_guard`), read-only,
        limited; values JSON-safe. :class:`~sinks.sql_guard.QueryRefused` if the guard refuses it,
        :class:`QueryFailed` if the engine does."""
        with self._reader() as client:
            sql, tables = guard(client, sql, load_catalog(client, self.database))
            if refused := sorted(tables & NOT_FOR_SQL):
                raise QueryRefused(f"table {refused[0]!r} holds key material: no SQL may read it")
            return _run(client, sql, self.limits.settings())

    def tenant_query(self, sql: str, tenant: str) -> QueryResult:
        """``sql`` over ``tenant``'s rows only: guarded like :meth:`admin_query`, then every table it
        reads is filtered to the tenant's rows (``additional_table_filters``, and on a server the
        row policies of the tenant's own ClickHouse user). Tables without a tenant column, and
        :data:`NOT_FOR_TENANT_SQL`, are refused."""
        tenant = check_tenant(tenant)
        with self._reader() as client:
            catalog = load_catalog(client, self.database)
            sql, tables = guard(client, sql, catalog, tenant_scoped=True)
            filters = tenant_filters(catalog, tables, tenant)
            if self.embedded:
                return _run(client, sql, {"additional_table_filters": filters, **TENANT_SETTINGS, **self.limits.settings()})
        return _run(self._tenant_client(tenant), sql, {})  # its settings profile holds the limits and filters

    @contextmanager
    def _reader(self) -> Iterator[Client]:
        """A read client for this thread's statement: an idle one, or a new one on the same store."""
        with self._clients_lock:
            client = self._idle.pop() if self._idle else None
        if client is None:
            client = self._open()
        try:
            yield client
        except BaseException as exc:
            if isinstance(exc, QueryRefused):  # refused from a parse: nothing ran, the client is clean
                self._release(client)
            else:
                client.close()  # a failed statement may leave the handle mid-result: never reuse it
            raise
        self._release(client)

    def _release(self, client: Client) -> None:
        with self._clients_lock:
            self._idle.append(client)

    def _open(self) -> Client:
        if self.embedded:  # another handle on the same chdb engine
            client = clickhouse_connect.get_client(dsn=self.client.uri)
        else:
            client = clickhouse_connect.get_client(dsn=self.settings.clickhouse_url, autogenerate_session_id=False)
        client.database = self.database
        return client

    def _tenant_client(self, tenant: str) -> Client:
        from sinks.server_access import tenant_client  # server mode only; it builds on this module

        with self._clients_lock:
            if tenant not in self._tenant_clients:
                self._tenant_clients[tenant] = tenant_client(self.settings, tenant)
            return self._tenant_clients[tenant]

    def close(self) -> None:
        with self._clients_lock:
            for client in [*self._idle, *self._tenant_clients.values()]:
                client.close()
            self._idle.clear()
            self._tenant_clients.clear()
        with self._lock:
            self.client.close()


def tenant_tables(catalog: Catalog) -> dict[str, str]:
    """The tables tenant SQL may read, each with the expression holding a row's tenant."""
    return {table: column for table, column in catalog.tenant_columns.items()
            if table in catalog.tables and table not in NOT_FOR_TENANT_SQL}


def tenant_filters(catalog: Catalog, tables: frozenset[str], tenant: str) -> dict[str, str]:
    """``additional_table_filters`` keeping ``tenant``'s rows of ``tables``; :class:`QueryRefused`
    for a table without a tenant column or in :data:`NOT_FOR_TENANT_SQL`.

    >>> tenant_filters(Catalog("m1", frozenset({"t"}), frozenset({"t"}), frozenset(), {"t": "tenant"}), frozenset({"t"}), "acme")
    {'m1.t': "tenant = 'acme'"}
    """
    allowed = tenant_tables(catalog)
    if refused := sorted(tables - allowed.keys()):
        raise QueryRefused(f"table {refused[0]!r} holds no tenant's own rows: it cannot be queried with tenant SQL")
    return {f"{catalog.database}.{table}": tenant_condition(allowed[table], tenant) for table in sorted(tables)}


def _run(client: Client, sql: str, settings: dict[str, Any]) -> QueryResult:
    try:
        result = client.query(sql, settings=settings)
        return QueryResult(list(result.column_names), [tuple(map(_json_safe, row)) for row in result.result_rows])
    except Exception as exc:
        raise QueryFailed(first_line(exc)) from None


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return str(value)


def _has_sql(statement: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in statement.splitlines())
