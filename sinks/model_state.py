"""Per-series model checkpoints in the ``model_state`` table (newest row per series wins).

Rows are keyed by the bank's :attr:`~models.bank.ModelBank.state_key` (detector name and state
format version), so state pickled by an incompatible older version is never loaded.

Both stream pipelines keep their models in a :class:`models.bank.ModelBank` and use these
two functions to save what changed and to load what a restart or an eviction lost.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import pyarrow as pa

from models.bank import ModelBank
from sinks.clickhouse import TS_TYPE


class StoreLike(Protocol):
    def insert(self, table: str, columns: dict) -> int: ...

    def query(self, sql: str, parameters: dict | None = None) -> Any: ...


def save_checkpoint(store: StoreLike, bank: ModelBank) -> int:
    """Write the bank's changed series to ``model_state``; returns how many were saved."""
    rows = bank.checkpoint()
    if rows:
        series, points, states = zip(*rows)
        store.insert(
            "model_state",
            {
                "series": list(series),
                "detector": [bank.state_key] * len(rows),
                "points": list(points),
                "state": pa.array(states, type=pa.binary()),
                "updated_at": pa.array([int(time.time() * 1000)] * len(rows), type=TS_TYPE),
            },
        )
    return len(rows)


def restore_missing(store: StoreLike, bank: ModelBank, series: list[str]) -> None:
    """Load the saved state of those ``series`` the bank does not hold."""
    missing = bank.missing(series)
    if not missing:
        return
    result = store.query(
        "SELECT series, points, hex(state) FROM model_state FINAL "
        "WHERE detector = {d:String} AND series IN {s:Array(String)}",
        {"d": bank.state_key, "s": missing},
    )
    bank.restore((s, p, bytes.fromhex(state)) for s, p, state in result.rows)
