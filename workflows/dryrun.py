"""``m1 workflows test``: what a workflow file would do with one event, on a simulated clock.

The event (a record of the trigger's source topic) is fed to a fresh in-memory engine at its own
time, again every ``every`` seconds for ``lasting`` seconds, and the clock ticks each second
until nothing is pending (or ``horizon``); webhook steps get ``answer``, acknowledgements never
come. Nothing is sent anywhere.

>>> from workflows.spec import parse
>>> spec = parse('''
... tenant: acme
... receivers: [{name: ops, type: webhook, url: "http://127.0.0.1:9/hook"}]
... workflows:
...   - {name: w, trigger: {source: anomalies}, group: {wait: 10s}, resolve_after: 1m, steps: [{notify: [ops]}]}
... ''')
>>> event = b'{"ts": 0, "tenant": "acme", "region": "eu", "service": "api", "metric": "m", "series": "acme|eu|api|m|",'
>>> event += b' "value": 1, "score": 0.9, "severity": "critical", "detector": "d"}'
>>> for line in dry_run(spec, "anomalies", event): print(line)
+0s incident inc-... open: m of api in eu is anomalous (score 0.90)
+10s notify ops (webhook) trigger: m of api in eu is anomalous (score 0.90)
+60s notify ops (webhook) resolve: m of api in eu is anomalous (score 0.90)
+60s run run-... resolved (declared terminal: resolved)
+300s incident inc-... resolved: m of api in eu is anomalous (score 0.90)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import msgspec

from workflows.engine import Effect, Engine
from workflows.signals import Control, from_source
from workflows.spec import TenantWorkflows


def describe(effect: Effect) -> str:
    """One line for an effect."""
    v = effect.value
    if effect.kind == "notification":
        return f"notify {v.receiver.name} ({v.receiver.type}) {v.kind}: {v.incident.get('title', '')}"
    if effect.kind == "incident":
        return f"incident {v['id']} {v['status']}: {v['title']}"
    if effect.kind == "run":
        return f"run {v['id']} {v['state']} (declared terminal: {v['terminal']})"
    return f"call {v['receiver'].name} ({v['receiver'].url}) with {sorted(v['payload'])}"


def dry_run(spec: TenantWorkflows, source: str, record: bytes, lasting: float = 0.0, every: float = 60.0,
            answer: dict[str, Any] | None = None, horizon: float = 86400.0, clear_after: float = 300.0,
            ids: bool = False) -> Iterator[str]:
    """Lines ``+<seconds>s <what happens>`` (ids shortened to ``...`` unless ``ids``)."""
    answer = {"status": 200, "json": {}} if answer is None else answer
    signal = from_source(source, record)
    engine = Engine({spec.tenant: spec}, {}, clear_after=clear_after)
    start, now, next_event, last_event = signal.ts, signal.ts, signal.ts, signal.ts + lasting
    while now <= start + horizon:
        effects = []
        if next_event <= last_event and now >= next_event:
            effects += engine.handle(signal, now)
            next_event += every
            signal = msgspec.structs.replace(signal, ts=next_event)
        effects += engine.tick(now, [spec.tenant])
        for effect in effects:
            text = describe(effect)
            yield f"+{now - start:g}s " + (text if ids else re.sub(r"(inc|run)-[0-9a-f]{16}", r"\1-...", text))
            if effect.kind == "webhook":
                effects.extend(engine.handle(Control("answer", tenant=spec.tenant, data={
                    "group": effect.value["group"], "run": effect.value["run"], "call": effect.value["call"], **answer}), now))
        if next_event > last_event and not any(k.startswith(("g:", "i:")) for k in engine.store):
            return  # no more events, no group, no incident: nothing more can happen
        now += 1.0
