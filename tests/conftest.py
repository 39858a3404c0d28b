"""Shared fixtures: a real Kafka broker for the session, and isolated pipeline settings.

The test process never opens a chdb data directory used by a worker (chdb allows one
process per directory, and one directory per process): it queries through the
worker's API (``POST /v1/query`` with the settings' platform-admin key), as ``m1 query`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.kafka.local_broker import LocalKafka
from core.settings import Settings
from sinks.clickhouse import Store, connect
from tests.helpers import isolated_settings


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a real single-node KRaft broker started for this test session."""
    broker = LocalKafka(Settings(home=tmp_path_factory.mktemp("kafka")))
    state = broker.start()
    yield state.bootstrap
    broker.stop()


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A second real broker, secured (``m1 kafka start --secure``: SASL/SCRAM-SHA-512, ACLs,
    super user ``admin``) in its own home; ``admin_login()`` gives the super user's login."""
    broker = LocalKafka(Settings(home=tmp_path_factory.mktemp("secure-kafka")))
    broker.start(secure=True)
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def one_worker_run(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> tuple[Path, dict, set, dict]:
    """The scale-out tests' reference, run once for the session: one worker over ``tests.test_scale_out.workload()``.
    Its root, under which the tests' groups run (they share its personal-data key, so they make the same
    series keys), then its anomalies, stored points and model states (``tests.test_scale_out.single_run``)."""
    from tests.test_scale_out import single_run, workload

    root = tmp_path_factory.mktemp("scale-out")
    return root, *single_run(root / "one", kafka_bootstrap, workload())


@pytest.fixture
def make_settings(tmp_path: Path, kafka_bootstrap: str) -> Callable[..., Settings]:
    return lambda **overrides: isolated_settings(tmp_path, kafka_bootstrap, **overrides)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A migrated embedded store of the test module's own (modules may define their own ``store``)."""
    store = Store(connect(Settings(home=tmp_path_factory.mktemp("store"))))
    store.migrate()
    yield store
    store.close()  # chdb: one data directory per process at a time


@pytest.fixture
def settings_store(settings: Settings) -> Iterator[Store]:
    """A migrated embedded store opened with the test module's own ``settings`` fixture, closed after the test."""
    store = Store(connect(settings))
    store.migrate()
    yield store
    store.close()
