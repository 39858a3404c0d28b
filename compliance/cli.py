"""``m1 gdpr`` (export, erase) and ``m1 compliance`` (report, retention, legal-hold).

While a worker answers, every command asks its API (``M1_API_KEY``: a tenant-admin key for
``gdpr`` on its own tenant, a platform-admin key for the rest), like ``m1 query``; on a ClickHouse
server too, because the worker caches subject keys and must see an erasure. With no worker
running, the command opens the store itself and sends its audit events to the audit topic
directly (Kafka must answer). Exit codes: 0 done
(report: every applicable control passes), 1 refused or a control fails, 2 could not run.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from audit import events
from compliance import erasure_notices, policy_cli
from compliance.report import FRAMEWORKS, markdown
from compliance.service import Compliance
from m1.query_client import QueryError, api_call, worker_is_up
from core.settings import get_settings
from sinks.clickhouse import Store, StoreUnavailable, connect

gdpr_app = typer.Typer(help="GDPR rights of a data subject: export (Art. 15/20), erase (Art. 17, crypto-shredding).",
                       no_args_is_help=True, pretty_exceptions_show_locals=False)
app = typer.Typer(help="Compliance: the evidence report, retention and legal holds.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
retention_app = typer.Typer(help="Retention per class and tenant (ClickHouse TTL).", no_args_is_help=True)
hold_app = typer.Typer(help="Legal holds: a held tenant's data is never deleted by retention.", no_args_is_help=True)
app.add_typer(retention_app, name="retention")
app.add_typer(hold_app, name="legal-hold")
app.add_typer(policy_cli.app, name="policy")  # the personal-data policy (C1's compliance/policy_cli.py)
console = Console(stderr=True)

TENANT = typer.Option(..., "--tenant", "-t", help="The tenant.")
SUBJECT = typer.Option(..., "--subject", "-s", help="The data subject as the tenant's data names it (e.g. an email).")


def _call(what: str, method: str, path: str, body: Any, direct: Callable[[Compliance], Awaitable[Any]]) -> Any:
    """The worker API's answer to ``method path``, or ``direct`` run on the store opened here."""
    settings = get_settings()
    with console.status(f"{what}..."):
        if worker_is_up(settings):  # a server too: the worker's key cache must see an erasure
            try:
                return api_call(settings, method, path, body, timeout=900)
            except QueryError as exc:
                console.print(f"[red]{exc}[/]")
                raise typer.Exit(1 if exc.status else 2) from None
        try:
            store = Store(connect(settings))
        except StoreUnavailable as exc:
            console.print(f"[red]cannot open the store:[/] {exc}")
            raise typer.Exit(2) from None
        try:
            store.migrate()

            async def audit(audit_events: Any) -> None:
                await asyncio.to_thread(events.send, settings, list(audit_events))

            async def notify(tenant: str, ref: str) -> None:
                await asyncio.to_thread(erasure_notices.send, settings, tenant, ref)

            return asyncio.run(direct(Compliance(settings, store, audit, notify)))
        except ValueError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None
        finally:
            store.close()


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _tenant_path(tenant: str, rest: str) -> str:
    return f"/v1/tenants/{urllib.parse.quote(tenant, safe='')}/{rest}"


def _write(text: str, out: Path | None) -> None:
    """``text`` to stdout, or to ``out`` readable by its owner only (it may hold personal data)."""
    if out is None:
        print(text)
        return
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(text)
    console.print(f"written to {out} (mode 0600)")


@gdpr_app.command()
def export(tenant: str = TENANT, subject: str = SUBJECT,
           out: Path = typer.Option(None, "--out", "-o", help="Write the JSON here (mode 0600) instead of stdout.")) -> None:
    """Everything the tenant's data holds about the subject, its encrypted fields decrypted, as JSON
    (m1-gdpr-export/1). Audited as gdpr.export."""
    answer = _call("exporting", "POST", _tenant_path(tenant, "gdpr/export"), {"subject": subject},
                   lambda c: c.gdpr.run("export", tenant, subject, actor=_actor()))
    console.print(f"{answer['rows']} rows in {len(answer['tables'])} tables")
    _write(json.dumps(answer, indent=2, ensure_ascii=False), out)


@gdpr_app.command()
def erase(tenant: str = TENANT, subject: str = SUBJECT,
          yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")) -> None:
    """Destroy the subject's key (crypto-shredding): its encrypted fields become unrecoverable in
    every table, topic and backup. Cannot be undone. Audited as gdpr.erase."""
    if not yes:
        typer.confirm(f"Destroy the key of this subject of {tenant}? This cannot be undone", abort=True)
    answer = _call("erasing", "POST", _tenant_path(tenant, "gdpr/erase"), {"subject": subject},
                   lambda c: c.gdpr.run("erase", tenant, subject, actor=_actor()))
    state = "destroyed" if answer["key_destroyed"] else "absent (nothing was encrypted for it, or already erased)"
    console.print(f"subject {answer['subject_ref']}: key {state}; {answer['rows_with_tokens']} rows hold its "
                  f"now unrecoverable tokens ({answer['seconds']:.2f} s)")


@app.command()
def report(framework: str = typer.Option(None, "--framework", "-f", help=f"One of {', '.join(FRAMEWORKS)} (default: all)."),
           format: str = typer.Option("md", "--format", help="md or json."),
           out: Path = typer.Option(None, "--out", "-o", help="Write the report here instead of stdout.")) -> None:
    """Each control checked live, with its evidence and the score. Not a certification. Exit 1 if a control fails."""
    if framework is not None and framework not in FRAMEWORKS:
        raise typer.BadParameter(f"one of {', '.join(FRAMEWORKS)}", param_hint="--framework")
    if format not in ("md", "json"):
        raise typer.BadParameter("md or json", param_hint="--format")
    query = f"?framework={framework}" if framework else ""
    answer = _call("running the checks", "GET", f"/v1/compliance/report{query}", None, lambda c: c.report(framework))
    _write(markdown(answer) if format == "md" else json.dumps(answer, indent=2), out)
    score = answer["score"]
    if score["passed"] < score["applicable"]:
        raise typer.Exit(1)


@retention_app.command("show")
def retention_show() -> None:
    """Days per class and tenant, legal holds, and each table's TTL as planned and as the engine has it."""
    answer = _call("reading", "GET", "/v1/compliance/retention", None, lambda c: c.show_retention())
    console.print(f"days per class: {answer['class_days']}")
    console.print(f"per tenant: { {k: v for k, v in answer['tenant_days'].items() if v} or 'none'}")
    console.print(f"legal holds: {', '.join(h['tenant'] for h in answer['holds']) or 'none'}")
    table = Table("table", "class", "TTL applied", "matches plan")
    for row in answer["tables"]:
        table.add_row(row["table"], row["class"], row["applied"] or "-", "yes" if (row["applied"] is None) == (row["planned"] is None) else "NO")
    Console().print(table)


@retention_app.command("apply")
def retention_apply() -> None:
    """Apply the TTL rules now and delete the rows that have expired (rewrites parts). Audited."""
    answer = _call("applying", "POST", "/v1/compliance/retention/apply", None, lambda c: c.apply_retention(_actor()))
    console.print(f"retention applied to {len(answer['tables'])} tables")


@hold_app.command("set")
def hold_set(tenant: str = TENANT, reason: str = typer.Option(..., "--reason", "-r", help="Why (case, request).")) -> None:
    """Put the tenant on legal hold: retention deletes none of its data until cleared. Audited."""
    answer = _call("holding", "PUT", _tenant_path(tenant, "legal-hold"), {"reason": reason},
                   lambda c: c.hold(tenant, True, _actor(), reason))
    console.print(f"{answer['tenant']} is on legal hold ({len(answer['tables_changed'])} TTL rules changed)")


@hold_app.command("clear")
def hold_clear(tenant: str = TENANT) -> None:
    """Release the tenant's legal hold: retention applies again (expired rows go at the next TTL merge). Audited."""
    answer = _call("releasing", "DELETE", _tenant_path(tenant, "legal-hold"), None,
                   lambda c: c.hold(tenant, False, _actor(), "cleared"))
    console.print(f"{answer['tenant']} is no longer on legal hold")


@hold_app.command("list")
def hold_list() -> None:
    """Tenants on legal hold, since when, by whom and why."""
    answer = _call("reading", "GET", "/v1/compliance/legal-holds", None, lambda c: _items(c.holds()))
    table = Table("tenant", "since", "by", "reason")
    for hold in answer["items"]:
        table.add_row(hold["tenant"], hold["since"], hold["actor"], hold["reason"])
    Console().print(table)


async def _items(holds: Awaitable[list[dict[str, Any]]]) -> dict[str, Any]:
    return {"items": await holds}
