"""m1 tenants / keys / roles through typer's CliRunner, on a registry file of the test's own."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from m1.cli import app
from core.settings import Settings, get_settings
from tenancy.authn import AuthenticationError, Authenticator
from tenancy.registry import Registry
from tenancy.roles import PERMISSIONS, ROLES

KEY = re.compile(r"m1_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


@pytest.fixture
def m1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """Run ``m1 <args>`` in this process with M1_HOME in ``tmp_path``; returns the click Result."""
    monkeypatch.setenv("M1_HOME", str(tmp_path))
    monkeypatch.setenv("M1_KAFKA_BOOTSTRAP", "127.0.0.1:9")  # a plaintext cluster: no Kafka users to provision
    get_settings.cache_clear()
    runner = CliRunner()
    yield lambda *args: runner.invoke(app, list(args), env={"COLUMNS": "200"})
    get_settings.cache_clear()


def test_tenants_create_list_disable_enable(m1, tmp_path):
    created = m1("tenants", "create", "acme", "--points-per-second", "500", "--max-series", "2000")
    assert created.exit_code == 0, created.output
    assert "tenant acme enabled (quotas: max_series=2000, points_per_second=500)" in created.stdout
    assert m1("tenants", "create", "globex").exit_code == 0
    listed = m1("tenants", "list").stdout
    assert re.search(r"acme\s+│ enabled\s+│ max_series=2000, points_per_second=500", listed)
    assert "globex" in listed and "platform" in listed
    assert "disabled" in m1("tenants", "disable", "acme").stdout
    assert re.search(r"acme\s+│ disabled", m1("tenants", "list").stdout)
    assert Registry(tmp_path / "registry.db").tenant("acme").disabled
    assert "enabled" in m1("tenants", "enable", "acme").stdout
    assert not Registry(tmp_path / "registry.db").tenant("acme").disabled


@pytest.mark.parametrize("args, message", [
    (("tenants", "create", "Acme"), "invalid tenant name 'Acme'"),
    (("tenants", "create", "platform"), "tenant 'platform' exists"),
    (("tenants", "create", "acme", "--max-series", "0"), "quota max_series must be a positive finite number"),
    (("tenants", "disable", "globex"), "no tenant 'globex'"),
    (("tenants", "disable", "platform"), "cannot be disabled"),
    (("keys", "create", "--tenant", "globex", "--role", "viewer"), "no tenant 'globex'"),
    (("keys", "create", "--tenant", "platform", "--role", "root"), "unknown role 'root'"),
    (("keys", "create", "--tenant", "acme", "--role", "platform-admin"), "platform-admin keys belong to the 'platform'"),
    (("keys", "list", "--tenant", "globex"), "no tenant 'globex'"),
    (("keys", "revoke", "0123456789ab"), "no API key '0123456789ab'"),
])
def test_refusals_say_why_and_exit_2(m1, args, message):
    m1("tenants", "create", "acme")
    result = m1(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_a_key_is_printed_once_and_works_until_revoked(m1, tmp_path):
    m1("tenants", "create", "acme")
    created = m1("keys", "create", "--tenant", "acme", "--role", "viewer", "--role", "analyst", "--name", "grafana")
    assert created.exit_code == 0, created.output
    raw = created.stdout.strip()
    assert KEY.fullmatch(raw), "stdout holds the key alone, for scripts"
    assert "shown only this once" in created.stderr
    key_id = raw.split("_")[1]

    listed = m1("keys", "list").stdout + m1("keys", "list", "--tenant", "acme").stdout
    assert key_id in listed and "analyst, viewer" in listed and "grafana" in listed and "cli:" in listed
    assert raw.split("_", 2)[2] not in listed and not KEY.search(listed)
    assert key_id not in m1("keys", "list", "--tenant", "platform").stdout

    settings = Settings(home=tmp_path)
    authenticator = Authenticator(settings, Registry.from_settings(settings))
    assert authenticator.authenticate(f"Bearer {raw}").roles == {"viewer", "analyst"}
    revoked = m1("keys", "revoke", key_id)
    assert revoked.exit_code == 0 and f"API key {key_id} of tenant acme revoked" in revoked.stdout
    assert re.search(rf"{key_id} .*│ 20\d\d-\d\d-\d\d \d\d:\d\d:\d\dZ\s+│$", m1("keys", "list").stdout, re.M)
    with pytest.raises(AuthenticationError, match="revoked"):
        authenticator.authenticate(f"Bearer {raw}")


def test_disabling_a_tenant_refuses_its_keys(m1, tmp_path):
    m1("tenants", "create", "acme")
    raw = m1("keys", "create", "--tenant", "acme", "--role", "viewer").stdout.strip()
    settings = Settings(home=tmp_path)
    authenticator = Authenticator(settings, Registry.from_settings(settings))
    authenticator.authenticate(f"Bearer {raw}")
    m1("tenants", "disable", "acme")
    with pytest.raises(AuthenticationError, match="disabled"):
        authenticator.authenticate(f"Bearer {raw}")


def test_roles_list_shows_every_role_with_its_permissions(m1):
    result = m1("roles", "list")
    assert result.exit_code == 0
    rows = {}
    role = None
    for line in result.stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 2 and cells[1] in PERMISSIONS:
            role = cells[0] or role
            rows.setdefault(role, set()).add(cells[1])
    assert rows == {name: set(permissions) for name, permissions in ROLES.items()}


def test_on_a_clickhouse_server_a_new_tenant_gets_its_user_or_a_clear_error(m1, tmp_path, monkeypatch):
    from core.kafka.local_broker import free_port

    plain = m1("tenants", "create", "globex")
    assert plain.exit_code == 0 and "ClickHouse" not in plain.output  # embedded chdb: no users to make
    monkeypatch.setenv("M1_CLICKHOUSE_URL", f"http://default:pw@127.0.0.1:{free_port()}")  # nothing listens
    monkeypatch.setenv("M1_CLICKHOUSE_TENANT_SECRET", "s3cret")
    get_settings.cache_clear()
    result = m1("tenants", "create", "acme")
    assert result.exit_code == 1, result.output
    assert "the registry is updated, but ClickHouse refused or was unreachable for tenant 'acme'" in result.stderr
    assert "m1 tenants enable acme" in result.stderr
    assert not Registry(tmp_path / "registry.db").tenant("acme").disabled
