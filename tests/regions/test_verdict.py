"""The shared verdict (regions/verdict.py): quorum, partitions and split brain, determinism."""

from __future__ import annotations

import itertools

import msgspec
import pytest

from regions.health import HealthState, RegionView
from regions.verdict import VerdictBoard, decode_view, decide, encode_view
from schemas.events import EventDecoder, RegionEvent, encode

H, D, X = HealthState.HEALTHY, HealthState.DEGRADED, HealthState.DOWN
FIVE = ["a", "b", "c", "d", "e"]
T0 = 1_767_225_600.0  # 2026-01-01: a region_event/1 must carry a plausible time


def view(observer: str, at: float, down=(), degraded=(), regions=FIVE) -> RegionView:
    return RegionView(observer, at, {r: X if r in down else D if r in degraded else H for r in regions})


def down_set(regions, views) -> set[str]:
    return {r for r, s in decide(regions, {v.observer: v for v in views}).states.items() if s is X}


def test_a_crash_seen_by_every_survivor_is_a_failover_everywhere_with_the_votes():
    regions = ["a", "b", "c"]
    boards = {o: VerdictBoard(o, regions) for o in ("a", "b")}
    views = [view("a", 5.0, down="c", regions=regions), view("b", 5.2, down="c", regions=regions),
             view("c", 1.0, regions=regions)]  # c's last view before it died
    events = {}
    for o, board in boards.items():
        for v in views:
            board.offer(v)
        events[o] = board.decide(T0)
    for o, (event,) in events.items():
        assert (event.region, event.kind, event.observer) == ("c", "failover", o)
        assert (event.previous, event.state) == ("healthy", "down")
        assert event.views == {"a": "down", "b": "down", "c": "healthy"}
        assert event.reason == "2 of 2 observers (a, b) see it down; quorum 2"
        assert event.tenant == "platform" and event.ts == T0
        # a valid region_event/1 for the topic and the table
        assert EventDecoder(RegionEvent).decode(encode(event)) == event


def test_one_observer_cut_off_from_a_region_cannot_fail_it_over():
    views = [view("a", 1.0, down="e")] + [view(o, 1.0) for o in "bcde"]
    assert down_set(FIVE, views) == set()
    views[1] = view("b", 2.0, down="e")  # two of four: still short of the quorum of 3
    assert down_set(FIVE, views) == set()
    views[2] = view("c", 2.0, down="e")
    assert down_set(FIVE, views) == {"e"}


def test_a_minority_partition_fails_over_nobody_and_the_majority_fails_it_over():
    before = [view(o, 1.0) for o in FIVE]  # everyone's last views before {a, b} | {c, d, e}
    minority = [view("a", 9.0, down="cde"), view("b", 9.0, down="cde")] + before[2:]
    majority = before[:2] + [view(o, 9.0, down="ab") for o in "cde"]
    assert down_set(FIVE, minority) == set()
    assert down_set(FIVE, majority) == {"a", "b"}
    isolated = [view("a", 9.0, down="bcde")] + before[1:]  # a alone, sees nobody
    assert down_set(FIVE, isolated) == set()


def test_an_even_split_fails_over_nobody_on_either_side():
    four = FIVE[:4]
    before = [view(o, 1.0, regions=four) for o in four]
    left = [view("a", 9.0, down="cd", regions=four), view("b", 9.0, down="cd", regions=four)] + before[2:]
    right = before[:2] + [view("c", 9.0, down="ab", regions=four), view("d", 9.0, down="ab", regions=four)]
    assert down_set(four, left) == set() and down_set(four, right) == set()


def test_two_regions_split_brain_each_side_fails_the_other_over():
    two = ["a", "b"]
    before = [view(o, 1.0, regions=two) for o in two]
    assert down_set(two, [view("a", 9.0, down="b", regions=two), before[1]]) == {"b"}
    assert down_set(two, [before[0], view("b", 9.0, down="a", regions=two)]) == {"a"}


def test_after_one_region_is_down_the_survivors_judge_a_second_failure():
    three = ["a", "b", "c"]
    c_dead = [view("a", 5.0, down="c", regions=three), view("b", 5.0, down="c", regions=three),
              view("c", 1.0, regions=three)]
    assert down_set(three, c_dead) == {"c"}
    c_dead[0] = view("a", 4.0, down="c", regions=three)  # a's last view; then a dies too
    c_dead[1] = view("b", 9.0, down="ac", regions=three)
    assert down_set(three, c_dead) == {"a", "c"}
    # but a lone survivor of a simultaneous double failure cannot tell it from its own isolation
    assert down_set(three, [view("b", 9.0, down="ac", regions=three)] + [view(o, 1.0, regions=three) for o in "ac"]) == set()


def test_degraded_by_self_report_or_by_quorum():
    views = [view("a", 1.0, degraded="a")] + [view(o, 1.0) for o in "bcde"]
    verdict = decide(FIVE, {v.observer: v for v in views})
    assert verdict.states["a"] is D and verdict.reasons["a"] == "a reports itself degraded"
    views = [view(o, 2.0, degraded="b" if o in "cd" else "", down="b" if o == "e" else "") for o in FIVE]
    verdict = decide(FIVE, {v.observer: v for v in views})
    assert verdict.states["b"] is D
    assert verdict.reasons["b"] == "3 of 4 observers (c, d, e) see it degraded or worse; quorum 3"


def test_same_views_same_verdict_whatever_the_arrival_order():
    views = [view("a", 1.0), view("a", 3.0, down="e"), view("b", 2.0, down="e"), view("b", 4.0),
             view("c", 3.0, down="e"), view("d", 5.0, down="e", degraded="c"), view("e", 1.0)]
    verdicts = set()
    for order in itertools.permutations(views):
        board = VerdictBoard("x", FIVE)
        for v in order:
            board.offer(v)
        board.decide(9.0)
        verdicts.add(tuple(board.verdict.states.items()))
    assert verdicts == {(("a", H), ("b", H), ("c", H), ("d", H), ("e", X))}


def test_offer_keeps_only_newer_views_of_configured_observers():
    board = VerdictBoard("a", FIVE)
    assert board.offer(view("b", 2.0))
    assert not board.offer(view("b", 2.0, down="e"))  # same time: the first is kept
    assert not board.offer(view("b", 1.0, down="e"))
    assert not board.offer(view("z", 9.0))
    assert board.views["b"].states["e"] is H


def test_recovery_events_when_the_quorum_is_lost():
    board = VerdictBoard("a", ["a", "b", "c"])
    for o in "ab":
        board.offer(view(o, 1.0, down="c", regions=["a", "b", "c"]))
    assert [e.kind for e in board.decide(1.0)] == ["failover"]
    assert board.decide(2.0) == []  # no change, no event
    board.offer(view("b", 3.0, regions=["a", "b", "c"]))
    [event] = board.decide(3.0)
    assert (event.region, event.kind, event.previous, event.state) == ("c", "recovery", "down", "healthy")


def test_views_round_trip_and_bad_ones_are_refused():
    v = view("a", 1.5, down="c", degraded="b")
    assert decode_view(encode_view(v)) == v
    with pytest.raises(msgspec.ValidationError):
        decode_view(b'{"schema":"region_view/1","observer":"a","at":1.0,"states":{"b":"gone"}}')
    with pytest.raises(msgspec.ValidationError):
        decode_view(b'{"schema":"region_view/1","observer":"a","at":1.0,"states":{},"extra":1}')
