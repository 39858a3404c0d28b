"""``m1 integrations``: check a workflow file's receivers, send one a test notification, run delivery."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import msgspec
import typer
from rich.console import Console
from rich.table import Table

from integrations import registry, secrets
from integrations.context import Context
from integrations.notification import Notification, Receiver, encode, notification_id
from core.settings import get_settings

app = typer.Typer(help="Integrations: receivers of workflow notifications, and their delivery.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
console = Console()


def _receivers(path: Path) -> tuple[str, dict[str, Receiver]]:
    from workflows.spec import SpecError, load

    try:
        spec = load(path)
    except SpecError as exc:
        console.print(f"[red]{path}: {exc}[/]")
        raise typer.Exit(2) from exc
    return spec.tenant, spec.receivers


def problems(receiver: Receiver) -> list[str]:
    """What would stop ``receiver`` from being delivered to (secrets are resolved, never shown)."""
    out = []
    try:
        registry.check(receiver)
    except ValueError as exc:
        return [str(exc)]
    refs = [receiver.secret_ref, receiver.url] + [v for k, v in receiver.options.items() if k.endswith("_ref")]
    for ref in refs:
        if ref.startswith(secrets.PREFIXES):
            try:
                secrets.resolve(ref)
            except secrets.MissingSecret as exc:
                out.append(str(exc))
    if receiver.type in ("pagerduty", "opsgenie", "jira") and not (receiver.secret_ref or receiver.options.get("routing_key_ref")):
        out.append(f"{receiver.type} needs secret_ref (its API key)")
    if receiver.type == "kafka" and not receiver.options.get("topic"):
        out.append("kafka needs options.topic")
    if receiver.type == "email" and not receiver.options.get("to"):
        out.append("email needs options.to")
    if receiver.type not in ("kafka", "pagerduty", "opsgenie") and not receiver.url:
        out.append(f"{receiver.type} needs url")
    return out


@app.command("check")
def check(path: Path = typer.Argument(..., help="A workflow file (YAML) whose receivers to check.")) -> None:
    """Check every receiver of a workflow file: known type, secrets given as env:/file: references
    that resolve, required options. Exits 1 if any receiver has a problem."""
    tenant, receivers = _receivers(path)
    table = Table("receiver", "type", "status")
    bad = 0
    for name, receiver in receivers.items():
        found = problems(receiver)
        bad += bool(found)
        table.add_row(name, receiver.type, "[red]" + "; ".join(found) + "[/]" if found else "[green]ok[/]")
    console.print(table)
    if bad:
        raise typer.Exit(1)


def sample_notification(tenant: str, receiver: Receiver, kind: str) -> Notification:
    now = time.time()
    return Notification(
        id=notification_id(tenant, "m1-send-test", receiver.name, f"test-{int(now)}", 0, kind, receiver.name),
        tenant=tenant,
        workflow="m1-send-test", kind=kind, receiver=receiver,
        incident={"id": f"test-{int(now)}", "title": "test notification from m1", "severity": "info",
                  "status": "open", "service": "m1", "region": "", "started_at": now},
        created_ts=now, source_ts=now)


@app.command("send-test")
def send_test(path: Path = typer.Argument(..., help="A workflow file (YAML)."),
              receiver: str = typer.Option(..., "--receiver", "-r", help="The receiver's name in the file."),
              kind: str = typer.Option("trigger", help="trigger, acknowledge or resolve."),
              outbox: bool = typer.Option(False, help="Publish to the outbox topic (delivery retries it) instead "
                                                      "of one direct attempt.")) -> None:
    """Send one test notification to a receiver and show the outcome (exits 1 if not delivered)."""
    tenant, receivers = _receivers(path)
    if receiver not in receivers:
        console.print(f"[red]no receiver {receiver!r} in {path} (there are: {', '.join(receivers)})[/]")
        raise typer.Exit(2)
    settings = get_settings()
    n = sample_notification(tenant, receivers[receiver], kind)
    if outbox:
        from core.kafka.producer import make_producer, send_all

        async def publish() -> None:
            producer = make_producer(settings)
            await producer.start()
            try:
                await send_all(producer, settings.topic_notifications, [(n.id.encode(), encode(n))])
            finally:
                await producer.stop()

        asyncio.run(publish())
        console.print(f"published {n.id} to {settings.topic_notifications}")
        return

    async def once():
        from streams.publisher import Publisher

        publisher = Publisher(settings)
        async with aiohttp.ClientSession() as session:
            try:
                return await registry.deliver(Context(session, settings, publisher.publish), n)
            finally:
                await publisher.on_stop()

    with console.status(f"sending to {receiver}..."):
        outcome = asyncio.run(once())
    console.print_json(msgspec.json.encode(msgspec.structs.replace(outcome, body=None)).decode())
    if not outcome.delivered:
        raise typer.Exit(1)


@app.command("deliver")
def deliver(loglevel: str = typer.Option("warn", help="crit, error, warn, info or debug.")) -> None:
    """Run delivery alone (the worker also runs it): consume the outbox and deliver until interrupted."""
    from mode import Worker

    from integrations.delivery import DeliveryService

    service = DeliveryService(get_settings())
    Worker(service, loglevel=loglevel, quiet=True).execute_from_commandline()
