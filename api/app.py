"""The aiohttp application of the API: routes from ``api.routes``, every request through ``api.gate``.

Entry point for whoever serves the API (the worker, ``m1 api``, tests, benchmarks)::

    web_app = make_api(settings, store, registry)            # an aiohttp.web.Application
    server = ApiServer(settings, web_app); await server.start()   # api.server: settings.web_bind:web_port
    ...
    await server.stop()

The application writes the access log while it runs (its cleanup context flushes the last
decisions) and never closes ``store`` or ``registry``: their owner does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from api.access import AccessEntry, AccessLog
from api.gate import API, TenantRates, gate
from api.handlers import RunBottlenecks
from api.openapi import document
from api.route import Route
from api.routes import ROUTES
from compliance.redact import Redactor
from core.pipeline_metrics import PipelineMetrics
from core.settings import Settings
from sinks.clickhouse import QueryResult, Store
from tenancy.authn import Authenticator
from tenancy.registry import Registry

if TYPE_CHECKING:
    from compliance.service import Compliance
    from regions.status import RegionStatus


@dataclass
class Api:
    """What handlers and the gate use: settings, store, registry, authenticator, the bottleneck
    run (or None), the access log, the per-tenant rates, the OpenAPI document and the worker's
    metrics (or None); ``routes`` maps each aiohttp route to its declaration."""

    settings: Settings
    store: Store
    registry: Registry
    authenticator: Authenticator
    run_bottlenecks: RunBottlenecks | None
    access: AccessLog
    rates: TenantRates
    openapi: dict[str, Any]
    metrics: PipelineMetrics | None = None
    routes: dict[Any, Route] = field(default_factory=dict)
    compliance: Compliance | None = None  # GDPR rights, retention, report (the worker's); None answers 503
    regions: RegionStatus | None = None  # the region agent's verdict and routing table; None answers 503

    async def read(self, sql: str, parameters: dict[str, Any]) -> QueryResult:
        """A parameterised query of the API's own, in a thread, under the SQL time and memory limits."""
        limits = {"max_execution_time": self.settings.query_max_seconds,
                  "max_memory_usage": self.settings.query_max_memory_bytes}
        return await asyncio.to_thread(self.store.query, sql, parameters, limits)


def make_api(settings: Settings, store: Store, registry: Registry, authenticator: Authenticator | None = None,
             run_bottlenecks: RunBottlenecks | None = None, metrics: PipelineMetrics | None = None,
             access_listener: Callable[[AccessEntry], None] | None = None,
             compliance: Compliance | None = None, regions: RegionStatus | None = None) -> web.Application:
    """The API over ``store`` (migrated, with ``access_log``) and ``registry``.

    ``authenticator`` defaults to ``Authenticator(settings, registry)`` (closed with the application;
    one passed in is its owner's to close). ``run_bottlenecks``,
    if given, serves ``POST /v1/tenants/{tenant}/bottlenecks``: ``await run(tenant=...,
    services=..., window_seconds=..., limit=...)`` (keywords; :class:`api.handlers.RunBottlenecks`)
    must analyse that tenant's traces only, store the reports with the tenant and return them;
    without it the route answers 503. ``metrics`` (the worker's) serves ``GET /v1/metrics``; without
    it that route answers 503 too, as do the compliance routes without ``compliance``
    (``compliance.service.Compliance``: GDPR rights, retention, legal holds, the report), and the
    region routes without ``regions`` (``regions.status.RegionStatus``, the region agent's).
    Request bodies are capped at ``settings.api_max_body_bytes``.
    """
    app = web.Application(middlewares=[gate], client_max_size=settings.api_max_body_bytes)
    if authenticator is None:  # ours: its thread pool ends with the application
        authenticator = Authenticator(settings, registry)
        app.on_cleanup.append(lambda _: asyncio.to_thread(authenticator.close))
    access = AccessLog(store, settings.api_access_flush_seconds, listener=access_listener,
                       redactor=Redactor.from_settings(settings))  # no client address in clear
    api = Api(settings, store, registry, authenticator, run_bottlenecks, access,
              TenantRates(settings, registry), document(ROUTES), metrics, compliance=compliance, regions=regions)
    for route in ROUTES:
        api.routes[app.router.add_route(route.method, route.path, _unreachable)] = route
    app[API] = api
    app.cleanup_ctx.append(api.access.running)
    return app


async def _unreachable(request: web.Request) -> web.StreamResponse:
    """Every route is answered by the gate, which calls the route's own handler."""
    raise AssertionError("the gate middleware answers every route")
