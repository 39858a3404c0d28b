"""API key format and hashing: ``m1_<12 hex id>_<43-char urlsafe secret>``, kept only as scrypt.

The id is public (it names the key in listings and logs); the whole key is hashed with scrypt
(n=2**14, r=8, p=1: 16 MiB and about 32 ms per check on the reference 2-core host) and a
random 16-byte salt per key, so a stolen registry does not yield usable keys.

>>> key_id, raw = new_key()
>>> parse_key(raw) == key_id, len(raw)
(True, 59)
>>> parse_key("m1_zz_not-a-key") is None
True
>>> digest = hash_key(raw, b"0" * 16)
>>> verify_key(raw, b"0" * 16, digest), verify_key(raw + "x", b"0" * 16, digest)
(True, False)
"""

from __future__ import annotations

import hmac
import re
import secrets

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

PREFIX = "m1_"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES = 16
_KEY = re.compile(r"m1_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")


def new_key() -> tuple[str, str]:
    """A fresh ``(key_id, raw_key)``; the raw key is shown once and never stored."""
    key_id = secrets.token_hex(6)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def parse_key(raw: str) -> str | None:
    """The key id of a well-formed raw key, else ``None``."""
    match = _KEY.fullmatch(raw)
    return match.group(1) if match else None


def new_salt() -> bytes:
    return secrets.token_bytes(SALT_BYTES)


def hash_key(raw: str, salt: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> bytes:
    """scrypt of the whole raw key with ``salt`` (32 bytes)."""
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(raw.encode())


def verify_key(raw: str, salt: bytes, digest: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> bool:
    """True if ``raw`` hashes to ``digest``; the comparison takes constant time."""
    return hmac.compare_digest(hash_key(raw, salt, n, r, p), digest)
