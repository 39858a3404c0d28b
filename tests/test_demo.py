"""The main job, ``m1 demo``, end to end on the session's broker with its own worker."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console

from m1.demo import DemoOptions, run_demo
from m1.local_key import key_file, shown
from core.settings import Settings
from tenancy.registry import Registry


def test_demo_stores_every_valid_point_dead_letters_the_rest_and_finds_injected_anomalies(
    make_settings: Callable[..., Settings],
) -> None:
    options = DemoOptions(duration=20.0, rate=600.0, tenants=2, regions=2, series=12, anomalies=6,
                          invalid_share=0.01, seed=3, keep_running=False)
    console = Console(record=True, width=200)
    settings = make_settings()
    summary = run_demo(settings, options, console)
    assert summary.valid == 12 * round(20.0 * 600.0 / 12) and summary.invalid > 0
    assert summary.stored == summary.valid  # nothing valid lost, nothing stored twice (FINAL)
    assert summary.dead_lettered == summary.invalid and summary.older_dead_letters == 0
    assert summary.injected == 6 and summary.detected >= 3  # measured: 4 (drifts are slow to stand out)
    assert set(summary.detected_by_kind) <= {"spike", "level_shift", "drift"}
    assert summary.false_alerts <= 1
    assert summary.forecasts > 0 and summary.recommendations > 0  # cpu_pct and requests_per_s series
    text = console.export_text()
    assert "M1 demo summary" in text
    # Its queries went through the worker's API with a platform-admin key of its own, kept 0600 and shown by id only.
    key = key_file(settings, "demo").read_text().strip()
    assert key_file(settings, "demo").stat().st_mode & 0o777 == 0o600
    assert key != settings.api_key.get_secret_value() and key not in text and shown(key) in text
    registry = Registry.from_settings(settings)
    assert "platform-admin" in registry.verify_key(key).roles
    assert {"tenant-01", "tenant-02"} <= {t.name for t in registry.tenants()}
    registry.close()
