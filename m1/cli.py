"""The ``m1`` command line: local Kafka, the worker, queries, the demo and evaluations."""

from __future__ import annotations

import logging

import typer
from rich.console import Console
from rich.table import Table

from core.settings import get_settings
from m1.lazy_commands import lazy_group


def _eval(app: typer.Typer) -> None:
    from models.evaluation import capacity_cli, forecast_cli
    from models.evaluation import cli as nab_cli

    eval_app = typer.Typer(help="Offline evaluations: NAB anomaly scoring, forecast error, scaling advice.",
                           no_args_is_help=True)
    eval_app.command("nab")(nab_cli.nab)
    eval_app.command("forecast")(forecast_cli.forecast)
    eval_app.command("scaling")(capacity_cli.scaling)
    eval_app.command("scaling-tolerance")(forecast_cli.tolerance_report)
    eval_app.command("cost")(capacity_cli.cost)
    app.add_typer(eval_app, name="eval")


def _traces(app: typer.Typer) -> None:
    from traces import cli as traces_cli

    app.add_typer(traces_cli.app, name="traces", help="Trace analysis: bottlenecks and optimisation hints.")


def _tenancy(app: typer.Typer) -> None:
    from tenancy import cli as tenancy_cli

    app.add_typer(tenancy_cli.tenants_app, name="tenants")
    app.add_typer(tenancy_cli.keys_app, name="keys")
    app.add_typer(tenancy_cli.roles_app, name="roles")


def _audit(app: typer.Typer) -> None:
    from audit import cli as audit_cli

    app.add_typer(audit_cli.app, name="audit")


def _compliance(app: typer.Typer) -> None:
    from compliance import cli as compliance_cli

    app.add_typer(compliance_cli.gdpr_app, name="gdpr")
    app.add_typer(compliance_cli.app, name="compliance")


def _integrations(app: typer.Typer) -> None:
    from integrations import cli as integrations_cli

    app.add_typer(integrations_cli.app, name="integrations")


def _regions(app: typer.Typer) -> None:
    from regions import cli as regions_cli

    app.add_typer(regions_cli.app, name="regions")
    app.command("route")(regions_cli.route)


def _workflows(app: typer.Typer) -> None:
    from workflows import cli as workflows_cli

    workflows_cli.register(app)  # m1 workflows, m1 silences, m1 incidents


# Each package's commands are imported when one of them runs (m1.lazy_commands): `m1 worker` imports the worker only.
SUB_COMMANDS = {"route": _regions, "eval": _eval, "traces": _traces, "tenants": _tenancy, "keys": _tenancy,
                "roles": _tenancy, "audit": _audit, "gdpr": _compliance, "compliance": _compliance,
                "integrations": _integrations, "regions": _regions, "workflows": _workflows, "silences": _workflows,
                "incidents": _workflows}
app = typer.Typer(help="M1 Analytics: streaming anomaly detection from Kafka to ClickHouse.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False, cls=lazy_group(SUB_COMMANDS))
kafka_app = typer.Typer(help="The local single-node Kafka broker (KRaft) for the demo, tests and CI.", no_args_is_help=True, pretty_exceptions_show_locals=False)
app.add_typer(kafka_app, name="kafka")
console = Console()


REGION_OPTION = typer.Option("", "--region", help="A region's own cluster (<home>/regions/<name>, see `m1 regions`).")


def _local_kafka(region: str):  # noqa: ANN202 - LocalKafka, imported lazily
    from core.kafka.local_broker import LocalKafka
    from regions.cluster import RegionSet

    return RegionSet(get_settings(), [region]).kafka(region) if region else LocalKafka(get_settings())


@kafka_app.command("start")
def kafka_start(secure: bool = typer.Option(False, help="SASL/SCRAM-SHA-512 and ACLs, super user 'admin' "
                                                        "(its password in <home>/kafka/admin.password)."),
                region: str = REGION_OPTION) -> None:
    """Fetch the Kafka jars (cached), start the broker on 127.0.0.1 and wait until it answers."""
    broker = _local_kafka(region)
    with console.status("starting Kafka (the first start downloads the jars with Maven)..."):
        state = broker.start(secure=secure)
    if region:
        from regions.cluster import RegionSet

        RegionSet(get_settings(), [region]).add_region(region)
    console.print(f"Kafka is up at [bold]{state.bootstrap}[/] (pid {state.pid})")
    if state.secure:
        console.print(f"secured: SASL_PLAINTEXT, SCRAM-SHA-512, ACLs; super user 'admin', password in "
                      f"{broker.admin_password_file} (clients of this home use it unless M1_KAFKA_* say otherwise)")
        console.print(f"SASL_SSL at [bold]{state.tls_bootstrap}[/], CA certificate {broker.ca_file}")


@kafka_app.command("stop")
def kafka_stop(region: str = REGION_OPTION) -> None:
    """Stop the local broker."""
    stopped = _local_kafka(region).stop()
    console.print("Kafka stopped" if stopped else "no local Kafka was running")


@kafka_app.command("status")
def kafka_status(region: str = REGION_OPTION) -> None:
    """Say whether the local broker runs, and where; exits 1 when it does not."""
    state = _local_kafka(region).status()
    if state is None:
        console.print("no local Kafka is running")
        raise typer.Exit(1)
    secured = f", secured (SASL_SSL at {state.tls_bootstrap})" if state.secure else ""
    console.print(f"Kafka is up at [bold]{state.bootstrap}[/] (pid {state.pid}){secured}")


@app.command()
def worker(loglevel: str = typer.Option("warn", help="crit, error, warn, info or debug."),
           role: str = typer.Option("all", help="all: the whole pipeline, owning the store. store-owner: all but "
                                                "scoring the metrics topic; inserts what scorers forward. scorer: "
                                                "scores the metrics topic only and forwards its inserts to the store "
                                                "owner (opens no store, serves no API; needs M1_STATE_DIR). "
                                                "See docs/scale-out.md.")) -> None:
    """Run the pipeline worker until interrupted (uses the local broker unless M1_KAFKA_BOOTSTRAP is set)."""
    from faust import Worker

    from core.gc_tuning import tune_for_batches
    from core.kafka.topics import TopicLayoutError
    from streams.app import ROLES, build_app

    if role not in ROLES:
        console.print(f"[red]--role {role}:[/] expected one of {', '.join(ROLES)}")
        raise typer.Exit(2)
    try:
        faust_app = build_app(get_settings(), role)
    except TopicLayoutError as exc:
        console.print(f"[red]cannot start:[/] {exc}")
        raise typer.Exit(2) from None
    tune_for_batches()
    Worker(faust_app, loglevel=loglevel, quiet=True).execute_from_commandline()


@app.command()
def query(
    sql: str = typer.Argument(..., help="A SELECT (or SHOW/DESCRIBE/EXPLAIN) statement."),
    tenant: str = typer.Option(None, "--tenant", "-t", help="See only this tenant's rows."),
) -> None:
    """Run SQL against the store and print the result as a table.

    While a worker owns the embedded store, the query goes to its API with M1_API_KEY:
    every tenant's rows need a platform-admin key, --tenant an analyst key of that tenant.
    With no worker the store is opened directly: whoever can open its files owns them all."""
    from m1.query_client import QueryError, run_query

    try:
        result = run_query(get_settings(), sql, tenant=tenant)
    except QueryError as exc:
        hint = {401: " (set M1_API_KEY to a key from `m1 keys create`)",
                403: " (the key's roles or tenant do not allow this query)"}.get(exc.status or 0, "")
        console.print(f"[red]query failed:[/] {exc}{hint}")
        raise typer.Exit(2) from None
    table = Table(*result.columns)
    for row in result.rows:
        table.add_row(*(str(v) for v in row))
    console.print(table)


@app.command()
def api(loglevel: str = typer.Option("warn", help="crit, error, warn, info or debug.")) -> None:
    """Serve the HTTP API (/v1) alone on M1_WEB_BIND:M1_WEB_PORT until interrupted.

    For a ClickHouse server (M1_CLICKHOUSE_URL), or an embedded store no worker holds.
    A running `m1 worker` serves the API itself."""
    from mode import Worker

    from api.service import standalone_service
    from sinks.clickhouse import StoreUnavailable

    try:
        service = standalone_service(get_settings())
    except StoreUnavailable as exc:  # most often: a worker holds it, and serves the API already
        console.print(f"[red]cannot open the store:[/] {exc}")
        raise typer.Exit(2) from None
    Worker(service, loglevel=loglevel, quiet=True).execute_from_commandline()


@app.command()
def demo(
    duration: float = typer.Option(60.0, help="Seconds of workload to produce."),
    rate: float = typer.Option(1000.0, help="Metric points per second, all series together."),
    tenants: int = typer.Option(3, help="Number of tenants."),
    regions: int = typer.Option(3, help="Number of regions."),
    series: int = typer.Option(40, help="Number of series across tenants, regions and services."),
    anomalies: int = typer.Option(12, help="Anomaly episodes to inject (spikes, level shifts, drifts)."),
    invalid_share: float = typer.Option(0.002, help="Share of records sent malformed, to show dead-lettering."),
    seed: int = typer.Option(7, help="Random seed of the workload."),
    keep_running: bool = typer.Option(False, help="Leave the broker and worker running afterwards."),
) -> None:
    """Start what is needed, stream a multi-tenant, multi-region workload with injected anomalies, summarise."""
    from m1.demo import DemoOptions, run_demo

    options = DemoOptions(duration, rate, tenants, regions, series, anomalies, invalid_share, seed, keep_running)
    run_demo(get_settings(), options, console)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level.")) -> None:
    """M1 Analytics command line."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)


if __name__ == "__main__":
    app()
