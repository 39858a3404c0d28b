"""Per-series detectors with bounded memory, fair shares between tenants, and signed checkpoints.

The bank holds at most ``max_series`` live detectors. The tenant of a series is its key's prefix
before the first ``|`` (``tenant|region|service|metric|labels``). When the bank is full, the least
recently used series of the tenant holding the most live models goes (ties: the tenant whose least
recently used series is oldest), so one tenant's burst of new series evicts its own models, never
those of a tenant within its fair share (``max_series`` / tenants live). With one tenant this is
plain LRU. An evicted series is checkpointed before it goes, so it resumes where it left off.

``checkpoint`` hands back the series changed since the last one as ``(series, points, state)``
rows and ``restore`` loads such rows. ``snapshot`` splits a checkpoint in two: a cheap cut now (the
changed series' state copied) and the rows later, from the copies only, while the bank learns on
(:class:`Snapshot`). ``state`` is sealed: a format byte, an HMAC-SHA256 (with
the bank's ``key``) of the detector kind, series, points and pickle, then the pickle. ``restore``
checks the MAC in constant time *before* unpickling: a row without a valid MAC (unsigned, altered,
or sealed with another key) is never unpickled, and its series starts afresh.

>>> import numpy as np
>>> key = bytes(32)  # a deployment loads its key with sinks.model_state.load_state_key
>>> bank = ModelBank("zscore", max_series=2, key=key)
>>> scores = bank.score_learn("a", np.array([1.0, 1.1, 0.9]), np.arange(3.0))
>>> len(scores), bank.points("a")
(3, 3)
>>> rows = bank.checkpoint()
>>> fresh = ModelBank("zscore", max_series=2, key=key)
>>> fresh.restore(rows)
>>> fresh.points("a")
3
>>> other = ModelBank("zscore", max_series=2, key=b"another deployment's key........")
>>> other.restore(rows)  # not unpickled: the MAC does not match
>>> other.points("a")
0

The rows of a snapshot are those a checkpoint at its cut gives, however much the bank learned since:

>>> _ = bank.score_learn("a", np.array([1.2]), np.array([3.0]))
>>> snapshot = bank.snapshot()  # under the lock that guards the bank, between batches
>>> _ = bank.score_learn("a", np.array([0.8]), np.array([4.0]))
>>> rows = snapshot.rows()  # off the batch path (another thread may learn meanwhile)
>>> [(series, points) for series, points, _ in rows], bank.points("a")
([('a', 4)], 5)
>>> snapshot.written()  # stored: a series of it the bank drops now restores from the store

Any picklable per-series model works given a ``factory``; ``apply`` runs a function on it:

>>> counts = ModelBank("count", factory=list)
>>> counts.apply("a", 2, lambda model: model.extend([1, 2]))
>>> counts.points("a")
2
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import logging
import os
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import Any, TypeVar

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac

from models.registry import make_detector
from models.slot_state import SlotCut, SlotHandle
from core.tenant_names import series_tenant

#: A checkpoint row: series key, points learned so far, sealed state (see :meth:`ModelBank.seal`).
StateRow = tuple[str, int, bytes]

#: Format of the pickled model state. Checkpoints are stored under ``<detector>@<STATE_VERSION>``
#: (:attr:`ModelBank.state_key`), so a worker never restores state an older version pickled
#: with other attributes: bump this when a model's state changes incompatibly; its series then
#: start learning afresh instead of failing every batch.
#: ``tests/test_state_layout.py`` fails when what a model pickles changes under the same version.
STATE_VERSION = 7
#: First byte of sealed state: the sealing format (HMAC-SHA256 over kind, series, points, pickle).
SEAL_FORMAT = 1
MAC_BYTES = 32
#: The key of a bank given none: state it seals restores only in this process.
_PROCESS_KEY = os.urandom(32)
T = TypeVar("T")
log = logging.getLogger(__name__)


class ModelBank:
    """Models of one kind, keyed by series, shared fairly between tenants.

    ``detector`` names the kind (and the checkpoints); ``factory`` makes a fresh model
    (default: ``make_detector(detector)``); ``key`` seals and opens checkpoints (default: a key
    of this process only, so a deployment passes its own, see ``sinks.model_state``).
    ``adopt`` turns a model just unpickled (restored or evicted) into the form the bank holds,
    ``export`` a held model into the point-by-point model it stands for (what callers inspect)
    and ``freeze`` a held model into the object a checkpoint pickles (default: ``adopt`` and
    ``export`` as they are, ``freeze`` as ``export``; the fast path's
    :class:`~models.detectors.fast_ensemble.EnsemblePool` holds slot handles, exports the
    point-by-point models they stand for and freezes their slots' packed state, which its
    ``adopt`` loads directly). A snapshot cuts a held :class:`~models.slot_state.SlotHandle` with the
    other slots of its pool (the state its ``freeze`` packs), and freezes any other model at the cut.
    """

    def __init__(self, detector: str, max_series: int = 100_000, factory: Callable[[], Any] | None = None,
                 config: Mapping[str, Any] | None = None, key: bytes | None = None,
                 adopt: Callable[[Any], Any] | None = None, export: Callable[[Any], Any] | None = None,
                 freeze: Callable[[Any], Any] | None = None):
        self.detector = detector
        self.max_series = max_series
        self.factory = factory or partial(make_detector, detector)
        self.adopt = adopt or _as_is
        self.export = export or _as_is
        self.freeze = freeze or self.export
        self.config = dict(config or {})
        self.key = key or _PROCESS_KEY
        # Live models by tenant, least recently used first: series -> (model, points, use stamp).
        self._tenants: dict[str, OrderedDict[str, tuple[Any, int, int]]] = {}
        self._where: dict[str, OrderedDict[str, tuple[Any, int, int]]] = {}  # series -> its tenant's dict
        self._clock = itertools.count()
        # (-live models, stamp of the least recently used, tenant), pushed when a tenant's count changes;
        # _heads holds each tenant's one current entry, the others are garbage. A stamp only grows, so
        # a current entry whose stamp is stale sorts too early: found on top, it is corrected and
        # sifted down (amortised O(log tenants) per use), never acted on.
        self._heap: list[tuple[int, int, str]] = []
        self._heads: dict[str, tuple[int, int]] = {}
        self._dirty: set[str] = set()
        self._evicted: dict[str, tuple[str, int, bytes]] = {}  # series -> (series, points, pickle)
        # Snapshots not written yet, in cut order (failed ones until the next cut takes their series back);
        # their writers end them from another thread, hence the lock.
        self._snapshots: list[Snapshot] = []
        self._snapshots_lock = threading.Lock()

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
        return series in self._where

    def __len__(self) -> int:
        return len(self._where)

    def held(self, tenant: str) -> int:
        """How many live models the tenant holds."""
        return len(self._tenants.get(tenant, ()))

    def points(self, series: str) -> int:
        """How many points the series' detector has learned (0 if unknown)."""
        live = self._where.get(series)
        return live[series][1] if live is not None else 0

    def score_learn(self, series: str, values: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Score then learn a series' new points in time order; creates the detector if new.

        A detector that raises is dropped and the points go to a fresh one (logged), so one
        series' broken state cannot stall every batch; a fresh detector that raises too fails.
        """
        return self.apply_or_restart(series, len(values), lambda model: model.score_learn_many(values, times))

    def apply(self, series: str, points: int, fn: Callable[[Any], T]) -> T:
        """``fn(model)`` on the series' model (created if new), which learned ``points`` more.
        If ``fn`` raises, the model is dropped and the error propagates."""
        live = self._where.get(series)
        if live is not None:
            model, seen, _ = live[series]
        elif series in self._evicted:
            _, seen, state = self._evicted.pop(series)
            model = self.adopt(pickle.loads(state))  # pickled by this bank, never left memory
        else:
            model, seen = self.factory(), 0
        try:
            result = fn(model)
        except BaseException:
            self.discard(series)
            raise
        self._put(series, model, seen + points)
        self._dirty.add(series)
        self._evict_overflow()
        return result

    def models(self, counts: Iterable[tuple[str, int]]) -> Iterator[Any]:
        """The model of each ``(series, points)`` in turn, as ``apply(series, points, fn)`` hands
        it to an ``fn`` returning it; lazily, so a consumer sees each series' creation, restoring
        and evicting happen in order. A live series (most, a batch after the first) takes a
        shorter path with the same effect: made the most recent, ``points`` more, dirty."""
        where, clock, dirty = self._where, self._clock, self._dirty
        for series, points in counts:
            live = where.get(series)
            if live is None:
                yield self.apply(series, points, _as_is)
                continue
            model, seen, _ = live[series]
            live[series] = (model, seen + points, next(clock))
            live.move_to_end(series)
            dirty.add(series)  # nothing to evict: the bank holds as many models as before
            yield model

    def apply_or_restart(self, series: str, points: int, fn: Callable[[Any], T]) -> T:
        """:meth:`apply`, except that if ``fn`` raises, the series' model is dropped (logged)
        and ``fn`` runs once more on a fresh one; if that raises too, the error propagates.
        ``fn`` must therefore leave no trace outside the model until it returns."""
        try:
            return self.apply(series, points, fn)
        except Exception:
            log.exception("the %s model of %s failed; it starts afresh", self.detector, series)
            return self.apply(series, points, fn)

    def discard(self, series: str) -> None:
        """Forget the series' model (live or evicted); the next use starts a fresh one (but see
        :meth:`missing`). A snapshot not written yet still writes it, and does not take it back if
        its write fails: whoever holds the series now saves it."""
        self._evicted.pop(series, None)
        live = self._where.pop(series, None)
        if live is not None:
            del live[series]
            self._changed(series_tenant(series), live)
        if self._snapshots:
            with self._snapshots_lock:
                for snapshot in self._snapshots:
                    if series in snapshot._entries:
                        snapshot._forgotten.add(series)

    def missing(self, series: Iterable[str]) -> list[str]:
        """The given series that have no state here (candidates for ``restore``). A series whose
        state waits in a snapshot not written yet (or failed) is loaded from there first: rows
        already saved of it are older."""
        absent = [s for s in series if s not in self._where and s not in self._evicted]
        if absent and self._snapshots:
            absent = [s for s in absent if not self._revive(s)]
            self._evict_overflow()
        return absent

    def restore(self, rows: Iterable[StateRow]) -> None:
        """Load checkpoint rows (series not live yet only: live state is newer). A row whose
        MAC does not verify is not unpickled; one that does not unpickle is skipped (logged).
        Either way its series starts afresh; refused rows are counted in one warning."""
        refused = 0
        for series, points, sealed in rows:
            if series in self._where:
                continue
            state = self.open(series, points, sealed)
            if state is None:
                refused += 1
                continue
            self._load(series, points, state)
        if refused:
            log.warning("%d saved %s states not loaded: unsigned, altered or sealed with another key "
                        "(M1_STATE_KEY_PATH); those series start afresh (or from an older saved version that loads)",
                        refused, self.detector)
        self._evict_overflow()

    def seal(self, series: str, points: int, state: bytes) -> bytes:
        """``state`` (a pickle) as stored: format byte, MAC, pickle."""
        return bytes([SEAL_FORMAT]) + self._mac(series, points, state).finalize() + state

    def open(self, series: str, points: int, sealed: bytes) -> bytes | None:
        """The pickle inside ``sealed`` if its MAC verifies for this bank, series and points, else None."""
        if len(sealed) < 1 + MAC_BYTES or sealed[0] != SEAL_FORMAT:
            return None
        state = sealed[1 + MAC_BYTES:]
        try:
            self._mac(series, points, state).verify(sealed[1 : 1 + MAC_BYTES])  # constant-time compare
        except InvalidSignature:
            return None
        return state

    def _mac(self, series: str, points: int, state: bytes) -> hmac.HMAC:
        mac = hmac.HMAC(self.key, hashes.SHA256())
        for part in (self.state_key.encode(), series.encode()):
            mac.update(len(part).to_bytes(8, "big") + part)
        mac.update(points.to_bytes(8, "big", signed=True) + state)
        return mac

    def checkpoint_due(self) -> bool:
        """Whether evicted state waiting for the next checkpoint reached a tenth of ``max_series``:
        a burst of new series must not pile evicted state up in memory until the timed checkpoint."""
        return len(self._evicted) >= max(1, self.max_series // 10)

    def checkpoint(self) -> list[StateRow]:
        """Sealed rows for every series changed or evicted since the last checkpoint (a snapshot's
        rows, taken as written)."""
        snapshot = self.snapshot()
        rows = list(snapshot.rows())
        snapshot.written()
        return rows

    def snapshot(self) -> Snapshot:
        """Cut now the state of every series changed or evicted since the last cut, for
        :meth:`Snapshot.rows` to seal later (the rows a checkpoint now gives). Cheap: the slots of
        pooled series are copied a few arrays at once, other models frozen and pickled. Call it
        where the bank is not in use (under the lock that guards it), as any other method but the
        snapshot's own; until the snapshot is written, a series of it the bank drops loads from it
        again (:meth:`missing`). The series of failed snapshots are taken back first: they are
        dirty again, or evicted with the state of their snapshot (unless a newer state of theirs is
        saved or on its way, or they were discarded since)."""
        with self._snapshots_lock:
            pending = self._snapshots
            for at in reversed(range(len(pending))):  # newest first: its state wins
                if pending[at]._failed:
                    self._take_back(pending.pop(at), pending[at:])
        entries: dict[str, tuple[int, bytes | SlotCut, int]] = {
            series: (seen, state, 0) for series, seen, state in self._evicted.values()}
        cuts: dict[int, SlotCut] = {}
        where = self._where
        for series in self._dirty:
            live = where.get(series)
            if live is None:  # discarded
                continue
            model, seen, _ = live[series]
            objects = model.objects() if isinstance(model, SlotHandle) else None
            if objects is None:
                entries[series] = (seen, pickle.dumps(self.freeze(model), protocol=pickle.HIGHEST_PROTOCOL), 0)
                continue
            cut = cuts.get(id(model.pool))
            if cut is None:
                cut = cuts[id(model.pool)] = SlotCut(model.pool)
            entries[series] = (seen, cut, cut.add(model, objects))
        for cut in cuts.values():
            cut.take()
        self._evicted, self._dirty = {}, set()
        snapshot = Snapshot(self, entries)
        with self._snapshots_lock:
            self._snapshots.append(snapshot)
        return snapshot

    def _take_back(self, failed: Snapshot, newer: list[Snapshot]) -> None:
        """The series of a snapshot whose write failed, dirty again or evicted with its state, unless
        one of the ``newer`` snapshots not written holds them (see :meth:`snapshot`)."""
        for series, (seen, _, _) in failed._entries.items():
            if series in self._where:
                self._dirty.add(series)
            elif not (series in self._evicted or series in failed._superseded or series in failed._forgotten
                      or any(series in later._entries for later in newer)):
                self._evicted[series] = (series, seen, failed.state(series))

    def _revive(self, series: str) -> bool:
        """Load ``series`` from the newest snapshot not written that holds it; whether one did."""
        with self._snapshots_lock:
            for snapshot in reversed(self._snapshots):
                entry = snapshot._entries.get(series)
                if entry is not None and series not in snapshot._superseded:
                    return self._load(series, entry[0], snapshot.state(series))
        return False

    def _written(self, snapshot: Snapshot) -> None:
        with self._snapshots_lock:
            if snapshot not in self._snapshots:
                return
            at = self._snapshots.index(snapshot)
            for older in self._snapshots[:at]:  # their state of these series is not to be restored nor written again
                older._superseded.update(series for series in snapshot._entries if series in older._entries)
            del self._snapshots[at]

    def _failed(self, snapshot: Snapshot) -> None:
        with self._snapshots_lock:
            snapshot._failed = True

    def _load(self, series: str, points: int, state: bytes) -> bool:
        """Put ``state`` (a pickle) live as ``series``' model; whether it loaded (if not, logged)."""
        try:
            self._put(series, self.adopt(pickle.loads(state)), points)
        except Exception:
            log.exception("the saved %s state of %s does not load; it starts afresh", self.detector, series)
            return False
        return True

    def _put(self, series: str, model: Any, points: int) -> None:
        """Make ``series`` the most recently used model of its tenant."""
        live = self._where.get(series)
        if live is None:
            tenant = series_tenant(series)
            live = self._where[series] = self._tenants.setdefault(tenant, OrderedDict())
            live[series] = (model, points, next(self._clock))
            self._changed(tenant, live)
            return
        live[series] = (model, points, next(self._clock))
        live.move_to_end(series)

    def _changed(self, tenant: str, live: OrderedDict[str, tuple[Any, int, int]]) -> None:
        """Record the tenant's new count of live models (O(log tenants))."""
        if not live:
            del self._tenants[tenant], self._heads[tenant]
            return
        head = self._heads[tenant] = (-len(live), live[next(iter(live))][2])
        heapq.heappush(self._heap, (*head, tenant))
        if len(self._heap) > 2 * len(self._tenants) + 64:  # drop garbage: amortised O(1) a push
            self._heap = [(*head, t) for t, head in self._heads.items()]
            heapq.heapify(self._heap)

    def _victim(self) -> str:
        """The tenant holding the most live models (ties: the oldest least recently used)."""
        while True:
            negative_count, stamp, tenant = self._heap[0]
            if self._heads.get(tenant) != (negative_count, stamp):
                heapq.heappop(self._heap)  # garbage: the tenant's count changed since
                continue
            live = self._tenants[tenant]
            oldest = live[next(iter(live))][2]
            if oldest == stamp:
                return tenant
            self._heads[tenant] = (negative_count, oldest)
            heapq.heapreplace(self._heap, (negative_count, oldest, tenant))

    def _evict_overflow(self) -> None:
        while len(self._where) > self.max_series:
            tenant = self._victim()
            live = self._tenants[tenant]
            series, (model, seen, _) = live.popitem(last=False)
            del self._where[series]
            self._changed(tenant, live)
            if series in self._dirty:
                self._evicted[series] = (series, seen, pickle.dumps(self.freeze(model), protocol=pickle.HIGHEST_PROTOCOL))
                self._dirty.discard(series)


class Snapshot:
    """The state of a bank's changed series at a cut (:meth:`ModelBank.snapshot`), waiting to be written.

    :meth:`rows` reads only what the cut copied, so a writer may call it in another thread while the
    bank learns on; :meth:`written` or :meth:`failed` then ends the snapshot (from any thread).
    """

    def __init__(self, bank: ModelBank, entries: dict[str, tuple[int, bytes | SlotCut, int]]):
        self._bank = bank
        # series -> (points, its pickle or the cut holding its slot, its row in that cut)
        self._entries = entries
        self._superseded: set[str] = set()  # a newer snapshot of these series is written
        self._forgotten: set[str] = set()  # the bank discarded these series since the cut
        self._failed = False

    def state(self, series: str) -> bytes:
        """The pickle of ``series``' state at the cut (``KeyError`` if the snapshot does not hold it)."""
        _, source, row = self._entries[series]
        if isinstance(source, SlotCut):
            return pickle.dumps(source.packed(row), protocol=pickle.HIGHEST_PROTOCOL)
        return source

    def __len__(self) -> int:
        return len(self._entries)

    def rows(self) -> Iterator[StateRow]:
        """The sealed rows of the snapshot's series (those :meth:`ModelBank.checkpoint` gave at the
        cut), each sealed as it is read."""
        seal = self._bank.seal
        return ((series, seen, seal(series, seen, self.state(series)))
                for series, (seen, _, _) in self._entries.items())

    def written(self) -> None:
        """The rows are stored: a series of the snapshot the bank drops now restores from the store."""
        self._bank._written(self)

    def failed(self) -> None:
        """The rows could not be stored: the bank's next snapshot takes the series back (see
        :meth:`ModelBank.snapshot`); until then a series of it the bank drops still loads from here."""
        self._bank._failed(self)


def _as_is(model: T) -> T:
    return model
