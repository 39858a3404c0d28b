"""JSON answers: rows of the store as objects, times as RFC 3339 UTC.

>>> from datetime import datetime
>>> rows_as_items(["ts", "v"], [(datetime(2026, 1, 1), 1.5)])
[{'ts': datetime.datetime(2026, 1, 1, 0, 0, tzinfo=datetime.timezone.utc), 'v': 1.5}]
>>> json_response({"t": datetime(2026, 1, 1)}).body
b'{"t":"2026-01-01T00:00:00Z"}'
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import msgspec
from aiohttp import web

_encoder = msgspec.json.Encoder(enc_hook=str)


def json_value(value: Any) -> Any:
    """``value`` ready for the encoder: the engine's naive datetimes are UTC; bytes become text."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def rows_as_items(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Each row as an object keyed by column name."""
    return [{name: json_value(v) for name, v in zip(columns, row)} for row in rows]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """``data`` as an ``application/json`` response (naive datetimes taken as UTC)."""
    if isinstance(data, dict):
        data = {k: json_value(v) for k, v in data.items()}
    return web.Response(body=_encoder.encode(data), status=status, headers=headers,
                        content_type="application/json")
