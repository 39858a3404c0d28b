"""``m1 workflows validate|list|test``, ``m1 silences add|list|expire``, ``m1 incidents list|ack|resolve``.

``workflows`` reads files only. ``silences`` and ``incidents`` go through the worker's API
(``M1_API_KEY``; the worker owns the store and the engine), as ``m1 query`` does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Column, Table

from m1.query_client import QueryError, api_call
from core.settings import get_settings
from traces.cli import parse_duration
from workflows.dryrun import dry_run
from workflows.spec import SpecError, load, load_dir
from workflows.signals import SOURCES

console = Console()
workflows_app = typer.Typer(help="Alert workflows: check, list and dry-run the tenants' YAML files.",
                            no_args_is_help=True, pretty_exceptions_show_locals=False)
silences_app = typer.Typer(help="Silences and maintenance windows (through the worker's API).", no_args_is_help=True,
                           pretty_exceptions_show_locals=False)
incidents_app = typer.Typer(help="Incidents: list, acknowledge, resolve (through the worker's API).",
                            no_args_is_help=True, pretty_exceptions_show_locals=False)

TENANT = typer.Option(..., "--tenant", "-t", help="The tenant.")


def register(app: typer.Typer) -> None:
    """Add the three command groups to ``m1``."""
    app.add_typer(workflows_app, name="workflows")
    app.add_typer(silences_app, name="silences")
    app.add_typer(incidents_app, name="incidents")


def _files(paths: list[Path]) -> list[Path]:
    if not paths:
        settings = get_settings()
        paths = [settings.workflows_dir or settings.home / "workflows"]
    return [f for p in paths for f in (sorted([*p.glob("*.yaml"), *p.glob("*.yml")]) if p.is_dir() else [p])]


@workflows_app.command()
def validate(paths: list[Path] = typer.Argument(None, help="Files or directories (default: M1_WORKFLOWS_DIR).")) -> None:
    """Check each file against the JSON Schema and the names it uses; exit 1 if any is invalid."""
    bad = 0
    for path in _files(paths):
        try:
            spec = load(path)
            console.print(f"[green]ok[/] {path}: tenant {spec.tenant}, {len(spec.workflows)} workflow(s)")
        except (SpecError, OSError) as exc:
            bad += 1
            console.print(f"[red]invalid[/] {path}:\n{exc}")
    if bad:
        raise typer.Exit(1)


@workflows_app.command("list")
def list_workflows(directory: Path = typer.Argument(None, help="Directory of workflow files (default: M1_WORKFLOWS_DIR).")) -> None:
    """Every tenant's workflows: trigger, grouping, steps and declared terminal state."""
    settings = get_settings()
    try:
        specs = load_dir(directory or settings.workflows_dir or settings.home / "workflows")
    except SpecError as exc:
        console.print(f"[red]invalid:[/] {exc}")
        raise typer.Exit(1) from None
    table = Table("tenant", "workflow", "trigger", "group by / wait", "steps", "terminal")
    for tenant, spec in sorted(specs.items()):
        for w in spec.workflows:
            table.add_row(tenant, w.name, w.trigger.source, f"{','.join(w.group.by)} / {w.group.wait:g}s",
                          " → ".join(s.kind + (f"({','.join(s.receivers)})" if s.receivers else "") for s in w.steps),
                          w.terminal)
    console.print(table)


@workflows_app.command()
def test(path: Path = typer.Argument(..., help="The workflow file."),
         event: str = typer.Option(..., "--event", help="One record of the trigger's topic, as JSON."),
         source: str = typer.Option("anomalies", "--source", help=f"Its topic: {', '.join(SOURCES)}."),
         lasting: str = typer.Option("0s", "--lasting", help="Repeat the event for this long (e.g. 15m)..."),
         every: str = typer.Option("60s", "--every", help="...every this often."),
         answer: str = typer.Option('{"status": 200, "json": {}}', "--answer",
                                    help="What webhook steps get back: {status, json}."),
         ids: bool = typer.Option(False, "--ids", help="Show full incident and run ids.")) -> None:
    """Dry run: what the file's workflows would do with the event on a simulated clock (no ack comes)."""
    try:
        spec = load(path)
        lines = list(dry_run(spec, source, event.encode(), parse_duration(lasting), parse_duration(every),
                             json.loads(answer), ids=ids))
    except (SpecError, ValueError, OSError) as exc:
        console.print(f"[red]cannot run:[/] {exc}")
        raise typer.Exit(1) from None
    for line in lines or ["nothing: no workflow matches and it is not an anomaly"]:
        typer.echo(line)


def _call(method: str, path: str, body: dict | None = None) -> dict:
    try:
        return api_call(get_settings(), method, path, body)
    except QueryError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None


@silences_app.command("add")
def silence_add(tenant: str = TENANT,
                duration: str = typer.Option("1h", "--for", help="How long, from now or --start (e.g. 2h)."),
                start: float = typer.Option(0.0, "--start", help="Start (epoch seconds); default now."),
                service: list[str] = typer.Option(None, "--service", help="Services it covers (repeatable)."),
                region: list[str] = typer.Option(None, "--region", help="Regions it covers (repeatable)."),
                severity: list[str] = typer.Option(None, "--severity", help="Severities it covers (repeatable)."),
                maintenance: bool = typer.Option(False, "--maintenance", help="A maintenance window: matching "
                                                 "signals are ignored entirely, not only muted."),
                comment: str = typer.Option("", "--comment", help="Why.")) -> None:
    """Silence (or put in maintenance) what matches, for a time."""
    begin = start or time.time()
    body = {"starts_at": begin, "ends_at": begin + parse_duration(duration), "comment": comment,
            "kind": "maintenance" if maintenance else "silence",
            "matchers": {k: v for k, v in (("service", service), ("region", region), ("severity", severity)) if v}}
    answer = _call("POST", f"/v1/tenants/{tenant}/silences", body)
    console.print(f"silence [bold]{answer['id']}[/] until {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(answer['ends_at']))} UTC")


@silences_app.command("list")
def silence_list(tenant: str = TENANT) -> None:
    """The tenant's silences and maintenance windows not yet ended."""
    table = Table(Column("id", no_wrap=True), "kind", "from", "until", "matchers", "comment", "by")
    for s in _call("GET", f"/v1/tenants/{tenant}/silences")["items"]:
        table.add_row(s["id"], s["kind"], str(s["starts_at"]), str(s["ends_at"]), json.dumps(s["matchers"]),
                      s["comment"], s["created_by"])
    console.print(table)


@silences_app.command("expire")
def silence_expire(silence_id: str = typer.Argument(..., help="The silence's id."), tenant: str = TENANT) -> None:
    """End a silence now."""
    _call("DELETE", f"/v1/tenants/{tenant}/silences/{silence_id}")
    console.print(f"silence {silence_id} expired")


@incidents_app.command("list")
def incident_list(tenant: str = TENANT,
                  status: str = typer.Option(None, "--status", help="open, acknowledged or resolved.")) -> None:
    """The tenant's incidents, newest first."""
    query = f"?status={status}" if status else ""
    table = Table(Column("id", no_wrap=True), "status", "severity", "service", "region", "started", "title")
    for i in _call("GET", f"/v1/tenants/{tenant}/incidents{query}")["items"]:
        table.add_row(i["id"], i["status"], i["severity"], i["service"], i["region"], str(i["started_at"]), i["title"])
    console.print(table)


@incidents_app.command("ack")
def incident_ack(incident_id: str = typer.Argument(..., help="The incident's id."), tenant: str = TENANT) -> None:
    """Acknowledge an incident: escalation stops, receivers told are told."""
    _call("POST", f"/v1/tenants/{tenant}/incidents/{incident_id}/ack", {})
    console.print(f"incident {incident_id} acknowledged")


@incidents_app.command("resolve")
def incident_resolve(incident_id: str = typer.Argument(..., help="The incident's id."), tenant: str = TENANT) -> None:
    """Resolve an incident now: its runs end and receivers told get a resolve notification."""
    _call("POST", f"/v1/tenants/{tenant}/incidents/{incident_id}/resolve", {})
    console.print(f"incident {incident_id} resolved")
