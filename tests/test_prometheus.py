"""A real Prometheus (Debian's package) scrapes a real worker's ``GET /v1/metrics``.

One worker and one Prometheus for the module. Prometheus runs on the deployment's own
configuration (deploy/prometheus/prometheus.yml, every second, the target and the key file
replaced) with a ``monitoring`` key, plus a job without a key that must be refused. The tests
then ask Prometheus' HTTP API what it stored, and run every panel of the pipeline-health
dashboard (dashboards/m1-pipeline-health.json) on it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from core.kafka.local_broker import free_port
from core.settings import Settings
from core.tenant_names import PLATFORM
from tests.helpers import isolated_settings, new_key, produce, start_worker, wait_for
from tests.test_metrics_path import points

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "dashboards" / "m1-pipeline-health.json"
POINTS, SERIES = 3000, 20
BAD = [b"{not json"] * 3 + [b'{"schema":"metric/1","ts":1767225600,"tenant":"x","region":"r","service":"s","value":1}'] * 2


@dataclass
class Scrape:
    """The running worker's settings and the URL of the Prometheus scraping it."""

    settings: Settings
    url: str

    def query(self, promql: str) -> dict:
        """``/api/v1/query`` at now; the answer's ``data`` (raises on a refused query)."""
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}", timeout=10) as r:
            answer = json.load(r)
        assert answer["status"] == "success", answer
        return answer["data"]

    def values(self, promql: str) -> dict[str, float]:
        """Each series of the instant vector ``promql``, by its labels, with its value."""
        return {json.dumps(s["metric"], sort_keys=True): float(s["value"][1]) for s in self.query(promql)["result"]}

    def targets(self) -> dict[str, dict]:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as r:
            return {t["labels"]["job"]: t for t in json.load(r)["data"]["activeTargets"]}


def prometheus_config(settings: Settings, key_file: Path) -> dict:
    """deploy/prometheus/prometheus.yml scraping this worker every second, and a job without a key."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    [job] = config["scrape_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{settings.web_port}"]}]
    job["authorization"]["credentials_file"] = str(key_file)
    anonymous = {k: v for k, v in job.items() if k != "authorization"} | {"job_name": "no-key"}
    config["scrape_configs"].append(anonymous)
    return config


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Scrape]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run scripts/install.sh (apt-get install prometheus)")
    home = tmp_path_factory.mktemp("prometheus")
    settings = isolated_settings(home / "worker", kafka_bootstrap)
    key_file = home / "monitoring.key"
    key_file.write_text(new_key(settings, PLATFORM, ["monitoring"]))
    key_file.chmod(0o600)
    (home / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config(settings, key_file)))
    port = free_port()
    worker = start_worker(settings)
    with open(home / "prometheus.log", "wb") as log:
        prometheus = subprocess.Popen(
            [binary, f"--config.file={home / 'prometheus.yml'}", f"--storage.tsdb.path={home / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        scrape = Scrape(settings, f"http://127.0.0.1:{port}")
        assert wait_for(lambda: _ready(scrape.url), timeout=30), (home / "prometheus.log").read_text()[-2000:]
        tenant = f"t-{uuid.uuid4().hex[:6]}"
        produce(settings, points(tenant, POINTS, series=SERIES) + [(None, bad) for bad in BAD])
        yield scrape
    finally:
        prometheus.terminate()
        prometheus.wait(30)
        worker.stop()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_prometheus_stores_what_the_worker_did(scrape: Scrape) -> None:
    worker = '{job="m1-worker"}'
    assert wait_for(lambda: scrape.values(f"m1_points_stored_total{worker}") and
                    max(scrape.values(f"m1_points_stored_total{worker}").values()) == POINTS, timeout=45), \
        scrape.values(f"m1_points_stored_total{worker}")
    assert max(scrape.values(f"m1_batch_seconds_count{worker}").values()) >= 1
    assert list(scrape.values(f'm1_live_models{{job="m1-worker",bank="detectors"}}').values()) == [SERIES]
    dead = {json.loads(k)["reason"]: v for k, v in scrape.values(f"m1_dead_letters_total{worker}").items()}
    assert dead == {"malformed_json": 3.0, "invalid": 2.0}
    assert wait_for(lambda: sorted(scrape.values(f"m1_consumer_lag_records{worker}").values()) == [0.0, 0.0], timeout=10), \
        scrape.values(f"m1_consumer_lag_records{worker}")  # both partitions, caught up
    assert {json.loads(k)["topic"] for k in scrape.values(f"m1_consumer_lag_records{worker}")} == {scrape.settings.topic_metrics}
    assert scrape.values(f'm1_store_insert_seconds_count{{job="m1-worker",table="metric_points"}}')
    assert 0 <= max(scrape.values(f"m1_checkpoint_age_seconds{worker}").values()) < 10  # every 0.5 s here


def test_a_scrape_without_the_key_is_refused(scrape: Scrape) -> None:
    assert wait_for(lambda: scrape.targets().get("no-key", {}).get("lastError"), timeout=15)
    refused, allowed = scrape.targets()["no-key"], scrape.targets()["m1-worker"]
    assert refused["health"] == "down" and "401" in refused["lastError"], refused
    assert allowed["health"] == "up", allowed


def test_every_dashboard_panel_query_parses_and_returns_data(scrape: Scrape) -> None:
    """Each target's PromQL, with Grafana's ``$__rate_interval`` at four scrape intervals or more."""
    assert wait_for(lambda: scrape.values("m1_points_stored_total") and
                    max(scrape.values("m1_points_stored_total").values()) == POINTS, timeout=45)
    time.sleep(2)  # a few scrapes after the last batch, so every rate() has two samples
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "m1-prometheus"}, panel["title"]
        for target in panel["targets"]:
            promql = target["expr"].replace("$__rate_interval", "30s")
            assert "$" not in promql, f"{panel['title']}: a variable the test does not model"
            result = scrape.query(promql)["result"]
            assert result, f"panel {panel['title']!r} ({target['refId']}) shows nothing: {promql}"
