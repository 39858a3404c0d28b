"""On-disk cache of a detector's scores per series, so grid and threshold searches rerun cheaply.

Contract: an entry is found again only for the same detector name, the same options, the same
series (name, timestamps and values) and the same detector code (a digest of the source files
under ``models/`` that detectors are built from). Any change to one of them is a miss, never a
stale hit. Entries are ``.npy`` files named by that key; nothing else is written.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from models.evaluation.nab import Series

MODELS = Path(__file__).resolve().parents[1]
CODE_FILES = ("base.py", "registry.py", "sorted_window.py", "detectors/*.py")


def code_digest(root: Path = MODELS) -> str:
    """SHA-256 over the detector source files (names and bytes, sorted)."""
    h = hashlib.sha256()
    for path in sorted(p for pattern in CODE_FILES for p in root.glob(pattern)):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


class ScoreCache:
    """Scores of ``(detector, options, series)`` under ``root``; ``root=None`` caches nothing."""

    def __init__(self, root: str | os.PathLike[str] | None):
        self.root = Path(root) if root is not None else None
        self.code = code_digest()

    def _path(self, detector: str, options: dict[str, Any], series: Series) -> Path:
        assert self.root is not None
        data = hashlib.sha256(series.timestamps.tobytes() + series.values.tobytes()).hexdigest()
        key = json.dumps([detector, options, series.name, data, self.code], sort_keys=True, default=str)
        return self.root / f"{hashlib.sha256(key.encode()).hexdigest()}.npy"

    def get(self, detector: str, options: dict[str, Any], series: Series) -> np.ndarray | None:
        """The cached scores, or None."""
        if self.root is None:
            return None
        path = self._path(detector, options, series)
        return np.load(path) if path.is_file() else None

    def put(self, detector: str, options: dict[str, Any], series: Series, scores: np.ndarray) -> None:
        """Store ``scores`` (written to a temporary name, then renamed)."""
        if self.root is None:
            return
        path = self._path(detector, options, series)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, scores)
        os.replace(tmp, path)
