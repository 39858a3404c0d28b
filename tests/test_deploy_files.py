"""docker-compose.yml cannot run here (no Docker engine); this keeps it, its wiring and its
security properties valid, and runs the ClickHouse users it mounts on the real engine.

The compose file is read the way ``docker compose`` reads it, with the .env that
deploy/make-env.py writes: ``${VAR:?message}`` is refused while VAR is unset or empty. The users file (deploy/clickhouse/users.d/m1-users.xml) is loaded
by the embedded engine (chdb) through the same configuration code as the server, in a
subprocess whose working directory holds a config.xml (clickhouse-local reads it from there).
chdb always runs as its `default` user, so each engine test makes `default` the user under
test: same profile, same grants.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import Settings
from sinks.clickhouse import NOT_FOR_TENANT_SQL

ROOT = Path(__file__).resolve().parent.parent
USERS_XML = ROOT / "deploy" / "clickhouse" / "users.d" / "m1-users.xml"
DOC = ROOT / "docs" / "enterprise-deploy.md"
SERVER_XML = ROOT / "deploy" / "clickhouse" / "config.d" / "m1-server.xml"
REQUIRED = re.compile(r"\$\{(\w+):\?[^}]+\}")


def make_env(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "deploy" / "make-env.py"), str(path)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The variables of a .env written by deploy/make-env.py."""
    path = tmp_path_factory.mktemp("env") / ".env"
    assert make_env(path).returncode == 0
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def compose(env: dict[str, str]) -> dict:
    """docker-compose.yml with its variables resolved from ``env``."""

    def resolve(m: re.Match) -> str:
        if not env.get(m[1]):
            raise KeyError(f"required variable {m[1]} is missing a value")
        return env[m[1]]

    text = REQUIRED.sub(resolve, (ROOT / "docker-compose.yml").read_text())
    assert "${" not in text.replace("$${", ""), "a variable without :? would start with an empty or default value"
    return yaml.safe_load(text)


def test_compose_services_are_wired_to_each_other(secrets) -> None:
    services = compose(secrets)["services"]
    assert {"kafka", "clickhouse", "worker", "grafana"} <= set(services)
    env = services["worker"]["environment"]
    assert env["M1_KAFKA_BOOTSTRAP"] in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert "@clickhouse:8123" in env["M1_CLICKHOUSE_URL"]
    assert set(services["worker"]["depends_on"]) == {"kafka", "clickhouse"}
    assert (ROOT / services["worker"]["build"] / "Dockerfile").exists()


OPERATOR_ONLY = {"CLICKHOUSE_ACCESS_PASSWORD"}  # in .env for the operator's commands, given to no container


def test_make_env_writes_every_secret_compose_requires_once(secrets, tmp_path: Path) -> None:
    assert set(secrets) == set(REQUIRED.findall((ROOT / "docker-compose.yml").read_text())) | OPERATOR_ONLY
    for name in OPERATOR_ONLY:
        assert not re.search(rf"\$\{{{name}[:}}]", (ROOT / "docker-compose.yml").read_text()), name
    for name, value in secrets.items():
        assert re.fullmatch(r"[0-9a-f]{32,64}", value), name  # random hex: URL-safe
        if name.endswith("_SHA256") and name != "CLICKHOUSE_ADMIN_PASSWORD_SHA256":
            assert value == hashlib.sha256(secrets[name.removesuffix("_SHA256")].encode()).hexdigest()
    path = tmp_path / ".env"
    done = make_env(path)
    admin = re.search(r"password \(shown once, not stored\): ([0-9a-f]{64})", done.stdout)[1]
    assert admin not in path.read_text()
    assert hashlib.sha256(admin.encode()).hexdigest() in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600
    before = path.read_text()
    assert make_env(path).returncode != 0 and path.read_text() == before  # secrets in use are kept


def test_compose_refuses_to_start_without_each_secret(secrets) -> None:
    for name in set(secrets) - OPERATOR_ONLY:
        with pytest.raises(KeyError, match=name):
            compose({**secrets, name: ""})


def test_worker_environment_is_understood_by_the_settings(secrets, monkeypatch) -> None:
    for name, value in compose(secrets)["services"]["worker"]["environment"].items():
        monkeypatch.setenv(name, str(value))
    settings = Settings()
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.clickhouse_url == f"http://m1:{secrets['CLICKHOUSE_M1_PASSWORD']}@clickhouse:8123"
    assert (settings.web_bind, settings.web_port) == ("0.0.0.0", 6066)


def published(service: dict) -> list[tuple[str | None, str]]:
    """(host address, host port) of each port the service publishes, short or long syntax."""
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append((port.get("host_ip"), str(port.get("published"))))
        else:
            parts = str(port).rsplit(":", 2)
            ports.append((parts[0] if len(parts) == 3 else None, parts[-2] if len(parts) > 1 else ""))
    return ports


def test_nothing_is_published_beyond_this_host(secrets) -> None:
    services = compose(secrets)["services"]
    assert published({"ports": ["8123:8123", "9000", {"target": 80, "published": 8080}]}) == [
        (None, "8123"), (None, ""), (None, "8080")]  # the cases a bind-to-all-interfaces takes
    for name, service in services.items():
        assert service.get("network_mode") != "host", name
        for host_ip, port in published(service):
            assert host_ip == "127.0.0.1", f"{name} publishes {port} on {host_ip or 'every interface'}"
    assert not published(services["clickhouse"]), "ClickHouse publishes no port at all"
    assert {port for service in services.values() for _, port in published(service)} == {"9094", "6066", "3000", "9090"}


def test_worker_grafana_and_prometheus_run_without_capabilities(secrets) -> None:
    for name in ("worker", "grafana", "prometheus"):  # ClickHouse's entrypoint needs root to drop to its own user
        service = compose(secrets)["services"][name]
        assert service["cap_drop"] == ["ALL"] and "no-new-privileges:true" in service["security_opt"], name


def test_each_service_reaches_only_what_it_needs(secrets) -> None:
    spec = compose(secrets)
    networks = {name: set(service["networks"]) for name, service in spec["services"].items()}
    assert networks == {"kafka": {"bus"}, "clickhouse": {"store"}, "worker": {"bus", "store", "metrics"},
                        "grafana": {"default", "store", "metrics"}, "prometheus": {"metrics"}}
    assert spec["networks"]["store"]["internal"] is True  # ClickHouse has no way out
    assert spec["networks"]["metrics"]["internal"] is True  # nor Prometheus


def test_grafana_has_no_anonymous_access_no_sign_up_and_no_default_admin(secrets) -> None:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["grafana"]["environment"]
    assert REQUIRED.fullmatch(raw["GF_SECURITY_ADMIN_PASSWORD"])[1] == "GRAFANA_ADMIN_PASSWORD"
    assert REQUIRED.fullmatch(raw["GF_SECURITY_SECRET_KEY"])
    env = compose(secrets)["services"]["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false" and env["GF_USERS_ALLOW_ORG_CREATE"] == "false"
    assert env["GF_SNAPSHOTS_EXTERNAL_ENABLED"] == "false"
    assert not any(k.startswith("GF_AUTH_ANONYMOUS_ORG") or k == "GF_AUTH_DISABLE_LOGIN_FORM" for k in env)


def test_grafana_mounts_and_dashboards_exist(secrets) -> None:
    for volume in compose(secrets)["services"]["grafana"]["volumes"]:
        assert (ROOT / volume.split(":")[0]).exists(), volume
    for path in (ROOT / "dashboards").glob("*.json"):
        dashboard = json.loads(path.read_text())
        assert dashboard["panels"] and all(p["targets"][0].get("rawSql") or p["targets"][0]["expr"] for p in dashboard["panels"])
        sources = {yaml.safe_load(f.read_text())["datasources"][0]["uid"]
                   for f in (ROOT / "dashboards/provisioning/datasources").glob("*.yml")}
        assert {p["datasource"]["uid"] for p in dashboard["panels"]} <= sources, path.name


def test_prometheus_scrapes_the_worker_with_a_monitoring_key_from_a_secret_file(secrets) -> None:
    spec = compose(secrets)
    prometheus = spec["services"]["prometheus"]
    config_mount = "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
    assert config_mount in prometheus["volumes"] and "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    [job] = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())["scrape_configs"]
    assert job["static_configs"] == [{"targets": [f"worker:{spec['services']['worker']['environment']['M1_WEB_PORT']}"]}]
    assert job["metrics_path"] == "/v1/metrics"
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "/run/secrets/monitoring_key"}
    assert prometheus["secrets"] == ["monitoring_key"]
    key_file = spec["secrets"]["monitoring_key"]["file"]
    assert (ROOT / key_file).parent.is_dir() and "*" in (ROOT / key_file).parent.joinpath(".gitignore").read_text()
    source = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    assert source["url"] == "http://prometheus:9090" and source["editable"] is False


def test_clickhouse_mounts_the_users_and_server_files(secrets) -> None:
    volumes = compose(secrets)["services"]["clickhouse"]["volumes"]
    assert f"./{USERS_XML.relative_to(ROOT)}:/etc/clickhouse-server/users.d/{USERS_XML.name}:ro" in volumes
    assert f"./{SERVER_XML.relative_to(ROOT)}:/etc/clickhouse-server/config.d/{SERVER_XML.name}:ro" in volumes
    env = compose(secrets)["services"]["clickhouse"]["environment"]
    hashes = re.findall(r'from_env="(\w+)"', USERS_XML.read_text())
    assert hashes and all(env[name] == secrets[name] for name in hashes), "each hash reaches ClickHouse from .env"
    assert not [name for name in env if name.endswith("PASSWORD")], "ClickHouse gets hashes, not passwords"


def test_the_data_source_is_the_read_only_user(secrets) -> None:
    source = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/clickhouse.yml").read_text())["datasources"][0]
    assert source["jsonData"]["username"] == "grafana" and source["editable"] is False
    assert source["secureJsonData"]["password"] == "${CLICKHOUSE_GRAFANA_PASSWORD}"  # Grafana expands it
    assert "CLICKHOUSE_GRAFANA_PASSWORD" in compose(secrets)["services"]["grafana"]["environment"]
    users = ET.parse(USERS_XML).getroot()
    profile = users.find(f"profiles/{users.find('users/grafana/profile').text}")
    assert profile.find("readonly").text == "1"


def test_users_file_keeps_secrets_out_and_limits_fixed() -> None:
    users = ET.parse(USERS_XML).getroot()
    for user in users.find("users"):
        password = user.find("password_sha256_hex")  # an unset hash stops the server; an unset password would not
        assert password is not None and password.get("from_env") and not (password.text or "").strip(), user.tag
        assert [p.get("remove") for p in user.findall("password")] in ([], ["remove"]), user.tag
        assert user.findtext("access_management", "0") == ("1" if user.tag == "default" else "0"), user.tag
    assert {ip.text for ip in users.findall("users/default/networks/ip")} == {"::1", "127.0.0.1"}
    profile = users.find("profiles/grafana_readonly")
    constraints = profile.find("constraints")
    for setting in profile:
        if setting.tag in ("readonly", "constraints", "max_execution_time"):
            continue
        assert constraints.find(f"{setting.tag}/const") is not None, f"{setting.tag} is fixed"
    timeout = constraints.find("max_execution_time")  # the data source plugin sets it on every query
    assert timeout.find("changeable_in_readonly") is not None and int(timeout.findtext("max")) <= 300
    server = ET.parse(SERVER_XML).getroot().find("access_control_improvements")
    assert server.findtext("settings_constraints_replace_previous") == "true"  # needed by changeable_in_readonly
    assert server.findtext("select_from_system_db_requires_grant") == "true"


def test_dockerfile_copies_every_package_and_drops_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in (p.rstrip("*") for p in packages):
        assert f"COPY {package} {package}" in dockerfile
    assert re.search(r"^USER m1$", dockerfile, re.M)


# -- the users on the real engine -------------------------------------------------------------

BASE_USERS = """<clickhouse>
  <profiles><default/></profiles>
  <quotas><default/></quotas>
  <users><default><password/><networks><ip>::/0</ip></networks><profile>default</profile><quota>default</quota></default></users>
</clickhouse>"""


def engine_dir(tmp: Path, user: str) -> Path:
    """A working directory where the embedded engine loads the deploy users, running as ``user``.

    One change to the deploy file: chdb cannot switch on the server setting that
    ``changeable_in_readonly`` needs (settings_constraints_replace_previous), so that one element
    is dropped; max_execution_time then stays bounded and cannot change under readonly=1."""
    work = tmp / f"as-{user}"
    (work / "users.d").mkdir(parents=True)
    (work / "config.d").mkdir()
    (work / "config.xml").write_text(
        f"<clickhouse><user_directories><users_xml><path>{work / 'users.xml'}</path></users_xml></user_directories></clickhouse>")
    (work / "config.d" / SERVER_XML.name).write_text(SERVER_XML.read_text())
    (work / "users.xml").write_text(BASE_USERS)
    (work / "users.d" / USERS_XML.name).write_text(USERS_XML.read_text().replace("<changeable_in_readonly/>", ""))
    definition = copy.deepcopy(ET.parse(USERS_XML).getroot().find(f"users/{user}"))
    definition.tag = "default"
    definition.set("replace", "replace")
    for password in [e for e in definition if e.tag.startswith("password")]:
        definition.remove(password)
    ET.SubElement(definition, "password")  # chdb logs in as `default` without a password
    act_as = ET.Element("clickhouse")
    ET.SubElement(act_as, "users").append(definition)
    (work / "users.d" / "zz-act-as.xml").write_bytes(ET.tostring(act_as))
    return work


def run_engine(work: Path, home: Path, statements: list[str], secrets: dict[str, str],
               migrate: bool = False) -> dict[str, Any]:
    """Each statement's result (its rows, or the engine's error) in a fresh process in ``work``,
    with ``secrets`` in its environment as compose gives them to the ClickHouse container."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **secrets}
    done = subprocess.run(
        [sys.executable, "-m", "tests.test_deploy_files", str(home), json.dumps(statements), "migrate" if migrate else ""],
        cwd=work, capture_output=True, text=True, timeout=300, env=env)
    if done.returncode:
        return {"engine": done.stderr}
    return json.loads(done.stdout.splitlines()[-1])


def main(home: str, statements: str, migrate: str) -> None:
    import clickhouse_connect

    from sinks.clickhouse import Store, connect

    if migrate:  # as the worker does it
        Store(connect(Settings(home=Path(home)))).migrate()
    client = clickhouse_connect.get_client(dsn=f"chdb://{Settings(home=Path(home)).chdb_path}")
    results = {}
    for sql in json.loads(statements):
        try:
            results[sql] = [list(row) for row in client.query(sql).result_rows]
        except Exception as exc:  # the engine's refusal is the result
            results[sql] = str(exc).splitlines()[0]
    print(json.dumps(results, default=str))


@pytest.fixture(scope="module")
def migrated_home(tmp_path_factory: pytest.TempPathFactory, secrets) -> tuple[Path, dict[str, Any]]:
    """The worker's user applies every DDL file from scratch and writes, then tries to leave m1."""
    tmp = tmp_path_factory.mktemp("deploy-engine")
    statements = [
        "INSERT INTO m1.metric_points (tenant, series, value) VALUES ('acme', 'acme|s', 1.0)",
        "INSERT INTO m1.model_state (series) VALUES ('acme|s')",
        "SELECT count() FROM m1.metric_points",
        "CREATE DATABASE elsewhere",
        "DROP DATABASE m1",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "CREATE USER intruder",
    ]
    return tmp / "home", run_engine(engine_dir(tmp, "m1"), tmp / "home", statements, secrets, migrate=True)


def test_worker_user_migrates_and_writes_m1_and_nothing_else(migrated_home) -> None:
    _, results = migrated_home
    assert "engine" not in results, results.get("engine")
    allowed = [sql for sql, result in results.items() if isinstance(result, list)]
    assert allowed == list(results)[:3], results
    for sql in list(results)[3:]:
        assert "ACCESS_DENIED" in results[sql], (sql, results[sql])


def test_grafana_user_reads_m1_and_can_change_nothing(migrated_home, secrets, tmp_path: Path) -> None:
    home, _ = migrated_home
    reads = ["SELECT count() FROM m1.metric_points", "SELECT count() FROM m1.forecasts FINAL",
             "SELECT 1 WHERE getSetting('readonly') = 1"]
    refused = {
        "SELECT count() FROM m1.model_state": "ACCESS_DENIED",  # pickled model checkpoints
        "SELECT count() FROM m1.subject_keys": "ACCESS_DENIED",  # the data subjects' keys
        "INSERT INTO m1.metric_points (series) VALUES ('x')": "ACCESS_DENIED",
        "ALTER TABLE m1.metric_points DELETE WHERE 1": "ACCESS_DENIED",
        "CREATE TABLE m1.x (a String) ENGINE = Memory": "ACCESS_DENIED",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')": "ACCESS_DENIED",
        "SELECT 1 SETTINGS readonly = 0": "READONLY",
        "SELECT 1 SETTINGS max_result_rows = 0": "READONLY",
        "SELECT 1 SETTINGS max_memory_usage = 0": "READONLY",
        "SELECT 1 SETTINGS additional_table_filters = {'m1.metric_points': '1'}": "READONLY",
    }
    results = run_engine(engine_dir(tmp_path, "grafana"), home, reads + list(refused), secrets)
    assert "engine" not in results, results.get("engine")
    assert all(isinstance(results[sql], list) for sql in reads), results
    assert results[reads[-1]] == [[1]], "the profile's readonly=1 is in force"
    for sql, code in refused.items():
        assert f"({code})" in results[sql], (sql, results[sql])


def test_tenant_access_login_manages_tenant_users_only(migrated_home, secrets, tmp_path: Path) -> None:
    """m1_access passes the privilege checks of every statement sinks/server_access.py runs to make a
    tenant's user (the engine then fails them only for having no SQL-managed user storage); the
    worker's own login passes none of them; and m1_access reaches no other user, role or database."""
    from sinks.clickhouse import QueryLimits
    from sinks.server_access import tenant_access_statements

    home, _ = migrated_home
    columns = {"metric_points": "tenant", "otel_traces": "Tenant"}
    provision = tenant_access_statements("m1", "acme", columns, QueryLimits(30, 1 << 30, 100_000), "pw")
    outside = ["CREATE USER intruder", "ALTER USER grafana IDENTIFIED BY 'x'", "DROP USER m1", "CREATE ROLE intruder",
               "CREATE ROW POLICY p ON system.users USING 1 TO m1_t_acme",
               "CREATE TABLE m1.x (a String) ENGINE = Memory", "INSERT INTO m1.metric_points (series) VALUES ('x')"]
    access = run_engine(engine_dir(tmp_path, "m1_access"), home, provision + outside, secrets)
    worker = run_engine(engine_dir(tmp_path, "m1"), home, provision, secrets)
    assert "engine" not in access and "engine" not in worker, (access.get("engine"), worker.get("engine"))
    for sql in provision:
        assert "ACCESS_DENIED" not in str(access[sql]), (sql, access[sql])
        assert not isinstance(worker[sql], list), (sql, "the worker's login must not manage access")
    assert sum("ACCESS_DENIED" in worker[sql] for sql in provision) >= 5  # the CREATE and ALTER statements
    for sql in outside:
        assert "ACCESS_DENIED" in str(access[sql]), (sql, access[sql])


def sql_literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def doc_sql_blocks() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)


def test_the_guides_sql_parses_and_covers_every_tenant_table(secrets, tmp_path: Path) -> None:
    """Every SQL statement of docs/enterprise-deploy.md parses on the engine, and the per-tenant
    Grafana user is granted exactly the tables that carry its row policy: those with a tenant
    column (``tenant``, or ``Tenant`` in the OTel tables), less the access log and the audit trail."""
    statements = [" ".join(sql.split()) for block in doc_sql_blocks() for sql in block.split(";") if sql.strip()]
    tenant_tables = ("SELECT table FROM system.columns WHERE database = 'm1' AND name IN ('tenant', 'Tenant') "
                     "AND table NOT IN (SELECT name FROM system.tables WHERE database = 'm1' AND engine LIKE '%View') ORDER BY table")
    checks = {f"SELECT formatQuery({sql_literal(sql)})": sql for sql in statements}
    results = run_engine(engine_dir(tmp_path, "m1"), tmp_path / "home", [tenant_tables, *checks], secrets, migrate=True)
    assert "engine" not in results, results.get("engine")
    for check, sql in checks.items():
        assert isinstance(results[check], list), (sql, results[check])
    block = DOC.read_text().split("<!-- per-tenant-grafana-sql")[1].split("```sql\n")[1].split("```")[0]
    granted = set(re.findall(r"GRANT SELECT ON m1\.(\w+) TO grafana_acme", block))
    policies = re.findall(r"CREATE ROW POLICY \w+ ON (.*?) USING (.*?);", " ".join(block.split()))

    def covered(restrictive: bool) -> set[str]:
        return {t.strip().removeprefix("m1.") for on, rest in policies if ("AS RESTRICTIVE" in rest) == restrictive
                for t in on.split(",")}

    expected = {table for [table] in results[tenant_tables]} - NOT_FOR_TENANT_SQL
    assert granted == covered(restrictive=False) == covered(restrictive=True) == expected


@pytest.mark.parametrize("value", ["", "0123abcd"], ids=["unset", "malformed"])
def test_clickhouse_does_not_start_without_a_users_password(value: str, secrets, tmp_path: Path) -> None:
    broken = {**secrets, "CLICKHOUSE_GRAFANA_PASSWORD_SHA256": value}
    results = run_engine(engine_dir(tmp_path, "m1"), tmp_path / "home", ["SELECT 1"], broken)
    assert "while parsing user 'grafana'" in results.get("engine", ""), results


if __name__ == "__main__":
    main(*sys.argv[1:4])
