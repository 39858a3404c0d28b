"""What the sinks need of a bank of models to save and restore its checkpoints.

:class:`models.bank.ModelBank` is one; the sinks depend on this protocol, not on the models.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

#: A series' checkpoint: the series key, the points its model learned, and the sealed state.
StateRow = tuple[str, int, bytes]


class Checkpointed(Protocol):
    """Models of many series that hand out the checkpoints of the changed ones and take them back."""

    @property
    def state_key(self) -> str:
        """The name the checkpoints are saved under (the model kind and its state version)."""

    def checkpoint(self) -> list[StateRow]:
        """The rows of the series changed since the last call."""

    def missing(self, series: Iterable[str]) -> list[str]:
        """Those ``series`` with no model held yet."""

    def restore(self, rows: Iterable[StateRow]) -> None:
        """Take these checkpoints back (rows whose seal does not verify are dropped)."""
