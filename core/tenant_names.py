"""Tenant names: one rule for the registry, topics, the API and the CLI.

A name is 2 to 32 characters: a lower-case letter, then lower-case letters, digits or ``-``.
It is used in topic names (``<tenant>.metrics``), Kafka principals and SQL filters, so
nothing else is allowed. The tenant :data:`PLATFORM` is reserved for platform-admin keys.

>>> check_tenant("acme-eu1")
'acme-eu1'
>>> check_tenant("Acme")
Traceback (most recent call last):
...
ValueError: invalid tenant name 'Acme': 2-32 characters, a lower-case letter first, then lower-case letters, digits or '-'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import repeat

#: The reserved tenant that holds platform-admin keys (created with the registry).
PLATFORM = "platform"

_TENANT = re.compile(r"[a-z][a-z0-9-]{1,31}")


def check_tenant(name: str) -> str:
    """``name`` if it is a valid tenant name, else ``ValueError`` saying what a name may be."""
    if not isinstance(name, str) or not _TENANT.fullmatch(name):
        raise ValueError(f"invalid tenant name {name!r}: 2-32 characters, a lower-case letter first, "
                         "then lower-case letters, digits or '-'")
    return name


def series_tenants(keys: Iterable[str]) -> list[str]:
    """:func:`series_tenant` of each series key, in order (a batch holds thousands: no call each).

    >>> series_tenants(["acme|eu-west-1|api|latency_ms|host=h1", "plain"])
    ['acme', '']
    """
    return [tenant if bar else "" for tenant, bar, _ in map(str.partition, keys, repeat("|"))]


def series_tenant(series: str) -> str:
    """The tenant of a series key: its prefix before the first ``|`` ("" if it has none).

    >>> series_tenant("acme|eu-west-1|api|latency_ms|host=h1"), series_tenant("plain")
    ('acme', '')
    """
    tenant, bar, _ = series.partition("|")
    return tenant if bar else ""
