"""Where the audit trail's files are: the signing key (and its public history) and the witness."""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings


def key_file(settings: Settings) -> Path:
    """The signing key: ``M1_AUDIT_KEY_PATH`` or ``<home>/audit-signing.key``."""
    return (settings.audit_key_path or settings.home / "audit-signing.key").resolve()


def witness_file(settings: Settings) -> Path:
    """Last verified heads: ``M1_AUDIT_WITNESS_PATH`` or ``<home>/audit-witness.json``."""
    return (settings.audit_witness_path or settings.home / "audit-witness.json").resolve()
