"""Per-series models: bounded memory, checkpoints that restore, eviction that loses nothing and
leaves every tenant its fair share, state that loads only with the deployment's key."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    bank.restore([("a", 50, bank.seal("a", 50, b"not a pickle")),
                  ("b", 10, bank.seal("b", 10, pickle.dumps(make_detector("zscore"))))])
    assert "a" not in bank and bank.points("b") == 10
    bank.apply("b", 0, lambda model: setattr(model, "mean", None))  # state an old version might leave
    scores = bank.score_learn("b", np.array([1.0, 2.0]), np.array([0.0, 1.0]))
    assert len(scores) == 2 and bank.points("b") == 2  # a fresh detector learned the two points
    bank.factory = lambda: None  # a fresh model that fails too: the error reaches the caller
    bank.discard("b")
    with pytest.raises(AttributeError):
        bank.score_learn("b", np.array([1.0]), np.array([2.0]))


def touch(bank: ModelBank, series: str) -> None:
    bank.apply(series, 1, lambda model: model.append(1))


def test_a_burst_of_new_series_evicts_only_the_bursting_tenants_models() -> None:
    """Bank of 200: tenant a holds 100 live series, b bursts 10,000 new ones. The rule: a full bank
    evicts the least recently used series of the tenant holding the most live models, so a keeps
    all 100 (its fair share is 200 / 2) and b cycles through the other 100 slots."""
    bank = ModelBank("count", max_series=200, factory=list)
    for i in range(100):
        touch(bank, f"a|r|svc|m|i={i}")
    for i in range(10_000):
        touch(bank, f"b|r|svc|m|i={i}")
    assert all(f"a|r|svc|m|i={i}" in bank for i in range(100))
    assert bank.held("a") == 100 and bank.held("b") == 100 and len(bank) == 200
    assert all(f"b|r|svc|m|i={i}" in bank for i in range(9_900, 10_000))  # b keeps its most recent


def test_a_tenant_over_its_fair_share_gives_back_down_to_it_and_keeps_its_most_recent() -> None:
    bank = ModelBank("count", max_series=200, factory=list)
    for i in range(180):
        touch(bank, f"a|r|svc|m|i={i}")
    for i in range(1_000):
        touch(bank, f"b|r|svc|m|i={i}")
    assert bank.held("a") == 100 and bank.held("b") == 100
    assert all(f"a|r|svc|m|i={i}" in bank for i in range(80, 180))


def test_ties_evict_from_the_tenant_whose_least_recently_used_series_is_oldest() -> None:
    bank = ModelBank("count", max_series=4, factory=list)
    for series in ("a|1", "b|1", "a|2", "b|2"):
        touch(bank, series)
    touch(bank, "a|1")  # now b|1 is the oldest of all
    touch(bank, "c|1")
    assert [s for s in ("a|1", "a|2", "b|1", "b|2", "c|1") if s in bank] == ["a|1", "a|2", "b|2", "c|1"]


def test_one_tenant_is_plain_lru() -> None:
    bank = ModelBank("count", max_series=3, factory=list)
    for series in ("t|1", "t|2", "t|3", "t|1", "t|4", "t|5"):
        touch(bank, series)
    assert [s for s in ("t|1", "t|2", "t|3", "t|4", "t|5") if s in bank] == ["t|1", "t|4", "t|5"]


def test_state_sealed_with_another_key_altered_or_unsigned_is_never_unpickled() -> None:
    """Rows are bound to the bank's key, kind, series and points (a MAC checked before unpickling)."""
    bank = ModelBank("count", factory=list, key=b"k" * 32)
    touch(bank, "t|a")
    [(series, points, sealed)] = bank.checkpoint()
    altered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    rows = {"same key": (series, points, sealed), "another key": (series, points, sealed),
            "altered": (series, points, altered), "unsigned": (series, points, sealed[33:]),
            "moved to another series": ("t|b", points, sealed), "other points": (series, points + 1, sealed)}
    for case, row in rows.items():
        fresh = ModelBank("count", factory=list, key=b"x" * 32 if case == "another key" else b"k" * 32)
        fresh.restore([row])
        assert (row[0] in fresh) == (case == "same key"), case


@given(st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 11), st.booleans()), max_size=300),
       st.integers(1, 12))
@settings(max_examples=200, deadline=None)
def test_eviction_matches_the_rule_computed_naively(ops: list[tuple[str, int, bool]], max_series: int) -> None:
    """Any sequence of uses and discards: the bank holds exactly what the rule, evaluated by brute
    force over every tenant, says (evict the least recently used of the tenant holding the most;
    ties: the tenant whose least recently used is oldest)."""
    bank = ModelBank("count", max_series=max_series, factory=list)
    used: dict[str, int] = {}  # live series -> time of last use
    for clock, (tenant, n, discard) in enumerate(ops):
        series = f"{tenant}|{n}"
        if discard:
            bank.discard(series)
            used.pop(series, None)
            continue
        touch(bank, series)
        used[series] = clock
        while len(used) > max_series:
            by_tenant: dict[str, list[str]] = {}
            for s in used:
                by_tenant.setdefault(s.split("|")[0], []).append(s)
            victim = min(by_tenant.values(), key=lambda ss: (-len(ss), min(used[s] for s in ss)))
            del used[min(victim, key=used.__getitem__)]
        assert set(used) == {f"{t}|{i}" for t in "abcd" for i in range(12) if f"{t}|{i}" in bank}


@given(st.lists(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 7), st.integers(1, 3)), max_size=12),
                max_size=25), st.integers(1, 10))
@settings(max_examples=100, deadline=None)
def test_models_hands_out_what_apply_does(batches: list[list[tuple[str, int, int]]], max_series: int) -> None:
    """Batch after batch, ``models`` leaves the bank as ``apply`` one series at a time does: the
    same models live and evicted, the same points, the same order of use, the same checkpoint."""
    one, many = ModelBank("count", max_series=max_series, factory=list), ModelBank("count", max_series=max_series, factory=list)
    for batch in batches:
        counts = [(f"{tenant}|{i}", n) for tenant, i, n in batch]
        for i, model in enumerate(many.models(counts)):  # each used as it is handed out, as the fast path does
            model.append(i)
        for i, (series, n) in enumerate(counts):
            one.apply(series, n, lambda model: model.append(i))
        assert [(s, one.points(s)) for s in sorted(one._where)] == [(s, many.points(s)) for s in sorted(many._where)]
        assert [list(live) for live in one._tenants.values()] == [list(live) for live in many._tenants.values()]
        if len(batch) % 3 == 0:  # now and then a checkpoint: the same series were marked changed
            assert sorted(one.checkpoint()) == sorted(many.checkpoint())
    assert sorted(one.checkpoint()) == sorted(many.checkpoint())
