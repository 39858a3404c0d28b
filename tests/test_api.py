"""The HTTP API over a real store and registry: documents, listings, input checks, keys, tenants,
quotas, limits, and the access log of every decision (tests/api_world.py serves it on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from collections.abc import Iterator

import pytest

from api.access import AccessEntry, AccessLog
from api.route import PUBLIC
from api.routes import ROUTES
from tests.api_world import TRACE_IDS, World, make_world

ACME_SERIES = "acme|eu|acme-api|rps|host=acme-h"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    world = make_world(tmp_path_factory.mktemp("api"))
    yield world
    world.close()


def example_path(path: str) -> str:
    return path.replace("{tenant}", "acme").replace("{key_id}", "0" * 12).replace("{trace_id}", TRACE_IDS["acme"])


def test_the_openapi_document_describes_every_route(world: World) -> None:
    reply = world.call("GET", "/v1/openapi.json")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("application/json")
    doc = reply.json
    assert doc["openapi"] == "3.1.0"
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {**doc["components"]["securitySchemes"]["bearerAuth"],
                                                                  "type": "http", "scheme": "bearer"}
    operations = {(method.upper(), path): op for path, ops in doc["paths"].items() for method, op in ops.items()}
    assert set(operations) == {(r.method, r.path) for r in ROUTES}
    for route in ROUTES:
        op = operations[(route.method, route.path)]
        names = [p["name"] for p in op["parameters"]]
        assert names == (["tenant"] if route.tenant_scoped else []) + [p.name for p in route.params], route.path
        assert op["x-permission"] == route.permission
        assert op["security"] == ([] if route.permission == PUBLIC else [{"bearerAuth": []}])
        assert ("requestBody" in op) == (route.body is not None)
        for ref in [s["schema"].get("$ref") for s in op.get("requestBody", {}).get("content", {}).values()]:
            assert ref is None or ref.rsplit("/", 1)[1] in doc["components"]["schemas"]
    assert {op["operationId"] for op in operations.values()}.__len__() == len(operations)


def test_only_health_and_the_document_are_public(world: World) -> None:
    assert world.call("GET", "/v1/health").json == {"status": "ok"}
    for route in ROUTES:
        if route.permission == PUBLIC:
            continue
        reply = world.call(route.method, example_path(route.path), body={} if route.body else None)
        assert reply.status == 401, route.path
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    # without credentials an unknown path looks like any other; with them it is 404 (405: other method)
    assert world.call("GET", "/v1/nope").status == 401
    assert world.call("GET", "/v1/nope", world.key("viewer")).status == 404
    assert world.call("GET", "/v1/tenants/acme/anomalies/", world.key("viewer")).status == 404
    assert world.call("PUT", "/v1/tenants/acme/anomalies", world.key("viewer")).status == 405
    assert world.call("HEAD", "/v1/tenants/acme/anomalies", world.key("viewer")).status == 405


def test_listings_answer_their_declared_columns_and_the_callers_rows(world: World) -> None:
    queries = {"/points": f"?series={urllib.parse.quote(ACME_SERIES)}"}
    listings = [r for r in ROUTES if r.method == "GET" and "properties" in r.response.get("properties", {})
                .get("items", {}).get("items", {})]
    assert len(listings) == 12
    world.flush_access_log()  # the audit listing has rows too
    for route in listings:
        path = example_path(route.path)
        reply = world.call("GET", path + queries.get(path[path.rfind("/"):], ""), world.key("tenant-admin"))
        assert reply.status == 200, (route.path, reply.text)
        items = reply.json["items"]
        assert items and "globex" not in reply.text, route.path
        columns = route.response["properties"]["items"]["items"]["properties"]
        assert all(list(item) == list(columns) for item in items), route.path


def test_filters_and_limits(world: World) -> None:
    key = world.key("viewer")
    get = lambda path: world.call("GET", path, key).json["items"]  # noqa: E731
    critical = get("/v1/tenants/acme/anomalies?severity=critical")
    assert len(critical) == 10 and {a["severity"] for a in critical} == {"critical"}
    newest = get("/v1/tenants/acme/anomalies?limit=3")
    assert len(newest) == 3 and newest == sorted(newest, key=lambda a: a["ts"], reverse=True)
    since = newest[-1]["ts"]
    assert get(f"/v1/tenants/acme/anomalies?since={urllib.parse.quote(since)}") == newest
    assert len(get(f"/v1/tenants/acme/anomalies?until={urllib.parse.quote(since)}")) == 17
    assert len(get(f"/v1/tenants/acme/points?series={urllib.parse.quote(ACME_SERIES)}")) == 20
    assert {c["period"] for c in get("/v1/tenants/acme/costs?period=day")} == {"day"}
    spans = get(f"/v1/tenants/acme/traces/{TRACE_IDS['acme']}")
    assert [s["parent_span_id"] == "" for s in spans] == [True, False, False]


@pytest.mark.parametrize("query, names", [
    ("limit=0", "limit"), ("limit=10001", "limit"), ("limit=abc", "limit"), ("limit=-1", "limit"),
    ("since=yesterday", "since"), ("until=1e99", "until"), ("since=3000-01-01", "since"),
    ("severity=fatal", "severity"), ("colour=red", "colour"), ("limit=1&limit=2", "limit"),
    ("series=" + "x" * 1025, "series"), ("service=a%27b", "service"),
])
def test_bad_parameters_are_400_naming_the_parameter(world: World, query: str, names: str) -> None:
    reply = world.call("GET", f"/v1/tenants/acme/anomalies?{query}", world.key("viewer"))
    assert reply.status == 400 and names in reply.json["error"], reply.text


def test_bad_path_values_are_400(world: World) -> None:
    reply = world.call("GET", "/v1/tenants/acme/traces/not-hex", world.key("viewer"))
    assert reply.status == 400 and "trace_id" in reply.json["error"]
    reply = world.call("DELETE", "/v1/tenants/acme/keys/zz", world.key("tenant-admin"))
    assert reply.status == 400 and "key_id" in reply.json["error"]


def test_unknown_tenant_is_404_for_the_platform_and_403_for_a_tenant(world: World) -> None:
    for tenant in ("nosuch", "ACME", "a"):
        assert world.call("GET", f"/v1/tenants/{tenant}/anomalies", world.key("platform-admin")).status == 404
        assert world.call("GET", f"/v1/tenants/{tenant}/anomalies", world.key("tenant-admin")).status == 403
    # the same answer for a tenant that exists and one that does not: no oracle of tenant names
    assert (world.call("GET", "/v1/tenants/globex/anomalies", world.key("viewer")).status
            == world.call("GET", "/v1/tenants/nosuch/anomalies", world.key("viewer")).status == 403)


def test_bodies_are_checked_and_capped(world: World) -> None:
    key, path = world.key("analyst"), "/v1/tenants/acme/query"
    assert world.call("POST", path, key, raw_body=b"{not json").status == 400
    assert world.call("POST", path, key, raw_body=b"").status == 400
    assert "sql" in world.call("POST", path, key, body={"sql": 1}).json["error"]
    assert world.call("POST", path, key, body={"sql": "SELECT 1", "tenant": "globex"}).status == 400
    big = json.dumps({"sql": "SELECT 1 -- " + "x" * world.settings.api_max_body_bytes}).encode()
    assert world.call("POST", path, key, raw_body=big).status == 413


def test_tenant_sql_sees_only_the_tenant_and_admin_sql_sees_all(world: World) -> None:
    sql = {"sql": "SELECT DISTINCT tenant FROM anomalies ORDER BY tenant"}
    assert world.call("POST", "/v1/tenants/acme/query", world.key("analyst"), sql).json["rows"] == [["acme"]]
    assert world.call("POST", "/v1/query", world.key("platform-admin"), sql).json["rows"] == [["acme"], ["globex"]]
    refused = world.call("POST", "/v1/tenants/acme/query", world.key("analyst"), {"sql": "SELECT * FROM file('/etc/passwd')"})
    assert refused.status == 400 and refused.json["error"]


def test_a_tenant_admin_manages_its_own_keys_only(world: World) -> None:
    admin, keys = world.key("tenant-admin"), "/v1/tenants/acme/keys"
    created = world.call("POST", keys, admin, {"roles": ["viewer"], "name": "grafana"})
    assert created.status == 201 and created.json["tenant"] == "acme" and created.json["created_by"].startswith("key:")
    new = created.json["key"]
    assert world.call("GET", "/v1/whoami", new).json["roles"] == ["viewer"]
    listed = world.call("GET", keys, admin).json["items"]
    assert created.json["id"] in {k["id"] for k in listed} and "m1_" not in json.dumps(listed)
    assert world.call("POST", keys, admin, {"roles": ["platform-admin"]}).status == 403
    assert world.call("POST", keys, admin, {"roles": ["monitoring"]}).status == 403
    assert world.call("POST", keys, admin, {"roles": ["root"]}).status == 400
    assert world.call("POST", keys, admin, {"roles": []}).status == 400
    globex_key = world.registry.create_key("globex", ["viewer"], created_by="test")[0]
    assert world.call("DELETE", f"{keys}/{globex_key.id}", admin).status == 404  # not found *in acme*
    assert not world.registry.key(globex_key.id).revoked
    assert world.call("DELETE", f"{keys}/{created.json['id']}", admin).json["revoked_at"] is not None
    assert world.call("GET", "/v1/whoami", new).status == 401


def test_the_platform_creates_and_disables_tenants(world: World) -> None:
    platform = world.key("platform-admin")
    created = world.call("POST", "/v1/tenants", platform, {"name": "initech", "quotas": {"requests_per_second": 5}})
    assert created.status == 201 and created.json["quotas"] == {"requests_per_second": 5}
    assert world.call("POST", "/v1/tenants", platform, {"name": "initech"}).status == 400
    assert world.call("POST", "/v1/tenants", platform, {"name": "Bad Name"}).status == 400
    assert "initech" in {t["name"] for t in world.call("GET", "/v1/tenants", platform).json["items"]}
    key = world.call("POST", "/v1/tenants/initech/keys", platform, {"roles": ["viewer"]}).json["key"]
    assert world.call("GET", "/v1/tenants/initech/anomalies", key).status == 200
    assert world.call("POST", "/v1/tenants/initech/disable", platform).json["disabled"] is True
    assert world.call("GET", "/v1/tenants/initech/anomalies", key).status == 401


def test_tenant_info_has_quotas_and_usage(world: World) -> None:
    info = world.call("GET", "/v1/tenants/acme", world.key("operator")).json
    assert info["name"] == "acme" and info["quotas"]["requests_per_second"] == 100_000
    assert info["usage"]["series"] == 1 and info["usage"]["points_last_hour"] == 20


def test_over_the_request_rate_is_429_with_retry_after(world: World) -> None:
    world.registry.create_tenant("slowco", {"requests_per_second": 0.5})
    key = world.registry.create_key("slowco", ["viewer"], created_by="test")[1]
    assert world.call("GET", "/v1/tenants/slowco/anomalies", key).status == 200
    refused = world.call("GET", "/v1/tenants/slowco/anomalies", key)
    assert refused.status == 429 and refused.headers["Retry-After"] == "2"
    assert world.call("GET", "/v1/tenants/acme/anomalies", world.key("viewer")).status == 200  # others unaffected


def test_on_demand_bottlenecks_run_for_the_path_tenant(world: World) -> None:
    reply = world.call("POST", "/v1/tenants/acme/bottlenecks", world.key("operator"), {"window_seconds": 600})
    assert reply.status == 200 and reply.json["reports"] == [{"entry_service": "acme-checkout", "rows": 20}]
    assert world.bottleneck_runs[-1] == ("acme", None)
    assert world.call("POST", "/v1/tenants/acme/bottlenecks", world.key("operator"), {"window_seconds": 1}).status == 400


def test_every_decision_is_logged_and_stored(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="m1.access")
    marker = "/v1/tenants/acme/anomalies?severity=warning&limit=7"
    world.call("GET", marker, world.key("viewer"))            # allowed
    world.call("GET", marker, world.key("auditor"))           # no permission
    world.call("GET", marker, world.revoked_key)              # revoked
    world.call("GET", marker.replace("acme", "globex"), world.key("viewer"))  # acme's key on globex
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "m1.access"]
    assert [(l["decision"], l["status"]) for l in lines if l["path"].endswith("limit=7")] == [
        ("allow", 200), ("deny", 403), ("deny", 401), ("deny", 403)]
    world.flush_access_log()
    audit = world.call("GET", "/v1/tenants/acme/audit?limit=1000", world.key("auditor")).json["items"]
    mine = [(a["decision"], a["status"], a["roles"]) for a in audit if a["path"] == marker]
    assert sorted(mine) == sorted([("allow", 200, ["viewer"]), ("deny", 403, ["auditor"]), ("deny", 401, [])])
    revoked = next(a for a in audit if a["path"] == marker and a["status"] == 401)
    assert revoked["reason"] == "API key revoked" and revoked["subject"].startswith("key:")
    # acme's attempt on globex is in globex's log, without naming acme
    theirs = world.call("GET", "/v1/tenants/globex/audit?decision=deny&limit=1000", world.key("auditor", "globex")).json
    attempt = [a for a in theirs["items"] if a["path"] == marker.replace("acme", "globex")]
    assert len(attempt) == 1 and "acme" not in json.dumps(attempt)


def test_too_many_new_credentials_at_once_is_503_not_a_verdict(world: World) -> None:
    authenticator = world.api.authenticator
    known = world.key("viewer")
    assert world.call("GET", "/v1/whoami", known).status == 200  # remembered from now on
    authenticator.max_pending, before = 0, authenticator.max_pending  # as if 256 checks were queued
    try:
        busy = world.call("GET", "/v1/whoami", world.registry.create_key("globex", ["viewer"], created_by="test")[1])
        assert busy.status == 503 and busy.headers["Retry-After"] == "1"
        assert world.call("GET", "/v1/whoami", known).status == 200
    finally:
        authenticator.max_pending = before


def test_the_access_log_writes_in_batches(world: World) -> None:
    """Recording a decision writes nothing to the store; one flush writes the whole batch."""
    log = AccessLog(world.store)
    for i in range(100):
        log.record(AccessEntry(ts=time.time(), method="GET", path=f"/batch/{i}", remote="127.0.0.1", tenant="batchco"))
    count = "SELECT count() FROM access_log WHERE tenant = 'batchco'"
    assert world.store.query(count).rows == [(0,)]
    assert asyncio.run(log.flush()) == 100 and asyncio.run(log.flush()) == 0
    assert world.store.query(count).rows == [(100,)]


def test_metrics_are_prometheus_text_for_a_monitoring_key_only(world: World) -> None:
    reply = world.call("GET", "/v1/metrics", world.key("monitoring"))
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE m1_points_stored_total counter" in reply.text and "# TYPE m1_batch_seconds histogram" in reply.text
    assert world.call("GET", "/v1/tenants/platform/anomalies", world.key("monitoring")).status == 403
    assert world.call("GET", "/v1/whoami", world.key("monitoring")).json["permissions"] == ["metrics:read"]
