"""ContextSurprise's contract: scores in [0, 1], deterministic, one path for stream and batch,
checkpoints that resume identically, bounded state, and it sees a change of pattern."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from models.detectors.context import ContextSurprise
from models.detectors.ensemble import Ensemble

STEP = 300.0


def pattern_change(n: int = 3000, change: int = 2400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two levels (0.28, 0.72, each +-0.02, inside one 16th of the range [0, 1]) alternating every
    12 points; from ``change`` a staircase 0.28, 0.5, 0.72 of 4 points a step: the range stays."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    xs = np.where((i // 12) % 2 == 0, 0.28, 0.72)
    xs[change:] = np.array([0.28, 0.5, 0.72])[(i[change:] // 4) % 3]
    xs = xs + rng.uniform(-0.02, 0.02, n)
    xs[:2] = [0.0, 1.0]  # the range is known from the start
    return xs, STEP * i


def test_scores_in_unit_interval_deterministic_and_single_point_path_agrees() -> None:
    xs, ts = pattern_change()
    batch = ContextSurprise().score_learn_many(xs, ts)
    assert np.all((batch >= 0) & (batch < 1))
    np.testing.assert_array_equal(batch, ContextSurprise().score_learn_many(xs, ts))
    det, single = ContextSurprise(), []
    for x, t in zip(xs.tolist(), ts.tolist()):
        single.append(det.score_one(x, t))
        det.learn_one(x, t)
    np.testing.assert_allclose(batch, single, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cut", [1, 1999, 2000, 2500])
def test_pickled_checkpoint_resumes_with_identical_scores(cut: int) -> None:
    xs, ts = pattern_change()
    det = ContextSurprise()
    det.score_learn_many(xs[:cut], ts[:cut])
    clone = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(det.score_learn_many(xs[cut:], ts[cut:]), clone.score_learn_many(xs[cut:], ts[cut:]))


def test_state_is_bounded() -> None:
    xs, ts = pattern_change(12000)
    det = ContextSurprise()
    det.score_learn_many(xs[:3000], ts[:3000])
    size = len(pickle.dumps(det))
    det.score_learn_many(xs[3000:], ts[3000:])
    assert len(pickle.dumps(det)) == size < 4096


def test_a_change_of_pattern_within_the_range_stands_out() -> None:
    xs, ts = pattern_change()
    z = ContextSurprise().z_learn_many(xs, ts)
    assert z[2400:2440].max() > 4.0 > z[600:2400].max()


def test_raw_measure_is_the_smoothed_transition_surprise() -> None:
    det = ContextSurprise(bins=2, alpha=0.5, halve_every=10**6)
    for x in [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]:  # levels 0 (first), 3 (above [0, 0]), then 1, 2, 1, 2
        det.learn_raw(x, 0.0)
    # previous level: 2 (x = 1.0); transitions seen from it: one, to level 1
    assert det.raw_one(0.0, 0.0) == pytest.approx(-np.log(1.5 / (1 + 0.5 * 4)))
    assert det.raw_one(2.0, 0.0) == pytest.approx(-np.log(0.5 / (1 + 0.5 * 4)))  # above the range: never seen
    assert np.isnan(ContextSurprise().raw_one(1.0, 0.0))


def test_counts_are_halved_so_a_new_pattern_becomes_normal() -> None:
    xs, ts = pattern_change(9000, change=2400)
    z = ContextSurprise().z_learn_many(xs, ts)
    assert z[8000:].max() < 4.0 < z[2400:2440].max()


def test_default_ensemble_uses_it_and_still_sees_a_spike() -> None:
    ens = Ensemble()
    assert any(isinstance(c, ContextSurprise) for c in ens.components)
    xs, ts = pattern_change()
    xs[2000] += 3.0
    scores = ens.score_learn_many(xs, ts)
    assert scores[2000] > 0.6 > scores[700:2000].max()


def test_one_outlier_stops_compressing_the_levels_after_two_blocks() -> None:
    xs, ts = pattern_change(9000, change=9000)
    xs[1000] = 50.0  # one outlier: every ordinary value falls into the lowest level for a while
    det = ContextSurprise()
    det.score_learn_many(xs[:1500], ts[:1500])
    assert {det._level(x) for x in (0.28, 0.72)} == {1}
    det.score_learn_many(xs[1500:4500], ts[1500:4500])  # two halvings later the outlier is forgotten
    assert det._level(0.28) != det._level(0.72)


def test_ensemble_gates_context_with_its_own_k_and_rarity_k_zero_turns_every_gate_off() -> None:
    gates = {type(c).__name__: c.gate for c in Ensemble().components}
    assert gates["ContextSurprise"].k == 3 and gates["RobustZ"].k == 5
    assert all(c.gate is None for c in Ensemble(rarity_k=0).components)
    assert [c.gate.k for c in Ensemble(rarity_k=7, view_rarity_k={}).components] == [7, 7, 7]
