"""One observer's health view of every region: healthy, degraded or down, with hysteresis.

Interface (stable; the region agent and the simulation call exactly these)::

    policy = HealthPolicy(heartbeat_interval=1.0)          # thresholds: HealthPolicy.from_settings(s)
    health = RegionHealth("eu-west", ["eu-west", "us-east", "ap-south"], policy, now=t0)
    health.heartbeat(region, sent_at, at)  # a heartbeat/1 of `region` (its ts = sent_at) arrived at `at`
    health.lag(region, lag_s)              # latest replication lag region -> observer, seconds (regions/lag.py)
    health.anomaly(region, at)             # an error-rate anomaly of `region` was raised at `at`
    changes = health.evaluate(now)         # -> list[Transition] (sorted by region): local state changes
    view = health.view(now)                # -> RegionView: what this observer publishes (verdict.py)

Every time is passed in, in epoch seconds on the observer's own clock: no wall clock is read
inside, so the same inputs give the same states (the simulation relies on it).

Rules (defaults in brackets; ``m`` = heartbeats missed = whole intervals since the last arrival):

- Silence is measured from the *arrival* of the newest heartbeat on the observer's clock, so
  clock skew between regions plays no part. A heartbeat counts only if its ``sent_at`` is newer
  than the newest counted from that region: MirrorMaker's at-least-once redeliveries are ignored.
- **down** once ``m >= down_missed`` [3 for two regions, 2 for three or more: :func:`set_thresholds`]: detection comes ``down_missed`` intervals after the
  last heartbeat arrived (plus the evaluation step), whatever the other signals say.
- **leaving down** needs heartbeats arriving without a gap of ``degraded_missed`` intervals for
  ``recover_beats - 1`` intervals [3 beats over 2 s; 2 over 1 s with three or more regions]: a burst of backlog heartbeats that
  MirrorMaker delivers when a link heals does not count as a recovered region by itself.
- **degraded** when ``m >= degraded_missed`` [2], or replication lag above ``lag_degraded_s``
  [1 s], or an error-rate anomaly in the last ``anomaly_hold_s`` [60 s].
- **leaving degraded** (to healthy) needs every cause clear, lag below ``lag_healthy_s``
  [0.5 s], for ``settle_s`` [5 s]. The lag band and the settle time are the hysteresis.

>>> h = RegionHealth("a", ["a", "b"], HealthPolicy(), now=0.0)
>>> for t in range(1, 5):
...     h.heartbeat("a", sent_at=t, at=t); h.heartbeat("b", sent_at=t, at=t)
>>> h.evaluate(4.5)
[]
>>> for t in range(5, 8):
...     h.heartbeat("a", sent_at=t, at=t)
>>> [(c.region, c.previous.value, c.state.value, c.kind) for c in h.evaluate(7.0)]
[('b', 'healthy', 'down', 'failover')]
>>> h.view(7.0).states
{'a': <HealthState.HEALTHY: 'healthy'>, 'b': <HealthState.DOWN: 'down'>}
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgspec


class HealthState(StrEnum):
    """A region's health, from best to worst."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    DOWN = "down"

    @property
    def rank(self) -> int:
        """0 healthy, 1 degraded, 2 down: ``a.rank >= b.rank`` means a is at least as bad."""
        return _RANK[self]


_RANK = {HealthState.HEALTHY: 0, HealthState.DEGRADED: 1, HealthState.DOWN: 2}


def event_kind(previous: HealthState, state: HealthState) -> str:
    """The region event a change gives: into down ``failover``; out of down, or degraded back to
    healthy, ``recovery``; healthy to degraded ``degraded``.

    >>> event_kind(HealthState.DOWN, HealthState.DEGRADED), event_kind(HealthState.DEGRADED, HealthState.HEALTHY)
    ('recovery', 'recovery')
    """
    if state is HealthState.DOWN:
        return "failover"
    if previous is HealthState.DOWN or state is HealthState.HEALTHY:
        return "recovery"
    return "degraded"


#: The one place the shipped thresholds are chosen (see :func:`set_thresholds`).
QUORUM_THRESHOLDS = (2, 2)
PAIR_THRESHOLDS = (3, 3)


def set_thresholds(regions: int) -> tuple[int, int]:
    """``(down_missed, recover_beats)`` shipped for a set of ``regions`` regions.

    With 3 or more regions a failover needs a quorum of the other regions (regions/verdict.py): one
    observer's false "down" (its link, a MirrorMaker pause) is outvoted, so the faster 2 missed /
    2 beats is the default (docs/benchmarks.md, "Multi-region simulation": it alone meets the
    99.9 % routing bar, with no false failover). Two regions have no quorum: each one's own view
    is the verdict, so they keep the more patient 3 / 3.

    >>> set_thresholds(2), set_thresholds(3), set_thresholds(5)
    ((3, 3), (2, 2), (2, 2))
    """
    return QUORUM_THRESHOLDS if regions >= 3 else PAIR_THRESHOLDS


@dataclass(frozen=True)
class HealthPolicy:
    """Thresholds of the state machine (see the module docstring). The field defaults are the
    two-region ones; :meth:`for_set` and :meth:`from_settings` give a set's shipped thresholds."""

    heartbeat_interval: float = 1.0
    degraded_missed: int = 2
    down_missed: int = 3
    recover_beats: int = 3
    lag_degraded_s: float = 1.0
    lag_healthy_s: float = 0.5
    anomaly_hold_s: float = 60.0
    settle_s: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.degraded_missed <= self.down_missed:
            raise ValueError("need 0 < degraded_missed <= down_missed")
        if not 0 <= self.lag_healthy_s <= self.lag_degraded_s:
            raise ValueError("need 0 <= lag_healthy_s <= lag_degraded_s")
        if self.heartbeat_interval <= 0 or self.recover_beats < 1:
            raise ValueError("need heartbeat_interval > 0 and recover_beats >= 1")

    @classmethod
    def for_set(cls, regions: int, **overrides: Any) -> HealthPolicy:
        """The default policy of a set of ``regions`` regions: ``down_missed`` and
        ``recover_beats`` from :func:`set_thresholds`, everything else as given or the defaults."""
        down_missed, recover_beats = set_thresholds(regions)
        return cls(**{"down_missed": down_missed, "recover_beats": recover_beats, **overrides})

    @classmethod
    def from_settings(cls, settings: Any, regions: int) -> HealthPolicy:
        """The policy configured in core/settings.py (``M1_HEARTBEAT_INTERVAL``, ``M1_HEALTH_*``) for a
        set of ``regions`` regions; an unset ``M1_HEALTH_DOWN_MISSED`` / ``M1_HEALTH_RECOVER_BEATS``
        takes the set's default (:func:`set_thresholds`)."""
        down_missed, recover_beats = set_thresholds(regions)
        return cls(
            heartbeat_interval=settings.heartbeat_interval,
            degraded_missed=min(settings.health_degraded_missed, settings.health_down_missed or down_missed),
            down_missed=settings.health_down_missed or down_missed,
            recover_beats=settings.health_recover_beats or recover_beats,
            lag_degraded_s=settings.health_lag_degraded_seconds,
            lag_healthy_s=settings.health_lag_healthy_seconds,
            anomaly_hold_s=settings.health_anomaly_hold_seconds,
            settle_s=settings.health_settle_seconds,
        )


class RegionView(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="region_view/1", tag_field="schema"):
    """One observer's local states of every region at ``at``: what it publishes for the verdict."""

    observer: str
    at: float
    states: dict[str, HealthState]


@dataclass(frozen=True)
class Transition:
    """A change of one region's local state, and why."""

    region: str
    previous: HealthState
    state: HealthState
    at: float
    reason: str

    @property
    def kind(self) -> str:
        return event_kind(self.previous, self.state)


@dataclass
class _Tracked:
    """What the observer knows of one region."""

    last_arrival: float
    newest_sent: float = -math.inf
    streak_since: float | None = None  # arrival of the first beat of the current unbroken run
    lag_s: float = 0.0
    anomaly_at: float = -math.inf
    clear_since: float | None = None
    state: HealthState = HealthState.HEALTHY


class RegionHealth:
    """The health state machines of one observer, one per region (the observer's own included).

    Until a region's first heartbeat, silence counts from ``now`` given here: a grace period of
    ``down_missed`` intervals after start."""

    def __init__(self, observer: str, regions: Iterable[str], policy: HealthPolicy, now: float):
        self.observer = observer
        self.policy = policy
        self._regions = {r: _Tracked(last_arrival=now) for r in sorted(set(regions))}

    @property
    def regions(self) -> list[str]:
        return list(self._regions)

    def state(self, region: str) -> HealthState:
        return self._regions[region].state

    def heartbeat(self, region: str, sent_at: float, at: float) -> None:
        """A heartbeat of ``region`` sent at ``sent_at`` (its clock) arrived at ``at`` (ours)."""
        tracked = self._regions[region]
        if sent_at <= tracked.newest_sent:
            return
        tracked.newest_sent = sent_at
        if tracked.streak_since is None or at - tracked.last_arrival >= self._gap:
            tracked.streak_since = at
        tracked.last_arrival = max(tracked.last_arrival, at)

    def lag(self, region: str, lag_s: float) -> None:
        """The latest replication lag of ``region``'s records into the observer's cluster."""
        self._regions[region].lag_s = lag_s

    def anomaly(self, region: str, at: float) -> None:
        """An error-rate anomaly of ``region`` (the detectors' alert) raised at ``at``."""
        tracked = self._regions[region]
        tracked.anomaly_at = max(tracked.anomaly_at, at)

    def evaluate(self, now: float) -> list[Transition]:
        """Apply the rules at ``now``; the changes, sorted by region."""
        changes = []
        for region, tracked in self._regions.items():
            state, reason = self._next(tracked, now)
            if state is not tracked.state:
                changes.append(Transition(region, tracked.state, state, now, reason))
                tracked.state = state
        return changes

    def view(self, now: float) -> RegionView:
        """This observer's states, stamped ``now`` (call after :meth:`evaluate`)."""
        return RegionView(self.observer, now, {r: t.state for r, t in self._regions.items()})

    @property
    def _gap(self) -> float:
        return self.policy.degraded_missed * self.policy.heartbeat_interval

    def _next(self, t: _Tracked, now: float) -> tuple[HealthState, str]:
        p = self.policy
        missed = math.floor(max(0.0, now - t.last_arrival) / p.heartbeat_interval)
        if missed >= p.down_missed:
            t.streak_since, t.clear_since = None, None
            return HealthState.DOWN, f"{missed} heartbeats missed"
        if t.state is HealthState.DOWN:
            run = now - t.streak_since if t.streak_since is not None else -1.0
            if run < (p.recover_beats - 1) * p.heartbeat_interval:
                return HealthState.DOWN, "recovering"
        causes = []
        if missed >= p.degraded_missed:
            causes.append(f"{missed} heartbeats missed")
        if t.lag_s > p.lag_degraded_s if t.state is HealthState.HEALTHY else t.lag_s >= p.lag_healthy_s:
            causes.append(f"replication lag {t.lag_s:.3f} s")
        if now - t.anomaly_at < p.anomaly_hold_s:
            causes.append("error-rate anomaly")
        if causes:
            t.clear_since = None
            return HealthState.DEGRADED, "; ".join(causes)
        if t.state is HealthState.DOWN:
            return HealthState.HEALTHY, "heartbeats back"
        if t.state is HealthState.DEGRADED:
            t.clear_since = now if t.clear_since is None else t.clear_since
            if now - t.clear_since < p.settle_s:
                return HealthState.DEGRADED, "settling"
        return HealthState.HEALTHY, "clear"
