"""The audit trail inside the worker: the audit topic's batch consumer, and the outbox that
sends the pipeline's own audit events (configuration at start, every API access decision) and
the tree heads the checkpoint clock signs.

``streams.app.build_app`` calls :func:`wire` once; it returns the listener the API calls with
every access decision (``ApiService(access_listener=...)``). It also adds the clock that applies
the retention rules again every hour (``compliance.retention``): the trail's horizon moves; and
the consumer of erasure notices (``compliance.erasure_notices``): an erasure through another
worker destroys the key on this worker's store too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import faust
from mode import Service

from audit import events
from audit.ingest import AuditIngest
from audit.paths import key_file
from audit.signer import Signer
from compliance import erasure_notices
from compliance.redact import Redactor
from compliance.retention import Retention, RetentionClock
from core.settings import Settings
from core.kafka.topics import ensure_topics
from sinks.clickhouse import Store
from streams.batch_consumer import BatchConsumer, KafkaEvent
from streams.metrics_handler import alert_records, records_of
from streams.metrics_pipeline import dead_letter
from streams.publisher import OutputRecord, Publisher
from streams.tracing import in_thread

if TYPE_CHECKING:
    from api.access import AccessEntry

log = logging.getLogger(__name__)

#: Most records the outbox holds while Kafka does not take them (as many as the access log holds).
MAX_PENDING = 100_000


def make_ingest(settings: Settings, store: Store, redactor: Redactor) -> AuditIngest:
    """The chainer as the settings configure it (its key created on first use), applying
    ``redactor``'s personal-data policy to every event before it is chained."""
    signer = Signer(key_file(settings), store)
    signer.key()
    return AuditIngest(store, signer, settings.audit_checkpoint_events, settings.audit_checkpoint_seconds,
                       settings.audit_dedupe_window, settings.max_payload_bytes, redact=redactor.event)


class Outbox(Service):
    """Records queued from any thread, published every second and on stop (a crash loses at most
    the last second's, as it does the access_log rows not yet flushed). Every second it also
    queues what ``due()`` (blocking, run in a thread) returns: the tree heads now due."""

    def __init__(self, publisher: Publisher, due: Callable[[], Sequence[OutputRecord]] = list, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.publisher = publisher
        self.due = due
        self._records: list[OutputRecord] = []
        self._lock = threading.Lock()

    def add(self, records: Sequence[OutputRecord]) -> None:
        """Queue ``records``; beyond :data:`MAX_PENDING` waiting (Kafka down) the oldest go, with a warning."""
        with self._lock:
            self._records.extend(records)
            if (excess := len(self._records) - MAX_PENDING) > 0:
                log.warning("audit outbox: %d records wait for Kafka; dropping the oldest %d", len(self._records), excess)
                del self._records[:excess]

    async def flush(self) -> None:
        with self._lock:
            records, self._records = self._records, []
        if records:
            try:
                await self.publisher.publish(records)
            except Exception:
                log.exception("audit outbox: %d records not sent; retrying", len(records))
                self.add(records)

    async def on_stop(self) -> None:
        await self.flush()

    @Service.task
    async def _send(self) -> None:
        while not self.should_stop:
            await self.sleep(1.0)
            try:
                self.add(await in_thread(self.due))
            except Exception:
                log.exception("audit: signing the tree heads due failed; trying again")
            await self.flush()


def wire(app: faust.App, settings: Settings, store: Store, publisher: Publisher,
         redactor: Redactor) -> Callable[[AccessEntry], None]:
    """Send the ``config.start`` event, add the audit consumer and outbox to ``app``; return the
    API's access listener. Events are chained as ``redactor`` leaves them."""
    ensure_topics(settings, [settings.topic_audit, settings.topic_audit_checkpoints])
    ingest = make_ingest(settings, store, redactor)
    events.send(settings, [events.config_event(settings)])  # on the broker before the worker starts
    outbox = app.service(Outbox(publisher, due=lambda: events.head_records(settings, ingest.due_heads())))
    app.service(RetentionClock(Retention(settings, store)))  # the trail's retention horizon moves with time
    erasure_notices.wire(app, settings, store, publisher)  # erasures through other workers reach this store

    async def handle(batch: Sequence[KafkaEvent]) -> None:
        outcome = await in_thread(ingest.process, [e.value for e in batch])
        now = time.time()
        source = records_of(batch)
        letters = [dead_letter(source[i], f"audit: {reason}", now, settings.max_payload_bytes) for i, reason in outcome.rejected]
        await publisher.publish(events.head_records(settings, outcome.heads) + alert_records(settings, letters, []))

    # The audit topic is one topic whatever M1_TENANT_TOPICS says: the pipeline writes to it itself.
    app.service(BatchConsumer(settings.model_copy(update={"tenant_topics": False}), settings.topic_audit,
                              group_id=f"{settings.app_id}-audit", handler=handle, checkpoints=[]))
    # the pipeline's own events pass the policy before they reach the topic too (the client's address...)
    return lambda entry: outbox.add(events.records(settings, [redactor.event(events.access_event(settings, entry))]))
