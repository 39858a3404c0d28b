"""The forecasting path's batch handler: learn, publish forecasts and advice, then return.

``register_forecasting`` builds the :class:`ForecastPipeline` and its output topics, and
returns the handler that ``streams.app`` calls after the metrics handler, with the same
batch and the metrics handler's outcome: it learns the points decoded there (no second
decode). The consumer checkpoints the pipeline only between batches, so models are never
saved between learning a batch and delivering what it produced (a series does not learn a
point twice, so such a checkpoint would drop those outputs from a replay).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import faust
import msgspec

from streams.batch_consumer import KafkaEvent
from streams.forecast_pipeline import ForecastPipeline
from streams.metrics_handler import delivered
from streams.metrics_pipeline import BatchOutcome
from streams.tracing import batch_span, in_thread, record_outcome, stage

if TYPE_CHECKING:
    from m1.settings import Settings
    from sinks.clickhouse import Store


ForecastHandler = Callable[[Sequence[KafkaEvent], BatchOutcome], Awaitable[None]]


def register_forecasting(app: faust.App, settings: Settings, store: Store) -> tuple[ForecastHandler, ForecastPipeline]:
    """Output topics on ``app``; returns the batch handler and its pipeline."""
    pipeline = ForecastPipeline(settings, store)
    raw = dict(key_serializer="raw", value_serializer="raw")
    forecasts = app.topic(settings.topic_forecasts, **raw)
    recommendations = app.topic(settings.topic_recommendations, **raw)

    async def handle(events: Sequence[KafkaEvent], decoded: BatchOutcome) -> None:
        with batch_span(settings.topic_metrics, events, agent="forecast") as span:
            outcome = await in_thread(pipeline.process_points, decoded.points, len(decoded.dead_letters))
            with stage("produce"):
                sends = [forecasts.send(key=f.series.encode(), value=msgspec.json.encode(f)) for f in outcome.forecasts]
                sends += [forecasts.send(key=c.series.encode(), value=msgspec.json.encode(c)) for c in outcome.costs]
                sends += [recommendations.send(key=r.series.encode(), value=msgspec.json.encode(r))
                          for r in outcome.recommendations]
                await delivered(sends)
            record_outcome(span, learned=outcome.learned, skipped_invalid=outcome.skipped_invalid,
                           forecasts=len(outcome.forecasts), cost_projections=len(outcome.costs),
                           recommendations=len(outcome.recommendations))

    return handle, pipeline
