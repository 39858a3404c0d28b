"""Stable per-tenant pseudonyms: ``pii:<hex16>``, the first 64 bits of HMAC-SHA256 of the value
under the tenant's own key.

The tenant's key is derived from the deployment's personal-data secret (``M1_PII_KEY_PATH``,
``<home>/pii.key`` by default, 32 random bytes created with mode 0600 on first use; see
:func:`compliance.subject_keys.pii_secret`), so one value has one pseudonym within a tenant
(series, joins and group-bys still work) and unrelated ones in two tenants, and nobody without
the secret can test a guess. Pseudonyms are remembered (a bounded cache) because label values
repeat with every point.

>>> p = Pseudonymiser(bytes(32))
>>> p("acme", "alice@example.com") == p("acme", "alice@example.com") != p("beta", "alice@example.com")
True
>>> p("acme", "alice@example.com")
'pii:fdd5809e1f6365eb'
>>> is_pseudonym(p("acme", "x")), is_pseudonym("pii:zz")
(True, False)
"""

from __future__ import annotations

import hmac
import re

from compliance.subject_keys import derived_key, pii_secret
from core.settings import Settings

PREFIX = "pii:"
_PSEUDONYM = re.compile(r"pii:[0-9a-f]{16}")
#: Most (tenant, value) pseudonyms remembered; the cache starts afresh beyond it.
CACHE_SIZE = 200_000


def is_pseudonym(value: str) -> bool:
    """Whether ``value`` is a pseudonym this module makes."""
    return _PSEUDONYM.fullmatch(value) is not None


class Pseudonymiser:
    """``pseudonymiser(tenant, value)``: the value's pseudonym in ``tenant`` (see the module)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._keys: dict[str, bytes] = {}
        self._cache: dict[tuple[str, str], str] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Pseudonymiser:
        """The deployment's pseudonymiser (its secret file created on first use)."""
        return cls(pii_secret(settings))

    def __call__(self, tenant: str, value: str) -> str:
        cached = self._cache.get((tenant, value))
        if cached is not None:
            return cached
        if is_pseudonym(value):  # already one: pseudonymising is idempotent
            return value
        key = self._keys.get(tenant)
        if key is None:
            key = self._keys[tenant] = derived_key(self._secret, "pseudonym", tenant)
        pseudonym = PREFIX + hmac.digest(key, value.encode(), "sha256")[:8].hex()
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[(tenant, value)] = pseudonym
        return pseudonym
