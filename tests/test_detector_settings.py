"""The detector a worker builds follows M1_DETECTOR and its options; a bad option fails at start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from models.bank import ModelBank
from models.detectors.hst import HSTDetector
from sinks.clickhouse import Store, connect
from streams.metrics_pipeline import MetricsPipeline


def new_model(bank: ModelBank) -> Any:
    """A new series' model as the point-by-point definition (the bank may hold a compiled slot)."""
    return bank.export(bank.factory())


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = Store(connect(Settings(home=tmp_path_factory.mktemp("detector-settings"))))
    yield store
    store.close()


def pipeline_from_env(monkeypatch: pytest.MonkeyPatch, store: Store, tmp_path: Path, **env: str) -> MetricsPipeline:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return MetricsPipeline(Settings(home=tmp_path), store)


def test_hst_features_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, store: Store, tmp_path: Path) -> None:
    pipeline = pipeline_from_env(monkeypatch, store, tmp_path, M1_DETECTOR="hst", M1_HST_FEATURES="value, time_of_day")
    model = new_model(pipeline.bank).detector
    assert isinstance(model, HSTDetector) and model.features == ("value", "time_of_day")
    assert set(model._features(3.0, 0.0)) == {"value", "tod_sin", "tod_cos"}


def test_unknown_hst_feature_fails_at_start_and_names_the_known_ones(
    monkeypatch: pytest.MonkeyPatch, store: Store, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="unknown features \\['hour'\\].*time_of_day"):
        pipeline_from_env(monkeypatch, store, tmp_path, M1_DETECTOR="hst", M1_HST_FEATURES="value,hour")


def test_ensemble_rarity_gate_can_be_switched_off(monkeypatch: pytest.MonkeyPatch, store: Store, tmp_path: Path) -> None:
    default = new_model(pipeline_from_env(monkeypatch, store, tmp_path).bank).detector
    assert [c.gate.k for c in default.components] == [5, 5, 3]  # robust, seasonal_robust, context (its own k)
    off = new_model(pipeline_from_env(monkeypatch, store, tmp_path, M1_ENSEMBLE_RARITY_K="0").bank).detector
    assert all(c.gate is None for c in off.components)


def test_ensemble_components_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, store: Store, tmp_path: Path) -> None:
    pipeline = pipeline_from_env(monkeypatch, store, tmp_path, M1_ENSEMBLE_COMPONENTS="robust,holtwinters,hst,windowed_gaussian",
                                 M1_ENSEMBLE_RARITY_K="3")
    model = new_model(pipeline.bank).detector
    names = [type(c).__name__ for c in model.components]
    assert names == ["RobustZ", "HoltWintersResidual", "HSTDetector", "WindowedGaussian"]
    assert [c.gate.k if c.gate else None for c in model.components] == [3, 3, 3, None]  # window views are not gated
    with pytest.raises(ValueError, match="unknown ensemble components \\['iforest'\\]"):
        pipeline_from_env(monkeypatch, store, tmp_path, M1_ENSEMBLE_COMPONENTS="robust,iforest")
