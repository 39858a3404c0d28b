"""The rarity gate: exact k-th largest over a sliding window, fail-open cap, and its effect in the ensemble."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from models.detectors.ensemble import Ensemble
from models.detectors.rarity import RarityGate


def brute_kth(history: list[float], k: int, horizon: int) -> float:
    recent = sorted(history[-horizon:], reverse=True)
    return recent[k - 1] if len(recent) >= k else -np.inf


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(0).exponential(1.0, 3000),  # noisy measures
        np.round(np.random.default_rng(1).normal(5, 2, 3000)),  # many ties
        np.linspace(100.0, 0.0, 600),  # decreasing: every measure stays a candidate
    ],
    ids=["noise", "ties", "decreasing"],
)
def test_kth_largest_matches_brute_force(values: np.ndarray) -> None:
    k, horizon = 5, 400
    gate = RarityGate(k=k, horizon=horizon, max_candidates=horizon)
    history: list[float] = []
    for v in values.tolist():
        expected = brute_kth(history, k, horizon)
        assert gate.kth_largest() == expected
        assert gate.learn(v) == (v > expected)
        history.append(v)


def test_candidates_stay_few_on_noise() -> None:
    gate = RarityGate(k=5, horizon=4000)
    for v in np.random.default_rng(2).exponential(1.0, 20000).tolist():
        gate.learn(v)
    assert len(gate.candidates) < 100


def test_cap_fails_open() -> None:
    """With the oldest candidates dropped the threshold can only fall: more passes, never fewer."""
    values = np.linspace(100.0, 0.0, 500).tolist()
    capped, exact = RarityGate(k=3, horizon=400, max_candidates=10), RarityGate(k=3, horizon=400, max_candidates=400)
    for v in values:
        assert capped.kth_largest() <= exact.kth_largest()
        assert capped.learn(v) >= exact.learn(v)
    assert len(capped.candidates) == 10


def test_nan_is_neither_judged_nor_remembered() -> None:
    gate = RarityGate(k=1, horizon=10)
    gate.learn(1.0)
    assert gate.learn(float("nan")) is False
    assert gate.seen == 1 and gate.kth_largest() == 1.0


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        RarityGate(k=0)
    with pytest.raises(ValueError):
        RarityGate(k=10, horizon=5)


def recurring_spikes(n: int = 6000, every: int = 150, height: float = 12.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    xs = 10 + rng.normal(0, 0.5, n)
    xs[600::every] += height
    return xs, 300.0 * np.arange(n)


def test_ensemble_stops_alerting_on_a_spike_that_keeps_recurring() -> None:
    """Equal spikes plus noise: the m-th is among the 5 largest so far with chance ~5/m per view."""
    xs, ts = recurring_spikes()
    spikes = np.arange(600, 6000, 150)
    gated = Ensemble().score_learn_many(xs, ts)
    ungated = Ensemble(rarity_k=0).score_learn_many(xs, ts)
    assert ungated[spikes].min() > 0.6  # without the gate every recurrence alerts
    assert gated[spikes[:5]].min() > 0.6  # the first five are rare
    assert (gated[spikes[15:]] > 0.6).mean() < 0.5  # then mostly a pattern (measured: 7 of 21)


def test_ensemble_still_alerts_on_a_larger_spike_among_recurring_ones() -> None:
    xs, ts = recurring_spikes()
    xs[5951] += 30.0  # beyond every recurring spike
    assert Ensemble().score_learn_many(xs, ts)[5951] > 0.6


def test_gated_ensemble_single_point_path_and_checkpoint_agree_with_batch() -> None:
    xs, ts = recurring_spikes(1800)
    batch = Ensemble().score_learn_many(xs, ts)
    det = Ensemble()
    det.score_learn_many(xs[:1000], ts[:1000])
    det = pickle.loads(pickle.dumps(det))
    single = []
    for x, t in zip(xs[1000:].tolist(), ts[1000:].tolist()):
        single.append(det.score_one(x, t))
        det.learn_one(x, t)
    np.testing.assert_allclose(batch[1000:], single, atol=1e-9)
