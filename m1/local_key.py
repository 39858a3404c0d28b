"""A platform-admin API key that a local tool (the demo, a benchmark) keeps for itself.

The raw key lives in ``<home>/<name>.key``, readable by its owner only (0600, like an ssh key),
because the registry keeps nothing but its hash. A rerun reuses it while the registry still
accepts it, and makes a new one when it was revoked or the registry is new. Only the key's id
is ever shown (:func:`shown`).

>>> import tempfile
>>> from core.settings import Settings
>>> settings = Settings(home=tempfile.mkdtemp())
>>> first = local_admin_key(settings, "demo")
>>> local_admin_key(settings, "demo") == first, oct(key_file(settings, "demo").stat().st_mode & 0o777)
(True, '0o600')
>>> shown(first) == first[:16] + "…"
True
"""

from __future__ import annotations

import os
from pathlib import Path

from core.settings import Settings
from tenancy.keys import parse_key
from core.tenant_names import PLATFORM
from tenancy.registry import Registry


def key_file(settings: Settings, name: str) -> Path:
    return (settings.home / f"{name}.key").resolve()


def shown(raw: str) -> str:
    """The key as it may be printed: ``m1_<id>_…`` (the id names it in ``m1 keys list``)."""
    key_id = parse_key(raw)
    return f"m1_{key_id}_…" if key_id else "…"


def local_admin_key(settings: Settings, name: str) -> str:
    """The raw platform-admin key of the local tool ``name``, from its file or newly made."""
    path = key_file(settings, name)
    registry = Registry.from_settings(settings)
    try:
        if path.exists():
            raw = path.read_text().strip()
            info = registry.verify_key(raw)
            if info is not None and not info.revoked and "platform-admin" in info.roles:
                return raw
        _, raw = registry.create_key(PLATFORM, ["platform-admin"], name=name, created_by=f"m1 {name}")
    finally:
        registry.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)  # a file left with wider permissions is narrowed
        out.write(raw + "\n")
    return raw
