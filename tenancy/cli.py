"""``m1 tenants``, ``m1 keys`` and ``m1 roles``: the platform operator's tools on the host.

They edit the registry file (``M1_REGISTRY_PATH``, default ``<home>/registry.db``) directly, so
they work whether or not a worker runs; a running worker sees a revocation or a disabled tenant
on its next request. Refusals (bad name, unknown tenant or role, ...) exit with status 2.

When the configured Kafka uses SASL, ``tenants create`` also gives the tenant its Kafka user and
ACLs (:func:`core.kafka.security.provision_tenant`), and disabling or enabling a tenant removes or
recreates them. On a ClickHouse server (``M1_CLICKHOUSE_URL``) creating or enabling a tenant
applies its read-only user and row policies (:func:`sinks.server_access.apply_tenant_access`).
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.table import Column, Table

from core.settings import Settings, get_settings
from tenancy.registry import Registry, Tenant
from tenancy.roles import PERMISSIONS, ROLES

tenants_app = typer.Typer(help="Tenants: create, list, disable and enable (edits the registry on this host).",
                          no_args_is_help=True)
keys_app = typer.Typer(help="API keys: create (the key is shown once), list, revoke.", no_args_is_help=True)
roles_app = typer.Typer(help="Roles and the permissions each grants.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)


@contextmanager
def _registry() -> Iterator[Registry]:
    """The configured registry; a refused request prints its reason and exits 2."""
    registry = Registry.from_settings(get_settings())
    try:
        yield registry
    except ValueError as exc:
        errors.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    finally:
        registry.close()


def _when(timestamp: float | None) -> str:
    return "" if timestamp is None else datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


def _kafka_sasl(settings: Settings) -> bool:
    from core.kafka.security import login_of

    return login_of(settings).sasl


@contextmanager
def _outside_step(system: str, tenant: str) -> Iterator[None]:
    """A change in Kafka or ClickHouse after the registry's: a failure says so and exits 1."""
    try:
        yield
    except Exception as exc:  # the system's refusal or absence, whatever its client raises
        errors.print(f"[red]error:[/] the registry is updated, but {system} refused or was unreachable for tenant "
                     f"{tenant!r}: {exc}\nRetry with: m1 tenants enable {tenant} (or m1 tenants disable {tenant})")
        raise typer.Exit(1) from None


def _provision(settings: Settings, tenant: str) -> None:
    """Give an enabled tenant its identities outside the registry, where configured: on a SASL
    Kafka its user and topic ACLs (password printed once), on a ClickHouse server its read-only
    user and row policies. Both are idempotent (Kafka: a new password each time)."""
    if _kafka_sasl(settings):
        from core.kafka.security import provision_tenant

        with _outside_step("Kafka", tenant):
            password = provision_tenant(settings, tenant)
        console.print(f"Kafka user [bold]{tenant}[/] may write to the topics '{tenant}.*'. Its password is shown "
                      "only now; store it (M1_KAFKA_SASL_PASSWORD of the tenant's producers):")
        typer.echo(password)
    if settings.clickhouse_url:
        from sinks.clickhouse import Store, connect
        from sinks.server_access import apply_tenant_access

        with _outside_step("ClickHouse", tenant):
            store = Store(connect(settings), settings)
            try:
                store.migrate()  # the tables must exist to be granted
                user = apply_tenant_access(store, tenant)
            finally:
                store.close()
        console.print(f"ClickHouse user [bold]{user}[/] reads only tenant {tenant}'s rows (row policies)")


def _print_tenant(tenant: Tenant) -> None:
    state = "disabled" if tenant.disabled else "enabled"
    quotas = ", ".join(f"{k}={v:g}" for k, v in sorted(tenant.quotas.items())) or "defaults"
    console.print(f"tenant [bold]{tenant.name}[/] {state} (quotas: {quotas})")


@tenants_app.command("create")
def tenants_create(
    name: str = typer.Argument(..., help="Tenant name: 2-32 characters, a-z first, then a-z, 0-9 or '-'."),
    points_per_second: float | None = typer.Option(None, help="Ingest quota override: points per second."),
    max_series: int | None = typer.Option(None, help="Ingest quota override: live series."),
    requests_per_second: float | None = typer.Option(None, help="API quota override: requests per second."),
) -> None:
    """Create a tenant (and its Kafka user and topic ACLs on a SASL Kafka, its read-only user and
    row policies on a ClickHouse server)."""
    quotas = {k: v for k, v in {"points_per_second": points_per_second, "max_series": max_series,
                                "requests_per_second": requests_per_second}.items() if v is not None}
    settings = get_settings()
    with _registry() as registry:
        _print_tenant(registry.create_tenant(name, quotas))
    _provision(settings, name)


@tenants_app.command("list")
def tenants_list() -> None:
    """List tenants with their state and quota overrides."""
    with _registry() as registry:
        tenants = registry.tenants()
    table = Table("tenant", "state", "quota overrides", "created")
    for t in tenants:
        quotas = ", ".join(f"{k}={v:g}" for k, v in sorted(t.quotas.items()))
        table.add_row(t.name, "disabled" if t.disabled else "enabled", quotas, _when(t.created_at))
    console.print(table)


@tenants_app.command("disable")
def tenants_disable(name: str = typer.Argument(..., help="Tenant to disable.")) -> None:
    """Refuse the tenant's API keys and tokens from the next request on (its data stays); on a SASL
    Kafka also remove its Kafka user and ACLs."""
    settings = get_settings()
    with _registry() as registry:
        _print_tenant(registry.disable_tenant(name))
    if _kafka_sasl(settings):
        from core.kafka.security import deprovision_tenant

        with _outside_step("Kafka", name):
            deprovision_tenant(settings, name)
        console.print(f"Kafka user [bold]{name}[/] and its ACLs removed")


@tenants_app.command("enable")
def tenants_enable(name: str = typer.Argument(..., help="Tenant to enable again.")) -> None:
    """Accept the tenant's keys and tokens again; recreate its Kafka user (new password) on a SASL
    Kafka and refresh its ClickHouse user and row policies on a server (also after a migration)."""
    settings = get_settings()
    with _registry() as registry:
        _print_tenant(registry.enable_tenant(name))
    _provision(settings, name)


@keys_app.command("create")
def keys_create(
    tenant: str = typer.Option(..., "--tenant", help="Tenant the key acts for ('platform' for platform-admin and monitoring)."),
    role: list[str] = typer.Option(..., "--role", help=f"Role of the key (repeatable): {', '.join(ROLES)}."),
    name: str = typer.Option("", "--name", help="A label for the key, e.g. what uses it."),
) -> None:
    """Create an API key. The key is printed once, on standard output; only its hash is kept."""
    with _registry() as registry:
        info, raw = registry.create_key(tenant, role, name=name, created_by=_operator())
    errors.print(f"API key [bold]{info.id}[/] for tenant [bold]{info.tenant}[/], roles {', '.join(sorted(info.roles))}.\n"
                 "[yellow]Store it now: it is shown only this once and cannot be recovered.[/]")
    typer.echo(raw)


@keys_app.command("list")
def keys_list(tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant's keys.")) -> None:
    """List API keys (ids, roles, state; never the secrets)."""
    with _registry() as registry:
        keys = registry.keys(tenant)
    table = Table(Column("id", no_wrap=True, min_width=12), "tenant", "roles", "name", "created", "by", "revoked")
    for k in keys:
        table.add_row(k.id, k.tenant, ", ".join(sorted(k.roles)), k.name, _when(k.created_at), k.created_by,
                      _when(k.revoked_at))
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="Id of the key (the 12 hex digits after 'm1_').")) -> None:
    """Revoke an API key: refused from the next request on, also by a running worker."""
    with _registry() as registry:
        info = registry.revoke_key(key_id)
    console.print(f"API key [bold]{info.id}[/] of tenant {info.tenant} revoked at {_when(info.revoked_at)}")


@roles_app.command("list")
def roles_list() -> None:
    """List the roles, least to most privileged, with the permissions each grants."""
    table = Table("role", "permissions")
    for role, permissions in ROLES.items():
        table.add_row(role, "\n".join(p for p in PERMISSIONS if p in permissions))
    console.print(table)
