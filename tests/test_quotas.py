"""Per-tenant quotas: the token bucket's arithmetic, registry overrides, and the metrics path
dead-lettering what goes over a tenant's points/s or series quota on a real chdb store."""

from __future__ import annotations

import base64
import math
import threading
import time
from pathlib import Path

import pytest

from core.settings import Settings
from schemas.events import MetricPoint, encode
from sinks.clickhouse import Store
from streams.metrics_pipeline import MetricsPipeline, Record
from tenancy.quotas import IngestQuotas, Quotas, RateLimiter, tenant_quotas
from tenancy.registry import Registry

T0 = 1_767_225_600.0


def test_a_bucket_holds_burst_tokens_and_refills_at_its_rate() -> None:
    limiter = RateLimiter(rate_per_second=10.0, burst=5.0)
    assert [limiter.try_acquire("k", now=100.0) for _ in range(5)] == [0.0] * 5
    assert limiter.try_acquire("k", now=100.0) == pytest.approx(0.1)  # one token every 0.1 s
    assert limiter.try_acquire("k", now=100.0, cost=3.0) == pytest.approx(0.3)  # a refusal takes nothing
    assert limiter.try_acquire("k", now=100.25) == 0.0  # 2.5 tokens flowed in
    assert limiter.try_acquire("k", now=100.25, cost=2.0) == pytest.approx(0.05)
    assert limiter.try_acquire("k", now=1000.0, cost=5.0) == 0.0  # never more than burst after idling
    assert limiter.try_acquire("k", now=1000.0) == pytest.approx(0.1)
    assert limiter.try_acquire("k", now=1000.0, cost=6.0) == math.inf  # more than a full bucket: never
    assert limiter.try_acquire("other", now=1000.0, cost=5.0) == 0.0


def test_take_grants_whole_tokens_up_to_what_the_bucket_holds() -> None:
    limiter = RateLimiter(rate_per_second=100.0, burst=100.0)
    assert limiter.take("k", 250, now=0.0) == 100
    assert limiter.take("k", 250, now=0.5) == 50
    assert limiter.take("k", 10, now=0.5) == 0
    assert limiter.take("k", 10, now=0.6) == 10


def test_refilled_buckets_are_forgotten_so_memory_stays_bounded() -> None:
    limiter = RateLimiter(rate_per_second=1.0, burst=1.0)
    for i in range(5_000):
        limiter.try_acquire(f"k{i}", now=0.0)
    assert len(limiter) >= 4_000  # all of them are empty, none may be forgotten yet
    for i in range(5_000):
        limiter.try_acquire(f"late{i}", now=10.0)  # by now every k bucket refilled
    assert len(limiter) <= 5_000 + 1024 and limiter.try_acquire("k0", now=10.0) == 0.0


def test_concurrent_takers_never_get_more_than_the_bucket_holds() -> None:
    limiter = RateLimiter(rate_per_second=1.0, burst=1_000.0)
    granted = []

    def take() -> None:
        granted.append(sum(limiter.try_acquire("k", now=0.0) == 0.0 for _ in range(500)))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 1_000


def test_registry_overrides_the_settings_defaults_per_tenant(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, quota_points_per_second=1_000, quota_max_series=50, quota_requests_per_second=5)
    registry = Registry(tmp_path / "registry.db")
    registry.create_tenant("acme", {"points_per_second": 10, "max_series": 3})
    assert tenant_quotas(settings, registry, "acme") == Quotas(10.0, 3, 5.0)
    assert tenant_quotas(settings, registry, "globex") == Quotas(1_000.0, 50, 5.0)  # not in the registry
    assert tenant_quotas(settings, None, "acme") == Quotas(1_000.0, 50, 5.0)


def points(tenant: str, n: int, series: int = 1, first: int = 0) -> list[Record]:
    """``n`` records of ``tenant`` over ``series`` series, offsets from ``first``."""
    out = []
    for i in range(first, first + n):
        point = MetricPoint(T0 + i, tenant, "eu", "api", "rps", float(i % 7), {"host": f"h{i % series}"})
        out.append(Record("metrics", 0, i, point.series_key.encode(), encode(point)))
    return out



def count(store: Store, sql: str) -> int:
    return int(store.query(sql).rows[0][0])


def test_points_over_a_tenants_rate_are_dead_lettered_with_their_records(store: Store, tmp_path: Path) -> None:
    """acme sends 300 points at once with a quota of 100 points/s: 100 go in, 200 are dead-lettered
    with their own records (replayable), and globex, sending in the same batch, loses nothing."""
    pipeline = MetricsPipeline(Settings(home=tmp_path, quota_points_per_second=100), store)
    acme, globex = points("acme-rate", 300, series=3), points("globex-rate", 80, series=2)
    outcome = pipeline.process(acme[:150] + globex + acme[150:])

    assert outcome.stored == 180
    assert sum(len(batch) for batch in outcome.points.values()) == 180  # the forecast path learns only these
    assert {letter.reason for letter in outcome.dead_letters} == {"quota: tenant 'acme-rate' over 100 points/s"}
    by_offset = {record.offset: record for record in acme}
    assert len(outcome.dead_letters) == 200
    assert all(by_offset[d.offset].value == base64.b64decode(d.payload_b64) for d in outcome.dead_letters)
    assert count(store, "SELECT count() FROM metric_points FINAL WHERE tenant = 'acme-rate'") == 100
    assert count(store, "SELECT count() FROM metric_points FINAL WHERE tenant = 'globex-rate'") == 80
    assert count(store, "SELECT count() FROM dead_letters FINAL WHERE reason LIKE 'quota: tenant ''acme-rate''%'") == 200
    stored = {offset for (offset,) in store.query(
        "SELECT toUInt64(ts) - toUInt64(toDateTime(1767225600)) FROM metric_points FINAL WHERE tenant = 'acme-rate'").rows}
    assert stored | {d.offset for d in outcome.dead_letters} == set(range(300))  # nothing valid lost


def test_new_series_beyond_a_tenants_series_quota_are_dead_lettered(store: Store, tmp_path: Path) -> None:
    """acme may hold 3 series: of 5 new ones the first 3 go in, the other 2 are refused whole,
    later batches of the admitted series still go in, and globex (3 series) is unaffected."""
    settings = Settings(home=tmp_path, quota_max_series=3)
    pipeline = MetricsPipeline(settings, store)
    outcome = pipeline.process(points("acme-series", 50, series=5) + points("globex-series", 30, series=3))
    assert outcome.stored == 30 + 30
    assert {letter.reason for letter in outcome.dead_letters} == {"quota: tenant 'acme-series' over 3 series"}
    assert len(outcome.dead_letters) == 20 and pipeline.bank.held("acme-series") == 3
    later = pipeline.process(points("acme-series", 50, series=5, first=50))
    assert later.stored == 30 and len(later.dead_letters) == 20
    assert count(store, "SELECT uniqExact(series) FROM metric_points WHERE tenant = 'acme-series'") == 3
    assert count(store, "SELECT uniqExact(series) FROM metric_points WHERE tenant = 'globex-series'") == 3


def test_the_worker_reads_per_tenant_quotas_from_the_registry(store: Store, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, quota_points_per_second=1_000)
    Registry(settings.registry_file).create_tenant("tight", {"points_per_second": 20})
    outcome = MetricsPipeline(settings, store).process(points("tight", 50) + points("roomy", 50))
    assert outcome.stored == 70
    assert {letter.reason for letter in outcome.dead_letters} == {"quota: tenant 'tight' over 20 points/s"}


def test_the_quota_check_is_cheap(tmp_path: Path) -> None:
    """A batch of 5,000 series of 10 points (the worker's batch size) is checked well under 1 µs a point."""
    gate = IngestQuotas(Settings(home=tmp_path, quota_points_per_second=1e12, quota_max_series=10**6))
    batch = {f"t{i % 10}|r|s|m|h={i}": 10 for i in range(5_000)}
    live = set(batch)
    gate.admit(batch, live.__contains__, lambda tenant: 500)
    start = time.perf_counter()
    for _ in range(20):
        assert gate.admit(batch, live.__contains__, lambda tenant: 500) == {}
    per_point = (time.perf_counter() - start) / (20 * 50_000)
    assert per_point < 1e-6, per_point



def test_an_unusable_registry_leaves_the_default_quotas_in_force(store: Store, tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """A registry file that is not a database must not stop ingestion: defaults apply, logged."""
    settings = Settings(home=tmp_path, quota_points_per_second=20)
    settings.registry_file.write_bytes(b"this is not an SQLite database" * 100)
    outcome = MetricsPipeline(settings, store).process(points("unregistered", 30))
    assert outcome.stored == 20 and len(outcome.dead_letters) == 10
    assert any("default quotas" in r.getMessage() for r in caplog.records if r.name == "tenancy.quotas")
