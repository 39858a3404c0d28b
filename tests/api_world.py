"""A running API over a real chdb store and registry, for the API and security tests.

Two tenants, ``acme`` and ``globex``, have rows in every table the API serves; every string a
tenant's rows hold names the tenant (its services are ``acme-api``, its series start with
``acme|``, ...), so an answer that holds another tenant's name holds another tenant's data.
Each tenant has a key of every tenant role, ``platform`` a platform-admin and a monitoring
key, and acme a revoked tenant-admin key. The API serves an (empty) worker's metrics, and a
region agent's status (:data:`REGIONS`, every region up; tests may replace ``world.regions``' snapshot). The server runs on 127.0.0.1 in a thread of its own, so tests
(and hypothesis) talk to it over real HTTP with :meth:`World.call`.

chdb opens one data directory per process at a time: use one world per test module
(``world`` fixtures are module-scoped) and :meth:`World.close` it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from api.app import make_api
from api.gate import API
from api.server import ApiServer
from compliance.service import Compliance
from core.pipeline_metrics import PipelineMetrics
from core.settings import Settings
from regions.health import HealthState, RegionView
from regions.routing import Router
from regions.status import RegionSnapshot, RegionStatus
from regions.verdict import decide
from sinks.clickhouse import TS_TYPE, Store, connect
from core.tenant_names import PLATFORM
from tenancy.registry import Registry
from tenancy.roles import PLATFORM_ROLES

TENANTS = ("acme", "globex")
TENANT_ROLES = ("viewer", "analyst", "operator", "auditor", "tenant-admin")
ROLES = (*TENANT_ROLES, "monitoring", "platform-admin")
#: A trace id of each tenant (its spans carry ResourceAttributes['tenant']).
TRACE_IDS = {"acme": "a" * 32, "globex": "b" * 32}
NOW = time.time()
#: The region agent's world: three regions, three client geographies (RTT ms).
REGIONS = ("ap-south", "eu-west", "us-east")
PROXIMITY = {"de": {"eu-west": 12.0, "us-east": 90.0, "ap-south": 130.0},
             "us": {"eu-west": 85.0, "us-east": 8.0, "ap-south": 220.0},
             "in": {"eu-west": 120.0, "us-east": 210.0, "ap-south": 14.0}}


def region_snapshot(down: tuple[str, ...] = (), at: float = NOW) -> RegionSnapshot:
    """eu-west's agent's decision when every region sees the regions ``down`` down."""
    views = {o: RegionView(o, at, {r: HealthState.DOWN if r in down else HealthState.HEALTHY for r in REGIONS})
             for o in REGIONS if o not in down}
    verdict = decide(REGIONS, views)
    return RegionSnapshot("eu-west", at, verdict, Router(PROXIMITY).route(verdict.states, at), views)


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class World:
    settings: Settings
    store: Store
    registry: Registry
    keys: dict[tuple[str, str], str]  # (tenant, role) -> raw key
    revoked_key: str
    server: ApiServer | None = None
    loop: asyncio.AbstractEventLoop | None = None
    thread: threading.Thread | None = None
    bottleneck_runs: list[tuple[str, Any]] = field(default_factory=list)
    audit_events: list[Any] = field(default_factory=list)
    regions: RegionStatus = field(default_factory=RegionStatus)

    @property
    def api(self) -> Any:
        return self.server.runner.app[API]

    def key(self, role: str, tenant: str = "acme") -> str:
        return self.keys[(PLATFORM if role in PLATFORM_ROLES else tenant, role)]

    def call(self, method: str, path: str, key: str | None = None, body: Any = None,
             headers: dict[str, str] | None = None, raw_body: bytes | None = None) -> Reply:
        """One request with ``path`` sent exactly as given (no normalisation)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        data = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        try:
            connection.request(method, path, body=data, headers=sent)
            response = connection.getresponse()
            return Reply(response.status, response.read(), dict(response.getheaders()))
        finally:
            connection.close()

    def flush_access_log(self) -> None:
        asyncio.run_coroutine_threadsafe(self.api.access.flush(), self.loop).result(30)

    def start(self) -> World:
        ready = threading.Event()

        async def run_bottlenecks(*, tenant: str, services: Any, window_seconds: Any, limit: Any) -> list[dict]:
            """The worker's job stands in here: it reports on the tenant's stored analysis."""
            self.bottleneck_runs.append((tenant, services))
            rows = self.store.query("SELECT entry_service, count() FROM bottlenecks WHERE tenant = {t:String} "
                                    "GROUP BY entry_service", {"t": tenant}).rows
            return [{"entry_service": service, "rows": n} for service, n in rows]

        async def audit(events: Any) -> None:
            """The worker's audit topic stands in here: the compliance routes' audit events are kept."""
            self.audit_events.extend(events)

        compliance = Compliance(self.settings, self.store, audit)
        self.regions.update(region_snapshot())

        def serve() -> None:
            self.loop = asyncio.new_event_loop()
            self.server = ApiServer(self.settings, make_api(self.settings, self.store, self.registry,
                                                            run_bottlenecks=run_bottlenecks,
                                                            metrics=PipelineMetrics(), compliance=compliance,
                                                            regions=self.regions))
            self.loop.run_until_complete(self.server.start())
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self.server.stop())
            self.loop.close()

        self.thread = threading.Thread(target=serve, name="api-world", daemon=True)
        self.thread.start()
        assert ready.wait(30), "the API did not start"
        return self

    def close(self) -> None:
        if self.thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)
        self.registry.close()
        self.store.close()


def make_world(home: Path, **settings: Any) -> World:
    """The store, registry and keys described above, and the API serving them."""
    settings = Settings(home=home, web_bind="127.0.0.1", web_port=0, quota_requests_per_second=100_000,
                        api_access_flush_seconds=0.2, **settings)
    store = Store(connect(settings))
    store.migrate()
    registry = Registry.from_settings(settings)
    keys = {}
    for tenant in TENANTS:
        registry.create_tenant(tenant)
        seed(store, tenant)
        for role in TENANT_ROLES:
            keys[(tenant, role)] = registry.create_key(tenant, [role], name=role, created_by="tests")[1]
    for role in PLATFORM_ROLES:
        keys[(PLATFORM, role)] = registry.create_key(PLATFORM, [role], name=role, created_by="tests")[1]
    info, revoked = registry.create_key("acme", ["tenant-admin"], name="revoked", created_by="tests")
    registry.revoke_key(info.id)
    return World(settings, store, registry, keys, revoked).start()


def _ts(seconds: list[float]) -> pa.Array:
    return pa.array([int(s * 1000) for s in seconds], type=TS_TYPE)


def seed(store: Store, tenant: str, n: int = 20) -> None:
    """``n`` rows of ``tenant`` in every table the API lists (anomalies: alternating severities;
    silences: ending a year from ``NOW``)."""
    times = [NOW - 60 * (n - i) for i in range(n)]
    service, series = f"{tenant}-api", f"{tenant}|eu|{tenant}-api|rps|host={tenant}-h"
    base = {"tenant": [tenant] * n, "region": ["eu"] * n, "service": [service] * n, "metric": ["rps"] * n,
            "series": [series] * n}
    store.insert("metric_points", {
        "ts": _ts(times), **base, "labels": pa.array([[("host", f"{tenant}-h")]] * n, type=pa.map_(pa.string(), pa.string())),
        "value": [float(i) for i in range(n)], "score": pa.array([0.1] * n, type=pa.float32()),
        "is_anomaly": pa.array([0] * n, type=pa.uint8()), "ingested_at": _ts(times)})
    store.insert("anomalies", {
        "ts": _ts(times), **base, "value": [float(i) for i in range(n)], "score": pa.array([0.9] * n, type=pa.float32()),
        "severity": ["critical" if i % 2 else "warning" for i in range(n)], "detector": [f"{tenant}-det"] * n,
        "detected_at": _ts(times)})
    store.insert("forecasts", {
        "ts": _ts(times), "target_ts": _ts([t + 60 for t in times]), **base,
        "horizon": pa.array([1] * n, type=pa.uint16()), "point": [1.0] * n, "lower": [0.0] * n, "upper": [2.0] * n,
        "coverage": pa.array([0.9] * n, type=pa.float32()), "model": [f"{tenant}-hw"] * n,
        "points": pa.array([100] * n, type=pa.uint64()), "created_at": _ts(times)})
    store.insert("recommendations", {
        "ts": _ts(times), "window_end": _ts([t + 60 for t in times]), **base,
        "replicas": pa.array([2] * n, type=pa.uint32()), "planned_load": [10.0] * n, "current_load": [5.0] * n,
        "capacity_per_replica": [100.0] * n, "headroom": [0.2] * n,
        "window_points": pa.array([12] * n, type=pa.uint32()), "created_at": _ts(times)})
    store.insert("cost_projections", {
        "ts": _ts(times), **base, "metric": ["cost_usd"] * n, "period": ["day" if i % 2 else "month" for i in range(n)],
        "until": _ts([t + 3600 for t in times]), "spent": [1.0] * n, "point": [2.0] * n, "lower": [1.5] * n,
        "upper": [2.5] * n, "total": [3.0] * n, "coverage": pa.array([0.9] * n, type=pa.float32()),
        "model": [f"{tenant}-cost"] * n, "created_at": _ts(times)})
    store.insert("bottlenecks", {
        "analyzed_at": _ts(times), "tenant": [tenant] * n, "entry_service": [f"{tenant}-checkout"] * n,
        "window_seconds": pa.array([900] * n, type=pa.uint32()), "traces": pa.array([10] * n, type=pa.uint32()),
        "mean_ms": [12.0] * n, "kind": ["bottleneck"] * n, "rank": pa.array([1] * n, type=pa.uint16()),
        "service": [f"{tenant}-db"] * n, "operation": [f"{tenant}-select"] * n, "share": [0.5] * n,
        "critical_ms": [6.0] * n, "on_path_traces": pa.array([10] * n, type=pa.uint32()), "rule": [""] * n,
        "message": [f"{tenant} 50%"] * n, "evidence": pa.array([[]] * n, type=pa.map_(pa.string(), pa.float64()))})
    store.insert("incidents", {
        "tenant": [tenant] * n, "id": [f"{tenant}-inc-{i}" for i in range(n)], "service": [service] * n,
        "region": ["eu"] * n, "title": [f"{service} rps"] * n, "severity": ["critical"] * n, "status": ["open"] * n,
        "started_at": _ts(times), "updated_at": _ts(times), "resolved_at": pa.array([None] * n, type=TS_TYPE),
        "signals": pa.array([1] * n, type=pa.uint64()), "series": pa.array([[series]] * n, type=pa.list_(pa.string())),
        "labels": pa.array([[]] * n, type=pa.map_(pa.string(), pa.string()))})
    store.insert("silences", {
        "tenant": [tenant] * n, "id": [f"{tenant}-sil-{i}" for i in range(n)], "kind": ["silence"] * n,
        "starts_at": _ts(times), "ends_at": _ts([NOW + 3600 * 24 * 365] * n), "matchers": ['{"service":["%s"]}' % service] * n,
        "comment": [f"{tenant} maintenance"] * n, "created_by": [f"{tenant}-admin"] * n, "version": _ts(times)})
    trace = TRACE_IDS[tenant]
    spans = [(f"{i:016x}", "" if i == 0 else f"{0:016x}", f"{tenant}-checkout" if i == 0 else f"{tenant}-db") for i in range(3)]
    store.insert("otel_traces", {
        "Timestamp": pa.array([int((NOW - 30 + i) * 1e9) for i in range(3)], type=pa.timestamp("ns")),
        "TraceId": [trace] * 3, "SpanId": [s[0] for s in spans], "ParentSpanId": [s[1] for s in spans],
        "SpanName": [f"{tenant}-op{i}" for i in range(3)], "SpanKind": ["Server"] * 3, "ServiceName": [s[2] for s in spans],
        "ResourceAttributes": pa.array([[("tenant", tenant)]] * 3, type=pa.map_(pa.string(), pa.string())),
        "SpanAttributes": pa.array([[("db", f"{tenant}-db")]] * 3, type=pa.map_(pa.string(), pa.string())),
        "Duration": pa.array([5_000_000 * (3 - i) for i in range(3)], type=pa.uint64()),
        "StatusCode": ["Ok"] * 3, "StatusMessage": [""] * 3})
