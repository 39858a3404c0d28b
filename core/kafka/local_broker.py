"""A real single-node Apache Kafka broker (KRaft mode) on 127.0.0.1, for the demo, tests and CI.

The server jars come from Maven Central through ``mvn dependency:copy-dependencies`` into
a cache directory (``M1_KAFKA_CACHE``), so only the first start downloads anything. The
broker's config, data, log and pid live under ``<M1_HOME>/kafka``. ``start`` is
idempotent: a broker that is already running and answering is reused.

``start(secure=True)`` (``m1 kafka start --secure``) gives the broker a SASL_PLAINTEXT listener
and a SASL_SSL one (``tls_port``; its certificate for 127.0.0.1 is signed by a CA of its own,
``<M1_HOME>/kafka/ca.pem``, see ``core.kafka.local_tls``), both SCRAM-SHA-512, the StandardAuthorizer
with ``allow.everyone.if.no.acl.found=false`` and one super user, ``User:admin``, whose random
password is written to ``<M1_HOME>/kafka/admin.password`` (mode 0600) and added as a SCRAM
credential when the storage is formatted. The controller listener (loopback, not advertised)
authenticates the broker with SASL/PLAIN as the same user.
:meth:`LocalKafka.admin_login` reads that login back; ``core.kafka.security`` lends it to every
client whose settings name no cluster and no login. A broker formatted secured stays secured.

A ``LocalKafka`` may also be given its own directory (``home``; several clusters on one machine,
see ``regions.cluster``), a listen address other than 127.0.0.1 (``host``, e.g. a veth address),
a network namespace to run in (``netns``: the java process is started as ``ip netns exec <ns>
java ...``) and extra ``server.properties`` lines (``extra_properties``, appended last so they win).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.kafka.security import KafkaLogin, login_kwargs
from core.kafka.local_tls import ensure_broker_tls, write_private

if TYPE_CHECKING:
    from core.settings import Settings

POM_TEMPLATE = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>m1-analytics</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{version}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>connect-mirror</artifactId><version>{version}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId><version>{version}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>
  </dependencies>
</project>
"""

PLAINTEXT_LISTENERS = """listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}
advertised.listeners=PLAINTEXT://{host}:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
"""

SECURE_LISTENERS = """listeners=SASL_PLAINTEXT://{host}:{port},SASL_SSL://{host}:{tls_port},\
CONTROLLER://{host}:{controller_port}
advertised.listeners=SASL_PLAINTEXT://{host}:{port},SASL_SSL://{host}:{tls_port}
listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT
inter.broker.listener.name=SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule \
  required username="{admin}" password="{password}";
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location={keystore}
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule \
  required username="{admin}" password="{password}" user_{admin}="{password}";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:{admin}
"""

#: The secured broker's super user (its password: ``LocalKafka.admin_password_file``).
ADMIN_USER = "admin"

SERVER_PROPERTIES = """process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{controller_port}
controller.listener.names=CONTROLLER
{listeners}log.dirs={data_dir}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=24
"""

LOG4J_PROPERTIES = """log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log_file}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
"""


class KafkaError(RuntimeError):
    """The local broker could not be fetched, started or stopped; the message says why."""


@dataclass
class BrokerState:
    """What ``start`` recorded about the running broker."""

    pid: int
    port: int
    controller_port: int
    secure: bool = False
    tls_port: int = 0  # the SASL_SSL listener of a secured broker
    host: str = "127.0.0.1"  # the address it listens on and advertises

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def tls_bootstrap(self) -> str:
        return f"{self.host}:{self.tls_port}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _accepts_connections(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists": read its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def terminate(pid: int, timeout: float = 30.0) -> bool:
    """Stop process ``pid`` (SIGTERM, then SIGKILL after ``timeout``) and wait until it is gone;
    ``False`` if it was not running."""
    if not _pid_alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    return True


class LocalKafka:
    """Fetches, starts, checks and stops the local broker described by ``settings``.

    ``home`` replaces ``<M1_HOME>/kafka`` as the broker's directory; ``host`` is the address it
    listens on and advertises; ``netns`` names a network namespace to run it in;
    ``extra_properties`` are appended to its ``server.properties``; ``heap`` is java's ``-Xmx``
    option (default: ``M1_KAFKA_HEAP`` or ``-Xmx768m``)."""

    def __init__(self, settings: Settings, *, home: Path | None = None, host: str = "127.0.0.1",
                 netns: str | None = None, extra_properties: dict[str, str] | None = None, heap: str | None = None):
        self.version = settings.kafka_version
        self.wanted_port = settings.kafka_port
        self.cache_dir = Path(os.environ.get("M1_KAFKA_CACHE", Path.home() / ".cache" / "m1-kafka")) / self.version
        self.dir = (home or settings.home / "kafka").resolve()
        self.host = host
        self.netns = netns
        self.extra_properties = dict(extra_properties or {})
        self.heap = heap or os.environ.get("M1_KAFKA_HEAP", "-Xmx768m")

    # -- paths --------------------------------------------------------------------------
    @property
    def libs(self) -> Path:
        return self.cache_dir / "libs"

    @property
    def state_file(self) -> Path:
        return self.dir / "broker.json"

    @property
    def log_file(self) -> Path:
        return self.dir / "server.log"

    @property
    def admin_password_file(self) -> Path:
        return self.dir / "admin.password"

    @property
    def ca_file(self) -> Path:
        """The CA certificate TLS clients of a secured broker trust (``M1_KAFKA_SSL_CAFILE``)."""
        return ensure_broker_tls(self.dir).ca_file

    # -- public API ---------------------------------------------------------------------
    def fetch(self) -> Path:
        """Download the broker jars into the cache (no-op when cached); returns the libs dir."""
        if (self.libs / f"kafka_2.13-{self.version}.jar").exists():
            return self.libs
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        pom = self.cache_dir / "pom.xml"
        pom.write_text(POM_TEMPLATE.format(version=self.version))
        tmp = self.cache_dir / "libs.partial"
        cmd = ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={tmp}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except FileNotFoundError as exc:
            raise KafkaError("Maven (mvn) is not installed; it fetches the Kafka jars") from exc
        if proc.returncode != 0:
            raise KafkaError(f"fetching Kafka {self.version} with Maven failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        tmp.rename(self.libs)
        return self.libs

    def status(self) -> BrokerState | None:
        """The running broker's state, or ``None`` when none is running and answering."""
        state = self._recorded()
        if state is not None and _pid_alive(state.pid) and _accepts_connections(state.port, state.host):
            return state
        return None

    def admin_login(self) -> KafkaLogin | None:
        """The super user's login of this broker if it was started secured, else ``None``."""
        state = self._recorded()
        if state is None or not state.secure:
            return None
        return KafkaLogin("SASL_PLAINTEXT", "SCRAM-SHA-512", ADMIN_USER, self.admin_password_file.read_text().strip())

    def recorded_bootstrap(self) -> str | None:
        """host:port this broker was last started on (running or not), or ``None``."""
        state = self._recorded()
        return None if state is None else state.bootstrap

    def bootstrap(self) -> str:
        """host:port of the running broker; ``KafkaError`` if none is running."""
        state = self.status()
        if state is None:
            raise KafkaError("no local Kafka broker is running: start one with `m1 kafka start` or set M1_KAFKA_BOOTSTRAP")
        return state.bootstrap

    def start(self, timeout: float = 120.0, secure: bool = False) -> BrokerState:
        """Start the broker (or reuse the running one) and wait until it serves requests.

        ``secure`` asks for SASL/SCRAM and ACLs (see the module's docstring); a broker that was
        formatted secured restarts secured whatever ``secure`` says."""
        running = self.status()
        if running is not None:
            if secure and not running.secure:
                raise KafkaError(f"a broker without security runs at {running.bootstrap}: stop it first (m1 kafka stop)")
            return running
        self.fetch()
        self.dir.mkdir(parents=True, exist_ok=True)
        port, controller_port, tls_port = self._ports()
        data_dir = self.dir / "data"
        formatted = (data_dir / "meta.properties").exists()
        secure = secure or (formatted and self.admin_password_file.exists())
        if secure and formatted and not self.admin_password_file.exists():
            raise KafkaError(f"the broker's data in {data_dir} was formatted without security; remove {self.dir} to start secured")
        config = self.dir / "server.properties"
        write_private(config, self._server_properties(port, controller_port, tls_port, data_dir, secure))
        (self.dir / "log4j.properties").write_text(LOG4J_PROPERTIES.format(log_file=self.log_file))
        if not formatted:
            scram = ["--add-scram", f"SCRAM-SHA-512=[name={ADMIN_USER},password={self._admin_password()}]"] if secure else []
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id(), "-c", str(config), *scram)
        with open(self.dir / "stdout.log", "ab") as out:
            proc = subprocess.Popen(
                self._netns_prefix() + self._java_cmd("kafka.Kafka", str(config)),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        state = BrokerState(pid=proc.pid, port=port, controller_port=controller_port, secure=secure,
                            tls_port=tls_port if secure else 0, host=self.host)
        self.state_file.write_text(json.dumps(state.__dict__))
        self._wait_ready(state, proc, timeout)
        return state

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``); ``False`` if none ran."""
        state = self._recorded()
        return state is not None and terminate(state.pid, timeout)

    # -- helpers ------------------------------------------------------------------------
    def _recorded(self) -> BrokerState | None:
        try:
            return BrokerState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _admin_password(self) -> str:
        """The super user's password: created once (0600), then read back."""
        if not self.admin_password_file.exists():
            write_private(self.admin_password_file, secrets.token_urlsafe(24))
        return self.admin_password_file.read_text().strip()

    def _server_properties(self, port: int, controller_port: int, tls_port: int, data_dir: Path, secure: bool) -> str:
        if secure:
            listeners = SECURE_LISTENERS.format(host=self.host, port=port, controller_port=controller_port, tls_port=tls_port,
                                                admin=ADMIN_USER, password=self._admin_password(),
                                                keystore=ensure_broker_tls(self.dir).keystore)
        else:
            listeners = PLAINTEXT_LISTENERS.format(host=self.host, port=port, controller_port=controller_port)
        extra = "".join(f"{key}={value}\n" for key, value in self.extra_properties.items())
        return SERVER_PROPERTIES.format(host=self.host, controller_port=controller_port, listeners=listeners,
                                        data_dir=data_dir) + extra

    def _ports(self) -> tuple[int, int, int]:
        """Reuse the recorded ports (clients keep their address across restarts), else pick:
        the client port, the controller's and the TLS listener's."""
        old = self._recorded()
        if old is None:
            return (self.wanted_port or free_port()), free_port(), free_port()
        return old.port, old.controller_port, old.tls_port or free_port()

    def _netns_prefix(self) -> list[str]:
        """``ip netns exec <ns>`` when the broker runs in a network namespace (``ip`` execs java:
        the recorded pid is the broker's own)."""
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def _java_cmd(self, main: str, *args: str) -> list[str]:
        log4j = f"-Dlog4j.configuration=file:{self.dir / 'log4j.properties'}"
        return ["java", self.heap, log4j, "-cp", f"{self.libs}/*", main, *args]

    def _java(self, main: str, *args: str) -> None:
        proc = subprocess.run(self._java_cmd(main, *args), capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise KafkaError(f"{main} failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")

    def _wait_ready(self, state: BrokerState, proc: subprocess.Popen, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise KafkaError(f"the broker exited with {proc.returncode}; see {self.log_file} and {self.dir / 'stdout.log'}")
            if _accepts_connections(state.port, state.host) and _metadata_ok(state.bootstrap, self.admin_login()):
                return
            time.sleep(0.5)
        raise KafkaError(f"the broker did not answer within {timeout:.0f}s; see {self.log_file}")


def cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    Never starting with ``-`` (as Kafka's own ``Uuid.randomUuid`` ensures): the storage tool
    would read such an id as an option and refuse to format (1 start in 64 failed before).
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _metadata_ok(bootstrap: str, login: KafkaLogin | None) -> bool:
    """True once the broker answers a metadata request (the controller has elected itself)."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    async def probe() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000,
                                    **login_kwargs(login or KafkaLogin()))
        try:
            await admin.start()
            await admin.list_topics()
            return True
        except Exception:
            return False
        finally:
            await admin.close()

    return asyncio.run(probe())
