"""Routing tables (regions/routing.py): order, versions, the compacted topic's records, and a
route change within the same decision as the failover or recovery that causes it."""

from __future__ import annotations

import msgspec
import pytest

from regions.health import HealthState, RegionView
from regions.routing import Route, Router, RoutingTable
from regions.verdict import VerdictBoard

H, D, X = HealthState.HEALTHY, HealthState.DEGRADED, HealthState.DOWN
PROXIMITY = {
    "de": {"eu-west": 12.0, "us-east": 90.0, "ap-south": 130.0},
    "us": {"eu-west": 85.0, "us-east": 8.0, "ap-south": 220.0},
    "in": {"eu-west": 120.0, "us-east": 210.0, "ap-south": 14.0},
}
ALL_UP = {"eu-west": H, "us-east": H, "ap-south": H}


def test_order_by_proximity_leaves_down_regions_out_and_keeps_degraded_in_place():
    table = Router(PROXIMITY).route({**ALL_UP, "us-east": D, "ap-south": X}, decided_at=1.0)
    assert table.routes == {"de": ["eu-west", "us-east"], "in": ["eu-west", "us-east"], "us": ["us-east", "eu-west"]}
    assert Router(PROXIMITY).route({"eu-west": H}, 1.0).regions_for("us") == ["eu-west"]  # unknown state: down
    with pytest.raises(KeyError):
        table.regions_for("mars")


def test_version_moves_only_when_a_route_changes():
    router = Router(PROXIMITY)
    t1 = router.route(ALL_UP, 1.0)
    assert router.route({**ALL_UP, "us-east": D}, 2.0, previous=t1) is t1  # degraded: same routes
    t2 = router.route({**ALL_UP, "us-east": X}, 3.0, previous=t1)
    t3 = router.route(ALL_UP, 4.0, previous=t2)
    assert (t1.version, t2.version, t3.version) == (1, 2, 3) and t3.routes == t1.routes
    assert [k for k, _ in t2.records(since=t1)] == [b"de", b"in", b"us"]  # us-east was 2nd for de and in
    t4 = router.route({**ALL_UP, "ap-south": X}, 5.0, previous=t3)
    assert [k for k, _ in t4.records(since=t3)] == [b"de", b"in", b"us"]


def test_measured_latency_is_smoothed_ignores_a_lone_outlier_and_follows_a_level_shift():
    router = Router(PROXIMITY, smoothing=0.5, jump=0.15)
    router.measure("de", "us-east", 10.0)  # the first measurement is taken whole: us-east now nearest
    assert router.route(ALL_UP, 1.0).regions_for("de") == ["us-east", "eu-west", "ap-south"]
    router.measure("de", "eu-west", 20.0)
    router.measure("de", "us-east", 11.0)  # within 15 %: smoothed
    assert router.cost("de", "us-east") == 10.5
    router.measure("de", "us-east", 40.0)  # far off: held
    router.measure("de", "us-east", 10.5)
    router.measure("de", "us-east", 40.0)  # far off again, but not twice in a row
    assert router.cost("de", "us-east") == 10.5
    router.measure("de", "us-east", 5.0)  # far off to the other side: no shift either
    assert router.route(ALL_UP, 2.0).regions_for("de") == ["us-east", "eu-west", "ap-south"]
    router.measure("de", "us-east", 42.0)
    router.measure("de", "us-east", 41.0)  # twice in a row, the same side: the route changed
    assert router.cost("de", "us-east") == 41.0
    assert router.route(ALL_UP, 3.0).regions_for("de") == ["eu-west", "us-east", "ap-south"]
    with pytest.raises(KeyError):
        router.measure("de", "mars", 1.0)
    with pytest.raises(ValueError):
        Router(PROXIMITY, smoothing=0.0)


def test_records_round_trip_through_compaction_order():
    router = Router(PROXIMITY)
    t1 = router.route(ALL_UP, 1.0)
    t2 = router.route({**ALL_UP, "eu-west": X}, 2.0, previous=t1)
    topic = [v for _, v in t1.records()] + [v for _, v in t2.records(since=t1)]
    assert RoutingTable.from_records(topic) == t2
    # a compacted topic may hand back the newest values in any order: the version decides
    assert RoutingTable.from_records(list(reversed(topic))) == t2
    assert RoutingTable.from_records([]) == RoutingTable(0, 0.0, {})
    assert msgspec.json.decode(topic[0], type=Route) == Route("de", ["eu-west", "us-east", "ap-south"], 1, 1.0)
    with pytest.raises(msgspec.ValidationError):
        RoutingTable.from_records([b'{"schema":"route/1","geo":"de","regions":"eu-west","version":1,"decided_at":1}'])


def test_routing_changes_within_the_decision_that_fails_a_region_over_and_back():
    """The agent's loop: offer views, decide, route with the verdict — one decision moves the routes."""
    regions = sorted(ALL_UP)
    board, router = VerdictBoard("us-east", regions), Router(PROXIMITY)
    table = router.route(board.verdict.states, 0.0)

    def decision(now: float, eu_west: HealthState) -> tuple[list[str], RoutingTable]:
        nonlocal table
        for o in ("us-east", "ap-south"):
            board.offer(RegionView(o, now, {**ALL_UP, "eu-west": eu_west}))
        events = board.decide(now)
        table = router.route(board.verdict.states, now, previous=table)
        return [e.kind for e in events], table

    assert decision(1.0, H) == ([], table) and table.version == 1
    kinds, t = decision(2.0, X)
    assert kinds == ["failover"] and t.version == 2 and t.decided_at == 2.0
    assert t.regions_for("de") == ["us-east", "ap-south"]
    kinds, t = decision(3.0, H)
    assert kinds == ["recovery"] and t.version == 3 and t.regions_for("de") == ["eu-west", "us-east", "ap-south"]


def test_without_configured_proximity_each_region_is_a_geography():
    table = Router.for_regions(["us-east", "eu-west"]).route({"eu-west": X, "us-east": H}, 1.0)
    assert table.routes == {"eu-west": ["us-east"], "us-east": ["us-east"]}
