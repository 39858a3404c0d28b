"""Who is calling: an ``Authorization: Bearer ...`` header becomes a :class:`~tenancy.principal.Principal`.

Two kinds of bearer credential are accepted:

- an API key (``m1_<id>_<secret>``, see :mod:`tenancy.keys`): looked up in the registry and checked
  with scrypt (~32 ms). A verified key is remembered in memory, under the SHA-256 of the key, for
  ``api_key_cache_seconds`` and only while the registry's :meth:`~tenancy.registry.Registry.version`
  is unchanged, so revoking a key or disabling its tenant (in any process) refuses it on the next
  request. The remembered path costs a hash and one SQLite read;
- anything else is taken for an OIDC JWT (:mod:`tenancy.oidc`).

Refusals raise :class:`AuthenticationError` with the reason (the API answers 401).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from core.settings import Settings
from tenancy import keys
from tenancy.oidc import OidcVerifier, TokenError
from tenancy.principal import Principal
from tenancy.registry import NotFound, Registry

#: Verified keys remembered at most; the memory is emptied when it is full.
CACHE_ENTRIES = 10_000


class AuthenticationError(Exception):
    """The caller could not be authenticated. ``reason`` says why; ``subject`` names the key
    (``key:<id>``) when the credential was a well-formed API key, for the access log."""

    def __init__(self, reason: str, subject: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.subject = subject


class AuthenticationBusy(AuthenticationError):
    """Too many new credentials are being checked at once: not a verdict on this one (retry later)."""


class Authenticator:
    """Turns Authorization headers into principals. Thread-safe; one per process is enough.

    On the async path at most ``max_pending`` distinct new credentials are checked or queued at
    once (scrypt costs ~32 ms): beyond that a new one is refused at once, remembered keys are not."""

    def __init__(self, settings: Settings, registry: Registry, max_pending: int = 256) -> None:
        self.registry = registry
        self.max_pending = max_pending  # distinct credentials checked or queued at once (async path)
        self.oidc = OidcVerifier(settings, registry)
        self._ttl = settings.api_key_cache_seconds
        self._verified: dict[bytes, tuple[int, float, Principal]] = {}
        # Bounds the CPU and memory (16 MiB each) of concurrent scrypt checks.
        self._executor = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="m1-authn")
        self._pending: dict[bytes, Future] = {}  # checks running in the pool, by credential digest
        # Re-entrant: add_done_callback runs _forget at once, under this lock, if the check already ended.
        self._pending_lock = threading.RLock()

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization`` header value, or :class:`AuthenticationError`."""
        credential = _bearer(authorization)
        if credential.startswith(keys.PREFIX):
            return self.cached(credential) or self._verify_key(credential)
        try:
            return self.oidc.verify(credential)
        except TokenError as exc:
            raise AuthenticationError(str(exc)) from None

    async def authenticate_async(self, authorization: str | None) -> Principal:
        """:meth:`authenticate` for the event loop: a remembered key is answered inline, anything
        slow (scrypt, fetching the issuer's keys) runs in a small thread pool, once for all the
        requests that bring the same credential meanwhile."""
        credential = _bearer(authorization)
        if credential.startswith(keys.PREFIX):
            if keys.parse_key(credential) is None:
                raise AuthenticationError("malformed API key")
            if principal := self.cached(credential):
                return principal
        digest = _digest(credential)
        with self._pending_lock:
            future = self._pending.get(digest)
            if future is None:
                if len(self._pending) >= self.max_pending:  # a flood of new credentials waits for no one
                    raise AuthenticationBusy("too many credentials are being checked at once; retry shortly")
                future = self._pending[digest] = self._executor.submit(self.authenticate, authorization)
                future.add_done_callback(lambda done: self._forget(digest, done))
        return await asyncio.wrap_future(future)

    def _forget(self, digest: bytes, done: Future) -> None:
        with self._pending_lock:
            if self._pending.get(digest) is done:
                del self._pending[digest]

    def cached(self, raw_key: str) -> Principal | None:
        """The principal of a key verified within ``api_key_cache_seconds`` at the current
        registry version, else ``None``."""
        entry = self._verified.get(_digest(raw_key))
        if entry is None:
            return None
        version, expires, principal = entry
        if time.monotonic() >= expires or version != self.registry.version():
            return None
        return principal

    def _verify_key(self, raw_key: str) -> Principal:
        key_id = keys.parse_key(raw_key)
        if key_id is None:
            raise AuthenticationError("malformed API key")
        subject = f"key:{key_id}"
        version = self.registry.version()  # read before the checks: a change during them forces a recheck
        info = self.registry.verify_key(raw_key)
        if info is None:
            raise AuthenticationError("invalid API key", subject)
        if info.revoked:
            raise AuthenticationError("API key revoked", subject)
        try:
            tenant = self.registry.tenant(info.tenant)
        except NotFound:
            raise AuthenticationError(f"tenant {info.tenant!r} of the key does not exist", subject) from None
        if tenant.disabled:
            raise AuthenticationError(f"tenant {tenant.name!r} is disabled", subject)
        principal = Principal(subject=subject, tenant=info.tenant, roles=info.roles, via="api_key")
        if len(self._verified) >= CACHE_ENTRIES:
            self._verified.clear()
        self._verified[_digest(raw_key)] = (version, time.monotonic() + self._ttl, principal)
        return principal

    def close(self) -> None:
        """Stop the thread pool (pending checks finish)."""
        self._executor.shutdown(wait=True)


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationError("missing Authorization header (expected 'Bearer <API key or token>')")
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise AuthenticationError("Authorization must be 'Bearer <API key or token>'")
    return credential


def _digest(raw_key: str) -> bytes:
    return hashlib.sha256(raw_key.encode()).digest()
