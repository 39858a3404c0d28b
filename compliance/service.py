"""What the API's compliance routes run where the store is (the worker): GDPR rights, legal holds,
retention, the compliance report. An erasure is also sent to the other stores as an erasure notice. Every change is audited (an ``audit/1`` event sent through
``audit`` before the answer): ``gdpr.export``, ``gdpr.erase``, ``compliance.legal-hold``,
``compliance.retention-apply``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from audit import events
from compliance import report
from compliance import erasure_notices
from compliance.gdpr import Audit, Gdpr, Notify
from compliance.retention import Retention
from core.settings import Settings
from schemas.events import AuditEvent
from sinks.clickhouse import Store
from streams.publisher import Publisher
from streams.tracing import in_thread
from core.tenant_names import PLATFORM, check_tenant


class Compliance:
    """GDPR rights, retention and the report over ``store``; ``audit`` sends audit events (see module)."""

    def __init__(self, settings: Settings, store: Store, audit: Audit, notify: Notify | None = None) -> None:
        self.settings = settings
        self.store = store
        self.audit = audit
        self.gdpr = Gdpr(settings, store, audit, notify)
        self.retention = Retention(settings, store)

    @classmethod
    def in_worker(cls, settings: Settings, store: Store, publisher: Publisher) -> Compliance:
        """The worker's: audit events go out through its publisher."""
        async def audit(audit_events: Sequence[AuditEvent]) -> int:
            return await publisher.publish(events.records(settings, audit_events))

        async def notify(tenant: str, ref: str) -> int:
            return await publisher.publish(erasure_notices.records(settings, tenant, ref))

        return cls(settings, store, audit, notify)

    async def hold(self, tenant: str, held: bool, actor: str, reason: str = "") -> dict[str, Any]:
        """Put a tenant on legal hold or release it; the TTL rules follow at once."""
        tenant = check_tenant(tenant)
        changed = await in_thread(self.retention.hold, tenant, held, actor, reason)
        await self.audit([events.event(self.settings, "compliance.legal-hold", f"tenant:{tenant}", "success",
                                       {"held": held, "reason": reason, "tables": len(changed)}, actor=actor, tenant=tenant)])
        return {"tenant": tenant, "held": held, "tables_changed": changed}

    async def holds(self) -> list[dict[str, Any]]:
        return [h.__dict__ for h in await in_thread(self.retention.holds)]

    async def show_retention(self) -> dict[str, Any]:
        return await in_thread(self.retention.show)

    async def apply_retention(self, actor: str) -> dict[str, Any]:
        """Apply the TTL rules and delete what has expired now."""
        changed = await in_thread(self.retention.apply, True)
        await self.audit([events.event(self.settings, "compliance.retention-apply", "retention", "success",
                                       {"tables": len(changed)}, actor=actor, tenant=PLATFORM)])
        return {"tables": changed}

    async def report(self, framework: str | None) -> dict[str, Any]:
        return await in_thread(report.run, self.settings, self.store, framework)
