"""More workers, same results (#14): a consumer group of workers that grows from 2 to 3 and
loses one to SIGKILL mid-stream stores the same points, publishes the same anomalies (same
scores) and ends with the same model states as one worker given the same input.

Real broker, real worker processes, each with its own home and chdb store (read through its
API), sharing one checkpoint directory (``M1_STATE_DIR``) and the keys as workers of one
machine do.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import SecretStr

from core.child_env import settings_env
from core.kafka.local_broker import free_port
from core.kafka.security import client_kwargs
from m1 import cli
from m1.query_client import run_query
from core.settings import Settings
from m1.worker_process import WorkerProcess
import numpy as np

from models.bank import MAC_BYTES, ModelBank
from schemas.events import EventDecoder, MetricPoint, encode
from sinks.state_files import StateDirectory
from streams.batch_consumer import BatchConsumer
from streams.metrics_pipeline import Record, decode_batch
from core.tenant_names import PLATFORM
from tests.helpers import isolated_settings, new_key, produce, start_together, start_worker, wait_for, worker_process

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
SERIES, POINTS, PARTITIONS = 40, 250, 6
SPIKES = (180, 210, 240)  # after the ensemble's warm-up


def workload() -> list[tuple[bytes, bytes]]:
    """SERIES keyed series (every 4th a forecast metric) of POINTS each, interleaved in time, with spikes."""
    out = []
    for i in range(POINTS):
        for s in range(SERIES):
            metric = "cpu_pct" if s % 4 == 0 else "latency_ms"
            value = 50.0 + 5.0 * math.sin(i / 7.0 + s) + ((i * 31 + s * 17) % 11) / 5.0
            if i in SPIKES and (i + s) % 3 == 0:
                value *= 4
            p = MetricPoint(T0 + 60 * i, "scale", "eu-west-1", f"svc{s % 5}", metric, value, {"host": f"h{s}"})
            out.append((p.series_key.encode(), encode(p)))
    return out


def test_keyless_records_are_rekeyed_not_scored_where_they_land() -> None:
    """A keyless record may land in any partition, so any worker: it goes back keyed by its series."""
    p = MetricPoint(T0, "scale", "eu-west-1", "api", "latency_ms", 1.0)
    keyed, keyless = Record("m", 0, 0, p.series_key.encode(), encode(p)), Record("m", 1, 0, None, encode(p))
    outcome = decode_batch(EventDecoder(MetricPoint), [keyed, keyless], T0, 60.0, redact=lambda point: point)
    assert outcome.rekeyed == [("m", p.series_key.encode(), keyless.value)]
    assert [point.ts for point in outcome.points[p.series_key]] == [T0]  # the keyed one only


def test_a_state_file_moved_to_another_series_is_refused(tmp_path: Path) -> None:
    """Files in the shared directory are sealed as table rows are: one copied over another series'
    file is not unpickled, and that series starts afresh."""
    bank, files = ModelBank("zscore", key=bytes(32)), StateDirectory(tmp_path)
    bank.score_learn("a|x", np.arange(5.0), np.arange(5.0))
    bank.score_learn("b|x", np.arange(3.0), np.arange(3.0))
    assert files.save(bank) == 2
    fresh = ModelBank("zscore", key=bytes(32))
    files.restore_missing(fresh, ["a|x", "b|x"])
    assert (fresh.points("a|x"), fresh.points("b|x")) == (5, 3)
    state_key = bank.state_key
    files.path(state_key, "b|x", 0).write_bytes(files.path(state_key, "a|x", 0).read_bytes())  # a's state as b's
    moved = ModelBank("zscore", key=bytes(32))
    files.restore_missing(moved, ["a|x", "b|x"])
    assert (moved.points("a|x"), moved.points("b|x")) == (5, 0)


def group(root: Path, bootstrap: str) -> Settings:
    """The settings every member of one consumer group shares: topics, group, checkpoint directory, keys
    (the personal-data key is the test's: both runs must make the same series keys)."""
    return isolated_settings(root / "w0", bootstrap, topic_partitions=PARTITIONS, state_dir=root / "state",
                             state_key_path=root / "state.key", pii_key_path=root.parent / "pii.key")


def member(shared: Settings, home: Path) -> Settings:
    """A member of the group with its own home (store, registry, API key) and port."""
    settings = shared.model_copy(update={"home": home, "web_port": free_port()})
    return settings.model_copy(update={"api_key": SecretStr(new_key(settings, PLATFORM, ["platform-admin"]))})


async def _topic_state(settings: Settings, group_id: str | None) -> tuple[dict, dict]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=group_id, enable_auto_commit=False,
                                **client_kwargs(settings))
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topic_metrics, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
        committed = {tp: await consumer.committed(tp) for tp in tps} if group_id else {}
        return ends, committed
    finally:
        await consumer.stop()


def handled(settings: Settings) -> bool:
    """Whether the group committed every record of the metrics topic (so their outputs were delivered)."""
    ends, committed = asyncio.run(_topic_state(settings, f"{settings.app_id}-metrics"))
    return all((committed[tp] or 0) >= end for tp, end in ends.items())


def anomalies(settings: Settings) -> dict[tuple[str, float], float]:
    """Score by (series, ts) of every record on the anomalies topic; a record published twice
    (a replay after the crash) must carry the same score."""

    async def run() -> list[dict]:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, auto_offset_reset="earliest",
                                    enable_auto_commit=False, **client_kwargs(settings))
        await consumer.start()
        try:
            tps = [TopicPartition(settings.topic_anomalies, p) for p in range(PARTITIONS)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            out: list[dict] = []
            async with asyncio.timeout(60):
                while any([await consumer.position(tp) < end for tp, end in ends.items()]):
                    for part in (await consumer.getmany(timeout_ms=500)).values():
                        out.extend(json.loads(r.value) for r in part)
            return out
        finally:
            await consumer.stop()

    scores: dict[tuple[str, float], float] = {}
    for a in asyncio.run(run()):
        key = (a["series"], a["ts"])
        assert scores.setdefault(key, a["score"]) == pytest.approx(a["score"], abs=1e-9), key
    return scores


def points(workers: list[Settings]) -> set[tuple]:
    """The union of the workers' stored points (a row stored twice, by a crashed worker and by the
    worker that replayed its batch, must be the same row)."""
    rows: set[tuple] = set()
    for settings in workers:
        rows |= set(run_query(settings, "SELECT series, toUnixTimestamp64Milli(ts), value, score, is_anomaly "
                                        "FROM metric_points FINAL WHERE tenant = 'scale'").rows)
    assert len({r[:2] for r in rows}) == len(rows), "a point stored with two different scores"
    return rows


def states(settings: Settings) -> dict[str, tuple[int, bytes]]:
    """Each series' points and model in its latest saved version (all are committed by then), by the
    path of its files. The model is compared pickled again: a restored model pickles its shared
    references apart, the same state in other bytes."""
    root = settings.state_dir
    assert root is not None
    newest: dict[str, tuple[int, int, bytes]] = {}
    for f in root.rglob("*.[01]"):
        if not f.name.startswith("."):  # the test's own files: their pickles are trusted
            cut, points, sealed = StateDirectory.read(f)
            series = str(f.relative_to(root).with_suffix(""))
            if series not in newest or cut > newest[series][0]:
                newest[series] = (cut, points, pickle.dumps(pickle.loads(sealed[1 + MAC_BYTES:]), protocol=pickle.HIGHEST_PROTOCOL))
    return {series: (points, model) for series, (_, points, model) in newest.items()}


def single_run(root: Path, bootstrap: str, data: list[tuple[bytes, bytes]]) -> tuple[dict, set, dict]:
    settings = group(root, bootstrap)
    worker = start_worker(settings)
    try:
        produce(settings, data)
        assert wait_for(lambda: handled(settings), timeout=300)
        stored = points([settings])
    finally:
        worker.stop()
    return anomalies(settings), stored, states(settings)


@pytest.mark.slow
def test_two_then_three_workers_one_killed_match_one_worker(one_worker_run: tuple[Path, dict, set, dict],
                                                            kafka_bootstrap: str) -> None:
    data = workload()
    root, one_anomalies, one_points, one_states = one_worker_run
    assert len(one_points) == len(data) and one_anomalies  # the workload has spikes the detectors flag
    assert len(one_states) == SERIES + SERIES // 4  # a detector per series, a forecaster per cpu_pct series

    shared = group(root / "many", kafka_bootstrap)
    homes = [shared.home, root / "many" / "w1", root / "many" / "w2"]
    members = [shared] + [member(shared, home) for home in homes[1:]]
    third = len(data) // 3
    workers = start_together([worker_process(m) for m in members[:2]])  # two workers
    try:
        produce(members[0], data[:third])
        workers.append(start_worker(members[2]))  # a third joins mid-stream
        produce(members[0], data[third : 2 * third])
        assert wait_for(lambda: int(run_query(members[1], "SELECT count() FROM metric_points").rows[0][0]) > 0, timeout=180)
        workers[1].kill()  # SIGKILL: no final checkpoint; its partitions go back to their last commit
        produce(members[0], data[2 * third :])
        assert wait_for(lambda: handled(shared), timeout=300)
    finally:
        for worker in workers:
            worker.stop()
    workers[1] = WorkerProcess(members[1], workers[1].log_path).start()  # only to read its store (all is committed)
    try:
        many_points = points(members)
    finally:
        workers[1].stop()

    assert many_points == one_points
    many_anomalies = anomalies(shared)
    assert many_anomalies.keys() == one_anomalies.keys()
    assert all(many_anomalies[k] == pytest.approx(one_anomalies[k], abs=1e-9) for k in one_anomalies)
    assert states(shared) == one_states


def die_at_an_armed_commit(arm: str) -> None:
    """The child of the next test: a worker (settings from the environment) SIGKILLed when its metrics
    consumer begins a commit of records it handled, once the file ``arm`` exists: by then that
    commit's checkpoint is written."""
    commit = BatchConsumer._commit

    async def dying(self: BatchConsumer, offsets: dict, transactional: bool = True) -> bool:
        if self.topic == self.settings.topic_metrics and offsets and Path(arm).exists():
            os.kill(os.getpid(), signal.SIGKILL)
        return await commit(self, offsets, transactional)

    BatchConsumer._commit = dying  # type: ignore[method-assign]
    sys.argv = ["m1", "worker", "--loglevel", "info"]
    cli.app()


@pytest.mark.slow
@pytest.mark.parametrize("takeover", ["another-worker", "restarted"])
def test_a_worker_killed_between_its_checkpoint_and_its_commit_hands_over_the_committed_state(
        takeover: str, one_worker_run: tuple[Path, dict, set, dict], kafka_bootstrap: str) -> None:
    """The worker writes a checkpoint, then is killed before committing its offsets: the worker that
    takes over (another one, with the checkpoints in ``M1_STATE_DIR``; or the same one restarted,
    with them in its store's ``model_state`` table) reads on from the older commit, and restores the
    models of that commit, not the newer ones written (``sinks.checkpoints``, "Versions"). So the
    records in between are scored again with the scores they first got, and learned once: the
    stored points, the anomalies and the final models equal one worker's. (Restoring the newer
    models, the successor scored those records against models that had learned them: the same
    points stored with other scores.)"""
    data = workload()
    root, one_anomalies, one_points, one_states = one_worker_run
    shared = group(root / f"killed-{takeover}", kafka_bootstrap)
    if takeover == "restarted":
        shared = successor = shared.model_copy(update={"state_dir": None})
    else:
        successor = member(shared, root / f"killed-{takeover}" / "w1")
    arm = root / f"killed-{takeover}" / "arm"
    third = len(data) // 3
    log_path = shared.home / "dying.log"
    with open(log_path, "ab") as log:
        dying = subprocess.Popen([sys.executable, "-c", f"from tests.test_scale_out import die_at_an_armed_commit; "
                                  f"die_at_an_armed_commit({str(arm)!r})"],
                                 env=settings_env(shared), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    worker = WorkerProcess(shared, log_path)
    worker.proc = dying
    try:
        worker.wait_up()
        produce(shared, data[:third])
        assert wait_for(lambda: handled(shared), timeout=180)  # committed: the next commit is the armed one
        arm.touch()
        produce(shared, data[third : 2 * third])
        assert dying.wait(timeout=180) == -signal.SIGKILL, log_path.read_text()[-3000:]
    finally:
        worker.kill()
    assert not handled(shared)  # the records after the last commit are left to the successor
    readers = [start_worker(successor)]
    try:
        produce(shared, data[2 * third :])
        assert wait_for(lambda: handled(shared), timeout=300)
        if successor is not shared:
            readers.append(WorkerProcess(shared, log_path).start())  # only to read its store (all is committed)
        killed_points = points([shared, successor])
    finally:
        for reader in readers:
            reader.stop()

    assert killed_points == one_points
    killed_anomalies = anomalies(shared)
    assert killed_anomalies.keys() == one_anomalies.keys()
    assert all(killed_anomalies[k] == pytest.approx(one_anomalies[k], abs=1e-9) for k in one_anomalies)
    if shared.state_dir is not None:
        assert states(shared) == one_states
