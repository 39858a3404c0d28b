"""Severity of a score that crossed the anomaly threshold.

A score is ``critical`` when its tail probability ``1 - score`` is at least ten times
smaller than the threshold's, else ``warning``.

>>> severity_of(0.9995, threshold=0.999), severity_of(0.99995, threshold=0.999)
('warning', 'critical')
"""

from __future__ import annotations


def severity_of(score: float, threshold: float) -> str:
    """``'critical'`` or ``'warning'`` for a score at or above ``threshold``."""
    return "critical" if (1.0 - score) <= (1.0 - threshold) / 10.0 else "warning"
