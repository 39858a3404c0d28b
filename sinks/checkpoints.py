"""What the sinks need of a bank of models to save and restore its checkpoints.

:class:`models.bank.ModelBank` is one; the sinks depend on this protocol, not on the models.
A checkpoint is cut (:meth:`Checkpointed.snapshot`, cheap, between batches) and written later
(:func:`writer`, off the batch path), so the offsets committed after it match the state saved.
Its rows are sealed as the writer reads them: a checkpoint of 10,000 series never holds all
their sealed state at once (it would add ~50 MB to the worker's peak memory, and each copy on
the way to the store as much again).

**Versions.** The offsets are committed after the write, so a worker killed between the two
leaves state newer than its commit. Each saved state therefore records its *cut*: the offset of
its series' partition when it was cut (it learned every record of the partition before that
offset, none after). A location keeps two versions of each series, in slots 0 and 1, and a write
never replaces the version the partition's commit covers (:func:`slot_to_write`); a restore takes
the latest version whose cut the reader may trust (:func:`pick`, :class:`Positions`): the next
owner of a partition resumes from its committed offset with the state of that very offset, so it
learns the records it reads again exactly once. Cut 0 means unknown (a pipeline without a
consumer's positions, or state saved before cuts were recorded): it is always restorable.

>>> pick((120, 180), bound=150)  # 180 is a version whose commit never happened (or not yet seen)
0
>>> slot_to_write((120, 180), committed=120)  # keep what the commit covers
1

>>> class Cut:  # a bank's snapshot of two series
...     ended = None
...     def __len__(self): return 2
...     def rows(self): return iter([("a", 1, b"state"), ("b", 2, b"state")])
...     def written(self): self.ended = "written"
...     def failed(self): self.ended = "failed"
>>> cut = Cut()
>>> write = writer(cut, lambda rows: list(rows))  # cut between batches; write later, in another thread
>>> write(), cut.ended
(2, 'written')
>>> def refuse(rows): raise OSError("the store is down")
>>> cut = Cut()
>>> writer(cut, refuse)()
Traceback (most recent call last):
OSError: the store is down
>>> cut.ended
'failed'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

#: A series' checkpoint: the series key, the points its model learned, and the sealed state.
StateRow = tuple[str, int, bytes]
#: The cuts of a series' two saved versions, by slot (None: the slot is empty).
Slots = tuple["int | None", "int | None"]


class Positions(Protocol):
    """Where the partitions of the series stand, as the consumer feeding the bank sees them
    (``streams.checkpoint_positions``): what a location needs to version checkpoints."""

    def cut_of(self, series: str) -> int:
        """The cut of ``series`` in the checkpoint being cut now (0 if unknown)."""

    def committed_of(self, series: str) -> int | None:
        """The offset the group committed for ``series``' partition (None if unknown)."""

    def restorable(self, series: str) -> int | None:
        """The latest cut a saved state of ``series`` may have for this worker to restore it (a
        later one learned records it will read again); None: any."""


def pick(slots: Slots, bound: int | None) -> int | None:
    """The slot to restore from: the one holding the latest cut at or below ``bound`` (any
    cut without a bound); None if neither does.

    >>> pick((None, 7), bound=None), pick((9, 7), bound=8), pick((9, 10), bound=8), pick((None, None), bound=3)
    (1, 1, None, None)
    """
    usable = [(cut, slot) for slot, cut in enumerate(slots) if cut is not None and (bound is None or cut <= bound)]
    return max(usable)[1] if usable else None


def slot_to_write(slots: Slots, committed: int | None) -> int:
    """The slot a new version of the series goes to: not the one a worker resuming from the
    ``committed`` offset restores (:func:`pick`), so that version survives a write that is
    never committed. Without a committed offset (no positions), slot 0, overwritten each time.

    >>> slot_to_write((None, None), committed=0), slot_to_write((40, None), 40), slot_to_write((40, 90), 90)
    (0, 1, 0)
    >>> slot_to_write((40, 90), committed=None)
    0
    """
    if committed is None:
        return 0
    keep = pick(slots, committed)
    if keep is None:  # neither is covered by the commit: replace the older (or an empty one)
        return 0 if slots[0] is None or (slots[1] is not None and slots[0] <= slots[1]) else 1
    return 1 - keep


class Cut(Protocol):
    """The state of a bank's changed series at a moment, waiting to be written."""

    def __len__(self) -> int:
        """How many rows the cut holds."""

    def rows(self) -> Iterator[StateRow]:
        """The rows of the state at the cut, each sealed as it is read (reads only what the cut
        copied: any thread may call it, once)."""

    def written(self) -> None:
        """The rows are stored."""

    def failed(self) -> None:
        """The rows could not be stored: the bank writes them with its next cut."""


class Checkpointed(Protocol):
    """Models of many series that hand out the checkpoints of the changed ones and take them back."""

    @property
    def state_key(self) -> str:
        """The name the checkpoints are saved under (the model kind and its state version)."""

    def snapshot(self) -> Cut:
        """The state of the series changed since the last cut, cut now."""

    def missing(self, series: Iterable[str]) -> list[str]:
        """Those ``series`` with no model held yet."""

    def restore(self, rows: Iterable[StateRow]) -> None:
        """Take these checkpoints back (rows whose seal does not verify are dropped)."""


def writer(cut: Cut, write: Callable[[Iterator[StateRow]], object]) -> Callable[[], int]:
    """What writes ``cut``: its rows through ``write`` (not called without rows; it must consume
    them all), then ``cut.written()``; if either raises, ``cut.failed()`` and the error goes on. It
    returns how many rows were written."""

    def write_cut() -> int:
        try:
            if len(cut):
                write(cut.rows())
        except BaseException:
            cut.failed()
            raise
        cut.written()
        return len(cut)

    return write_cut
