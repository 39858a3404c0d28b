"""What the sinks need of a bank of models to save and restore its checkpoints.

:class:`models.bank.ModelBank` is one; the sinks depend on this protocol, not on the models.
A checkpoint is cut (:meth:`Checkpointed.snapshot`, cheap, between batches) and written later
(:func:`writer`, off the batch path), so the offsets committed after it match the state saved.
Its rows are sealed as the writer reads them: a checkpoint of 10,000 series never holds all
their sealed state at once (it would add ~50 MB to the worker's peak memory, and each copy on
the way to the store as much again).

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
