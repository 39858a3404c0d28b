"""The worker serves the authenticated API (/v1) itself: real worker process, broker and store.

Faust's unauthenticated pages are gone; every route but the public ones wants a key, and a
tenant's key reads its own tenant's rows only, as written by the real pipeline.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from m1.query_client import QueryError, run_query, worker_url
from core.settings import Settings
from schemas.events import MetricPoint, encode
from tests.helpers import isolated_settings, new_key, produce, scalar, start_worker, wait_for

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
POINTS = {"acme": 40, "globex": 30}
PUBLIC = {("GET", "/v1/health"), ("GET", "/v1/openapi.json")}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Settings]:
    """A worker whose store holds POINTS[t] points of each tenant t, written by the pipeline."""
    settings = isolated_settings(tmp_path_factory.mktemp("worker-api"), kafka_bootstrap)
    worker = start_worker(settings)
    try:
        for tenant, n in POINTS.items():
            produce(settings, [(None, encode(MetricPoint(T0 + i, tenant, "eu-west-1", "api", "latency_ms", 1.0 + i)))
                               for i in range(n)])
        everything = "SELECT count() FROM metric_points FINAL"
        assert wait_for(lambda: scalar(settings, everything) >= sum(POINTS.values()))
        yield settings
    finally:
        worker.stop()


def call(settings: Settings, method: str, path: str, key: str | None, body: object = None) -> tuple[int, object]:
    """(status, decoded body) of one request to the worker, with ``key`` as bearer token if given."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(worker_url(settings) + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, text


def as_tenant(settings: Settings, tenant: str, roles: list[str]) -> Settings:
    return settings.model_copy(update={"api_key": SecretStr(new_key(settings, tenant, roles))})


def test_no_key_or_a_wrong_key_is_refused(running: Settings) -> None:
    sql = {"sql": "SELECT count() FROM metric_points"}
    assert call(running, "POST", "/v1/query", None, sql)[0] == 401
    forged = "m1_" + "0" * 12 + "_" + "A" * 43
    assert call(running, "POST", "/v1/query", forged, sql)[0] == 401
    with pytest.raises(QueryError) as refused:  # what m1 query sees without M1_API_KEY
        run_query(running.model_copy(update={"api_key": SecretStr("")}), sql["sql"])
    assert refused.value.status == 401


def test_platform_admin_sees_every_tenant(running: Settings) -> None:
    rows = run_query(running, "SELECT tenant, count() FROM metric_points FINAL GROUP BY tenant ORDER BY tenant").rows
    assert dict(rows) == POINTS


def test_tenant_analyst_sees_only_its_own_rows(running: Settings) -> None:
    acme = as_tenant(running, "acme", ["analyst"])
    rows = run_query(acme, "SELECT tenant, count() FROM metric_points FINAL GROUP BY tenant", tenant="acme").rows
    assert rows == [("acme", POINTS["acme"])]
    sneaky = "SELECT count() FROM metric_points WHERE tenant = 'globex' OR 1 = 1"
    assert run_query(acme, sneaky, tenant="acme").rows == [(POINTS["acme"],)]
    for path in ("/v1/tenants/globex/query", "/v1/query"):  # another tenant; every tenant
        status, _ = call(acme, "POST", path, acme.api_key.get_secret_value(), {"sql": "SELECT 1"})
        assert status == 403, path


def test_a_viewer_may_not_run_sql(running: Settings) -> None:
    viewer = as_tenant(running, "acme", ["viewer"])
    with pytest.raises(QueryError) as refused:
        run_query(viewer, "SELECT 1", tenant="acme")
    assert refused.value.status == 403


def test_the_old_faust_pages_are_gone(running: Settings) -> None:
    key = running.api_key.get_secret_value()
    assert call(running, "POST", "/query", key, {"sql": "SELECT 1"})[0] == 404
    assert call(running, "POST", "/bottlenecks", key, {})[0] == 404


def test_only_health_and_the_openapi_document_are_public(running: Settings) -> None:
    assert call(running, "GET", "/v1/health", None)[0] == 200
    status, spec = call(running, "GET", "/v1/openapi.json", None)
    assert status == 200 and spec["openapi"].startswith("3.1")
    operations = {(method.upper(), path) for path, item in spec["paths"].items() for method in item
                  if method in ("get", "post", "put", "patch", "delete")}
    assert PUBLIC <= operations and len(operations) > len(PUBLIC) + 3
    for method, path in sorted(operations - PUBLIC):
        concrete = re.sub(r"\{[a-z_]+\}", "0" * 12, path.replace("{tenant}", "acme"))
        body = {} if method in ("POST", "PUT", "PATCH") else None
        assert call(running, method, concrete, None, body)[0] == 401, (method, path)
