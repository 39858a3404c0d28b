"""Model checkpoints as files in a directory that every worker of one machine shares (``M1_STATE_DIR``).

With the embedded store each worker owns its own chdb directory, so state saved in its
``model_state`` table is out of reach of the worker that takes its partitions over after a
rebalance or a crash. Workers of one consumer group on one machine therefore keep their
checkpoints here instead: two files per series and bank, one a version
(:mod:`sinks.state_versions`), ``<dir>/<state key>/<h[:2]>/<h>.<slot>`` where ``h`` is the
SHA-256 of the series key, each holding the version's cut and the points learned (8 bytes each,
big-endian) and the sealed state (:meth:`models.bank.ModelBank.seal`: its MAC covers the bank,
series and points, so a file moved to another series or altered is refused, and never
unpickled). A file ``<h>`` without a slot (written before versions) is read as slot 0 with cut 0
until slot 0 is written. A file is written to a temporary name and renamed over the old one: a
reader sees the old version or the new, never half of one. The rebalance protocol
(``streams.batch_consumer``) makes the partition's current owner the only writer. Files are not
fsynced: a worker's crash loses nothing written, a power cut may lose the last checkpoint (then
the offsets committed after it make the new owner skip learning the points in between, as
:class:`models.ordered.InOrder` never learns a point twice). With a ClickHouse server every
worker shares the ``model_state`` table instead.

>>> import tempfile, numpy as np
>>> from models.bank import ModelBank
>>> bank = ModelBank("zscore", key=bytes(32))
>>> _ = bank.score_learn("acme|eu|api|latency_ms|", np.array([1.0, 1.1, 0.9]), np.arange(3.0))
>>> files = StateDirectory(Path(tempfile.mkdtemp()))
>>> files.save(bank)
1
>>> fresh = ModelBank("zscore", key=bytes(32))
>>> StateDirectory(files.root).restore_missing(fresh, ["acme|eu|api|latency_ms|", "unknown|series"])
>>> fresh.points("acme|eu|api|latency_ms|"), fresh.points("unknown|series")
(3, 0)
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from sinks.state_versions import SavedRow, VersionedState


class StateDirectory(VersionedState):
    """Checkpoints of model banks as files under ``root`` (see the module docstring)."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def _write(self, state_key: str, rows: Iterator[SavedRow]) -> None:
        """Each row's file, renamed into place from a temporary name of this process and thread (a
        checkpoint's writer thread and another save may write at once)."""
        for series, slot, cut, points, sealed in rows:
            path = self.path(state_key, series, slot)
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            temporary.write_bytes(cut.to_bytes(8, "big", signed=True) + points.to_bytes(8, "big", signed=True) + sealed)
            os.replace(temporary, path)

    def _read(self, state_key: str, series: list[str]) -> Iterator[SavedRow]:
        for key in series:
            for slot in (0, 1):
                try:
                    yield (key, slot, *self.read(self.path(state_key, key, slot)))
                except FileNotFoundError:
                    if slot == 0:  # written before versions: cut 0
                        try:
                            data = self.path(state_key, key, None).read_bytes()
                        except FileNotFoundError:
                            continue
                        yield key, 0, 0, int.from_bytes(data[:8], "big", signed=True), data[8:]

    @staticmethod
    def read(path: Path) -> tuple[int, int, bytes]:
        """The cut, points and sealed state in a version's file."""
        data = path.read_bytes()
        return int.from_bytes(data[:8], "big", signed=True), int.from_bytes(data[8:16], "big", signed=True), data[16:]

    def path(self, state_key: str, series: str, slot: int | None) -> Path:
        """The file of ``series``' version in ``slot`` (None: the file written before versions)."""
        digest = hashlib.sha256(series.encode()).hexdigest()
        return self.root / state_key / digest[:2] / (digest if slot is None else f"{digest}.{slot}")
