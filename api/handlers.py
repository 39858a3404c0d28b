"""What each route does, once the gate has authorised it (see ``api.routes`` for who may call what).

Store reads run in a thread (the engine blocks); tenant-scoped handlers act on ``call.tenant``
only, which the gate has checked against the caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import asdict
from typing import Annotated, Any, Protocol

import msgspec
from aiohttp import web

from api.answer import json_value, rows_as_items
from api.resources import Listing
from api.route import Call, Handler, Refused
from core.pipeline_metrics import CONTENT_TYPE
from tenancy.quotas import tenant_quotas
from tenancy.registry import NotFound
from tenancy.roles import ANY_TENANT, PERMISSIONS, ROLES, TENANT_GRANTABLE, check_roles

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-/]+$")]


class QueryBody(msgspec.Struct, forbid_unknown_fields=True):
    """``{"sql": "SELECT ..."}``: one read-only statement."""

    sql: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]


class NewKey(msgspec.Struct, forbid_unknown_fields=True):
    """``{"roles": ["viewer"], "name": "grafana"}``: roles of the new key and a label for it."""

    roles: Annotated[list[str], msgspec.Meta(min_length=1, max_length=len(ROLES))]
    name: Annotated[str, msgspec.Meta(max_length=128)] = ""


class NewTenant(msgspec.Struct, forbid_unknown_fields=True):
    """``{"name": "acme", "quotas": {"requests_per_second": 20}}``: quotas are optional overrides."""

    name: Annotated[str, msgspec.Meta(max_length=32)]
    quotas: dict[str, float] = {}


class GdprSubject(msgspec.Struct, forbid_unknown_fields=True):
    """``{"subject": "alice@example.com"}``: the data subject, as the tenant's data names it."""

    subject: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class LegalHold(msgspec.Struct, forbid_unknown_fields=True):
    """``{"reason": "case 42"}``: why the tenant's data is held."""

    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class BottleneckRun(msgspec.Struct, forbid_unknown_fields=True):
    """``{"services": [...], "window_seconds": 900, "limit": 10}``, all optional."""

    services: Annotated[list[Name], msgspec.Meta(max_length=100)] | None = None
    window_seconds: Annotated[int, msgspec.Meta(ge=60, le=7 * 86_400)] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None


class RunBottlenecks(Protocol):
    """One on-demand bottleneck run, called with keywords: it analyses ``tenant``'s traces only
    (``ResourceAttributes['tenant']``), stores the reports with the tenant and returns them."""

    def __call__(self, *, tenant: str, services: list[str] | None, window_seconds: int | None,
                 limit: int | None) -> Awaitable[list[dict]]: ...


def listing(spec: Listing) -> Handler:
    """The handler answering ``{"items": [...]}`` with the rows of ``spec`` for the path's tenant."""

    async def handler(call: Call) -> dict[str, Any]:
        values = {name: v for name, v in call.params.items() if v is not None}
        result = await call.api.read(spec.sql(values), {**values, "tenant": call.tenant})
        return {"items": rows_as_items(result.columns, result.rows)}

    return handler


async def health(call: Call) -> dict[str, Any]:
    return {"status": "ok"}


async def openapi(call: Call) -> dict[str, Any]:
    return call.api.openapi


async def whoami(call: Call) -> dict[str, Any]:
    p = call.principal
    return {"subject": p.subject, "tenant": p.tenant, "roles": sorted(p.roles), "via": p.via,
            "permissions": sorted(p.permissions)}


async def roles(call: Call) -> dict[str, Any]:
    return {"roles": {name: sorted(perms) for name, perms in ROLES.items()}, "permissions": PERMISSIONS,
            "tenant_grantable": sorted(TENANT_GRANTABLE)}


async def metrics(call: Call) -> web.Response:
    """The worker's metrics in Prometheus' text format; 503 where no pipeline runs (``m1 api``)."""
    if call.api.metrics is None:
        raise Refused(503, "this process runs no pipeline: its metrics are served by the worker")
    await call.api.metrics.refresh()
    return web.Response(body=call.api.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})


async def list_tenants(call: Call) -> dict[str, Any]:
    return {"items": [t.as_dict() for t in await asyncio.to_thread(call.api.registry.tenants)]}


async def create_tenant(call: Call) -> dict[str, Any]:
    body: NewTenant = call.body
    return (await asyncio.to_thread(call.api.registry.create_tenant, body.name, body.quotas)).as_dict()


async def disable_tenant(call: Call) -> dict[str, Any]:
    return (await asyncio.to_thread(call.api.registry.disable_tenant, call.tenant)).as_dict()


_USAGE = """
SELECT
    (SELECT uniqExact(series) FROM metric_points WHERE tenant = {tenant:String}) AS series,
    (SELECT count() FROM metric_points
     WHERE tenant = {tenant:String} AND ts >= now64(3) - INTERVAL 1 HOUR) AS points_last_hour,
    (SELECT count() FROM access_log
     WHERE tenant = {tenant:String} AND ts >= now64(3) - INTERVAL 1 HOUR) AS requests_last_hour
"""


async def tenant_info(call: Call) -> dict[str, Any]:
    """The tenant, its effective quotas and its usage (series held, points and API requests in the last hour)."""
    api = call.api
    tenant = await asyncio.to_thread(api.registry.tenant, call.tenant)
    usage = await api.read(_USAGE, {"tenant": call.tenant})
    return {**tenant.as_dict(), "quotas": asdict(tenant_quotas(api.settings, api.registry, call.tenant)),
            "quota_overrides": tenant.quotas, "usage": rows_as_items(usage.columns, usage.rows)[0]}


async def list_keys(call: Call) -> dict[str, Any]:
    return {"items": [k.as_dict() for k in await asyncio.to_thread(call.api.registry.keys, call.tenant)]}


async def create_key(call: Call) -> dict[str, Any]:
    """A new key of the path's tenant; the raw key is in this answer only. Without the any-tenant
    permission (a tenant-admin) only :data:`~tenancy.roles.TENANT_GRANTABLE` roles may be given."""
    body: NewKey = call.body
    wanted = check_roles(body.roles)
    if ANY_TENANT not in call.principal.permissions and not wanted <= TENANT_GRANTABLE:
        raise PermissionError(f"a tenant's keys may hold only {', '.join(sorted(TENANT_GRANTABLE))}")
    info, raw = await asyncio.to_thread(call.api.registry.create_key, call.tenant, wanted, body.name,
                                        call.principal.subject)
    return {**info.as_dict(), "key": raw}


async def revoke_key(call: Call) -> dict[str, Any]:
    """Revoke a key of the path's tenant; a key of another tenant is not found here."""
    registry, key_id = call.api.registry, call.params["key_id"]
    if (await asyncio.to_thread(registry.key, key_id)).tenant != call.tenant:
        raise NotFound(f"no API key {key_id!r}")
    return (await asyncio.to_thread(registry.revoke_key, key_id)).as_dict()


async def audit_verify(call: Call) -> dict[str, Any]:
    """The tenant's audit trail verified now (``audit.verify``); the witness file is read, not updated."""
    from audit.verify import verify_now  # the audit package builds on the store, as the API does

    return await asyncio.to_thread(verify_now, call.api.settings, call.api.store, call.tenant, call.params.get("since"))


async def audit_proof(call: Call) -> dict[str, Any]:
    """The inclusion proof of one of the tenant's audit events (``audit.proofs.prove``)."""
    from audit.proofs import ProofUnavailable, prove

    try:
        return await asyncio.to_thread(prove, call.api.store, call.params["event_id"], call.tenant)
    except ProofUnavailable as exc:
        raise NotFound(str(exc)) from None


async def tenant_query(call: Call) -> dict[str, Any]:
    """SQL that sees the path tenant's rows only (``Store.tenant_query``: guarded and limited)."""
    result = await asyncio.to_thread(call.api.store.tenant_query, call.body.sql, call.tenant)
    return {"columns": result.columns, "rows": [[json_value(v) for v in row] for row in result.rows]}


async def admin_query(call: Call) -> dict[str, Any]:
    """SQL over every tenant's rows (``Store.admin_query``: guarded and limited)."""
    result = await asyncio.to_thread(call.api.store.admin_query, call.body.sql)
    return {"columns": result.columns, "rows": [[json_value(v) for v in row] for row in result.rows]}


async def run_bottlenecks(call: Call) -> dict[str, Any]:
    """Run the bottleneck analysis of the path tenant's traces now (where the process has the job)."""
    run = call.api.run_bottlenecks
    if run is None:
        raise Refused(503, "the bottleneck analysis runs in the worker; this API was started without it")
    body: BottleneckRun = call.body
    return {"reports": await run(tenant=call.tenant, services=body.services, window_seconds=body.window_seconds,
                                 limit=body.limit)}


async def gdpr_export(call: Call) -> dict[str, Any]:
    """Everything the path tenant's data holds about a subject, decrypted (``compliance.gdpr``)."""
    return await _gdpr(call, "export")


async def gdpr_erase(call: Call) -> dict[str, Any]:
    """Destroy a subject's key in the path tenant (crypto-shredding, ``compliance.gdpr``)."""
    return await _gdpr(call, "erase")


async def _gdpr(call: Call, right: str) -> dict[str, Any]:
    return await _compliance(call).gdpr.run(right, call.tenant, call.body.subject, actor=call.principal.subject)


async def legal_holds(call: Call) -> dict[str, Any]:
    return {"items": await _compliance(call).holds()}


async def set_legal_hold(call: Call) -> dict[str, Any]:
    """Hold the path tenant's data: no retention deletes it until the hold is cleared."""
    return await _compliance(call).hold(call.tenant, True, call.principal.subject, call.body.reason)


async def clear_legal_hold(call: Call) -> dict[str, Any]:
    return await _compliance(call).hold(call.tenant, False, call.principal.subject, "cleared")


async def retention(call: Call) -> dict[str, Any]:
    return await _compliance(call).show_retention()


async def apply_retention(call: Call) -> dict[str, Any]:
    return await _compliance(call).apply_retention(call.principal.subject)


async def compliance_report(call: Call) -> dict[str, Any]:
    return await _compliance(call).report(call.params.get("framework"))


def _compliance(call: Call) -> Any:
    if call.api.compliance is None:
        raise Refused(503, "compliance operations run in the worker (it owns the store and sends their audit "
                           "events); this API was started without them")
    return call.api.compliance
