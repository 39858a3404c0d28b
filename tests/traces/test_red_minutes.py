"""Per-minute RED accounting that feeds the detectors: minutes close on each tenant's event time;
spans reach it through the RED topic keyed by tenant and service, whose state is checkpointed per
key (to the RED state's changelog, ``tests/test_red_changelog.py``)."""

from __future__ import annotations

import time
from pathlib import Path

from aiokafka import TopicPartition

from core.settings import Settings
from sinks.clickhouse import Store
from schemas.events import decode_metric
from streams.metrics_pipeline import MetricsPipeline, Record
from streams.otlp_pipeline import OtlpPipeline
from streams.red import RED_DURATION_METRIC, RedBank, RedMinutes, RedSpans, decode_red, red_records
from streams.red_changelog import RedChangelog
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
    pipeline = OtlpPipeline(settings, store, MetricsPipeline(settings, store), red_changelog=Changelog(settings))
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
    [(topic, key, value)] = outcome.rekeyed  # the on-time span only, to the RED topic under its key
    assert (topic, key) == (pipeline.red_topic, b"default|cart")
    pipeline.aggregate_red([Record(topic, 0, 0, key, value)])
    assert pipeline.red.minutes("default|cart").watermark_ns["default"] == now + 10**6  # only the on-time span moved the clock


def red_record(key: str, spans: list[dict], offset: int, source: str = "otlp_spans:0") -> tuple[str, RedSpans]:
    [(_, encoded_key, value)] = red_records(spans, "red", source, offset)
    assert encoded_key.decode() == key
    return key, decode_red(value)


def test_a_replayed_source_record_is_accounted_once() -> None:
    bank = RedBank(bytes(32), grace_seconds=30)
    first = red_record("a|cart", [span("a", T0 + 5 * 10**9, 10.0)], offset=4)
    assert bank.add([first, first, red_record("a|cart", [span("a", T0 + 6 * 10**9, 30.0)], offset=3)]) == []
    assert bank.minutes("a|cart").open[("a", "unknown", "cart", "GET /cart", T0)].spans == 1
    points = bank.add([red_record("a|cart", [span("a", T0 + MINUTE + 45 * 10**9)], offset=5)])
    assert closed(points, "a") == [(T0 / 1e9, 10.0)]


def test_red_state_checkpointed_and_restored_by_key_continues_as_if_never_moved() -> None:
    """A key checkpointed by one worker and restored by another closes the same minutes with the same numbers."""
    batches = [red_record("a|cart", [span("a", T0 + i * 7 * 10**9, float(i), error=i % 3 == 0)], offset=i) for i in range(30)]
    whole = RedBank(bytes(32), grace_seconds=30)
    expected = whole.add(batches)
    first = RedBank(bytes(32), grace_seconds=30)
    points = first.add(batches[:17])
    rows = first.checkpoint()
    assert len(rows) == 1 and first.checkpoint() == []  # only what changed
    second = RedBank(bytes(32), grace_seconds=30)
    second.restore(rows)
    points += second.add(batches[15:])  # two records replayed: accounted once
    assert points == expected and len(expected) == 4


def test_red_state_under_another_key_or_altered_is_refused() -> None:
    bank = RedBank(bytes(32))
    bank.add([red_record("a|cart", [span("a", T0)], offset=0), red_record("b|cart", [span("b", T0)], offset=0)])
    (a, a_spans, a_state), _ = bank.checkpoint()
    fresh = RedBank(bytes(32))
    fresh.restore([(a, a_spans, a_state), ("b|cart", a_spans, a_state)])  # a's state as b's
    assert fresh.minutes("a|cart").open and not fresh.minutes("b|cart").open
    altered = RedBank(bytes(32))
    altered.restore([(a, a_spans + 1, a_state)])
    assert not altered.minutes("a|cart").open
    other_key = RedBank(bytes([1]) * 32)
    other_key.restore([(a, a_spans, a_state)])
    assert not other_key.minutes("a|cart").open


def test_closed_red_minutes_go_to_the_metrics_topic_keyed_by_series(store: Store, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, kafka_bootstrap="127.0.0.1:1")
    pipeline = OtlpPipeline(settings, store, MetricsPipeline(settings, store), red_grace_seconds=30,
                            red_changelog=Changelog(settings))
    records = [Record(pipeline.red_topic, 0, i, *red_records([span("a", T0 + i * 50 * 10**9)], pipeline.red_topic,
                                                           "otlp_spans:1", i)[0][1:]) for i in range(3)]
    outcome = pipeline.aggregate_red(records)
    minutes = [record for record in outcome.rekeyed if record[0] == settings.topic_metrics]
    points = [decode_metric(value) for _, _, value in minutes]
    assert [key for _, key, _ in minutes] == [p.series_key.encode() for p in points]
    assert sorted(p.metric for p in points) == ["span.duration.p90_ms", "span.error_rate"] and outcome.stored == 0
    [(topic, key, _)] = [record for record in outcome.rekeyed if record not in minutes]  # and the key's state
    assert (topic, key) == (pipeline.red_changelog.topic, b"a|cart")


def test_a_worker_assigned_a_partition_restores_all_its_keys_and_closes_their_minutes(store: Store, tmp_path: Path) -> None:
    """A key whose spans stopped before its partition moved is not left open forever: the new
    owner restores every key of the partition's changelog, and its idle timer closes their minutes."""
    settings = Settings(home=tmp_path, kafka_bootstrap="127.0.0.1:1")
    changelog = Changelog(settings)
    new = OtlpPipeline(settings, store, MetricsPipeline(settings, store), red_grace_seconds=0, red_changelog=changelog)
    old = RedBank(new.red.key, grace_seconds=0)  # the workers share the state key
    assert old.add([red_record("a|cart", [span("a", T0 + 5 * 10**9, 12.0)], offset=0)], partition="red:1") == []
    old.add([red_record("b|cart", [span("b", T0)], offset=0)], partition="red:0")
    changelog.partitions = {1: [row for row in old.checkpoint() if row[0] == "a|cart"]}
    new.moved_red({TopicPartition("red", 1)}, [])
    assert len(new.red) == 1 and closed(new.red.close_idle(), "a") == [(T0 / 1e9, 12.0)]
    assert new.red.checkpoint()[0][0] == "a|cart"  # the closed minutes' state goes to the changelog again
    new.moved_red(set(), [TopicPartition("red", 1)])
    assert len(new.red) == 0 and new.red.unrestored(["red:1"]) == ["red:1"]


class Changelog(RedChangelog):
    """A changelog read from memory: ``partitions`` maps a partition to its rows."""

    def __init__(self, settings: Settings, partitions: dict[int, list] | None = None) -> None:
        super().__init__(settings)
        self.partitions = partitions or {}

    def read(self, partitions: list[int]) -> dict[int, list]:
        return {p: self.partitions.get(p, []) for p in partitions}
