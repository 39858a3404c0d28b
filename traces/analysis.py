"""One call from spans to a bottleneck report: group into traces, rank operations, apply the rules."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from traces.bottlenecks import Bottleneck, rank_bottlenecks
from traces.model import Span, group_traces
from traces.rules import Suggestion, Thresholds, suggest


@dataclass(frozen=True)
class Report:
    """The analysis of one window: how many traces, their total latency, top operations, suggestions."""

    traces: int
    total_ns: int  # sum of the traces' end-to-end latencies
    bottlenecks: list[Bottleneck]
    suggestions: list[Suggestion]


def analyze(spans: Iterable[Span], limit: int = 10, thresholds: Thresholds = Thresholds()) -> Report:
    """Bottlenecks (top ``limit`` by critical-path share) and suggestions for a window of spans."""
    traces = group_traces(spans)
    ranked = rank_bottlenecks(traces)
    total = sum(b.critical_ns for b in ranked)
    return Report(len(traces), total, ranked[:limit], suggest(traces, ranked, thresholds))
