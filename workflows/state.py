"""The engine's durable state: groups with their runs, incidents, and each tenant's silences.

Everything lives in one key-value mapping of JSON text (a Faust table in the worker, a dict in
tests), under keys ``t:<tenant>``, ``g:<tenant>|<workflow>|<group>`` and
``i:<tenant>|<service>|<region>``. :class:`Tx` reads each key once per input, and writes back
only what changed, so the table's changelog carries one record per changed key.

>>> store = {}
>>> tx = Tx(store)
>>> tx.tenant("acme").silences.append(Silence(id="s", tenant="acme", starts_at=0, ends_at=1))
>>> tx.commit()
>>> Tx(store).tenant("acme").silences[0].id
's'
"""

from __future__ import annotations

import hashlib
from collections.abc import MutableMapping
from typing import Any

import msgspec

from workflows.match import Silence
from workflows.signals import Signal

#: Run states that end a run.
ENDED = ("resolved", "failed")


def short_hash(*parts: object, size: int = 16) -> str:
    """A stable hex digest of ``parts``.

    >>> short_hash("a", 1)
    '839e11a421d370be'
    """
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:size]


class Alert(msgspec.Struct):
    """The latest signal of one fingerprint in a group, and its incident."""

    signal: Signal
    first_ts: float
    seen: float  # engine time it was last seen: it clears ``resolve_after`` later
    incident: str = ""


class Run(msgspec.Struct):
    """One execution of a workflow's steps for a group.

    ``state``: running, waiting_ack, calling, notified (every step done), acknowledged,
    resolved or failed (the last two end it); ``reached`` lists every state it was in."""

    id: str
    started: float
    step: int = 0
    state: str = "running"
    deadline: float = 0.0
    level: int = 0  # escalation level: +1 at each ack timeout
    call: int = 0  # webhook calls made (ids of their answers)
    enrich: float = 0.0  # bottleneck window to attach to notifications (0: none)
    notified: list[str] = []  # receivers told, in order: the ack and resolve notifications go to them
    reached: list[str] = []
    history: list[tuple[float, str]] = []

    def enter(self, state: str, now: float, why: str) -> None:
        self.state = state
        if state not in self.reached:
            self.reached.append(state)
        self.history.append((now, f"{state}: {why}"))


class Group(msgspec.Struct):
    """Alertmanager's aggregation group of one workflow: alerts with the same ``group.by`` values."""

    tenant: str
    workflow: str
    key: str
    alerts: dict[str, Alert] = {}
    times: list[float] = []  # signal times within the conditions' window
    since: float = 0.0  # data time of the first signal of the current episode
    last_ts: float = 0.0
    firing: bool = False  # conditions met in this episode
    flush_due: float | None = None  # engine time of the next notification
    last_flush: float = 0.0
    flushes: int = 0
    run: Run | None = None
    runs: int = 0


class Incident(msgspec.Struct):
    """Anomalies of one service and region, correlated in time."""

    id: str
    tenant: str
    service: str
    region: str
    title: str
    severity: str
    status: str  # open | acknowledged | resolved
    started_at: float
    updated_at: float
    last_seen: float  # engine time of its last signal
    resolved_at: float = 0.0
    signals: int = 0
    series: list[str] = []
    labels: dict[str, str] = {}
    groups: list[str] = []  # state keys of the groups holding its alerts
    timeline: list[dict[str, Any]] = []

    def note(self, now: float, kind: str, text: str, **extra: Any) -> None:
        """Add an entry to the timeline (the first 10 and last 90 are kept)."""
        self.timeline.append({"ts": now, "kind": kind, "text": text, **extra})
        if len(self.timeline) > 100:
            del self.timeline[10]
        self.updated_at = now

    def public(self, limit: int | None = None) -> dict[str, Any]:
        """What notifications, the topic and the API show (no internal keys)."""
        d = msgspec.to_builtins(self)
        d.pop("groups")
        d["timeline"] = d["timeline"][-limit:] if limit else d["timeline"]
        return d


class TenantState(msgspec.Struct):
    """A tenant's silences, what inhibition rules look at, and which of its groups are due when."""

    silences: list[Silence] = []
    firing: dict[str, Signal] = {}  # latest signal per fingerprint of every workflow's alerts (if inhibition rules)
    groups: dict[str, float] = {}  # live group key -> engine time by which it must be looked at (a lower bound)
    incidents: dict[str, float] = {}  # key of each incident not resolved -> when it may clear (a lower bound)


_TYPES = {"t": TenantState, "g": Group, "i": Incident}
_DECODERS = {k: msgspec.json.Decoder(v) for k, v in _TYPES.items()}
_ENCODER = msgspec.json.Encoder()


def group_key(tenant: str, workflow: str, group: str) -> str:
    return f"g:{tenant}|{workflow}|{group}"


def incident_key(tenant: str, service: str, region: str) -> str:
    return f"i:{tenant}|{service}|{region}"


class Tx:
    """Reads and writes of one input on ``store``; :meth:`commit` writes the changed keys back."""

    def __init__(self, store: MutableMapping[str, str]) -> None:
        self.store = store
        self.cache: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        """The object at ``key`` (None if absent); later changes to it are written by :meth:`commit`."""
        if key not in self.cache:
            raw = self.store.get(key)
            self.cache[key] = None if raw is None else _DECODERS[key[0]].decode(raw)
        return self.cache[key]

    def put(self, key: str, value: Any) -> None:
        self.cache[key] = value

    def delete(self, key: str) -> None:
        self.cache[key] = None

    def tenant(self, tenant: str) -> TenantState:
        key = f"t:{tenant}"
        if self.get(key) is None:
            self.put(key, TenantState())
        return self.cache[key]

    def commit(self) -> None:
        for key, value in self.cache.items():
            raw = None if value is None else _ENCODER.encode(value).decode()
            if raw != self.store.get(key):
                if raw is None:
                    self.store.pop(key, None)
                else:
                    self.store[key] = raw
        self.cache.clear()
