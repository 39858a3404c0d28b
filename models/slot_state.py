"""A pool slot's state as a checkpoint pickles it: packed arrays, not point-by-point objects.

The compiled pools (:class:`~models.detectors.fast_ensemble.EnsemblePool`,
:class:`~models.forecasting.fast_forecast.ForecastPool`) hold each series in a slot of their
arrays. A :class:`SlotState` is one slot packed: its ints and its floats, each one flat array
trimmed to the lengths in use, with rings rotated to start at their oldest value (as loading a
point-by-point model leaves them), the digest of the pool parameters it was learned under, and
any Python objects the slot's handle holds. It pickles as a version and bytes: fast and compact.
A pool adopts it into a slot directly, and turns it into the point-by-point model for a bank
without a pool. A subclass per pool tells the kinds apart.

A :class:`SlotHandle` is a series' slot, what a bank holds. A checkpoint's cut copies the slots
of many handles at once (:class:`SlotCut`: one copy per pool array) and packs them later, from
the copies only, while the pool goes on learning; a slot packs the same from its copy as from
the pool (:meth:`SlotPool.pack` reads either).

>>> import pickle
>>> state = SlotState(b"digest", np.array([2, 3]), np.array([0.5, 1.5]))
>>> again = pickle.loads(pickle.dumps(state))
>>> again.params, again.ints.tolist(), again.floats.tolist(), again.objects
(b'digest', [2, 3], [0.5, 1.5], ())
>>> reader = Unpacker(again.floats)
>>> reader.take(1).tolist(), reader.take(1).tolist(), reader.at_end()
([0.5], [1.5], True)
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

import numpy as np
from numba import njit


class SlotState:
    """One slot packed (see the module docstring); ``VERSION`` is the packing's format: a pickle of
    another version does not unpickle (``ValueError``), so its series starts afresh. Bump it when
    what a pool packs changes (the order or meaning of its ints and floats, a kernel's layout)."""

    VERSION = 1
    __slots__ = ("params", "ints", "floats", "objects")

    def __init__(self, params: bytes, ints: np.ndarray, floats: np.ndarray, objects: tuple[Any, ...] = ()):
        self.params = params
        self.ints = np.asarray(ints, dtype=np.int64)
        self.floats = np.asarray(floats, dtype=np.float64)
        self.objects = objects

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.VERSION, self.params, self.ints.tobytes(), self.floats.tobytes(), self.objects)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        if state[0] != self.VERSION:
            raise ValueError(f"a {type(self).__name__} of format {state[0]}; this version reads {self.VERSION}")
        _, self.params, ints, floats, self.objects = state
        self.ints = np.frombuffer(ints, dtype=np.int64)
        self.floats = np.frombuffer(floats, dtype=np.float64)


class SlotPool(Protocol):
    """What a pool does for a :class:`SlotCut`."""

    def copy_slots(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """Copies of the arrays a slot packs from, their row ``i`` slot ``slots[i]``'s (the batch being
        gathered learned first)."""

    def pack(self, state: dict[str, np.ndarray], row: int, objects: tuple[Any, ...]) -> SlotState:
        """Row ``row`` of ``state`` (the pool's arrays, or a :meth:`copy_slots`) packed, with ``objects``."""


class SlotHandle:
    """A series' slot in a :class:`SlotPool` (``pool``, ``slot``): what a bank holds for a pooled series."""

    __slots__ = ()
    pool: SlotPool
    slot: int

    def objects(self) -> tuple[Any, ...] | None:
        """The Python objects the slot's packed state holds beside its arrays, as they are now, or None if
        one of them may change in place (then a cut cannot copy the slot with the others: it packs it)."""
        return ()


class SlotCut:
    """Slots of one pool as they were when :meth:`take` copied them, packed one by one later (:meth:`packed`,
    which reads the copies only: the pool may go on learning meanwhile, in another thread).

    >>> class Pool:  # one float a slot
    ...     values = np.array([1.0, 2.0, 3.0])
    ...     def copy_slots(self, slots): return {"values": self.values[slots]}
    ...     def pack(self, state, row, objects): return SlotState(b"", np.zeros(0), state["values"][row : row + 1])
    >>> class Handle(SlotHandle):
    ...     __slots__ = ("pool", "slot")
    ...     def __init__(self, pool, slot): self.pool, self.slot = pool, slot
    >>> pool = Pool()
    >>> cut = SlotCut(pool)
    >>> rows = [cut.add(Handle(pool, 2)), cut.add(Handle(pool, 0))]
    >>> cut.take()
    >>> pool.values[:] = 0.0  # the pool learns on
    >>> [cut.packed(row).floats.tolist() for row in rows]
    [[3.0], [1.0]]
    """

    def __init__(self, pool: SlotPool):
        self.pool = pool
        self.slots: list[int] = []
        self.objects: list[tuple[Any, ...]] = []
        self.state: dict[str, np.ndarray] = {}
        self.at = np.zeros(0, dtype=np.int64)  # row -> its row in the copies

    def add(self, handle: SlotHandle, objects: tuple[Any, ...] = ()) -> int:
        """Cut ``handle``'s slot too, with its ``objects`` (:meth:`SlotHandle.objects`); its row in the cut."""
        self.slots.append(handle.slot)
        self.objects.append(objects)
        return len(self.slots) - 1

    def take(self) -> None:
        """Copy the slots added (one copy per array, in slot order: memory read in order copies faster)."""
        slots = np.array(self.slots, dtype=np.int64)
        order = np.argsort(slots)
        self.state = self.pool.copy_slots(slots[order])
        self.at = np.empty_like(order)
        self.at[order] = np.arange(len(order))

    def packed(self, row: int) -> SlotState:
        """The slot of ``row`` packed as it was when taken."""
        return self.pool.pack(self.state, int(self.at[row]), self.objects[row])


def digest(*parameters: np.ndarray) -> bytes:
    """A short digest of a pool's parameter arrays: a slot state adopts only into an equal pool."""
    return hashlib.blake2b(b"".join(np.ascontiguousarray(p).tobytes() for p in parameters), digest_size=8).digest()


def load_window(ring: np.ndarray, srt: np.ndarray, meta: np.ndarray, values: np.ndarray) -> None:
    """A compiled sorted window (``models.detectors.ensemble_kernel.window_push``'s layout) :=
    ``values`` (oldest first): the ring from 0, its finite values sorted, the non-finite counted."""
    finite = np.sort(values[np.isfinite(values)])
    ring[: len(values)] = values
    srt[: len(finite)] = finite
    meta[:] = (len(values), 0, len(finite), len(values) - len(finite), 0)


@njit(cache=True, nogil=True)
def ring_into(out: np.ndarray, at: int, ring: np.ndarray, head: int, count: int, size: int) -> int:
    """The ``count`` (at most ``size``) rows of a ring of ``size`` whose oldest is at ``head``, oldest first,
    flat into ``out`` from ``at`` (compiled, for the pools' packing); where they end in ``out``. (Numba's
    cache of a compiled caller does not see a change here: clear the callers' cache files when changing it.)

    >>> out = np.zeros(6)
    >>> ring_into(out, 0, np.array([3.0, 4.0, 1.0, 2.0]), 2, 4, 4), ring_into(out, 4, np.arange(5.0), 1, 2, 4)
    (4, 6)
    >>> out.tolist()
    [1.0, 2.0, 3.0, 4.0, 1.0, 2.0]
    """
    first = min(count, size - head)  # from head to the end of the ring, then from its start
    for part in (ring[head : head + first].ravel(), ring[: count - first].ravel()):
        for i in range(part.size):
            out[at + i] = part[i]
        at += part.size
    return at


class Unpacker:
    """Reads a packed array front to back."""

    def __init__(self, values: np.ndarray):
        self.values = values
        self.at = 0

    def take(self, count: int) -> np.ndarray:
        """The next ``count`` values; ``ValueError`` past the end."""
        count = int(count)
        if count < 0 or self.at + count > len(self.values):
            raise ValueError("a packed slot state shorter than its lengths say")
        self.at += count
        return self.values[self.at - count : self.at]

    def at_end(self) -> bool:
        return self.at == len(self.values)
