"""``m1 tenants`` on a real secured broker: creating a tenant gives it a Kafka login (password shown
once) that writes its own topics; disabling removes the login, enabling makes a new one."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from aiokafka.errors import SaslAuthenticationFailed, TopicAuthorizationFailedError
from typer.testing import CliRunner

from m1.cli import app
from core.kafka.local_broker import LocalKafka
from core.settings import Settings, get_settings
from core.kafka.topics import tenant_topic
from tests.helpers import produce
from tests.test_kafka_security import connect, logged_in_as

pytestmark = pytest.mark.kafka


def test_tenant_lifecycle_drives_its_kafka_login(secure_kafka: LocalKafka, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    admin = secure_kafka.admin_login()
    env = {"M1_HOME": str(tmp_path), "M1_KAFKA_BOOTSTRAP": secure_kafka.bootstrap(), **admin.env()}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    runner = CliRunner()
    tenant = f"t{uuid.uuid4().hex[:8]}"
    try:
        created = runner.invoke(app, ["tenants", "create", tenant])
        assert created.exit_code == 0, created.output
        password = created.stdout.strip().splitlines()[-1]
        assert "shown only now" in created.stdout and len(password) >= 32
        as_tenant = logged_in_as(Settings(), tenant, password)
        assert produce(as_tenant, [(None, b"ok")], topic=tenant_topic(tenant, as_tenant.topic_metrics)) == 1
        with pytest.raises(TopicAuthorizationFailedError):
            produce(as_tenant, [(None, b"no")], topic=as_tenant.topic_metrics)
        assert password not in runner.invoke(app, ["tenants", "list"]).stdout

        assert runner.invoke(app, ["tenants", "disable", tenant]).exit_code == 0
        with pytest.raises(SaslAuthenticationFailed):
            connect(as_tenant)

        enabled = runner.invoke(app, ["tenants", "enable", tenant])
        assert enabled.exit_code == 0, enabled.output
        new_password = enabled.stdout.strip().splitlines()[-1]
        assert new_password != password
        with pytest.raises(SaslAuthenticationFailed):
            connect(as_tenant)
        connect(logged_in_as(Settings(), tenant, new_password))
    finally:
        get_settings.cache_clear()
