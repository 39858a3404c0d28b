"""Kafka identity on a real secured broker (``secure_kafka``: SASL/SCRAM-SHA-512, ACLs, super user
``admin``): unauthenticated clients are refused, a tenant's principal writes only its own topics,
a real worker dead-letters records whose payload names another tenant than their topic's, and
every kind of Kafka client of the project logs in with the settings."""

from __future__ import annotations

import asyncio
import ssl
import stat
import uuid
from pathlib import Path

import pytest
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed, TopicAuthorizationFailedError
from aiokafka.protocol.metadata import MetadataRequest
from pydantic import SecretStr

from core.kafka.local_broker import LocalKafka
from core.kafka.security import client_kwargs, deprovision_tenant, login_of, provision_tenant
from core.settings import Settings
from core.kafka.topics import ensure_topics, pipeline_topics, tenant_topic
from schemas.events import MetricPoint, encode
from streams import batch_consumer
from streams.app import make_faust_app
from streams.batch_consumer import TENANT_TOPICS_REFRESH_MS, BatchConsumer, KafkaEvent
from streams.publisher import Publisher
from tests.helpers import consume_records, isolated_settings, produce, read_json, start_worker
from tests.test_otlp_path import gauge_request
from traces.generator import ShopConfig, generate_spans, to_request

pytestmark = pytest.mark.kafka

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def as_admin(home: Path, broker: LocalKafka, **overrides: object) -> Settings:
    """Isolated settings logged in as the secured broker's super user."""
    login = broker.admin_login()
    assert login is not None
    values: dict = dict(kafka_security_protocol=login.protocol, kafka_sasl_mechanism=login.mechanism,
                        kafka_sasl_username=login.username, kafka_sasl_password=login.password)
    return isolated_settings(home, broker.bootstrap(), **{**values, **overrides})


def logged_in_as(settings: Settings, user: str, password: str) -> Settings:
    return settings.model_copy(update={"kafka_sasl_username": user, "kafka_sasl_password": SecretStr(password)})


def new_tenant() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def connect(settings: Settings) -> None:
    """One connection with the settings' login and a metadata request; raises the broker's refusal."""

    async def run() -> None:
        host, port = settings.bootstrap.rsplit(":", 1)
        conn = await create_conn(host, int(port), **client_kwargs(settings))
        try:
            await conn.send(MetadataRequest([]))
        finally:
            conn.close()

    asyncio.run(run())


def point(tenant: str, ts: float, value: float = 1.0) -> MetricPoint:
    return MetricPoint(ts, tenant, "eu-west-1", "api", "latency_ms", value, {"host": "h1"})


def test_the_secured_broker_keeps_its_admin_password_private(secure_kafka: LocalKafka) -> None:
    for path in (secure_kafka.admin_password_file, secure_kafka.dir / "server.properties"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    properties = (secure_kafka.dir / "server.properties").read_text()
    assert "allow.everyone.if.no.acl.found=false\n" in properties and "super.users=User:admin\n" in properties
    assert "PLAINTEXT://" not in properties.replace("SASL_PLAINTEXT://", "")  # no unauthenticated listener


def test_unauthenticated_clients_are_refused(secure_kafka: LocalKafka, tmp_path: Path) -> None:
    admin = as_admin(tmp_path, secure_kafka)
    connect(admin)  # the right login is accepted
    wrong = logged_in_as(admin, "admin", "not-the-password")
    with pytest.raises(SaslAuthenticationFailed, match="invalid credentials"):
        connect(wrong)
    with pytest.raises(SaslAuthenticationFailed, match="invalid credentials"):
        connect(logged_in_as(admin, "nobody", "whatever"))
    anonymous = admin.model_copy(update={"kafka_security_protocol": "PLAINTEXT"})
    with pytest.raises(KafkaConnectionError, match="closed"):  # the broker hangs up on a non-SASL client
        connect(anonymous)
    for refused in (wrong, anonymous):  # the project's own producer never starts
        with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
            produce(refused, [(None, b"x")])


def test_a_tenant_writes_to_its_own_topics_only(secure_kafka: LocalKafka, tmp_path: Path) -> None:
    admin = as_admin(tmp_path, secure_kafka)
    ensure_topics(admin)
    acme, beta = new_tenant(), new_tenant()
    as_acme = logged_in_as(admin, acme, provision_tenant(admin, acme))
    provision_tenant(admin, beta)
    own = tenant_topic(acme, admin.topic_metrics)
    assert produce(as_acme, [(None, b"mine")], topic=own) == 1
    assert produce(as_acme, [(None, b"mine")], topic=tenant_topic(acme, admin.topic_otlp_spans)) == 1
    others = [tenant_topic(beta, admin.topic_metrics), admin.topic_dead_letter, admin.topic_metrics,
              tenant_topic(f"{acme}x", admin.topic_metrics),  # the prefix is "<tenant>." with its dot
              admin.topic_audit, admin.topic_audit_checkpoints]  # the audit trail is the platform's to write
    for topic in others:
        with pytest.raises(TopicAuthorizationFailedError) as refused:
            produce(as_acme, [(None, b"theirs")], topic=topic)
        assert topic in str(refused.value)
    with pytest.raises(TopicAuthorizationFailedError):  # writing is all it may do: no reading
        asyncio.run(consume_records(as_acme, own, 1, timeout=15))
    assert [r.value for r in asyncio.run(consume_records(admin, own, 1))] == [b"mine"]

    deprovision_tenant(admin, acme)
    with pytest.raises(SaslAuthenticationFailed):
        connect(as_acme)
    deprovision_tenant(admin, acme)  # again: nothing left to remove is not an error


def test_a_forged_tenant_is_dead_lettered_by_the_worker(secure_kafka: LocalKafka, tmp_path: Path) -> None:
    admin = as_admin(tmp_path, secure_kafka, tenant_topics=True, detector="zscore", bottleneck_seconds=0)
    acme, beta = new_tenant(), new_tenant()
    as_acme = logged_in_as(admin, acme, provision_tenant(admin, acme))
    provision_tenant(admin, beta)
    metrics, spans, otlp_metrics = (tenant_topic(acme, base) for base in
                                    (admin.topic_metrics, admin.topic_otlp_spans, admin.topic_otlp_metrics))
    worker = start_worker(admin)
    try:
        mine, forged, stray = point(acme, T0), point(beta, T0 + 1), point(acme, T0 + 2)
        key = mine.series_key.encode()  # one partition: the records are handled in this order
        produce(as_acme, [(key, encode(mine)), (key, encode(forged)), (b"not-its-series", encode(stray))], topic=metrics)
        span_request = to_request(generate_spans(2, ShopConfig(), seed=3, start_ns=int(T0 * 1e9)), {"tenant": beta})
        produce(as_acme, [(b"k", span_request.SerializeToString())], topic=spans)
        unnamed = gauge_request(acme, [1.0, 2.0], T0)
        del unnamed.resource_metrics[0].resource.attributes[1]  # no tenant attribute: the topic's
        produce(as_acme, [(b"k", unnamed.SerializeToString()), (b"k", gauge_request(beta, [3.0], T0).SerializeToString())],
                topic=otlp_metrics)

        expected = {(metrics, 1), (spans, 0), (otlp_metrics, 1)}
        dead = read_json(admin, admin.topic_dead_letter, timeout=60,
                         until=lambda letters: expected <= {(d["topic"], d["offset"]) for d in letters})
        assert {(d["topic"], d["offset"]) for d in dead} == expected
        mismatch = f"tenant mismatch: payload says '{beta}', topic belongs to '{acme}'"
        assert all(d["reason"] == mismatch for d in dead), dead
        # the record keyed otherwise went back to the topic it came from, keyed by its series
        back = asyncio.run(consume_records(admin, metrics, 4, timeout=60))
        assert (stray.series_key.encode(), encode(stray)) in {(r.key, r.value) for r in back}
    finally:
        worker.stop()


def test_every_kind_of_client_logs_in_with_the_settings(secure_kafka: LocalKafka, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    admin = as_admin(tmp_path, secure_kafka, tenant_topics=True)
    # the batch consumer's metadata refresh, which finds a new tenant's topic: 2 s here, not 30 s
    monkeypatch.setattr(batch_consumer, "TENANT_TOPICS_REFRESH_MS", 2_000)
    wrong = logged_in_as(admin, "admin", "not-the-password")
    # admin client (core.kafka.topics)
    assert set(ensure_topics(admin)) == set(pipeline_topics(admin))
    with pytest.raises(KafkaConnectionError):
        ensure_topics(wrong, ["never-created"])
    early, late = new_tenant(), new_tenant()
    provision_tenant(admin, early)
    topics = [tenant_topic(t, admin.topic_metrics) for t in (early, late)]

    async def services() -> list[KafkaEvent]:
        # the worker's publisher (core.kafka.producer.make_producer) and its batch consumer, subscribed by
        # pattern: it reads a tenant provisioned while it runs, after its next metadata refresh
        seen: list[KafkaEvent] = []

        async def handler(events: list[KafkaEvent]) -> None:
            seen.extend(events)

        publisher, consumer = Publisher(admin), BatchConsumer(admin, admin.topic_metrics, f"{admin.app_id}-check",
                                                              handler, checkpoints=[])
        await publisher.start()
        await consumer.start()
        try:
            await asyncio.to_thread(provision_tenant, admin, late)
            await publisher.publish([(topic, b"k", b"from-the-publisher") for topic in topics])
            async with asyncio.timeout(TENANT_TOPICS_REFRESH_MS / 1000 + 60):
                while len(seen) < 2:
                    await asyncio.sleep(0.2)
        finally:
            await consumer.stop()
            await publisher.stop()
        return seen

    assert sorted((e.topic, e.value) for e in asyncio.run(services())) == sorted((t, b"from-the-publisher") for t in topics)

    async def faust_send(settings: Settings) -> None:
        app = make_faust_app(settings)
        await app.producer.start()
        try:
            await app.producer.send_and_wait(settings.topic_anomalies, b"k", b"from-faust", None, None, None)
        finally:
            await app.producer.stop()

    asyncio.run(faust_send(admin))
    assert any(r.value == b"from-faust" for r in asyncio.run(consume_records(admin, admin.topic_anomalies, 1)))
    with pytest.raises(KafkaConnectionError):
        asyncio.run(faust_send(wrong))

    # settings naming no cluster and no login, in the secured broker's home, log in as its admin
    local = Settings(home=secure_kafka.dir.parent)
    assert login_of(local) == secure_kafka.admin_login()
    assert produce(local, [(None, b"local")], topic=admin.topic_anomalies) == 1
    # ... also when they name its address, as the demo and child workers do
    assert login_of(local.model_copy(update={"kafka_bootstrap": secure_kafka.bootstrap()})) == secure_kafka.admin_login()
    assert login_of(local.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"})).protocol == "PLAINTEXT"


def test_the_tls_listener_needs_the_brokers_ca(secure_kafka: LocalKafka, tmp_path: Path) -> None:
    state = secure_kafka.status()
    assert state is not None and state.tls_port
    tls = as_admin(tmp_path, secure_kafka, kafka_bootstrap=state.tls_bootstrap, kafka_security_protocol="SASL_SSL",
                   kafka_ssl_cafile=str(secure_kafka.ca_file))
    connect(tls)
    assert produce(tls, [(None, b"over-tls")], topic=tls.topic_anomalies) == 1
    with pytest.raises(ssl.SSLCertVerificationError, match="self-signed certificate in certificate chain"):
        connect(tls.model_copy(update={"kafka_ssl_cafile": ""}))  # the system's CAs do not vouch for it
    with pytest.raises(SaslAuthenticationFailed):  # TLS does not replace the login
        connect(logged_in_as(tls, "admin", "not-the-password"))
