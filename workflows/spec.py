"""Workflow files: YAML checked against ``workflow.schema.json`` (shipped in this package), then typed.

A file holds one tenant's receivers, inhibition rules and workflows (docs/workflows.md).
:func:`parse` raises :class:`SpecError` naming every problem: the JSON Schema's, then what a
schema cannot say (unknown receivers, ``goto`` targets, duplicate names).

>>> spec = parse('''
... tenant: acme
... receivers: [{name: ops, type: webhook, url: "http://127.0.0.1:9/hook"}]
... workflows:
...   - name: latency
...     trigger: {source: anomalies, match: {severity: critical}}
...     group: {by: [service], wait: 30s}
...     steps: [{notify: [ops]}, {wait_ack: {timeout: 5m}}, {resolve: {}}]
... ''')
>>> w = spec.workflows[0]
>>> (w.group.wait, w.group.interval, w.steps[1].timeout, w.trigger.match.severity)
(30.0, 300.0, 300.0, ('critical',))
>>> parse("tenant: acme\\nworkflows: []")
Traceback (most recent call last):
...
workflows.spec.SpecError: workflows: [] should be non-empty
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import yaml

from integrations.notification import Receiver

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: Where a run ends: what its ``terminal`` may declare.
TERMINALS = ("resolved", "acknowledged", "notified")


class SpecError(ValueError):
    """A workflow file that is not valid; the message lists every problem, one per line."""


class Match(msgspec.Struct, frozen=True):
    """Which signals: each given field must take one of its values (labels: each given label)."""

    tenant: tuple[str, ...] = ()
    service: tuple[str, ...] = ()
    region: tuple[str, ...] = ()
    severity: tuple[str, ...] = ()
    labels: dict[str, tuple[str, ...]] = {}


class Trigger(msgspec.Struct, frozen=True):
    source: str
    match: Match = Match()


class Conditions(msgspec.Struct, frozen=True):
    """All given must hold: firing for ``for_seconds``; ``count`` signals within ``count_within``;
    at least ``rate_per_minute`` over ``rate_within``."""

    for_seconds: float = 0.0
    count: int = 0
    count_within: float = 0.0
    rate_per_minute: float = 0.0
    rate_within: float = 0.0

    @property
    def window(self) -> float:
        """How far back the signal times must be kept."""
        return max(self.count_within, self.rate_within)


class Grouping(msgspec.Struct, frozen=True):
    """Alertmanager's: alerts with equal ``by`` values form a group, first told after ``wait``,
    changes told at most every ``interval``, unchanged re-told every ``repeat``."""

    by: tuple[str, ...] = ("service", "region")
    wait: float = 30.0
    interval: float = 300.0
    repeat: float = 14400.0


class Branch(msgspec.Struct, frozen=True):
    """Taken when the webhook's answer has ``status`` (``2xx``, ``404``, ``error``; empty: any)
    and its JSON holds every ``json`` key with that value; ``goto``: a step id, ``next`` or ``end``."""

    goto: str
    status: str = ""
    json: dict[str, Any] = {}


class Step(msgspec.Struct, frozen=True):
    """One step: ``kind`` is notify, wait_ack, enrich, webhook or resolve."""

    kind: str
    id: str = ""
    receivers: tuple[str, ...] = ()  # notify; webhook: one
    timeout: float = 0.0  # wait_ack, webhook
    bottlenecks: float = 0.0  # enrich: window of trace bottlenecks before the signal
    body: dict[str, Any] = {}  # webhook
    branch: tuple[Branch, ...] = ()  # webhook


class Workflow(msgspec.Struct, frozen=True):
    name: str
    trigger: Trigger
    steps: tuple[Step, ...]
    conditions: Conditions = Conditions()
    group: Grouping = Grouping()
    resolve_after: float = 300.0
    send_resolved: bool = True
    terminal: str = "resolved"
    description: str = ""

    def step_index(self, target: str, current: int) -> int:
        """Index of a ``goto`` target; ``next`` is the step after ``current``; ``end`` is past the last."""
        if target == "next":
            return current + 1
        if target == "end":
            return len(self.steps)
        return next(i for i, s in enumerate(self.steps) if s.id == target)


class InhibitRule(msgspec.Struct, frozen=True):
    """A firing ``source`` alert mutes ``target`` alerts whose ``equal`` attributes are the same."""

    source: Match
    target: Match
    equal: tuple[str, ...] = ()


class TenantWorkflows(msgspec.Struct, frozen=True):
    """One file: a tenant's receivers, inhibition rules and workflows."""

    tenant: str
    workflows: tuple[Workflow, ...]
    receivers: dict[str, Receiver] = {}
    inhibit: tuple[InhibitRule, ...] = ()

    def workflow(self, name: str) -> Workflow:
        return next(w for w in self.workflows if w.name == name)


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The JSON Schema of workflow files, as shipped in this package."""
    return json.loads(resources.files("workflows").joinpath("workflow.schema.json").read_text())


def seconds(value: float | str) -> float:
    """``30s``, ``5m``, ``4h``, ``1d`` or plain seconds, in seconds.

    >>> seconds("5m"), seconds(12), seconds("1.5h")
    (300.0, 12.0, 5400.0)
    """
    if isinstance(value, (int, float)):
        return float(value)
    unit = value[-1] if value[-1] in UNITS else "s"
    return float(value.rstrip("smhd")) * UNITS[unit]


def _values(value: str | list[str] | None) -> tuple[str, ...]:
    return () if value is None else (value,) if isinstance(value, str) else tuple(value)


def _match(raw: dict[str, Any] | None) -> Match:
    raw = raw or {}
    return Match(**{k: _values(raw.get(k)) for k in ("tenant", "service", "region", "severity")},
                 labels={k: _values(v) for k, v in (raw.get("labels") or {}).items()})


def _step(raw: dict[str, Any]) -> Step:
    sid = raw.get("id", "")
    if "notify" in raw:
        return Step("notify", sid, receivers=tuple(raw["notify"]))
    if "wait_ack" in raw:
        return Step("wait_ack", sid, timeout=seconds(raw["wait_ack"]["timeout"]))
    if "enrich" in raw:
        return Step("enrich", sid, bottlenecks=seconds(raw["enrich"].get("bottlenecks", "15m")))
    if "webhook" in raw:
        hook = raw["webhook"]
        return Step("webhook", sid, receivers=(hook["receiver"],), timeout=seconds(hook.get("timeout", "10s")),
                    body=hook.get("body", {}), branch=tuple(Branch(**b) for b in raw.get("branch", [])))
    return Step("resolve", sid)


def _workflow(raw: dict[str, Any]) -> Workflow:
    cond = raw.get("conditions") or {}
    group = raw.get("group") or {}
    grouping = Grouping()
    return Workflow(
        name=raw["name"], description=raw.get("description", ""),
        trigger=Trigger(raw["trigger"]["source"], _match(raw["trigger"].get("match"))),
        steps=tuple(_step(s) for s in raw["steps"]),
        conditions=Conditions(
            for_seconds=seconds(cond.get("for", 0)),
            count=cond.get("count", {}).get("at_least", 0), count_within=seconds(cond.get("count", {}).get("within", 0)),
            rate_per_minute=float(cond.get("rate", {}).get("per_minute", 0)),
            rate_within=seconds(cond.get("rate", {}).get("within", 0))),
        group=Grouping(by=tuple(group.get("by", grouping.by)), wait=seconds(group.get("wait", grouping.wait)),
                       interval=seconds(group.get("interval", grouping.interval)),
                       repeat=seconds(group.get("repeat", grouping.repeat))),
        resolve_after=seconds(raw.get("resolve_after", 300)), send_resolved=raw.get("send_resolved", True),
        terminal=raw.get("terminal", "resolved"))


def _problems(spec: TenantWorkflows) -> list[str]:
    """What the schema cannot check: names that must exist or be unique."""
    problems = []
    names = [w.name for w in spec.workflows]
    problems += [f"workflows: name {n!r} is used twice" for n in sorted({n for n in names if names.count(n) > 1})]
    for w in spec.workflows:
        ids = [s.id for s in w.steps if s.id]
        problems += [f"{w.name}: step id {i!r} is used twice" for i in sorted({i for i in ids if ids.count(i) > 1})]
        for n, step in enumerate(w.steps):
            problems += [f"{w.name}: step {n} names unknown receiver {r!r}" for r in step.receivers if r not in spec.receivers]
            problems += [f"{w.name}: step {n} goes to unknown step {b.goto!r}" for b in step.branch
                         if b.goto not in ("next", "end") and b.goto not in ids]
    return problems


def parse(text: str, source: str = "<workflows>") -> TenantWorkflows:
    """The workflows of a YAML document; raises :class:`SpecError` listing every problem."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: not YAML: {exc}") from None
    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        raise SpecError("\n".join(f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors))
    spec = TenantWorkflows(
        tenant=raw["tenant"], workflows=tuple(_workflow(w) for w in raw["workflows"]),
        receivers={r["name"]: Receiver(type=r["type"], name=r["name"], url=r.get("url", ""),
                                       secret_ref=r.get("secret_ref", ""), options=r.get("options", {}))
                   for r in raw.get("receivers", [])},
        inhibit=tuple(InhibitRule(_match(i["source"]), _match(i["target"]), tuple(i.get("equal", [])))
                      for i in raw.get("inhibit", [])))
    if problems := _problems(spec):
        raise SpecError("\n".join(problems))
    return spec


def load(path: Path) -> TenantWorkflows:
    """One workflow file."""
    return parse(path.read_text(), str(path))


def load_dir(directory: Path) -> dict[str, TenantWorkflows]:
    """Every ``*.yaml``/``*.yml`` file of ``directory``, by tenant (two files of one tenant: an error)."""
    found: dict[str, TenantWorkflows] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        spec = load(path)
        if spec.tenant in found:
            raise SpecError(f"{path}: tenant {spec.tenant!r} already has a workflow file")
        found[spec.tenant] = spec
    return found
