"""A pool slot's state as a checkpoint pickles it: packed arrays, not point-by-point objects.

The compiled pools (:class:`~models.detectors.fast_ensemble.EnsemblePool`,
:class:`~models.forecasting.fast_forecast.ForecastPool`) hold each series in a slot of their
arrays. A :class:`SlotState` is one slot packed: its ints and its floats, each one flat array
trimmed to the lengths in use, with rings rotated to start at their oldest value (as loading a
point-by-point model leaves them), the digest of the pool parameters it was learned under, and
any Python objects the slot's handle holds. It pickles as a version and bytes: fast and compact.
A pool adopts it into a slot directly, and turns it into the point-by-point model for a bank
without a pool. A subclass per pool tells the kinds apart.

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
from typing import Any

import numpy as np


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


def ring_order(ring: np.ndarray, head: int, count: int, size: int) -> np.ndarray:
    """The ``count`` (at most ``size``) values of a ring of ``size`` whose oldest is at ``head``, oldest first.

    >>> ring_order(np.array([3.0, 4.0, 1.0, 2.0]), 2, 4, 4).tolist(), ring_order(np.arange(5.0), 1, 2, 4).tolist()
    ([1.0, 2.0, 3.0, 4.0], [1.0, 2.0])
    """
    head, count, size = int(head), int(count), int(size)
    if head + count <= size:
        return ring[head : head + count]
    return np.concatenate((ring[head:size], ring[: head + count - size]))


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
