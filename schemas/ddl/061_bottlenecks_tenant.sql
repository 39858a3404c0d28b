-- Bottleneck reports belong to a tenant: the job analyses one tenant's traces at a time
-- (ResourceAttributes['tenant'] of otel_traces) and stamps its rows, and the API
-- (GET /v1/tenants/<tenant>/bottlenecks) reads only the caller's. Rows written before this
-- version have tenant '' and are served to no tenant. Version 061.
ALTER TABLE {database}.bottlenecks ADD COLUMN IF NOT EXISTS tenant LowCardinality(String) DEFAULT '' AFTER analyzed_at
