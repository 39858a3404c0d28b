"""The engine in a real worker on the real broker: state in the Faust table survives a SIGKILL.

An anomaly fires a workflow (notify, wait for an ack, escalate); the worker is killed while the
run waits for the ack; the restarted worker reads the table back from its changelog and escalates
on time, with the same run and incident; an ack through the API (``m1 incidents ack``) is told to
both receivers; when the anomalies stop, the incident resolves and the resolve notifications go.
Silences go through ``m1 silences`` and the API into the engine and the table.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from core.settings import Settings
from tests.helpers import add_tenant, m1_in_process as m1, produce, read_json, scalar, start_worker, wait_for

WORKFLOWS = """
tenant: acme
receivers:
  - {name: chat, type: webhook, url: "http://127.0.0.1:9/chat"}
  - {name: pager, type: webhook, url: "http://127.0.0.1:9/pager"}
workflows:
  - name: oncall
    trigger: {source: anomalies, match: {service: api}}
    group: {by: [service, region], wait: 0s, interval: 5s}
    resolve_after: 25s  # well after the ack, which follows the escalation (10 s after the first notification)
    steps:
      - notify: [chat]
      - wait_ack: {timeout: 10s}
      - notify: [pager]
"""


def anomaly(ts: float, metric: str = "latency_ms") -> tuple[bytes, bytes]:
    series = f"acme|eu|api|{metric}|"
    return series.encode(), json.dumps({
        "ts": ts, "tenant": "acme", "region": "eu", "service": "api", "metric": metric, "series": series,
        "value": 900.0, "score": 0.9, "severity": "critical", "detector": "ensemble"}).encode()


def notifications(settings: Settings, until, timeout: float = 60) -> list[dict]:  # noqa: ANN001
    return read_json(settings, settings.topic_notifications, until, timeout=timeout)


def told(records: list[dict], receiver: str, kind: str) -> set[str]:
    return {n["id"] for n in records if n["receiver"]["name"] == receiver and n["kind"] == kind}


@pytest.mark.kafka
def test_state_survives_sigkill_and_ack_resolve_through_the_api(make_settings, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    (tmp_path / "wf").mkdir()
    (tmp_path / "wf" / "acme.yaml").write_text(WORKFLOWS)
    settings = make_settings(workflows_dir=tmp_path / "wf", topic_workflow_signals=f"wf-signals-{run}",
                             topic_incidents=f"incidents-{run}", topic_workflow_runs=f"wf-runs-{run}",
                             topic_notifications=f"notifications-{run}", topic_region_events=f"region-events-{run}",
                             workflow_tick_seconds=0.5, incident_clear_seconds=25.0)
    add_tenant(settings, "acme")
    workers = []
    try:
        workers.append(start_worker(settings))
        worker = workers[-1]
        produce(settings, [anomaly(time.time())], topic=settings.topic_anomalies)
        first = notifications(settings, lambda ns: told(ns, "chat", "trigger"))
        assert told(first, "chat", "trigger") and not told(first, "pager", "trigger")
        (n,) = [x for x in first if x["receiver"]["name"] == "chat"]
        assert n["incident"]["service"] == "api" and n["incident"]["status"] == "open"
        assert n["enrichment"]["alerts"][0]["series"] == "acme|eu|api|latency_ms|"
        incident = n["incident"]["id"]
        worker.kill()  # the run waits for an ack: its state is only in the table's changelog now

        workers.append(start_worker(settings))
        worker = workers[-1]
        produce(settings, [anomaly(time.time())], topic=settings.topic_anomalies)  # still anomalous
        escalated = notifications(settings, lambda ns: bool(told(ns, "pager", "trigger") and told(ns, "chat", "trigger")))
        (page,) = [x for x in escalated if x["receiver"]["name"] == "pager"]
        assert page["incident"]["id"] == incident and page["enrichment"]["level"] == 1
        assert len(told(escalated, "chat", "trigger")) == 1  # the first notification was not made again

        assert wait_for(lambda: scalar(settings, f"SELECT count() FROM incidents FINAL WHERE id = '{incident}'") == 1, 30)
        acked = m1(settings, "incidents", "ack", incident, "--tenant", "acme")
        assert acked.exit_code == 0, acked.output
        after_ack = notifications(settings, lambda ns: bool(told(ns, "chat", "acknowledge") and told(ns, "pager", "acknowledge")))
        assert told(after_ack, "chat", "acknowledge") and told(after_ack, "pager", "acknowledge")
        changes = read_json(settings, settings.topic_incidents, lambda rs: any(r["status"] == "acknowledged" for r in rs))
        assert [r["status"] for r in changes if r["id"] == incident][:2] == ["open", "acknowledged"]

        silenced = m1(settings, "silences", "add", "--tenant", "acme", "--for", "1h", "--service", "web", "--comment", "deploy")
        assert silenced.exit_code == 0, silenced.output
        silence_id = silenced.stdout.split()[1]
        listed = m1(settings, "silences", "list", "--tenant", "acme")
        assert silence_id in listed.stdout and "deploy" in listed.stdout
        assert m1(settings, "silences", "expire", silence_id, "--tenant", "acme").exit_code == 0
        assert silence_id not in m1(settings, "silences", "list", "--tenant", "acme").stdout

        # no more anomalies: 25 s after the last one the group and the incident resolve, and both receivers are told
        resolved = notifications(settings, lambda ns: bool(told(ns, "chat", "resolve") and told(ns, "pager", "resolve")),
                                 timeout=120)  # resolve_after (25 s) from the last anomaly
        assert told(resolved, "chat", "resolve") and told(resolved, "pager", "resolve")
        assert wait_for(lambda: scalar(settings, f"SELECT status FROM incidents FINAL WHERE id = '{incident}'") == "resolved", 60)
        kinds = scalar(settings, f"SELECT groupArray(kind) FROM (SELECT kind FROM incident_timeline FINAL "
                                 f"WHERE incident_id = '{incident}' ORDER BY ts)")
        assert list(kinds) == ["opened", "acknowledged", "resolved"], kinds
        assert wait_for(lambda: scalar(settings, "SELECT countIf(reached AND state = 'resolved') FROM workflow_runs FINAL") == 1, 30)
        listed = m1(settings, "incidents", "list", "--tenant", "acme", "--status", "resolved")
        assert incident in listed.stdout, listed.output
        assert worker.stop() == 0
    finally:  # a failed run leaves no worker behind
        for w in workers:
            w.kill()
