"""The ClickHouse store: one client, versioned DDL applied on start, Arrow batch inserts.

``connect`` returns a clickhouse-connect client: the embedded chdb engine in
``<M1_HOME>/chdb`` by default, or a ClickHouse server when ``M1_CLICKHOUSE_URL`` is
set, so everything above this module is the same code for both. chdb lets only one
process open a data directory: the worker owns it, and other processes reach it
through the worker's ``/query`` endpoint (see ``m1 query``).

>>> import tempfile
>>> from m1.settings import Settings
>>> store = Store(connect(Settings(home=tempfile.mkdtemp())))
>>> store.migrate()[0]
'001_metrics.sql'
>>> store.query("SELECT count() FROM metric_points").rows
[(0,)]
>>> store.close()  # chdb: one data directory per process at a time
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Any

import clickhouse_connect
import pyarrow as pa
from clickhouse_connect.driver.client import Client

from m1.settings import Settings


#: Arrow type of the DateTime64(3, 'UTC') columns.
TS_TYPE = pa.timestamp("ms", tz="UTC")

READ_ONLY_STATEMENTS = {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"}
#: What a remote caller's query may not use: table functions that read files, URLs or other
#: servers (even a read-only query may), and writing the result to a file.
OUTSIDE_THE_STORE = re.compile(
    r"\b(file|url|s3|s3cluster|gcs|azureblobstorage|hdfs|remote|remotesecure|cluster|mysql|postgresql|mongodb|"
    r"redis|sqlite|odbc|jdbc|executable|input|urlcluster|filecluster)\s*\(|\binto\s+outfile\b",
    re.IGNORECASE,
)
#: Settings of a remote caller's query: read-only in the engine too, and a bounded result.
READ_ONLY_SETTINGS = {"readonly": 2, "max_result_rows": 100_000, "result_overflow_mode": "throw"}


class StoreUnavailable(RuntimeError):
    """The embedded store could not be opened; the message says why and what to do."""


def connect(settings: Settings) -> Client:
    """A client for the configured store, with ``settings.clickhouse_database`` created and selected.

    Raises :class:`StoreUnavailable` if the embedded data directory cannot be opened (most
    often because another process has it: chdb allows one process per directory)."""
    if settings.clickhouse_url:
        client = clickhouse_connect.get_client(dsn=settings.clickhouse_url)
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


#: Settings of every insert (see :meth:`Store.insert`).
INSERT_SETTINGS = {"max_partitions_per_insert_block": 0}


class Store:
    """Thread-safe wrapper of a client: migrations, Arrow inserts and queries.

    chdb has no async client, so the worker calls these methods from a thread;
    the lock keeps one statement at a time on the shared in-process engine.
    """

    def __init__(self, client: Client):
        self.client = client
        self.database = client.database
        self._lock = threading.Lock()

    def migrate(self) -> list[str]:
        """Apply DDL files not applied yet; returns the names of all applied files."""
        with self._lock:
            self.client.command(
                f"CREATE TABLE IF NOT EXISTS {self.database}.schema_migrations "
                "(name String, applied_at DateTime DEFAULT now()) ENGINE = ReplacingMergeTree ORDER BY name"
            )
            done = {r[0] for r in self.client.query("SELECT name FROM schema_migrations").result_rows}
            for name, text in ddl_files():
                if name in done:
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
                self.client.insert_arrow(table, batch, settings=INSERT_SETTINGS)
        return batch.num_rows

    def query(self, sql: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None) -> QueryResult:
        """Run a query and return its columns and rows."""
        with self._lock:
            result = self.client.query(sql, parameters=parameters, settings=settings)
        return QueryResult(list(result.column_names), [tuple(r) for r in result.result_rows])

    def read_only_query(self, sql: str) -> QueryResult:
        """Run a SELECT-like statement for a remote caller on the store's own tables, at most
        ``max_result_rows`` rows of result; values become JSON-safe."""
        first = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if first not in READ_ONLY_STATEMENTS:
            raise ValueError(f"only {', '.join(sorted(READ_ONLY_STATEMENTS))} statements are allowed here")
        if outside := OUTSIDE_THE_STORE.search(sql):
            raise ValueError(f"{outside.group(0).strip()!r}: only the store's own tables can be queried here")
        result = self.query(sql, settings=READ_ONLY_SETTINGS)
        return QueryResult(result.columns, [tuple(map(_json_safe, row)) for row in result.rows])

    def close(self) -> None:
        with self._lock:
            self.client.close()


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
