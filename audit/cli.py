"""``m1 audit``: verify the trail, make and check proofs, rotate the signing key.

The commands open the store directly: a ClickHouse server (``M1_CLICKHOUSE_URL``) at any time,
the embedded store while no worker holds it (chdb: one process per data directory). While a worker
does, ``verify`` and ``prove`` ask its API (``M1_API_KEY``); ``consistency`` needs the store.
``verify-proof`` needs nothing but the proof file and a public key, as an outside auditor has.
Exit codes: 0 all good, 1 tampering found or a proof that does not hold, 2 could not run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console

from audit import events, keys, log
from audit.proofs import ProofUnavailable, check_inclusion, consistency, prove
from audit.paths import key_file, witness_file
from audit.verify import Report, load_witness, save_witness, verify_now
from m1.query_client import QueryError, api_call, worker_is_up
from core.settings import Settings, get_settings
from sinks.clickhouse import Store, StoreUnavailable, connect
from core.tenant_names import PLATFORM
from traces.cli import parse_duration

app = typer.Typer(help="The tamper-evident audit trail: verify, prove, rotate the signing key.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
console = Console()


@contextmanager
def _store() -> Iterator[Store]:
    try:
        store = Store(connect(get_settings()))
    except StoreUnavailable as exc:
        console.print(f"[red]cannot open the store:[/] {exc}")
        raise typer.Exit(2) from None
    try:
        store.migrate()
        yield store
    finally:
        store.close()


@app.command()
def verify(tenant: str = typer.Option(None, "--tenant", "-t", help="Only this tenant (default: every tenant)."),
           since: str = typer.Option(None, "--since", help="Re-hash only events of this window (e.g. 1h, 7d); "
                                                            "signed heads are still checked over the whole log."),
           ) -> None:
    """Check the hash chains, every signed tree head and the heads seen by earlier runs; name the
    first bad sequence number. Exit 1 on tampering."""
    settings = get_settings()
    if since:
        parse_duration(since)  # a bad value is refused before anything runs
    witness_path = witness_file(settings)
    witness = load_witness(witness_path)
    bad, tenants = [], []
    for report in _reports(settings, tenant, since, set(witness)):
        tenants.append(report.tenant)
        if report.problem is None:
            console.print(f"{report.tenant}: [green]intact[/] ({report.events} events, {report.heads} signed heads)")
            if report.newest is not None:
                witness[report.tenant] = report.newest
        else:
            bad.append((report.tenant, report.problem.seq))
            console.print(f"{report.tenant}: [red]TAMPERED[/] first bad seq {report.problem.seq}: {report.problem.reason}")
    save_witness(witness_path, witness)
    _tell(settings, events.event(settings, "audit.verify", ",".join(tenants) or "-", "failure" if bad else "success",
                                 {"tenants": len(tenants), "tampered": ";".join(f"{t}@{s}" for t, s in bad)}))
    if bad:
        raise typer.Exit(1)


def _reports(settings: Settings, tenant: str | None, since: str | None, seen: set[str]) -> Iterator[Report]:
    """Each tenant's verification: through the worker's API while it holds the embedded store
    (``GET /v1/tenants/{t}/audit/verify``; every registered tenant needs a platform-admin key),
    else on the store opened here."""
    if not settings.clickhouse_url and worker_is_up(settings):
        try:
            names = [tenant] if tenant else sorted({t["name"] for t in api_call(settings, "GET", "/v1/tenants")["items"]}
                                                   | {PLATFORM} | seen)
            for name in names:
                query = f"?since={since}" if since else ""
                yield Report.from_dict(api_call(settings, "GET", f"/v1/tenants/{name}/audit/verify{query}"))
        except QueryError as exc:
            console.print(f"[red]the worker's API refused the verification:[/] {exc}")
            raise typer.Exit(2) from None
        return
    with _store() as store:
        for name in [tenant] if tenant else sorted(set(log.tenants(store)) | seen):
            yield Report.from_dict(verify_now(settings, store, name, since))


@app.command("prove")
def prove_cmd(event_id: str = typer.Argument(..., help="The event's id (its leaf hash, hex)."),
              tenant: str = typer.Option(None, "--tenant", "-t", help="The event's tenant (needed while a worker "
                                                                      "holds the store: the proof comes from its API).")) -> None:
    """Print the inclusion proof of an event (JSON) against the newest signed tree head covering it."""
    settings = get_settings()
    if not settings.clickhouse_url and worker_is_up(settings):
        if not tenant:
            console.print("[red]a worker holds the store: name the event's tenant with --tenant[/]")
            raise typer.Exit(2)
        try:
            proof = api_call(settings, "GET", f"/v1/tenants/{tenant}/audit/proofs/{event_id}")
        except QueryError as exc:
            console.print(f"[red]no proof:[/] {exc}")
            raise typer.Exit(2) from None
    else:
        with _store() as store:
            try:
                proof = prove(store, event_id, tenant)
            except ProofUnavailable as exc:
                console.print(f"[red]{exc}[/]")
                raise typer.Exit(2) from None
    typer.echo(json.dumps(proof, indent=2))


@app.command("verify-proof")
def verify_proof(proof_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="A proof from `m1 audit prove`."),
                 public_key: Path = typer.Option(..., "--public-key", exists=True, dir_okay=False,
                                                 help="The signing key's public half (PEM), e.g. from `m1 audit keys`.")) -> None:
    """Check an inclusion proof without the log, as an outside auditor would."""
    problem = check_inclusion(json.loads(proof_file.read_text()), public_key.read_text())
    if problem:
        console.print(f"[red]proof does not hold:[/] {problem}")
        raise typer.Exit(1)
    console.print("[green]proof holds[/]: the event is in the log the signed tree head commits to")


@app.command("consistency")
def consistency_cmd(tenant: str = typer.Option(..., "--tenant", "-t"),
                    first: int = typer.Option(..., "--from", help="The older tree size."),
                    second: int = typer.Option(..., "--to", help="The newer tree size.")) -> None:
    """Print (and verify) the RFC 9162 consistency proof that the tree of --from events is a
    prefix of the tree of --to events. Exit 1 when it does not verify."""
    with _store() as store:
        try:
            proof = consistency(store, tenant, first, second)
        except ProofUnavailable as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from None
    typer.echo(json.dumps(proof, indent=2))
    if not proof["verified"]:
        raise typer.Exit(1)


@app.command("rotate-key")
def rotate_key() -> None:
    """Replace the signing key; the old public key stays in the history. The rotation is itself
    an audit event (sent first: no event, no rotation). A running worker signs with the new key
    from its next tree head on."""
    settings = get_settings()
    path = key_file(settings)
    old = keys.key_id(keys.load_or_create(path).public_key())
    _tell(settings, events.event(settings, "audit.key-rotate", f"key:{old}", "success", {"old_key_id": old}), strict=True)
    new = keys.key_id(keys.rotate(path).public_key())
    console.print(f"signing key rotated: {old} -> {new} (history: {keys.history_path(path)})")


@app.command("keys")
def keys_cmd(export: Path = typer.Option(None, "--export", help="Write the public-key history (JSON) here.")) -> None:
    """List every public key that signed tree heads (the current one last)."""
    history = keys.history(key_file(get_settings()))
    if export is not None:
        export.write_text(json.dumps({"keys": history}, indent=2) + "\n")
    for entry in history:
        state = "current" if entry["retired_at_ms"] is None else "retired"
        console.print(f"{entry['key_id']}  {state}\n{entry['public_key']}")


def _tell(settings, event, strict: bool = False) -> None:
    """Send ``event`` to the audit topic; a failure stops the command only when ``strict``."""
    try:
        events.send(settings, [event])
    except Exception as exc:
        if strict:
            console.print(f"[red]could not write the audit event to Kafka ({exc}); nothing changed[/]")
            raise typer.Exit(2) from None
        console.print(f"[yellow]warning:[/] the audit event of this run was not sent ({exc})")
