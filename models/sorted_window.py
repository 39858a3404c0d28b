"""A sliding window of floats kept in arrival order and in sorted order.

Shared by the robust detectors (median and MAD of the last 1,000 values) and the
conformal intervals (quantiles of recent residuals): each new value costs one
binary-search insert and one delete, instead of sorting or partitioning the window.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, insort
from collections.abc import Iterable
from typing import Any

INF = math.inf


class SortedWindow:
    """The last ``size`` values, in arrival order and in sorted order.

    ``median``, ``mad`` and ``range`` equal ``np.median(w)``, ``np.median(np.abs(w - median))``
    and ``w.max() - w.min()`` bit for bit, in O(log size). Non-finite values are
    counted but kept out of the sorted order; while one is in the window the
    statistics are NaN. Pickles as the values in arrival order (the sorted copy is rebuilt).

    >>> w = SortedWindow(4)
    >>> w.extend([5.0, 1.0, 3.0, 9.0, 2.0])  # 5.0 has slid out
    >>> w.median(), w.mad(w.median()), w.range(), len(w)
    (2.5, 1.0, 8.0, 4)
    >>> w.median_mad()
    (2.5, 1.0)
    """

    def __init__(self, size: int, values: Iterable[float] = ()):
        self.size = size
        self.ring = array("d")  # arrival order; once full, ring[head] is the oldest
        self.head = 0
        self.sorted = array("d")  # the finite values, ascending
        self.nonfinite = 0
        self._hint = 0  # where _kth_deviation's split was last found (not pickled: a starting point only)
        values = array("d", values)
        if len(values) <= size:  # what pushing them one by one makes, at once (restores and checkpoints)
            total = sum(values)  # finite: all of them are (an overflow only takes the longer way)
            finite = values if total - total == 0.0 else [v for v in values if v - v == 0.0]
            self.ring, self.sorted, self.nonfinite = values, array("d", sorted(finite)), len(values) - len(finite)
        else:
            self.extend(values)

    def __len__(self) -> int:
        return len(self.ring)

    def __iter__(self):
        """The values, oldest first."""
        return iter(self.ring[self.head :] + self.ring[: self.head])

    def extend(self, values: Iterable[float]) -> None:
        for v in values:
            self.push(v)

    def push(self, v: float) -> None:
        """Append ``v``, dropping the oldest value once the window holds ``size``."""
        ring = self.ring
        if len(ring) < self.size:
            ring.append(v)
        else:
            head = self.head
            old = ring[head]
            ring[head] = v
            self.head = head + 1 if head + 1 < self.size else 0
            if old - old == 0.0:  # finite (inf - inf and nan - nan are nan)
                del self.sorted[bisect_left(self.sorted, old)]
            else:
                self.nonfinite -= 1
        if v - v == 0.0:
            insort(self.sorted, v)
        else:
            self.nonfinite += 1

    def median(self) -> float:
        if self.nonfinite or not self.sorted:
            return math.nan
        s, n = self.sorted, len(self.sorted)
        return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2

    def mad(self, med: float) -> float:
        """Median of ``|v - med|``; ``med`` must be :meth:`median`."""
        if med != med:
            return math.nan
        n = len(self.sorted)
        lo = self._kth_deviation((n - 1) // 2, med)
        return lo if n % 2 else (lo[0] + lo[1]) / 2  # type: ignore[index]

    def median_mad(self) -> tuple[float, float]:
        """``(median(), mad(median()))`` in one call (the robust detectors' per-point path)."""
        s, n = self.sorted, len(self.sorted)
        if self.nonfinite or not n:
            return math.nan, math.nan
        if n % 2:
            med = s[n // 2]
            return med, self._kth_deviation((n - 1) // 2, med)
        med = (s[n // 2 - 1] + s[n // 2]) / 2
        lo = self._kth_deviation((n - 1) // 2, med)
        return med, (lo[0] + lo[1]) / 2

    def _kth_deviation(self, k: int, med: float) -> Any:
        """The k-th smallest ``|v - med|`` (0-based), and for even counts also the next one.

        The deviations are two ascending runs -- ``med - s[c-1], med - s[c-2], ...`` below
        the median and ``s[c] - med, s[c+1] - med, ...`` above it -- merged by finding the
        smallest ``i`` in ``[lo, hi)`` with ``below[i] >= above[k - i]`` (``hi`` if none; the
        test is monotone in ``i``). A window slides by one value between calls, so the split
        moves by a step or two: it is walked to from the last one (the same ``i`` a binary
        search finds, in fewer steps).
        """
        s, n = self.sorted, len(self.sorted)
        c = n // 2
        n_lo, n_hi = c, n - c
        lo, hi = max(0, k + 1 - n_hi), min(k + 1, n_lo)
        i = self._hint
        if i < lo:
            i = lo
        elif i > hi:
            i = hi
        if i > lo and med - s[c - i] >= s[c + k - i + 1] - med:  # the test holds at i - 1: walk down
            i -= 1
            while i > lo and med - s[c - i] >= s[c + k - i + 1] - med:
                i -= 1
        else:
            while i < hi and med - s[c - 1 - i] < s[c + k - i] - med:
                i += 1
        self._hint = i
        j = k + 1 - i
        kth = max(med - s[c - i] if i > 0 else -INF, s[c + j - 1] - med if j > 0 else -INF)
        if n % 2:
            return kth
        following = min(med - s[c - 1 - i] if i < n_lo else INF, s[c + j] - med if j < n_hi else INF)
        return kth, following

    def count_below(self, v: float) -> int:
        """How many finite values are smaller than ``v``."""
        return bisect_left(self.sorted, v)

    def kth_smallest(self, k: int) -> float:
        """The ``k``-th smallest finite value (1-based)."""
        return self.sorted[k - 1]

    def range(self) -> float:
        if self.nonfinite or not self.sorted:
            return math.nan
        return self.sorted[-1] - self.sorted[0]

    def __getstate__(self) -> dict[str, Any]:
        return {"size": self.size, "values": self.ring[self.head :] + self.ring[: self.head]}  # oldest first

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["size"], state["values"])  # type: ignore[misc]
