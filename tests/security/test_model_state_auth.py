"""Model state from the store is authenticated before it is unpickled (real chdb store).

Whoever can write the ``model_state`` table but not read the deployment's key file
(``M1_STATE_KEY_PATH``) must not run code in the worker: a row is unpickled only if its
HMAC-SHA256 verifies, otherwise its series starts with a fresh model.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from pathlib import Path

import pyarrow as pa
import pytest

from core.settings import Settings
from models.bank import ModelBank
from schemas.events import MetricPoint, encode
from sinks.clickhouse import TS_TYPE, Store
from sinks.model_state import load_state_key
from streams.forecast_pipeline import ForecastPipeline
from streams.metrics_pipeline import MetricsPipeline, Record

T0 = 1_767_225_600.0


class Exploit:
    """Unpickling this creates ``marker``: code of the attacker's choosing runs."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def exploit(marker: Path) -> bytes:
    payload = pickle.dumps(Exploit(marker))
    pickle.loads(pickle.dumps(Exploit(marker.with_suffix(".proof"))))  # the payload is real: loading runs it
    assert marker.with_suffix(".proof").exists()
    return payload



def write_rows(store: Store, detector: str, rows: list[tuple[str, int, bytes]]) -> None:
    """Rows into ``model_state`` as anyone with write access to the table could write them."""
    store.insert("model_state", {
        "series": [s for s, _, _ in rows], "detector": [detector] * len(rows), "points": [p for _, p, _ in rows],
        "state": pa.array([b for _, _, b in rows], type=pa.binary()),
        "updated_at": pa.array([int(time.time() * 1000)] * len(rows), type=TS_TYPE)})


def records(tenant: str, series: int, n: int, first: int = 0, metric: str = "rps") -> list[Record]:
    out = []
    for i in range(first, first + n):
        point = MetricPoint(T0 + 60 * i, tenant, "eu", "api", metric, 100.0 + i % 5, {"host": f"h{i % series}"})
        out.append(Record("metrics", 0, i, point.series_key.encode(), encode(point)))
    return out


def key_of(tenant: str, host: int, metric: str = "rps") -> str:
    return MetricPoint(T0, tenant, "eu", "api", metric, 0.0, {"host": f"h{host}"}).series_key


def test_state_that_would_run_code_is_never_unpickled(store: Store, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Unsigned, sealed with the attacker's own key, or with a forged header: none is unpickled,
    each series gets a fresh model, and one warning counts them."""
    pipeline = MetricsPipeline(Settings(home=tmp_path), store)
    markers = [tmp_path / f"pwned-{i}" for i in range(3)]
    attacker = ModelBank(pipeline.bank.detector, config=pipeline.bank.config, key=os.urandom(32))
    series = [key_of("victim", i) for i in range(3)]
    write_rows(store, pipeline.bank.state_key, [
        (series[0], 500, exploit(markers[0])),
        (series[1], 500, attacker.seal(series[1], 500, exploit(markers[1]))),
        (series[2], 500, bytes([1]) + bytes(32) + exploit(markers[2])),
    ])
    with caplog.at_level(logging.WARNING, logger="models.bank"):
        outcome = pipeline.process(records("victim", 3, 30))
    assert outcome.stored == 30
    assert not any(marker.exists() for marker in markers)
    assert [pipeline.bank.points(s) for s in series] == [10, 10, 10]  # fresh models, not the rows' 500
    [warning] = [r for r in caplog.records if r.name == "models.bank"]
    assert "3 saved" in warning.getMessage()


def test_a_valid_row_restores_and_an_altered_one_is_refused(store: Store, tmp_path: Path) -> None:
    """Of three checkpointed series, one row keeps its state, one gets a byte of its MAC changed
    and one a larger point count: only the first restores, the others start afresh."""
    settings = Settings(home=tmp_path)
    first = MetricsPipeline(settings, store)
    first.process(records("sealed", 3, 60))
    assert first.checkpoint() == 3
    good, flipped, recounted = (key_of("sealed", i) for i in range(3))
    [(state,)] = store.query("SELECT hex(state) FROM model_state FINAL WHERE series = {s:String}", {"s": flipped}).rows
    altered = bytearray(bytes.fromhex(state))
    altered[5] ^= 0x01
    [(state,)] = store.query("SELECT hex(state) FROM model_state FINAL WHERE series = {s:String}", {"s": recounted}).rows
    write_rows(store, first.bank.state_key, [(flipped, 20, bytes(altered)), (recounted, 2_000, bytes.fromhex(state))])

    restarted = MetricsPipeline(settings, store)  # same deployment: same key file
    restarted.process(records("sealed", 3, 15, first=60))
    assert restarted.bank.points(good) == 25  # 20 restored + 5 new
    assert restarted.bank.points(flipped) == 5 and restarted.bank.points(recounted) == 5  # fresh models


def test_another_deployments_key_refuses_every_row(store: Store, tmp_path: Path) -> None:
    ours = MetricsPipeline(Settings(home=tmp_path / "ours"), store)
    ours.process(records("foreign", 1, 20))
    ours.checkpoint()
    theirs = MetricsPipeline(Settings(home=tmp_path / "theirs"), store)  # its own state.key
    theirs.process(records("foreign", 1, 5, first=20))
    assert theirs.bank.points(key_of("foreign", 0)) == 5


def test_forecast_checkpoints_are_sealed_too(store: Store, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    forecasting = ForecastPipeline(settings, store)
    forecasting.process(records("fc", 1, 30, metric="requests_per_s"))
    assert forecasting.checkpoint() == 1
    series = key_of("fc", 0, "requests_per_s")
    [(state,)] = store.query("SELECT hex(state) FROM model_state FINAL WHERE series = {s:String} AND detector = {d:String}",
                             {"s": series, "d": forecasting.bank.state_key}).rows
    assert forecasting.bank.open(series, 30, bytes.fromhex(state)) is not None
    assert ForecastPipeline(settings, store).bank.missing([series]) == [series]
    marker = tmp_path / "pwned"
    write_rows(store, forecasting.bank.state_key, [(series, 30, exploit(marker))])
    restarted = ForecastPipeline(settings, store)
    restarted.process(records("fc", 1, 5, first=30, metric="requests_per_s"))
    assert not marker.exists() and restarted.bank.points(series) == 5


def test_the_key_file_is_created_private_and_a_group_writable_one_is_refused(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    key = load_state_key(settings.state_key_file)
    assert len(key) == 32 and settings.state_key_file.stat().st_mode & 0o777 == 0o600
    settings.state_key_file.chmod(0o620)
    with pytest.raises(PermissionError, match="writable by group or others"):
        load_state_key(settings.state_key_file)
