"""All configuration, in one typed object read from ``M1_*`` environment variables.

>>> from core.settings import Settings
>>> Settings(kafka_bootstrap="127.0.0.1:9092").kafka_url
'kafka://127.0.0.1:9092'
"""

from __future__ import annotations

import ast
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Pipeline settings. Every field can be set as ``M1_<FIELD>`` (upper case)."""

    model_config = SettingsConfigDict(env_prefix="M1_", extra="ignore")

    # Where local state lives: the Kafka jar cache, broker data, chdb data, Faust data.
    home: Path = Field(default=Path(".m1"), description="Directory for local state.")

    # Kafka. Leave kafka_bootstrap empty to use the project's local broker (m1 kafka start).
    kafka_bootstrap: str = Field(default="", description="host:port[,host:port] of an existing Kafka cluster.")
    kafka_version: str = Field(default="3.9.1", description="Apache Kafka version of the local broker.")
    kafka_port: int = Field(default=0, description="Port of the local broker; 0 picks a free one.")
    topic_partitions: int = Field(default=4, description="Partitions of the topics the pipeline creates.")
    topic_metrics: str = "metrics"
    topic_dead_letter: str = "dead_letter"
    topic_anomalies: str = "anomalies"
    topic_otlp_spans: str = Field(default="otlp_spans", description="OTLP traces as the Collector's Kafka exporter writes them.")
    topic_otlp_metrics: str = Field(default="otlp_metrics", description="OTLP metrics as the Collector's Kafka exporter writes them.")
    topic_bottlenecks: str = Field(default="bottlenecks", description="Bottleneck reports of the periodic trace analysis.")
    otlp_encoding: str = Field(default="otlp_proto", description="Encoding of the OTLP topics: otlp_proto or otlp_json.")
    red_grace_seconds: float = Field(default=60.0, gt=0, description="How late a span may come for its RED minute; a "
                                     "minute closes this long after it ends (by span time) or after its key's last span.")
    bottleneck_seconds: float = Field(default=60.0, description="How often the bottleneck job runs; 0 disables the timer.")
    bottleneck_window_seconds: int = Field(default=900, description="Window of spans the bottleneck job analyses.")

    # Kafka security (core/kafka/security.py): every Kafka client of the project connects with these.
    # Left at PLAINTEXT with no username, a secured local broker (m1 kafka start --secure) lends its admin login.
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = Field(
        default="PLAINTEXT", description="How clients talk to Kafka: PLAINTEXT, SASL_PLAINTEXT, SASL_SSL or SSL.")
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        default="SCRAM-SHA-512", description="SASL mechanism (with a SASL_* protocol).")
    kafka_sasl_username: str = Field(default="", description="SASL user (the Kafka principal User:<name>).")
    kafka_sasl_password: SecretStr = Field(default=SecretStr(""), description="SASL password.")
    kafka_ssl_cafile: str = Field(default="", description="PEM file of the CA that signed the brokers' certificates "
                                                          "(SSL, SASL_SSL); empty trusts the system's CAs.")
    tenant_topics: bool = Field(
        default=False, description="Each tenant writes to its own topics '<tenant>.<topic>' and the worker takes the "
                                   "tenant from the topic; off, the payload's tenant is trusted (one shared topic).")

    # ClickHouse. Empty clickhouse_url means embedded chdb under <home>/chdb.
    clickhouse_url: str = Field(
        default="",
        validation_alias=AliasChoices("M1_CLICKHOUSE_URL", "CLICKHOUSE_URL", "clickhouse_url"),
        description="http(s)://user:pass@host:port of a ClickHouse server (also read from CLICKHOUSE_URL).",
    )
    clickhouse_database: str = "m1"

    # Query limits (sinks/clickhouse.py, sinks/sql_guard.py, sinks/server_access.py): every admin and tenant SQL query
    # runs read-only under them, and its own SETTINGS clause cannot lift them.
    query_max_seconds: float = Field(default=30.0, description="Time limit of an admin or tenant SQL query.")
    query_max_memory_bytes: int = Field(default=1 << 30, description="Memory limit of an admin or tenant SQL query.")
    query_max_rows: int = Field(default=100_000, description="Most result rows of an admin or tenant SQL query; more is an error.")
    clickhouse_tenant_secret: SecretStr | None = Field(
        default=None, description="Server mode: secret each tenant's read-only ClickHouse user password is derived "
                                  "from (HMAC-SHA256); tenant SQL on a server is refused without it.")

    # Worker.
    app_id: str = "m1-analytics"
    web_port: int = Field(default=6066, description="Port of the HTTP API (/v1) served by the worker or `m1 api`.")
    web_bind: str = Field(default="127.0.0.1", description="Address the HTTP API binds to (0.0.0.0 in a container).")
    batch_size: int = Field(default=40000, description="Sink flush size: events per batch (a batch pays fixed costs: store inserts, broker acknowledgements, kernel calls, and a pass over each series it holds).")
    flush_seconds: float = Field(default=1.0, description="Sink flush interval: max seconds an event waits.")
    max_payload_bytes: int = Field(default=65536, description="Larger records are dead-lettered.")
    max_future_seconds: float = Field(
        default=3600.0, description="Points stamped further ahead of the worker's clock are dead-lettered "
                                    "(a series learns only points later than its last, so one would stop it).")
    detector: str = Field(default="ensemble", description="Detector name from models.registry.")
    hst_features: Annotated[list[str], NoDecode] = Field(
        default=["value", "delta", "roll_mean", "roll_std"],
        description="Features of the hst detector: value, delta, roll_mean, roll_std, time_of_day.")
    ensemble_components: Annotated[list[str], NoDecode] = Field(
        default=["robust", "seasonal_robust", "context"],
        description="Ensemble views: robust, seasonal_robust, context, relative_entropy, holtwinters, hst, windowed_gaussian.")
    ensemble_rarity_k: int = Field(
        default=5, description="Ensemble: a deviation alerts only if fewer than k as large were seen in the last 4,000 points; 0 = off.")
    anomaly_threshold: float = Field(
        default=0.58, description="Scores at or above this become anomaly events (warning); 0.58 is the ensemble's "
                                  "NAB-optimal threshold, see docs/benchmarks-nab.md.")
    critical_threshold: float = Field(default=0.75, description="Scores at or above this are critical anomalies.")
    max_series: int = Field(default=10_000, description="Live models kept in memory (~110 KiB a series with the default "
                                                        "ensemble); least recently used beyond it are evicted.")
    snapshot_seconds: float = Field(default=10.0, description="How often changed model state is checkpointed (at most; a slow checkpoint spaces the next out to 9x its duration).")

    # Store faults (streams/retry.py): a batch the store rejects is tried store_retry_attempts times, then
    # dead-lettered; while the store is unavailable the batch waits (input paused) and is retried until it is taken.
    store_retry_attempts: int = Field(
        default=5, ge=1, description="Tries of a batch the store rejects before its records are dead-lettered (reason 'store: ...').")
    store_retry_base_seconds: float = Field(
        default=0.5, gt=0, description="Backoff after a batch's first failure; doubled after each further one (with jitter).")
    store_retry_max_seconds: float = Field(default=30.0, gt=0, description="Longest backoff between two tries of a batch.")

    # Forecasting (streams/forecast_pipeline.py, docs/forecasting.md). Lists and dicts are JSON in M1_* variables.
    forecast_metrics: Annotated[list[str], NoDecode] = Field(default=["requests_per_s", "cpu_pct"], description="Metrics whose series are forecast.")
    forecast_horizons: Annotated[list[int], NoDecode] = Field(default=[1, 6, 12], description="Forecast steps (in points of the series) to publish.")
    forecast_model: str = Field(default="holtwinters", description="Forecaster name from models.forecasting.registry.")
    forecast_coverage: float = Field(default=0.9, description="Coverage of the forecast intervals.")
    forecast_every: int = Field(default=12, description="Publish forecasts / cost projections every N points of a series.")
    topic_forecasts: str = Field(default="forecasts", description="Forecasts (kind 'forecast').")
    topic_costs: str = Field(default="costs", description="Cost projections (kind 'cost'); the workflows read them.")
    topic_recommendations: str = Field(default="recommendations", description="Replica recommendations.")
    cost_metrics: Annotated[list[str], NoDecode] = Field(default=["cost_usd"], description="Metrics holding accrued cost, projected per day and month.")
    cost_step_seconds: int = Field(default=3600, description="Bucket length of the cost forecaster.")
    replica_capacity: Annotated[dict[str, float], NoDecode] = Field(
        default={"requests_per_s": 100.0, "cpu_pct": 60.0}, description="Load one replica serves, per metric to scale on.")
    scaling_headroom: float = Field(default=0.2, description="Extra capacity planned on top of the forecast peak.")
    scaling_window: int = Field(default=12, description="Points per scaling decision window.")
    scaling_season: int = Field(
        default=24, ge=0, description="Decision windows in a day, for the risk planner's seasonal base (the peak one "
                                      "day before the next window): 24 for one-hour windows (12 points of 5 minutes); "
                                      "0 turns it off.")
    scaling_min_replicas: int = 1
    scaling_max_replicas: int = 1000
    scaling_planner: Literal["peak", "risk"] = Field(
        default="risk", description="'risk': the peak that the next window exceeds at the service's overload target "
                                    "(no headroom); 'peak': median of the last 3 window peaks plus scaling_headroom.")
    scaling_overload_target: float = Field(default=0.05, gt=0.0, lt=1.0, description="Risk planner: share of windows "
                                           "whose peak may exceed the capacity provisioned for them.")
    scaling_overload_targets: Annotated[dict[str, float], NoDecode] = Field(
        default={}, description="Risk planner: overload target per service, overriding scaling_overload_target.")

    # Quotas and model state (tenancy/quotas.py, models/bank.py, sinks/model_state.py). Registry overrides per tenant.
    quota_points_per_second: float = Field(
        default=50_000.0, description="Metric points a tenant may ingest per second (burst: one second's worth); "
                                      "the excess is dead-lettered with reason 'quota: ...'.")
    quota_max_series: int = Field(
        default=5_000, description="Distinct series a tenant may hold in the model bank; points of further new "
                                   "series are dead-lettered with reason 'quota: ...'.")
    quota_requests_per_second: float = Field(
        default=50.0, description="API requests a tenant may make per second (burst: one second's worth); "
                                  "beyond it the API answers 429 with Retry-After.")
    state_key_path: Path | None = Field(
        default=None, description="Key file authenticating saved model state (HMAC-SHA256); empty means "
                                  "<home>/state.key, created with 32 random bytes (mode 0600) on first use.")

    # Tenancy and authentication (tenancy/registry.py, tenancy/authn.py, tenancy/oidc.py).
    registry_path: Path | None = Field(
        default=None, description="SQLite file of tenants and API keys; empty means <home>/registry.db.")
    api_key_cache_seconds: float = Field(
        default=60.0, description="How long a verified API key is trusted without a new scrypt check "
                                  "(revoking a key or disabling its tenant ends it at once).")
    oidc_issuer: str = Field(default="", description="Expected 'iss' of OIDC bearer tokens; empty turns OIDC off.")
    oidc_audience: str = Field(default="", description="Expected 'aud' of OIDC bearer tokens.")
    oidc_jwks_url: str = Field(default="", description="URL of the issuer's JWKS (fetched and cached).")
    oidc_jwks_path: Path | None = Field(default=None, description="Local JWKS file, used instead of oidc_jwks_url.")
    oidc_tenant_claim: str = Field(default="m1_tenant", description="Token claim naming the caller's tenant.")
    oidc_roles_claim: str = Field(default="m1_roles", description="Token claim listing the caller's roles.")
    oidc_leeway_seconds: float = Field(default=30.0, description="Clock skew allowed on exp/nbf/iat of tokens.")

    # API client: what `m1 query`, `m1 traces bottlenecks`, the demo and the benchmarks send to the API.
    api_key: SecretStr = Field(
        default=SecretStr(""), description="API key (m1_<id>_<secret>) sent as 'Authorization: Bearer' to the "
                                           "worker's API; `m1 keys create` prints one.")

    # API server (api/): limits of the HTTP API and its access log.
    api_max_body_bytes: int = Field(default=256 * 1024, description="Largest request body the API reads; more is 413.")
    api_access_flush_seconds: float = Field(
        default=1.0, description="How often the API writes its queued access decisions to the access_log table.")

    # Audit trail (audit/, docs/audit.md): the audit topic, hash chains, signed Merkle tree heads.
    topic_audit: str = Field(default="audit", description="audit/1 events to chain into audit_log.")
    topic_audit_checkpoints: str = Field(default="audit_checkpoints", description="Signed tree heads, as they are made.")
    audit_key_path: Path | None = Field(
        default=None, description="Ed25519 key signing tree heads; empty means <home>/audit-signing.key, created "
                                  "(mode 0600) on first use; its public-key history is <key>.history.json.")
    audit_witness_path: Path | None = Field(
        default=None, description="Last verified tree head per tenant (rollback detection of `m1 audit verify`); "
                                  "empty means <home>/audit-witness.json.")
    audit_checkpoint_events: int = Field(default=1000, ge=1, description="Sign a tenant's tree head every N new events...")
    audit_checkpoint_seconds: float = Field(default=60.0, gt=0, description="... or when it grew and its last head is this old.")
    audit_dedupe_window: int = Field(
        default=100_000, ge=1, description="Recent ids per tenant kept in memory to drop replays; older ones are looked up in audit_log.")
    audit_region: str = Field(default="local", description="Region of the audit events the pipeline writes about itself.")

    # -- regions (#10): multi-region clusters, heartbeats, replication lag, health and routing (regions/).
    region: str = Field(default="", description="This worker's region; empty runs no region agent (single region).")
    regions: Annotated[list[str], NoDecode] = Field(default=[], description="Every region of the set, comma list.")
    region_bootstraps: Annotated[dict[str, str], NoDecode] = Field(
        default={}, description="host:port of each region's cluster (name=host:port,...), for MirrorMaker's offset lag; "
                                "empty for a local set: read from <home>/regions.")
    heartbeat_interval: float = Field(default=1.0, gt=0, description="Seconds between two heartbeat/1 of a region.")
    topic_heartbeats: str = Field(default="region_heartbeats", description="heartbeat/1 of the region's agent (MirrorMaker "
                                  "2 keeps 'heartbeats' for its own); mirrored as '<region>.region_heartbeats'.")
    topic_region_lag: str = Field(default="region_lag", description="Replication lag measurements of the region's agent.")
    topic_region_events: str = Field(default="region_events", description="failover / recovery / degraded events.")
    topic_routing: str = Field(default="routing", description="The routing table (compacted).")
    lag_window_seconds: float = Field(default=10.0, gt=0, description="Window of the lag agent's per-pair statistics.")
    topic_region_views: str = Field(default="region_views", description="Each region's local health view of every "
                                    "region (region_view/1), mirrored; the shared verdict is computed from them.")
    health_degraded_missed: int = Field(default=2, ge=1, description="Heartbeats missed before a region is degraded.")
    health_down_missed: int | None = Field(default=None, ge=1, description="Heartbeats missed before a region is down "
                                           "(failover); unset: 2 with 3+ regions, 3 with 2 (regions/health.py).")
    health_recover_beats: int | None = Field(default=None, ge=1, description="Heartbeats in a row, one interval apart, "
                                             "to leave down; unset: 2 with 3+ regions, 3 with 2 (regions/health.py).")
    health_lag_degraded_seconds: float = Field(default=1.0, ge=0, description="Replication lag above which a region is degraded.")
    health_lag_healthy_seconds: float = Field(default=0.5, ge=0, description="Lag a degraded region must get under to be healthy.")
    health_anomaly_hold_seconds: float = Field(default=60.0, ge=0, description="How long an error-rate anomaly keeps a region degraded.")
    health_settle_seconds: float = Field(default=5.0, ge=0, description="How long every cause must be clear before degraded -> healthy.")
    region_proximity: dict[str, dict[str, float]] = Field(
        default={}, description='Client geography -> region -> RTT ms, JSON ({"de": {"eu-west": 12, "us-east": 90}}); '
                                "empty: each region is a geography of its own name (regions/routing.py).")

    @field_validator("regions", "region_bootstraps", mode="before")
    @classmethod
    def _parse_region_list(cls, value: Any) -> Any:
        """``a,b`` / ``a=h:1,b=h:2`` (or JSON) from the environment."""
        return cls._parse_collection(value)

    @model_validator(mode="after")
    def _no_dot_in_worker_topics(self) -> Settings:
        """The worker's topics (and the internal ones named after ``app_id``) carry no ``.``: a tenant's
        Kafka login may write to every topic under ``<tenant>.`` (core/kafka/security.py)."""
        for name in ["app_id", *(f for f in type(self).model_fields if f.startswith("topic_"))]:
            value = getattr(self, name)
            if isinstance(value, str) and "." in value:
                raise ValueError(f"{name}={value!r}: a '.' would put it under a tenant's topic prefix '<tenant>.'")
        return self

    @field_validator("audit_key_path", "audit_witness_path", mode="before")
    @classmethod
    def _empty_audit_path_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("registry_path", "oidc_jwks_path", "state_key_path", "pii_key_path", "pii_policy_path",
                     "state_dir", mode="before")
    @classmethod
    def _empty_path_is_none(cls, value: Any) -> Any:
        """An empty variable (``M1_REGISTRY_PATH=``) means the default, not the current directory."""
        return None if value == "" else value

    @field_validator("forecast_metrics", "forecast_horizons", "cost_metrics", "replica_capacity", "hst_features",
                     "ensemble_components", "scaling_overload_targets", mode="before")
    @classmethod
    def _parse_collection(cls, value: Any) -> Any:
        """JSON (``["a","b"]``, ``{"a": 1}``), a Python literal, or ``a,b`` / ``a=1,b=2`` from the environment."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        for parse in (json.loads, ast.literal_eval):
            try:
                return parse(text)
            except (ValueError, SyntaxError):
                pass
        items = [item.strip() for item in text.split(",") if item.strip()]
        if any("=" in item for item in items):
            return dict(item.split("=", 1) for item in items)
        return items

    def detector_options(self, detector: str | None = None) -> dict[str, Any]:
        """Options for ``models.registry.make_detector`` of ``detector`` (default: the configured one)."""
        return {
            "hst": {"features": self.hst_features},
            "ensemble": {"components": self.ensemble_components, "rarity_k": self.ensemble_rarity_k},
        }.get(detector or self.detector, {})

    def changed_detector_options(self) -> dict[str, Any]:
        """The configured detector's options if any differs from its default, else ``{}``."""
        options = self.detector_options()
        return options if options != Settings.model_construct().detector_options(self.detector) else {}

    @property
    def kafka_url(self) -> str:
        """Bootstrap servers as Faust's ``kafka://`` URL."""
        return ";".join(f"kafka://{host}" for host in self.bootstrap.split(","))

    @property
    def bootstrap(self) -> str:
        """host:port of Kafka: the configured cluster, or the local broker's recorded address."""
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        from core.kafka.local_broker import LocalKafka

        return LocalKafka(self).bootstrap()

    @property
    def chdb_path(self) -> Path:
        """Data directory of the embedded ClickHouse engine."""
        return (self.home / "chdb").resolve()

    @property
    def registry_file(self) -> Path:
        """The tenant and API key registry: ``registry_path`` or ``<home>/registry.db``."""
        return (self.registry_path or self.home / "registry.db").resolve()

    @property
    def state_key_file(self) -> Path:
        """The key authenticating saved model state: ``state_key_path`` or ``<home>/state.key``."""
        return (self.state_key_path or self.home / "state.key").resolve()

    # -- compliance (#11): personal data keys, GDPR rights, retention (compliance/, docs/compliance.md).
    pii_key_path: Path | None = Field(
        default=None, description="Secret the per-tenant pseudonym and subject-reference HMAC keys are derived from; "
                                  "empty means <home>/pii.key, created with 32 random bytes (mode 0600) on first use.")
    pii_policy_path: Path | None = Field(
        default=None, description="Personal-data policy (YAML: data classes, actions, detectors, classified fields) "
                                  "applied on every path before a write; empty means compliance/default_policy.yaml.")
    retention_days: Annotated[dict[str, int], NoDecode] = Field(
        default={"metrics": 400, "traces": 30, "dead_letters": 30, "access": 400, "audit": 2192},
        description="Days rows are kept (ClickHouse TTL, compliance/retention.py), per table group (metrics, traces, "
                    "dead_letters, access, audit; 0 keeps them forever; audit: 6 years, HIPAA 164.316(b)(2)) and per "
                    "personal-data class (direct_identifier, quasi_identifier, phi: rows carrying such a field expire "
                    "after that many days; 0 leaves them to their group). A key left out keeps its default.")
    retention_tenant_days: Annotated[dict[str, int], NoDecode] = Field(
        default={}, description="Per-tenant exceptions, 'tenant:class=days' (e.g. acme:traces=7,acme:metrics=90).")

    @field_validator("retention_days", "retention_tenant_days", mode="before")
    @classmethod
    def _parse_retention(cls, value: Any) -> Any:
        """``a=1,b=2`` (or JSON) from the environment."""
        return cls._parse_collection(value)

    @property
    def pii_key_file(self) -> Path:
        """The secret personal-data HMAC keys derive from: ``pii_key_path`` or ``<home>/pii.key``."""
        return (self.pii_key_path or self.home / "pii.key").resolve()

    # -- integrations (#12): the notification outbox, its delivery and the receivers' clients (integrations/).
    topic_notifications: str = Field(default="notifications", description="Outbox: workflow notifications to deliver (key = id).")
    topic_notification_retries: str = Field(
        default="notification_retries", description="Pending retries of notifications (attempts, due time), so a crash resumes them.")
    topic_deliveries: str = Field(default="deliveries", description="Every delivery attempt's outcome (delivered, failed, dead).")
    delivery_max_attempts: int = Field(default=12, ge=1, description="Tries of a notification before it is dead-lettered.")
    delivery_max_age_seconds: float = Field(default=3600.0, gt=0, description="Older undelivered notifications are dead-lettered.")
    delivery_base_seconds: float = Field(default=1.0, gt=0, description="Backoff after a first failed try; doubled per try, jittered.")
    delivery_max_backoff_seconds: float = Field(default=60.0, gt=0, description="Longest backoff (and longest Retry-After honoured).")
    delivery_timeout_seconds: float = Field(default=10.0, gt=0, description="Time limit of one delivery attempt.")
    delivery_concurrency: int = Field(default=64, ge=1, description="Delivery attempts in flight at once.")
    delivery_max_pending: int = Field(default=20_000, ge=1, description="Notifications held in memory; beyond it input pauses.")
    delivery_breaker_failures: int = Field(default=5, ge=1, description="Failures in a row that open an endpoint's circuit.")
    delivery_breaker_seconds: float = Field(default=5.0, gt=0, description="How long an open circuit waits before one probe.")
    integrations_external_url: str = Field(default="", description="Link to the product put in notifications (Alertmanager's externalURL).")

    # -- workflows (#12): alert workflows, incidents, silences (workflows/, docs/workflows.md).
    workflows_dir: Path | None = Field(default=None, description="Directory of the tenants' workflow YAML files; "
                                       "empty means <home>/workflows.")
    topic_workflow_signals: str = Field(default="workflow_signals", description="Engine input: signals and controls "
                                        "(acks, silences, ticks), keyed by tenant.")
    topic_incidents: str = Field(default="incidents", description="Every change of an incident (JSON, key = id).")
    topic_workflow_runs: str = Field(default="workflow_runs", description="Workflow runs as they end or reach their terminal state.")
    workflow_tick_seconds: float = Field(default=1.0, gt=0, description="How often deadlines (group wait, ack timeouts, "
                                         "clearing) are checked.")
    incident_clear_seconds: float = Field(default=300.0, gt=0, description="An incident resolves after this long "
                                          "without an anomaly of its service and region; the next opens a new one.")

    # -- scale-out (#14): several workers in one consumer group (streams/batch_consumer.py, sinks/state_files.py).
    state_dir: Path | None = Field(default=None, description="Directory of model checkpoints shared by every worker "
                                   "of one machine (embedded store); empty means the store's model_state table.")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
