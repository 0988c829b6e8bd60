"""The campaign model and an iteration's sets (vo_services/active_learning)."""
from __future__ import annotations

import numpy as np
import pytest

from retrspect.vo_services.active_learning import choose, fit, proportion_interval


def _rare_class(n=2000, d=8, positives=30, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = np.zeros(n, bool)
    y[:positives] = True
    x[y, 0] += 4.0                          # the class lies along one direction
    return x, y


def test_the_model_finds_a_rare_class_from_a_few_labels():
    x, y = _rare_class()
    rng = np.random.default_rng(1)
    train = np.concatenate([np.flatnonzero(y)[:5], rng.choice(np.flatnonzero(~y), 50)])
    scorer = fit(x[train], y[train])
    p = scorer(x)
    top = np.argsort(-p)[:30]
    assert y[top].mean() > 0.6                # chance: 30 / 2000
    assert np.all((p > 0) & (p < 1))
    assert abs(scorer.weights[0]) > 3 * np.abs(scorer.weights[1:]).max()
    # the version names the parameters: same labels, same version
    assert fit(x[train], y[train]).version == scorer.version
    assert fit(x[train[1:]], y[train[1:]]).version != scorer.version


def test_the_model_needs_both_kinds_of_label():
    x, y = _rare_class()
    with pytest.raises(ValueError, match="at least one 'yes' and one 'no'"):
        fit(x[:5], y[:5])


def test_an_iteration_shows_three_disjoint_sets_of_unlabelled_spectra():
    scores = np.linspace(0, 1, 101)
    labelled = np.zeros(101, bool)
    labelled[[50, 100]] = True
    sets = choose(scores, labelled, 21, np.random.default_rng(0))
    assert {k: len(v) for k, v in sets.items()} == {"uncertain": 7, "random": 7,
                                                   "candidates": 7}
    shown = np.concatenate(list(sets.values()))
    assert len(set(shown)) == 21 and not labelled[shown].any()
    assert set(sets["uncertain"]) == {47, 48, 49, 51, 52, 53, 46}
    assert set(sets["candidates"]) == set(range(93, 100))
    only = choose(scores, labelled, 10, np.random.default_rng(0), {"random": 1.0})
    assert len(only["random"]) == 10 and len(only["uncertain"]) == 0


def test_the_interval_of_a_random_set_with_no_positive():
    low, high = proportion_interval(0, 20)
    assert low == 0 and high == pytest.approx(1 - 0.025 ** (1 / 20), rel=1e-9)
    low, high = proportion_interval(3, 20)
    assert low < 3 / 20 < high


def test_similarity_scores_are_closeness_to_the_nearest_positive():
    from retrspect.vo_services.active_learning import similarity_scores
    x = np.random.default_rng(3).normal(size=(300, 5))
    positives = np.arange(0, 300, 3)          # more than one chunk of 64
    scores = similarity_scores(x, positives)
    nearest = np.linalg.norm(x[:, None] - x[None, positives], axis=2).min(1)
    np.testing.assert_allclose(scores, np.exp(-nearest / np.median(nearest)), atol=1e-6)
    assert np.allclose(scores[positives], 1.0, atol=1e-6)
