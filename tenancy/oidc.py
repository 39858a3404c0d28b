"""OIDC bearer tokens: a JWT signed by the configured issuer becomes a :class:`~tenancy.principal.Principal`.

A token is accepted only if all of these hold, else :class:`TokenError` says which failed:

- its ``alg`` is RS256 or ES256 (never HS*, never ``none``) and matches its signing key;
- its ``kid`` names a key of the issuer's JWKS (``oidc_jwks_path`` file, reread when it changes,
  or ``oidc_jwks_url``, fetched and cached 5 minutes; an unknown kid refetches at most every 30 s);
- the signature holds, and ``exp``, ``iss``, ``aud`` and ``sub`` are present, ``iss`` and ``aud``
  are the configured ones and ``exp`` has not passed (``oidc_leeway_seconds`` of clock skew);
- the tenant claim (``oidc_tenant_claim``) names an enabled tenant of the registry, and the roles
  claim (``oidc_roles_claim``) is a non-empty list of known roles, with ``platform-admin`` and
  ``monitoring`` only for the ``platform`` tenant.

OIDC is off while ``oidc_issuer`` is empty: every token is then refused.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import jwt

from core.settings import Settings
from core.tenant_names import PLATFORM, check_tenant
from tenancy.principal import Principal
from tenancy.registry import NotFound, Registry
from tenancy.roles import PLATFORM_ROLES, check_roles

ALGORITHMS = ("RS256", "ES256")


class TokenError(Exception):
    """A bearer token that is refused; the message is the reason."""


class OidcVerifier:
    """Verifies JWT bearer tokens against the issuer, audience and JWKS of ``settings``. Thread-safe."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.issuer = settings.oidc_issuer
        self.audience = settings.oidc_audience
        self.tenant_claim = settings.oidc_tenant_claim
        self.roles_claim = settings.oidc_roles_claim
        self.leeway = settings.oidc_leeway_seconds
        self._registry = registry
        self._jwks_path = settings.oidc_jwks_path
        self._client = jwt.PyJWKClient(settings.oidc_jwks_url, timeout=5) if settings.oidc_jwks_url else None
        self._file_lock = threading.Lock()
        self._file_jwks: tuple[float, jwt.PyJWKSet] | None = None
        if self.enabled and not self.audience:
            raise ValueError("M1_OIDC_AUDIENCE is required when M1_OIDC_ISSUER is set")
        if self.enabled and not (self._jwks_path or self._client):
            raise ValueError("M1_OIDC_JWKS_URL or M1_OIDC_JWKS_PATH is required when M1_OIDC_ISSUER is set")

    @property
    def enabled(self) -> bool:
        return bool(self.issuer)

    def verify(self, token: str) -> Principal:
        """The principal ``token`` proves, or :class:`TokenError` with the reason."""
        if not self.enabled:
            raise TokenError("OIDC tokens are not accepted here (no M1_OIDC_ISSUER configured); use an API key")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"malformed token: {exc}") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise TokenError(f"token algorithm {alg!r} is not accepted (only {', '.join(ALGORITHMS)})")
        if not isinstance(kid, str):
            raise TokenError("token has no key id (kid)")
        key = self._signing_key(kid)
        if key.algorithm_name != alg:
            raise TokenError(f"token algorithm {alg} does not match its key ({key.algorithm_name})")
        try:
            claims = jwt.decode(token, key.key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                                leeway=self.leeway, options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"invalid token: {exc}") from None
        tenant = self._tenant(claims.get(self.tenant_claim))
        return Principal(subject=str(claims["sub"]), tenant=tenant, roles=self._roles(claims.get(self.roles_claim), tenant),
                         via="oidc")

    def _signing_key(self, kid: str) -> jwt.PyJWK:
        if self._jwks_path is not None:
            try:
                return self._file_keys()[kid]
            except KeyError:
                raise TokenError(f"unknown key id {kid!r}") from None
        try:
            return self._client.get_signing_key(kid)
        except jwt.PyJWKClientConnectionError as exc:
            raise TokenError(f"the issuer's keys cannot be fetched: {exc}") from None
        except jwt.PyJWKClientError:
            raise TokenError(f"unknown key id {kid!r}") from None

    def _file_keys(self) -> jwt.PyJWKSet:
        """The JWKS file, reread when its modification time changes."""
        path = Path(self._jwks_path)
        with self._file_lock:
            try:
                mtime = path.stat().st_mtime
                if self._file_jwks is None or self._file_jwks[0] != mtime:
                    self._file_jwks = (mtime, jwt.PyJWKSet.from_json(path.read_text()))
            except (OSError, jwt.PyJWKSetError) as exc:
                raise TokenError(f"the issuer's keys cannot be read from {path}: {exc}") from None
            return self._file_jwks[1]

    def _tenant(self, claim: Any) -> str:
        if claim is None:
            raise TokenError(f"token has no {self.tenant_claim!r} claim")
        try:
            tenant = self._registry.tenant(check_tenant(claim))
        except (ValueError, NotFound) as exc:
            raise TokenError(f"token tenant refused: {exc}") from None
        if tenant.disabled:
            raise TokenError(f"tenant {tenant.name!r} is disabled")
        return tenant.name

    def _roles(self, claim: Any, tenant: str) -> frozenset[str]:
        if not isinstance(claim, list) or not claim or not all(isinstance(r, str) for r in claim):
            raise TokenError(f"token claim {self.roles_claim!r} must be a non-empty list of role names")
        try:
            roles = check_roles(claim)
        except ValueError as exc:
            raise TokenError(f"token roles refused: {exc}") from None
        if (platform := sorted(roles & PLATFORM_ROLES)) and tenant != PLATFORM:
            raise TokenError(f"{platform[-1]} is granted only to the {PLATFORM!r} tenant, not {tenant!r}")
        return roles
