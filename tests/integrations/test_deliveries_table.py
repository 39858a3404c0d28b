"""The deliveries topic's records land in the deliveries table (the worker's writer, on a real store)."""

from __future__ import annotations

from aiokafka import ConsumerRecord

import msgspec

from integrations.delivery import Delivery
from integrations.worker import store_deliveries
from sinks.clickhouse import Store
from streams.batch_consumer import KafkaEvent


def event(offset: int, value: bytes) -> KafkaEvent:
    return ConsumerRecord("deliveries", 0, offset, 0, 0, None, value, None, 0, len(value), ())


async def test_every_attempt_is_a_row_and_a_replay_is_one(store: Store) -> None:
    attempts = [Delivery("n1", "acme", "wf", "ops", "webhook", "trigger", "inc-1", 1, "failed", 503, "http 503",
                         1_764_400_001.0, 1_764_400_000.0, 1_764_400_000.5, 1_764_400_001.0),
                Delivery("n1", "acme", "wf", "ops", "webhook", "trigger", "inc-1", 2, "delivered", 200, "",
                         1_764_400_003.0, 1_764_400_000.0, 1_764_400_000.5, 1_764_400_001.0)]
    handle = store_deliveries(store)
    records = [event(i, msgspec.json.encode(d)) for i, d in enumerate(attempts)]
    await handle(records + [event(9, b"not json")])
    await handle(records)  # a replay after a crash
    rows = store.query("SELECT attempt, outcome, status, toUnixTimestamp64Milli(ts) FROM deliveries FINAL "
                       "WHERE tenant = 'acme' AND id = 'n1' ORDER BY attempt").rows
    assert [tuple(r) for r in rows] == [(1, "failed", 503, 1_764_400_001_000), (2, "delivered", 200, 1_764_400_003_000)]
