"""Critical path, self time and bottleneck shares on hand-made traces with known answers."""

from __future__ import annotations

import pytest

from traces.bottlenecks import rank_bottlenecks
from traces.critical_path import critical_path, find_root, self_times
from traces.model import Span, group_traces


def span(span_id: str, parent: str, start: int, end: int, service: str = "svc", trace: str = "t1") -> Span:
    return Span(trace, span_id, parent, service, span_id.upper(), start, end)


# A [0,100] has children B [10,40], C [20,90] and D [95,150] (async: outlives A).
# C has overlapping children E [30,60] and F [50,80].
TRACE = [
    span("a", "", 0, 100), span("b", "a", 10, 40), span("c", "a", 20, 90),
    span("d", "a", 95, 150), span("e", "c", 30, 60), span("f", "c", 50, 80),
]


def test_critical_path_walks_back_through_last_finishing_children() -> None:
    path = [(seg.span.span_id, seg.start_ns, seg.end_ns) for seg in critical_path(TRACE)]
    # D is clipped to A's end; E and B finished while later work (F, C) was already running: off the path.
    assert path == [("a", 0, 20), ("c", 20, 50), ("f", 50, 80), ("c", 80, 90), ("a", 90, 95), ("d", 95, 100)]
    assert sum(seg.duration_ns for seg in critical_path(TRACE)) == 100


def test_self_time_subtracts_union_of_children() -> None:
    assert self_times(TRACE) == {"a": 15, "b": 30, "c": 20, "d": 55, "e": 30, "f": 30}


def test_sequential_children_are_all_on_the_path() -> None:
    trace = [span("r", "", 0, 10), span("x", "r", 1, 4), span("y", "r", 4, 9)]
    path = [(seg.span.span_id, seg.start_ns, seg.end_ns) for seg in critical_path(trace)]
    assert path == [("r", 0, 1), ("x", 1, 4), ("y", 4, 9), ("r", 9, 10)]


def test_root_is_longest_parentless_span_and_empty_trace_has_no_path() -> None:
    orphan = span("o", "missing", 0, 500)
    assert find_root([*TRACE, orphan]) is orphan
    assert find_root([]) is None
    assert critical_path([]) == []


def test_bottleneck_shares_split_total_latency() -> None:
    other = [span("r", "", 0, 300, "front", "t2"), span("s", "r", 0, 200, "db", "t2")]
    ranked = rank_bottlenecks(group_traces([*TRACE, *other]))
    by_op = {(b.service, b.operation): b for b in ranked}
    # t1: 100 ns all in "svc"; t2: 200 ns in db, 100 ns in front.
    assert by_op[("db", "S")].critical_ns == 200
    assert by_op[("db", "S")].share == pytest.approx(200 / 400)
    assert by_op[("svc", "A")].critical_ns == 25 and by_op[("svc", "C")].critical_ns == 40
    assert ranked[0].operation == "S"
    assert sum(b.share for b in ranked) == pytest.approx(1.0)


def test_replayed_span_counted_once() -> None:
    traces = group_traces([*TRACE, TRACE[1]])
    assert len(traces["t1"]) == len(TRACE)
