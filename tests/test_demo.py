"""The main job, ``m1 demo``, end to end on the session's broker with its own worker."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console

from m1.demo import DemoOptions, run_demo
from m1.settings import Settings


def test_demo_stores_every_valid_point_dead_letters_the_rest_and_finds_injected_anomalies(
    make_settings: Callable[..., Settings],
) -> None:
    options = DemoOptions(duration=20.0, rate=600.0, tenants=2, regions=2, series=12, anomalies=6,
                          invalid_share=0.01, seed=3, keep_running=False)
    console = Console(record=True, width=120)
    summary = run_demo(make_settings(), options, console)
    assert summary.valid == 12 * round(20.0 * 600.0 / 12) and summary.invalid > 0
    assert summary.stored == summary.valid  # nothing valid lost, nothing stored twice (FINAL)
    assert summary.dead_lettered == summary.invalid and summary.older_dead_letters == 0
    assert summary.injected == 6 and summary.detected >= 3  # measured: 4 (drifts are slow to stand out)
    assert set(summary.detected_by_kind) <= {"spike", "level_shift", "drift"}
    assert summary.false_alerts <= 1
    assert summary.forecasts > 0 and summary.recommendations > 0  # cpu_pct and requests_per_s series
    assert "M1 demo summary" in console.export_text()
