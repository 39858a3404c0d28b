"""The multi-region simulation (regions/simulation.py): deterministic, and its measures measure."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from m1.cli import app
from regions.health import HealthPolicy
from regions.simulation import SimConfig, simulate

NEVER = 1e9  # hours between episodes: none happens
QUIET = dict(crash_every_h=NEVER, isolate_every_h=NEVER, cut_every_h=NEVER, loss_every_h=NEVER,
             spike_every_h=NEVER, anomaly_every_h=NEVER, latency_change_every_h=NEVER)


def test_same_seed_same_report_other_seed_other_world():
    config = SimConfig(hours=0.2, seed=7, crash_every_h=0.1)
    first, again = simulate(config).summary(), simulate(config).summary()
    assert first == again
    assert simulate(SimConfig(hours=0.2, seed=8, crash_every_h=0.1)).summary() != first


def test_a_quiet_world_is_routed_exactly_and_never_fails_over():
    report = simulate(SimConfig(hours=0.1, geos=20, probe_noise=0.0, **QUIET))
    assert report.requests == 20 * 361 and report.accuracy == 1.0
    assert (report.failovers, report.incidents, report.decisions > 0) == (0, 0, True)


def test_crashes_are_detected_within_the_missed_heartbeats_and_cost_some_requests():
    policy = HealthPolicy()
    report = simulate(SimConfig(hours=0.5, seed=3, policy=policy, probe_noise=0.0, **{**QUIET, "crash_every_h": 0.25}))
    assert report.incidents >= 5 and report.undetected == 0
    low = (policy.down_missed - 1) * policy.heartbeat_interval  # the last beat may arrive up to an interval late
    # + up to one interval to the deciding region's next decision, one more for the others' views, ticks
    high = (policy.down_missed + 2) * policy.heartbeat_interval + 0.5
    minority = [d for d, peak in zip(report.detection_s, report.detection_peak) if peak >= 3]
    assert all(low <= d <= high for d, peak in zip(report.detection_s, report.detection_peak) if peak < 3)
    assert minority and min(minority) > 30  # 3 of 5 down: the 2 survivors wait for a majority (by design)
    assert report.false_failovers == 0
    assert report.misses["detection"] > 0 and report.misses["recovery"] > 0 and report.misses["latency"] == 0
    assert report.recoveries > 0


def test_two_regions_cut_apart_fail_each_other_over_and_it_is_counted_false():
    """The documented two-region split brain is what the false-failover measure sees."""
    report = simulate(SimConfig(regions=2, geos=5, hours=0.3, seed=2, **{**QUIET, "cut_every_h": 0.05}))
    assert report.false_failovers > 0 and report.false_failover_share == 1.0


def test_with_five_regions_the_quorum_overrules_what_one_cut_or_lossy_link_suggests():
    report = simulate(SimConfig(hours=1.0, seed=5, **{**QUIET, "cut_every_h": 2.0, "loss_every_h": 2.0}))
    assert report.local_failovers > 10  # the observers at the ends of a faulty link did see each other down
    assert report.failovers == 0 and report.decisions == 5 * 5 * 3600  # each region decides every second


def test_config_is_checked():
    with pytest.raises(ValueError):
        SimConfig(regions=11)
    with pytest.raises(ValueError):
        SimConfig(hours=0)


def test_m1_regions_simulate_reports_json():
    result = CliRunner().invoke(app, ["regions", "simulate", "--hours", "0.05", "--geos", "10", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["requests"] == 10 * 181 and 0.0 <= summary["accuracy"] <= 1.0
    table = CliRunner().invoke(app, ["regions", "simulate", "--hours", "0.05", "--geos", "10"])
    assert table.exit_code == 0 and "routing accuracy" in table.output
