"""A replication lag spike alerts like any other series: the agent's ``metric/1`` points (regions/lag.py)
go through the real metrics pipeline (decode, the default detector, the embedded store), and the
spike, and only the spike, becomes an anomaly of the pair's series."""

from __future__ import annotations

import random
import time
from pathlib import Path

from core.settings import Settings
from regions.heartbeat import heartbeat
from regions.lag import LagTracker, lag_records
from sinks.clickhouse import Store, connect
from streams.metrics_pipeline import MetricsPipeline, Record

BEATS = 900
SPIKE_AT = 850


def test_a_lag_spike_is_an_anomaly_of_the_pairs_series(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    rng = random.Random(7)
    t0 = time.time() - BEATS - 60
    tracker = LagTracker("us-east", window_seconds=10.0, since=t0)
    records = []
    for i in range(BEATS):
        sent = t0 + i
        delay = 2.5 if i == SPIKE_AT else rng.uniform(0.015, 0.035)  # 15-35 ms, one 2.5 s stall
        tracker.beat(heartbeat("eu-west", i, sent), sent + delay)
        for topic, key, value in lag_records(settings, [], tracker.points(sent + 1.0, {})):
            records.append(Record(topic, 0, len(records), key, value))
    store = Store(connect(settings))
    try:
        store.migrate()
        outcome = MetricsPipeline(settings, store).process(records)
        assert outcome.stored == BEATS and not outcome.dead_letters
        flagged = [a for a in outcome.anomalies if a.metric == "lag_ms"]
        assert [round(a.value) for a in flagged] == [2500]
        assert flagged[0].series == "platform|us-east|replication|lag_ms|source=eu-west,target=us-east"
        assert flagged[0].ts == t0 + SPIKE_AT + 1.0
    finally:
        store.close()
