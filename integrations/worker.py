"""Delivery inside the worker: the outbox consumer, and the deliveries topic into its table.

``wire(app, settings, store, publisher)`` (called by ``streams.app.build_app``) adds the
:class:`~integrations.delivery.DeliveryService` and a batch consumer writing every attempt's
outcome from ``topic_deliveries`` to the ``deliveries`` table (schemas/ddl/101_deliveries.sql).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import faust
import msgspec
import pyarrow as pa

from integrations.delivery import Delivery, DeliveryService, delivery_topics
from core.settings import Settings
from core.kafka.topics import ensure_topics
from sinks.clickhouse import TS_TYPE, Store
from streams.batch_consumer import BatchConsumer, BatchHandler, KafkaEvent
from streams.publisher import Publisher

log = logging.getLogger(__name__)
_decode = msgspec.json.Decoder(Delivery).decode
COLUMNS = [f for f in Delivery.__struct_fields__]


def columns(deliveries: Sequence[Delivery]) -> dict[str, Any]:
    """The rows of the deliveries table, by column (times as UTC milliseconds).

    >>> d = Delivery("n", "acme", "w", "ops", "webhook", "trigger", "i", 1, "delivered", 200, "", 2.5, 1.0, 2.0, 2.5)
    >>> columns([d])["ts"].to_pylist()[0].isoformat(), columns([d])["status"]
    ('1970-01-01T00:00:02.500000+00:00', [200])
    """
    out: dict[str, Any] = {}
    for name in COLUMNS:
        values = [getattr(d, name) for d in deliveries]
        out[name] = pa.array([int(round(v * 1000)) for v in values], type=TS_TYPE) if name.endswith("ts") else values
    return out


def store_deliveries(store: Store) -> BatchHandler:
    """A batch handler writing deliveries records to the table (an undecodable one is logged: the
    topic, written by delivery alone, stays the record of truth)."""

    async def handle(events: Sequence[KafkaEvent]) -> None:
        rows = []
        for event in events:
            try:
                rows.append(_decode(event.value))
            except msgspec.DecodeError as exc:
                log.warning("deliveries: record at %s:%d is not a delivery (%s)", event.topic,
                            event.offset, exc)
        if rows:
            await asyncio.get_running_loop().run_in_executor(None, store.insert, "deliveries", columns(rows))

    return handle


def wire(app: faust.App, settings: Settings, store: Store, publisher: Publisher) -> DeliveryService:
    """Add delivery and the deliveries table writer to the worker's app."""
    ensure_topics(settings, delivery_topics(settings))
    app.service(BatchConsumer(settings, settings.topic_deliveries, group_id=f"{settings.app_id}-deliveries",
                              handler=store_deliveries(store), checkpoints=[]))
    return app.service(DeliveryService(settings, publisher))
