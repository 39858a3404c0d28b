"""Secrets of receivers: named by reference (``env:NAME`` or ``file:/path``), never held in a workflow.

A workflow's YAML names where a secret lives; it is read only when a notification is sent, so a
rotated file or variable takes effect on the next attempt. Anything else is refused as a secret in
clear.

>>> import os; os.environ["M1_DOCTEST_SECRET"] = "s3cret"
>>> resolve("env:M1_DOCTEST_SECRET")
's3cret'
>>> check_ref("s3cret")
Traceback (most recent call last):
ValueError: a secret must be a reference 'env:NAME' or 'file:/path', not a value in clear
"""

from __future__ import annotations

import os
from pathlib import Path

PREFIXES = ("env:", "file:")


class MissingSecret(LookupError):
    """A referenced secret is not there (unset variable, missing file)."""


def check_ref(ref: str) -> str:
    """``ref`` if it is a reference (or empty); ``ValueError`` for anything that looks like a value."""
    if ref and not ref.startswith(PREFIXES):
        raise ValueError("a secret must be a reference 'env:NAME' or 'file:/path', not a value in clear")
    return ref


def resolve(ref: str) -> str:
    """The secret ``ref`` points to (stripped of surrounding whitespace); ``""`` for no reference."""
    if not check_ref(ref):
        return ""
    kind, _, name = ref.partition(":")
    if kind == "env":
        value = os.environ.get(name)
        if value is None:
            raise MissingSecret(f"secret {ref}: the variable is not set")
        return value.strip()
    try:
        return Path(name).expanduser().read_text().strip()
    except OSError as exc:
        raise MissingSecret(f"secret {ref}: {exc.strerror or exc}") from exc


def maybe_ref(value: str) -> str:
    """A value that may itself be secret (a Slack or Teams URL carries its token): resolved if it is
    a reference, else as given."""
    return resolve(value) if value.startswith(PREFIXES) else value
