"""The forecasting path's batch handler: learn, store and publish forecasts and advice, then return.

``forecast_handler`` builds the :class:`ForecastPipeline` and returns the handler that
``streams.app`` runs beside the metrics handler's scoring, with the same batch and the points the
metrics handler decoded and admitted (no second decode; points over a quota are not learned). The consumer
checkpoints the pipeline only between batches, so models are never saved between learning a
batch and delivering what it produced (a series does not learn a point twice, so such a
checkpoint would drop those outputs from a replay). For the same reason, what a batch learned
but could not deliver (its inserts or sends failed) is kept for that batch's retry, which
learns nothing again and delivers it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import msgspec

from streams.batch_consumer import KafkaEvent, free_in_thread
from streams.forecast_pipeline import ForecastOutcome, ForecastPipeline
from streams.metrics_pipeline import BatchOutcome
from streams.publisher import OutputRecord, Publisher
from streams.tracing import batch_span, in_thread, record_outcome, stage

if TYPE_CHECKING:
    from core.settings import Settings
    from sinks.clickhouse import Store


ForecastHandler = Callable[[Sequence[KafkaEvent], BatchOutcome], Awaitable[None]]


def forecast_handler(settings: Settings, store: Store, publisher: Publisher) -> tuple[ForecastHandler, ForecastPipeline]:
    """The batch handler that learns and publishes forecasts, and its pipeline."""
    pipeline = ForecastPipeline(settings, store)
    undelivered: list[tuple[Sequence[KafkaEvent], ForecastOutcome]] = []  # the last batch's, until delivered

    def learn_and_store(events: Sequence[KafkaEvent], decoded: BatchOutcome) -> tuple[ForecastOutcome, list[OutputRecord]]:
        outcome = pipeline.learn_points(decoded.points, len(decoded.dead_letters))
        if undelivered and undelivered[0][0] is events:  # a retry: it delivers what the batch learned before
            undelivered[0][1].add(outcome)
            outcome = undelivered[0][1]
        undelivered[:] = [(events, outcome)]
        pipeline.store_outputs(outcome)
        return outcome, output_records(settings, outcome)  # encoded here, off the event loop's thread

    async def handle(events: Sequence[KafkaEvent], decoded: BatchOutcome) -> None:
        with batch_span(settings.topic_metrics, events, agent="forecast") as span:
            outcome, records = await in_thread(learn_and_store, events, decoded)
            with stage("produce"):
                await publisher.publish(records)
            undelivered.clear()
            record_outcome(span, learned=outcome.learned, skipped_invalid=outcome.skipped_invalid,
                           forecasts=len(outcome.forecasts), cost_projections=len(outcome.costs),
                           recommendations=len(outcome.recommendations))
        delivered = [outcome, records]  # thousands of forecasts at 10,000 series: freed beside the event loop
        del outcome, records
        free_in_thread(delivered)

    return handle, pipeline


def output_records(settings: Settings, outcome: ForecastOutcome) -> list[OutputRecord]:
    """The records of ``outcome``'s forecasts and costs (forecasts topic) and recommendations, keyed by series."""
    records: list[OutputRecord] = [(settings.topic_forecasts, e.series.encode(), msgspec.json.encode(e))
                                   for e in outcome.forecasts]
    records += [(settings.topic_costs, c.series.encode(), msgspec.json.encode(c)) for c in outcome.costs]
    records += [(settings.topic_recommendations, r.series.encode(), msgspec.json.encode(r)) for r in outcome.recommendations]
    return records
