"""Model checkpoints as files in a directory that every worker of one machine shares (``M1_STATE_DIR``).

With the embedded store each worker owns its own chdb directory, so state saved in its
``model_state`` table is out of reach of the worker that takes its partitions over after a
rebalance or a crash. Workers of one consumer group on one machine therefore keep their
checkpoints here instead: one file per series and bank, ``<dir>/<state key>/<h[:2]>/<h>`` where
``h`` is the SHA-256 of the series key, holding the points learned (8 bytes, big-endian) and the
sealed state (:meth:`models.bank.ModelBank.seal`: its MAC covers the bank, series and points, so
a file moved to another series or altered is refused, and never unpickled). A file is written
to a temporary name and renamed over the old one: a reader sees the old state or the new, never
half of one. The last writer wins; the rebalance protocol (``streams.batch_consumer``) makes the
partition's current owner that writer. Files are not fsynced: a worker's crash loses nothing
written, a power cut may lose the last checkpoint (then the offsets committed after it make the
new owner skip learning the points in between, as :class:`models.ordered.InOrder` never learns a
point twice). With a ClickHouse server every worker shares the ``model_state`` table instead.

>>> import tempfile, numpy as np
>>> from models.bank import ModelBank
>>> bank = ModelBank("zscore", key=bytes(32))
>>> _ = bank.score_learn("acme|eu|api|latency_ms|", np.array([1.0, 1.1, 0.9]), np.arange(3.0))
>>> files = StateDirectory(Path(tempfile.mkdtemp()))
>>> files.save(bank)
1
>>> fresh = ModelBank("zscore", key=bytes(32))
>>> files.restore_missing(fresh, ["acme|eu|api|latency_ms|", "unknown|series"])
>>> fresh.points("acme|eu|api|latency_ms|"), fresh.points("unknown|series")
(3, 0)
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

from sinks.checkpoints import Checkpointed, StateRow, writer


class StateDirectory:
    """Checkpoints of model banks as files under ``root`` (see the module docstring)."""

    def __init__(self, root: Path):
        self.root = root

    def snapshot(self, bank: Checkpointed) -> Callable[[], int]:
        """Cut the bank's changed series now; the writer returned writes their files (see
        :func:`sinks.checkpoints.writer`)."""
        return writer(bank.snapshot(), partial(self._write, bank.state_key))

    def save(self, bank: Checkpointed) -> int:
        """Write the bank's changed series; returns how many were saved."""
        return self.snapshot(bank)()

    def _write(self, state_key: str, rows: list[StateRow]) -> None:
        """Each row's file, renamed into place from a temporary name of this process and thread (a
        checkpoint's writer thread and another save may write at once)."""
        for series, points, sealed in rows:
            path = self._path(state_key, series)
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            temporary.write_bytes(points.to_bytes(8, "big", signed=True) + sealed)
            os.replace(temporary, path)

    def restore_missing(self, bank: Checkpointed, series: list[str]) -> None:
        """Load the saved state of those ``series`` the bank does not hold (see :meth:`Checkpointed.restore`)."""
        rows: list[StateRow] = []
        for key in bank.missing(series):
            try:
                data = self._path(bank.state_key, key).read_bytes()
            except FileNotFoundError:
                continue
            rows.append((key, int.from_bytes(data[:8], "big", signed=True), data[8:]))
        if rows:
            bank.restore(rows)

    def _path(self, state_key: str, series: str) -> Path:
        digest = hashlib.sha256(series.encode()).hexdigest()
        return self.root / state_key / digest[:2] / digest
