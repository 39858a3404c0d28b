"""Critical path and self time of one trace.

The critical path is the chain of work that determines the trace's end-to-end latency.
It is found by walking back in time from the root's end: within a span, the child that
finished last (at or before the current point) is what the span was waiting for; the gap
after that child is the span's own work; then the walk continues inside the child and,
after it, from the child's start, looking for the child that finished before that.
Children running in parallel with the chosen one, and finishing earlier, are not on the
path: they did not delay anything.

Children are first clipped to their parent's interval (as Jaeger does): a child that
appears to end after its parent, from clock skew or fire-and-forget work, counts only
up to the parent's end. A trace's root is its span whose parent is not in the trace;
when there are several (lost spans), the longest one is used.

Self time is a span's duration minus the union of its (clipped) children's intervals:
the time no child was running, whether or not the span is on the critical path.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from traces.model import Span


@dataclass(frozen=True)
class Segment:
    """A stretch [start_ns, end_ns) of the critical path during which ``span`` did its own work."""

    span: Span
    start_ns: int
    end_ns: int

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


def find_root(spans: Sequence[Span]) -> Span | None:
    """The trace's root: the longest span whose parent is not in the trace; None if no spans."""
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if s.parent_span_id not in ids]
    return max(roots, key=lambda s: (s.duration_ns, -s.start_ns), default=None)


def children_by_parent(spans: Sequence[Span]) -> dict[str, list[Span]]:
    """Span id -> its child spans."""
    children: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        if span.parent_span_id:
            children[span.parent_span_id].append(span)
    return children


def critical_path(spans: Sequence[Span]) -> list[Segment]:
    """Critical-path segments of one trace, in time order; their lengths sum to the root's duration."""
    root = find_root(spans)
    if root is None:
        return []
    segments: list[Segment] = []
    _walk(root, root.start_ns, root.end_ns, children_by_parent(spans), segments)
    return sorted(segments, key=lambda seg: seg.start_ns)


def _walk(span: Span, lo: int, hi: int, children: dict[str, list[Span]], out: list[Segment]) -> None:
    """Explain [lo, hi) of ``span`` (its interval clipped by its ancestors) as path segments."""
    cursor = hi
    clipped = [(max(c.start_ns, lo), min(c.end_ns, hi), c) for c in children.get(span.span_id, ())]
    for start, end, child in sorted(clipped, key=lambda t: t[1], reverse=True):
        if end > cursor or start >= end:
            continue  # overlaps the part already explained, or lies outside the parent
        if cursor > end:
            out.append(Segment(span, end, cursor))
        _walk(child, start, end, children, out)
        cursor = start
    if cursor > lo:
        out.append(Segment(span, lo, cursor))


def self_times(spans: Sequence[Span]) -> dict[str, int]:
    """Span id -> self time in ns: duration minus the union of its children's clipped intervals."""
    children = children_by_parent(spans)
    result = {}
    for span in spans:
        intervals = sorted(
            (max(c.start_ns, span.start_ns), min(c.end_ns, span.end_ns)) for c in children.get(span.span_id, ())
        )
        covered, reach = 0, span.start_ns
        for start, end in intervals:
            start = max(start, reach)
            if end > start:
                covered += end - start
                reach = end
        result[span.span_id] = max(0, span.duration_ns - covered)
    return result
