"""The authorisation matrix (authz_matrix.yaml), cell by cell, against the running API.

Every route x role x (own tenant, other tenant), no credentials and a revoked key: the answer
must be what the matrix says, and an allowed answer to a tenant's caller must hold no row of
another tenant (every seeded string names its tenant, see tests/api_world.py).
"""

from __future__ import annotations

import itertools
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.routes import ROUTES
from core.tenant_names import PLATFORM
from tenancy.roles import PLATFORM_ROLES
from tests.api_world import ROLES, TRACE_IDS, World, make_world

MATRIX: dict[str, dict[str, Any]] = yaml.safe_load((Path(__file__).parent / "authz_matrix.yaml").read_text())
OUTCOMES = {"allow", "deny", "refuse"}
_fresh = itertools.count()

#: Listings whose answer to the caller's own tenant must hold rows (its seeded data).
SEEDED = {"series", "points", "anomalies", "forecasts", "recommendations", "costs", "bottlenecks", "traces", "{trace_id}"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    world = make_world(tmp_path_factory.mktemp("authz"))
    yield world
    world.close()


def route_key(method: str, path: str) -> str:
    return f"{method} {path}"


def test_every_route_has_rows_and_every_row_a_route() -> None:
    routes = {route_key(r.method, r.path): r for r in ROUTES}
    assert sorted(set(routes) - set(MATRIX)) == [], "routes without rows in authz_matrix.yaml"
    assert sorted(set(MATRIX) - set(routes)) == [], "rows of authz_matrix.yaml without a route"
    for key, row in MATRIX.items():
        columns = ["own", "other"] if routes[key].tenant_scoped else ["any"]
        assert sorted(row) == sorted([*columns, "anonymous", "revoked"]), key
        for column in columns:
            assert list(row[column]) == list(ROLES), f"{key} {column}: every role, in order"
            assert set(row[column].values()) <= OUTCOMES, key
        assert {row["anonymous"], row["revoked"]} <= OUTCOMES, key


def request(world: World, key: str, tenant: str) -> tuple[str, str, Any]:
    """(method, path, JSON body) of a valid request of route ``key`` on ``tenant``'s data."""
    method, template = key.split(" ", 1)
    path = template.replace("{tenant}", tenant)
    if "{key_id}" in path:  # a live key of that tenant, so only authorisation can refuse the revoke
        path = path.replace("{key_id}", world.registry.create_key(tenant, ["viewer"], created_by="matrix")[0].id)
    path = path.replace("{trace_id}", TRACE_IDS.get(tenant, "c" * 32))
    path = path.replace("{event_id}", "0" * 64)  # no such audit event: the allowed get 404 (refuse)
    # no such incident or silence: the allowed reads and actions get 404 (refuse)
    path = path.replace("{incident_id}", "inc-" + "0" * 16).replace("{silence_id}", "0" * 16)
    if path.endswith("/points"):
        path += "?series=" + urllib.parse.quote(f"{tenant}|eu|{tenant}-api|rps|host={tenant}-h")
    body = None
    if method == "POST":
        body = {
            "/v1/tenants": {"name": f"matrix-{next(_fresh)}"},
            "/v1/query": {"sql": "SELECT count() FROM anomalies"},
        }.get(template, {})
        if template.endswith("/keys"):
            body = {"roles": ["viewer"], "name": "matrix"}
        elif template.endswith("/query") and template != "/v1/query":
            body = {"sql": "SELECT tenant, series, severity FROM anomalies"}
        elif template.endswith("/disable"):
            body = None
        elif "/gdpr/" in template:
            body = {"subject": f"{tenant}-subject@example.com"}
    if method == "PUT" and template.endswith("/legal-hold"):
        body = {"reason": "matrix"}
    return method, path, body


def outcome(status: int, authenticated: bool) -> str:
    if 200 <= status < 300:
        return "allow"
    if status == (403 if authenticated else 401):
        return "deny"
    return "refuse" if 400 <= status < 500 and status not in (401, 403) else f"status {status}"


def cells() -> Iterator[tuple[str, str, str | None, str]]:
    """(route, column, role or None, expected) of every cell."""
    for key, row in MATRIX.items():
        for column in ("own", "other", "any"):
            for role, expected in row.get(column, {}).items():
                yield key, column, role, expected
        yield key, "anonymous", None, row["anonymous"]
        yield key, "revoked", None, row["revoked"]


def target(world: World, key: str, column: str, role: str | None) -> str:
    """The tenant the path names: the caller's own, or another (a throwaway one when the
    request would disable it)."""
    own = PLATFORM if role in PLATFORM_ROLES else "acme"
    if column != "other":
        return own
    if key.endswith("/disable") and role == "platform-admin":
        return world.registry.create_tenant(f"scratch-{next(_fresh)}").name
    return "acme" if role in PLATFORM_ROLES else "globex"


def test_every_cell_of_the_matrix_holds(world: World) -> None:
    mismatches, checked = [], 0
    for key, column, role, expected in cells():
        tenant = target(world, key, column, role)
        method, path, body = request(world, key, tenant)
        credential = world.revoked_key if column == "revoked" else world.key(role) if role else None
        reply = world.call(method, path, credential, body)
        got = outcome(reply.status, credential is not None and column != "revoked")
        checked += 1
        if got != expected:
            mismatches.append(f"{key} [{column}, {role}]: expected {expected}, got {got}: {reply.text[:200]}")
            continue
        if got == "allow" and role is not None and role not in PLATFORM_ROLES:  # a tenant's caller
            leak = "globex" if tenant == "acme" else "acme"
            if leak in reply.text:
                mismatches.append(f"{key} [{column}, {role}]: the answer holds {leak}'s data: {reply.text[:200]}")
            last = key.rsplit("/", 1)[-1]
            if method == "GET" and last in SEEDED and not reply.json["items"]:
                mismatches.append(f"{key} [{column}, {role}]: no rows of the caller's own tenant")
    assert checked == sum(len(r.get("own", r.get("any", {}))) * (2 if "own" in r else 1) + 2 for r in MATRIX.values())
    assert mismatches == [], f"{len(mismatches)} of {checked} cells differ:\n" + "\n".join(mismatches)
