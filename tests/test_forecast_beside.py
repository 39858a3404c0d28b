"""Forecasting learns a metrics batch beside its scoring, from the points the batch admitted.

On real components: the session's broker, the publisher, a chdb store and both handlers wired as
``streams.app`` wires them. Scoring is held until forecasting has started: run one after the other,
the batch would wait out the timeout and the test fail.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path

import pytest

from core.kafka.topics import ensure_topics
from streams.app import metrics_then_forecasting
from streams.forecast_handler import forecast_handler
from streams.forecast_pipeline import ForecastOutcome, ForecastPipeline
from streams.metrics_handler import metrics_handler, side_by_side
from streams.metrics_pipeline import BatchOutcome, MetricsPipeline
from streams.publisher import Publisher
from sinks.clickhouse import Store, connect
from tests.helpers import consume_records, isolated_settings, produce
from tests.test_decode_once import batch


def test_forecasting_learns_the_admitted_points_while_the_batch_is_scored(
        tmp_path: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = isolated_settings(tmp_path, kafka_bootstrap, quota_points_per_second=100.0)  # 144 valid points: 44 over
    ensure_topics(settings)
    records, points = batch(f"b-{uuid.uuid4().hex[:6]}")
    produce(settings, records)

    forecasting_started = threading.Event()
    overlapped: list[bool] = []
    learn_points, score_admitted = ForecastPipeline.learn_points, MetricsPipeline.score_admitted
    learned: list[tuple[dict, ForecastOutcome]] = []

    def forecast(self: ForecastPipeline, points: dict, skipped_invalid: int = 0) -> ForecastOutcome:
        forecasting_started.set()
        learned.append((points, learn_points(self, points, skipped_invalid)))
        return learned[-1][1]

    def score(self: MetricsPipeline, outcome: BatchOutcome) -> BatchOutcome:
        overlapped.append(forecasting_started.wait(20))  # one after the other, forecasting starts only later
        return score_admitted(self, outcome)

    monkeypatch.setattr(ForecastPipeline, "learn_points", forecast)
    monkeypatch.setattr(MetricsPipeline, "score_admitted", score)
    store = Store(connect(settings))
    store.migrate()
    try:
        outcome = asyncio.run(handle_once(settings, store, len(records)))
    finally:
        store.close()

    assert overlapped == [True]
    [(forecast_points, forecast_outcome)] = learned
    assert forecast_points is outcome.points  # the admitted points, as the batch scored them
    assert sum(map(len, outcome.points.values())) == outcome.stored == 100
    quota_letters = [letter for letter in outcome.dead_letters if letter.reason.startswith("quota")]
    assert len(quota_letters) == len(points) - 100 and len(outcome.dead_letters) == len(quota_letters) + 2
    assert forecast_outcome.skipped_invalid == len(outcome.dead_letters)


async def handle_once(settings, store: Store, n: int) -> BatchOutcome:
    """One batch of the metrics topic through the handlers wired as in ``streams.app``."""
    publisher = Publisher(settings)
    await publisher.start()
    forecast, _ = forecast_handler(settings, store, publisher)
    scored = metrics_handler(MetricsPipeline(settings, store), publisher, settings)
    outcomes: list[BatchOutcome] = []

    async def metrics(events, alongside):
        outcomes.append(await scored(events, alongside))
        return outcomes[-1]

    try:
        await metrics_then_forecasting(metrics, forecast)(await consume_records(settings, settings.topic_metrics, n))
    finally:
        await publisher.stop()
    [outcome] = outcomes
    return outcome


@pytest.mark.parametrize("failing", ["first", "second"])
def test_a_failure_of_either_side_is_raised_once_the_other_ended(failing: str) -> None:
    """A retry of the batch must not start while a part of its last try still runs."""
    ended: list[str] = []

    async def part(name: str, delay: float) -> str:
        await asyncio.sleep(delay)
        ended.append(name)
        if name == failing:
            raise OSError(f"{name} failed")
        return name

    async def run() -> None:
        with pytest.raises(OSError, match=f"{failing} failed"):
            await side_by_side(part("first", 0.0 if failing == "first" else 0.2),
                               part("second", 0.0 if failing == "second" else 0.2))
        assert sorted(ended) == ["first", "second"]

    asyncio.run(run())
