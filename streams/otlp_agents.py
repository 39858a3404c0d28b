"""Faust wiring of everything OpenTelemetry: the OTLP agents, the bottleneck job, self-tracing.

``register_otel(app, settings, store, metrics, publisher)`` (one line in ``streams.app.build_app``):

* sets up self-tracing from the ``OTEL_*`` variables when they ask for it (``core.telemetry``);
* batch consumers (``streams.batch_consumer``) of ``otlp_spans`` and ``otlp_metrics`` (with
  ``M1_TENANT_TOPICS``, every tenant's, by pattern) and of the internal RED topic
  (``streams.red``), handled by ``streams.otlp_pipeline``: they send dead letters and the records
  forwarded for scoring (RED spans keyed by tenant and service, metric points keyed by series)
  in a Kafka transaction that commits the batch's offsets too, after each batch
  (``streams.publisher.Forwarder``), so each forwarded record is read once. They retry a failed
  batch as ``streams.retry`` says, and dead-letter a batch the store kept rejecting like the
  metrics topic's consumer. The RED topic's consumer (:func:`red_consumer`) forwards the RED state
  its batch changed to the state's changelog in the same transaction (``streams.red_changelog``),
  restores the keys of the partitions it is assigned from there, drops the state of keys it lost,
  and rolls back to its last commit after any failure (its handler is not idempotent) (#14);
* a timer closing the RED minutes of keys that went quiet, between the RED consumer's batches
  and in its transactions;
* the bottleneck job (``streams.bottleneck_job``) on a leader-only timer every
  ``M1_BOTTLENECK_SECONDS``, publishing each report on the bottlenecks topic; ``register_otel``
  returns the same run for one tenant (an ``api.handlers.RunBottlenecks``) for the API to call
  on demand (``POST /v1/tenants/{tenant}/bottlenecks``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import faust
import msgspec

from core.pipeline_metrics import PipelineMetrics
from core.telemetry import setup_tracing_if_configured
from core.kafka.topics import check_partitions, ensure_topics
from streams.batch_consumer import BatchConsumer, BatchDeadLetters, BatchHandler, KafkaEvent
from streams.bottleneck_job import BottleneckJob
from streams.metrics_handler import alert_records, batch_dead_letters, records_of
from streams.metrics_pipeline import MetricsPipeline, Record
from streams.otlp_pipeline import OtlpOutcome, OtlpPipeline
from streams.publisher import Forward, Forwarder, Publisher, worker_forwarder
from streams.red_changelog import CHANGELOG_CONFIGS
from streams.tracing import batch_span, in_thread, record_outcome, stage

if TYPE_CHECKING:
    from api.handlers import RunBottlenecks
    from core.settings import Settings
    from sinks.clickhouse import Store

log = logging.getLogger(__name__)

IDLE_CHECK_SECONDS = 10.0


def register_otel(app: faust.App, settings: Settings, store: Store, metrics: MetricsPipeline,
                  publisher: Publisher, observed: PipelineMetrics | None = None) -> RunBottlenecks:
    """Add self-tracing, the OTLP agents and the bottleneck job to ``app``; return the job's run
    (``await run(tenant, services, window_seconds, limit)``; no tenant: every tenant), which
    stores and publishes its reports. ``observed`` counts the OTLP batches' points and dead letters."""
    setup_tracing_if_configured()
    pipeline = OtlpPipeline(settings, store, metrics)
    dead_letters = batch_dead_letters(metrics, publisher, settings)
    if observed is not None:
        dead_letters = observed.counting_dead_letters(dead_letters)
        observed.watch_bank("red", pipeline.red.__len__)  # RED states held (tenant and service)
    ensure_topics(settings, [pipeline.red_topic])
    ensure_topics(settings, [pipeline.red_changelog.topic], CHANGELOG_CONFIGS)
    check_partitions(settings, [pipeline.red_topic, pipeline.red_changelog.topic])  # partition p holds p's keys
    for process, topic, name in ((pipeline.process_spans, settings.topic_otlp_spans, "otlp_spans"),
                                 (pipeline.process_metrics, settings.topic_otlp_metrics, "otlp_metrics")):
        group_id = f"{settings.app_id}-{name}"
        forwarder = worker_forwarder(settings, group_id)
        app.service(BatchConsumer(settings, topic, group_id=group_id, checkpoints=[], checkpoint_due=lambda: True,
                                  handler=otlp_handler(process, topic, name, forwarder.send, settings, observed),
                                  dead_letters=dead_letters, forwarder=forwarder))
    red_forwarder = worker_forwarder(settings, red_group(settings))
    red = app.service(red_consumer(settings, pipeline, red_forwarder, dead_letters, observed))

    async def close_idle_minutes() -> None:
        await _send_outcome(await in_thread(pipeline.close_idle_minutes), red_forwarder.send, settings)

    @app.timer(IDLE_CHECK_SECONDS, name="otlp_red_idle")
    async def close_idle_red_minutes() -> None:
        # those minutes are closed again after a failure (rolled back), by the next tick
        await red.exclusively(close_idle_minutes, "closing idle RED minutes")

    job = BottleneckJob(settings, store)

    async def run_job(tenant: str | None = None, services: list[str] | None = None, window_seconds: int | None = None,
                      limit: int | None = None) -> list[dict]:
        reports = await in_thread(job.run, tenant, services, window_seconds, limit)
        await publisher.publish([(settings.topic_bottlenecks, f"{r['tenant']}|{r['entry_service']}".encode(),
                                  msgspec.json.encode(r)) for r in reports])
        return reports

    if settings.bottleneck_seconds > 0:
        @app.timer(settings.bottleneck_seconds, on_leader=True, name="bottlenecks")
        async def bottlenecks() -> None:
            try:
                reports = await run_job()
            except Exception:  # a failed run must not stop the timer; the next one retries
                log.exception("bottleneck job failed")
                return
            log.info("bottleneck job: %d reports", len(reports))

    return run_job


def red_group(settings: Settings) -> str:
    """The consumer group of the RED topic."""
    return f"{settings.app_id}-otlp_red"


def red_consumer(settings: Settings, pipeline: OtlpPipeline, forwarder: Forwarder, dead_letters: BatchDeadLetters | None,
                 observed: PipelineMetrics | None = None) -> BatchConsumer:
    """The RED topic's batch consumer: each batch's minutes and changed RED state are forwarded in
    ``forwarder``'s transaction, committed with the batch's offsets right after it (no checkpoint of
    its own: the transaction is the checkpoint)."""
    return BatchConsumer(
        settings, pipeline.red_topic, group_id=red_group(settings), by_pattern=False,
        handler=otlp_handler(pipeline.aggregate_red, pipeline.red_topic, "otlp_red", forwarder.send, settings, observed),
        checkpoints=[], checkpoint_due=lambda: True, forget=[pipeline.forget_red], moved=[pipeline.moved_red],
        dead_letters=dead_letters, forwarder=forwarder, replay_on_failure=True, reset=[pipeline.reset_red])


def otlp_handler(process: Callable[[list[Record]], OtlpOutcome], topic: str, name: str, forward: Forward,
                 settings: Settings, observed: PipelineMetrics | None = None) -> BatchHandler:
    """A batch handler that hands a batch of ``topic`` to ``process`` and ``forward`` s its outputs
    (and counts its stored points and dead letters in ``observed``)."""

    async def handle(events: Sequence[KafkaEvent]) -> None:
        with batch_span(topic, events, agent=name) as span:
            with stage("consume"):
                records = records_of(events)
            outcome = await in_thread(process, records)
            await _send_outcome(outcome, forward, settings)
            record_outcome(span, spans=outcome.spans, gauge=outcome.gauge, sum=outcome.sum,
                           stored=outcome.stored, dead_letters=len(outcome.dead_letters),
                           anomalies=len(outcome.anomalies), unscored=len(outcome.unscored),
                           rekeyed=len(outcome.rekeyed))
            if observed is not None:
                observed.outputs(outcome.stored, [letter.reason for letter in outcome.dead_letters])

    return handle


async def _send_outcome(outcome: OtlpOutcome, forward: Forward, settings: Settings) -> None:
    if not (outcome.dead_letters or outcome.anomalies or outcome.rekeyed):
        return
    with stage("produce"):
        await forward(alert_records(settings, outcome.dead_letters, outcome.anomalies) + outcome.rekeyed)
