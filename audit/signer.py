"""The signing key as the worker uses it: loaded from ``M1_AUDIT_KEY_PATH`` (created on first
use), reloaded when ``m1 audit rotate-key`` replaced the file, and its public history mirrored
into ``audit_keys`` whenever a key is loaded."""

from __future__ import annotations

import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import keys, log
from audit.sth import TreeHead, sign
from sinks.clickhouse import Store


class Signer:
    """Signs tree heads with the current key at ``path``; thread-safe."""

    def __init__(self, path: Path, store: Store | None = None) -> None:
        self.path = path
        self.store = store
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._key: Ed25519PrivateKey | None = None

    def key(self) -> Ed25519PrivateKey:
        """The current key (re-read when the file changed since the last call)."""
        with self._lock:
            stamp = (self.path.stat().st_ino, self.path.stat().st_mtime_ns) if self.path.exists() else None
            if self._key is None or stamp != self._stamp:
                self._key = keys.load_or_create(self.path)
                self._stamp = (self.path.stat().st_ino, self.path.stat().st_mtime_ns)
                if self.store is not None:
                    log.record_keys(self.store, keys.history(self.path))
            return self._key

    def sign(self, tenant: str, tree_size: int, root: bytes, timestamp_ms: int) -> TreeHead:
        return sign(self.key(), tenant, tree_size, root, timestamp_ms)
