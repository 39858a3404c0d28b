"""The region agent's rows for the store: ``region_lag`` (090), ``region_events`` and ``routes`` (091).

A worker's agent reads every region's records of these topics (its own and the mirrored ones,
:mod:`regions.feed`) and :class:`RegionRows` buffers them as rows until :meth:`RegionRows.flush`
inserts them. The tables are ReplacingMergeTrees keyed by what identifies a record, so a replay
of the topics (the feed starts at the earliest offsets) collapses into the rows already there.
A table the store refuses keeps its rows for the next flush.

>>> from regions.lag import RegionLag
>>> rows = RegionRows()
>>> rows.lag(RegionLag(1.5, "a", "b", 3, 20.0, 30.0, 30.0, 0.0, False, 20.0, 0, 3, 0, 2, 0.5))
>>> rows.route("b", Route("eu", ["b", "a"], 4, 2.0))
>>> {table: len(columns["ts" if "ts" in columns else "geo"]) for table, columns in rows.take(now=3.0).items()}
{'region_lag': 1, 'routes': 1}
>>> rows.take(now=3.0)
{}
"""

from __future__ import annotations

from typing import Any

import msgspec
import pyarrow as pa

from regions.lag import RegionLag
from regions.routing import Route
from schemas.events import RegionEvent
from sinks.clickhouse import TS_TYPE, Store


def _ms(values: list[float]) -> pa.Array:
    return pa.array([int(round(v * 1000)) for v in values], type=TS_TYPE)


class RegionRows:
    """Rows waiting for the store, by table."""

    def __init__(self) -> None:
        self._lags: list[RegionLag] = []
        self._events: list[RegionEvent] = []
        self._routes: list[tuple[str, Route]] = []
        self._refused: list[tuple[str, dict[str, Any]]] = []  # batches the store refused, tried again first

    def lag(self, report: RegionLag) -> None:
        self._lags.append(report)

    def event(self, event: RegionEvent) -> None:
        self._events.append(event)

    def route(self, observer: str, route: Route) -> None:
        """A route that ``observer``'s router decided."""
        self._routes.append((observer, route))

    def take(self, now: float) -> dict[str, dict[str, Any]]:
        """The buffered rows as columns per table (tables without rows left out); empties the buffer."""
        tables: dict[str, dict[str, Any]] = {}
        if self._lags:
            lags, self._lags = self._lags, []
            columns = {name: [msgspec.structs.asdict(r)[name] for r in lags] for name in RegionLag.__struct_fields__}
            columns["ts"] = _ms(columns["ts"])
            columns["skew_known"] = [int(v) for v in columns["skew_known"]]
            tables["region_lag"] = {**columns, "ingested_at": _ms([now] * len(lags))}
        if self._events:
            events, self._events = self._events, []
            tables["region_events"] = {
                "ts": _ms([e.ts for e in events]), "region": [e.region for e in events],
                "observer": [e.observer for e in events], "kind": [e.kind for e in events],
                "previous": [e.previous for e in events], "state": [e.state for e in events],
                "reason": [e.reason for e in events],
                "views": pa.array([list(e.views.items()) for e in events], type=pa.map_(pa.string(), pa.string())),
                "ingested_at": _ms([now] * len(events)),
            }
        if self._routes:
            routes, self._routes = self._routes, []
            tables["routes"] = {
                "geo": [r.geo for _, r in routes], "version": [r.version for _, r in routes],
                "decided_at": _ms([r.decided_at for _, r in routes]), "observer": [o for o, _ in routes],
                "regions": [list(r.regions) for _, r in routes], "ingested_at": _ms([now] * len(routes)),
            }
        return tables

    def flush(self, store: Store, now: float) -> int:
        """Insert the buffered rows (blocking; run it in a thread); returns how many. A table whose
        insert fails keeps its rows for the next flush, and the last error is raised."""
        inserted, error = 0, None
        batches, self._refused = self._refused + list(self.take(now).items()), []
        for table, columns in batches:
            try:
                inserted += store.insert(table, columns)
            except Exception as exc:  # the store is away: keep the rows
                self._refused.append((table, columns))
                error = exc
        if error is not None:
            raise error
        return inserted
