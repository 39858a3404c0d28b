"""Signed tree heads: a tenant's RFC 9162 root at a tree size, signed with Ed25519.

The signature covers :func:`message`, a fixed line format, so an auditor can rebuild it from
the JSON fields alone::

    m1-audit-sth/1\\n<tenant>\\n<tree_size>\\n<root hex>\\n<timestamp ms>\\n<key id>\\n

>>> from audit.keys import new_private_key, key_id, public_pem
>>> private = new_private_key()
>>> sth = sign(private, "acme", 3, bytes(32), 1700000000000)
>>> verify(sth, {key_id(private.public_key()): public_pem(private.public_key())})
True
>>> verify(msgspec.structs.replace(sth, tree_size=4), {sth.key_id: public_pem(private.public_key())})
False
"""

from __future__ import annotations

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from audit.keys import key_id


class TreeHead(msgspec.Struct, frozen=True):
    """A signed tree head: ``root`` (hex) of ``tenant``'s first ``tree_size`` events at
    ``timestamp_ms``, signed by the key ``key_id`` (``signature`` hex)."""

    tenant: str
    tree_size: int
    root: str
    timestamp_ms: int
    key_id: str
    signature: str


def message(tenant: str, tree_size: int, root: str, timestamp_ms: int, key: str) -> bytes:
    """The bytes a tree head's signature covers."""
    return f"m1-audit-sth/1\n{tenant}\n{tree_size}\n{root}\n{timestamp_ms}\n{key}\n".encode()


def sign(private: Ed25519PrivateKey, tenant: str, tree_size: int, root: bytes, timestamp_ms: int) -> TreeHead:
    kid = key_id(private.public_key())
    signature = private.sign(message(tenant, tree_size, root.hex(), timestamp_ms, kid))
    return TreeHead(tenant, tree_size, root.hex(), timestamp_ms, kid, signature.hex())


def verify(sth: TreeHead, public_keys: dict[str, str]) -> bool:
    """Whether ``sth`` is signed by the key it names, and that key is one of ``public_keys``
    (key id -> PEM; the trusted history, never keys the log itself offers)."""
    pem = public_keys.get(sth.key_id)
    if pem is None:
        return False
    public = load_pem_public_key(pem.encode())
    if not isinstance(public, Ed25519PublicKey) or key_id(public) != sth.key_id:
        return False
    try:
        public.verify(bytes.fromhex(sth.signature),
                      message(sth.tenant, sth.tree_size, sth.root, sth.timestamp_ms, sth.key_id))
    except (InvalidSignature, ValueError):
        return False
    return True
