"""Connectivity builders: exact structure of deterministic patterns, Binomial statistics of
random ones, reproducibility and argument validation."""

from __future__ import annotations

import numpy as np
import pytest

from brainsim import connect


def _pairs(edges):
    return edges.pre * edges.n_post + edges.post


@pytest.mark.parametrize("allow_self", [True, False])
def test_fixed_probability_is_binomial(allow_self):
    n, p = 400, 0.05
    edges = connect.fixed_probability(n, n, p, allow_self=allow_self, seed=1)
    n_pairs = n * n if allow_self else n * (n - 1)
    # Total count ~ Binomial(n_pairs, p): within 5 SDs.
    mean, sd = n_pairs * p, np.sqrt(n_pairs * p * (1 - p))
    assert abs(edges.n_synapses - mean) < 5 * sd
    # Each pair at most once; indices in range; no i -> i without allow_self.
    assert np.unique(_pairs(edges)).size == edges.n_synapses
    assert edges.pre.min() >= 0 and edges.pre.max() < n
    assert edges.post.min() >= 0 and edges.post.max() < n
    if not allow_self:
        assert not np.any(edges.pre == edges.post)
    # In-degree and out-degree ~ Binomial(m, p) with m = n (or n - 1). Sample mean within 5
    # SEMs; sample variance within 5 SDs of its sampling distribution
    # (SD(s^2) ≈ sigma^2 sqrt(2/(n-1) + kurtosis_excess/n)).
    m = n if allow_self else n - 1
    var = m * p * (1 - p)
    kurt = (1 - 6 * p * (1 - p)) / var
    for degrees in (np.bincount(edges.post, minlength=n), np.bincount(edges.pre, minlength=n)):
        assert abs(degrees.mean() - m * p) < 5 * np.sqrt(var / n)
        assert abs(degrees.var(ddof=1) - var) < 5 * var * np.sqrt(2 / (n - 1) + kurt / n)


def test_fixed_probability_pairs_are_uniform():
    # Pool 50 seeds on a 20 x 20 grid: every pair's connection frequency ~ Binomial(50, p)/50.
    # With 400 pairs the most extreme frequency stays within 5 SDs (two-sided p ~ 2e-4 total).
    # This catches biases of the skipping trick used for allow_self=False (e.g. i -> i+1).
    n, p, seeds = 20, 0.3, 50
    for allow_self in (True, False):
        freq = np.zeros((n, n))
        for s in range(seeds):
            e = connect.fixed_probability(n, n, p, allow_self=allow_self, seed=s)
            np.add.at(freq, (e.pre, e.post), 1.0)
        freq /= seeds
        off = ~np.eye(n, dtype=bool)
        assert np.max(np.abs(freq[off] - p)) < 5 * np.sqrt(p * (1 - p) / seeds)
        if not allow_self:
            assert np.all(np.diag(freq) == 0)


def test_fixed_probability_extremes_are_exact():
    full = connect.fixed_probability(7, 5, 1.0, seed=0)
    assert sorted(_pairs(full).tolist()) == list(range(35))
    no_self = connect.fixed_probability(6, 6, 1.0, allow_self=False, seed=0)
    expected = [i * 6 + j for i in range(6) for j in range(6) if i != j]
    assert sorted(_pairs(no_self).tolist()) == expected
    assert connect.fixed_probability(7, 5, 0.0, seed=0).n_synapses == 0


def test_fixed_probability_rectangular_and_reproducible():
    a = connect.fixed_probability(300, 50, 0.1, seed=3, weight=lambda rng, k: rng.normal(1, 0.1, k))
    b = connect.fixed_probability(300, 50, 0.1, seed=3, weight=lambda rng, k: rng.normal(1, 0.1, k))
    c = connect.fixed_probability(300, 50, 0.1, seed=4)
    np.testing.assert_array_equal(a.pre, b.pre)
    np.testing.assert_array_equal(a.post, b.post)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert a.weight.shape == (a.n_synapses,)
    assert not (a.n_synapses == c.n_synapses and np.array_equal(a.pre, c.pre)
                and np.array_equal(a.post, c.post))
    assert a.pre.max() < 300 and a.post.max() < 50
    # A Generator is accepted as the seed and consumed.
    rng = np.random.default_rng(3)
    d1 = connect.fixed_probability(300, 50, 0.1, seed=rng)
    d2 = connect.fixed_probability(300, 50, 0.1, seed=rng)
    assert not np.array_equal(_pairs(d1)[:20], _pairs(d2)[:20])


def test_fixed_probability_errors():
    with pytest.raises(ValueError, match="`p`"):
        connect.fixed_probability(5, 5, 1.5)
    with pytest.raises(ValueError, match="n_pre == n_post"):
        connect.fixed_probability(5, 6, 0.1, allow_self=False)
    with pytest.raises(ValueError, match="`n_pre`"):
        connect.fixed_probability(0, 5, 0.1)


def test_all_to_all_and_one_to_one():
    e = connect.all_to_all(4, 3, weight=2.0, delay=0.5)
    assert e.n_synapses == 12
    assert sorted(_pairs(e).tolist()) == list(range(12))
    np.testing.assert_array_equal(e.weights_per_edge(), np.full(12, 2.0))
    e = connect.all_to_all(4, 4, allow_self=False)
    assert e.n_synapses == 12 and not np.any(e.pre == e.post)
    o = connect.one_to_one(5, weight=np.arange(5.0))
    np.testing.assert_array_equal(o.pre, np.arange(5))
    np.testing.assert_array_equal(o.post, np.arange(5))
    np.testing.assert_array_equal(o.weights_per_edge(), np.arange(5.0))
    assert (o.n_pre, o.n_post) == (5, 5)


def test_from_arrays_keeps_duplicates_and_values():
    e = connect.from_arrays([0, 0, 2], [1, 1, 0], n_pre=3, n_post=2, weight=[1.0, 2.0, 3.0],
                            delay=[0.1, 0.2, 0.3])
    assert e.n_synapses == 3
    np.testing.assert_array_equal(e.delay, [0.1, 0.2, 0.3])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pre=[0, 1], post=[0]), "equal length"),
        (dict(pre=[0, 3], post=[0, 1]), r"`pre` index 3 is out of range"),
        (dict(pre=[0, 1], post=[0, -1]), r"`post` index -1 is out of range"),
        (dict(pre=[0, 1], post=[0, 1], weight=[1.0, 2.0, 3.0]), "`weight`"),
        (dict(pre=[0, 1], post=[0, 1], weight=[1.0, np.nan]), "`weight`.*non-finite"),
        (dict(pre=[0, 1], post=[0, 1], delay=[0.1, -0.1]), "`delay`"),
        (dict(pre=[0, 1], post=[0, 1], n_pre=0), "`n_pre`"),
        (dict(pre=[0, 1], post=[0, 1], weight=lambda rng, k: np.ones(k + 1)), "initialiser"),
    ],
)
def test_from_arrays_validation(kwargs, message):
    args = dict(n_pre=3, n_post=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        connect.from_arrays(**args)
