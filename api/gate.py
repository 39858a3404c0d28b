"""The gate every request passes: authenticate, rate-limit, authorise, check input, record.

In order, for a request to any path except the two public routes:

1. **Authenticate** the ``Authorization: Bearer`` header (API key or OIDC token): failure is
   401 with ``WWW-Authenticate: Bearer`` (503 with ``Retry-After`` when too many new
   credentials are being checked at once: no verdict on this one). Unknown paths are answered only after this, so
   without credentials every non-public path looks the same.
2. **Rate-limit** the caller's tenant (``requests_per_second`` of ``tenancy.quotas``): 429
   with ``Retry-After`` (whole seconds).
3. **Route**: no route -> 404 (405 for a known path with another method).
4. **Authorise** ``principal.can(permission, path tenant)``: 403 if a role lacks the permission
   or the path names a tenant that is not the caller's (whether or not it exists: a tenant's
   caller cannot learn which other tenants exist). Then a tenant-scoped path naming no tenant
   is 404 -- only reachable by a platform-admin, or by a caller naming its own tenant.
5. **Check input**: query and path parameters and the JSON body (400 with the reason; 413
   over ``M1_API_MAX_BODY_BYTES``).

Handlers raise ``ValueError`` for bad requests (400: ``api.params.BadInput``, the SQL guard's
``QueryRefused``, registry refusals), ``tenancy.registry.NotFound`` (404) and ``PermissionError``
(403). Every answer is JSON (``{"error": ...}`` when refused), except what a handler returns as
an ``aiohttp.web.Response`` of its own (the Prometheus text of ``GET /v1/metrics``). Every decision, allowed or denied,
goes to the :class:`~api.access.AccessLog`; ``decision`` is ``allow`` once step 4 passed.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from api.access import AccessEntry
from api.answer import json_response
from api.params import BadInput, parse_all
from api.route import AUTHENTICATED, PUBLIC, Call, Refused, Route
from tenancy.authn import AuthenticationBusy, AuthenticationError
from core.tenant_names import check_tenant
from tenancy.principal import Principal
from tenancy.quotas import LimiterPool, tenant_quotas
from tenancy.registry import NotFound

if TYPE_CHECKING:
    from api.app import Api

log = logging.getLogger(__name__)

#: Key of the API's services (api.app.Api) in the aiohttp application.
API = web.AppKey("api", Any)


class TenantRates:
    """Per-tenant request rate: one token bucket per tenant, at its ``requests_per_second``
    (a burst of one second's worth, at least one request)."""

    def __init__(self, settings: Any, registry: Any) -> None:
        self.settings, self.registry = settings, registry
        self._limiters = LimiterPool()

    def retry_after(self, tenant: str) -> float:
        """0.0 if ``tenant`` may make a request now (and counts it), else seconds to wait."""
        rate = tenant_quotas(self.settings, self.registry, tenant).requests_per_second
        return self._limiters.at(rate).try_acquire(tenant)


@web.middleware
async def gate(request: web.Request, handler: Any) -> web.StreamResponse:
    """The aiohttp middleware applying the steps above to every request."""
    api: Api = request.app[API]
    started = time.perf_counter()
    route: Route | None = api.routes.get(request.match_info.route)
    entry = AccessEntry(ts=time.time(), method=request.method[:16], path=request.raw_path[:1024],
                        remote=request.remote or "", permission=route.permission if route else "")
    try:
        response = await _decide_and_run(request, api, route, entry)
    except Refused as exc:
        entry.reason = exc.reason
        response = json_response({"error": exc.reason}, status=exc.status, headers=exc.headers)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        entry.reason = "internal error"
        response = json_response({"error": "internal error"}, status=500)
    entry.status = response.status
    entry.duration_ms = (time.perf_counter() - started) * 1000
    api.access.record(entry)
    return response


async def _decide_and_run(request: web.Request, api: Api, route: Route | None,
                          entry: AccessEntry) -> web.StreamResponse:
    principal = None
    tenant = request.match_info["tenant"] if route is not None and route.tenant_scoped else None
    entry.tenant = tenant if tenant is not None and _valid(tenant) else ""
    if route is None or route.permission != PUBLIC:
        principal = await _authenticate(request, api, entry)
        if (wait := api.rates.retry_after(principal.tenant)) > 0:
            raise Refused(429, "over the caller's tenant request rate; retry later",
                          {"Retry-After": str(max(1, math.ceil(min(wait, 86_400))))})
    if route is None:
        exc = request.match_info.http_exception
        raise Refused(exc.status if exc else 404, "no such route" if not exc or exc.status == 404 else exc.reason)
    _authorise(route, principal, tenant)
    entry.decision = "allow"
    if tenant is not None:
        _check_exists(api, tenant)
    try:
        call = Call(request, api, principal, tenant, parse_all(route.params, request.match_info, request.query),
                    await _body(request, route))
        answer = await route.handler(call)
        return answer if isinstance(answer, web.Response) else json_response(answer, status=route.status)
    except NotFound as exc:
        raise Refused(404, str(exc)) from None
    except PermissionError as exc:
        raise Refused(403, str(exc)) from None
    except ValueError as exc:  # BadInput, the SQL guard's QueryRefused, registry refusals
        raise Refused(400, str(exc)) from None
    except web.HTTPException as exc:  # 413 from the body size cap
        raise Refused(exc.status, exc.reason) from None


async def _authenticate(request: web.Request, api: Api, entry: AccessEntry) -> Principal:
    try:
        principal = await api.authenticator.authenticate_async(request.headers.get("Authorization"))
    except AuthenticationBusy as exc:  # no verdict on this credential: too many new ones at once
        raise Refused(503, exc.reason, {"Retry-After": "1"}) from None
    except AuthenticationError as exc:
        entry.subject = exc.subject or ""
        raise Refused(401, exc.reason, {"WWW-Authenticate": 'Bearer realm="m1"'}) from None
    entry.subject, entry.via, entry.roles = principal.subject, principal.via, sorted(principal.roles)
    entry.tenant = entry.tenant or principal.tenant
    return principal


def _authorise(route: Route, principal: Principal | None, tenant: str | None) -> None:
    if route.permission in (PUBLIC, AUTHENTICATED):
        return
    assert principal is not None
    if route.permission not in principal.permissions:
        raise Refused(403, f"roles {', '.join(sorted(principal.roles))} do not grant {route.permission}")
    if not principal.can(route.permission, tenant):
        raise Refused(403, f"{route.permission} is not granted on tenant {tenant[:64]!r}")


def _valid(tenant: str) -> bool:
    try:
        check_tenant(tenant)
    except ValueError:
        return False
    return True


def _check_exists(api: Api, tenant: str) -> None:
    try:
        api.registry.tenant(check_tenant(tenant))
    except (ValueError, NotFound):  # NotFound is a ValueError too
        raise Refused(404, f"no tenant {tenant[:64]!r}") from None


async def _body(request: web.Request, route: Route) -> Any:
    if route.body is None:
        return None
    raw = await request.read()
    try:
        return msgspec.json.decode(raw or b"{}", type=route.body)
    except msgspec.DecodeError as exc:
        raise BadInput(f"request body: {exc}") from None
