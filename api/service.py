"""The API as a mode service: served by the process that owns the store.

chdb lets one process open a data directory, so the process holding the store serves the
API. In ``m1 worker`` that is the worker: ``streams.app.build_app`` adds an
:class:`ApiService` to the Faust app (Faust's own web server is off), and the API runs on
the worker's event loop on ``M1_WEB_BIND:M1_WEB_PORT``; its bottleneck route runs the
worker's own job, which also publishes the reports. ``m1 api`` runs the same service alone
(:func:`standalone_service`) for a ClickHouse server or an embedded store no worker holds;
there a bottleneck run is stored but not published (it has no Kafka producer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mode import Service

from api.app import make_api
from api.server import ApiServer
from tenancy.authn import Authenticator

if TYPE_CHECKING:
    from collections.abc import Callable

    from api.access import AccessEntry
    from compliance.service import Compliance
    from core.pipeline_metrics import PipelineMetrics
    from core.settings import Settings
    from regions.status import RegionStatus
    from sinks.clickhouse import Store
    from api.handlers import RunBottlenecks
    from tenancy.registry import Registry


class ApiService(Service):
    """Serves ``api.app.make_api`` over ``store`` and ``registry`` (and the worker's ``metrics``)
    while the service runs."""

    def __init__(self, settings: Settings, store: Store, registry: Registry,
                 run_bottlenecks: RunBottlenecks | None = None, metrics: PipelineMetrics | None = None,
                 access_listener: Callable[[AccessEntry], None] | None = None, compliance: Compliance | None = None,
                 regions: RegionStatus | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.access_listener = access_listener  # told of every access decision (the worker: audit.service)
        self.settings = settings
        self.store = store
        self.registry = registry
        self.run_bottlenecks = run_bottlenecks
        self.metrics = metrics
        self.compliance = compliance
        self.regions = regions  # the region agent's status (regions/status.py), for /v1/route and /v1/regions
        self.authenticator = Authenticator(settings, registry)
        self.server: ApiServer | None = None

    async def on_start(self) -> None:
        web = make_api(self.settings, self.store, self.registry, self.authenticator, self.run_bottlenecks,
                       self.metrics, access_listener=self.access_listener, compliance=self.compliance,
                       regions=self.regions)
        self.server = ApiServer(self.settings, web)
        await self.server.start()
        self.log.info("API on http://%s:%d/v1", self.settings.web_bind, self.server.port)

    async def on_stop(self) -> None:
        if self.server is not None:
            await self.server.stop()  # requests in flight finish, the access log is flushed
        self.authenticator.close()


def standalone_service(settings: Settings) -> ApiService:
    """The API over a store this process opens itself (``m1 api``): migrated, with a bottleneck
    run that stores its reports."""
    from sinks.clickhouse import Store, connect
    from streams.bottleneck_job import BottleneckJob
    from streams.tracing import in_thread
    from tenancy.registry import Registry

    store = Store(connect(settings))
    store.migrate()
    job = BottleneckJob(settings, store)

    async def run_bottlenecks(tenant: str, services: list[str] | None, window_seconds: int | None,
                              limit: int | None) -> list[dict]:
        return await in_thread(job.run, tenant, services, window_seconds, limit)

    return ApiService(settings, store, Registry.from_settings(settings), run_bottlenecks)
