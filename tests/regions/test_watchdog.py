"""The MirrorMaker 2 watchdog (regions/watchdog.py): its rules, then on the shared three real regions,
a wedged MirrorMaker (SIGSTOP: the pid lives on, its flows deliver nothing) is detected and
restarted by the watchdog that supervises the set, the restart is counted in its status, and every
record produced meanwhile arrives."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from m1.cli import app
from core.kafka.local_broker import _pid_alive
from core.settings import Settings, get_settings
from regions.cluster import RegionSet
from regions.watchdog import FlowClock, RestartBudget
from tests.regions.conftest import WATCHDOG_STALL_S
from tests.regions.mesh import NAMES, Mesh, Tail, events, produce

WATCHDOG_PROBE_S = 2.0  # m1 regions watchdog probes every 2 s (MirrorWatchdog's probe_s)


def test_a_flow_is_stuck_only_while_its_source_produces_and_both_ends_answer() -> None:
    clock = FlowClock(stall_s=10.0, grace_s=0.0)
    assert not clock.observe(100, 40, now=0.0)
    assert not clock.observe(100, 40, now=20.0)  # idle source: nothing to deliver, not stuck
    assert clock.observe(101, 40, now=20.5)  # the source moved, the mirror has not for 20 s
    assert not clock.observe(None, 40, now=21.0)  # source unreachable: a region's failure, clock reset
    assert not clock.observe(110, 40, now=30.0)
    assert not clock.observe(111, 40, now=35.0)  # the stall counts again from the reset
    assert clock.observe(112, 40, now=40.0)
    assert not clock.observe(120, 41, now=41.0)  # the mirror moved


def test_a_flow_that_never_moved_gets_the_grace_period_then_the_stall_time() -> None:
    clock = FlowClock(stall_s=10.0, grace_s=60.0)
    assert not any(clock.observe(100 + t, 0, now=float(t)) for t in range(0, 60, 5))  # starting up
    assert clock.observe(160, 0, now=60.0)  # never delivered within the grace: stuck
    clock.restarted(100.0)
    assert not clock.observe(200, 0, now=101.0) and not clock.observe(201, 1, now=102.0)  # it moved
    assert clock.observe(220, 1, now=112.0)  # from now on the stall time alone


def test_restarts_back_off_and_are_bounded() -> None:
    budget = RestartBudget(backoff_s=10.0, max_backoff_s=25.0, max_restarts=4, window_s=100.0)
    allowed = []
    for now in range(0, 100):
        if budget.allowed(float(now)):
            budget.record(float(now))
            allowed.append(now)
    assert allowed == [0, 10, 30, 55]  # waits of 10, 20, then 25 (the cap); then the budget is spent
    assert budget.exhausted(99.0) and not budget.exhausted(101.0)  # the window slides


@pytest.mark.slow
@pytest.mark.kafka
async def test_a_wedged_mirrormaker_is_restarted_and_nothing_is_lost(regions_mesh: Mesh) -> None:
    target = "us-east"
    sources = [name for name in NAMES if name != target]
    before = regions_mesh.watchdog_status(target).restarts
    wedged = regions_mesh.mirror_pid(target)
    assert wedged is not None
    stopped_at = time.time()
    os.kill(wedged, signal.SIGSTOP)  # alive by its pid, delivering nothing
    topic = f"wedged-{uuid.uuid4().hex[:8]}"
    sent = {source: {f"{source}-{i}".encode() for i in range(200)} for source in sources}
    for source in sources:
        await produce(regions_mesh.bootstraps[source], topic, sent[source])

    deadline = time.monotonic() + WATCHDOG_STALL_S + 120
    while regions_mesh.watchdog_status(target).restarts == before and time.monotonic() < deadline:
        await asyncio.sleep(1.0)
    status = regions_mesh.watchdog_status(target)
    assert status.restarts == before + 1, "the watchdog did not restart the wedged MirrorMaker"
    restart = status.last_restarts[-1]
    assert restart["mirror"].endswith(f"mirror-{target}")
    assert set(restart["flows"]) <= {f"{s}->{target}" for s in sources} and restart["flows"]
    # not before the stall time, counted from the last probe that saw the mirror move: it may come one
    # probe interval (2 s) before the SIGSTOP when the loaded mirror delivered nothing in between (seen: 19.85 s)
    assert restart["at"] - stopped_at >= WATCHDOG_STALL_S - WATCHDOG_PROBE_S
    print(f"wedged at {stopped_at:.1f}, restarted after {restart['at'] - stopped_at:.1f} s")  # noqa: T201

    for source in sources:  # the flows record again, and nothing produced meanwhile is lost
        async with Tail(regions_mesh.bootstraps[target], f"{source}.{topic}", bytes) as tail:
            await tail.until(lambda _, source=source: sent[source] <= set(tail.seen), 120)
        assert sent[source] <= set(tail.seen), f"{source} -> {target} lost records"
    new = regions_mesh.mirror_pid(target)
    assert new is not None and new != wedged and not _pid_alive(wedged)
    async with events(regions_mesh.bootstraps[target]) as tail:  # only the target lost the others: a minority
        await tail.drain()
    assert [e for e in tail.seen if e.ts >= stopped_at and e.kind == "failover"] == []


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    """The CLI reads M1_HOME anew (get_settings is cached per process)."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("fresh_settings")
def test_m1_regions_status_shows_the_watchdogs_restarts_and_giving_up(tmp_path: Path) -> None:
    region_set = RegionSet(Settings(home=tmp_path), ["eu-west", "us-east"])
    region_set.record()
    region_set.watchdog_file.parent.mkdir(parents=True)
    region_set.watchdog_file.write_text(json.dumps({"restarts": 3, "gave_up": False, "stuck": ["eu-west->us-east"],
                                                    "last_restarts": [], "probed_at": 1.0}))
    result = CliRunner().invoke(app, ["regions", "status", "--window", "0.1"], env={"M1_HOME": str(tmp_path)})
    assert "3 restart(s)" in result.output and "stuck: eu-west->us-east" in result.output
    region_set.watchdog_file.write_text(json.dumps({"restarts": 5, "gave_up": True}))
    result = CliRunner().invoke(app, ["regions", "status", "--window", "0.1"], env={"M1_HOME": str(tmp_path)})
    assert "gave up" in result.output and "5 restart(s)" in result.output and result.exit_code == 1
