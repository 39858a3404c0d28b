"""docs/integrations.md: every example workflow file is valid and its receivers pass
``m1 integrations check`` once their secrets exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from integrations.cli import problems
from integrations.registry import CLIENTS
from m1.cli import app
from workflows.spec import parse

DOC = Path(__file__).parents[2] / "docs" / "integrations.md"
EXAMPLES = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)


def test_there_is_an_example_for_every_receiver_type() -> None:
    types = {r.type for text in EXAMPLES for r in parse(text).receivers.values()}
    assert types == set(CLIENTS)


@pytest.mark.parametrize("text", EXAMPLES)
def test_each_example_parses_and_its_receivers_check_out(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = parse(text)
    for receiver in spec.receivers.values():
        found = problems(receiver)  # the secrets are not on this machine: only those may be missing
        assert all(p.startswith("secret ") for p in found), found


def test_check_command_passes_when_the_secrets_exist_and_fails_when_not(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    text = next(t for t in EXAMPLES if "type: pagerduty" in t)
    path = tmp_path / "acme.yaml"
    path.write_text(text)
    runner = CliRunner()
    missing = runner.invoke(app, ["integrations", "check", str(path)])
    assert missing.exit_code == 1 and "ACME_PD_ROUTING_KEY" in missing.output
    monkeypatch.setenv("ACME_PD_ROUTING_KEY", "R0UTING")
    ok = runner.invoke(app, ["integrations", "check", str(path)])
    assert ok.exit_code == 0, ok.output
    assert "R0UTING" not in ok.output


def test_send_test_makes_one_signed_attempt_and_reports_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``m1 integrations send-test`` against the local vendor-like server (run in its own thread)."""
    from tests.integrations.conftest import SECRET
    from tests.integrations.fake_vendors import vendors_in_thread

    with vendors_in_thread(secret=SECRET) as vendors:
        path = tmp_path / "acme.yaml"
        path.write_text("tenant: acme\n"
                        f"receivers: [{{name: hook, type: webhook, url: '{vendors.url}/hooks/x', secret_ref: 'env:M1_T_WHSEC'}}]\n"
                        "workflows: [{name: w, trigger: {source: anomalies}, steps: [{notify: [hook]}]}]\n")
        monkeypatch.setenv("M1_T_WHSEC", SECRET)
        result = CliRunner().invoke(app, ["integrations", "send-test", str(path), "-r", "hook", "--kind", "resolve"])
        assert result.exit_code == 0, result.output
        assert '"delivered": true' in result.output
        [(_, headers, body)] = vendors.requests
        assert b'"type":"incident.resolve"' in body and headers["webhook-signature"].startswith("v1,")
        vendors.script("/hooks", [503])
        failed = CliRunner().invoke(app, ["integrations", "send-test", str(path), "-r", "hook"])
        assert failed.exit_code == 1 and '"status": 503' in failed.output
