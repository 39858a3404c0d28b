"""How every Kafka client of the project authenticates, and a tenant's Kafka identity.

One resolution, :func:`login_of`, turns the settings (``M1_KAFKA_SECURITY_PROTOCOL``,
``M1_KAFKA_SASL_MECHANISM``, ``M1_KAFKA_SASL_USERNAME``, ``M1_KAFKA_SASL_PASSWORD``,
``M1_KAFKA_SSL_CAFILE``) into a :class:`KafkaLogin`; :func:`client_kwargs` makes it aiokafka's
keyword arguments (producers, consumers, admin clients) and :func:`faust_credentials` Faust's
``broker_credentials``. When the settings configure no login and name no cluster but the project's
local broker (``M1_KAFKA_BOOTSTRAP`` empty or its address), and that broker was started with
``m1 kafka start --secure``, its admin login is used (``LocalKafka.admin_login``): a secured
local setup needs no configuration.

>>> from core.settings import Settings
>>> client_kwargs(Settings(kafka_bootstrap="127.0.0.1:9092"))
{'security_protocol': 'PLAINTEXT'}
>>> s = Settings(kafka_bootstrap="h:9092", kafka_security_protocol="SASL_PLAINTEXT",
...              kafka_sasl_username="acme", kafka_sasl_password="pw")
>>> sorted(client_kwargs(s).items())  # doctest: +NORMALIZE_WHITESPACE
[('sasl_mechanism', 'SCRAM-SHA-512'), ('sasl_plain_password', 'pw'), ('sasl_plain_username', 'acme'),
 ('security_protocol', 'SASL_PLAINTEXT')]
>>> faust_credentials(s)
<SASLCredentials: username=acme>
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from core.kafka.admin import RESOURCE_NOT_FOUND, Acl, KafkaAdminError, create_acls, delete_acls_of, set_scram_credential
from core.tenant_names import check_tenant

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

    from core.settings import Settings

#: What a tenant's principal may do on the topics named ``<tenant>.*``; nothing else is granted.
TENANT_TOPIC_OPERATIONS = ("WRITE", "DESCRIBE")


@dataclass(frozen=True)
class KafkaLogin:
    """A resolved client security configuration."""

    protocol: str = "PLAINTEXT"
    mechanism: str = "SCRAM-SHA-512"
    username: str = ""
    password: str = ""
    cafile: str = ""

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def env(self) -> dict[str, str]:
        """The ``M1_*`` variables that reproduce this login in a child process."""
        return {"M1_KAFKA_SECURITY_PROTOCOL": self.protocol, "M1_KAFKA_SASL_MECHANISM": self.mechanism,
                "M1_KAFKA_SASL_USERNAME": self.username, "M1_KAFKA_SASL_PASSWORD": self.password,
                "M1_KAFKA_SSL_CAFILE": self.cafile}


def login_of(settings: Settings) -> KafkaLogin:
    """The login the settings configure, or the secured local broker's admin login (see above)."""
    configured = KafkaLogin(settings.kafka_security_protocol, settings.kafka_sasl_mechanism,
                            settings.kafka_sasl_username, settings.kafka_sasl_password.get_secret_value(),
                            settings.kafka_ssl_cafile)
    if configured != KafkaLogin(mechanism=configured.mechanism):
        return configured
    from core.kafka.local_broker import LocalKafka  # the local broker module uses this one for its probes

    broker = LocalKafka(settings)
    if settings.kafka_bootstrap not in ("", broker.recorded_bootstrap()):
        return configured  # another cluster
    return broker.admin_login() or configured


def ssl_context(login: KafkaLogin) -> ssl.SSLContext | None:
    """A TLS context trusting ``login.cafile`` (or the system's CAs), for TLS protocols only."""
    return create_ssl_context(cafile=login.cafile or None) if login.tls else None


def login_kwargs(login: KafkaLogin) -> dict[str, Any]:
    """aiokafka's security keyword arguments for ``login``."""
    kwargs: dict[str, Any] = {"security_protocol": login.protocol}
    if login.sasl:
        kwargs.update(sasl_mechanism=login.mechanism, sasl_plain_username=login.username,
                      sasl_plain_password=login.password)
    if login.tls:
        kwargs["ssl_context"] = ssl_context(login)
    return kwargs


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Security keyword arguments for any aiokafka client (producer, consumer, admin)."""
    return login_kwargs(login_of(settings))


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for the settings' login (None for PLAINTEXT)."""
    import faust

    login = login_of(settings)
    if login.sasl:
        return faust.SASLCredentials(username=login.username, password=login.password,
                                     mechanism=login.mechanism, ssl_context=ssl_context(login))
    if login.tls:
        return faust.SSLCredentials(ssl_context(login))
    return None


def admin_client(settings: Settings, **kwargs: Any) -> AIOKafkaAdminClient:
    """An aiokafka admin client for the settings' cluster and login (start it, then close it)."""
    return AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **client_kwargs(settings), **kwargs)


def tenant_acls(tenant: str) -> list[Acl]:
    """The ACLs of ``User:<tenant>``: its operations on the topics prefixed ``<tenant>.``."""
    return [Acl(f"User:{tenant}", op, f"{tenant}.") for op in TENANT_TOPIC_OPERATIONS]


def provision_tenant(settings: Settings, tenant: str) -> str:
    """Give ``tenant`` its Kafka identity on the settings' (secured) cluster; returns its password.

    Contract (``m1 tenants create`` calls it when the configured Kafka uses SASL):

    * ``tenant`` must be a valid tenant name (``core.tenant_names.check_tenant``, else ValueError);
    * the settings' login must be a super user or hold ALTER on the cluster (the local secured
      broker's admin login qualifies);
    * it creates or replaces the SCRAM user ``<tenant>`` (the settings' SCRAM mechanism, else
      SCRAM-SHA-512) with a new random password, which is returned and stored nowhere: show it
      once. Calling it again rotates the password;
    * it grants ``User:<tenant>`` WRITE and DESCRIBE on the PREFIXED topic pattern ``<tenant>.``
      and nothing else (no READ, no consumer groups, no other topic, no cluster operation);
    * it creates the tenant's input topics ``<tenant>.<base>`` (``core.kafka.topics.ensure_tenant_topics``);
    * it raises ``core.kafka.admin.KafkaAdminError`` (or an aiokafka error) when the cluster refuses.
    """
    from core.kafka.topics import ensure_tenant_topics  # core.kafka.topics builds its admin client here

    check_tenant(tenant)
    password = secrets.token_urlsafe(32)

    async def run() -> None:
        admin = admin_client(settings)
        await admin.start()
        try:
            await set_scram_credential(admin, tenant, _scram_mechanism(settings), password)
            await create_acls(admin, tenant_acls(tenant))
        finally:
            await admin.close()

    asyncio.run(run())
    ensure_tenant_topics(settings, tenant)
    return password


def deprovision_tenant(settings: Settings, tenant: str) -> None:
    """Remove ``tenant``'s SCRAM user and every ACL of ``User:<tenant>`` (its topics and their data
    stay); a tenant without them is left as it is. Its open connections may keep working until
    they reconnect, but with its ACLs gone every request is refused at once."""

    async def run() -> None:
        admin = admin_client(settings)
        await admin.start()
        try:
            await delete_acls_of(admin, f"User:{tenant}")
            try:
                await set_scram_credential(admin, tenant, _scram_mechanism(settings), None)
            except KafkaAdminError as exc:
                if exc.code != RESOURCE_NOT_FOUND:
                    raise
        finally:
            await admin.close()

    asyncio.run(run())


def _scram_mechanism(settings: Settings) -> str:
    mechanism = login_of(settings).mechanism
    return mechanism if mechanism.startswith("SCRAM-") else "SCRAM-SHA-512"
