"""Enrichment: the trace bottlenecks of a service at the time of a notification, from the store.

The newest bottleneck report of the tenant's service analysed within ``window`` seconds before
the signal (or up to a minute after it): its ranked operations and the rules that fired.
Reports are cached per tenant, service and minute, so a burst of notifications asks once.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from sinks.clickhouse import Store

QUERY = """
SELECT toUnixTimestamp64Milli(analyzed_at) / 1000 AS at, kind, rank, service, operation, share, critical_ms,
       on_path_traces, rule, message
FROM bottlenecks FINAL
WHERE tenant = {tenant:String} AND entry_service = {service:String}
  AND analyzed_at = (SELECT max(analyzed_at) FROM bottlenecks WHERE tenant = {tenant:String}
                     AND entry_service = {service:String}
                     AND analyzed_at BETWEEN fromUnixTimestamp64Milli({start:Int64}) AND fromUnixTimestamp64Milli({end:Int64}))
ORDER BY kind, rank
LIMIT 20
"""


class Bottlenecks:
    """``(tenant, service, ts, window) -> {"analyzed_at", "bottlenecks": [...], "suggestions": [...]}`` or ``{}``."""

    def __init__(self, store: Store, cache_size: int = 1024) -> None:
        self.store = store
        self.cache: OrderedDict[tuple[str, str, int, int], dict[str, Any]] = OrderedDict()
        self.cache_size = cache_size

    def __call__(self, tenant: str, service: str, ts: float, window: float) -> dict[str, Any]:
        key = (tenant, service, int(ts // 60), int(window))
        if key not in self.cache:
            end = (key[2] + 2) * 60
            result = self.store.query(QUERY, {"tenant": tenant, "service": service,
                                              "start": int((ts - window) * 1000), "end": end * 1000})
            rows = [dict(zip(result.columns, row)) for row in result.rows]
            self.cache[key] = {} if not rows else {
                "analyzed_at": rows[0]["at"],
                "bottlenecks": [{k: r[k] for k in ("rank", "service", "operation", "share", "critical_ms", "on_path_traces")}
                                for r in rows if r["kind"] == "bottleneck"],
                "suggestions": [{k: r[k] for k in ("rule", "service", "operation", "message")}
                                for r in rows if r["kind"] == "suggestion"],
            }
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
        self.cache.move_to_end(key)
        return self.cache[key]
