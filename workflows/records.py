"""Rows of the workflow tables (``schemas/ddl/100_incidents.sql``) from the engine's records.

The incidents and workflow_runs topics carry JSON records (``Incident.public()``, the engine's run
records); :func:`store_incidents` and :func:`store_runs` write a batch of them (replays collapse:
ReplacingMergeTree), :func:`store_silence` one silence.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from sinks.clickhouse import TS_TYPE, Store

_LABELS = pa.map_(pa.string(), pa.string())


def _ts(values: Sequence[float]) -> pa.Array:
    return pa.array([int(round(v * 1000)) for v in values], type=TS_TYPE)


def store_incidents(store: Store, incidents: Sequence[dict[str, Any]]) -> int:
    """Insert the incidents' latest state and their timelines; returns the incident rows."""
    if not incidents:
        return 0
    store.insert("incidents", {
        "tenant": [i["tenant"] for i in incidents], "id": [i["id"] for i in incidents],
        "service": [i["service"] for i in incidents], "region": [i["region"] for i in incidents],
        "title": [i["title"] for i in incidents], "severity": [i["severity"] for i in incidents],
        "status": [i["status"] for i in incidents], "started_at": _ts([i["started_at"] for i in incidents]),
        "updated_at": _ts([i["updated_at"] for i in incidents]),
        "resolved_at": pa.array([int(i["resolved_at"] * 1000) if i.get("resolved_at") else None for i in incidents],
                                type=TS_TYPE),
        "signals": pa.array([i["signals"] for i in incidents], type=pa.uint64()),
        "series": [i["series"] for i in incidents],
        "labels": pa.array([list(i["labels"].items()) for i in incidents], type=_LABELS),
    })
    entries = [(i, e) for i in incidents for e in i["timeline"]]
    store.insert("incident_timeline", {
        "tenant": [i["tenant"] for i, _ in entries], "incident_id": [i["id"] for i, _ in entries],
        "ts": _ts([e["ts"] for _, e in entries]), "kind": [e["kind"] for _, e in entries],
        "text": [e["text"] for _, e in entries],
        "details": pa.array([[(k, str(v)) for k, v in e.items() if k not in ("ts", "kind", "text")] for _, e in entries],
                            type=_LABELS),
    })
    return len(incidents)


def store_runs(store: Store, runs: Sequence[dict[str, Any]]) -> int:
    """Insert run records; returns the rows."""
    if not runs:
        return 0
    return store.insert("workflow_runs", {
        "tenant": [r["tenant"] for r in runs], "id": [r["id"] for r in runs], "workflow": [r["workflow"] for r in runs],
        "group_key": [r["group"] for r in runs], "state": [r["state"] for r in runs],
        "terminal": [r["terminal"] for r in runs], "reached": [bool(r["reached"]) for r in runs],
        "started": _ts([r["started"] for r in runs]), "ts": _ts([r["ts"] for r in runs]),
        "level": pa.array([r["level"] for r in runs], type=pa.uint16()),
        "history": [json.dumps(r["history"]) for r in runs],
    })


def store_silence(store: Store, silence: dict[str, Any], version: float) -> None:
    """Write one silence (again, with a later ``version``, to change it)."""
    store.insert("silences", {
        "tenant": [silence["tenant"]], "id": [silence["id"]], "kind": [silence["kind"]],
        "starts_at": _ts([silence["starts_at"]]), "ends_at": _ts([silence["ends_at"]]),
        "matchers": [json.dumps(silence["matchers"], sort_keys=True)], "comment": [silence["comment"]],
        "created_by": [silence["created_by"]], "version": _ts([version]),
    })
