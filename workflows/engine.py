"""The pure core: signals and controls in, state changes and :class:`Effect` s out, with an injected clock.

:meth:`Engine.handle` takes one input and the engine time ``now``; it reads and writes only the
key-value ``store`` it was given (``workflows.state``) and returns what must happen outside:
notifications to publish (``integrations.notification.Notification``), incident and run
records, webhook calls. Nothing here does I/O, so every rule (matching, conditions, grouping,
inhibition, silences, the step state machine, incidents) is tested by feeding inputs and times.

Order for one signal of a tenant: maintenance windows drop it; anomalies (and signals some
workflow matches) join their service's and region's incident; each matching workflow adds it
to its group, checks the conditions, and schedules a notification (``group.wait`` for a new
group, ``group.interval`` for a changed one, ``group.repeat`` for an unchanged one). A flush
shows only alerts neither silenced nor inhibited; the first flush starts a run of the steps.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from math import inf
from typing import Any

import msgspec

from integrations.notification import Notification, notification_id
from workflows.match import Silence, inhibited, matches, silenced
from workflows.signals import Control, Input, Signal
from workflows.spec import Conditions, Match, TenantWorkflows, Workflow
from workflows.state import ENDED, Alert, Group, Incident, Run, TenantState, Tx, group_key, incident_key, short_hash

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
#: A webhook call whose answer has not come back this long after its timeout is taken as failed.
CALL_GRACE_SECONDS = 30.0
#: How often :meth:`Engine.tenants` scans the store's keys (tenants whose state came from a changelog).
TENANT_SCAN_SECONDS = 10.0
#: How stale the time an inhibiting alert was last seen may get before a signal rewrites it.
FIRING_REFRESH_SECONDS = 30.0


@dataclass(frozen=True)
class Effect:
    """Something to do outside: ``kind`` notification | incident | run (publish ``value``, keyed
    ``key``) or webhook (call it, answer with a ``Control(action="answer")``). A notification
    with ``enrich`` > 0 gets the trace bottlenecks of ``value.incident``'s service over that
    many seconds before its ``source_ts``."""

    kind: str
    key: str
    value: Any
    enrich: float = 0.0


@dataclass
class _Ctx:
    spec: TenantWorkflows | None
    tenant: TenantState
    now: float
    tx: Tx
    effects: list[Effect] = field(default_factory=list)


def conditions_met(c: Conditions, g: Group) -> bool:
    """All of the workflow's conditions hold for the group's signals (in data time).

    >>> g = Group("t", "w", "k", times=[0.0, 30.0, 60.0], since=0.0, last_ts=60.0)
    >>> conditions_met(Conditions(for_seconds=60), g), conditions_met(Conditions(for_seconds=61), g)
    (True, False)
    >>> conditions_met(Conditions(count=3, count_within=90), g), conditions_met(Conditions(count=3, count_within=50), g)
    (True, False)
    >>> conditions_met(Conditions(rate_per_minute=2, rate_within=60), g)
    True
    """
    if g.last_ts - g.since < c.for_seconds:
        return False
    if c.count and sum(t > g.last_ts - c.count_within for t in g.times) < c.count:
        return False
    if c.rate_per_minute and sum(t > g.last_ts - c.rate_within for t in g.times) / (c.rate_within / 60) < c.rate_per_minute:
        return False
    return True


def _status_matches(wanted: str, status: int) -> bool:
    """``2xx`` / ``404`` / ``error`` (no HTTP answer) / empty (any) against an answer's status."""
    if not wanted:
        return True
    if wanted == "error":
        return status == 0
    if wanted.endswith("xx"):
        return status // 100 == int(wanted[0])
    return status == int(wanted)


class Engine:
    """The workflows of every tenant over one state ``store``; ``clear_after``: incident clear time."""

    def __init__(self, specs: Mapping[str, TenantWorkflows], store: MutableMapping[str, str],
                 clear_after: float = 300.0) -> None:
        self.specs = dict(specs)
        self.store = store
        self.clear_after = clear_after
        self._tenants: set[str] = set()
        self._scanned = -inf

    # -- inputs -----------------------------------------------------------------------------------

    def handle(self, item: Input, now: float) -> list[Effect]:
        """Apply one signal or control at engine time ``now``; the effects to carry out."""
        if isinstance(item, Control) and item.action == "tick":
            return self.tick(now, [item.tenant] if item.tenant else self.tenants())
        tx = Tx(self.store)
        ctx = _Ctx(self.specs.get(item.tenant), tx.tenant(item.tenant), now, tx)
        self._tenants.add(item.tenant)
        if isinstance(item, Signal):
            self._signal(ctx, item)
        else:
            self._control(ctx, item)
        tx.commit()
        return ctx.effects

    def tenants(self) -> list[str]:
        """Tenants with state (every tenant whose inputs reached this store): the store's keys are
        scanned at most every ``TENANT_SCAN_SECONDS`` (state can arrive from a changelog), and
        tenants of the inputs handled since are added."""
        if time.monotonic() >= self._scanned + TENANT_SCAN_SECONDS:
            self._tenants = {k[2:] for k in list(self.store.keys()) if k.startswith("t:")}
            self._scanned = time.monotonic()
        return sorted(self._tenants)

    def tick(self, now: float, tenants: Iterable[str]) -> list[Effect]:
        """Deadlines of ``tenants`` at ``now``: flushes, repeats, ack timeouts, lost calls, clearing."""
        effects: list[Effect] = []
        for tenant in tenants:
            tx = Tx(self.store)
            ctx = _Ctx(self.specs.get(tenant), tx.tenant(tenant), now, tx)
            state = ctx.tenant
            state.silences = [s for s in state.silences if s.ends_at > now]
            for gkey in [k for k, due in state.groups.items() if due <= now]:
                self._advance(ctx, gkey, exact=True)
            for ikey in [k for k, due in state.incidents.items() if due <= now]:
                incident: Incident | None = tx.get(ikey)
                if incident is None:
                    del state.incidents[ikey]
                elif incident.last_seen + self.clear_after <= now:
                    self._resolve_incident(ctx, ikey, "its anomalies cleared")
                else:
                    state.incidents[ikey] = incident.last_seen + self.clear_after
            if state.firing:  # what no workflow would still hold has cleared
                keep = max((w.resolve_after for w in ctx.spec.workflows), default=0.0) if ctx.spec else 0.0
                state.firing = {fp: s for fp, s in state.firing.items() if s.received + keep > now}
            tx.commit()
            effects += ctx.effects
        return effects

    def _signal(self, ctx: _Ctx, s: Signal) -> None:
        if silenced(ctx.tenant.silences, s, ctx.now, kind="maintenance"):
            return
        workflows = [w for w in (ctx.spec.workflows if ctx.spec else ())
                     if w.trigger.source == s.source and matches(w.trigger.match, s)]
        incident = self._correlate(ctx, s) if s.source == "anomalies" or workflows else None
        old = ctx.tenant.firing.get(s.fingerprint)
        if workflows and ctx.spec.inhibit and (old is None or old.severity != s.severity
                                               or ctx.now - old.received >= FIRING_REFRESH_SECONDS):
            ctx.tenant.firing[s.fingerprint] = msgspec.structs.replace(s, received=ctx.now)
        for w in workflows:
            self._add_to_group(ctx, w, s, incident)

    def _control(self, ctx: _Ctx, c: Control) -> None:
        if c.action == "silence":
            silence = Silence(**{**c.data, "matchers": Match(**c.data.get("matchers", {}))})
            ctx.tenant.silences = [x for x in ctx.tenant.silences if x.id != silence.id] + [silence]
        elif c.action == "expire":
            ctx.tenant.silences = [x for x in ctx.tenant.silences if x.id != c.data.get("id")]
        elif c.action in ("ack", "resolve"):
            self._operator(ctx, c)
        elif c.action == "answer":
            self._answer(ctx, c.data)
        else:
            raise ValueError(f"workflows: unknown control action {c.action!r}")

    # -- incidents --------------------------------------------------------------------------------

    def _correlate(self, ctx: _Ctx, s: Signal) -> Incident:
        """The open incident of the signal's service and region, joined; or a new one."""
        ikey = incident_key(s.tenant, s.service, s.region)
        incident: Incident | None = ctx.tx.get(ikey)
        now = ctx.now
        if incident is None:
            incident = Incident(id="inc-" + short_hash(s.tenant, s.service, s.region, s.ts), tenant=s.tenant,
                                service=s.service, region=s.region, title=s.title, severity=s.severity, status="open",
                                started_at=s.ts, updated_at=now, last_seen=now, labels=dict(s.labels))
            incident.note(now, "opened", s.title, severity=s.severity, series=s.fingerprint, source=s.source)
            ctx.tx.put(ikey, incident)
            ctx.tenant.incidents[ikey] = now + self.clear_after
            changed = True
        else:
            changed = False
            if SEVERITY_RANK[s.severity] > SEVERITY_RANK[incident.severity]:
                incident.severity = s.severity
                incident.note(now, "severity", f"raised to {s.severity}: {s.title}", series=s.fingerprint)
                changed = True
            if s.fingerprint not in incident.series:
                incident.note(now, "joined", s.title, severity=s.severity, series=s.fingerprint, source=s.source)
                changed = True
        if s.fingerprint not in incident.series and len(incident.series) < 100:
            incident.series.append(s.fingerprint)
        incident.signals += 1
        incident.last_seen = now
        if changed:
            self._publish_incident(ctx, incident)
        return incident

    def _publish_incident(self, ctx: _Ctx, incident: Incident) -> None:
        incident.updated_at = ctx.now
        ctx.effects.append(Effect("incident", incident.id, incident.public()))

    def _resolve_incident(self, ctx: _Ctx, ikey: str, why: str, by: str = "") -> None:
        """Resolve and publish it; its state goes (the table and topic keep it)."""
        incident: Incident = ctx.tx.get(ikey)
        ctx.tx.delete(ikey)
        ctx.tenant.incidents.pop(ikey, None)
        incident.status = "resolved"
        incident.resolved_at = ctx.now
        incident.note(ctx.now, "resolved", why, **({"by": by} if by else {}))
        self._publish_incident(ctx, incident)

    def _operator(self, ctx: _Ctx, c: Control) -> None:
        """An operator acknowledged or resolved an incident: its groups' runs follow."""
        ikey = next((k for k in ctx.tenant.incidents if (i := ctx.tx.get(k)) and i.id == c.incident), None)
        if ikey is None:
            return  # unknown or already resolved: nothing to do (the API said so)
        incident: Incident = ctx.tx.get(ikey)
        if c.action == "ack":
            if incident.status == "open":
                incident.status = "acknowledged"
                incident.note(ctx.now, "acknowledged", f"acknowledged by {c.by or 'someone'}", by=c.by)
                self._publish_incident(ctx, incident)
            for gkey in incident.groups:
                g: Group | None = ctx.tx.get(gkey)
                if g and g.run and g.run.state not in ENDED + ("acknowledged",):
                    w = ctx.spec.workflow(g.workflow)
                    g.run.enter("acknowledged", ctx.now, f"by {c.by or 'someone'}")
                    self._tell(ctx, w, g, "acknowledge", g.run.notified)
                    self._record_run(ctx, w, g)
            return
        self._resolve_incident(ctx, ikey, f"resolved by {c.by or 'someone'}", by=c.by)
        for gkey in incident.groups:
            g = ctx.tx.get(gkey)
            if g:  # its alerts end now
                g.alerts = {fp: (msgspec.structs.replace(a, seen=-inf) if a.incident == incident.id else a)
                            for fp, a in g.alerts.items()}
                self._advance(ctx, gkey)

    # -- groups -----------------------------------------------------------------------------------

    def _add_to_group(self, ctx: _Ctx, w: Workflow, s: Signal, incident: Incident | None) -> None:
        label = ",".join(f"{a}={s.attribute(a)}" for a in w.group.by)
        gkey = group_key(s.tenant, w.name, label)
        g: Group | None = ctx.tx.get(gkey)
        if g is None:
            g = Group(s.tenant, w.name, label)
            ctx.tx.put(gkey, g)
        if not g.alerts:
            g.since, g.times, g.firing = s.ts, [], False
        old = g.alerts.get(s.fingerprint)
        g.alerts[s.fingerprint] = Alert(s, old.first_ts if old else s.ts, ctx.now, incident.id if incident else "")
        if incident is not None and gkey not in incident.groups:
            incident.groups.append(gkey)
        g.last_ts = max(g.last_ts, s.ts)
        window = w.conditions.window
        g.times = [t for t in g.times if t > g.last_ts - window][-10_000:] + [s.ts] if window else []
        if not g.firing and conditions_met(w.conditions, g):
            g.firing = True
        if g.firing and g.flush_due is None:
            if g.run is None or g.run.state in ENDED:
                g.flush_due = ctx.now + w.group.wait
            elif old is None:  # a new alert in a notified group: told at the next group interval
                g.flush_due = max(ctx.now, g.last_flush + w.group.interval)
        self._advance(ctx, gkey)

    def _advance(self, ctx: _Ctx, gkey: str, exact: bool = False) -> None:
        """Everything due for the group at ``ctx.now``: clearing, flush or repeat, run deadlines;
        then when it is next due (``exact``: set it; else only bring it forward, so a signal
        does not rewrite the tenant's state)."""
        g: Group | None = ctx.tx.get(gkey)
        if g is None or ctx.spec is None or g.workflow not in {w.name for w in ctx.spec.workflows}:
            ctx.tx.delete(gkey)  # its workflow is gone
            ctx.tenant.groups.pop(gkey, None)
            return
        self._step_group(ctx, gkey, g, ctx.spec.workflow(g.workflow))
        if ctx.tx.get(gkey) is not None:
            due = self._due(ctx.spec.workflow(g.workflow), g)
            ctx.tenant.groups[gkey] = due if exact else min(due, ctx.tenant.groups.get(gkey, inf))

    @staticmethod
    def _due(w: Workflow, g: Group) -> float:
        """When the group must next be looked at: an alert clears, a flush, a repeat, a run's deadline."""
        times = [min(a.seen for a in g.alerts.values()) + w.resolve_after]
        if g.flush_due is not None:
            times.append(g.flush_due)
        run = g.run
        if run and run.state in ("waiting_ack", "calling"):
            times.append(run.deadline)
        if run and run.state in ("waiting_ack", "notified") and run.notified:
            times.append(g.last_flush + w.group.repeat)
        return min(times)

    def _step_group(self, ctx: _Ctx, gkey: str, g: Group, w: Workflow) -> None:
        now = ctx.now
        live = {fp: a for fp, a in g.alerts.items() if a.seen + w.resolve_after > now}
        run = g.run
        if not live:
            if run and run.state not in ENDED:  # told with the alerts that cleared
                self._finish(ctx, w, g, "resolved", "its alerts cleared")
            ctx.tx.delete(gkey)
            ctx.tenant.groups.pop(gkey, None)
            return
        g.alerts = live
        if g.flush_due is not None and now >= g.flush_due:
            self._flush(ctx, w, g)
        elif run and run.state in ("waiting_ack", "notified") and run.notified and now >= g.last_flush + w.group.repeat:
            self._flush(ctx, w, g)
        run = g.run
        if run and run.state == "waiting_ack" and now >= run.deadline:
            run.level += 1
            run.step += 1
            run.enter("running", now, f"no acknowledgement: escalating to level {run.level}")
            self._execute(ctx, w, g)
        elif run and run.state == "calling" and now >= run.deadline:
            self._branch(ctx, w, g, 0, {})  # the answer never came: as an error

    def _visible(self, ctx: _Ctx, spec: TenantWorkflows, g: Group) -> list[Alert]:
        firing = list(ctx.tenant.firing.values())
        return [a for a in g.alerts.values()
                if not silenced(ctx.tenant.silences, a.signal, ctx.now) and not inhibited(spec.inhibit, a.signal, firing)]

    def _flush(self, ctx: _Ctx, w: Workflow, g: Group) -> None:
        g.flush_due = None
        if not self._visible(ctx, ctx.spec, g):
            g.flush_due = ctx.now + w.group.interval  # muted now; look again later
            return
        g.flushes += 1
        g.last_flush = ctx.now
        if g.run is None or g.run.state in ENDED:
            g.runs += 1
            g.run = Run(id="run-" + short_hash(g.tenant, g.workflow, g.key, g.since, g.runs), started=ctx.now)
            g.run.enter("running", ctx.now, "the group fired")
            self._execute(ctx, w, g)
        elif g.run.state != "acknowledged":
            self._tell(ctx, w, g, "trigger", g.run.notified, sequence=g.flushes)

    # -- steps ------------------------------------------------------------------------------------

    def _execute(self, ctx: _Ctx, w: Workflow, g: Group) -> None:
        """Run steps from ``run.step`` until one waits (ack, webhook answer) or the steps end."""
        run = g.run
        while run.state == "running":
            if run.step >= len(w.steps):
                run.enter("notified", ctx.now, "every step done")
                self._record_run(ctx, w, g)
                return
            step = w.steps[run.step]
            if step.kind == "notify":
                self._tell(ctx, w, g, "trigger", step.receivers, step=run.step)
                run.notified += [r for r in step.receivers if r not in run.notified]
                run.step += 1
            elif step.kind == "enrich":
                run.enrich = step.bottlenecks
                run.step += 1
            elif step.kind == "wait_ack":
                run.deadline = ctx.now + step.timeout
                run.enter("waiting_ack", ctx.now, f"waiting {step.timeout:g}s for an acknowledgement")
            elif step.kind == "webhook":
                run.call += 1
                run.deadline = ctx.now + step.timeout + CALL_GRACE_SECONDS
                run.enter("calling", ctx.now, f"calling {step.receivers[0]}")
                gkey = group_key(g.tenant, g.workflow, g.key)
                ctx.effects.append(Effect("webhook", f"{run.id}:{run.call}", {
                    "tenant": g.tenant, "group": gkey, "run": run.id, "call": run.call, "timeout": step.timeout,
                    "receiver": ctx.spec.receivers[step.receivers[0]],
                    "payload": {**step.body, "incident": self._incident_of(ctx, g), "workflow": w.name,
                                "idempotency_key": f"{run.id}:{run.call}"}}))
            else:  # resolve
                for ikey in {incident_key(g.tenant, a.signal.service, a.signal.region) for a in g.alerts.values()}:
                    if ctx.tx.get(ikey) is not None:
                        self._resolve_incident(ctx, ikey, f"resolved by workflow {w.name}")
                self._finish(ctx, w, g, "resolved", "resolve step")

    def _answer(self, ctx: _Ctx, data: dict[str, Any]) -> None:
        g: Group | None = ctx.tx.get(data.get("group", ""))
        if g is None or g.run is None or g.run.id != data.get("run") or g.run.state != "calling" \
                or g.run.call != data.get("call"):
            return  # late or replayed answer of a call already decided
        self._branch(ctx, ctx.spec.workflow(g.workflow), g, int(data.get("status", 0)), data.get("json") or {})

    def _branch(self, ctx: _Ctx, w: Workflow, g: Group, status: int, answer: dict[str, Any]) -> None:
        """Go where the webhook step's first matching branch says (no match: the next step)."""
        run = g.run
        step = w.steps[run.step]
        target = next((b.goto for b in step.branch if _status_matches(b.status, status)
                       and isinstance(answer, dict) and all(answer.get(k) == v for k, v in b.json.items())), "next")
        run.step = w.step_index(target, run.step)
        run.enter("running", ctx.now, f"{step.receivers[0]} answered {status or 'nothing'}: going to {target}")
        self._execute(ctx, w, g)

    def _finish(self, ctx: _Ctx, w: Workflow, g: Group, state: str, why: str) -> None:
        run = g.run
        if state == "resolved" and w.send_resolved:
            self._tell(ctx, w, g, "resolve", run.notified)
        run.enter(state, ctx.now, why)
        self._record_run(ctx, w, g)

    def _record_run(self, ctx: _Ctx, w: Workflow, g: Group) -> None:
        """The run's record: on reaching the declared terminal state, and when it ends."""
        run = g.run
        if run.state == w.terminal or run.state in ENDED:
            ctx.effects.append(Effect("run", run.id, {
                "id": run.id, "tenant": g.tenant, "workflow": w.name, "group": g.key, "state": run.state,
                "terminal": w.terminal, "reached": w.terminal in run.reached, "started": run.started, "ts": ctx.now,
                "level": run.level, "history": run.history[-50:]}))

    # -- notifications ----------------------------------------------------------------------------

    def _incident_of(self, ctx: _Ctx, g: Group) -> dict[str, Any]:
        """The incident of the group's most severe, latest alert, as notifications show it."""
        a = max(g.alerts.values(), key=lambda a: (SEVERITY_RANK[a.signal.severity], a.signal.ts))
        incident: Incident | None = ctx.tx.get(incident_key(g.tenant, a.signal.service, a.signal.region))
        if incident is not None and incident.id == a.incident:
            return incident.public(limit=20)
        s = a.signal
        return {"id": a.incident or "grp-" + short_hash(g.tenant, g.workflow, g.key, g.since), "title": s.title,
                "severity": s.severity, "status": "open", "service": s.service, "region": s.region,
                "started_at": a.first_ts, "timeline": [], "labels": s.labels}

    def _tell(self, ctx: _Ctx, w: Workflow, g: Group, kind: str, receivers: Iterable[str], step: int = -1,
              sequence: int = 0) -> None:
        """One notification of ``kind`` per receiver (ids stable across replays)."""
        if not g.alerts and kind != "resolve":
            return
        run = g.run
        incident = self._incident_of(ctx, g) if g.alerts else {"id": run.id, "title": f"{w.name} {g.key}",
                                                               "severity": "info", "status": "resolved"}
        if kind == "resolve":
            incident = {**incident, "status": "resolved"}
        alerts = sorted(g.alerts.values(), key=lambda a: -a.signal.ts)
        related = [{"series": a.signal.fingerprint, "service": a.signal.service, "region": a.signal.region,
                    "severity": a.signal.severity, "title": a.signal.title, "ts": a.signal.ts, "value": a.signal.value,
                    "incident": a.incident} for a in alerts[:20]]
        source_ts = alerts[0].signal.ts if alerts else ctx.now
        label = f"{g.key}#{run.id}" + (f"#{sequence}" if sequence else "")
        for name in receivers:
            n = Notification(
                id=notification_id(g.tenant, w.name, label, str(incident["id"]), step, kind, name, run.level),
                tenant=g.tenant, workflow=w.name, kind=kind, receiver=ctx.spec.receivers[name], incident=incident,
                enrichment={"alerts": related, "group": {"key": g.key, "alerts": len(g.alerts)}, "level": run.level},
                created_ts=ctx.now, source_ts=source_ts)
            ctx.effects.append(Effect("notification", n.id, n, enrich=run.enrich))
