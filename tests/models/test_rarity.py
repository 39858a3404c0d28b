"""The rarity gate: exact k-th largest over a sliding window, fail-open cap, and its effect in the ensemble."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from models.detectors.ensemble import Ensemble
from models.detectors.rarity import RarityGate


def brute_kth(history: list[float], k: int, horizon: int, block: int) -> float:
    """The k-th largest of the gate's window: the last horizon // block full blocks and the open one."""
    full = min(len(history) // block, horizon // block)
    window = history[len(history) - (full * block + len(history) % block):]
    recent = sorted(window, reverse=True)
    return recent[k - 1] if len(recent) >= k else -np.inf


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(0).exponential(1.0, 3000),  # noisy measures
        np.round(np.random.default_rng(1).normal(5, 2, 3000)),  # many ties
        np.linspace(100.0, 0.0, 900),  # decreasing
        np.sin(np.arange(3000) / 40.0),  # smooth waves, the robust z of a daily cycle
    ],
    ids=["noise", "ties", "decreasing", "waves"],
)
def test_kth_largest_matches_brute_force(values: np.ndarray) -> None:
    k, horizon, block = 5, 400, 50
    gate = RarityGate(k=k, horizon=horizon, block=block)
    history: list[float] = []
    for v in values.tolist():
        expected = brute_kth(history, k, horizon, block)
        assert gate.kth_largest() == expected
        assert gate.learn(v) == (v > expected)
        history.append(v)


def test_a_restored_gate_recomputes_its_cached_threshold() -> None:
    values = np.random.default_rng(3).exponential(1.0, 2000).tolist()
    gate = RarityGate(k=5, horizon=400, block=50)
    for v in values[:1000]:
        gate.learn(v)
    state = pickle.dumps(gate)
    assert b"_kth" not in state  # a cache, not state: checkpoints keep their layout
    restored = pickle.loads(state)
    assert [restored.learn(v) for v in values[1000:]] == [gate.learn(v) for v in values[1000:]]


def test_memory_is_k_values_per_block() -> None:
    gate = RarityGate(k=5, horizon=4000, block=250)
    for v in np.random.default_rng(2).exponential(1.0, 20000).tolist():
        gate.learn(v)
    assert len(gate.closed) == 16 and all(len(top) == 5 for top in gate.closed) and len(gate.open) <= 5


def test_nan_is_neither_judged_nor_remembered() -> None:
    gate = RarityGate(k=1, horizon=10, block=5)
    gate.learn(1.0)
    assert gate.learn(float("nan")) is False
    assert gate.filled == 1 and gate.kth_largest() == 1.0


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        RarityGate(k=0)
    with pytest.raises(ValueError):
        RarityGate(horizon=100, block=250)


def recurring_spikes(n: int = 6000, every: int = 150, height: float = 12.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    xs = 10 + rng.normal(0, 0.5, n)
    xs[600::every] += height
    return xs, 300.0 * np.arange(n)


def test_ensemble_stops_alerting_on_a_spike_that_keeps_recurring() -> None:
    """Equal spikes plus noise: the m-th is among the 5 largest so far with chance ~5/m per view."""
    xs, ts = recurring_spikes()
    spikes = np.arange(600, 6000, 150)
    views = ("robust", "seasonal_robust", "relative_entropy")  # the views it was measured with; each gated view adds a chance
    gated = Ensemble(views).score_learn_many(xs, ts)
    ungated = Ensemble(views, rarity_k=0).score_learn_many(xs, ts)
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
