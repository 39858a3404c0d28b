"""Two versions of each series' saved state, so a checkpoint never overwrites the one its commit covers.

A location (the ``model_state`` table, ``sinks.model_state``; files under ``M1_STATE_DIR``,
``sinks.state_files``) stores rows and reads them back; this base class decides which slot each
row goes to and which row a restore takes (see :mod:`sinks.checkpoints`, "Versions"). It
remembers the cuts in both slots of the series it wrote or read lately (:data:`REMEMBERED` at
most, the least recently written forgotten first): while a worker owns a series' partition it is
the only writer of the series, so what it remembers holds until :meth:`VersionedState.forget`
(the partition went elsewhere, or was rolled back); a series not remembered has its slots read
again before it is restored or written.

>>> import numpy as np
>>> from models.bank import ModelBank
>>> class InMemory(VersionedState):
...     def __init__(self):
...         super().__init__()
...         self.rows = {}
...     def _write(self, state_key, rows):
...         for series, slot, cut, points, sealed in rows:
...             self.rows[series, slot] = (series, slot, cut, points, sealed)
...     def _read(self, state_key, series):
...         return [row for (s, _), row in self.rows.items() if s in series]
>>> class At:  # the consumer's positions: the partition committed at offset 10, cut now at 25
...     def __init__(self, cut, committed, restorable): self.cut, self.committed, self.bound = cut, committed, restorable
...     def cut_of(self, series): return self.cut
...     def committed_of(self, series): return self.committed
...     def restorable(self, series): return self.bound
>>> bank = ModelBank("zscore", key=bytes(32))
>>> _ = bank.score_learn("a", np.array([1.0, 1.1, 0.9]), np.arange(3.0))
>>> location = InMemory()
>>> location.save(bank, At(10, 0, None))  # committed afterwards at 10
1
>>> _ = bank.score_learn("a", np.array([1.2]), np.array([3.0]))
>>> location.save(bank, At(25, 10, None))  # written, never committed: the worker is killed
1
>>> sorted((slot, cut, points) for _, slot, cut, points, _ in location.rows.values())
[(0, 10, 3), (1, 25, 4)]
>>> successor = ModelBank("zscore", key=bytes(32))
>>> location.restore_missing(successor, ["a"], At(0, 10, 10))  # it reads on from offset 10
>>> successor.points("a")
3
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator

from sinks.checkpoints import Checkpointed, Positions, Slots, StateRow, pick, slot_to_write, writer

#: A saved version as a location stores it: series, slot (0 or 1), cut, points learned, sealed state.
SavedRow = tuple[str, int, int, int, bytes]
#: How many series' slots a location remembers (about 230 bytes each): series come and go (a host
#: replaced, a label changed), and a worker running for months must not keep every one it met.
REMEMBERED = 1 << 18
log = logging.getLogger(__name__)


class VersionedState(ABC):
    """A place for checkpoints that keeps two versions of each series (see the module docstring).
    Subclasses store and read :data:`SavedRow` rows."""

    def __init__(self) -> None:
        # (state key, series) -> cut by slot, least recently written first
        self._slots: OrderedDict[tuple[str, str], list[int | None]] = OrderedDict()

    @abstractmethod
    def _write(self, state_key: str, rows: Iterator[SavedRow]) -> None:
        """Store ``rows`` (all of them, read one by one: a checkpoint is never held whole)."""

    @abstractmethod
    def _read(self, state_key: str, series: list[str]) -> Iterable[SavedRow]:
        """The stored versions of ``series`` (at most one a slot each)."""

    def snapshot(self, bank: Checkpointed, positions: Positions | None = None) -> Callable[[], int]:
        """Cut the bank's changed series now (under the lock that guards it); the writer returned
        stores them, each in the slot its partition's commit does not need (see
        :func:`sinks.checkpoints.writer`). Without ``positions`` every version has cut 0 and slot 0."""
        state_key = bank.state_key
        cut_of = positions.cut_of if positions is not None else _unknown
        committed_of = positions.committed_of if positions is not None else _none
        cut = bank.snapshot()
        return writer(cut, lambda rows: self._write(state_key, self._placed(state_key, rows, cut_of, committed_of)))

    def save(self, bank: Checkpointed, positions: Positions | None = None) -> int:
        """Cut and write at once; returns how many series were saved."""
        return self.snapshot(bank, positions)()

    def restore_missing(self, bank: Checkpointed, series: list[str], positions: Positions | None = None) -> None:
        """Load the saved state of those ``series`` the bank does not hold: of each, the latest version
        ``positions`` lets this worker trust (:meth:`Positions.restorable`; without them the latest)."""
        missing = bank.missing(series)
        if not missing:
            return
        found: dict[str, dict[int, SavedRow]] = {}
        for row in self._read(bank.state_key, missing):
            found.setdefault(row[0], {})[row[1]] = row
        rows: list[StateRow] = []
        older: dict[str, SavedRow] = {}  # each restored series' other trusted version, if it has one
        newer = 0  # series with a version cut after what this worker may trust
        for key, versions in found.items():
            cuts = self._remember(bank.state_key, key, versions)
            slots: Slots = (cuts[0], cuts[1])
            bound = None if positions is None else positions.restorable(key)
            slot = pick(slots, bound)
            newer += bound is not None and any(cut is not None and cut > bound for cut in slots)
            if slot is None or slot not in versions:
                continue
            _, _, _, points, sealed = versions[slot]
            rows.append((key, points, sealed))
            other = versions.get(1 - slot)
            if other is not None and (bound is None or other[2] <= bound):
                older[key] = other
        if newer:
            log.warning("%d series of %s have a saved state newer than the offsets their partitions resume from "
                        "(a worker stopped between its checkpoint and its commit): each resumes from the state of "
                        "those offsets instead", newer, bank.state_key)
        for key in missing:
            if key not in found:
                self._remember(bank.state_key, key, {})
        if rows:
            bank.restore(rows)
        # a version that does not open (altered; cut short by a power cut, as files are not fsynced) gives way
        # to the series' other trusted one: it learned less, but more than a fresh model
        fallback = [(key, older[key][3], older[key][4]) for key in bank.missing(list(older))]
        if fallback:
            bank.restore(fallback)
            if loaded := len(fallback) - len(bank.missing([key for key, _, _ in fallback])):
                log.warning("%d series of %s resume from their older saved version, as their latest does not load",
                            loaded, bank.state_key)

    def forget(self, bank: Checkpointed, series: Iterable[str]) -> None:
        """Forget what was remembered of ``series``' slots: another worker may write them from now on."""
        state_key = bank.state_key
        for key in series:
            self._slots.pop((state_key, key), None)

    def _remember(self, state_key: str, series: str, versions: dict[int, SavedRow]) -> list[int | None]:
        """The cuts in the slots of ``series`` (the list remembered, which a write updates): those
        remembered (this worker's writes are newer than what it may have read meanwhile), else those
        of ``versions``, just read."""
        known = self._slots.setdefault((state_key, series), [versions[s][2] if s in versions else None for s in (0, 1)])
        self._trim()
        return known

    def _placed(self, state_key: str, rows: Iterator[StateRow], cut_of: Callable[[str], int],
                committed_of: Callable[[str], int | None]) -> Iterator[SavedRow]:
        """``rows`` with their cut and slot; the slots of a series neither written nor read yet are read first."""
        remembered = self._slots
        for series, points, sealed in rows:
            key = (state_key, series)
            slots = remembered.get(key)
            if slots is None:
                slots = self._remember(state_key, series, {row[1]: row for row in self._read(state_key, [series])})
            else:
                remembered.move_to_end(key)
            cut = cut_of(series)
            slot = slot_to_write((slots[0], slots[1]), committed_of(series))
            slots[slot] = cut
            yield series, slot, cut, points, sealed

    def _trim(self) -> None:
        """Forget the least recently written series beyond :data:`REMEMBERED`."""
        while len(self._slots) > REMEMBERED:
            self._slots.popitem(last=False)


def _unknown(series: str) -> int:
    return 0


def _none(series: str) -> None:
    return None
