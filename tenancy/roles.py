"""Roles and their permissions: the one declaration every access decision is made from.

A role is a named, fixed set of permissions; anything a principal's roles do not grant is
denied. Permissions on a tenant's data apply to the principal's own tenant only, unless one
of its roles grants :data:`ANY_TENANT` (platform-admin).

>>> sorted(permissions_of(["viewer"]))[:3]
['anomalies:read', 'bottlenecks:read', 'costs:read']
>>> "sql:tenant" in permissions_of(["viewer"]), "sql:tenant" in permissions_of(["analyst"])
(False, True)
>>> permissions_of(["no-such-role"])
Traceback (most recent call last):
...
ValueError: unknown role 'no-such-role'; roles: viewer, analyst, operator, auditor, tenant-admin, monitoring, platform-admin
>>> sorted(permissions_of(["monitoring"]))  # a Prometheus scrape key reads no tenant's data
['metrics:read']
"""

from __future__ import annotations

from collections.abc import Iterable

#: Acting on any tenant's data, not only the principal's own.
ANY_TENANT = "tenants:any"

#: Every permission, with what it allows.
PERMISSIONS: dict[str, str] = {
    "series:read": "list a tenant's series and read their points",
    "anomalies:read": "read a tenant's anomalies",
    "forecasts:read": "read a tenant's forecasts",
    "recommendations:read": "read a tenant's replica recommendations",
    "costs:read": "read a tenant's cost projections",
    "bottlenecks:read": "read a tenant's trace bottlenecks",
    "bottlenecks:run": "run the bottleneck analysis of a tenant's traces now",
    "traces:read": "read a tenant's traces and spans",
    "regions:read": "read region status",
    "sql:tenant": "run read-only SQL that sees only the tenant's own rows",
    "tenant:read": "read the tenant's settings, quotas and usage",
    "audit:read": "read the tenant's audit trail",
    "keys:read": "list the tenant's API keys (never their secrets)",
    "keys:write": "create and revoke the tenant's API keys",
    "gdpr:admin": "export and erase a data subject's personal data (GDPR Art. 15, 17, 20)",
    "compliance:admin": "read the compliance report and retention, set legal holds, apply retention",
    "incidents:read": "read a tenant's incidents and their timelines",
    "incidents:write": "acknowledge and resolve a tenant's incidents",
    "silences:read": "read a tenant's silences and maintenance windows",
    "silences:write": "create and expire a tenant's silences and maintenance windows",
    "tenants:admin": "create, list and disable tenants",
    "sql:admin": "run read-only SQL over every tenant's rows",
    "metrics:read": "read the worker's own health metrics (Prometheus text; no tenant's data)",
    ANY_TENANT: "act on any tenant, not only one's own",
}

_VIEWER = frozenset({
    "series:read", "anomalies:read", "forecasts:read", "recommendations:read", "costs:read",
    "bottlenecks:read", "traces:read", "regions:read", "incidents:read", "silences:read",
})
_ANALYST = _VIEWER | {"sql:tenant"}
_OPERATOR = _ANALYST | {"tenant:read", "bottlenecks:run", "incidents:write", "silences:write"}
_AUDITOR = frozenset({"audit:read", "tenant:read", "keys:read"})
_TENANT_ADMIN = _OPERATOR | _AUDITOR | {"keys:write", "gdpr:admin"}

#: Role name -> the permissions it grants. Order: least to most privileged.
ROLES: dict[str, frozenset[str]] = {
    "viewer": _VIEWER,
    "analyst": frozenset(_ANALYST),
    "operator": frozenset(_OPERATOR),
    "auditor": _AUDITOR,
    "tenant-admin": frozenset(_TENANT_ADMIN),
    "monitoring": frozenset({"metrics:read"}),  # what a Prometheus scrape key needs, nothing else
    "platform-admin": frozenset(PERMISSIONS),
}

#: Roles only keys and tokens of the platform tenant (``core.tenant_names.PLATFORM``) may hold.
PLATFORM_ROLES = frozenset({"monitoring", "platform-admin"})
#: Roles a tenant-admin may hand out in its own tenant (never a platform role).
TENANT_GRANTABLE = frozenset(ROLES) - PLATFORM_ROLES


def check_roles(roles: Iterable[str]) -> frozenset[str]:
    """The roles as a set; raises ``ValueError`` naming the first unknown one."""
    roles = frozenset(roles)
    for role in sorted(roles):
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    return roles


def permissions_of(roles: Iterable[str]) -> frozenset[str]:
    """Union of the permissions the roles grant; unknown roles raise ``ValueError``."""
    return frozenset().union(*(ROLES[r] for r in check_roles(roles)))
