"""The default ensemble's fast path: the state of many series held in arrays, one compiled call a batch.

:class:`EnsemblePool` holds the state of every live series of an ``InOrder(Ensemble())`` model
(the default detector) in the arrays of :mod:`models.detectors.ensemble_kernel`, one slot a
series; :meth:`EnsemblePool.score_many` scores and learns a whole batch of many series in one
compiled call. The point-by-point classes stay the definition: the kernel does their arithmetic
in their order (``tests/models/test_fast_ensemble.py`` holds the two to 1e-9 on NAB, ASD and the
demo workload), and a slot loads from and exports as exactly the object they pickle.

A :class:`FastSeries` is a slot's handle, what a :class:`~models.bank.ModelBank` holds: the bank
pickles its slot packed (:class:`EnsembleState`, :func:`freeze`, the bank's ``freeze``: arrays,
not the point-by-point model, which is dearer to build and to pickle), a checkpoint it loads
becomes a handle again (:meth:`EnsemblePool.adopt`, the bank's ``adopt``: a packed slot or a
point-by-point model, as older checkpoints hold), a bank without a pool loads a packed slot as
the point-by-point model (:meth:`EnsemblePool.point_by_point`), and the slot is freed when the
bank drops its handle. A checkpoint's cut copies many slots at once (:meth:`EnsemblePool.copy_slots`,
see :class:`~models.slot_state.SlotCut`) and packs them from the copies as :func:`freeze` would have.

>>> import numpy as np, pickle
>>> from models.ordered import InOrder
>>> from models.detectors.ensemble import Ensemble
>>> pool = EnsemblePool(lambda: InOrder(Ensemble()))
>>> fast, slow = pool.new(), InOrder(Ensemble())
>>> t = 300.0 * np.arange(400); xs = np.sin(t / 7200) + (t == 300.0 * 350) * 5
>>> bool(np.allclose(fast.score_learn_many(xs, t), slow.score_learn_many(xs, t), rtol=0, atol=1e-9))
True
>>> pickle.dumps(fast.export()) == pickle.dumps(slow)
True
>>> again = pool.adopt(pickle.loads(pickle.dumps(fast.freeze())))
>>> pickle.dumps(again.export()) == pickle.dumps(slow)
True
"""

from __future__ import annotations

import math
import mmap
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from typing import Any

import numpy as np
from numba import njit

from models.detectors import ensemble_kernel as k
from models.detectors.context import ContextSurprise
from models.detectors.ensemble import Ensemble
from models.detectors.robust import RobustZ
from models.ordered import InOrder
from models.slot_state import SlotHandle, SlotState, Unpacker, digest, load_window, ring_into
from models.sorted_window import SortedWindow

#: Names of the state arrays, in the order of the kernel's state tuple.
FIELDS = ("wring", "wsorted", "wmeta", "past", "pmeta", "t0", "cal", "caln", "gclosed", "gopen", "gtop", "gmeta",
          "ccounts", "ctotals", "crange", "cint", "last_ts", "learned", "since")
#: The arrays a slot packs from (:func:`_freeze`): all but the sorted copies of the windows.
PACKED = tuple(name for name in FIELDS if name != "wsorted")


def supported(model: Any) -> bool:
    """Whether ``model`` is an ``InOrder`` of an :class:`Ensemble` of the default views, in their
    default order (robust, seasonal robust, context): the only model the kernel runs."""
    if type(model) is not InOrder or type(model.detector) is not Ensemble:
        return False
    views = model.detector.components
    return (len(views) == 3 and type(views[0]) is RobustZ and views[0].season is None
            and isinstance(views[1], RobustZ) and views[1].season is not None and type(views[2]) is ContextSurprise)


def warm_up() -> None:
    """Compile the kernel and the packing into numba's on-disk cache (or load them from there):
    ``scripts/install.sh``."""
    handle = EnsemblePool(lambda: InOrder(Ensemble()), capacity=1).new()
    handle.score_learn_many(np.ones(3), np.arange(3.0))
    handle.freeze()


class EnsembleState(SlotState):
    """An :class:`EnsemblePool` slot as a checkpoint pickles it (see :mod:`models.slot_state`)."""

    __slots__ = ()


def export(model: Any) -> Any:
    """The point-by-point model of ``model``: a handle's (see :meth:`FastSeries.export`), any other model as it is."""
    return model.export() if type(model) is FastSeries else model


def freeze(model: Any) -> Any:
    """What a bank pickles of ``model`` (its ``freeze``): a handle's packed slot (:class:`EnsembleState`),
    any other model as it is."""
    return model.freeze() if type(model) is FastSeries else model


class FastSeries(SlotHandle):
    """A series' slot in an :class:`EnsemblePool`; :meth:`export` is the point-by-point model it stands for."""

    __slots__ = ("pool", "slot", "__weakref__")

    def __init__(self, pool: EnsemblePool, slot: int):
        self.pool = pool
        self.slot = slot

    def score_learn_many(self, xs: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """``InOrder.score_learn_many`` of this series' points."""
        return self.pool.score_many([(self, xs, ts)])[0]

    def export(self) -> InOrder:
        """The point-by-point model in this slot's state."""
        return self.pool.export(self.slot)

    def freeze(self) -> EnsembleState:
        """This slot's state, packed (what a checkpoint pickles)."""
        return self.pool.freeze(self.slot)

    def __del__(self) -> None:
        try:
            self.pool.release(self.slot)
        except Exception:  # interpreter shutdown: the pool may be gone already
            pass


class EnsemblePool:
    """Slots of series state for the model ``template()`` makes (see :func:`supported`)."""

    @classmethod
    def serving(cls, template: Callable[[], Any], capacity: int = 1024) -> EnsemblePool | None:
        """A pool for ``template()``'s models (room for ``capacity`` series before it grows), or
        None if the kernel does not run them."""
        return cls(template, capacity) if supported(template()) else None

    def __init__(self, template: Callable[[], InOrder], capacity: int = 1024):
        self.template = template
        model = template()
        if not supported(model):
            raise ValueError("the fast path runs InOrder(Ensemble()) with the robust, seasonal_robust and context views")
        self.fp, self.ip = _parameters(model)
        self.params = digest(self.fp, self.ip)
        views = model.detector.components
        self.window = max(views[0].window, views[1].window)
        self.halfwidth = views[1]._k
        self.past_cap = views[1].max_season_points + self.halfwidth
        self.k = max([v.gate.k for v in views if v.gate is not None], default=1)
        self.blocks = max([v.gate.closed.maxlen for v in views if v.gate is not None], default=1)
        self.levels = views[2].bins + 2
        self.capacity = 0
        self.state: dict[str, np.ndarray] = {}
        self.free: list[int] = []
        self._pending: set[int] | None = None  # slots of the batch being gathered (see score_many)
        self._flush: Callable[[], None] | None = None
        self._grow(capacity)
        slot = self._allocate()  # what a fresh series holds (window, ring and gate contents past their lengths are unread)
        _load(self.state, slot, model)
        self._fresh = {name: self.state[name][slot].copy() for name in FIELDS
                       if name not in ("wring", "wsorted", "past", "t0", "gopen", "gtop")}
        self.release(slot)

    def __len__(self) -> int:
        """Slots in use."""
        return self.capacity - len(self.free)

    def _grow(self, capacity: int) -> None:
        shapes = {"wring": (3, self.window), "wsorted": (3, self.window), "wmeta": (3, 5), "past": (self.past_cap,),
                  "pmeta": (5,), "t0": (k.SETTLE_POINTS,), "cal": (3, 2), "caln": (3,),
                  "gclosed": (3, self.blocks, self.k), "gopen": (3, self.k + 1), "gtop": (3, self.k), "gmeta": (3, 5),
                  "ccounts": (self.levels * self.levels,), "ctotals": (self.levels,), "crange": (4,), "cint": (2,),
                  "last_ts": (), "learned": (), "since": ()}
        ints = {"wmeta", "pmeta", "caln", "gmeta", "cint", "learned", "since"}
        for name in FIELDS:
            grown = _lazy((capacity, *shapes[name]), np.int64 if name in ints else np.float64)
            if self.capacity:
                grown[: self.capacity] = self.state[name]
            self.state[name] = grown
        self.free.extend(range(capacity - 1, self.capacity - 1, -1))
        self.capacity = capacity

    def _allocate(self) -> int:
        if not self.free:
            self._grow(2 * self.capacity)
        return self.free.pop()

    def release(self, slot: int) -> None:
        """Give ``slot`` back (its handle is gone)."""
        self.free.append(slot)

    def new(self) -> FastSeries:
        """A handle on a fresh series (the state of ``template()``)."""
        slot = self._allocate()
        for name, value in self._fresh.items():
            self.state[name][slot] = value
        return FastSeries(self, slot)

    def adopt(self, model: Any) -> FastSeries:
        """A handle on a slot loaded with ``model`` (a checkpoint just unpickled): an
        :class:`EnsembleState` or the point-by-point model; ``ValueError`` if it is not one the
        kernel runs with this pool's parameters."""
        if type(model) is EnsembleState:
            if model.params != self.params:
                raise ValueError("the state of a model of another configuration")
            slot = self._allocate()
            try:
                _thaw(self.state, slot, model)
            except BaseException:
                self.release(slot)
                raise
            return FastSeries(self, slot)
        if not supported(model) or not all(map(np.array_equal, _parameters(model), (self.fp, self.ip))):
            raise ValueError("not a model of this pool's configuration")
        slot = self._allocate()
        _load(self.state, slot, model)
        return FastSeries(self, slot)

    def point_by_point(self, model: Any) -> Any:
        """``model`` (a checkpoint just unpickled) as a bank without a pool holds it: an
        :class:`EnsembleState` as the point-by-point model, any other model as it is."""
        if type(model) is not EnsembleState:
            return model
        return self.adopt(model).export()

    def _settle(self, slot: int) -> None:
        """Score the batch being gathered first if ``slot`` is in it, so its state includes that batch."""
        if self._pending is not None and slot in self._pending and self._flush is not None:
            self._flush()

    def export(self, slot: int) -> InOrder:
        """The point-by-point model holding ``slot``'s state (a slot of the batch being gathered
        is scored first, so its state includes that batch)."""
        self._settle(slot)
        model = self.template()
        _save(self.state, slot, model)
        return model

    def freeze(self, slot: int) -> EnsembleState:
        """``slot``'s state packed (what a checkpoint pickles; the batch being gathered scored first)."""
        self._settle(slot)
        return self.pack(self.state, slot, ())

    def copy_slots(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """Copies of the arrays a slot packs from, row ``i`` slot ``slots[i]``'s (the batch being gathered
        scored first); the rings only as far as one of them is filled."""
        if self._pending and self._flush is not None:
            self._flush()
        st = self.state
        copies = {name: np.take(st[name], slots, axis=0) for name in PACKED if name not in ("wring", "past")}
        filled = int(copies["wmeta"][:, :, 0].max(initial=0))
        count, head, size = copies["pmeta"][:, 0], copies["pmeta"][:, 1], copies["pmeta"][:, 2]
        reach = int(np.where(head + count > size, size, head + count).max(initial=0))
        # indexed, not np.take, as views: np.take copies a view whole first
        copies["wring"], copies["past"] = st["wring"][slots, :, :filled], st["past"][slots, :reach]
        return copies

    def pack(self, state: dict[str, np.ndarray], row: int, objects: tuple[Any, ...] = ()) -> EnsembleState:
        """Row ``row`` of ``state`` (the pool's arrays or a :meth:`copy_slots`) packed."""
        return _freeze(state, row, self.ip, self.params)

    def score_many(self, items: Sequence[tuple[FastSeries, Sequence[float], Sequence[float]]]) -> list[np.ndarray]:
        """Scores of each ``(handle, values, times)`` (values and times in record order), as
        ``InOrder(Ensemble()).score_learn_many`` gives them; learns them."""
        sizes = [len(xs) for _, xs, _ in items]
        xs = np.fromiter(chain.from_iterable(xs for _, xs, _ in items), dtype=np.float64, count=sum(sizes))
        ts = np.fromiter(chain.from_iterable(ts for _, _, ts in items), dtype=np.float64, count=sum(sizes))
        starts = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        return np.split(self.score_flat((h for h, _, _ in items), starts, xs, ts), starts[1:-1])

    def score_flat(self, handles: Iterable[FastSeries], starts: np.ndarray, xs: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Scores of ``xs``/``ts`` (float64), whose points ``starts[g]:starts[g + 1]`` are the g-th
        handle's, in record order; learns them. ``handles`` may be made as it is walked: a bank
        handing them out may evict, and so export, one handed out earlier (that scores the
        points gathered so far first, so the export holds them)."""
        out = np.empty(len(xs))
        slots = np.empty(len(starts) - 1, dtype=np.int64)
        done = gathered = 0
        pending: set[int] = set()
        held: list[FastSeries] = []  # keeps the slots alive until they are scored

        def flush() -> None:
            nonlocal done
            if gathered > done:
                k.score_batch(tuple(self.state[name] for name in FIELDS), self.fp, self.ip, slots[done:gathered],
                              starts[done : gathered + 1], xs, ts, out)
            done = gathered
            pending.clear()

        self._pending, self._flush = pending, flush
        try:
            for handle in handles:
                slots[gathered] = handle.slot
                held.append(handle)
                pending.add(handle.slot)
                gathered += 1
            flush()
        finally:
            self._pending = self._flush = None
        return out


def _lazy(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """A zeroed array whose pages take memory only once written: anonymous memory without
    transparent huge pages (numpy asks for them on large arrays, and one write would then make
    2 MiB of slots resident at once)."""
    count = int(np.prod(shape))
    memory = mmap.mmap(-1, max(count * np.dtype(dtype).itemsize, 1))
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        memory.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(memory, dtype=dtype, count=count).reshape(shape)


def _parameters(model: InOrder) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's float and int parameters of ``model`` (see :mod:`models.detectors.ensemble_kernel`)."""
    ensemble = model.detector
    views = ensemble.components
    fp = np.zeros(k.F_COUNT)
    ip = np.zeros(k.I_COUNT, dtype=np.int64)
    for v, view in enumerate(views):
        cal, f, i = view.calibrator, v * k.F_STRIDE, v * k.I_STRIDE
        fp[f + k.F_ALPHA], fp[f + k.F_MIN_STD], fp[f + k.F_REL_STD] = cal.alpha, cal.min_std, cal.rel_std
        ip[i + k.I_WARMUP] = cal.warmup
        if view.gate is not None:
            ip[i + k.I_GATE_K], ip[i + k.I_GATE_BLOCK] = view.gate.k, view.gate.block
            ip[i + k.I_GATE_BLOCKS] = view.gate.closed.maxlen
        if isinstance(view, RobustZ):
            fp[f + k.F_RANGE_FLOOR], fp[f + k.F_REL_FLOOR], fp[f + k.F_ABS_FLOOR] = (
                view.range_floor, view.rel_floor, view.abs_floor)
            ip[i + k.I_MIN_POINTS] = view.min_points
            ip[k.I_WSIZE + v] = view.window
    ip[k.I_WSIZE + 2] = views[1].window
    fp[k.F_SEASON] = views[1].season
    ip[k.I_HALFWIDTH], ip[k.I_MAX_SEASON] = views[1]._k, views[1].max_season_points
    fp[k.F_CTX_ALPHA], ip[k.I_BINS], ip[k.I_HALVE] = views[2].alpha, views[2].bins, views[2].halve_every
    fp[k.F_SCALE], fp[k.F_LEVEL], fp[k.F_KEEP] = ensemble.scale, ensemble.suppressor.level, ensemble.suppressor.keep
    ip[k.I_SPAN] = ensemble.suppressor.span
    return fp, ip


def _windows(model: InOrder) -> list[SortedWindow]:
    robust, seasonal = model.detector.components[:2]
    return [robust.hist, seasonal.hist, seasonal.values]


def _load(st: dict[str, np.ndarray], s: int, model: InOrder) -> None:
    """Slot ``s`` := the state of the point-by-point ``model``."""
    ensemble = model.detector
    robust, seasonal, context = ensemble.components
    for w, window in enumerate(_windows(model)):
        values = np.array(list(window), dtype=np.float64)
        finite = np.sort(values[np.isfinite(values)])
        st["wring"][s, w, : len(values)] = values
        st["wsorted"][s, w, : len(finite)] = finite
        st["wmeta"][s, w] = (len(values), 0, len(finite), len(values) - len(finite), 0)
    past = list(seasonal.past)
    st["past"][s, : len(past)] = past
    lag = seasonal.lag
    st["pmeta"][s] = (len(past), 0, seasonal.past.maxlen or len(st["past"][s]), lag, len(seasonal._t0))
    st["t0"][s, : len(seasonal._t0)] = seasonal._t0
    for v, view in enumerate(ensemble.components):
        st["cal"][s, v] = (view.calibrator.mean, view.calibrator.var)
        st["caln"][s, v] = view.calibrator.n
        gate = view.gate
        st["gclosed"][s, v] = math.nan
        st["gmeta"][s, v] = 0
        if gate is None:
            continue
        for b, top in enumerate(gate.closed):
            st["gclosed"][s, v, b, : len(top)] = top
        st["gopen"][s, v, : len(gate.open)] = gate.open
        st["gtop"][s, v, : len(gate.closed_top)] = gate.closed_top
        st["gmeta"][s, v] = (len(gate.closed), 0, len(gate.open), gate.filled, len(gate.closed_top))
    st["ccounts"][s] = context.counts
    st["ctotals"][s] = context.totals
    st["crange"][s] = (context.lo, context.hi, context.lo_before, context.hi_before)
    st["cint"][s] = (context.prev, context.n)
    st["last_ts"][s], st["learned"][s] = model.last_ts, model.learned
    st["since"][s] = ensemble.suppressor.since


def _save(st: dict[str, np.ndarray], s: int, model: InOrder) -> None:
    """The fresh point-by-point ``model`` := slot ``s``'s state (Python floats and ints, as it pickles them)."""
    ensemble = model.detector
    robust, seasonal, context = ensemble.components
    windows = []
    for w, size in enumerate((robust.window, seasonal.window, seasonal.window)):
        n, head = int(st["wmeta"][s, w, 0]), int(st["wmeta"][s, w, 1])
        ring = st["wring"][s, w, :n]
        windows.append(SortedWindow(size, np.concatenate((ring[head:], ring[:head])).tolist()))
    robust.hist = robust.values = windows[0]
    seasonal.hist, seasonal.values = windows[1], windows[2]
    n, head, maxlen, lag, held = (int(v) for v in st["pmeta"][s])
    ring = st["past"][s]
    at = (head + np.arange(n)) % maxlen
    seasonal.lag = lag
    seasonal.past = deque(ring[at].tolist(), maxlen=None if lag == 0 else maxlen)
    seasonal._t0 = st["t0"][s, :held].tolist()
    for v, view in enumerate(ensemble.components):
        mean, var = st["cal"][s, v].tolist()
        view.calibrator.mean, view.calibrator.var, view.calibrator.n = mean, var, int(st["caln"][s, v])
        gate = view.gate
        if gate is None:
            continue
        closed, head, opened, filled, top = (int(x) for x in st["gmeta"][s, v])
        blocks = st["gclosed"][s, v]
        for b in range(closed):
            block = blocks[(head + b) % gate.closed.maxlen]
            gate.closed.append(block[block == block].tolist())
        gate.open = st["gopen"][s, v, :opened].tolist()
        gate.filled = filled
        gate.closed_top = st["gtop"][s, v, :top].tolist()
    context.counts = array("d", st["ccounts"][s].tobytes())
    context.totals = array("d", st["ctotals"][s].tobytes())
    context.lo, context.hi, context.lo_before, context.hi_before = st["crange"][s].tolist()
    context.prev, context.n = (int(x) for x in st["cint"][s])
    model.last_ts, model.learned = float(st["last_ts"][s]), int(st["learned"][s])
    ensemble.suppressor.since = int(st["since"][s])


def _mask_words(cells: int) -> int:
    """The int64 words of a bitmask of ``cells`` bits."""
    return (cells + 63) // 64


def _freeze(st: dict[str, np.ndarray], s: int, ip: np.ndarray, params: bytes) -> EnsembleState:
    """Slot ``s`` packed: ints (window lengths, past (len, maxlen, lag, held), calibrator counts,
    per view gate (closed, open len, filled, top len), context (prev, n), learned, since, a
    bitmask of the context counts that are not 0) and floats (windows, past, settling times,
    calibrators, gates, the context's counts that are not 0, totals and range, last_ts), rings
    from their oldest value (compiled: :func:`_pack`)."""
    ints, floats = _pack(*[st[name] for name in PACKED], ip, s)
    return EnsembleState(params, ints, floats)


@njit(cache=True, nogil=True)
def _pack(wring, wmeta, past, pmeta, t0, cal, caln, gclosed, gopen, gtop, gmeta, ccounts, ctotals, crange, cint,
          last_ts, learned, since, ip, s):
    """Row ``s`` of the arrays of :data:`PACKED` (in that order) packed as :func:`_freeze` says: (ints, floats);
    ``ip`` the kernel's int parameters."""
    n, head, maxlen, lag, held = pmeta[s, 0], pmeta[s, 1], pmeta[s, 2], pmeta[s, 3], pmeta[s, 4]
    width, cells = gclosed.shape[3], ccounts.shape[1]
    used = 0
    for c in range(cells):
        if ccounts[s, c] != 0.0:
            used += 1
    size = wmeta[s, 0, 0] + wmeta[s, 1, 0] + wmeta[s, 2, 0] + n + held + 6 + used + ctotals.shape[1] + 4 + 1
    for v in range(3):
        size += gmeta[s, v, 0] * width + gmeta[s, v, 2] + gmeta[s, v, 4]
    floats = np.empty(size)
    at = 0
    for w in range(3):
        at = ring_into(floats, at, wring[s, w], wmeta[s, w, 1], wmeta[s, w, 0], max(wmeta[s, w, 0], 1))
    at = ring_into(floats, at, past[s], head, n, max(maxlen, 1))
    floats[at : at + held] = t0[s, :held]
    floats[at + held : at + held + 6] = cal[s].ravel()
    at += held + 6
    for v in range(3):
        closed, opened, top = gmeta[s, v, 0], gmeta[s, v, 2], gmeta[s, v, 4]
        at = ring_into(floats, at, gclosed[s, v], gmeta[s, v, 1], closed, max(ip[v * k.I_STRIDE + k.I_GATE_BLOCKS], 1))
        floats[at : at + opened] = gopen[s, v, :opened]
        floats[at + opened : at + opened + top] = gtop[s, v, :top]
        at += opened + top
    words = (cells + 63) // 64
    mask = np.zeros(8 * words, dtype=np.uint8)  # which counts are not 0, as np.packbits lays them out
    for c in range(cells):
        if ccounts[s, c] != 0.0:
            mask[c // 8] |= np.uint8(1 << (7 - c % 8))
            floats[at] = ccounts[s, c]
            at += 1
    floats[at : at + ctotals.shape[1]] = ctotals[s]
    at += ctotals.shape[1]
    floats[at : at + 4] = crange[s]
    floats[at + 4] = last_ts[s]
    ints = np.empty(3 + 4 + 3 + 12 + 2 + 2 + words, dtype=np.int64)
    ints[:3] = wmeta[s, :, 0]
    ints[3], ints[4], ints[5], ints[6] = n, maxlen, lag, held
    ints[7:10] = caln[s]
    for v in range(3):
        ints[10 + 4 * v], ints[11 + 4 * v], ints[12 + 4 * v], ints[13 + 4 * v] = (
            gmeta[s, v, 0], gmeta[s, v, 2], gmeta[s, v, 3], gmeta[s, v, 4])
    ints[22], ints[23], ints[24], ints[25] = cint[s, 0], cint[s, 1], learned[s], since[s]
    ints[26:] = mask.view(np.int64)
    return ints, floats


def _thaw(st: dict[str, np.ndarray], s: int, state: EnsembleState) -> None:
    """Slot ``s`` := the packed ``state`` (:func:`_freeze`'s layout; sorted windows rebuilt, as :func:`_load` does)."""
    ints, floats = Unpacker(state.ints), Unpacker(state.floats)
    lengths = ints.take(3)
    for w, n in enumerate(lengths.tolist()):
        load_window(st["wring"][s, w], st["wsorted"][s, w], st["wmeta"][s, w], floats.take(n))
    n, maxlen, lag, held = ints.take(4).tolist()
    st["past"][s, :n] = floats.take(n)
    st["pmeta"][s] = (n, 0, maxlen, lag, held)
    st["t0"][s, :held] = floats.take(held)
    st["cal"][s] = floats.take(6).reshape(3, 2)
    st["caln"][s] = ints.take(3)
    width = st["gclosed"].shape[3]  # values a closed block holds (NaN past its top)
    for v, (closed, opened, filled, top) in enumerate(ints.take(12).reshape(3, 4).tolist()):
        st["gclosed"][s, v] = math.nan
        st["gclosed"][s, v, :closed] = floats.take(closed * width).reshape(closed, width)
        st["gopen"][s, v, :opened] = floats.take(opened)
        st["gtop"][s, v, :top] = floats.take(top)
        st["gmeta"][s, v] = (closed, 0, opened, filled, top)
    st["cint"][s] = ints.take(2)
    st["learned"][s], st["since"][s] = ints.take(2).tolist()
    cells = st["ccounts"].shape[1]
    used = np.unpackbits(ints.take(_mask_words(cells)).view(np.uint8), count=cells).astype(bool)
    st["ccounts"][s] = 0.0
    st["ccounts"][s, used] = floats.take(np.count_nonzero(used))
    st["ctotals"][s] = floats.take(st["ctotals"].shape[1])
    st["crange"][s] = floats.take(4)
    st["last_ts"][s] = floats.take(1)[0]
    if not (ints.at_end() and floats.at_end()):
        raise ValueError("a packed slot state longer than its lengths say")
