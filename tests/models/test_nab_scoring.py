"""NAB scoring pinned on small hand-made series."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from models.evaluation import nab

STD = nab.DEFAULT_PROFILES["standard"]


def stamps(n: int) -> np.ndarray:
    return np.datetime64("2020-01-01T00:00:00", "us") + np.arange(n) * np.timedelta64(5, "m")


def win(ts: np.ndarray, lo: int, hi: int) -> tuple[np.datetime64, np.datetime64]:
    return (ts[lo], ts[hi])


def series(n: int, windows: list[tuple[int, int]], fire: list[int], name: str = "c/s.csv") -> nab.SeriesScores:
    ts = stamps(n)
    scores = np.zeros(n)
    scores[fire] = 1.0
    return nab.SeriesScores(name, scores, nab.layout(ts, [win(ts, a, b) for a, b in windows]))


def test_scaled_sigmoid_values() -> None:
    assert nab.scaled_sigmoid(-1.0) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert nab.scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert nab.scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert nab.scaled_sigmoid(0.0) == 0.0
    assert nab.scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert nab.scaled_sigmoid(3.0) == -1.0 and nab.scaled_sigmoid(10.0) == -1.0
    arr = nab.scaled_sigmoid(np.array([-1.0, 0.0, 5.0]))
    assert np.allclose(arr, [0.98661, 0.0, -1.0], atol=1e-5)


def test_probationary_length_convention() -> None:
    assert nab.probationary_length(100) == 15
    assert nab.probationary_length(4032) == 604
    assert nab.probationary_length(5000) == 750
    assert nab.probationary_length(20000) == 750


def test_window_weights_first_point_worth_tp_weight() -> None:
    ts = stamps(100)
    lay = nab.layout(ts, [win(ts, 40, 49)])
    assert lay.tp[40] == pytest.approx(1.0)  # position -1 normalised by S(-1)
    assert lay.tp[49] == pytest.approx(nab.scaled_sigmoid(-0.1) / nab.MAX_TP)
    assert np.all(np.diff(lay.tp[40:50]) < 0)  # earlier is better
    assert (lay.window[40:50] == 0).all() and (lay.window[:40] == -1).all()
    assert lay.fp[10] == -1.0  # no preceding window: full FP cost
    # FP after the window: |i - right| / (width - 1)
    assert lay.fp[52] == pytest.approx(nab.scaled_sigmoid(3 / 9))


def test_earliest_detection_only_counts() -> None:
    early = series(100, [(40, 49)], fire=[41])
    both = series(100, [(40, 49)], fire=[41, 45, 48])
    late = series(100, [(40, 49)], fire=[48])
    r_early = nab.evaluate([early], STD, 0.5)[0]
    assert r_early == pytest.approx(nab.scaled_sigmoid(-0.9) / nab.MAX_TP)
    assert nab.evaluate([both], STD, 0.5)[0] == pytest.approx(r_early)
    assert nab.evaluate([late], STD, 0.5)[0] < r_early


def test_false_positive_weighting() -> None:
    near = series(200, [(40, 49)], fire=[51])
    far = series(200, [(40, 49)], fire=[150])
    before = series(200, [(100, 109)], fire=[60])
    fn = -STD["fnWeight"]
    assert nab.evaluate([near], STD, 0.5)[0] == pytest.approx(fn + 0.11 * nab.scaled_sigmoid(2 / 9))
    assert nab.evaluate([far], STD, 0.5)[0] == pytest.approx(fn - 0.11)
    assert nab.evaluate([before], STD, 0.5)[0] == pytest.approx(fn - 0.11)
    assert nab.evaluate([near], STD, 0.5)[0] > nab.evaluate([far], STD, 0.5)[0]


def test_probationary_period_is_not_scored() -> None:
    # 100 rows -> 15 probationary; a firing at row 5 is ignored, one at row 20 is an FP
    quiet = series(100, [(60, 69)], fire=[5])
    noisy = series(100, [(60, 69)], fire=[20])
    assert nab.evaluate([quiet], STD, 0.5)[0] == pytest.approx(-1.0)
    assert nab.evaluate([noisy], STD, 0.5)[0] == pytest.approx(-1.11)
    # a window entirely inside the probationary period is not counted at all
    hidden = series(100, [(2, 8)], fire=[])
    assert nab.evaluate([hidden], STD, 0.5) == (0.0, 0, 0, 0)


def test_normalisation_null_zero_perfect_hundred() -> None:
    null = [series(300, [(100, 119), (200, 219)], fire=[]), series(300, [(150, 169)], fire=[], name="c/t.csv")]
    perfect = [series(300, [(100, 119), (200, 219)], fire=[100, 200]), series(300, [(150, 169)], fire=[150], name="c/t.csv")]
    for name, cost in nab.DEFAULT_PROFILES.items():
        assert nab.score_profile(null, name, cost).normalized == pytest.approx(0.0)
        res = nab.score_profile(perfect, name, cost)
        assert res.normalized == pytest.approx(100.0)
        assert (res.precision, res.recall) == (1.0, 1.0)


def test_threshold_search_picks_the_best_threshold() -> None:
    ts = stamps(400)
    scores = np.zeros(400)
    scores[210] = 0.9  # early in the window: a true positive
    scores[[100, 300, 350]] = 0.7  # three false positives
    scores[230] = 0.5  # a late detection in the same window
    lay = nab.layout(ts, [win(ts, 200, 239)])
    items = [nab.SeriesScores("c/s.csv", scores, lay)]
    thresholds, totals = nab.sweep(items, STD)
    # every candidate agrees with a direct evaluation at that threshold
    for th, tot in zip(thresholds, totals):
        assert tot == pytest.approx(nab.evaluate(items, STD, th)[0])
    res = nab.score_profile(items, "standard", STD)
    assert res.threshold == pytest.approx(0.9)
    assert res.detected_windows == 1 and res.false_positives == 0
    # with FP cost zero, lower thresholds cost nothing but do not gain either; FN-heavy still prefers 0.9
    assert nab.score_profile(items, "x", {"tpWeight": 1, "fnWeight": 2, "fpWeight": 0.11}).threshold == pytest.approx(0.9)


def test_threshold_search_can_prefer_never_firing() -> None:
    scores = np.zeros(400)
    scores[[50, 100, 150, 300, 350]] = 0.8  # only false positives
    ts = stamps(400)
    items = [nab.SeriesScores("c/s.csv", scores, nab.layout(ts, [win(ts, 200, 239)]))]
    res = nab.score_profile(items, "standard", STD)
    assert res.normalized == pytest.approx(0.0) and res.false_positives == 0 and math.isinf(res.threshold)


def test_run_benchmark_on_a_tiny_corpus(tmp_path) -> None:
    data = tmp_path / "data" / "cat"
    data.mkdir(parents=True)
    ts = stamps(600)
    rng = np.random.default_rng(0)
    vals = rng.normal(10, 1, 600)
    vals[450:455] += 30
    with open(data / "one.csv", "w") as f:
        f.write("timestamp,value\n")
        for t, v in zip(np.datetime_as_string(ts, unit="s"), vals):
            f.write(f"{t.replace('T', ' ')},{v}\n")
    labels = tmp_path / "windows.json"
    w = [np.datetime_as_string(ts[i], unit="us").replace("T", " ") for i in (440, 470)]
    labels.write_text(json.dumps({"cat/one.csv": [w]}))
    runs = nab.run_benchmark(tmp_path / "data", labels, ["robust"], nab.DEFAULT_PROFILES, out_dir=tmp_path / "out", workers=1, progress=False)
    res = runs[0].results["standard"]
    assert res.windows == 1 and res.detected_windows == 1 and res.normalized > 50
    out = tmp_path / "out" / "robust" / "cat" / "robust_one.csv"
    lines = out.read_text().splitlines()
    assert lines[0] == "timestamp,value,anomaly_score,label" and len(lines) == 601
    assert sum(int(line.rsplit(",", 1)[1]) for line in lines[1:]) == 31


def test_names_written_in_nab_layout_have_no_underscore(tmp_path) -> None:
    """NAB's scorer splits result names on ``_``: every registry name is written without one."""
    from models.registry import DETECTORS

    ts = stamps(50)
    series_ = nab.Series("cat/my_file.csv", ts, np.arange(50.0))
    lay = nab.layout(ts, [])
    for detector in DETECTORS:
        name = nab.nab_name(detector)
        assert "_" not in name and name
        path = nab.write_results(tmp_path, detector, series_, np.zeros(50), lay)
        assert path.relative_to(tmp_path).parts == (name, "cat", f"{name}_my_file.csv")
        assert path.name.split("_", 1) == [name, "my_file.csv"]  # how NAB recovers detector and data file
    assert len({nab.nab_name(d) for d in DETECTORS}) == len(DETECTORS)
