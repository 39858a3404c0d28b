"""Several scoring processes feed one store owner (#14, item 5): two ``m1 worker --role scorer``
processes, which open no store, forward their inserts over Kafka to one ``--role store-owner``,
which stores exactly the rows, and leads to exactly the anomalies and model states, that one
worker does over the same input.

Real broker, real processes; the scorers share the owner's checkpoint directory and keys.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from m1.query_client import run_query
from m1.worker_process import WorkerProcess
from sinks.forwarding import InsertApplier, encode_insert
from tests.helpers import isolated_settings, produce, start_together, wait_for
from tests.test_scale_out import anomalies, group, handled, member, points, states, workload


def test_a_forwarded_insert_sent_twice_is_stored_once() -> None:
    """The owner may read a message twice (a producer retry, a replay after its crash): its
    idempotency key makes the second one a no-op; a failed insert leaves its keys to the retry."""
    inserted: list[tuple[str, int]] = []
    fail = [True]

    def insert(table: str, columns: dict) -> int:
        if fail[0]:
            fail[0] = False
            raise RuntimeError("store down")
        inserted.append((table, len(pa.table(columns))))
        return len(pa.table(columns))

    applier = InsertApplier(insert)
    messages = encode_insert("anomalies", {"series": ["a", "b", "c"], "score": [1.0, 2.0, 3.0]})
    with pytest.raises(RuntimeError):
        applier.apply(messages)
    assert applier.apply(messages + messages) == 3
    assert applier.apply(messages) == 0 and inserted == [("anomalies", 3)]


def test_large_inserts_are_split_under_the_message_limit() -> None:
    rows = 200_000
    messages = encode_insert("metric_points", {"series": [f"series-{i}" for i in range(rows)],
                                               "value": pa.array(range(rows), pa.float64())})
    assert len(messages) > 1 and all(len(value) < 1024 * 1024 for _, value in messages)
    inserted: list[int] = []
    assert InsertApplier(lambda table, columns: inserted.append(len(pa.table(columns))) or inserted[-1]).apply(messages) == rows
    assert inserted == [rows]  # one insert per table and batch


@pytest.mark.slow
def test_two_scorers_and_a_store_owner_match_one_worker(one_worker_run: tuple[Path, dict, set, dict],
                                                        kafka_bootstrap: str) -> None:
    data = workload()
    root, one_anomalies, one_points, one_states = one_worker_run

    shared = group(root / "scorers", kafka_bootstrap)
    owner = WorkerProcess(shared, shared.home / "owner.log", role="store-owner")
    scorers = [WorkerProcess(member(shared, root / "scorers" / f"s{i}"), root / "scorers" / f"scorer{i}.log",
                             role="scorer") for i in range(2)]
    start_together([owner, *scorers])
    try:
        produce(shared, data)
        assert wait_for(lambda: handled(shared), timeout=300)
        assert wait_for(lambda: run_query(shared, "SELECT count() FROM metric_points FINAL").rows[0][0] == len(data),
                        timeout=120)
        many_points = points([shared])
        assert run_query(shared, "SELECT count() FROM metric_points").rows[0][0] >= len(data)
    finally:
        for scorer in scorers:
            scorer.stop()
        owner.stop()
    assert all(b"Traceback" not in s.log_path.read_bytes() for s in scorers)
    assert many_points == one_points
    many_anomalies = anomalies(shared)
    assert many_anomalies.keys() == one_anomalies.keys()
    assert all(many_anomalies[k] == pytest.approx(one_anomalies[k], abs=1e-9) for k in one_anomalies)
    assert states(shared) == one_states


def test_a_scorer_without_a_shared_state_directory_refuses_to_start(tmp_path: Path, kafka_bootstrap: str) -> None:
    settings = isolated_settings(tmp_path, kafka_bootstrap)
    with pytest.raises(RuntimeError, match="exited"):
        WorkerProcess(settings, tmp_path / "scorer.log", role="scorer").start(timeout=60)
    assert b"M1_STATE_DIR" in (tmp_path / "scorer.log").read_bytes()

