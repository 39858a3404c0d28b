"""Which operations own end-to-end latency over a window of traces.

Every nanosecond of a trace's end-to-end latency belongs to exactly one critical-path
segment, so summing critical-path self time per operation (service, span name) over all
traces splits the window's total latency between operations; an operation's share is its
part of that total. Operations that are busy but never on the critical path (parallel
work that finishes early) get no share: speeding them up would not help.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from traces.critical_path import critical_path, find_root
from traces.model import Span


@dataclass(frozen=True)
class Bottleneck:
    """An operation's part of the window's end-to-end latency."""

    service: str
    operation: str
    critical_ns: int  # critical-path self time summed over the window's traces
    share: float  # critical_ns / total end-to-end latency of the window, in [0, 1]
    traces: int  # traces in which the operation is on the critical path


def rank_bottlenecks(traces: Mapping[str, Sequence[Span]]) -> list[Bottleneck]:
    """All operations on any critical path, largest share first."""
    critical: dict[tuple[str, str], int] = defaultdict(int)
    seen_in: dict[tuple[str, str], set[str]] = defaultdict(set)
    total = 0
    for trace_id, spans in traces.items():
        root = find_root(spans)
        if root is None:
            continue
        total += root.duration_ns
        for segment in critical_path(spans):
            critical[segment.span.operation] += segment.duration_ns
            seen_in[segment.span.operation].add(trace_id)
    ranked = [
        Bottleneck(service, name, ns, ns / total if total else 0.0, len(seen_in[(service, name)]))
        for (service, name), ns in critical.items()
    ]
    return sorted(ranked, key=lambda b: (-b.critical_ns, b.service, b.operation))
