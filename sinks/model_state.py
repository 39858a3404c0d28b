"""Per-series model checkpoints in the ``model_state`` table (newest row per series wins).

Rows are keyed by the bank's :attr:`~models.bank.ModelBank.state_key` (detector name and state
format version), so state pickled by an incompatible older version is never loaded. Their state
is sealed with an HMAC under the deployment's key (:func:`load_state_key`), checked before
anything is unpickled: whoever can write ``model_state`` but not read the key file cannot make
the worker run code, nor move one series' state to another.

Both stream pipelines keep their models in a :class:`models.bank.ModelBank` and save what changed
and load what a restart, an eviction or a rebalance lost through a :class:`StateLocation`
(:func:`state_location`): this table, or with ``M1_STATE_DIR`` files that every worker of one
machine shares (``sinks.state_files``, for several workers on the embedded store). A location
cuts a checkpoint now and writes it later (:meth:`StateLocation.snapshot`), or both at once
(:meth:`StateLocation.save`).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from sinks.checkpoints import Checkpointed, StateRow, writer
from sinks.clickhouse import TS_TYPE
from sinks.state_files import StateDirectory

#: Bytes of a new state key (HMAC-SHA256 keys should be at least the hash's size).
KEY_BYTES = 32
log = logging.getLogger(__name__)


def load_state_key(path: Path) -> bytes:
    """The model-state key in ``path``, created with :data:`KEY_BYTES` random bytes and mode 0600
    if absent (atomically: concurrent first uses agree on one key).

    A key writable by group or others is refused (they could forge state), one readable by them
    is used with a warning, one shorter than :data:`KEY_BYTES` is refused.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "state.key"
    >>> key = load_state_key(path)
    >>> len(key), oct(path.stat().st_mode & 0o777), load_state_key(path) == key
    (32, '0o600', True)
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, os.urandom(KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)  # fails if another process created it first: theirs wins
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    mode = path.stat().st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(f"{path} (M1_STATE_KEY_PATH) is writable by group or others: chmod 600 it")
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("%s (M1_STATE_KEY_PATH) is readable by group or others; chmod 600 it", path)
    key = path.read_bytes()
    if len(key) < KEY_BYTES:
        raise ValueError(f"{path} (M1_STATE_KEY_PATH) holds {len(key)} bytes; a state key needs at least {KEY_BYTES}")
    return key


class StoreLike(Protocol):
    def insert(self, table: str, columns: dict) -> int: ...

    def query(self, sql: str, parameters: dict | None = None) -> Any: ...


class StateLocation(Protocol):
    """Where a pipeline's model checkpoints live."""

    def snapshot(self, bank: Checkpointed) -> Callable[[], int]:
        """Cut the bank's changed series now (under the lock that guards it); the writer returned stores
        them, off the batch path, and returns how many (see :func:`sinks.checkpoints.writer`)."""

    def save(self, bank: Checkpointed) -> int:
        """Cut and write at once: ``snapshot(bank)()``."""

    def restore_missing(self, bank: Checkpointed, series: list[str]) -> None: ...


class StateTable:
    """Checkpoints in the store's ``model_state`` table (:func:`insert_rows`, :func:`restore_missing`)."""

    def __init__(self, store: StoreLike):
        self.store = store

    def snapshot(self, bank: Checkpointed) -> Callable[[], int]:
        return writer(bank.snapshot(), partial(insert_rows, self.store, bank.state_key))

    def save(self, bank: Checkpointed) -> int:
        return self.snapshot(bank)()

    def restore_missing(self, bank: Checkpointed, series: list[str]) -> None:
        restore_missing(self.store, bank, series)


def state_location(state_dir: Path | None, store: StoreLike) -> StateLocation:
    """Files under ``state_dir`` (``M1_STATE_DIR``) if given, else the store's ``model_state`` table."""
    if state_dir is None:
        return StateTable(store)
    return StateDirectory(state_dir)


def insert_rows(store: StoreLike, state_key: str, rows: list[StateRow]) -> None:
    """Write checkpoint ``rows`` of the bank whose checkpoints are named ``state_key`` to ``model_state``."""
    series, points, states = zip(*rows)
    insert = getattr(store, "insert_aside", store.insert)  # a Store: not holding up the batches' inserts
    insert(
        "model_state",
        {
            "series": list(series),
            "detector": [state_key] * len(rows),
            "points": list(points),
            "state": pa.array(states, type=pa.binary()),
            "updated_at": pa.array([int(time.time() * 1000)] * len(rows), type=TS_TYPE),
        },
    )


def restore_missing(store: StoreLike, bank: Checkpointed, series: list[str]) -> None:
    """Load the saved state of those ``series`` the bank does not hold (rows whose MAC does not
    verify are not unpickled: those series start afresh, see :meth:`ModelBank.restore`)."""
    missing = bank.missing(series)
    if not missing:
        return
    result = store.query(
        "SELECT series, points, hex(state) FROM model_state FINAL "
        "WHERE detector = {d:String} AND series IN {s:Array(String)}",
        {"d": bank.state_key, "s": missing},
    )
    bank.restore((s, p, bytes.fromhex(state)) for s, p, state in result.rows)
