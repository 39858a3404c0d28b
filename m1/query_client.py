"""Run SQL against the store from any process.

With a ClickHouse server configured, or no worker running, the store is opened
directly. While a worker runs on the embedded chdb store it owns the data directory,
so the query goes to its ``POST /query`` endpoint on 127.0.0.1 instead.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from m1.settings import Settings
from sinks.clickhouse import QueryResult, Store, StoreUnavailable, connect


class QueryError(RuntimeError):
    """The store rejected the query; the message is the engine's."""


def worker_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.web_port}"


def worker_is_up(settings: Settings, timeout: float = 1.0) -> bool:
    """True when a worker answers on the configured web port."""
    try:
        with urllib.request.urlopen(worker_url(settings) + "/", timeout=timeout):
            return True
    except (urllib.error.URLError, OSError):
        return False


def run_query(settings: Settings, sql: str, timeout: float = 60.0) -> QueryResult:
    """Columns and rows of ``sql``, from the worker if it owns the store, else directly."""
    if not settings.clickhouse_url and worker_is_up(settings):
        request = urllib.request.Request(
            worker_url(settings) + "/query",
            data=json.dumps({"sql": sql}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            raise QueryError(json.load(exc).get("error", str(exc))) from None
        return QueryResult(body["columns"], [tuple(r) for r in body["rows"]])
    try:
        store = Store(connect(settings))
    except StoreUnavailable as exc:
        raise QueryError(str(exc)) from None
    try:
        return store.admin_query(sql)
    except Exception as exc:
        raise QueryError(str(exc)) from None
    finally:
        store.close()
