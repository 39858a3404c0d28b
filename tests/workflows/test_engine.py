"""The engine's pure core, driven by signals, controls and an injected clock (no I/O)."""

from __future__ import annotations

import msgspec
import pytest

from schemas.events import RegionEvent, encode
from streams.forecast_pipeline import CostEvent
from workflows.engine import Effect, Engine
from workflows.signals import Control, Signal, from_source
from workflows.spec import parse

SPEC = """
tenant: acme
receivers:
  - {name: chat, type: slack, url: "http://127.0.0.1:9/slack"}
  - {name: pager, type: pagerduty, url: "http://127.0.0.1:9/pd", secret_ref: "env:PD_KEY"}
  - {name: scaler, type: webhook, url: "http://127.0.0.1:9/scale"}
inhibit:
  - {source: {severity: critical}, target: {severity: warning}, equal: [service]}
workflows:
  - name: oncall
    trigger: {source: anomalies, match: {service: [api, web], labels: {env: prod}}}
    group: {by: [service, region], wait: 30s, interval: 5m, repeat: 1h}
    resolve_after: 5m
    steps:
      - enrich: {bottlenecks: 15m}
      - notify: [chat]
      - wait_ack: {timeout: 10m}
      - notify: [pager]
"""


def sig(ts: float, service: str = "api", severity: str = "critical", metric: str = "latency_ms",
        region: str = "eu", env: str = "prod", tenant: str = "acme") -> Signal:
    return Signal(ts=ts, tenant=tenant, source="anomalies", service=service, region=region, severity=severity,
                  fingerprint=f"{tenant}|{region}|{service}|{metric}|env={env}", title=f"{metric} of {service}",
                  labels={"env": env, "metric": metric})


def engine(text: str = SPEC, store: dict | None = None) -> Engine:
    spec = parse(text)
    return Engine({spec.tenant: spec}, {} if store is None else store, clear_after=300.0)


def told(effects: list[Effect], kind: str = "trigger") -> list[str]:
    return [e.value.receiver.name for e in effects if e.kind == "notification" and e.value.kind == kind]


def test_group_wait_then_first_notification_with_enrichment_request() -> None:
    e = engine()
    assert told(e.handle(sig(100), now=100)) == []  # group_wait
    assert told(e.handle(sig(110, metric="errors"), now=110)) == []
    assert told(e.tick(129, e.tenants())) == []
    effects = e.tick(130, e.tenants())
    (n,) = [x for x in effects if x.kind == "notification"]
    assert n.value.receiver.name == "chat" and n.enrich == 900.0
    assert n.value.incident["service"] == "api" and n.value.incident["status"] == "open"
    assert {a["series"] for a in n.value.enrichment["alerts"]} == {"acme|eu|api|latency_ms|env=prod",
                                                                     "acme|eu|api|errors|env=prod"}
    assert n.value.source_ts == 110


def test_no_match_no_group_but_anomalies_still_make_incidents() -> None:
    e = engine()
    effects = e.handle(sig(100, service="db"), now=100) + e.handle(sig(100, env="dev"), now=100)
    assert told(effects) == [] and not [k for k in e.store if k.startswith("g:")]
    assert [x.value["service"] for x in effects if x.kind == "incident"] == ["db", "api"]


def test_ack_timeout_escalates_then_ack_stops_it_and_resolve_goes_to_everyone_told() -> None:
    e = engine()
    e.handle(sig(0), now=0)
    assert told(e.tick(30, e.tenants())) == ["chat"]
    for t in range(60, 630, 60):  # keep the anomaly alive, no ack
        e.handle(sig(t), now=t)
    effects = e.tick(630, e.tenants())
    assert told(effects) == ["pager"]
    (n,) = [x.value for x in effects if x.kind == "notification"]
    assert n.enrichment["level"] == 1
    incident = n.incident["id"]
    effects = e.handle(Control("ack", tenant="acme", incident=incident, by="ann"), now=640)
    assert told(effects, "acknowledge") == ["chat", "pager"]
    acks = [x.value.id for x in effects if x.kind == "notification"]
    assert len(set(acks)) == 2  # one id a receiver: delivery skips an id it has finished
    assert [x.value["status"] for x in effects if x.kind == "incident"] == ["acknowledged"]
    for t in range(660, 4400, 120):  # acknowledged: no repeat, no escalation while the anomaly goes on
        assert told(e.handle(sig(t), now=t) + e.tick(t, e.tenants())) == []
    effects = e.tick(4380 + 300, e.tenants())  # 5 minutes without it: resolved, told to both
    assert told(effects, "resolve") == ["chat", "pager"]
    assert len({x.value.id for x in effects if x.kind == "notification"}) == 2
    (run,) = [x.value for x in effects if x.kind == "run"]
    assert run["state"] == "resolved" and run["reached"] and run["level"] == 1


def test_clearing_resolves_the_incident_and_sends_resolve() -> None:
    e = engine()
    e.handle(sig(0), now=0)
    e.tick(30, e.tenants())
    effects = e.tick(299, e.tenants())
    assert told(effects, "resolve") == []
    effects = e.tick(300, e.tenants())
    assert told(effects, "resolve") == ["chat"]
    (run,) = [x.value for x in effects if x.kind == "run"]
    assert run["state"] == "resolved" and run["reached"] and run["terminal"] == "resolved"
    assert [x.value["status"] for x in effects if x.kind == "incident"] == ["resolved"]
    assert e.store.keys() == {"t:acme"}
    # a later anomaly opens a new incident
    new = [x.value for x in e.handle(sig(1000), now=1000) if x.kind == "incident"]
    assert new[0]["status"] == "open" and new[0]["id"] != run["id"]


def test_group_interval_tells_new_alerts_and_repeat_retells() -> None:
    e = engine(SPEC.replace("      - wait_ack: {timeout: 10m}\n      - notify: [pager]\n", ""))
    e.handle(sig(0), now=0)
    first = [x.value for x in e.tick(30, e.tenants()) if x.kind == "notification"]
    assert told(e.handle(sig(40, metric="errors"), now=40)) == []  # within group_interval
    assert told(e.handle(sig(200), now=200) + e.handle(sig(200, metric="errors"), now=200)) == []
    update = [x.value for x in e.tick(330, e.tenants()) if x.kind == "notification"]
    assert [n.receiver.name for n in update] == ["chat"] and update[0].id != first[0].id
    assert len(update[0].enrichment["alerts"]) == 2
    for t in range(400, 3700, 200):  # nothing new: told again after repeat_interval (1h) only
        assert told(e.handle(sig(t), now=t) + e.handle(sig(t, metric="errors"), now=t) + e.tick(t, e.tenants())) == []
    repeat = [x.value for x in e.tick(3930, e.tenants()) if x.kind == "notification"]
    assert [n.receiver.name for n in repeat] == ["chat"] and repeat[0].id not in {first[0].id, update[0].id}


def test_inhibition_and_silences_mute_but_keep_state() -> None:
    e = engine()
    e.handle(sig(0, severity="critical", region="eu"), now=0)  # fires group api/eu
    e.handle(sig(0, severity="warning", region="us"), now=0)  # api/us: inhibited (same service)
    effects = e.tick(30, e.tenants())
    assert [n.value.incident["region"] for n in effects if n.kind == "notification"] == ["eu"]
    e.handle(Control("silence", tenant="acme", data={"id": "s1", "tenant": "acme", "starts_at": 0, "ends_at": 1000,
                                                       "matchers": {"service": ["web"]}}), now=31)
    e.handle(sig(40, service="web"), now=40)
    assert told(e.tick(70, e.tenants())) == []  # silenced: looked at again after group_interval
    e.handle(Control("expire", tenant="acme", data={"id": "s1"}), now=80)
    for t in (100, 200, 300):
        e.handle(sig(t, service="web"), now=t)
    assert told(e.tick(370, e.tenants())) == ["chat"]


def test_maintenance_window_drops_signals_entirely() -> None:
    e = engine()
    e.handle(Control("silence", tenant="acme", data={"id": "m", "tenant": "acme", "starts_at": 0, "ends_at": 100,
                                                       "kind": "maintenance", "matchers": {"region": ["eu"]}}), now=0)
    assert e.handle(sig(10), now=10) == []
    assert e.handle(sig(110), now=110) != []  # the window ended: an incident opens


CONDITIONS = SPEC.replace("resolve_after: 5m", "resolve_after: 5m\n    conditions: {for: 2m, count: {at_least: 3, within: 5m}}")


def test_conditions_for_and_count() -> None:
    e = engine(CONDITIONS)
    e.handle(sig(0), now=0)
    e.handle(sig(60), now=60)
    assert told(e.tick(200, e.tenants())) == []  # 2 signals, 1 minute
    e.handle(sig(120), now=120)
    assert told(e.tick(149, e.tenants())) == []  # group_wait from 120
    assert told(e.tick(150, e.tenants())) == ["chat"]


WEBHOOK = """
tenant: acme
receivers:
  - {name: chat, type: slack, url: "http://127.0.0.1:9/slack"}
  - {name: scaler, type: webhook, url: "http://127.0.0.1:9/scale"}
workflows:
  - name: autoscale
    terminal: resolved
    trigger: {source: anomalies}
    group: {by: [service], wait: 0s}
    steps:
      - webhook: {receiver: scaler, body: {action: add_replicas, count: 2}, timeout: 5s}
        branch:
          - {status: 2xx, json: {scaled: true}, goto: fixed}
          - {goto: next}
      - notify: [chat]
      - {id: fixed, resolve: {}}
"""


@pytest.mark.parametrize("status,answer,expected", [(200, {"scaled": True}, []), (200, {"scaled": False}, ["chat"]),
                                                    (503, {}, ["chat"]), (None, None, ["chat"])])
def test_webhook_branches_on_its_answer(status: int | None, answer: dict | None, expected: list[str]) -> None:
    e = engine(WEBHOOK)
    (call,) = [x for x in e.handle(sig(0), now=0) if x.kind == "webhook"]
    assert call.value["payload"]["action"] == "add_replicas" and call.value["receiver"].name == "scaler"
    data = {k: call.value[k] for k in ("group", "run", "call")}
    if status is None:  # the answer never comes (the worker died mid-call): taken as an error after the grace
        assert e.tick(34, e.tenants()) == []
        effects = e.tick(35, e.tenants())
    else:
        effects = e.handle(Control("answer", tenant="acme", data={**data, "status": status, "json": answer}), now=1)
        assert e.handle(Control("answer", tenant="acme", data={**data, "status": status, "json": answer}), now=2) == []
    assert told(effects) == expected
    (run,) = [x.value for x in effects if x.kind == "run"]  # both ways end at the resolve step
    assert run["state"] == "resolved" and run["reached"]
    assert told(effects, "resolve") == expected


def test_state_survives_a_new_engine_on_the_same_store() -> None:
    store: dict = {}
    engine(store=store).handle(sig(0), now=0)
    assert told(engine(store=store).tick(30, ["acme"])) == ["chat"]
    assert all(isinstance(v, str) for v in store.values())


def test_notification_ids_are_stable_across_a_replay() -> None:
    ids = []
    for _ in range(2):
        e = engine()
        e.handle(sig(0), now=0)
        ids.append([x.key for x in e.tick(30, e.tenants()) if x.kind == "notification"])
    assert ids[0] == ids[1] and len(ids[0]) == 1


def test_operator_resolve_ends_the_run() -> None:
    e = engine()
    e.handle(sig(0), now=0)
    (n,) = [x.value for x in e.tick(30, e.tenants()) if x.kind == "notification"]
    effects = e.handle(Control("resolve", tenant="acme", incident=n.incident["id"], by="bob"), now=40)
    assert told(effects, "resolve") == ["chat"]
    assert [x.value["state"] for x in effects if x.kind == "run"] == ["resolved"]
    assert [x.value["status"] for x in effects if x.kind == "incident"] == ["resolved"]


def test_a_signal_of_a_known_alert_does_not_rewrite_the_tenant_state() -> None:
    e = engine()
    e.handle(sig(0), now=0)
    e.tick(30, e.tenants())
    before = e.store["t:acme"]
    e.handle(sig(20), now=20)
    assert e.store["t:acme"] == before  # only the group and the incident changed (one changelog record each)
    assert e.tick(21, e.tenants()) == [] and e.store["t:acme"] == before  # nothing due: no group looked at


def test_sources_as_their_producers_write_them() -> None:
    event = RegionEvent(ts=5.0, tenant="platform", region="eu-west", kind="failover", observer="us-east",
                        previous="degraded", state="down", reason="no heartbeat for 3 s")
    s = from_source("region_events", encode(event))
    assert (s.tenant, s.region, s.severity, s.labels, s.source) == ("platform", "eu-west", "critical",
                                                                    {"event": "failover"}, "region_events")
    cost = CostEvent(ts=1.0, tenant="acme", region="eu", service="api", metric="cost_usd", series="acme|eu|api|cost_usd|",
                     period="month", until=2.0, spent=10.0, point=90.0, lower=80.0, upper=99.0, total=100.0,
                     coverage=0.9, model="cost")
    c = from_source("costs", msgspec.json.encode(cost))
    assert (c.value, c.labels["period"], c.severity) == (100.0, "month", "info")
    with pytest.raises(ValueError, match="not a cost projection"):
        from_source("costs", b'{"kind": "forecast", "ts": 1}')
