"""Who is asking: the identity an API key or an OIDC token resolves to.

>>> p = Principal(subject="key:ab12", tenant="acme", roles=frozenset({"viewer"}), via="api_key")
>>> p.can("anomalies:read", "acme"), p.can("anomalies:read", "globex"), p.can("sql:tenant", "acme")
(True, False, False)
>>> admin = Principal("key:ff00", "platform", frozenset({"platform-admin"}), "api_key")
>>> admin.can("anomalies:read", "globex")
True
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from tenancy.roles import ANY_TENANT, permissions_of


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: ``subject`` (``key:<id>`` or the token's ``sub``), its tenant,
    its roles and how it authenticated (``api_key`` or ``oidc``)."""

    subject: str
    tenant: str
    roles: frozenset[str]
    via: str

    @cached_property
    def permissions(self) -> frozenset[str]:
        return permissions_of(self.roles)

    def can(self, permission: str, tenant: str | None = None) -> bool:
        """True if a role grants ``permission`` and, for a tenant's resource, the tenant is the
        principal's own or a role grants acting on any tenant."""
        if permission not in self.permissions:
            return False
        return tenant is None or tenant == self.tenant or ANY_TENANT in self.permissions
