"""Calibrated thresholds: turn a detector score into an anomaly event severity.

Scores of the calibrated detectors are comparable across series, so one pair of
thresholds serves every series. The defaults sit at the standard-profile NAB
optimum of the ensemble (0.584, see docs/benchmarks-nab.md) for ``warning`` and
higher for ``critical``.

>>> th = Thresholds(warning=0.6, critical=0.8)
>>> [th.severity(s) for s in (0.1, 0.6, 0.79, 0.95)]
[None, 'warning', 'warning', 'critical']
>>> severity(0.9)
'critical'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["warning", "critical"]


@dataclass(frozen=True)
class Thresholds:
    """``warning <= score < critical`` is a warning, ``score >= critical`` is critical."""

    warning: float = 0.6
    critical: float = 0.75

    def __post_init__(self) -> None:
        if not 0.0 <= self.warning <= self.critical <= 1.0:
            raise ValueError(f"need 0 <= warning <= critical <= 1, got {self.warning}, {self.critical}")

    def severity(self, score: float) -> Severity | None:
        """The severity of ``score``, or None below the warning threshold (or NaN)."""
        if score >= self.critical:
            return "critical"
        if score >= self.warning:
            return "warning"
        return None


DEFAULT = Thresholds()


def severity(score: float, thresholds: Thresholds = DEFAULT) -> Severity | None:
    """Shorthand for ``thresholds.severity(score)``."""
    return thresholds.severity(score)
