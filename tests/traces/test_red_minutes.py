"""Per-minute RED accounting that feeds the detectors: minutes close on each tenant's event time."""

from __future__ import annotations

import time
from pathlib import Path

from m1.settings import Settings
from sinks.clickhouse import Store
from streams.metrics_pipeline import MetricsPipeline, Record
from streams.otlp_pipeline import RED_DURATION_METRIC, OtlpPipeline, RedMinutes
from traces.generator import to_request
from traces.model import Span

MINUTE = 60 * 10**9
T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z


def span(tenant: str, start_ns: int, ms: float = 10.0, error: bool = False) -> dict:
    return {"Timestamp": start_ns, "Duration": int(ms * 1e6), "ResourceAttributes": {"tenant": tenant},
            "ServiceName": "cart", "SpanName": "GET /cart", "StatusCode": "Error" if error else "Ok"}


def closed(points: list, tenant: str) -> list[tuple[float, float]]:
    return [(p.ts, p.value) for p in points if p.tenant == tenant and p.metric == RED_DURATION_METRIC]


def test_a_minute_closes_when_its_tenant_has_moved_past_it_by_the_grace() -> None:
    red = RedMinutes(grace_seconds=30)
    assert red.add([span("a", T0 + 5 * 10**9, 10.0), span("a", T0 + 20 * 10**9, 30.0)]) == []
    assert red.add([span("a", T0 + MINUTE + 20 * 10**9)]) == []  # 20 s into the next minute: within grace
    points = red.add([span("a", T0 + MINUTE + 40 * 10**9)])
    assert closed(points, "a") == [(T0 / 1e9, 28.0)]  # p90 of 10 and 30 ms
    assert red.add([span("a", T0 + 50 * 10**9)]) == []  # late for a closed minute: dropped here


def test_one_tenants_span_years_ahead_does_not_close_another_tenants_minutes() -> None:
    red = RedMinutes(grace_seconds=30)
    assert closed(red.add([span("skewed", T0 + 3 * 365 * 24 * 60 * MINUTE)]), "b") == []
    red.add([span("b", T0 + 5 * 10**9, 12.0)])
    assert closed(red.add([span("b", T0 + MINUTE + 45 * 10**9)]), "b") == [(T0 / 1e9, 12.0)]


def test_a_tenants_open_buckets_are_bounded_by_closing_its_oldest_minute_early() -> None:
    red = RedMinutes(grace_seconds=3600, max_open=3)
    assert red.add([span("b", T0 + 5 * 10**9, 7.0)]) == []
    for m in range(3):  # a(0), a(1), a(2) fill a's three buckets; b's bucket is b's own
        assert red.add([span("a", T0 + m * MINUTE, 10.0 + m)]) == []
    points = red.add([span("a", T0 + 3 * MINUTE, 13.0)])
    assert closed(points, "a") == [(T0 / 1e9, 10.0)] and red.open_per_tenant["a"] == 3
    assert red.add([span("a", T0 + 10 * 10**9)]) == []  # late for the minute closed early: dropped here
    assert red.open_per_tenant["b"] == 1 and len(red.open) == 4


def test_a_bucket_keeps_a_bounded_sample_of_durations_and_exact_counts() -> None:
    red = RedMinutes(grace_seconds=30, max_samples=200)
    red.add([span("a", T0 + i * 5_000_000, ms=float(i % 1000), error=i % 4 == 0) for i in range(10_000)])
    [bucket] = red.open.values()
    assert len(bucket.durations_ms) == 200 and bucket.spans == 10_000 and bucket.errors == 2_500
    points = red.add([span("a", T0 + MINUTE + 45 * 10**9)])
    p90 = next(p.value for p in points if p.metric == RED_DURATION_METRIC and p.ts == T0 / 1e9)
    rate = next(p.value for p in points if p.metric != RED_DURATION_METRIC and p.ts == T0 / 1e9)
    assert 800 < p90 < 990 and rate == 0.25  # the true p90 is 900


def test_a_span_ending_too_far_ahead_is_stored_but_does_not_move_its_tenants_minutes(store: Store, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, kafka_bootstrap="127.0.0.1:1", max_future_seconds=3600)
    pipeline = OtlpPipeline(settings, store, MetricsPipeline(settings, store))
    now = time.time_ns()
    ahead = Span("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "", "cart", "GET /cart", now + 86_400 * 10**9,
                 now + 86_400 * 10**9 + 10**6, kind="Server")
    long_running = Span("0af7651916cd43dd8448eb211c80319d", "b7ad6b7169203332", "", "cart", "GET /cart", now,
                        now + 7_200 * 10**9, kind="Server")  # starts now, ends two hours ahead
    on_time = Span("0af7651916cd43dd8448eb211c80319e", "b7ad6b7169203333", "", "cart", "GET /cart", now, now + 10**6,
                   kind="Server")
    request = to_request([ahead, long_running, on_time])
    outcome = pipeline.process_spans([Record("otlp_spans", 0, 0, None, request.SerializeToString())])
    assert outcome.spans == 3 and len(outcome.unscored) == 2
    assert all("ahead of the worker's clock" in reason for reason in outcome.unscored)
    assert pipeline.red.watermark_ns["default"] == now + 10**6  # only the on-time span moved the tenant's clock
