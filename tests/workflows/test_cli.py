"""``m1 workflows validate|list|test`` on real files, and what the schema refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from m1.cli import app
from workflows.spec import SpecError, parse, schema

EXAMPLE = Path(__file__).parents[2] / "workflows" / "examples" / "acme.yaml"
runner = CliRunner()


def anomaly(metric: str) -> str:
    return json.dumps({"ts": 1_700_000_000, "tenant": "acme", "region": "eu", "service": "checkout", "metric": metric,
                       "series": f"acme|eu|checkout|{metric}|", "value": 950, "score": 0.81, "severity": "critical",
                       "detector": "ensemble"})


def test_validate_and_list_the_example() -> None:
    result = runner.invoke(app, ["workflows", "validate", str(EXAMPLE)])
    assert result.exit_code == 0 and "tenant acme, 2 workflow(s)" in result.output
    listed = runner.invoke(app, ["workflows", "list", str(EXAMPLE.parent)], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "latency-oncall" in listed.output and "autoscale" in listed.output


def test_validate_names_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("notify: [pagerduty-l2]", "notify: [nobody]")
                   .replace("wait: 30s", "wait: soon"))
    result = runner.invoke(app, ["workflows", "validate", str(bad), str(EXAMPLE)], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "workflows.0.group.wait" in result.output and "ok" in result.output  # the schema's complaint, the good file
    bad.write_text(EXAMPLE.read_text().replace("notify: [pagerduty-l2]", "notify: [nobody]"))
    result = runner.invoke(app, ["workflows", "validate", str(bad)], env={"COLUMNS": "200"})
    assert result.exit_code == 1 and "unknown receiver 'nobody'" in result.output


@pytest.mark.parametrize("change,problem", [
    ('secret_ref: "env:ACME_PD_ROUTING_KEY"', 'secret_ref: "s3cr3t-in-clear"'),  # secrets by reference only
    ("goto: done", "goto: nowhere"),
    ("terminal: resolved", "terminal: someday"),
    ("source: anomalies", "source: tweets"),
])
def test_the_schema_and_the_checks_refuse(change: str, problem: str) -> None:
    text = EXAMPLE.read_text()
    assert change in text
    with pytest.raises(SpecError):
        parse(text.replace(change, problem, 1))


def test_the_schema_ships_in_the_package() -> None:
    assert schema()["title"] == "M1 alert workflows of one tenant"


def test_dry_run_shows_grouping_conditions_and_resolution() -> None:
    result = runner.invoke(app, ["workflows", "test", str(EXAMPLE), "--event", anomaly("latency_ms"), "--lasting", "3m"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("+0s incident inc-... open")
    assert lines[1].startswith("+90s notify oncall-slack (slack) trigger")  # count 2 within 5m, then group wait 30s
    assert any(line.startswith("+480s notify oncall-slack (slack) resolve") for line in lines)
    assert any("run run-... resolved (declared terminal: resolved)" in line for line in lines)


@pytest.mark.parametrize("answer,told", [('{"status": 200, "json": {"scaled": true}}', False),
                                         ('{"status": 503, "json": {}}', True)])
def test_dry_run_branches_on_the_webhook_answer(answer: str, told: bool) -> None:
    result = runner.invoke(app, ["workflows", "test", str(EXAMPLE), "--event", anomaly("requests_per_s"),
                                 "--answer", answer])
    assert result.exit_code == 0, result.output
    assert "call scaler" in result.output
    assert ("notify oncall-slack (slack) trigger" in result.output) == told


def test_dry_run_refuses_a_record_that_is_not_one() -> None:
    result = runner.invoke(app, ["workflows", "test", str(EXAMPLE), "--event", '{"ts": 1}'])
    assert result.exit_code == 1 and "not a record of anomalies" in result.output
