"""The HTTP side of workflows: incidents (list, get, ack, resolve) and silences (list, get, create, expire).

Reads come from the tables; acks, resolves and silences are also sent to the engine as
:class:`~workflows.signals.Control` records on ``workflow_signals`` keyed by tenant (the engine
of whichever worker holds that tenant applies them, in order with its signals), so they work
from the worker's API and from ``m1 api`` alike. Routes: ``api.routes``; permissions
``incidents:read|write`` and ``silences:read|write`` (``tenancy.roles``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Annotated, Any, Literal

import msgspec

from api.answer import rows_as_items
from api.params import Choice, Limit, Text
from api.resources import Listing, since, until
from api.route import Call, Refused
from core.kafka.producer import make_producer
from core.settings import Settings
from core.kafka.topics import ensure_topics
from tenancy.registry import NotFound
from workflows.records import store_silence
from workflows.signals import Control, encode_input

Value = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]

INCIDENT_ID = Text("incident_id", "The incident's id (inc-<16 hex digits>).", where="path", max_length=20,
                   pattern="inc-[0-9a-f]{16}")
SILENCE_ID = Text("silence_id", "The silence's id (16 hex digits).", where="path", max_length=16, pattern="[0-9a-f]{16}")

INCIDENTS = Listing(
    "incidents", "id, status, severity, service, region, title, started_at, updated_at, resolved_at, signals, series",
    {"id": "string", "status": "string", "severity": "string", "service": "string", "region": "string",
     "title": "string", "started_at": "time", "updated_at": "time", "resolved_at": "time", "signals": "integer",
     "series": "strings"},
    order="started_at DESC",
    params=(since("started_at"), until("started_at"),
            Choice("status", "Only incidents in this status.", sql="status = {status:String}",
                   choices=("open", "acknowledged", "resolved")),
            Text("service", "Only this service.", sql="service = {service:String}", max_length=128), Limit()),
)
SILENCES = Listing(
    "silences", "id, kind, starts_at, ends_at, matchers, comment, created_by",
    {"id": "string", "kind": "string", "starts_at": "time", "ends_at": "time", "matchers": "string",
     "comment": "string", "created_by": "string"},
    order="starts_at DESC", where=("ends_at > now64(3)",), params=(Limit(),),
    description="Silences and maintenance windows not yet ended.",
)


class Matchers(msgspec.Struct, forbid_unknown_fields=True):
    """What a silence covers: each given field must take one of its values (none given: everything)."""

    service: Annotated[list[Value], msgspec.Meta(max_length=100)] = []
    region: Annotated[list[Value], msgspec.Meta(max_length=100)] = []
    severity: list[Literal["info", "warning", "critical"]] = []
    labels: dict[Value, Annotated[list[Value], msgspec.Meta(max_length=100)]] = {}


class NewSilence(msgspec.Struct, forbid_unknown_fields=True):
    """``{"ends_at": 1767229200, "matchers": {"service": ["api"]}, "kind": "maintenance"}``; ``starts_at``
    defaults to now. A maintenance window ignores matching signals entirely; a silence mutes them."""

    ends_at: float
    starts_at: float = 0.0
    kind: Literal["silence", "maintenance"] = "silence"
    matchers: Matchers = msgspec.field(default_factory=Matchers)
    comment: Annotated[str, msgspec.Meta(max_length=1024)] = ""


async def send_control(settings: Settings, control: Control) -> None:
    """Put ``control`` on the engine's input, keyed by its tenant; returns once the broker has it."""
    await asyncio.to_thread(ensure_topics, settings, [settings.topic_workflow_signals])
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic_workflow_signals, encode_input(control), key=control.tenant.encode())
    finally:
        await producer.stop()


async def _incident(call: Call) -> dict[str, Any]:
    result = await call.api.read(
        "SELECT id, status, severity, service, region, title, started_at, updated_at, resolved_at, signals, series, "
        "labels FROM incidents FINAL WHERE tenant = {tenant:String} AND id = {id:String}",
        {"tenant": call.tenant, "id": call.params["incident_id"]})
    if not result.rows:
        raise NotFound(f"no incident {call.params['incident_id']!r}")
    return rows_as_items(result.columns, result.rows)[0]


async def get_incident(call: Call) -> dict[str, Any]:
    """One incident with its timeline."""
    incident = await _incident(call)
    timeline = await call.api.read(
        "SELECT ts, kind, text, details FROM incident_timeline FINAL WHERE tenant = {tenant:String} "
        "AND incident_id = {id:String} ORDER BY ts, kind", {"tenant": call.tenant, "id": incident["id"]})
    return {**incident, "timeline": rows_as_items(timeline.columns, timeline.rows)}


def incident_action(action: str):  # noqa: ANN201 - a Handler
    """``ack`` or ``resolve`` an incident not yet resolved: sent to the engine (202)."""

    async def handler(call: Call) -> dict[str, Any]:
        incident = await _incident(call)
        if incident["status"] == "resolved":
            raise Refused(409, f"incident {incident['id']} is already resolved")
        await send_control(call.api.settings, Control(action, tenant=call.tenant, ts=time.time(), incident=incident["id"],
                                                      by=call.principal.subject if call.principal else ""))
        return {"id": incident["id"], "action": action, "accepted": True}

    return handler


async def create_silence(call: Call) -> dict[str, Any]:
    """Store the silence and send it to the engine."""
    body: NewSilence = call.body
    now = time.time()
    starts = body.starts_at or now
    if body.ends_at <= max(starts, now):
        raise ValueError("ends_at: must be later than starts_at and now")
    silence = {"id": secrets.token_hex(8), "tenant": call.tenant, "kind": body.kind, "starts_at": starts,
               "ends_at": body.ends_at, "matchers": msgspec.to_builtins(body.matchers), "comment": body.comment,
               "created_by": call.principal.subject if call.principal else ""}
    await asyncio.to_thread(store_silence, call.api.store, silence, now)
    await send_control(call.api.settings, Control("silence", tenant=call.tenant, ts=now, data=silence))
    return silence


async def _silence(call: Call) -> dict[str, Any]:
    result = await call.api.read(
        "SELECT id, kind, starts_at, ends_at, matchers, comment, created_by FROM silences FINAL "
        "WHERE tenant = {tenant:String} AND id = {id:String}", {"tenant": call.tenant, "id": call.params["silence_id"]})
    if not result.rows:
        raise NotFound(f"no silence {call.params['silence_id']!r}")
    return rows_as_items(result.columns, result.rows)[0]


async def get_silence(call: Call) -> dict[str, Any]:
    """One silence (also an ended one)."""
    return await _silence(call)


async def expire_silence(call: Call) -> dict[str, Any]:
    """End a silence now (its row is kept, ending now)."""
    row = await _silence(call)
    now = time.time()
    silence = {**row, "tenant": call.tenant, "starts_at": min(row["starts_at"].timestamp(), now), "ends_at": now,
               "matchers": msgspec.json.decode(row["matchers"])}
    await asyncio.to_thread(store_silence, call.api.store, silence, now)
    await send_control(call.api.settings, Control("expire", tenant=call.tenant, ts=now, data={"id": row["id"]}))
    return {"id": row["id"], "expired": True}
