"""The default ensemble and its components score identically on every path.

Batch, one point at a time, random batch splits and a pickle round trip mid-series
must give the same scores (the incremental sorted windows and the entropy term
tables are exact, not approximations), on a series with a daily season, spikes
and a level shift.
"""

from __future__ import annotations

import copy
import pickle
from collections import deque
from collections.abc import Callable

import numpy as np
import pytest

from models.base import Detector
from models.detectors.ensemble import Ensemble
from models.detectors.entropy import RelativeEntropy
from models.detectors.robust import RobustZ, SeasonalRobustZ
from models.sorted_window import SortedWindow

STEP = 300.0
DETECTORS: dict[str, Callable[[], Detector]] = {
    "robust": RobustZ,
    "seasonal_robust": SeasonalRobustZ,
    "relative_entropy": RelativeEntropy,
    "ensemble": Ensemble,
}


def series(n: int = 2600, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """Daily season (288 points a day) + noise, three spikes, a level shift at 2/3."""
    rng = np.random.default_rng(seed)
    t = 1_767_225_600.0 + STEP * np.arange(n)
    xs = 50 + 10 * np.sin(2 * np.pi * np.arange(n) / 288) + rng.normal(0, 1.0, n)
    xs[[700, 1500, 2300]] += [25.0, -30.0, 40.0]
    xs[2 * n // 3 :] += 8.0
    return np.round(xs, 1), t  # rounding makes ties, which the sorted windows must handle


def one_by_one(det: Detector, xs: np.ndarray, ts: np.ndarray) -> np.ndarray:
    out = []
    for x, t in zip(xs.tolist(), ts.tolist()):
        out.append(det.score_one(x, t))
        det.learn_one(x, t)
    return np.array(out)


def random_batches(det: Detector, xs: np.ndarray, ts: np.ndarray, seed: int, largest: int = 300) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(xs):
        b = int(rng.integers(1, largest + 1))
        out.append(det.score_learn_many(xs[i : i + b], ts[i : i + b]))
        i += b
    return np.concatenate(out)


@pytest.mark.parametrize("name", DETECTORS)
def test_batch_single_point_and_random_splits_agree(name: str) -> None:
    xs, ts = series()
    batch = DETECTORS[name]().score_learn_many(xs, ts)
    assert batch.max() > 0.5  # the series does make the detector fire
    np.testing.assert_allclose(one_by_one(DETECTORS[name](), xs, ts), batch, rtol=0, atol=1e-12)
    for seed in (0, 1):
        np.testing.assert_allclose(random_batches(DETECTORS[name](), xs, ts, seed), batch, rtol=0, atol=1e-12)
    # the stream's short calls (1-4 points) take the scalar path: the same scores
    np.testing.assert_allclose(random_batches(DETECTORS[name](), xs, ts, 2, largest=4), batch, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", DETECTORS)
@pytest.mark.parametrize("cut", [1, 137, 1200])
def test_pickle_mid_series_continues_identically(name: str, cut: int) -> None:
    xs, ts = series()
    det = DETECTORS[name]()
    det.score_learn_many(xs[:cut], ts[:cut])
    clone = pickle.loads(pickle.dumps(det))
    expected = det.score_learn_many(xs[cut:], ts[cut:])
    np.testing.assert_allclose(random_batches(clone, xs[cut:], ts[cut:], seed=cut), expected, rtol=0, atol=1e-12)


def test_fresh_detectors_pickle() -> None:
    xs, ts = series()
    for make in DETECTORS.values():
        clone = pickle.loads(pickle.dumps(make()))
        np.testing.assert_array_equal(clone.score_learn_many(xs, ts), make().score_learn_many(xs, ts))


def test_checkpoints_with_the_old_deque_state_still_load() -> None:
    """Checkpoints written before the sorted windows / entropy buffer held plain deques."""
    xs, ts = series()
    robust, entropy = SeasonalRobustZ(), RelativeEntropy()
    for det in (robust, entropy):
        det.score_learn_many(xs[:1500], ts[:1500])
    old_robust = dict(copy.deepcopy(robust.__dict__), hist=deque(robust.hist, maxlen=1000), values=deque(robust.values, maxlen=1000))
    old_entropy = {k: v for k, v in copy.deepcopy(entropy.__getstate__()).items() if k not in ("_buf", "_len", "_terms")}
    old_entropy["values"] = deque(entropy.values.tolist(), maxlen=entropy.reference + entropy.window - 1)
    for det, state in ((robust, old_robust), (entropy, old_entropy)):
        loaded = type(det).__new__(type(det))
        loaded.__setstate__(state)
        np.testing.assert_array_equal(loaded.score_learn_many(xs[1500:], ts[1500:]), det.score_learn_many(xs[1500:], ts[1500:]))


def test_sorted_window_matches_numpy_statistics() -> None:
    rng = np.random.default_rng(4)
    for size in (1, 2, 7, 50):
        v = np.round(rng.normal(0, 3, 300), 0)  # many ties
        w = SortedWindow(size)
        for i, x in enumerate(v.tolist()):
            w.push(x)
            h = v[max(0, i + 1 - size) : i + 1]
            med = float(np.median(h))
            assert (w.median(), w.mad(med), w.range()) == (med, float(np.median(np.abs(h - med))), float(np.ptp(h)))
    assert list(w) == v[-50:].tolist()


def test_the_walked_mad_split_is_the_binary_searched_one() -> None:
    # _kth_deviation walks from the split it found last time: after slides, jumps of the level
    # (the split moves far) and a window that refills, it must still give numpy's MAD exactly
    rng = np.random.default_rng(5)
    for size in (1, 2, 3, 4, 101, 1000):
        v = np.concatenate([rng.normal(0, 1, 1500), rng.normal(80, 1, 800), np.round(rng.normal(0, 20, 1200))])
        w = SortedWindow(size)
        for i, x in enumerate(v.tolist()):
            w.push(x)
            h = v[max(0, i + 1 - size) : i + 1]
            med = float(np.median(h))
            assert w.median_mad() == (med, float(np.median(np.abs(h - med)))) == (w.median(), w.mad(med))
        w._hint = 10**6  # any starting point gives the same split
        assert w.mad(w.median()) == float(np.median(np.abs(h - np.median(h))))
    assert np.isnan(SortedWindow(3, [1.0, float("nan")]).median_mad()).all()


def test_nan_in_the_window_gives_nan_not_a_corrupted_window() -> None:
    w = SortedWindow(3)
    w.extend([1.0, float("nan"), 2.0])
    assert np.isnan(w.median()) and np.isnan(w.range())
    w.extend([5.0, 3.0])  # the NaN slid out
    assert (w.median(), w.range()) == (3.0, 3.0)
