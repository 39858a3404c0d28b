"""Per-series detectors with bounded memory and pickled checkpoints.

The bank holds at most ``max_series`` live detectors, least recently used first out;
an evicted series is checkpointed before it goes, so it resumes where it left off.
``checkpoint`` hands back the series changed since the last one as
``(series, points, state_bytes)`` rows, and ``restore`` loads such rows.

>>> import numpy as np
>>> bank = ModelBank("zscore", max_series=2)
>>> scores = bank.score_learn("a", np.array([1.0, 1.1, 0.9]), np.arange(3.0))
>>> len(scores), bank.points("a")
(3, 3)
>>> rows = bank.checkpoint()
>>> fresh = ModelBank("zscore", max_series=2)
>>> fresh.restore(rows)
>>> fresh.points("a")
3

Any picklable per-series model works given a ``factory``; ``apply`` runs a function on it:

>>> counts = ModelBank("count", factory=list)
>>> counts.apply("a", 2, lambda model: model.extend([1, 2]))
>>> counts.points("a")
2
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, TypeVar

import numpy as np

from models.base import Detector
from models.registry import make_detector

#: A checkpoint row: series key, points learned so far, pickled detector.
StateRow = tuple[str, int, bytes]

#: Format of the pickled model state. Checkpoints are stored under ``<detector>@<STATE_VERSION>``
#: (:attr:`ModelBank.state_key`), so a worker never restores state an older version pickled
#: with other attributes: bump this when a model's state changes incompatibly; its series then
#: start learning afresh instead of failing every batch.
#: ``tests/test_state_layout.py`` fails when what a model pickles changes under the same version.
STATE_VERSION = 2
T = TypeVar("T")
log = logging.getLogger(__name__)


class ModelBank:
    """Detectors of one kind, keyed by series.

    ``detector`` names the kind (and the checkpoints); ``factory`` makes a fresh model
    (default: ``make_detector(detector)``).
    """

    def __init__(self, detector: str, max_series: int = 100_000, factory: Callable[[], Any] | None = None,
                 config: Mapping[str, Any] | None = None):
        self.detector = detector
        self.max_series = max_series
        self.factory = factory or partial(make_detector, detector)
        self.config = dict(config or {})
        self._models: OrderedDict[str, tuple[Detector, int]] = OrderedDict()
        self._dirty: set[str] = set()
        self._evicted: dict[str, StateRow] = {}

    @property
    def state_key(self) -> str:
        """Key of this bank's checkpoints: the detector name, :data:`STATE_VERSION` and, for a
        non-empty ``config`` (the options the models were built with), a digest of it, so
        models built otherwise are not restored."""
        if not self.config:
            return f"{self.detector}@{STATE_VERSION}"
        digest = hashlib.sha256(json.dumps(self.config, sort_keys=True, default=str).encode()).hexdigest()
        return f"{self.detector}@{STATE_VERSION}+{digest[:12]}"

    def __contains__(self, series: str) -> bool:
        return series in self._models

    def __len__(self) -> int:
        return len(self._models)

    def points(self, series: str) -> int:
        """How many points the series' detector has learned (0 if unknown)."""
        return self._models[series][1] if series in self._models else 0

    def score_learn(self, series: str, values: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Score then learn a series' new points in time order; creates the detector if new.

        A detector that raises is dropped and the points go to a fresh one (logged), so one
        series' broken state cannot stall every batch; a fresh detector that raises too fails.
        """
        return self.apply_or_restart(series, len(values), lambda model: model.score_learn_many(values, times))

    def apply(self, series: str, points: int, fn: Callable[[Any], T]) -> T:
        """``fn(model)`` on the series' model (created if new), which learned ``points`` more."""
        if series in self._models:
            model, seen = self._models.pop(series)
        elif series in self._evicted:
            _, seen, state = self._evicted.pop(series)
            model = pickle.loads(state)
        else:
            model, seen = self.factory(), 0
        result = fn(model)
        self._models[series] = (model, seen + points)
        self._dirty.add(series)
        self._evict_overflow()
        return result

    def apply_or_restart(self, series: str, points: int, fn: Callable[[Any], T]) -> T:
        """:meth:`apply`, except that if ``fn`` raises, the series' model is dropped (logged)
        and ``fn`` runs once more on a fresh one; if that raises too, the error propagates.
        ``fn`` must therefore leave no trace outside the model until it returns."""
        try:
            return self.apply(series, points, fn)
        except Exception:
            log.exception("the %s model of %s failed; it starts afresh", self.detector, series)
            self.discard(series)
            return self.apply(series, points, fn)

    def discard(self, series: str) -> None:
        """Forget the series' model (live or evicted); the next use starts a fresh one."""
        self._models.pop(series, None)
        self._evicted.pop(series, None)

    def missing(self, series: Iterable[str]) -> list[str]:
        """The given series that have no state here (candidates for ``restore``)."""
        return [s for s in series if s not in self._models and s not in self._evicted]

    def restore(self, rows: Iterable[StateRow]) -> None:
        """Load checkpoint rows (series not live yet only: live state is newer); a row that
        does not unpickle is skipped (logged) and its series starts afresh."""
        for series, points, state in rows:
            if series in self._models:
                continue
            try:
                self._models[series] = (pickle.loads(state), points)
            except Exception:
                log.exception("the saved %s state of %s does not load; it starts afresh", self.detector, series)
        self._evict_overflow()

    def checkpoint_due(self) -> bool:
        """Whether evicted state waiting for the next checkpoint reached a tenth of ``max_series``:
        a burst of new series must not pile evicted state up in memory until the timed checkpoint."""
        return len(self._evicted) >= max(1, self.max_series // 10)

    def checkpoint(self) -> list[StateRow]:
        """Rows for every series changed or evicted since the last checkpoint."""
        rows = list(self._evicted.values())
        self._evicted.clear()
        for series in self._dirty:
            if series in self._models:
                model, seen = self._models[series]
                rows.append((series, seen, pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)))
        self._dirty.clear()
        return rows

    def _evict_overflow(self) -> None:
        while len(self._models) > self.max_series:
            series, (model, seen) = self._models.popitem(last=False)
            if series in self._dirty:
                self._evicted[series] = (series, seen, pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
                self._dirty.discard(series)
