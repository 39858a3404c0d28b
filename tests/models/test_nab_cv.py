"""Leave-one-group-out NAB cross-validation: the test fold's labels never reach a choice."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from models.evaluation import nab
from models.evaluation.nab_cv import GRIDS, FoldResult, choose, cross_validate, grid_for, group_of

N = 1200
PROFILES = nab.DEFAULT_PROFILES


def stamps(n: int = N) -> np.ndarray:
    return np.datetime64("2020-01-01T00:00:00", "us") + np.arange(n) * np.timedelta64(5, "m")


def windows_at(starts: list[int], width: int = 40) -> list[tuple[np.datetime64, np.datetime64]]:
    ts = stamps()
    return [(ts[a], ts[a + width - 1]) for a in starts]


def corpus(poison: str | None = None, seed: int = 0) -> list[dict[str, nab.SeriesScores]]:
    """Two configurations scored on three groups of three series; ``poison``'s windows are moved."""
    rng = np.random.default_rng(seed)
    candidates: list[dict[str, nab.SeriesScores]] = [{}, {}]
    for g in ("a", "b", "c"):
        for k in range(3):
            name = f"{g}/s{k}.csv"
            starts = [300 + 200 * k, 800]
            noise = rng.uniform(0, 0.6, (2, N))
            for i, start in enumerate(starts):  # config 0 fires early and strongly, config 1 late and weaker
                noise[0, start + 2] = 0.9 - 0.05 * k
                noise[1, start + 30] = 0.7 + 0.03 * i
            if g == poison:
                starts = [250, 700, 1000]
            lay = nab.layout(stamps(), windows_at(starts))
            for c in (0, 1):
                candidates[c][name] = nab.SeriesScores(name, noise[c], lay)
    return candidates


def by_group(folds: list[FoldResult]) -> dict[str, FoldResult]:
    return {f.group: f for f in folds}


def test_group_is_the_first_path_component() -> None:
    assert group_of("realAWSCloudwatch/ec2_cpu.csv") == "realAWSCloudwatch"
    assert group_of("omi-1/omi-1_m05.csv") == "omi-1"


def test_poisoned_test_fold_labels_change_its_score_not_its_choices() -> None:
    clean = cross_validate(corpus(), PROFILES)
    poisoned = cross_validate(corpus(poison="a"), PROFILES)
    for profile in PROFILES:
        a, b = by_group(clean[profile])["a"], by_group(poisoned[profile])["a"]
        assert (a.choice, a.threshold) == (b.choice, b.threshold)
        assert a.score() != b.score()  # the poisoning was seen, by the scoring only
        # the same labels in a *training* fold do move the other folds' choices
        others = [(f.choice, f.threshold) for f in clean[profile] if f.group != "a"]
        assert others != [(f.choice, f.threshold) for f in poisoned[profile] if f.group != "a"]


def test_choice_is_the_best_training_configuration_and_threshold() -> None:
    candidates = corpus()
    train = [[c[n] for n in c if not n.startswith("a/")] for c in candidates]
    choice, threshold = choose(train, PROFILES["standard"])
    best = [nab.sweep(items, PROFILES["standard"])[1].max() for items in train]
    assert choice == int(np.argmax(best))
    assert nab.evaluate(train[choice], PROFILES["standard"], threshold)[0] == pytest.approx(max(best))
    fold = by_group(cross_validate(candidates, PROFILES)["standard"])["a"]
    assert (fold.choice, fold.threshold) == (choice, threshold)


def test_scores_at_nearby_thresholds_and_folds_without_windows() -> None:
    candidates = corpus()
    for c in candidates:  # group c without windows: no normalised score, but it counts in the pooled one
        for name in [n for n in c if n.startswith("c/")]:
            c[name] = nab.SeriesScores(name, c[name].scores, nab.layout(stamps(), []))
    folds = by_group(cross_validate(candidates, PROFILES, deltas=(-0.02, 0.02))["standard"])
    assert folds["c"].score() is None and folds["c"].windows == 0
    a = folds["a"]
    items = [candidates[a.choice][n] for n in candidates[0] if n.startswith("a/")]
    for d in (-0.02, 0.0, 0.02):
        assert a.raw[d] == pytest.approx(nab.evaluate(items, PROFILES["standard"], a.threshold + d)[0])


def test_grid_expands_declared_axes_over_the_configured_options() -> None:
    assert grid_for("zscore", {"x": 1}) == [{"x": 1}]
    grid = grid_for("ensemble", {"components": ["robust"], "rarity_k": 5})
    assert all(g["components"] == ["robust"] for g in grid)
    assert len(grid) == math.prod(len(v) for v in GRIDS["ensemble"].values()) > 1
    assert len({repr(sorted(g.items())) for g in grid}) == len(grid)  # every combination once
    assert grid_for("ensemble", {"rarity_k": 5}, use_grid=False) == [{"rarity_k": 5}]


def tiny_corpus(root, groups: tuple[str, ...], seed: int = 1) -> None:
    """``root/data/<group>/s.csv`` with a spike at 600 and ``root/labels/combined_windows.json``."""
    ts = stamps(800)
    labels = {}
    rng = np.random.default_rng(seed)
    for g in groups:
        (root / "data" / g).mkdir(parents=True)
        vals = rng.normal(10, 1, 800)
        vals[600:605] += 30
        rows = "\n".join(f"{str(t).replace('T', ' ')[:19]},{v}" for t, v in zip(ts, vals))
        (root / "data" / g / "s.csv").write_text("timestamp,value\n" + rows + "\n")
        labels[f"{g}/s.csv"] = [[str(ts[590]).replace("T", " "), str(ts[620]).replace("T", " ")]]
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(json.dumps(labels))


def test_cli_cv_on_a_tiny_corpus(tmp_path) -> None:
    from models.evaluation.cli import app

    tiny_corpus(tmp_path, ("g1", "g2"))
    (tmp_path / "w.json").write_text((tmp_path / "labels" / "combined_windows.json").read_text())
    args = ["nab", "--cv", "-d", "robust", "--data", str(tmp_path / "data"), "--labels", str(tmp_path / "w.json"),
            "--cache", str(tmp_path / "cache"), "--profile", "standard"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "robust std: mean" in first.output and "g1" in first.output
    assert list((tmp_path / "cache").glob("*.npy"))
    again = CliRunner().invoke(app, args)  # served from the cache: same numbers, nothing scored
    assert again.exit_code == 0 and "points scored" not in again.output
    summary = lambda out: [line for line in out.splitlines() if "std: mean" in line]  # noqa: E731
    assert summary(first.output) == summary(again.output)
    assert not math.isnan(float(summary(first.output)[0].split()[3]))


def test_cli_cv_over_two_corpora_keeps_their_groups_apart(tmp_path) -> None:
    from models.evaluation.cli import app

    tiny_corpus(tmp_path / "one", ("g1", "g2"))
    tiny_corpus(tmp_path / "two", ("g1",), seed=2)
    args = ["nab", "--cv", "-d", "robust", "--data", str(tmp_path / "one" / "data"), "--also", str(tmp_path / "two" / "data"),
            "--cache", str(tmp_path / "cache"), "--profile", "standard"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert all(f in result.output for f in ("one:g1", "one:g2", "two:g1"))

