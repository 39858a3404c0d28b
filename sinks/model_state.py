"""Per-series model checkpoints in the ``model_state`` table (two versions a series: ``sinks.state_versions``).

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
(:meth:`StateLocation.save`); given the consumer's positions it keeps the version the committed
offsets cover until the next commit (:mod:`sinks.checkpoints`, "Versions").
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
from clickhouse_connect.driver.common import write_leb128

from sinks.checkpoints import Checkpointed, Positions
from sinks.clickhouse import TS_TYPE
from sinks.state_files import StateDirectory
from sinks.state_versions import SavedRow, VersionedState

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
    """Where a pipeline's model checkpoints live (two versions of each series: :mod:`sinks.state_versions`)."""

    def snapshot(self, bank: Checkpointed, positions: Positions | None = None) -> Callable[[], int]:
        """Cut the bank's changed series now (under the lock that guards it); the writer returned stores
        them, off the batch path, and returns how many (see :func:`sinks.checkpoints.writer`)."""

    def save(self, bank: Checkpointed, positions: Positions | None = None) -> int:
        """Cut and write at once: ``snapshot(bank, positions)()``."""

    def restore_missing(self, bank: Checkpointed, series: list[str], positions: Positions | None = None) -> None:
        """Load the saved state of those ``series`` the bank lacks (the version ``positions`` trusts)."""

    def forget(self, bank: Checkpointed, series: Iterable[str]) -> None:
        """Another worker may write ``series`` from now on."""


class StateTable(VersionedState):
    """Checkpoints in the store's ``model_state`` table (:func:`insert_rows`), newest row per series and slot."""

    def __init__(self, store: StoreLike):
        super().__init__()
        self.store = store

    def _write(self, state_key: str, rows: Iterator[SavedRow]) -> None:
        insert_rows(self.store, state_key, rows)

    def _read(self, state_key: str, series: list[str]) -> Iterable[SavedRow]:
        result = self.store.query(
            "SELECT series, slot, cut, points, hex(state) FROM model_state FINAL "
            "WHERE detector = {d:String} AND series IN {s:Array(String)}",
            {"d": state_key, "s": series},
        )
        return [(s, slot, cut, points, bytes.fromhex(state)) for s, slot, cut, points, state in result.rows]


def state_location(state_dir: Path | None, store: StoreLike) -> StateLocation:
    """Files under ``state_dir`` (``M1_STATE_DIR``) if given, else the store's ``model_state`` table."""
    if state_dir is None:
        return StateTable(store)
    return StateDirectory(state_dir)


#: The ``model_state`` columns a checkpoint writes, in the order of :func:`row_binary`'s fields.
STATE_COLUMNS = ("series", "detector", "slot", "cut", "points", "state", "updated_at")
#: Bytes of RowBinary a chunk of a streamed checkpoint holds (about).
CHUNK_BYTES = 1 << 20


def insert_rows(store: StoreLike, state_key: str, rows: Iterable[SavedRow]) -> None:
    """Write checkpoint ``rows`` of the bank whose checkpoints are named ``state_key`` to ``model_state``,
    in one insert (a checkpoint is stored whole or not at all).

    A :class:`sinks.clickhouse.Store` takes them as a stream (:func:`row_binary`) on a handle of its
    own, not holding up the batches' inserts: the rows are read one by one and never held together
    (not as a list, nor as Arrow columns). Another store (a scorer's ``ForwardingStore``) gets them
    as columns."""
    stamp = int(time.time() * 1000)
    stream = getattr(store, "insert_stream", None)
    if stream is not None:
        stream("model_state", STATE_COLUMNS, row_binary(state_key, rows, stamp))
        return
    series, slots, cuts, points, states = zip(*rows)
    store.insert("model_state", {
        "series": list(series), "detector": [state_key] * len(series),
        "slot": pa.array(slots, type=pa.uint8()), "cut": pa.array(cuts, type=pa.uint64()), "points": list(points),
        "state": pa.array(states, type=pa.binary()), "updated_at": pa.array([stamp] * len(series), type=TS_TYPE)})


def row_binary(state_key: str, rows: Iterable[SavedRow], stamp: int) -> Iterator[bytes]:
    """``rows`` as ``model_state`` rows in ClickHouse's RowBinary format (:data:`STATE_COLUMNS`:
    length-prefixed strings, little-endian integers; ``stamp`` in epoch milliseconds), in chunks of
    about :data:`CHUNK_BYTES`.

    >>> b"".join(row_binary("zscore@1", [("a", 1, 258, 3, b"xy")], 1000)).hex(" ")
    '01 61 08 7a 73 63 6f 72 65 40 31 01 02 01 00 00 00 00 00 00 03 00 00 00 00 00 00 00 02 78 79 e8 03 00 00 00 00 00 00'
    """
    detector = _string(state_key.encode())
    updated_at = stamp.to_bytes(8, "little", signed=True)
    chunk = bytearray()
    for series, slot, cut, points, state in rows:
        chunk += _string(series.encode())
        chunk += detector
        chunk.append(slot)
        chunk += cut.to_bytes(8, "little")
        chunk += points.to_bytes(8, "little")
        write_leb128(len(state), chunk)
        chunk += state
        chunk += updated_at
        if len(chunk) >= CHUNK_BYTES:
            yield bytes(chunk)
            chunk.clear()
    if chunk:
        yield bytes(chunk)


def _string(text: bytes) -> bytes:
    """A RowBinary ``String``: its length (LEB128), then its bytes."""
    prefix = bytearray()
    write_leb128(len(text), prefix)
    return bytes(prefix) + text
