"""The registry of tenants and API keys: one SQLite file shared by the CLI, the worker and the API.

SQLite because the operator's CLI edits it while a worker reads it: WAL mode lets readers go on
while a writer commits, writes are short ``BEGIN IMMEDIATE`` transactions, and a busy file is
waited for (up to 10 s), so several processes can use it at once. API keys are stored only as
scrypt hashes (:mod:`tenancy.keys`); the raw key is returned once by :meth:`Registry.create_key`.

:meth:`Registry.version` counts changes that take access away or alter it (revoking a key,
disabling or enabling a tenant, changing a key's roles): a cache of verified keys is valid
only for the version it was filled at.

>>> import tempfile, pathlib
>>> reg = Registry(pathlib.Path(tempfile.mkdtemp()) / "registry.db")
>>> reg.create_tenant("acme", {"points_per_second": 500}).quotas
{'points_per_second': 500}
>>> info, raw = reg.create_key("acme", ["viewer"], name="grafana", created_by="doc")
>>> reg.verify_key(raw) == info, reg.verify_key(raw[:-1] + ("B" if raw.endswith("A") else "A"))
(True, None)
>>> v = reg.version(); reg.revoke_key(info.id).revoked, reg.version() == v + 1
(True, True)
>>> reg.create_key("nope", ["viewer"])
Traceback (most recent call last):
...
tenancy.registry.NotFound: no tenant 'nope'
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.settings import Settings
from tenancy import keys
from core.tenant_names import PLATFORM, check_tenant
from tenancy.roles import PLATFORM_ROLES, check_roles

#: Per-tenant quota overrides the registry accepts (tenancy/quotas.py applies them).
QUOTA_NAMES = ("points_per_second", "max_series", "requests_per_second")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY,
    disabled INTEGER NOT NULL DEFAULT 0,
    quotas TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(name),
    roles TEXT NOT NULL,
    name TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL,
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    scrypt_n INTEGER NOT NULL,
    scrypt_r INTEGER NOT NULL,
    scrypt_p INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys(tenant);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('version', 0)
"""
_KEY_COLUMNS = "id, tenant, roles, name, created_by, created_at, revoked_at"


class RegistryError(ValueError):
    """A registry request that cannot be done (the message says why)."""


class NotFound(RegistryError):
    """No such tenant or key."""


@dataclass(frozen=True)
class Tenant:
    name: str
    disabled: bool
    quotas: dict[str, float]
    created_at: float

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "disabled": self.disabled, "quotas": dict(self.quotas),
                "created_at": self.created_at}


@dataclass(frozen=True)
class KeyInfo:
    """An API key as listed: never its secret."""

    id: str
    tenant: str
    roles: frozenset[str]
    name: str
    created_by: str
    created_at: float
    revoked_at: float | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def subject(self) -> str:
        """The principal subject of this key: ``key:<id>``."""
        return f"key:{self.id}"

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "tenant": self.tenant, "roles": sorted(self.roles), "name": self.name,
                "created_by": self.created_by, "created_at": self.created_at, "revoked_at": self.revoked_at}


def check_quotas(quotas: Mapping[str, float] | None) -> dict[str, float]:
    """Quota overrides as a plain dict: known names, positive numbers."""
    quotas = dict(quotas or {})
    for name, value in quotas.items():
        if name not in QUOTA_NAMES:
            raise RegistryError(f"unknown quota {name!r}; quotas: {', '.join(QUOTA_NAMES)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise RegistryError(f"quota {name} must be a positive finite number, not {value!r}")
    return quotas


class Registry:
    """Tenants and API keys in the SQLite file at ``path`` (created 0600 with its schema).

    Thread-safe: one connection guarded by a lock; scrypt runs outside it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:  # created 0600; an existing file is not opened here: closing a descriptor of it would drop
            # every POSIX lock this process holds on it, and another connection of the process would then
            # read a WAL that a writer elsewhere checkpointed and deleted (stale forever)
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
        except FileExistsError:
            pass
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 10000")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA foreign_keys = ON")
        with self._write() as db:
            for statement in _SCHEMA.split(";"):
                db.execute(statement)
            db.execute("INSERT OR IGNORE INTO tenants (name, created_at) VALUES (?, ?)", (PLATFORM, time.time()))

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        """The registry at ``settings.registry_file``."""
        return cls(settings.registry_file)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction, taken before reading so concurrent writers queue."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    @staticmethod
    def _bump(db: sqlite3.Connection) -> None:
        db.execute("UPDATE meta SET value = value + 1 WHERE name = 'version'")

    def version(self) -> int:
        """Counter of access-reducing or -changing edits, in any process (one indexed read)."""
        with self._lock:
            return self._db.execute("SELECT value FROM meta WHERE name = 'version'").fetchone()[0]

    # Tenants.

    def create_tenant(self, name: str, quotas: Mapping[str, float] | None = None) -> Tenant:
        """A new enabled tenant with optional quota overrides (:data:`QUOTA_NAMES`)."""
        name, quotas = check_tenant(name), check_quotas(quotas)
        with self._write() as db:
            if db.execute("SELECT 1 FROM tenants WHERE name = ?", (name,)).fetchone():
                raise RegistryError(f"tenant {name!r} exists")
            db.execute("INSERT INTO tenants (name, quotas, created_at) VALUES (?, ?, ?)",
                       (name, json.dumps(quotas), time.time()))
        return self.tenant(name)

    def tenant(self, name: str) -> Tenant:
        """The tenant called ``name``; :class:`NotFound` if there is none."""
        rows = self._read("SELECT name, disabled, quotas, created_at FROM tenants WHERE name = ?", (name,))
        if not rows:
            raise NotFound(f"no tenant {name!r}")
        return _tenant(rows[0])

    def tenants(self) -> list[Tenant]:
        """Every tenant, by name."""
        return [_tenant(r) for r in self._read("SELECT name, disabled, quotas, created_at FROM tenants ORDER BY name")]

    def disable_tenant(self, name: str) -> Tenant:
        """Refuse the tenant's keys and tokens from the next request on (its data stays)."""
        if name == PLATFORM:
            raise RegistryError(f"the {PLATFORM!r} tenant cannot be disabled; revoke its keys instead")
        return self._set_disabled(name, True)

    def enable_tenant(self, name: str) -> Tenant:
        return self._set_disabled(name, False)

    def _set_disabled(self, name: str, disabled: bool) -> Tenant:
        with self._write() as db:
            if not db.execute("UPDATE tenants SET disabled = ? WHERE name = ?", (int(disabled), name)).rowcount:
                raise NotFound(f"no tenant {name!r}")
            self._bump(db)
        return self.tenant(name)

    # API keys.

    def create_key(self, tenant: str, roles: Iterable[str], name: str = "", created_by: str = "") -> tuple[KeyInfo, str]:
        """A new key of ``tenant`` with ``roles``: its listing and the raw key, returned only here.

        platform-admin and monitoring keys (:data:`~tenancy.roles.PLATFORM_ROLES`) belong to the
        :data:`~core.tenant_names.PLATFORM` tenant only."""
        roles = _key_roles(tenant, roles)
        key_id, raw = keys.new_key()
        salt = keys.new_salt()
        digest = keys.hash_key(raw, salt)
        with self._write() as db:
            if not db.execute("SELECT 1 FROM tenants WHERE name = ?", (tenant,)).fetchone():
                raise NotFound(f"no tenant {tenant!r}")
            db.execute(
                f"INSERT INTO api_keys ({_KEY_COLUMNS}, salt, hash, scrypt_n, scrypt_r, scrypt_p)"
                " VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?)",
                (key_id, tenant, json.dumps(sorted(roles)), name, created_by, time.time(), salt, digest,
                 keys.SCRYPT_N, keys.SCRYPT_R, keys.SCRYPT_P))
        return self.key(key_id), raw

    def key(self, key_id: str) -> KeyInfo:
        """The key ``key_id`` (revoked or not); :class:`NotFound` if there is none."""
        rows = self._read(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
        if not rows:
            raise NotFound(f"no API key {key_id!r}")
        return _key(rows[0])

    def keys(self, tenant: str | None = None) -> list[KeyInfo]:
        """Every key, or the keys of ``tenant``, oldest first; never a secret."""
        if tenant is None:
            rows = self._read(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id")
        else:
            self.tenant(tenant)
            rows = self._read(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant = ? ORDER BY created_at, id", (tenant,))
        return [_key(r) for r in rows]

    def revoke_key(self, key_id: str) -> KeyInfo:
        """Revoke the key from the next request on (revoking twice keeps the first time)."""
        with self._write() as db:
            if not db.execute("UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?",
                              (time.time(), key_id)).rowcount:
                raise NotFound(f"no API key {key_id!r}")
            self._bump(db)
        return self.key(key_id)

    def set_key_roles(self, key_id: str, roles: Iterable[str]) -> KeyInfo:
        """Replace the key's roles (same rules as :meth:`create_key`)."""
        roles = _key_roles(self.key(key_id).tenant, roles)
        with self._write() as db:
            db.execute("UPDATE api_keys SET roles = ? WHERE id = ?", (json.dumps(sorted(roles)), key_id))
            self._bump(db)
        return self.key(key_id)

    def verify_key(self, raw: str) -> KeyInfo | None:
        """The key ``raw`` is, if it is well formed, known and its secret matches (scrypt, constant-time
        compare; ~32 ms); else ``None``. Revoked keys are returned too: check ``.revoked``."""
        key_id = keys.parse_key(raw)
        if key_id is None:
            return None
        rows = self._read(f"SELECT {_KEY_COLUMNS}, salt, hash, scrypt_n, scrypt_r, scrypt_p FROM api_keys WHERE id = ?",
                          (key_id,))
        if not rows:
            return None
        salt, digest, n, r, p = rows[0][7:]
        return _key(rows[0][:7]) if keys.verify_key(raw, salt, digest, n, r, p) else None


def _key_roles(tenant: str, roles: Iterable[str]) -> frozenset[str]:
    """Roles a key of ``tenant`` may hold: known, at least one, platform roles only in the platform tenant."""
    roles = check_roles(roles)
    if not roles:
        raise RegistryError("a key needs at least one role")
    if (platform := sorted(roles & PLATFORM_ROLES)) and tenant != PLATFORM:
        raise RegistryError(f"{platform[-1]} keys belong to the {PLATFORM!r} tenant, not {tenant!r}")
    return roles


def _tenant(row: tuple) -> Tenant:
    name, disabled, quotas, created_at = row
    return Tenant(name, bool(disabled), json.loads(quotas), created_at)


def _key(row: tuple) -> KeyInfo:
    key_id, tenant, roles, name, created_by, created_at, revoked_at = row
    return KeyInfo(key_id, tenant, frozenset(json.loads(roles)), name, created_by, created_at, revoked_at)
