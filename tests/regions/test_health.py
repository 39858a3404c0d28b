"""The local health state machine (regions/health.py): thresholds, hysteresis, duplicates."""

from __future__ import annotations

import pytest

from regions.health import HealthPolicy, HealthState, RegionHealth

H, D, X = HealthState.HEALTHY, HealthState.DEGRADED, HealthState.DOWN


def beating(until: float, regions=("a", "b"), policy: HealthPolicy | None = None) -> RegionHealth:
    """Observer a; both regions beat once a second from 1 to ``until``, evaluated after each beat."""
    health = RegionHealth("a", regions, policy or HealthPolicy(), now=0.0)
    for t in range(1, int(until) + 1):
        for r in regions:
            health.heartbeat(r, sent_at=t, at=t)
        assert health.evaluate(t) == []
    return health


def states(health: RegionHealth) -> dict[str, HealthState]:
    return {r: health.state(r) for r in health.regions}


def test_missed_heartbeats_degrade_then_fail_over_at_the_exact_interval():
    health = beating(10)
    assert health.evaluate(11.99) == []
    degraded = health.evaluate(12.0)
    assert [(c.region, c.state, c.kind, c.reason) for c in degraded] == [
        ("a", D, "degraded", "2 heartbeats missed"), ("b", D, "degraded", "2 heartbeats missed")]
    assert health.evaluate(12.99) == []  # b was not counted down one step early
    changes = health.evaluate(13.0)
    assert [(c.region, c.previous, c.state, c.kind) for c in changes] == [("a", D, X, "failover"), ("b", D, X, "failover")]
    assert changes[0].reason == "3 heartbeats missed" and changes[0].at == 13.0


def test_a_region_never_heard_from_is_down_after_the_grace_period():
    health = RegionHealth("a", ["a", "b"], HealthPolicy(), now=100.0)
    health.heartbeat("a", sent_at=102.5, at=102.5)
    assert [c.region for c in health.evaluate(102.9)] == ["b"]  # degraded at 2 s of silence
    assert [(c.region, c.state) for c in health.evaluate(103.0)] == [("b", X)]


def test_redelivered_heartbeats_do_not_keep_a_dead_region_alive():
    health = beating(5)
    for late in (6.0, 7.0, 8.0):  # MirrorMaker redelivers beats 1..5 after a restart
        for sent in range(1, 6):
            health.heartbeat("b", sent_at=sent, at=late)
        health.heartbeat("a", sent_at=late, at=late)
        health.evaluate(late)
    assert health.state("b") is X and health.state("a") is H


def test_a_backlog_burst_does_not_recover_a_region_but_a_steady_run_does():
    health = beating(5)
    for t in range(6, 10):
        health.heartbeat("a", sent_at=t, at=t)
    health.evaluate(9.0)
    assert health.state("b") is X
    for sent in range(6, 10):  # the link heals: the whole backlog arrives at once
        health.heartbeat("b", sent_at=sent, at=10.0)
    health.heartbeat("a", sent_at=10, at=10.0)
    assert health.evaluate(10.0) == [] and health.state("b") is X
    health.heartbeat("a", sent_at=11, at=11.0); health.heartbeat("b", sent_at=11, at=11.0)
    assert health.evaluate(11.0) == []  # a run of 1 s; recover_beats=3 needs 2 s
    health.heartbeat("a", sent_at=12, at=12.0); health.heartbeat("b", sent_at=12, at=12.0)
    [back] = health.evaluate(12.0)
    assert (back.region, back.previous, back.state, back.kind) == ("b", X, H, "recovery")


def test_a_gap_restarts_the_recovery_run():
    health = beating(5)
    health.heartbeat("a", sent_at=9, at=9.0)
    health.evaluate(9.0)  # b down
    for t in (10.0, 11.0, 13.5, 14.5):  # the 2.5 s gap after 11 starts a new run at 13.5
        health.heartbeat("b", sent_at=t, at=t); health.heartbeat("a", sent_at=t, at=t)
        health.evaluate(t)
    assert health.state("b") is X
    health.heartbeat("b", sent_at=15.5, at=15.5); health.heartbeat("a", sent_at=15.5, at=15.5)
    assert [(c.region, c.state) for c in health.evaluate(15.5)] == [("b", H)]


def test_lag_has_a_band_and_a_settle_time():
    health = beating(3)
    t = 3.0

    def step(lag: float) -> list[tuple[str, HealthState]]:
        nonlocal t
        t += 1
        for r in ("a", "b"):
            health.heartbeat(r, sent_at=t, at=t)
        health.lag("b", lag)
        return [(c.region, c.state) for c in health.evaluate(t)]

    assert step(1.0) == []  # at the threshold: not above it
    assert step(1.2) == [("b", D)]
    assert health.evaluate(t) == []
    assert [step(0.7) for _ in range(10)] == [[]] * 10  # inside the band: stays degraded
    assert [step(0.3) for _ in range(5)] == [[]] * 5  # clear, settling for 5 s
    assert step(0.3) == [("b", H)]
    assert step(0.9) == []  # healthy again: back under the upper threshold


def test_error_rate_anomaly_degrades_for_its_hold_time():
    policy = HealthPolicy(anomaly_hold_s=10.0, settle_s=2.0)
    health = beating(3, policy=policy)
    health.anomaly("b", at=3.0)
    [change] = health.evaluate(3.0)
    assert (change.region, change.state, change.reason) == ("b", D, "error-rate anomaly")
    for t in range(4, 16):
        for r in ("a", "b"):
            health.heartbeat(r, sent_at=t, at=t)
        health.evaluate(t)
        assert health.state("b") is (D if t < 13 + 2 else H), t  # hold ends at 13, settled at 15


def test_recovery_straight_into_degraded_when_a_cause_remains():
    health = beating(3)
    health.heartbeat("a", sent_at=7, at=7.0)
    health.evaluate(7.0)
    for t in (8.0, 9.0, 10.0):
        health.heartbeat("a", sent_at=t, at=t); health.heartbeat("b", sent_at=t - 4, at=t)
    health.lag("b", 6.0)  # the backlog arrives late
    [change] = health.evaluate(10.0)
    assert (change.previous, change.state, change.kind) == (X, D, "recovery")
    assert change.reason == "replication lag 6.000 s"


def test_view_is_what_the_observer_publishes():
    health = beating(3)
    health.evaluate(6.0)
    view = health.view(6.0)
    assert (view.observer, view.at, view.states) == ("a", 6.0, {"a": X, "b": X})


@pytest.mark.parametrize("kwargs", [dict(degraded_missed=4, down_missed=3), dict(lag_healthy_s=2.0),
                                    dict(heartbeat_interval=0.0), dict(recover_beats=0)])
def test_inconsistent_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        HealthPolicy(**kwargs)


def test_the_shipped_thresholds_depend_on_the_set_and_env_overrides_them(monkeypatch):
    from core.settings import Settings
    from regions.simulation import SimConfig

    for regions, expected in ((2, (3, 3)), (3, (2, 2)), (5, (2, 2))):
        policy = HealthPolicy.from_settings(Settings(), regions)
        assert (policy.down_missed, policy.recover_beats) == expected, regions
        assert policy == HealthPolicy.for_set(regions) == SimConfig(regions=regions).policy
    assert HealthPolicy.for_set(2) == HealthPolicy()
    monkeypatch.setenv("M1_HEALTH_DOWN_MISSED", "5")
    monkeypatch.setenv("M1_HEARTBEAT_INTERVAL", "0.5")
    policy = HealthPolicy.from_settings(Settings(), 3)
    assert (policy.down_missed, policy.recover_beats, policy.heartbeat_interval) == (5, 2, 0.5)
    monkeypatch.setenv("M1_HEALTH_DOWN_MISSED", "1")  # degraded can never come after down
    assert HealthPolicy.from_settings(Settings(), 3).degraded_missed == 1
