"""Wiring: the Faust app, its publisher, the store and the agents, all in one place.

``build_app(settings, role)`` returns a ready Faust app; ``m1 worker --role`` runs it. The worker
process owns the store (chdb allows one process per data directory), so it also serves
the authenticated HTTP API (``api/``, every route under ``/v1``) on ``M1_WEB_PORT`` for
every other process, its own health in Prometheus' format included (``GET /v1/metrics``,
``core.pipeline_metrics``); Faust's own web server is off (see ``api.service``).

Roles (#14, item 5; docs/scale-out.md):

* ``all`` (the default): everything above, the metrics topic's scoring included;
* ``store-owner``: everything but the metrics topic's scoring; it also inserts what scorers
  forward (``sinks.forwarding``) and commits only after the inserts;
* ``scorer``: only the metrics topic's batch consumer (metrics and forecasting paths), with a
  :class:`sinks.forwarding.ForwardingStore` instead of the store: it opens no store, serves no
  API, and needs ``M1_STATE_DIR`` for its checkpoints. Several scorers share the metrics topic's
  consumer group like several workers do.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial

import faust

from api.service import ApiService
from audit import service as audit_service
from compliance.service import Compliance
from compliance.retention import Retention
from integrations import worker as integrations_worker
from core.kafka.security import faust_credentials
from core.pipeline_metrics import PipelineMetrics
from core.settings import Settings
from core.kafka.topics import ensure_topics
from regions.agent import RegionAgent
from regions.status import RegionStatus
from compliance.redact import Redactor
from sinks.clickhouse import Store, connect
from sinks.forwarding import ForwardingStore, InsertApplier, inserts_topic
from streams.batch_consumer import BatchConsumer, BatchHandler, KafkaEvent, free_in_thread
from streams.checkpoint_positions import PartitionPositions
from streams.forecast_handler import ForecastHandler, forecast_handler
from streams.metrics_handler import DecodeAhead, MetricsHandler, batch_dead_letters, metrics_handler
from streams.forecast_pipeline import ForecastPipeline
from streams.metrics_pipeline import MetricsPipeline
from streams.otlp_agents import register_otel
from streams.publisher import Publisher, worker_forwarder
from streams.tracing import in_thread
from tenancy.registry import Registry
from workflows.agents import wire as workflows_wire


#: Events Faust buffers per stream before it pauses the topic (its default, 4,096, is too few for a
#: ``take_events`` batch to fill under load). Only the workflow agents run on Faust streams (the
#: pipeline's topics have batch consumers), so it does not follow ``M1_BATCH_SIZE``.
FAUST_STREAM_BUFFER = 80_000


def make_faust_app(settings: Settings) -> faust.App:
    """A Faust app configured from settings (no agents yet), logged in to Kafka as they say."""
    return faust.App(
        settings.app_id,
        broker=settings.kafka_url,
        broker_credentials=faust_credentials(settings),

        store="memory://",
        datadir=str((settings.home / "faust").resolve()),
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=FAUST_STREAM_BUFFER,
        web_enabled=False,  # the worker serves our API instead (api.service, on web_port/web_bind)
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        web_host="127.0.0.1",
    )


def metrics_then_forecasting(metrics: MetricsHandler, forecast: ForecastHandler,
                             observed: PipelineMetrics | None = None) -> BatchHandler:
    """The metrics topic's batch handler: the metrics path, and forecasting on the points it decoded
    and admitted, beside its scoring (both learn in compiled code that lets go of the interpreter
    lock: on two cores they run at once). It returns once both have stored their rows and Kafka
    acknowledged their sends; then it reports the batch's time, points stored and dead letters to
    ``observed``."""

    async def handle(events: Sequence[KafkaEvent]) -> None:
        started = time.perf_counter()
        outcome = await metrics(events, partial(forecast, events))  # forecasting beside the scoring
        if observed is not None:
            observed.batch_handled(time.perf_counter() - started, outcome.stored,
                                   [letter.reason for letter in outcome.dead_letters])
        handled = [outcome]  # its points: freed beside the event loop
        del outcome
        free_in_thread(handled)

    return handle


#: ``m1 worker --role``: see the module docstring.
ROLES = ("all", "store-owner", "scorer")


def metrics_consumer(settings: Settings, pipeline: MetricsPipeline, forecast: ForecastHandler,
                     forecasting: ForecastPipeline, publisher: Publisher, observed: PipelineMetrics) -> BatchConsumer:
    """The metrics topic's batch consumer: scoring and forecasting side by side, checkpointed with its commits;
    re-keyed records are forwarded in a transaction that the checkpoint commits with the offsets."""
    group_id = f"{settings.app_id}-metrics"
    forwarder = worker_forwarder(settings, group_id)
    ahead = DecodeAhead(pipeline)  # the next batch is decoded while this one is scored and stored
    # checkpoints record the offsets they cover, so one written and never committed is not restored
    pipeline.positions = forecasting.positions = positions = PartitionPositions()
    return BatchConsumer(
        settings, settings.topic_metrics, group_id=group_id, forwarder=forwarder, ready=ahead.ready, positions=positions,
        handler=metrics_then_forecasting(metrics_handler(pipeline, publisher, settings, forwarder.send, ahead),
                                         forecast, observed),
        # cut both banks between batches; their writers run off the batch path, then the last one (only if all saved)
        checkpoints=[pipeline.cut, forecasting.cut, lambda: observed.checkpointed],
        checkpoint_due=lambda: pipeline.bank.checkpoint_due() or forecasting.bank.checkpoint_due(),
        # the records of a batch the store kept rejecting
        dead_letters=observed.counting_dead_letters(batch_dead_letters(pipeline, publisher, settings)),
        forget=[pipeline.forget, forecasting.forget],  # the models of partitions another worker took
    )


def forwarded_inserts(settings: Settings, store: Store) -> BatchConsumer:
    """The store owner's consumer of what scorers forward: each batch inserted, then committed."""
    applier = InsertApplier(store.insert)

    async def handle(events: Sequence[KafkaEvent]) -> None:
        await in_thread(applier.apply, [(event.key, event.value or b"") for event in events])

    return BatchConsumer(settings, inserts_topic(settings.app_id), group_id=f"{settings.app_id}-store-owner",
                         handler=handle, checkpoints=[], by_pattern=False)


def build_scorer_app(settings: Settings) -> faust.App:
    """A scorer process: the metrics topic's consumer, its inserts forwarded to the store owner."""
    if settings.state_dir is None:
        raise ValueError("a scorer keeps its checkpoints in M1_STATE_DIR (shared with every worker of the group); set it")
    ensure_topics(settings)
    ensure_topics(settings, [inserts_topic(settings.app_id)])
    settings.home.mkdir(parents=True, exist_ok=True)  # Faust's data directory goes there (no store does)
    app = make_faust_app(settings.model_copy(update={"app_id": f"{settings.app_id}-scorer"}))  # not the owner's group
    publisher = app.service(Publisher(settings))
    store = ForwardingStore(inserts_topic(settings.app_id), publisher.publish, lambda: publisher.loop)
    observed = PipelineMetrics()
    # subject keys live in the store: values the policy encrypts are redacted here (docs/scale-out.md)
    pipeline = MetricsPipeline(settings, store, Redactor.from_settings(settings))
    forecast, forecasting = forecast_handler(settings, store, publisher)
    app.service(metrics_consumer(settings, pipeline, forecast, forecasting, publisher, observed))
    return app


def build_app(settings: Settings, role: str = "all") -> faust.App:
    """The pipeline's Faust app for ``role`` (see the module docstring): topics, store, the metrics
    batch consumer with its metrics and forecasting handlers, the OTLP agents, timers and the HTTP API."""
    if role not in ROLES:
        raise ValueError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    if role == "scorer":
        return build_scorer_app(settings)
    ensure_topics(settings)
    app = make_faust_app(settings)
    publisher = app.service(Publisher(settings))  # every output record goes out through it
    observed = PipelineMetrics()  # the worker's own health, at GET /v1/metrics
    store = Store(connect(settings), on_insert=observed.store_insert)
    store.migrate()
    Retention(settings, store).apply(materialize=False)  # TTL per retention class, tenant and legal hold
    pipeline = MetricsPipeline(settings, store)
    forecast, forecasting = forecast_handler(settings, store, publisher)  # forecasts, costs, replica advice
    observed.watch_bank("detectors", pipeline.bank.__len__)
    observed.watch_bank("forecasters", forecasting.bank.__len__)
    if role == "all":
        consumer = app.service(metrics_consumer(settings, pipeline, forecast, forecasting, publisher, observed))
    else:  # the store owner: scorers score the metrics topic and forward their inserts here
        ensure_topics(settings, [inserts_topic(settings.app_id)])
        consumer = app.service(forwarded_inserts(settings, store))
    observed.watch_lag(consumer.lag)  # asked of the broker at each scrape

    run_bottlenecks = register_otel(app, settings, store, pipeline, publisher, observed)  # OTLP agents, bottleneck job, self-tracing
    # audit topic -> hash chains, signed heads; events redacted like every other path
    access_listener = audit_service.wire(app, settings, store, publisher, pipeline.redactor)
    workflows_wire(app, settings, store, publisher)  # alert workflows: sources -> engine (Faust table) -> notifications
    integrations_worker.wire(app, settings, store, publisher)  # notifications outbox -> receivers; deliveries table
    regions = RegionStatus() if settings.region else None  # the agent's decisions, for /v1/route and /v1/regions
    if regions is not None:  # multi-region: heartbeats, lag, health, verdict, routing and their tables
        app.service(RegionAgent(settings, store=store, publisher=publisher, status=regions))
    app.service(ApiService(settings, store, Registry.from_settings(settings), run_bottlenecks, observed,
                           access_listener=access_listener, compliance=Compliance.in_worker(settings, store, publisher),
                           regions=regions))
    return app
