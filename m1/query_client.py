"""Reach the store from any process: through the API of the process that owns it, or directly.

While a worker runs on the embedded chdb store it owns the data directory, so a query goes
to its HTTP API (``/v1``, see ``api/``) on the loopback address with ``M1_API_KEY`` as a
bearer token: ``POST /v1/query`` (platform-admin SQL over every tenant) or
``POST /v1/tenants/<t>/query`` (SQL that sees only tenant ``t``'s rows).

With a ClickHouse server configured, or no worker running, the store is opened directly.
That path needs no key: whoever can open the data directory (or holds the server's
credentials) already owns every row, so it runs as a platform-admin would
(``Store.admin_query``, or ``Store.tenant_query`` when a tenant is named).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from core.settings import Settings
from sinks.clickhouse import QueryResult, Store, StoreUnavailable, connect


class QueryError(RuntimeError):
    """The API or the store refused the query; ``status`` is the HTTP status when the API answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def worker_url(settings: Settings) -> str:
    """Base URL of the local API: its bind address, or loopback when it binds every interface.

    >>> worker_url(Settings(web_port=7000, web_bind="0.0.0.0"))
    'http://127.0.0.1:7000'
    """
    host = "127.0.0.1" if settings.web_bind in ("", "0.0.0.0", "::") else settings.web_bind
    return f"http://{host}:{settings.web_port}"


def worker_is_up(settings: Settings, timeout: float = 1.0) -> bool:
    """True when an M1 API answers ``GET /v1/health`` on the configured web port."""
    try:
        with urllib.request.urlopen(worker_url(settings) + "/v1/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def api_call(settings: Settings, method: str, path: str, body: Any = None, timeout: float = 60.0) -> Any:
    """``method path`` on the local API with the configured key; the decoded JSON answer.

    Raises :class:`QueryError` with the API's message and status for any answer but 2xx, or
    without a status when the API cannot be reached."""
    headers = {"Accept": "application/json"}
    if key := settings.api_key.get_secret_value():
        headers["Authorization"] = f"Bearer {key}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(worker_url(settings) + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        raise QueryError(_message(exc), exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        raise QueryError(f"the API at {worker_url(settings)} did not answer: {exc}") from None


def _message(error: urllib.error.HTTPError) -> str:
    """The API's own error message (``{"error": ...}``), else the HTTP reason."""
    text = error.read().decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip() or f"HTTP {error.code} {error.reason}"
    detail = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(detail, dict):
        detail = detail.get("message") or detail.get("detail") or json.dumps(detail)
    return f"HTTP {error.code}: {detail}"


def query_path(tenant: str | None) -> str:
    """The API route of a query: every tenant's rows, or one tenant's.

    >>> query_path(None), query_path("acme")
    ('/v1/query', '/v1/tenants/acme/query')
    """
    return "/v1/query" if tenant is None else f"/v1/tenants/{urllib.parse.quote(tenant, safe='')}/query"


def run_query(settings: Settings, sql: str, tenant: str | None = None, timeout: float = 60.0) -> QueryResult:
    """Columns and rows of ``sql`` (only ``tenant``'s rows when one is given), from the worker's API
    if a worker owns the embedded store, else from the store opened directly."""
    if not settings.clickhouse_url and worker_is_up(settings):
        body = api_call(settings, "POST", query_path(tenant), {"sql": sql}, timeout=timeout)
        return QueryResult(body["columns"], [tuple(r) for r in body["rows"]])
    try:
        store = Store(connect(settings))
    except StoreUnavailable as exc:
        raise QueryError(str(exc)) from None
    try:
        return store.admin_query(sql) if tenant is None else store.tenant_query(sql, tenant)
    except Exception as exc:
        raise QueryError(str(exc)) from None
    finally:
        store.close()
