"""Pure predicates: does a signal match a trigger, a silence, an inhibition rule.

>>> from workflows.signals import Signal
>>> s = Signal(ts=0, tenant="acme", source="anomalies", service="api", region="eu", severity="warning",
...            fingerprint="f", title="t", labels={"env": "prod"})
>>> matches(Match(service=("api", "web"), labels={"env": ("prod",)}), s)
True
>>> matches(Match(severity=("critical",)), s)
False
>>> silence = Silence(id="s1", tenant="acme", starts_at=0, ends_at=60, matchers=Match(service=("api",)))
>>> silence.mutes(s, now=30), silence.mutes(s, now=61)
(True, False)
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from workflows.signals import Signal
from workflows.spec import InhibitRule, Match


def matches(match: Match, signal: Signal) -> bool:
    """Every field ``match`` gives has the signal's value among its values."""
    for name in ("tenant", "service", "region", "severity"):
        wanted = getattr(match, name)
        if wanted and getattr(signal, name) not in wanted:
            return False
    return all(signal.labels.get(k) in v for k, v in match.labels.items())


class Silence(msgspec.Struct, frozen=True):
    """Mutes notifications of matching signals from ``starts_at`` to ``ends_at``. A
    ``maintenance`` window also keeps them out of incidents and conditions: they are ignored."""

    id: str
    tenant: str
    starts_at: float
    ends_at: float
    matchers: Match = Match()
    kind: str = "silence"  # silence | maintenance
    comment: str = ""
    created_by: str = ""

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def mutes(self, signal: Signal, now: float) -> bool:
        return self.active(now) and matches(self.matchers, signal)


def silenced(silences: Iterable[Silence], signal: Signal, now: float, kind: str | None = None) -> bool:
    """Some active silence (of ``kind``, if given) mutes ``signal``."""
    return any(s.mutes(signal, now) for s in silences if kind is None or s.kind == kind)


def inhibited(rules: Iterable[InhibitRule], signal: Signal, firing: Iterable[Signal]) -> bool:
    """Some rule's source alert is firing with the same ``equal`` attributes as ``signal``, a target.

    >>> from workflows.signals import Signal
    >>> def sig(sev): return Signal(0, "acme", "anomalies", "api", "eu", sev, sev, "t")
    >>> rule = InhibitRule(Match(severity=("critical",)), Match(severity=("warning",)), ("service",))
    >>> inhibited([rule], sig("warning"), [sig("critical")]), inhibited([rule], sig("critical"), [sig("critical")])
    (True, False)
    """
    firing = list(firing)
    for rule in rules:
        if not matches(rule.target, signal):
            continue
        for source in firing:
            if (source.fingerprint != signal.fingerprint and matches(rule.source, source)
                    and all(source.attribute(a) == signal.attribute(a) for a in rule.equal)):
                return True
    return False
