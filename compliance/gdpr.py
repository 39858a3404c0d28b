"""A data subject's GDPR rights, run where the store is (the worker owns chdb): export (Art. 15
and 20) and erasure by crypto-shredding (Art. 17).

The store never holds a subject in clear (compliance/redact.py): a field of the subject is either
its pseudonym (``pii:<hex16>``, compliance/pseudonym.py) or a token encrypted with its own key
(``enc:v1:<subject_ref>:...``, compliance/subject_keys.py). So the subject's rows are found by
those two strings, in every MergeTree table of the store, every String-holding column (maps and
arrays included); tables with a tenant column are searched on the tenant's rows only.

- :meth:`Gdpr.export`: every such row, with the subject's own tokens decrypted (other subjects'
  tokens in the same row stay encrypted), as JSON (``m1-gdpr-export/1``).
- :meth:`Gdpr.erase`: destroy the subject's key (:meth:`SubjectKeys.erase`: the row, then every
  outdated part that held it); the tokens stay in the rows, in the topics and in backups, and are
  unrecoverable. Pseudonyms stay too: they are keyed with the tenant's secret, which erasing one
  subject cannot destroy, and tell nothing to whoever does not already know the subject.

Both are audited: ``gdpr.export`` and ``gdpr.erase`` ``audit/1`` events (resource
``subject:<subject_ref>``, never the subject itself, since the audit chain is never rewritten) go to
the audit topic through ``audit`` before the answer; the API's own ``api.request`` event says who
asked. An erasure is also sent through ``notify`` (the worker and the command line: an erasure
notice, :mod:`compliance.erasure_notices`), so workers with stores of their own erase it too.

>>> import asyncio, tempfile
>>> from core.settings import Settings
>>> from sinks.clickhouse import Store, connect
>>> settings = Settings(home=tempfile.mkdtemp())
>>> store = Store(connect(settings)); _ = store.migrate()
>>> sent = []
>>> async def audit(events): sent.extend(events)
>>> gdpr = Gdpr(settings, store, audit)
>>> token = gdpr.keys.encrypt("acme", "alice@example.com", "Alice Liddell")
>>> store.insert("dead_letters", {"received_at": [0], "topic": ["m"], "partition": [0], "offset": [1],
...                              "reason": ["x"], "payload": [f"name={token}"]})
1
>>> export = asyncio.run(gdpr.run("export", "acme", "alice@example.com", actor="dpo"))
>>> export["rows"], export["tables"]["dead_letters"]["rows"][0]["payload"]
(1, 'name=Alice Liddell')
>>> asyncio.run(gdpr.run("erase", "acme", "alice@example.com", actor="dpo"))["key_destroyed"]
True
>>> asyncio.run(gdpr.run("export", "acme", "alice@example.com", actor="dpo"))["tables"]["dead_letters"]["rows"][0]["payload"]
'name=enc:erased'
>>> [(e.action, e.actor, e.resource == "subject:" + export["subject_ref"]) for e in sent]
[('gdpr.export', 'dpo', True), ('gdpr.erase', 'dpo', True), ('gdpr.export', 'dpo', True)]
>>> store.close()
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime, timezone
from typing import Any, Literal

from audit import events
from compliance.pseudonym import Pseudonymiser
from compliance.subject_keys import TABLE as KEY_TABLE
from compliance.subject_keys import TOKEN, KeyErased, SubjectKeys
from core.settings import Settings
from schemas.events import AuditEvent
from sinks.clickhouse import Store
from sinks.sql_guard import TENANT_COLUMNS
from streams.tracing import in_thread
from core.tenant_names import check_tenant

FORMAT = "m1-gdpr-export/1"
#: Tables never searched: the keys themselves, and the migration log.
NOT_SEARCHED = frozenset({KEY_TABLE, "schema_migrations"})
#: Most rows exported per table (``truncated`` says when a table had more).
MAX_ROWS_PER_TABLE = 100_000
#: What a token of the subject reads as once its key is destroyed.
ERASED = "enc:erased"

Audit = Callable[[Sequence[AuditEvent]], Awaitable[object]]
#: ``notify(tenant, subject_ref)`` after an erasure: tell the deployment's other stores (compliance.erasure_notices).
Notify = Callable[[str, str], Awaitable[object]]


class Gdpr:
    """Export and erasure of one tenant's data subjects over ``store``; ``audit`` sends audit
    events to the audit topic (the worker: its publisher) and returns once they are sent."""

    def __init__(self, settings: Settings, store: Store, audit: Audit, notify: Notify | None = None) -> None:
        self.settings = settings
        self.store = store
        self.audit = audit
        self.notify = notify
        self.keys = SubjectKeys.from_settings(settings, store)
        self.pseudonymise = Pseudonymiser.from_settings(settings)

    async def run(self, right: Literal["export", "erase"], tenant: str, subject: str, actor: str) -> dict[str, Any]:
        """Export or erase in a thread, then audit it as ``gdpr.<right>`` (a failure too, then re-raised)."""
        tenant = check_tenant(tenant)
        resource = f"subject:{self.keys.subject_ref(tenant, subject)}"
        try:
            answer = await in_thread(self.export if right == "export" else self.erase, tenant, subject)
        except Exception as exc:
            await self.audit([events.event(self.settings, f"gdpr.{right}", resource, "failure",
                                           {"error": type(exc).__name__}, actor=actor, tenant=tenant)])
            raise
        if right == "erase" and self.notify is not None:  # the other stores of the deployment erase it too
            await self.notify(tenant, answer["subject_ref"])
        details = ({"rows": answer["rows"], "tables": len(answer["tables"])} if right == "export" else
                   {"key_destroyed": answer["key_destroyed"], "rows_with_tokens": answer["rows_with_tokens"],
                    "seconds": round(answer["seconds"], 3)})
        await self.audit([events.event(self.settings, f"gdpr.{right}", resource, "success", details,
                                       actor=actor, tenant=tenant)])
        return answer

    def export(self, tenant: str, subject: str) -> dict[str, Any]:
        """Every row of ``tenant`` holding the subject's pseudonym or tokens, its tokens decrypted."""
        ref, pseudonym = self.keys.subject_ref(tenant, subject), self.pseudonymise(tenant, subject)
        tables: dict[str, dict[str, Any]] = {}
        for table, where, parameters in self._searches(tenant, ref, pseudonym):
            result = self.store.query(f"SELECT * FROM `{table}` WHERE {where} LIMIT {MAX_ROWS_PER_TABLE + 1}", parameters)
            if result.rows:
                rows = [{c: self._clear(tenant, ref, v) for c, v in zip(result.columns, row)}
                        for row in result.rows[:MAX_ROWS_PER_TABLE]]
                tables[table] = {"rows": rows, "truncated": len(result.rows) > MAX_ROWS_PER_TABLE}
        return {"format": FORMAT, "tenant": tenant, "subject": subject, "subject_ref": ref, "pseudonym": pseudonym,
                "generated_at": datetime.now(timezone.utc).isoformat(), "key_present": self.keys.has_key(tenant, subject),
                "rows": sum(len(t["rows"]) for t in tables.values()), "tables": tables}

    def erase(self, tenant: str, subject: str) -> dict[str, Any]:
        """Destroy the subject's key; count the rows whose tokens it made unrecoverable."""
        started = time.perf_counter()
        ref = self.keys.subject_ref(tenant, subject)
        destroyed = self.keys.erase(tenant, subject)
        seconds = time.perf_counter() - started
        with_tokens = sum(self.store.query(f"SELECT count() FROM `{table}` WHERE {where}", parameters).rows[0][0]
                          for table, where, parameters in self._searches(tenant, ref, None))
        return {"tenant": tenant, "subject_ref": ref, "key_destroyed": destroyed, "rows_with_tokens": with_tokens,
                "seconds": seconds}

    def _searches(self, tenant: str, ref: str, pseudonym: str | None) -> list[tuple[str, str, dict[str, str]]]:
        """``(table, condition, parameters)`` finding the rows holding the subject's tokens (or pseudonym)."""
        needles = {"token": f"enc:v1:{ref}:", **({"pseudonym": pseudonym} if pseudonym else {})}
        columns: dict[str, list[str]] = defaultdict(list)
        for table, column, kind in self.store.query(
                "SELECT table, name, type FROM system.columns WHERE database = currentDatabase() AND "
                "table IN (SELECT name FROM system.tables WHERE database = currentDatabase() AND engine LIKE '%MergeTree') "
                "ORDER BY table, position").rows:
            if table not in NOT_SEARCHED and "String" in kind:
                columns[table].append(column)
        searches = []
        for table, names in columns.items():
            found = " OR ".join(f"position(toString(`{c}`), {{{n}:String}}) > 0" for c in names for n in needles)
            scope = next((f"`{c}` = {{tenant:String}} AND " for c in TENANT_COLUMNS if c in names), "")
            searches.append((table, f"{scope}({found})", {**needles, "tenant": tenant}))
        return searches

    def _clear(self, tenant: str, ref: str, value: Any) -> Any:
        """``value`` as JSON, with the subject's tokens decrypted (:data:`ERASED` once its key is gone)."""
        if isinstance(value, str):
            return TOKEN.sub(lambda m: self._decrypt(tenant, ref, m), value) if "enc:v1:" in value else value
        if isinstance(value, dict):
            return {str(k): self._clear(tenant, ref, v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._clear(tenant, ref, v) for v in value]
        if isinstance(value, (datetime, date)):
            return value.isoformat()
        if isinstance(value, bytes):
            return self._clear(tenant, ref, value.decode("utf-8", "replace"))
        return value

    def _decrypt(self, tenant: str, ref: str, match: Any) -> str:
        if match.group(1) != ref:  # another subject's data: not this subject's to see
            return match.group(0)
        try:
            return self.keys.decrypt(tenant, match.group(0))
        except KeyErased:
            return ERASED
