"""What a route is: method, path, the permission it needs, its handler, parameters and schemas.

A :class:`Route` cannot be made without a permission: it must name one of
:data:`tenancy.roles.PERMISSIONS`, or :data:`AUTHENTICATED` (any authenticated caller: who am I,
which roles exist), or :data:`PUBLIC`, which only the routes in :data:`PUBLIC_ROUTES` may use.
A path naming ``{tenant}`` is tenant-scoped: the caller must hold the permission on that tenant.

>>> async def handler(call): return {}
>>> Route("GET", "/v1/tenants/{tenant}/anomalies", "anomalies:read", handler, "Anomalies").tenant_scoped
True
>>> Route("GET", "/v1/secrets", "", handler, "Secrets")
Traceback (most recent call last):
...
ValueError: GET /v1/secrets: permission '' is not a permission (tenancy.roles.PERMISSIONS), AUTHENTICATED or PUBLIC
>>> Route("GET", "/v1/debug", PUBLIC, handler, "Debug")
Traceback (most recent call last):
...
ValueError: GET /v1/debug: only GET /v1/health, GET /v1/openapi.json may be public
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from api.params import Param
from tenancy.roles import PERMISSIONS

if TYPE_CHECKING:
    from api.app import Api
    from tenancy.principal import Principal

#: Marker permission: no authentication at all (only :data:`PUBLIC_ROUTES`).
PUBLIC = "public"
#: Marker permission: any authenticated caller, whatever its roles; never tenant-scoped.
AUTHENTICATED = "authenticated"
#: The only routes that may be public.
PUBLIC_ROUTES = frozenset({("GET", "/v1/health"), ("GET", "/v1/openapi.json")})
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


class Refused(Exception):
    """Raised to answer ``status`` with ``{"error": reason}`` (and ``headers``)."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


@dataclass
class Call:
    """One authorised request as a handler sees it: checked parameters and body, the caller,
    the path's tenant (tenant-scoped routes) and the API's services."""

    request: web.Request
    api: Api
    principal: Principal | None
    tenant: str | None
    params: dict[str, Any]
    body: Any


#: A handler returns the JSON answer (a dict or list); errors are raised (see api.gate).
Handler = Callable[[Call], Awaitable[Any]]


@dataclass(frozen=True)
class Route:
    """One operation of the API; ``body`` is the msgspec Struct its JSON body decodes to,
    ``response`` the JSON Schema of its answer (of type ``content_type``), ``status`` its success status."""

    method: str
    path: str
    permission: str
    handler: Handler = field(repr=False)
    summary: str
    params: tuple[Param, ...] = ()
    body: type | None = None
    response: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    status: int = 200
    content_type: str = "application/json"

    def __post_init__(self) -> None:
        where = f"{self.method} {self.path}"
        if self.method not in METHODS or not self.path.startswith("/v1/"):
            raise ValueError(f"{where}: method must be one of {', '.join(METHODS)} and the path under /v1/")
        if self.permission not in PERMISSIONS and self.permission not in (PUBLIC, AUTHENTICATED):
            raise ValueError(f"{where}: permission {self.permission!r} is not a permission "
                             "(tenancy.roles.PERMISSIONS), AUTHENTICATED or PUBLIC")
        if self.permission == PUBLIC and (self.method, self.path) not in PUBLIC_ROUTES:
            raise ValueError(f"{where}: only {', '.join(' '.join(r) for r in sorted(PUBLIC_ROUTES))} may be public")
        if self.tenant_scoped and self.permission in (PUBLIC, AUTHENTICATED):
            raise ValueError(f"{where}: a tenant's resource needs a permission")
        declared = {p.name for p in self.params if p.where == "path"} | {"tenant"}
        if missing := set(self.path_names) - declared:
            raise ValueError(f"{where}: path parameters {sorted(missing)} are not declared")

    @property
    def path_names(self) -> list[str]:
        return re.findall(r"\{(\w+)\}", self.path)

    @property
    def tenant_scoped(self) -> bool:
        return "tenant" in self.path_names
