-- Every authorisation decision of the HTTP API (api/access.py), allowed or denied. Version 060.
-- Append-only: a plain MergeTree, never Replacing or Collapsing, so no row is ever merged away;
-- the API only inserts. GET /v1/tenants/<tenant>/audit reads a tenant's rows (auditors).
-- `tenant` is the tenant whose resource was asked for (the path's), else the caller's own;
-- denied attempts on a tenant's resources therefore show in that tenant's log.
CREATE TABLE IF NOT EXISTS {database}.access_log
(
    ts          DateTime64(3, 'UTC'),
    tenant      LowCardinality(String),
    subject     String,                          -- key:<id>, a token's sub, or '' (no credentials)
    via         LowCardinality(String),          -- api_key, oidc, or ''
    roles       Array(LowCardinality(String)),
    method      LowCardinality(String),
    path        String,                          -- as sent (raw, at most 1024 characters)
    permission  LowCardinality(String),          -- the route's permission, public, authenticated, or ''
    decision    LowCardinality(String),          -- allow or deny
    status      UInt16,                          -- HTTP status answered
    reason      String,                          -- why denied (or the error of an allowed request)
    remote      String,                          -- peer address (X-Forwarded-For is not trusted)
    duration_ms Float32
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant, ts)
