"""Per-minute RED accounting that feeds the detectors: minutes close on each tenant's event time."""

from __future__ import annotations

from streams.otlp_pipeline import RED_DURATION_METRIC, RedMinutes

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
