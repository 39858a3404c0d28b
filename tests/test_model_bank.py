"""Per-series models: bounded memory, checkpoints that restore, eviction that loses nothing."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from models.bank import ModelBank
from models.registry import DETECTORS, make_detector


def noisy(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(100.0, 2.0, n), 1_767_225_600.0 + 300.0 * np.arange(n)  # 5-minute steps


def test_checkpoint_restores_identical_scores() -> None:
    values, times = noisy(600)
    bank = ModelBank("robust")
    bank.score_learn("s", values[:400], times[:400])
    restored = ModelBank("robust")
    restored.restore(bank.checkpoint())
    assert restored.points("s") == 400
    np.testing.assert_array_equal(
        bank.score_learn("s", values[400:], times[400:]), restored.score_learn("s", values[400:], times[400:])
    )


def test_memory_is_bounded_and_evicted_series_resume() -> None:
    bank = ModelBank("zscore", max_series=3)
    values, times = noisy(50)
    for name in "abcde":
        bank.score_learn(name, values, times)
    assert len(bank) == 3 and bank.missing("abcde") == []  # a, b evicted but still held for the checkpoint
    bank.score_learn("a", values, times)
    assert bank.points("a") == 100
    rows = {series: points for series, points, _ in bank.checkpoint()}
    assert rows["b"] == 50 and rows["a"] == 100
    assert bank.missing(["b"]) == ["b"]  # after the checkpoint, b lives only in the store


def test_a_checkpoint_is_due_once_a_tenth_of_max_series_waits_evicted() -> None:
    bank = ModelBank("zscore", max_series=20)
    values, times = noisy(10)
    for i in range(21):
        bank.score_learn(f"s{i}", values, times)
    assert not bank.checkpoint_due()  # one evicted series waits: below 20 // 10
    bank.score_learn("s21", values, times)
    assert bank.checkpoint_due()
    assert len(bank.checkpoint()) == 22 and not bank.checkpoint_due()


def test_every_registered_detector_scores_a_spike_above_the_noise() -> None:
    values, times = noisy(800, seed=1)
    values[700] += 40.0  # 20 standard deviations
    for name in DETECTORS:
        scores = make_detector(name).score_learn_many(values, times)
        assert 0.0 <= scores.min() and scores.max() <= 1.0, name
        assert scores[700] > np.quantile(scores[300:700], 0.99), name


def test_flat_line_does_not_pin_scores_at_one() -> None:
    values, times = np.full(500, 5.0), 1_767_225_600.0 + 300.0 * np.arange(500.0)
    values[450] = 5.001
    for name in DETECTORS:
        scores = make_detector(name).score_learn_many(values, times)
        assert scores[:450].max() < 1.0 and scores[451:].max() < 1.0, name


def test_broken_state_is_replaced_by_a_fresh_model_instead_of_failing() -> None:
    """A saved row that does not unpickle, or a live model that raises, costs that series its
    history, not the batch: the points go to a fresh model."""
    bank = ModelBank("zscore")
    bank.restore([("a", 50, b"not a pickle"), ("b", 10, pickle.dumps(make_detector("zscore")))])
    assert "a" not in bank and bank.points("b") == 10
    bank.apply("b", 0, lambda model: setattr(model, "mean", None))  # state an old version might leave
    scores = bank.score_learn("b", np.array([1.0, 2.0]), np.array([0.0, 1.0]))
    assert len(scores) == 2 and bank.points("b") == 2  # a fresh detector learned the two points
    bank.factory = lambda: None  # a fresh model that fails too: the error reaches the caller
    bank.discard("b")
    with pytest.raises(AttributeError):
        bank.score_learn("b", np.array([1.0]), np.array([2.0]))
