"""The OpenAPI 3.1 document, made from the route table (``GET /v1/openapi.json``).

Every operation lists its parameters (the path's tenant included), its JSON body, its answer,
the refusals it can give, the permission it needs (``x-permission``) and, unless public, the
``bearerAuth`` scheme (an API key ``m1_<id>_<secret>`` or an OIDC JWT).

>>> from api.routes import ROUTES
>>> doc = document(ROUTES)
>>> doc["openapi"], doc["paths"]["/v1/tenants/{tenant}/anomalies"]["get"]["x-permission"]
('3.1.0', 'anomalies:read')
>>> doc["paths"]["/v1/health"]["get"]["security"]
[]
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import msgspec

from api.route import PUBLIC, Route

_TENANT = {"name": "tenant", "in": "path", "required": True, "description": "Tenant name.",
           "schema": {"type": "string", "pattern": "^[a-z][a-z0-9-]{1,31}$"}}
_ERROR = {"description": "", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_REFUSALS = {"400": "Invalid parameter or body.", "401": "Missing or invalid credentials.",
             "403": "A role does not grant the permission, or the tenant is not the caller's.",
             "404": "No such tenant or object.", "429": "Over the tenant's request rate; see Retry-After."}


def document(routes: Iterable[Route], version: str = "1") -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes``."""
    routes = list(routes)
    bodies = [r.body for r in routes if r.body is not None]
    body_schemas, components = msgspec.json.schema_components(bodies, ref_template="#/components/schemas/{name}")
    body_of = dict(zip(bodies, body_schemas))
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, body_of.get(route.body))
    components["Error"] = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
    return {
        "openapi": "3.1.0",
        "info": {"title": "M1 Analytics API", "version": version,
                 "description": "Tenant-scoped reads of the M1 Analytics store. Every route but /v1/health and "
                                "/v1/openapi.json needs 'Authorization: Bearer <API key or OIDC token>'."},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "An API key (m1_<id>_<secret>) or an OIDC JWT (RS256/ES256)."}},
        },
        "security": [{"bearerAuth": []}],
    }


def _operation(route: Route, body_schema: dict[str, Any] | None) -> dict[str, Any]:
    public = route.permission == PUBLIC
    operation: dict[str, Any] = {
        "operationId": route.method.lower() + re.sub(r"[^A-Za-z0-9]+", "_", route.path.removeprefix("/v1")).rstrip("_"),
        "summary": route.summary,
        "x-permission": route.permission,
        "parameters": ([_TENANT] if route.tenant_scoped else []) + [p.openapi() for p in route.params],
        "responses": {str(route.status): {"description": "OK",
                                          "content": {route.content_type: {"schema": route.response}}}},
        "security": [] if public else [{"bearerAuth": []}],
    }
    for status, description in _REFUSALS.items():
        if not public or status == "400":
            operation["responses"][status] = {**_ERROR, "description": description}
    if body_schema is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body_schema}}}
    return operation
