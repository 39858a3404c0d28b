"""``m1 compliance policy check|show``: validate a personal-data policy file, and show what it does.

Both read ``FILE``, or without one the policy the settings name (``M1_PII_POLICY_PATH``, else the
shipped default). ``check`` exits 1 with every fault of a file the worker would refuse.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from compliance.policy import FieldRules, Policy, PolicyError, load_policy
from core.settings import get_settings

app = typer.Typer(help="The personal-data policy: check a file, show what it does.", no_args_is_help=True)
FILE = typer.Argument(None, help="A policy file (default: M1_PII_POLICY_PATH, else the shipped default).")
console = Console()


def _load(path: Path | None) -> Policy:
    try:
        return load_policy(path or get_settings().pii_policy_path)
    except PolicyError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _fields(policy: Policy) -> list[tuple[str, str, str]]:
    """``(where, field, class)`` of every classified field."""
    rows = []
    for event_type, rules in policy.events.items():
        for name, rule in rules.items():
            if isinstance(rule, FieldRules):
                rows += [(event_type, f"{name}.{key}", c) for key, c in rule.exact.items()]
            else:
                rows.append((event_type, name, rule))
    for where, source in (("otlp resource", policy.source.otlp.resource), ("otlp span", policy.source.otlp.span),
                          ("otlp metric", policy.source.otlp.metric)):
        rows += [(where, key, c) for key, c in source.items()]
    return rows


@app.command()
def check(path: Path = FILE) -> None:
    """Load the policy as the worker would; exit 1 with every fault if it cannot be used."""
    policy = _load(path)
    console.print(f"{policy.origin}: ok: {len(policy.actions)} classes, {len(policy.detector_class)} detectors, "
                  f"{len(_fields(policy))} classified fields", highlight=False)


@app.command()
def show(path: Path = FILE) -> None:
    """The policy's actions, detectors and classified fields."""
    policy = _load(path)
    table = Table(title=f"{policy.origin}: classes")
    table.add_column("class")
    table.add_column("action")
    table.add_column("detectors")
    for data_class, action in policy.actions.items():
        table.add_row(data_class, action, ", ".join(d for d, c in policy.detector_class.items() if c == data_class))
    console.print(table)
    fields = Table(title="classified fields (unlisted ones are scanned by the detectors)")
    for column in ("where", "field", "class"):
        fields.add_column(column)
    for row in _fields(policy):
        fields.add_row(*row)
    console.print(fields)
    console.print(f"data subject (whose key encrypts PHI): first of {', '.join(policy.subject_fields) or '(none)'}")
