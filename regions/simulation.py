"""A deterministic simulation of many regions and client geographies under random failures,
partitions and latency changes, driving the same health, verdict and routing code as the
region agent (:mod:`regions.health`, :mod:`regions.verdict`, :mod:`regions.routing`).

Interface::

    report = simulate(SimConfig(regions=5, geos=50, hours=6, seed=1), progress=callback)
    report.accuracy, report.false_failover_rate, report.detection_s, report.summary()

Same config (seed included), same report: all randomness comes from one seeded generator.

The world
- Regions sit at real cloud locations; geographies at seeded random points. The true RTT from
  a geography to a region is ``2 ms + great-circle km / 100`` (light in fibre, both ways),
  times a *latency change* factor while one lasts.
- Every tick (``tick`` s) each running region's agent takes the heartbeats and views that
  arrived; once per heartbeat interval, at its own phase, it decides as the real agent
  (regions/agent.py) does: ``RegionHealth.evaluate``, publish its view, ``VerdictBoard.decide``,
  ``Router.route`` with the verdict right after. Regions send a heartbeat every
  ``heartbeat_interval``, each at its own phase.
- A message between two regions (heartbeat or view; replicated by MirrorMaker in reality)
  arrives after half the regions' RTT + 20 ms + exponential jitter (mean 5 ms) + any WAN spike,
  unless either end is down or cut off, the link is cut, or loss drops it. Messages are not
  relayed through a third region.
- Every ``probe_interval`` s each geography measures its RTT to each reachable region (true
  RTT times a log-normal error, sigma ``probe_noise``); the measurements reach every region
  (a mirrored topic), so one Router's statistics stand for every region's. The Router's
  configured proximity is the RTT without latency changes (the geography's known distance
  order): it is the prior that the measurements overrule only with evidence.
- Each second every geography sends one request. It asks the nearest region that can be
  reached for its routing table and goes to the first region listed for it. It is *accurate*
  when that is the nearest region that is up and reachable, by true RTT.

Failures (Poisson processes; mean times between episodes in hours, per region or region pair):
crash (region down, its agent restarted afresh afterwards), isolation (the region runs but
nothing reaches it or leaves it: clients cannot reach it either — a partition, not a crash),
link cut (two regions cannot reach each other; both serve clients), link loss (a share of the
messages between two regions is dropped), WAN spike (extra replication delay on a link),
error-rate anomaly (degrades a region), latency change (one geography-region RTT scaled).

Measures
- accuracy: accurate requests / requests; the misses are split by cause: the table still
  names a region that is down (detection), still leaves out a region that is back (recovery),
  or orders regions that are all up wrongly (latency: measurement error, or a latency change
  not followed yet).
  ``accuracy_within_1pct`` also counts a region within 1 % of the nearest one's RTT as right:
  with a 3 % error per probe, a geography halfway between two regions (0.5 % apart) is routed
  to either, and the strict measure counts every other request of it as a miss.
- detection time: for every crash or isolation longer than the down threshold, the time from
  its start to each running, reachable region's failover event about it. With three or more of
  five regions down at once the survivors are a minority and, by design, fail nobody over until
  enough come back (regions/verdict.py); ``detection_peak`` tells those detections apart.
- false failovers: failover events about a region that was up and reachable for the whole
  window before (``down_missed`` intervals + 2 s); reported per failover event and per
  decision (one decision = one region's shared state computed by one region in one tick).
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from regions.health import HealthPolicy, HealthState, RegionHealth
from regions.routing import Router, RoutingTable
from regions.verdict import VerdictBoard

#: (name, latitude, longitude) of the regions, in the order a simulation takes them.
LOCATIONS = [
    ("eu-west", 53.3, -6.3), ("us-east", 38.9, -77.0), ("ap-south", 19.1, 72.9),
    ("us-west", 45.6, -121.2), ("ap-northeast", 35.7, 139.7), ("sa-east", -23.5, -46.6),
    ("eu-central", 50.1, 8.7), ("ap-southeast", 1.35, 103.8), ("af-south", -33.9, 18.4),
    ("me-central", 24.5, 54.4),
]
START = 1_767_225_600.0  # 2026-01-01 00:00 UTC: events carry plausible times


@dataclass(frozen=True)
class SimConfig:
    """What to simulate; rates are mean hours between episodes per region (or per pair)."""

    regions: int = 5
    geos: int = 50
    hours: float = 6.0
    seed: int = 1
    tick: float = 0.25
    policy: HealthPolicy | None = None  # None: the shipped policy of a set of `regions` (HealthPolicy.for_set)
    smoothing: float = 0.005
    jump: float = 0.15
    evidence: float = 2.0
    settle: float = 1.0
    probe_interval: float = 5.0
    probe_noise: float = 0.03
    crash_every_h: float = 6.0
    isolate_every_h: float = 12.0
    cut_every_h: float = 6.0
    loss_every_h: float = 4.0
    spike_every_h: float = 2.0
    anomaly_every_h: float = 6.0
    latency_change_every_h: float = 24.0

    def __post_init__(self) -> None:
        if not 2 <= self.regions <= len(LOCATIONS):
            raise ValueError(f"regions must be 2..{len(LOCATIONS)}")
        if self.geos < 1 or self.hours <= 0 or self.tick <= 0:
            raise ValueError("need geos >= 1, hours > 0 and tick > 0")
        if self.policy is None:
            object.__setattr__(self, "policy", HealthPolicy.for_set(self.regions))


@dataclass
class SimReport:
    """What a run measured (see the module docstring for the definitions)."""

    config: SimConfig
    requests: int = 0
    accurate: int = 0
    misses: dict[str, int] = field(default_factory=lambda: {"detection": 0, "recovery": 0, "latency": 0})
    near_ties: int = 0  # latency misses to a region within 1 % of the nearest one's RTT
    decisions: int = 0
    failovers: int = 0
    false_failovers: int = 0
    recoveries: int = 0
    incidents: int = 0
    undetected: int = 0
    detection_s: list[float] = field(default_factory=list)
    detection_peak: list[int] = field(default_factory=list)  # most regions down or cut off at once, per detection
    local_failovers: int = 0  # local health state machines gone down: suspicions the quorum weighs
    routing_versions: int = 0

    @property
    def accuracy(self) -> float:
        return self.accurate / self.requests if self.requests else 1.0

    @property
    def accuracy_within_1pct(self) -> float:
        """Accuracy when a region within 1 % of the nearest one's RTT counts as the nearest."""
        return (self.accurate + self.near_ties) / self.requests if self.requests else 1.0

    @property
    def false_failover_rate(self) -> float:
        """False failovers per decision."""
        return self.false_failovers / self.decisions if self.decisions else 0.0

    @property
    def false_failover_share(self) -> float:
        """False failovers per failover event (a stricter reading)."""
        return self.false_failovers / self.failovers if self.failovers else 0.0

    def detection_quantiles(self) -> dict[str, float]:
        """p50 / p90 / p99 / max of the detection times, in seconds."""
        if not self.detection_s:
            return {}
        ordered = sorted(self.detection_s)
        q = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99
        return {"p50": q[49], "p90": q[89], "p99": q[98], "max": ordered[-1]}

    def summary(self) -> dict[str, object]:
        """The numbers of the run, JSON-ready."""
        return {
            "seed": self.config.seed, "regions": self.config.regions, "geos": self.config.geos,
            "hours": self.config.hours, "requests": self.requests, "accuracy": self.accuracy,
            "accuracy_within_1pct": self.accuracy_within_1pct,
            "misses": dict(self.misses), "decisions": self.decisions, "failovers": self.failovers,
            "false_failovers": self.false_failovers, "false_failover_rate": self.false_failover_rate,
            "false_failover_share": self.false_failover_share, "recoveries": self.recoveries,
            "incidents": self.incidents, "undetected": self.undetected, "local_failovers": self.local_failovers,
            "detection_s": {k: round(v, 3) for k, v in self.detection_quantiles().items()},
            "routing_versions": self.routing_versions,
        }


def rtt_ms(a: tuple[float, float], b: tuple[float, float]) -> float:
    """2 ms + great-circle km / 100 (fibre: ~200 km per ms each way).

    >>> round(rtt_ms((53.3, -6.3), (38.9, -77.0)))  # Dublin - Virginia
    56
    """
    la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2.0 + 6371.0 * 2 * math.asin(math.sqrt(min(1.0, h))) / 100.0


@dataclass
class _Episode:
    kind: str
    target: tuple[str, ...]
    start: float
    end: float
    amount: float = 0.0


class _World:
    """Ground truth at the current time: which regions are up, links, delays, latency factors."""

    def __init__(self, cfg: SimConfig, rng: random.Random):
        self.cfg, self.rng = cfg, rng
        picked = LOCATIONS[: cfg.regions]
        self.regions = [name for name, _, _ in picked]
        where = {name: (lat, lon) for name, lat, lon in picked}
        self.geos = [f"geo-{i:03d}" for i in range(cfg.geos)]
        spots = {g: (rng.uniform(-45.0, 62.0), rng.uniform(-180.0, 180.0)) for g in self.geos}
        self.base_rtt = {g: {r: rtt_ms(spots[g], where[r]) for r in self.regions} for g in self.geos}
        self.link_ms = {(a, b): rtt_ms(where[a], where[b]) / 2 + 20.0 for a in self.regions for b in self.regions}
        self.crashed: set[str] = set()
        self.isolated: set[str] = set()
        self.cut: dict[frozenset[str], int] = {}
        self.loss: dict[frozenset[str], float] = {}
        self.spike: dict[frozenset[str], float] = {}
        self.factor: dict[tuple[str, str], float] = {}
        self.anomalous: set[str] = set()
        self.unavailable_until: dict[str, float] = {}  # last time each region was down or cut off
        self.episodes = self._draw()

    def _draw(self) -> list[_Episode]:
        cfg, rng, horizon = self.cfg, self.rng, self.cfg.hours * 3600.0
        pairs = [(a, b) for i, a in enumerate(self.regions) for b in self.regions[i + 1:]]
        plans = [  # kind, targets, mean hours between, duration range s, amount range
            ("crash", [(r,) for r in self.regions], cfg.crash_every_h, (20.0, 300.0), (0.0, 0.0)),
            ("isolate", [(r,) for r in self.regions], cfg.isolate_every_h, (20.0, 300.0), (0.0, 0.0)),
            ("cut", pairs, cfg.cut_every_h, (10.0, 600.0), (0.0, 0.0)),
            ("loss", pairs, cfg.loss_every_h, (60.0, 600.0), (0.05, 0.5)),
            ("spike", pairs, cfg.spike_every_h, (30.0, 300.0), (200.0, 3000.0)),
            ("anomaly", [(r,) for r in self.regions], cfg.anomaly_every_h, (60.0, 600.0), (0.0, 0.0)),
            ("latency", [(g, r) for g in self.geos for r in self.regions], cfg.latency_change_every_h,
             (60.0, 1800.0), (0.6, 2.5)),
        ]
        episodes = []
        for kind, targets, every_h, (d0, d1), (a0, a1) in plans:
            for target in targets:
                t = rng.expovariate(1.0 / (every_h * 3600.0))
                while t < horizon:
                    end = t + rng.uniform(d0, d1)
                    episodes.append(_Episode(kind, target, START + t, START + end, rng.uniform(a0, a1)))
                    t = end + rng.expovariate(1.0 / (every_h * 3600.0))
        return episodes

    def reachable(self, region: str) -> bool:
        return region not in self.crashed and region not in self.isolated

    def apply(self, ep: _Episode, begin: bool, now: float) -> None:
        key = frozenset(ep.target)
        if ep.kind in ("crash", "isolate"):
            (self.crashed if ep.kind == "crash" else self.isolated).symmetric_difference_update(ep.target)
            self.unavailable_until[ep.target[0]] = now
        elif ep.kind == "cut":
            self.cut[key] = self.cut.get(key, 0) + (1 if begin else -1)
        elif ep.kind in ("loss", "spike"):
            held = self.loss if ep.kind == "loss" else self.spike
            held[key] = held.get(key, 0.0) + (ep.amount if begin else -ep.amount)
        elif ep.kind == "anomaly":
            (self.anomalous.add if begin else self.anomalous.discard)(ep.target[0])
        else:
            self.factor[ep.target] = self.factor.get(ep.target, 1.0) * (ep.amount if begin else 1.0 / ep.amount)

    def delay_s(self, a: str, b: str) -> float | None:
        """When a message from a to b sent now arrives (seconds from now), or None if it is lost."""
        key = frozenset((a, b))
        if not (self.reachable(a) and self.reachable(b)) or self.cut.get(key, 0) > 0:
            return None
        if self.rng.random() < min(0.95, self.loss.get(key, 0.0)):
            return None
        return (self.link_ms[a, b] + self.spike.get(key, 0.0) + self.rng.expovariate(1 / 5.0)) / 1000.0

    def true_rtt(self, geo: str, region: str) -> float:
        return self.base_rtt[geo][region] * self.factor.get((geo, region), 1.0)


class _Agent:
    """One region's agent: the same calls, in the same order, as the real one."""

    def __init__(self, name: str, regions: list[str], policy: HealthPolicy, now: float, first_decision: float,
                 table: RoutingTable | None):
        self.name = name
        self.health = RegionHealth(name, regions, policy, now)
        self.board = VerdictBoard(name, regions)
        self.table = table
        self.next_decision = first_decision


def simulate(cfg: SimConfig, progress: Callable[[float], None] | None = None) -> SimReport:
    """Run the simulation; ``progress`` is called with the simulated seconds done, every minute."""
    rng = random.Random(cfg.seed)
    world = _World(cfg, rng)
    policy, regions, report = cfg.policy, world.regions, SimReport(cfg)
    router = Router({g: world.base_rtt[g] for g in world.geos}, smoothing=cfg.smoothing, jump=cfg.jump,
                    evidence=cfg.evidence, settle=cfg.settle)
    agents = {r: _Agent(r, regions, policy, START, START + rng.uniform(0, policy.heartbeat_interval), None)
              for r in regions}
    for agent in agents.values():
        agent.table = router.route(agent.board.verdict.states, START)
    changes = sorted([(ep.start, i, True) for i, ep in enumerate(world.episodes)]
                     + [(ep.end, i, False) for i, ep in enumerate(world.episodes)])
    incidents: dict[str, _Incident] = {}
    inbox: list[tuple[float, int, str, str, object]] = []  # (arrival, seq, to, kind, payload)
    seq = 0
    next_beat = {r: START + rng.uniform(0, policy.heartbeat_interval) for r in regions}
    next_probe, next_request, next_progress = START, START, START + 60.0
    window = policy.down_missed * policy.heartbeat_interval + 2.0
    end, step, ci = START + cfg.hours * 3600.0, 0, 0
    while (now := START + step * cfg.tick) <= end:
        step += 1
        while ci < len(changes) and changes[ci][0] <= now:
            t, i, begin = changes[ci]
            ci += 1
            ep = world.episodes[i]
            world.apply(ep, begin, now)
            if ep.kind in ("crash", "isolate"):
                r = ep.target[0]
                if begin and r not in incidents:
                    incidents[r] = _Incident(now, frozenset(o for o in regions if o != r and world.reachable(o)))
                elif not begin and world.reachable(r) and r in incidents:
                    _close_incident(report, incidents.pop(r), now, window)
                for incident in incidents.values():
                    incident.peak = max(incident.peak, len(world.crashed | world.isolated))
                if ep.kind == "crash" and not begin:  # the agent restarts afresh, keeping its published table
                    agents[r] = _Agent(r, regions, policy, now, now + rng.uniform(0, policy.heartbeat_interval),
                                       agents[r].table)
            if ep.kind == "anomaly" and begin and world.reachable(ep.target[0]):
                agents[ep.target[0]].health.anomaly(ep.target[0], now)
        for r in regions:
            while next_beat[r] <= now:
                if r not in world.crashed:
                    for to in regions:
                        delay = 0.0 if to == r else world.delay_s(r, to)
                        if delay is not None:
                            seq += 1
                            heapq.heappush(inbox, (next_beat[r] + delay, seq, to, "beat", (r, next_beat[r])))
                next_beat[r] += policy.heartbeat_interval
        while inbox and inbox[0][0] <= now:
            at, _, to, kind, payload = heapq.heappop(inbox)
            if to in world.crashed:
                continue
            agent = agents[to]
            if kind == "beat":
                source, sent = payload
                agent.health.heartbeat(source, sent, at)
                agent.health.lag(source, at - sent)
            else:
                agent.board.offer(payload)
        if now >= next_probe:
            for g in world.geos:
                for r in regions:
                    if world.reachable(r):
                        router.measure(g, r, world.true_rtt(g, r) * math.exp(rng.gauss(0.0, cfg.probe_noise)))
            next_probe += cfg.probe_interval
        for r, agent in agents.items():
            if r in world.crashed or now < agent.next_decision:
                continue
            agent.next_decision += policy.heartbeat_interval  # the agent's decision clock
            local = agent.health.evaluate(now)
            report.local_failovers += sum(c.kind == "failover" for c in local)
            view = agent.health.view(now)
            agent.board.offer(view)
            for to in regions:
                if to != r and (delay := world.delay_s(r, to)) is not None:
                    seq += 1
                    heapq.heappush(inbox, (now + delay, seq, to, "view", view))
            report.decisions += len(regions)
            for event in agent.board.decide(now):
                _score_event(report, world, event, incidents, now, window)
            agent.table = router.route(agent.board.verdict.states, now, previous=agent.table)
        if now >= next_request:
            _route_requests(report, world, agents)
            next_request += 1.0
        if progress is not None and now >= next_progress:
            progress(now - START)
            next_progress += 60.0
    report.routing_versions = sum(a.table.version for a in agents.values())
    return report


@dataclass
class _Incident:
    """A region down or cut off: since when, and when each region decided it was down."""

    start: float
    observers: frozenset[str]  # the regions up and reachable when it started: they should detect it
    peak: int = 1  # most regions down or cut off at once while it lasts
    detected: dict[str, float] = field(default_factory=dict)


def _close_incident(report: SimReport, incident: _Incident, now: float, window: float) -> None:
    if now - incident.start >= window:
        report.incidents += 1
        report.undetected += not incident.detected


def _score_event(report: SimReport, world: _World, event, incidents: dict[str, _Incident],
                 now: float, window: float) -> None:
    if event.kind == "recovery" and event.previous == HealthState.DOWN.value:
        report.recoveries += 1
    if event.kind != "failover":
        return
    report.failovers += 1
    incident = incidents.get(event.region)
    if incident is not None:
        if event.observer in incident.observers and world.reachable(event.observer) \
                and event.observer not in incident.detected:
            incident.detected[event.observer] = now
            report.detection_s.append(now - incident.start)
            report.detection_peak.append(incident.peak)
    elif now - world.unavailable_until.get(event.region, -math.inf) > window:
        report.false_failovers += 1


def _route_requests(report: SimReport, world: _World, agents: dict[str, _Agent]) -> None:
    """One request per geography: the table of a random reachable region, its first region."""
    reachable = [r for r in world.regions if world.reachable(r)]
    if not reachable:
        return
    for g in world.geos:
        best = min(reachable, key=lambda r: (world.true_rtt(g, r), r))
        route = agents[world.rng.choice(reachable)].table.routes[g]
        chosen = route[0] if route else None
        report.requests += 1
        if chosen == best:
            report.accurate += 1
        elif chosen is None or not world.reachable(chosen):
            report.misses["detection"] += 1
        elif best not in route:
            report.misses["recovery"] += 1
        else:
            report.misses["latency"] += 1
            report.near_ties += world.true_rtt(g, chosen) <= 1.01 * world.true_rtt(g, best)
