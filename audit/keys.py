"""The Ed25519 key that signs tree heads, and the history of its public keys.

The private key lives in one PEM file (``M1_AUDIT_KEY_PATH``, default ``<home>/audit-signing.key``),
created on first use with mode 0600; a key file that others may read or write is refused. The
public half of every key that ever signed is kept in ``<key file>.history.json`` (written 0644:
it is what outside auditors get), each entry with its id, PEM, creation and retirement time.
:func:`rotate` makes a new key, retires the old one in the history and replaces the key file
atomically; the old private key is gone, its public key stays trusted for the heads it signed.

A key id is the first 16 hex digits of SHA-256 of the raw public key.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "k.pem"
>>> first = load_or_create(path)
>>> oct(path.stat().st_mode & 0o777), key_id(load_or_create(path).public_key()) == key_id(first.public_key())
('0o600', True)
>>> second = rotate(path)
>>> [(k["key_id"] == key_id(p.public_key()), k["retired_at_ms"] is None) for k, p in zip(history(path), (first, second))]
[(True, False), (True, True)]
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class UnsafeKeyFile(PermissionError):
    """The key file may be read or written by others than its owner."""


def new_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def history_path(path: Path) -> Path:
    return path.with_name(path.name + ".history.json")


def history(path: Path) -> list[dict[str, Any]]:
    """The public-key history of the key at ``path``, oldest first (empty before the first key)."""
    file = history_path(path)
    return json.loads(file.read_text())["keys"] if file.exists() else []


def trusted_keys(path: Path) -> dict[str, str]:
    """Key id -> public PEM of every key in the history."""
    return {k["key_id"]: k["public_key"] for k in history(path)}


def load_or_create(path: Path) -> Ed25519PrivateKey:
    """The private key at ``path``, created (0600) and entered in the history if missing."""
    if not path.exists():
        private = new_private_key()
        _write_key(path, private)
        _record(path, private, retire=None)
        return private
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise UnsafeKeyFile(f"{path} has mode {oct(mode)}: others may read or change it; chmod 600 it")
    private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    if key_id(private.public_key()) not in trusted_keys(path):  # a key put in place by hand
        _record(path, private, retire=None)
    return private


def rotate(path: Path) -> Ed25519PrivateKey:
    """A new key replaces the one at ``path`` (which is retired in the history); returns it."""
    old = load_or_create(path)
    new = new_private_key()
    _record(path, new, retire=key_id(old.public_key()))
    _write_key(path, new)
    return new


def _write_key(path: Path, private: Ed25519PrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(pem)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _record(path: Path, private: Ed25519PrivateKey, retire: str | None) -> None:
    now = int(time.time() * 1000)
    keys = history(path)
    for entry in keys:
        if entry["key_id"] == retire and entry["retired_at_ms"] is None:
            entry["retired_at_ms"] = now
    public = private.public_key()
    keys.append({"key_id": key_id(public), "algorithm": "Ed25519", "public_key": public_pem(public),
                 "created_at_ms": now, "retired_at_ms": None})
    file = history_path(path)
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_text(json.dumps({"keys": keys}, indent=2) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, file)
