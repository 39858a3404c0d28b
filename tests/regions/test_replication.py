"""Items 1-3 and 6 of issue #10 on two real local clusters with MirrorMaker 2 between them.

eu-west runs its agent alone (``m1 regions agent``); us-east runs a real worker with ``M1_REGION``,
whose agent also writes the region tables and whose detectors score the lag points. Asserted:
steady-state replication lag p99 under 1 s with the clock skew estimated; every data record and
every heartbeat produced in one region arrives in the other; the lag reaches the metrics path
(scored points in ``metric_points``) and the ``region_lag`` table; the worker's API serves its
agent's routing and verdict.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from m1.cli import app
from core.settings import Settings
from m1.worker_process import WorkerProcess
from regions.cluster import RegionSet
from regions.lag import RegionLag
from regions.processes import AgentProcess
from regions.watch import read_topic
from tests.helpers import isolated_settings, produce, scalar, start_worker, wait_for
from tests.regions.conftest import TWO, region_settings

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


def _steady_reports(settings: Settings, source: str, enough: int, timeout: float = 90.0) -> list[RegionLag]:
    """The region's own lag reports about ``source`` whose window holds only the steady state, once
    ``enough`` of them exist. The first beats wait seconds for MirrorMaker to find the new topic
    (refresh 2 s, and the feed's metadata refresh): the steady state begins once they have left
    the window (``M1_LAG_WINDOW_SECONDS``)."""
    def about(values: list[bytes]) -> list[RegionLag]:
        reports = [r for r in (msgspec.json.decode(v, type=RegionLag) for v in values)
                   if r.source == source and r.samples > 0]
        return [r for r in reports if r.ts > reports[0].ts + settings.lag_window_seconds + 1] if reports else []

    values = asyncio.run(read_topic(settings, settings.topic_region_lag, lambda vs: len(about(vs)) >= enough, timeout))
    return about(values)


@pytest.fixture(scope="module")
def running(two_regions: RegionSet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Settings]]:
    """eu-west's agent alone and us-east's worker with its agent; yields their client settings
    (the worker's are isolated: topics, store and API of its own)."""
    home = tmp_path_factory.mktemp("us-east-worker")
    east = isolated_settings(home, two_regions.kafka("us-east").bootstrap(), region="us-east", regions=TWO,
                             region_bootstraps=two_regions.bootstraps())
    west = AgentProcess(two_regions.settings, "eu-west", home / "agent-eu-west.log").start()
    worker: WorkerProcess | None = None
    try:
        worker = start_worker(east)
        yield region_settings(two_regions, "eu-west"), east
    finally:
        west.stop()
        if worker is not None:
            worker.stop()


def test_the_set_is_up_and_mirrors_both_ways(two_regions: RegionSet, tmp_path: Path) -> None:
    assert all(region.broker is not None for region in two_regions.status())
    assert two_regions.mirror.status() is not None
    assert "eu-west->us-east.enabled=true" in (two_regions.mirror.dir / "mm2.properties").read_text()
    result = CliRunner().invoke(app, ["regions", "status", "--window", "1"], env={"M1_HOME": str(two_regions.settings.home)})
    assert result.exit_code == 0, result.output
    assert "MirrorMaker 2" in result.output and "eu-west" in result.output
    result = CliRunner().invoke(app, ["kafka", "status", "--region", "us-east"], env={"M1_HOME": str(two_regions.settings.home)})
    assert result.exit_code == 0 and two_regions.kafka("us-east").bootstrap() in result.output


def test_steady_state_replication_lag_p99_is_under_a_second(running: tuple[Settings, Settings]) -> None:
    west, east = running
    for target, source in ((west, "us-east"), (east, "eu-west")):
        steady = _steady_reports(target, source, enough=8)
        assert len(steady) >= 8, f"{target.region} reported {len(steady)} steady measurements of {source}"
        assert max(r.lag_p99_ms for r in steady) < 1000.0, steady
        assert all(r.missing == 0 for r in steady)
        known = [r for r in steady if r.skew_known]
        assert known, "the reverse direction's report never arrived: no skew estimate"
        assert all(r.lag_corrected_ms == pytest.approx(r.lag_p50_ms - r.skew_ms) for r in known)
        assert any(r.offset_lag >= 0 for r in steady)  # MirrorMaker's offset lag was measured


def test_nothing_replicated_is_lost(two_regions: RegionSet, running: tuple[Settings, Settings]) -> None:
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    sent = {}
    for region in TWO:
        values = [f"{region}-{i}".encode() for i in range(2000)]
        produce(region_settings(two_regions, region), [(None, v) for v in values], topic=topic)
        sent[region] = set(values)
    for source, target in (("eu-west", "us-east"), ("us-east", "eu-west")):
        target_settings = region_settings(two_regions, target)
        mirrored: set[bytes] = set()

        def arrived(source: str = source, target_settings: Settings = target_settings,
                    mirrored: set[bytes] = mirrored) -> bool:
            mirrored.update(asyncio.run(read_topic(target_settings, f"{source}.{topic}", timeout=5)))
            return sent[source] <= mirrored

        assert wait_for(arrived, timeout=60, interval=1), f"{len(sent[source] - mirrored)} records of {source} missing"
        assert not {v for v in mirrored if not v.startswith(source.encode())}  # nothing foreign mirrored in
        beats = set(asyncio.run(read_topic(region_settings(two_regions, source), "region_heartbeats", timeout=5)))

        def beats_arrived(source: str = source, target_settings: Settings = target_settings,
                          beats: set[bytes] = beats) -> bool:
            return beats <= set(asyncio.run(read_topic(target_settings, f"{source}.region_heartbeats", timeout=5)))

        assert len(beats) > 5
        assert wait_for(beats_arrived, timeout=30, interval=1), f"heartbeats of {source} missing in {target_settings.region}"


def test_lag_reaches_the_detectors_and_the_region_lag_table(running: tuple[Settings, Settings]) -> None:
    _, east = running
    assert wait_for(lambda: scalar(east, "SELECT count() FROM region_lag FINAL WHERE target = 'us-east' "
                                         "AND source = 'eu-west' AND samples > 0") >= 3, timeout=60)
    assert wait_for(lambda: scalar(east, "SELECT count() FROM region_lag FINAL WHERE target = 'eu-west'") >= 3,
                    timeout=60)  # eu-west's reports, mirrored
    assert wait_for(lambda: scalar(east, "SELECT count() FROM metric_points FINAL WHERE service = 'replication' "
                                         "AND metric = 'lag_ms' AND labels['source'] = 'eu-west'") >= 3, timeout=60)
    assert scalar(east, "SELECT countIf(skew_known = 1 AND offset_lag >= 0) FROM region_lag FINAL "
                        "WHERE target = 'us-east'") > 0


def test_the_worker_serves_its_agents_decisions(running: tuple[Settings, Settings]) -> None:
    _, east = running

    def get(path: str) -> dict:
        request = urllib.request.Request(f"http://127.0.0.1:{east.web_port}{path}",
                                         headers={"Authorization": f"Bearer {east.api_key.get_secret_value()}"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.load(reply)

    def routed_to_both() -> bool:  # a heartbeat late on a loaded machine leaves a region out for a moment
        route = get("/v1/route?geo=eu-west")
        return route["regions"] == ["eu-west", "us-east"] and route["decided_by"] == "us-east"

    assert wait_for(routed_to_both, timeout=30, interval=1), get("/v1/route?geo=eu-west")
    states = {r["name"]: r["state"] for r in get("/v1/regions")["regions"]}
    assert set(states) == {"eu-west", "us-east"} and "down" not in states.values()  # degraded if the machine lags
