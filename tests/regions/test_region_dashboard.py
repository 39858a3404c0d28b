"""The regions dashboard (dashboards/m1-regions.json): every panel's SQL on the real engine, over rows
the agent's own code makes (lag tracker reports, verdict events, routing tables, through
regions/sink.py), a failover and recovery of eu-west included. tests/test_dashboards.py runs its
generic checks on it too."""

from __future__ import annotations

import time
from collections.abc import Iterator

import msgspec
import pytest

from core.settings import Settings
from regions.health import HealthState, RegionView
from regions.heartbeat import heartbeat
from regions.lag import LagTracker
from regions.routing import Route, Router, RoutingTable
from regions.sink import RegionRows
from regions.verdict import VerdictBoard
from sinks.clickhouse import Store, connect
from tests.test_dashboards import panel_rows

REGIONS = ["ap-south", "eu-west", "us-east"]
H, D = HealthState.HEALTHY, HealthState.DOWN


def _decisions(rows: RegionRows, t0: float) -> None:
    """us-east's agent: beats from eu-west until it dies at t0+10 and comes back at t0+20."""
    tracker = LagTracker("us-east", window_seconds=10.0, since=t0)
    west = LagTracker("eu-west", window_seconds=10.0, since=t0)  # its reports give us-east the skew
    board, router = VerdictBoard("us-east", REGIONS), Router.for_regions(REGIONS)
    table: RoutingTable | None = None
    for second in range(30):
        now = t0 + second
        up = not 10 <= second < 20
        if up:
            tracker.beat(heartbeat("eu-west", second, now - 0.03), now)
            west.beat(heartbeat("us-east", second, now - 0.01), now)
            for report in west.reports(now, {}):
                tracker.remote_report(report)
        for observer in ("us-east", "ap-south"):
            board.offer(RegionView(observer, now, {"ap-south": H, "us-east": H, "eu-west": H if up else D}))
        for event in board.decide(now):
            rows.event(event)
        previous, table = table, router.route(board.verdict.states, now, table)
        if table is not previous:
            for _, value in table.records(since=previous):
                rows.route("us-east", msgspec.json.decode(value, type=Route))
        for report in tracker.reports(now, {"eu-west": 0 if up else -1}):
            rows.lag(report)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = Store(connect(Settings(home=tmp_path_factory.mktemp("region-dashboard"))))
    store.migrate()
    rows = RegionRows()
    _decisions(rows, time.time() - 120)
    assert rows.flush(store, time.time()) > 0
    yield store
    store.close()


def test_every_regions_panel_shows_the_agents_rows(store: Store) -> None:
    _, rows = panel_rows("m1-regions.json", store)  # none may be empty
    health = {(region, observer): (state, last) for region, observer, state, last, *_ in rows["1A"]}
    assert health[("eu-west", "us-east")] == ("healthy", "recovery")  # failed over, then recovered
    assert {(geo, regions[0]) for geo, _, regions, *_ in rows["2A"]} == {(r, r) for r in REGIONS}
    assert all(p99 < 1000 for _, _, p99 in rows["3A"])
    assert all(corrected == pytest.approx(20.0) and skew == pytest.approx(10.0) for _, _, corrected, skew in rows["4A"])
    kinds = [kind for _, region, kind, *_ in rows["7A"] if region == "eu-west"]
    assert kinds == ["recovery", "failover"]  # newest first
    missed = {(source, target): missing for source, target, _, missing, *_ in rows["6A"]}
    assert missed[("eu-west", "us-east")] == 10  # the beats of the ten dead seconds
