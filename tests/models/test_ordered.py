"""InOrder: every point scored, only points later than all learned ones learned."""

from __future__ import annotations

import pickle

import numpy as np

from models.ordered import InOrder, fresh_mask
from models.registry import make_detector


def test_fresh_mask_handles_duplicates_late_points_and_empty_batches() -> None:
    assert fresh_mask([1.0, 2.0, 2.0, 1.5, 3.0]).tolist() == [True, True, False, False, True]
    assert fresh_mask([1.0, 2.0], last_ts=2.0).tolist() == [False, False]
    assert fresh_mask([]).tolist() == []


def test_learns_exactly_the_points_a_clean_stream_would() -> None:
    rng = np.random.default_rng(0)
    xs, ts = rng.normal(10, 1, 400), 60.0 * np.arange(400)
    xs[350] += 12.0
    clean = make_detector("ensemble")
    expected = clean.score_learn_many(xs, ts)
    model = InOrder(make_detector("ensemble"))
    model.score_learn_many(xs[:200], ts[:200])
    # a replay of 50 points, then the rest with a duplicate and a late point mixed in
    replay = model.score_learn_many(xs[150:200], ts[150:200])
    assert model.learned == 200 and len(replay) == 50 and np.all((replay >= 0) & (replay <= 1))
    model = pickle.loads(pickle.dumps(model))  # a checkpoint keeps the last learned time
    mixed_xs = np.concatenate([xs[200:300], [xs[250], xs[120]], xs[300:]])
    mixed_ts = np.concatenate([ts[200:300], [ts[250], ts[120]], ts[300:]])
    scores = model.score_learn_many(mixed_xs, mixed_ts)
    assert model.learned == 400 and model.last_ts == ts[-1]
    np.testing.assert_array_equal(np.delete(scores, [100, 101]), expected[200:])


def test_single_point_path_skips_stale_points() -> None:
    model = InOrder(make_detector("zscore"))
    for t in (1.0, 2.0, 2.0, 0.5, 3.0):
        model.score_one(5.0, t)
        model.learn_one(5.0, t)
    assert model.learned == 3 and model.last_ts == 3.0
