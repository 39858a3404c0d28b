"""docker-compose.yml cannot run here (no Docker engine); this keeps it and its wiring valid."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from m1.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_services_are_wired_to_each_other() -> None:
    services = compose()["services"]
    assert {"kafka", "clickhouse", "worker", "grafana"} <= set(services)
    env = services["worker"]["environment"]
    assert env["M1_KAFKA_BOOTSTRAP"] in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert "@clickhouse:8123" in env["CLICKHOUSE_URL"]
    assert set(services["worker"]["depends_on"]) == {"kafka", "clickhouse"}
    assert (ROOT / services["worker"]["build"] / "Dockerfile").exists()


def test_worker_environment_is_understood_by_the_settings(monkeypatch) -> None:
    for name, value in compose()["services"]["worker"]["environment"].items():
        monkeypatch.setenv(name, str(value))
    settings = Settings()
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.clickhouse_url == "http://m1:m1@clickhouse:8123"
    assert settings.web_bind == "0.0.0.0"


def test_grafana_mounts_and_dashboards_exist() -> None:
    for volume in compose()["services"]["grafana"]["volumes"]:
        assert (ROOT / volume.split(":")[0]).exists(), volume
    for path in (ROOT / "dashboards").glob("*.json"):
        dashboard = json.loads(path.read_text())
        assert dashboard["panels"] and all(p["targets"][0]["rawSql"] for p in dashboard["panels"])


def test_dockerfile_copies_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("m1", "streams", "models", "sinks", "schemas", "traces"):
        assert f"COPY {package} {package}" in dockerfile
