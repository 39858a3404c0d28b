"""The audit trail in a real worker (real broker, real engine): SIGKILL mid-chain, the replay that
follows adds nothing, and the log verifies with the commands an operator and an auditor run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from core.settings import Settings
from core.child_env import settings_env
from tests.audit.support import payload
from tests.helpers import add_tenant, m1_in_process, produce, read_json, scalar, start_worker, wait_for

TENANT, EVENTS = "acme", 300


def m1(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "m1.cli", "audit", *args], env=settings_env(settings),
                          capture_output=True, text=True, timeout=120)


def chained(settings: Settings) -> tuple[int, int, int]:
    row = scalar(settings, f"SELECT tuple(count(), uniqExact(id), max(seq)) FROM audit_log WHERE tenant = '{TENANT}'")
    return tuple(int(v) for v in row)  # type: ignore[union-attr]


@pytest.mark.kafka
def test_sigkill_mid_chain_then_replay_verifies(make_settings, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    settings = make_settings(topic_audit=f"audit-{run}", topic_audit_checkpoints=f"audit-heads-{run}", batch_size=20,
                             snapshot_seconds=60.0, audit_checkpoint_events=50, audit_checkpoint_seconds=1.0)
    records = [(TENANT.encode(), payload(TENANT, i)) for i in range(EVENTS)]
    worker = start_worker(settings)
    produce(settings, records[:200], topic=settings.topic_audit)
    assert wait_for(lambda: chained(settings)[0] >= 60, timeout=60, interval=0.05)
    worker.kill()  # mid-chain, and before any offset was committed (snapshot_seconds=60): all 200 come again
    produce(settings, records[200:] + records[:10], topic=settings.topic_audit)  # and a producer's own retry
    worker = start_worker(settings)
    assert wait_for(lambda: chained(settings) == (EVENTS, EVENTS, EVENTS - 1), timeout=90), chained(settings)
    assert wait_for(lambda: int(scalar(settings, "SELECT count() FROM audit_log WHERE tenant = 'platform' "
                                                 "AND action = 'config.start'")) == 2, timeout=30)
    assert int(scalar(settings, "SELECT count() FROM audit_log WHERE action = 'api.request'")) > 0  # our own queries
    heads = read_json(settings, settings.topic_audit_checkpoints, lambda hs: any(h["tree_size"] == EVENTS for h in hs))
    assert any(h["tenant"] == TENANT and h["tree_size"] == EVENTS for h in heads)
    add_tenant(settings, TENANT)
    through_api = m1_in_process(settings, "audit", "verify")  # the worker holds the store: its API verifies
    assert through_api.exit_code == 0 and f"{TENANT}: intact" in through_api.stdout, through_api.output
    event_id = str(scalar(settings, f"SELECT id FROM audit_log WHERE tenant = '{TENANT}' AND seq = 123"))
    from_api = m1_in_process(settings, "audit", "prove", event_id, "--tenant", TENANT)
    assert from_api.exit_code == 0 and json.loads(from_api.stdout)["leaf_index"] == 123, from_api.output
    (tmp_path / "proof.json").write_text(from_api.stdout)
    assert worker.stop() == 0

    verified = m1(settings, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    counted = re.search(rf"{TENANT}: intact \((\d+) events", verified.stdout)
    # + the API's audit of the verification and the proof above, those chained before the stop (the rest wait on
    # the topic for the next worker)
    assert counted and EVENTS <= int(counted[1]) <= EVENTS + 2
    proof = m1(settings, "prove", event_id)  # the store opened directly
    assert proof.returncode == 0 and json.loads(proof.stdout)["leaf_index"] == 123, proof.stderr
    history = json.loads((settings.home / "audit-signing.key.history.json").read_text())["keys"]
    (tmp_path / "public.pem").write_text(history[-1]["public_key"])
    checked = m1(settings, "verify-proof", str(tmp_path / "proof.json"), "--public-key", str(tmp_path / "public.pem"))
    assert checked.returncode == 0 and "proof holds" in checked.stdout, checked.stdout + checked.stderr
    assert m1(settings, "consistency", "--tenant", TENANT, "--from", "50", "--to", str(EVENTS)).returncode == 0

    rotated = m1(settings, "rotate-key")
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    assert len(json.loads((settings.home / "audit-signing.key.history.json").read_text())["keys"]) == 2
    assert m1(settings, "verify").returncode == 0  # heads of the retired key still verify
    direct(settings, "ALTER TABLE audit_log UPDATE event = replace(event, 'key:abc', 'key:abd') "
                     f"WHERE tenant = '{TENANT}' AND seq = 77 SETTINGS mutations_sync = 1")
    tampered = m1(settings, "verify", "--tenant", TENANT)
    assert tampered.returncode == 1 and "first bad seq 77" in tampered.stdout, tampered.stdout + tampered.stderr


def direct(settings: Settings, sql: str) -> None:
    """Run a statement on the store opened directly, in a child process (as an intruder with the files would)."""
    code = "import sys; from core.settings import Settings; from sinks.clickhouse import Store, connect; " \
           "Store(connect(Settings())).command(sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, sql], env=settings_env(settings), timeout=120, check=True)
