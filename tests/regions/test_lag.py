"""The lag tracker's arithmetic (no broker): skew from both directions, missed beats, windows and
the points the detectors get. The same code runs in the agents on real clusters
(tests/regions/test_replication.py)."""

from __future__ import annotations

import pytest

from core.settings import Settings
from regions.heartbeat import heartbeat
from regions.lag import LagTracker, RegionLag, lag_records, skew_estimate


def _feed(tracker: LagTracker, source: str, clock_offset: float, delay: float, start: float, n: int) -> None:
    """``n`` beats of ``source`` (whose clock is ``clock_offset`` s ahead of true time) taking
    ``delay`` s to arrive (arrival on the tracker's clock, which is true time)."""
    for i in range(n):
        true_sent = start + i
        tracker.beat(heartbeat(source, i, true_sent + clock_offset), true_sent + delay)


def test_skew_is_estimated_from_both_directions_and_removed() -> None:
    # b's clock is 300 ms behind a's; the path takes 40 ms each way
    at_b = LagTracker("b", window_seconds=10.0, since=0.0)  # b's clock = true time
    at_a = LagTracker("a", window_seconds=10.0, since=0.0)
    _feed(at_b, "a", clock_offset=+0.3, delay=0.04, start=10.0, n=5)  # a's beats, stamped by a's clock
    for i in range(5):  # b's beats stamped by b's clock, arriving at a (a's clock = true + 0.3)
        at_a.beat(heartbeat("b", i, 10.0 + i), 10.0 + i + 0.04 + 0.3)
    forward = at_b.reports(15.0, {})[0]
    assert forward.lag_p50_ms == pytest.approx(40.0 - 300.0) and not forward.skew_known
    backward = at_a.reports(15.3, {})[0]
    assert backward.lag_p50_ms == pytest.approx(40.0 + 300.0)
    at_b.remote_report(backward)  # a's report about b -> a, mirrored to b
    corrected = at_b.reports(15.0, {})[0]
    assert corrected.skew_known
    assert corrected.skew_ms == pytest.approx(-300.0)  # b's clock minus a's
    assert corrected.lag_corrected_ms == pytest.approx(40.0)
    assert skew_estimate(340.0, -260.0) == pytest.approx((300.0, 40.0))


def test_the_skew_is_the_median_of_a_minute_of_estimates_so_a_delay_that_drops_does_not_swing_it() -> None:
    """The clocks agree; the path took 20 ms each way, then 600 ms for 10 s, then 20 ms again. The
    forward lag drops at once, the reverse report still says 600 ms: a single estimate would give
    a skew of -290 ms and a corrected lag of 310 ms (session 12's CI: a false degraded verdict)."""
    tracker = LagTracker("b", window_seconds=2.0, since=0.0)

    def second(t: int, forward_s: float, reverse_ms: float) -> RegionLag:
        tracker.beat(heartbeat("a", t, float(t)), t + forward_s)
        tracker.remote_report(RegionLag(float(t), "b", "a", 1, reverse_ms, reverse_ms, reverse_ms, 0.0, False,
                                        reverse_ms, 0, t, 0, t, 0.0))
        return tracker.reports(t + 1.0, {})[0]

    steady = [second(t, 0.02, 20.0) for t in range(30)]
    assert steady[-1].skew_ms == pytest.approx(0.0)
    delayed = [second(t, 0.6, 600.0) for t in range(30, 40)]
    assert delayed[-1].skew_ms == pytest.approx(0.0)  # symmetric: no skew
    dropped = second(40, 0.02, 600.0)  # the reverse report is from before the drop
    assert skew_estimate(20.0, 600.0)[0] == pytest.approx(-290.0)  # what one estimate says
    assert dropped.skew_ms == pytest.approx(0.0) and dropped.lag_corrected_ms < 600.0
    # a skew that lasts is followed, once it is most of the minute's estimates
    lasting = [second(t, 0.02 + 0.1, 20.0 - 100.0) for t in range(41, 41 + 45)]
    assert lasting[0].skew_ms == pytest.approx(0.0) and lasting[-1].skew_ms == pytest.approx(100.0)


def test_missed_beats_duplicates_and_history() -> None:
    tracker = LagTracker("b", window_seconds=5.0, since=100.0)
    tracker.beat(heartbeat("a", 0, 90.0), 100.5)  # sent before the agent started: counted, not measured
    for seq in (1, 2, 5, 5, 6):  # 3 and 4 lost, 5 delivered twice
        tracker.beat(heartbeat("a", seq, 100.0 + seq), 100.0 + seq + 0.02)
    report = tracker.reports(106.5, {"a": 3})[0]
    assert (report.received, report.missing, report.last_sequence) == (5, 2, 6)
    assert report.samples == 3 and report.lag_max_ms  # beat 1 left the 5 s window == pytest.approx(20.0)
    assert report.offset_lag == 3 and report.last_seen_s == pytest.approx(0.48)
    later = tracker.reports(120.0, {})[0]  # the window emptied: nothing arrived for 14 s
    assert later.samples == 0 and later.lag_p50_ms is None and later.offset_lag == -1
    assert later.last_seen_s == pytest.approx(13.98)


def test_a_lag_spike_becomes_one_point_for_the_detectors() -> None:
    tracker = LagTracker("us-east", window_seconds=10.0, since=0.0)
    for i, delay in enumerate([0.02, 0.03, 0.9, 0.02]):
        tracker.beat(heartbeat("eu-west", i, 1.0 + i), 1.0 + i + delay)
    points = tracker.points(5.0, {"eu-west": 12})
    lag = [p for p in points if p.metric == "lag_ms"]
    assert len(lag) == 1 and lag[0].value == pytest.approx(900.0)  # the spike, not the mean
    assert lag[0].service == "replication" and lag[0].labels == {"source": "eu-west", "target": "us-east"}
    assert lag[0].tenant == "platform" and lag[0].region == "us-east"
    assert [p.value for p in points if p.metric == "offset_lag"] == [12.0]
    assert [p.metric for p in tracker.points(6.0, {})] == []  # nothing new since
    settings = Settings(kafka_bootstrap="127.0.0.1:1", tenant_topics=True)
    topics = {topic for topic, _, _ in lag_records(settings, tracker.reports(6.0, {}), points)}
    assert topics == {"region_lag", "platform.metrics"}


def test_a_report_round_trips_through_json() -> None:
    import msgspec

    report = RegionLag(1.0, "a", "b", 0, None, None, None, 0.0, False, None, -1, 0, 0, -1, -1.0)
    assert msgspec.json.decode(msgspec.json.encode(report), type=RegionLag) == report
