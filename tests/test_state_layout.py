"""What the models pickle must not change without a new ``STATE_VERSION``.

The layout of trained reference models (every registered detector, an ensemble of every
component, the forecast path's per-series models for each forecaster) is recorded in
``tests/models/state_layout.json`` with the version it belongs to. After a deliberate change,
bump ``models.bank.STATE_VERSION`` and record again:

    M1_RECORD_STATE_LAYOUT=1 .venv/bin/python -m pytest tests/test_state_layout.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from core.settings import Settings
from models.bank import STATE_VERSION
from models.detectors.ensemble import COMPONENTS, Ensemble
from models.forecasting.registry import FORECASTERS
from models.registry import DETECTORS, make_detector
from models.state_layout import layout
from streams.forecast_pipeline import ForecastPipeline
from tests.test_forecast_path import MemoryStore, interleaved, records, series_points

LAYOUT_FILE = Path(__file__).parent / "models" / "state_layout.json"
RECORD = "M1_RECORD_STATE_LAYOUT=1 .venv/bin/python -m pytest tests/test_state_layout.py"


def trained_detectors() -> dict[str, Any]:
    """Every registered detector and an all-component ensemble, after a long batch and single points."""
    t = 300.0 * np.arange(700)
    x = 10 * np.sin(2 * np.pi * t / 86400) + np.random.default_rng(0).normal(0, 1, 700)
    x[650] += 30
    models: dict[str, Any] = {name: make_detector(name) for name in DETECTORS}
    models["ensemble of every component"] = Ensemble(components=list(COMPONENTS))
    for model in models.values():
        model.score_learn_many(x[:690], t[:690])
        for i in range(690, 700):
            model.score_learn_many(x[i : i + 1], t[i : i + 1])
    return models


def trained_forecast_models(home: Path) -> dict[str, Any]:
    """The forecast path's per-series models (forecaster, cost projector, replica planner) per
    forecaster, with the default risk planner and with the peak planner."""
    models = {}
    points = series_points("acme")
    for name in FORECASTERS:
        for planner in ("risk", "peak"):
            pipeline = ForecastPipeline(Settings(home=home, forecast_model=name, scaling_planner=planner), MemoryStore())
            pipeline.process(records(interleaved(points)))
            for metric, ps in points.items():
                models[f"forecast:{name} {metric}" + ("" if planner == "risk" else " planner=peak")] = \
                    pipeline.bank.apply(ps[0].series_key, 0, pipeline.bank.export)
    return models


def test_the_reference_models_hold_both_replica_planners(tmp_path: Path) -> None:
    models = trained_forecast_models(tmp_path)
    planners = {name: type(m.peak).__name__ for name, m in models.items() if m.peak is not None}
    assert planners == {"forecast:holtwinters requests_per_s": "RiskPlanner", "forecast:holtwinters cpu_pct": "RiskPlanner",
                        "forecast:snarimax requests_per_s": "RiskPlanner", "forecast:snarimax cpu_pct": "RiskPlanner",
                        "forecast:holtwinters requests_per_s planner=peak": "PeakForecaster",
                        "forecast:holtwinters cpu_pct planner=peak": "PeakForecaster",
                        "forecast:snarimax requests_per_s planner=peak": "PeakForecaster",
                        "forecast:snarimax cpu_pct planner=peak": "PeakForecaster"}
    # the risk planners have scores (the layout records the sorted window of them, not an empty one)
    assert all(len(m.peak.scores) > 0 for name, m in models.items() if type(m.peak).__name__ == "RiskPlanner")


def test_what_models_pickle_matches_the_recorded_layout_of_this_state_version(tmp_path: Path) -> None:
    current = {name: layout(model) for name, model in {**trained_detectors(), **trained_forecast_models(tmp_path)}.items()}
    if os.environ.get("M1_RECORD_STATE_LAYOUT"):
        LAYOUT_FILE.write_text(json.dumps({"state_version": STATE_VERSION, "models": current}, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(LAYOUT_FILE.read_text())
    assert recorded["state_version"] == STATE_VERSION, f"STATE_VERSION is new: record its layout ({RECORD})"
    changed = sorted(name for name in current.keys() | recorded["models"].keys()
                     if current.get(name) != recorded["models"].get(name))
    assert not changed, f"what {changed} pickle changed: bump models.bank.STATE_VERSION, then {RECORD}"


def test_layout_sees_a_new_attribute_and_a_changed_container() -> None:
    model = make_detector("robust")
    model.score_learn_many(np.arange(50.0), np.arange(50.0))
    before = layout(model)
    model.extra = 1.0
    assert layout(model) != before
    del model.extra
    assert layout(model) == before
    model.calibrator.mean = [model.calibrator.mean]  # a number that became a list
    assert layout(model) != before
