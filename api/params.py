"""Declared request parameters: each one parses and bounds its raw text, and describes itself for OpenAPI.

A parameter turns the text a caller sent into a checked value, or raises :class:`BadInput`
(answered 400 with the message). A query parameter may also carry the SQL condition it adds
to a listing (``sql``), always with ``{name:Type}`` placeholders bound by the engine.

>>> Limit().parse("25"), Limit().parse(None)
(25, 100)
>>> Limit().parse("0")
Traceback (most recent call last):
...
api.params.BadInput: limit: must be an integer from 1 to 10000, not '0'
>>> Time("since").parse("2026-01-01T00:00:00Z").isoformat(), Time("since").parse("1767225600").isoformat()
('2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00')
>>> Choice("severity", choices=("warning", "critical")).parse("x' OR 1=1")
Traceback (most recent call last):
...
api.params.BadInput: severity: must be one of warning, critical
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

#: Times outside this range are refused (as event times are: schemas.events.EpochSeconds).
EARLIEST, LATEST = 946_684_800.0, 4_102_444_800.0


class BadInput(ValueError):
    """A parameter or body the API refuses; the message names it and says what it may be."""


@dataclass(frozen=True)
class Param:
    """A parameter in the query string (``where="query"``) or the path (``where="path"``).

    ``sql`` is the condition it adds to a listing when given, e.g. ``severity = {severity:String}``."""

    name: str
    description: str = ""
    where: str = "query"
    required: bool = False
    sql: str = ""

    def parse(self, raw: str | None) -> Any:
        """The checked value of ``raw`` (None if absent and optional)."""
        if raw is None:
            if self.required:
                raise BadInput(f"{self.name}: required")
            return self.default()
        return self.convert(raw)

    def default(self) -> Any:
        return None

    def convert(self, raw: str) -> Any:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def openapi(self) -> dict[str, Any]:
        """This parameter as an OpenAPI 3.1 Parameter Object."""
        return {"name": self.name, "in": self.where, "required": self.required or self.where == "path",
                "description": self.description, "schema": self.schema()}


@dataclass(frozen=True)
class Text(Param):
    """A string of at most ``max_length`` characters matching ``pattern``."""

    max_length: int = 256
    pattern: str = r"[^\x00-\x1f\x7f]*"

    def convert(self, raw: str) -> str:
        if len(raw) > self.max_length or not re.fullmatch(self.pattern, raw):
            raise BadInput(f"{self.name}: at most {self.max_length} characters matching {self.pattern}")
        return raw

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "maxLength": self.max_length, "pattern": f"^{self.pattern}$"}


@dataclass(frozen=True)
class Choice(Param):
    """One of a fixed set of strings."""

    choices: tuple[str, ...] = ()

    def convert(self, raw: str) -> str:
        if raw not in self.choices:
            raise BadInput(f"{self.name}: must be one of {', '.join(self.choices)}")
        return raw

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.choices)}


@dataclass(frozen=True)
class Limit(Param):
    """How many rows at most: an integer from 1 to ``maximum``, ``fallback`` when absent."""

    name: str = "limit"
    description: str = "Rows at most."
    fallback: int = 100
    maximum: int = 10_000

    def default(self) -> int:
        return self.fallback

    def convert(self, raw: str) -> int:
        if not re.fullmatch(r"[0-9]{1,9}", raw) or not 1 <= int(raw) <= self.maximum:
            raise BadInput(f"{self.name}: must be an integer from 1 to {self.maximum}, not {raw[:40]!r}")
        return int(raw)

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": 1, "maximum": self.maximum, "default": self.fallback}


@dataclass(frozen=True)
class Time(Param):
    """A UTC time: epoch seconds (``1767225600.5``) or ISO-8601 (``2026-01-01T00:00:00Z``; no zone = UTC)."""

    def convert(self, raw: str) -> datetime:
        text = raw.strip()
        try:
            seconds = float(text) if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text) else _iso_seconds(text)
        except ValueError:
            seconds = math.nan
        if not EARLIEST <= seconds < LATEST:
            raise BadInput(f"{self.name}: must be epoch seconds or an ISO-8601 time between 2000 and 2100, "
                           f"not {raw[:40]!r}")
        return datetime.fromtimestamp(seconds, timezone.utc)

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "description": "epoch seconds or ISO-8601 (UTC if no zone)",
                "examples": ["2026-01-01T00:00:00Z", "1767225600"]}


def _iso_seconds(text: str) -> float:
    moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def parse_all(params: tuple[Param, ...], path: dict[str, str], query: Any) -> dict[str, Any]:
    """Checked values of ``params`` from the request's path values and query string.

    A query parameter given twice is refused (which one counts would be a guess), and so is
    one the route does not declare (a misspelt filter must not silently widen a listing)."""
    declared = {p.name for p in params if p.where == "query"}
    for name in query:
        if name not in declared:
            takes = ", ".join(sorted(declared)) or "none"
            raise BadInput(f"{name[:40]!r}: unknown query parameter; this route takes: {takes}")
        if len(query.getall(name)) > 1:
            raise BadInput(f"{name}: given more than once")
    return {p.name: p.parse(path.get(p.name) if p.where == "path" else query.get(p.name)) for p in params}
