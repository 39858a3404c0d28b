"""The route table: every operation of the API, the permission it needs, and its handler.

This table is the only place a route is declared. The router (``api.app``), the authorisation
check (``api.gate``), the OpenAPI document (``api.openapi``) and the authorisation matrix test
(``tests/security/authz_matrix.yaml``) are all made from it, so a route cannot exist without a
permission (``api.route.Route`` refuses one) nor without rows in the matrix.

Region routes (issue #10, regions/api.py) need ``regions:read``: platform data, the same answer for
every caller that holds it.

>>> len({(r.method, r.path) for r in ROUTES}) == len(ROUTES)
True
>>> sorted({r.permission for r in ROUTES if not r.tenant_scoped})
['authenticated', 'compliance:admin', 'metrics:read', 'public', 'regions:read', 'sql:admin', 'tenants:admin']
"""

from __future__ import annotations

from api import handlers as h
from api import resources as res
from api.params import Choice, Text
from api.resources import Listing
from api.route import AUTHENTICATED, PUBLIC, Route
from regions import api as rg
from workflows import api as wf

T = "/v1/tenants/{tenant}"

_OBJECT = {"type": "object"}
_ITEMS = {"type": "object", "properties": {"items": {"type": "array", "items": _OBJECT}}, "required": ["items"]}
_ROWS = {"type": "object", "properties": {"columns": {"type": "array", "items": {"type": "string"}},
                                          "rows": {"type": "array", "items": {"type": "array"}}},
         "required": ["columns", "rows"]}
_KEY_ID = Text("key_id", "API key id: 12 hex digits (the part after m1_).", where="path", max_length=12,
               pattern="[0-9a-f]{12}")


def listing(method: str, path: str, permission: str, summary: str, spec: Listing) -> Route:
    """A route answering the rows of ``spec`` for the path's tenant."""
    return Route(method, path, permission, h.listing(spec), summary, spec.params, response=spec.response_schema())


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/health", PUBLIC, h.health, "Liveness: the API answers.",
          response={"type": "object", "properties": {"status": {"const": "ok"}}}),
    Route("GET", "/v1/openapi.json", PUBLIC, h.openapi, "This API's OpenAPI 3.1 document."),
    Route("GET", "/v1/whoami", AUTHENTICATED, h.whoami, "The caller: subject, tenant, roles, permissions."),
    Route("GET", "/v1/roles", AUTHENTICATED, h.roles, "Roles, their permissions, and which a tenant-admin may grant."),
    Route("GET", "/v1/metrics", "metrics:read", h.metrics,
          "The worker's own health in Prometheus' text format (lag, batch latency, points, dead letters, "
          "live models, checkpoint age, store inserts); no tenant's data.",
          response={"type": "string"}, content_type="text/plain; version=0.0.4"),
    # Regions (regions/): where clients should go now, and the shared health verdict behind it.
    Route("GET", "/v1/route", "regions:read", rg.route,
          "The ordered regions a client in a geography should use now (every geography's without geo), from "
          "the region agent's latest decision; 404 unknown geography, 503 none up.", (rg.GEO,),
          response=rg.ROUTE_RESPONSE),
    Route("GET", "/v1/regions", "regions:read", rg.regions,
          "Every region's shared health (healthy, degraded, down), why, and each region's local view of it.",
          response=rg.REGIONS_RESPONSE),
    # Platform administration.
    Route("GET", "/v1/tenants", "tenants:admin", h.list_tenants, "Every tenant.", response=_ITEMS),
    Route("POST", "/v1/tenants", "tenants:admin", h.create_tenant, "Create a tenant (optional quota overrides).",
          body=h.NewTenant, status=201),
    Route("POST", f"{T}/disable", "tenants:admin", h.disable_tenant,
          "Disable a tenant: its keys and tokens are refused from the next request on; its data stays."),
    Route("POST", "/v1/query", "sql:admin", h.admin_query, "Read-only SQL over every tenant's rows (guarded, limited).",
          body=h.QueryBody, response=_ROWS),
    Route("GET", "/v1/compliance/report", "compliance:admin", h.compliance_report,
          "Live compliance evidence: SOC 2, HIPAA 164.312 and GDPR controls, each check with its evidence, the "
          "score (not a certification).",
          (Choice("framework", "Only this framework's controls.", choices=("soc2", "hipaa", "gdpr")),), response=_OBJECT),
    Route("GET", "/v1/compliance/retention", "compliance:admin", h.retention,
          "Retention days per class and tenant, legal holds, each table's TTL as planned and as applied.",
          response=_OBJECT),
    Route("POST", "/v1/compliance/retention/apply", "compliance:admin", h.apply_retention,
          "Apply the TTL rules and delete the rows expired now; audited.", response=_OBJECT),
    Route("GET", "/v1/compliance/legal-holds", "compliance:admin", h.legal_holds, "Tenants on legal hold.",
          response=_ITEMS),
    # A tenant: settings, keys, audit.
    Route("GET", T, "tenant:read", h.tenant_info, "The tenant, its quotas and its usage."),
    Route("GET", f"{T}/keys", "keys:read", h.list_keys, "The tenant's API keys (never their secrets).", response=_ITEMS),
    Route("POST", f"{T}/keys", "keys:write", h.create_key,
          "Create an API key of the tenant; the key is in this answer only. A tenant-admin may grant any role "
          "but platform-admin.", body=h.NewKey, status=201),
    Route("DELETE", f"{T}/keys/{{key_id}}", "keys:write", h.revoke_key, "Revoke one of the tenant's API keys.",
          (_KEY_ID,)),
    listing("GET", f"{T}/audit", "audit:read", "The tenant's access log: every allowed and denied request, newest first.",
            res.AUDIT),
    Route("GET", f"{T}/audit/verify", "audit:read", h.audit_verify,
          "Verify the tenant's hash-chained audit trail now: the chain, every signed tree head, the last head "
          "seen (docs/audit.md); names the first bad sequence number.",
          (Text("since", "Re-hash only the events of this window (e.g. 1h, 7d).", max_length=16, pattern="[0-9]+[smhd]?"),),
          response=_OBJECT),
    Route("GET", f"{T}/audit/proofs/{{event_id}}", "audit:read", h.audit_proof,
          "The inclusion proof of one of the tenant's audit events against the newest signed tree head covering "
          "it (check it with `m1 audit verify-proof`).",
          (Text("event_id", "The event's id (its RFC 9162 leaf hash, hex).", where="path", max_length=64,
                pattern="[0-9a-f]{64}"),), response=_OBJECT),
    Route("POST", f"{T}/gdpr/export", "gdpr:admin", h.gdpr_export,
          "GDPR Art. 15/20: every row of the tenant holding a data subject's pseudonym or encrypted fields, "
          "decrypted, as JSON (m1-gdpr-export/1); audited as gdpr.export.", body=h.GdprSubject, response=_OBJECT),
    Route("POST", f"{T}/gdpr/erase", "gdpr:admin", h.gdpr_erase,
          "GDPR Art. 17: destroy a data subject's key (crypto-shredding): its encrypted fields become "
          "unrecoverable everywhere; audited as gdpr.erase.", body=h.GdprSubject, response=_OBJECT),
    Route("PUT", f"{T}/legal-hold", "compliance:admin", h.set_legal_hold,
          "Put the tenant on legal hold: no retention deletes its data until cleared; audited.", body=h.LegalHold,
          response=_OBJECT),
    Route("DELETE", f"{T}/legal-hold", "compliance:admin", h.clear_legal_hold,
          "Release the tenant's legal hold: retention applies again; audited.", response=_OBJECT),
    Route("POST", f"{T}/query", "sql:tenant", h.tenant_query,
          "Read-only SQL that sees only the tenant's rows (guarded, limited).", body=h.QueryBody, response=_ROWS),
    # A tenant's data.
    listing("GET", f"{T}/series", "series:read", "The tenant's series, by key.", res.SERIES_LIST),
    listing("GET", f"{T}/points", "series:read", "Points of one series, newest first.", res.POINTS),
    listing("GET", f"{T}/anomalies", "anomalies:read", "Anomalies, newest first.", res.ANOMALIES),
    listing("GET", f"{T}/forecasts", "forecasts:read", "Forecasts with intervals, newest origin first.", res.FORECASTS),
    listing("GET", f"{T}/recommendations", "recommendations:read", "Replica recommendations, newest first.",
            res.RECOMMENDATIONS),
    listing("GET", f"{T}/costs", "costs:read", "Cost projections to the end of the day and month, newest first.",
            res.COSTS),
    listing("GET", f"{T}/bottlenecks", "bottlenecks:read", "Bottleneck reports of the tenant's traces, newest first.",
            res.BOTTLENECKS),
    Route("POST", f"{T}/bottlenecks", "bottlenecks:run", h.run_bottlenecks,
          "Analyse the tenant's recent traces now; the reports are stored and returned.", body=h.BottleneckRun,
          response={"type": "object", "properties": {"reports": {"type": "array", "items": _OBJECT}}}),
    listing("GET", f"{T}/traces", "traces:read", "The slowest recent traces (root spans), slowest first.", res.TRACES),
    listing("GET", f"{T}/traces/{{trace_id}}", "traces:read", "The tenant's spans of one trace, in time order.",
            res.SPANS),
    # Alert workflows (workflows/, docs/workflows.md): incidents and silences.
    listing("GET", f"{T}/incidents", "incidents:read", "Incidents, newest first.", wf.INCIDENTS),
    Route("GET", f"{T}/incidents/{{incident_id}}", "incidents:read", wf.get_incident,
          "One incident with its timeline.", (wf.INCIDENT_ID,), response=_OBJECT),
    Route("POST", f"{T}/incidents/{{incident_id}}/ack", "incidents:write", wf.incident_action("ack"),
          "Acknowledge an incident: its workflows stop escalating and tell the receivers they told.",
          (wf.INCIDENT_ID,), response=_OBJECT, status=202),
    Route("POST", f"{T}/incidents/{{incident_id}}/resolve", "incidents:write", wf.incident_action("resolve"),
          "Resolve an incident now: its workflow runs end and send their resolve notifications.",
          (wf.INCIDENT_ID,), response=_OBJECT, status=202),
    listing("GET", f"{T}/silences", "silences:read", "Silences and maintenance windows not yet ended.", wf.SILENCES),
    Route("POST", f"{T}/silences", "silences:write", wf.create_silence,
          "Create a silence (mutes matching notifications) or maintenance window (ignores matching signals).",
          body=wf.NewSilence, response=_OBJECT, status=201),
    Route("GET", f"{T}/silences/{{silence_id}}", "silences:read", wf.get_silence, "One silence.",
          (wf.SILENCE_ID,), response=_OBJECT),
    Route("DELETE", f"{T}/silences/{{silence_id}}", "silences:write", wf.expire_silence, "End a silence now.",
          (wf.SILENCE_ID,), response=_OBJECT),
)
