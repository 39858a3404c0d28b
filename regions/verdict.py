"""The shared verdict: every observer's local view in, one state per region out, the same wherever
it is computed.

Interface (stable; the region agent and the simulation call exactly these)::

    board = VerdictBoard("eu-west", ["eu-west", "us-east", "ap-south"])
    board.offer(view)          # a RegionView (health.py), own or mirrored; False if not newer
    events = board.decide(now) # -> list[RegionEvent]: the verdict's changes, observer = this region
    board.verdict              # -> Verdict: .states {region: HealthState}, .votes, .reasons
    decide(regions, views)     # the pure function behind it
    encode_view(view) -> bytes; decode_view(payload) -> RegionView   # for the views topic

Every observer (region) publishes its :class:`~regions.health.RegionView` (its own states of every
region); each region holds the newest view of each observer and computes :func:`decide` from them.
Two regions holding the same views compute the same verdict: it depends on nothing else (no
clock, no arrival order, no previous verdict).

Rules, for a subject region ``s``:

- A region never votes on itself: whether it can be reached is the question. The *electorate*
  of ``s`` is every other configured region that the verdict does not hold down. An observer
  whose view never arrived votes healthy; a silent observer's last view keeps voting.
- ``s`` is **down** when at least ``q`` of its electorate ``E`` see it down, with
  ``q = min(floor((|E| + 1) / 2) + 1, |E|)``: a strict majority of ``E`` plus ``s`` itself, where
  ``s`` counts as voting "up". With every region live that is a majority of all regions.
  Regions found down leave the electorates and the rule is applied again until nothing changes,
  so after one region is down, a second failure is still judged by the survivors.
- ``s`` is **degraded** when it is not down and either its own view says so (a region is the
  authority on its own error rate) or ``q`` of its electorate see it degraded or worse.

Split brain (two regions disagree about a third, or about each other):

- *One observer cut off from ``s``* (its link to ``s`` fails, others still see ``s``): its down
  vote is one of ``q`` needed; ``s`` stays up everywhere. A minority never fails over anyone.
- *A minority partition* (``k < N/2`` regions cut off from the rest): inside it the majority's last
  views still vote "up", so the minority declares nobody down and keeps its routing. The majority
  side holds a quorum and fails the minority over. Clients that can still reach the minority are
  routed by its old table, which names reachable regions of the majority too.
- *An even split* (2 + 2 of 4): neither side has ``q`` votes; nobody is failed over on either side.
- *Two live regions* (N = 2, or N = 3 after one is already down): ``|E| = 1`` and ``q = 1``, so a
  region that loses its link to the other declares it down, and both sides do: each routes to
  itself. Two regions cannot tell a partition from a crash; with a third region (a witness) this
  cannot happen while the third is up.

>>> from regions.health import HealthState as H, RegionView
>>> regions = ["a", "b", "c"]
>>> views = {"a": RegionView("a", 10.0, {"a": H.HEALTHY, "b": H.HEALTHY, "c": H.DOWN}),
...          "b": RegionView("b", 10.0, {"a": H.HEALTHY, "b": H.HEALTHY, "c": H.HEALTHY})}
>>> decide(regions, views).states["c"]  # only a sees c down: a minority
<HealthState.HEALTHY: 'healthy'>
>>> views["b"] = RegionView("b", 11.0, {"a": H.HEALTHY, "b": H.HEALTHY, "c": H.DOWN})
>>> decide(regions, views).reasons["c"]
'2 of 2 observers (a, b) see it down; quorum 2'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import msgspec

from regions.health import HealthState, RegionView, event_kind
from schemas.events import RegionEvent
from core.tenant_names import PLATFORM


@dataclass(frozen=True)
class Verdict:
    """The shared state of every region, each observer's vote about it, and why."""

    states: dict[str, HealthState]
    votes: dict[str, dict[str, HealthState]]
    reasons: dict[str, str]


def quorum(electorate: int) -> int:
    """Votes needed out of ``electorate`` observers (see the module docstring).

    >>> [quorum(n) for n in range(1, 7)]
    [1, 2, 3, 3, 4, 4]
    """
    return min((electorate + 1) // 2 + 1, electorate)


def decide(regions: Iterable[str], views: Mapping[str, RegionView]) -> Verdict:
    """The verdict from the newest view of each observer (views of unknown observers are ignored)."""
    names = sorted(set(regions))
    votes = {
        s: {o: views[o].states[s] for o in names if o in views and s in views[o].states}
        for s in names
    }
    down: dict[str, str] = {}
    while found := {s: why for s in names if s not in down
                    if (why := _carried(s, HealthState.DOWN, names, down, votes))}:
        down.update(found)
    states, reasons = {}, {}
    for s in names:
        if s in down:
            states[s], reasons[s] = HealthState.DOWN, down[s]
        elif votes[s].get(s, HealthState.HEALTHY) is not HealthState.HEALTHY:
            states[s], reasons[s] = HealthState.DEGRADED, f"{s} reports itself {votes[s][s].value}"
        elif why := _carried(s, HealthState.DEGRADED, names, down, votes):
            states[s], reasons[s] = HealthState.DEGRADED, why
        else:
            states[s], reasons[s] = HealthState.HEALTHY, "no quorum against it"
    return Verdict(states, votes, reasons)


def _carried(s: str, worst: HealthState, names: list[str], down: Mapping[str, str],
             votes: Mapping[str, Mapping[str, HealthState]]) -> str:
    """Why ``s`` is at least ``worst`` by quorum, or '' when it is not."""
    electorate = [o for o in names if o != s and o not in down]
    if not electorate:
        return ""
    ayes = [o for o in electorate if votes[s].get(o, HealthState.HEALTHY).rank >= worst.rank]
    need = quorum(len(electorate))
    if len(ayes) < need:
        return ""
    seen = "down" if worst is HealthState.DOWN else "degraded or worse"
    return f"{len(ayes)} of {len(electorate)} observers ({', '.join(ayes)}) see it {seen}; quorum {need}"


class VerdictBoard:
    """The newest view of each observer, and the verdict last decided from them."""

    def __init__(self, observer: str, regions: Iterable[str]):
        self.observer = observer
        self.regions = sorted(set(regions))
        self._views: dict[str, RegionView] = {}
        self.verdict = decide(self.regions, {})

    @property
    def views(self) -> dict[str, RegionView]:
        return dict(self._views)

    def offer(self, view: RegionView) -> bool:
        """Hold ``view`` if it is from a configured observer and newer than the one held."""
        held = self._views.get(view.observer)
        if view.observer not in self.regions or (held is not None and view.at <= held.at):
            return False
        self._views[view.observer] = view
        return True

    def decide(self, now: float) -> list[RegionEvent]:
        """Recompute the verdict; one event per region whose shared state changed (sorted)."""
        before, self.verdict = self.verdict, decide(self.regions, self._views)
        return [
            RegionEvent(
                ts=now, tenant=PLATFORM, region=s, kind=event_kind(before.states[s], state),
                observer=self.observer, previous=before.states[s].value, state=state.value,
                reason=self.verdict.reasons[s],
                views={o: v.value for o, v in self.verdict.votes[s].items()},
            )
            for s, state in self.verdict.states.items()
            if state is not before.states[s]
        ]


_view_decoder = msgspec.json.Decoder(RegionView)


def encode_view(view: RegionView) -> bytes:
    """The JSON form of a view (``schema`` = ``region_view/1``), for the views topic."""
    return msgspec.json.encode(view)


def decode_view(payload: bytes) -> RegionView:
    """A view from its JSON form; raises ``msgspec.ValidationError``/``DecodeError`` on bad input."""
    return _view_decoder.decode(payload)
