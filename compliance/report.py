"""The compliance report: each control of SOC 2, HIPAA 164.312 and GDPR mapped to checks run live
against the deployment, each with its evidence (what was run, and what it gave).

A check answers pass, fail or not applicable, with evidence; a control passes when every check it
maps to passes, is not applicable when all of them are, and fails otherwise. The score is controls
passed over controls applicable. The report is evidence gathered by the software itself: it is
not a certification, an attestation or an auditor's opinion, and says so (:data:`DISCLAIMER`).

>>> sorted({c.framework for c in CONTROLS}), len(CONTROLS)
(['gdpr', 'hipaa', 'soc2'], 11)
>>> score([Control("soc2", "X", "x", ()), Control("soc2", "Y", "y", ())], {"X": "pass", "Y": "fail"})
(1, 2)
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.settings import Settings
from sinks.clickhouse import NOT_FOR_SQL, Store

DISCLAIMER = ("Automated evidence gathered by M1 Analytics from this deployment. It is not a certification, "
              "attestation or audit opinion for SOC 2, HIPAA or the GDPR; an auditor decides what it shows.")
FRAMEWORKS = ("soc2", "hipaa", "gdpr")
#: Most rows read per table by the personal-data scan.
SCAN_ROWS = 2000
#: Tables the personal-data scan skips: key material and public keys, the migration log.
NOT_SCANNED = frozenset({"subject_keys", "audit_keys", "schema_migrations"})
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class Result:
    """A check's outcome: ``pass``, ``fail`` or ``n/a``, and its evidence (command, result) pairs."""

    status: str
    evidence: list[dict[str, str]] = field(default_factory=list)

    def add(self, command: str, result: Any) -> Result:
        self.evidence.append({"command": command, "result": str(result)})
        return self


Check = Callable[[Settings, Store], Result]


def _query(store: Store, result: Result, sql: str) -> list[tuple[Any, ...]]:
    rows = store.query(sql).rows
    result.add(sql, rows if len(rows) <= 20 else f"{rows[:20]} ... ({len(rows)} rows)")
    return rows


def audit_chains_verify(settings: Settings, store: Store) -> Result:
    """Every tenant's hash chain and signed tree heads verify (audit/verify.py)."""
    from audit.verify import verify_now

    result = Result("pass")
    tenants = [t for (t,) in _query(store, result, "SELECT DISTINCT tenant FROM audit_log ORDER BY tenant")]
    if not tenants:
        return Result("fail").add("SELECT DISTINCT tenant FROM audit_log", "no audit events: the trail is not running")
    for tenant in tenants:
        report = verify_now(settings, store, tenant)
        result.add(f"m1 audit verify --tenant {tenant}", f"{'intact' if report['intact'] else 'TAMPERED'}: "
                   f"{report['events']} events, {report['heads']} signed heads"
                   + ("" if report["intact"] else f", first bad seq {report['first_bad_seq']}: {report['reason']}"))
        if not report["intact"]:
            result.status = "fail"
    return result


def access_audited(settings: Settings, store: Store) -> Result:
    """API access decisions reach both the access log and the audit chain."""
    result = Result("pass")
    [(logged,)] = _query(store, result, "SELECT count() FROM access_log")
    [(chained,)] = _query(store, result, "SELECT count() FROM audit_log WHERE action = 'api.request'")
    result.status = "pass" if logged and chained else "fail"
    return result


def monitoring_runs(settings: Settings, store: Store) -> Result:
    """The trail is verified and signed regularly: a verification run and a signed head in the last 7 days."""
    result = Result("pass")
    [(runs,)] = _query(store, result, "SELECT count() FROM audit_log WHERE action = 'audit.verify' AND ts > now() - INTERVAL 7 DAY")
    [(heads,)] = _query(store, result, "SELECT count() FROM audit_checkpoints WHERE ts > now() - INTERVAL 7 DAY")
    result.status = "pass" if runs and heads else "fail"
    return result


def changes_recorded(settings: Settings, store: Store) -> Result:
    """Configuration changes are recorded: worker starts (settings digest), every schema version applied."""
    from sinks.clickhouse import ddl_files

    result = Result("pass")
    [(starts,)] = _query(store, result, "SELECT count() FROM audit_log WHERE action = 'config.start'")
    applied = {name for (name,) in _query(store, result, "SELECT name FROM schema_migrations ORDER BY name")}
    missing = [name for name, _ in ddl_files() if name not in applied]
    result.add("schema/ddl files not applied", missing or "none")
    result.status = "pass" if starts and not missing else "fail"
    return result


def access_control(settings: Settings, store: Store) -> Result:
    """Every API route needs a permission (only health and the OpenAPI document are public); key
    material is out of reach of SQL; API keys are hashed and can be revoked."""
    from api.route import PUBLIC, PUBLIC_ROUTES
    from api.routes import ROUTES

    public = sorted(f"{r.method} {r.path}" for r in ROUTES if r.permission == PUBLIC)
    result = Result("pass").add("api.routes.ROUTES with permission 'public'", public)
    result.add("sinks.clickhouse.NOT_FOR_SQL", sorted(NOT_FOR_SQL))
    _query(store, result, "SELECT decision, count() FROM access_log GROUP BY decision ORDER BY decision")
    result.status = "pass" if {tuple(p.split(" ", 1)) for p in public} <= PUBLIC_ROUTES and "subject_keys" in NOT_FOR_SQL else "fail"
    return result


def keys_protected(settings: Settings, store: Store) -> Result:
    """Key files (tree-head signing, personal-data secret, model-state key) are readable by their owner only."""
    from audit.paths import key_file

    result = Result("pass")
    for name, path in (("audit signing key", key_file(settings)), ("personal-data secret", settings.pii_key_file),
                       ("model-state key", settings.state_key_file)):
        if not Path(path).exists():
            result.add(f"stat {path}", f"{name}: absent (made on first use)")
            continue
        mode = stat.S_IMODE(os.stat(path).st_mode)
        result.add(f"stat -c %a {path}", f"{name}: {mode:o}")
        if mode & 0o077:
            result.status = "fail"
    return result


def transport_encrypted(settings: Settings, store: Store) -> Result:
    """Every connection that leaves the host is encrypted: Kafka (SSL/SASL_SSL), the ClickHouse server
    (https), the API (loopback only; put a TLS proxy in front otherwise)."""
    result = Result("pass")
    kafka_hosts = [h.rsplit(":", 1)[0] for h in (settings.kafka_bootstrap or "127.0.0.1:0").split(",")]
    kafka_tls = settings.kafka_security_protocol in ("SSL", "SASL_SSL")
    kafka_local = all(h in LOOPBACK for h in kafka_hosts)
    result.add("M1_KAFKA_SECURITY_PROTOCOL, M1_KAFKA_BOOTSTRAP", f"{settings.kafka_security_protocol} to {','.join(kafka_hosts)}")
    url = urlsplit(settings.clickhouse_url) if settings.clickhouse_url else None
    ch_ok = url is None or url.scheme == "https" or url.hostname in LOOPBACK
    result.add("M1_CLICKHOUSE_URL scheme and host", "embedded chdb (no network)" if url is None else f"{url.scheme}://{url.hostname}")
    api_ok = settings.web_bind in LOOPBACK
    result.add("M1_WEB_BIND", f"{settings.web_bind} ({'loopback' if api_ok else 'reachable from the network, plain HTTP'})")
    result.status = "pass" if (kafka_tls or kafka_local) and ch_ok and api_ok else "fail"
    return result


def no_personal_data_in_clear(settings: Settings, store: Store) -> Result:
    """A sample of every String column of every table holds no value the detectors recognise
    (compliance/detect.py: emails, IPs, phones, cards, SSNs, tokens, cloud keys). The hits are
    counted by table, column and detector; their values are never shown."""
    from compliance.detect import find

    result = Result("pass")
    columns: dict[str, list[str]] = {}
    for table, column in store.query(
            "SELECT table, name FROM system.columns WHERE database = currentDatabase() AND type LIKE '%String%' AND "
            "table IN (SELECT name FROM system.tables WHERE database = currentDatabase() AND engine LIKE '%MergeTree') "
            "ORDER BY table, position").rows:
        if table not in NOT_SCANNED:
            columns.setdefault(table, []).append(column)
    hits: dict[str, int] = {}
    values = 0
    for table, names in columns.items():
        sql = (f"SELECT {', '.join(f'toString(`{c}`)' for c in names)} FROM `{table}` "
               f"WHERE rand() % greatest(1, intDiv((SELECT count() FROM `{table}`), {SCAN_ROWS})) = 0 LIMIT {SCAN_ROWS}")
        for row in store.query(sql).rows:
            for column, value in zip(names, row):
                values += 1
                for hit in find(value):
                    key = f"{table}.{column}: {hit.detector}"
                    hits[key] = hits.get(key, 0) + 1
    result.add(f"detectors over a sample of <= {SCAN_ROWS} rows of {len(columns)} tables", f"{values} values, "
               + (", ".join(f"{k} x{n}" for k, n in sorted(hits.items())) if hits else "no personal data in clear"))
    result.status = "fail" if hits else "pass"
    return result


def retention_set(settings: Settings, store: Store) -> Result:
    """Every table the retention rules give a TTL has one (compliance/retention.py; the audit
    tables get theirs once a signed head is older than the retention), and audit data is kept
    6 years at least."""
    from compliance.retention import Retention, class_days

    result = Result("pass")
    retention = Retention(settings, store)
    applied, plan = retention.applied(), retention.plan()
    result.add("SELECT name, create_table_query FROM system.tables (TTL clause)",
               {t: (ttl or ("NO TTL" if plan[t] else "none due"))[:120] for t, ttl in applied.items()})
    days = class_days(settings)
    result.add("M1_RETENTION_DAYS", days)
    if any(applied[t] is None for t, rule in plan.items() if rule) or not 6 * 365 <= days["audit"]:
        result.status = "fail"
    return result


def erasure_ready(settings: Settings, store: Store) -> Result:
    """Crypto-shredding works: the key table exists with fast old-part removal, no SQL reads it; erasures are audited."""
    result = Result("pass")
    rows = _query(store, result, "SELECT create_table_query LIKE '%old_parts_lifetime = 1%' FROM system.tables "
                                 "WHERE database = currentDatabase() AND name = 'subject_keys'")
    _query(store, result, "SELECT count() FROM audit_log WHERE action = 'gdpr.erase'")
    result.status = "pass" if rows == [(1,)] and "subject_keys" in NOT_FOR_SQL else "fail"
    return result


def export_ready(settings: Settings, store: Store) -> Result:
    """A subject's data can be exported as JSON (POST /v1/tenants/{t}/gdpr/export, m1 gdpr export); exports are audited."""
    from api.routes import ROUTES

    result = Result("pass")
    routes = [f"{r.method} {r.path} ({r.permission})" for r in ROUTES if r.path.endswith("/gdpr/export")]
    result.add("api.routes.ROUTES matching /gdpr/export", routes)
    _query(store, result, "SELECT count() FROM audit_log WHERE action = 'gdpr.export'")
    result.status = "pass" if routes else "fail"
    return result


def records_of_processing(settings: Settings, store: Store) -> Result:
    """The personal-data policy (what is classified, and how each class is handled) loads, and retention is declared per class."""
    from compliance.policy import policy_of
    from compliance.retention import class_days

    result = Result("pass")
    try:
        policy = policy_of(settings)
    except Exception as exc:
        return Result("fail").add(f"load policy {settings.pii_policy_path or 'compliance/default_policy.yaml'}", exc)
    result.add(f"load policy {policy.origin}", f"actions {policy.actions}, detectors {list(policy.detector.enabled)}, "
                                               f"{len(policy.classified_names())} classified field names")
    result.add("M1_RETENTION_DAYS", class_days(settings))
    return result


@dataclass(frozen=True)
class Control:
    framework: str
    id: str
    title: str
    checks: tuple[Check, ...]


CONTROLS: tuple[Control, ...] = (
    Control("soc2", "CC6.1", "Logical access security", (access_control, keys_protected)),
    Control("soc2", "CC7.2", "System monitoring", (access_audited, monitoring_runs, audit_chains_verify)),
    Control("soc2", "CC8.1", "Change management", (changes_recorded,)),
    Control("hipaa", "164.312(b)", "Audit controls", (access_audited, audit_chains_verify, retention_set)),
    Control("hipaa", "164.312(c)(1)", "Integrity", (audit_chains_verify, no_personal_data_in_clear)),
    Control("hipaa", "164.312(e)(1)", "Transmission security", (transport_encrypted,)),
    Control("gdpr", "Art. 5(1)(e)", "Storage limitation", (retention_set,)),
    Control("gdpr", "Art. 17", "Right to erasure", (erasure_ready,)),
    Control("gdpr", "Art. 20", "Right to data portability", (export_ready,)),
    Control("gdpr", "Art. 30", "Records of processing activities", (records_of_processing,)),
    Control("gdpr", "Art. 32", "Security of processing", (transport_encrypted, keys_protected, no_personal_data_in_clear)),
)


def control_status(statuses: list[str]) -> str:
    """A control's status from its checks' statuses.

    >>> control_status(["pass", "n/a"]), control_status(["pass", "fail"]), control_status(["n/a"])
    ('pass', 'fail', 'n/a')
    """
    if "fail" in statuses:
        return "fail"
    return "pass" if "pass" in statuses else "n/a"


def score(controls: list[Control], statuses: dict[str, str]) -> tuple[int, int]:
    """(controls passed, controls applicable)."""
    applicable = [statuses[c.id] for c in controls if statuses[c.id] != "n/a"]
    return applicable.count("pass"), len(applicable)


def run(settings: Settings, store: Store, framework: str | None = None) -> dict[str, Any]:
    """Run the checks of ``framework``'s controls (all frameworks by default) once each; the report as JSON."""
    if framework is not None and framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; one of {', '.join(FRAMEWORKS)}")
    controls = [c for c in CONTROLS if framework in (None, c.framework)]
    results: dict[str, Result] = {}
    for check in dict.fromkeys(ch for c in controls for ch in c.checks):
        try:
            results[check.__name__] = check(settings, store)
        except Exception as exc:  # a check that cannot run is a failed check, with the reason as evidence
            results[check.__name__] = Result("fail").add(check.__name__, f"could not run: {type(exc).__name__}: {exc}")
    statuses = {c.id: control_status([results[ch.__name__].status for ch in c.checks]) for c in controls}
    passed, applicable = score(controls, statuses)
    return {"generated_at": datetime.now(timezone.utc).isoformat(), "framework": framework or "all",
            "disclaimer": DISCLAIMER, "score": {"passed": passed, "applicable": applicable},
            "controls": [{"framework": c.framework, "id": c.id, "title": c.title, "status": statuses[c.id],
                          "checks": [ch.__name__ for ch in c.checks]} for c in controls],
            "checks": {name: {"status": r.status, "what": (CHECK_DOCS[name]), "evidence": r.evidence}
                       for name, r in results.items()}}


CHECK_DOCS = {f.__name__: " ".join((f.__doc__ or "").split()) for c in CONTROLS for f in c.checks}


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: score, controls, then each check with its evidence."""
    s = report["score"]
    lines = [f"# Compliance evidence ({report['framework']})", "", f"_{report['disclaimer']}_", "",
             f"Generated {report['generated_at']}. Score: **{s['passed']}/{s['applicable']}** controls pass.", "",
             "| Framework | Control | Status | Checks |", "|---|---|---|---|"]
    lines += [f"| {c['framework']} | {c['id']} {c['title']} | {c['status']} | {', '.join(c['checks'])} |"
              for c in report["controls"]]
    for name, check in report["checks"].items():
        lines += ["", f"## {name}: {check['status']}", "", check["what"], ""]
        lines += [f"- `{e['command']}` → {e['result']}" for e in check["evidence"]]
    return "\n".join(lines) + "\n"
