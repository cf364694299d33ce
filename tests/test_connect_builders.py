"""Connectivity builders beyond fixed probability: exact degrees and totals, uniformity of the
drawn subsets, distance profiles, weight/delay initialisers, reproducibility, memory, errors.

Statistical tolerances: counts of independent draws are Binomial; a test of ``m`` cells
allows 5 standard deviations per cell (two-sided p ≈ 5.7e-7 per cell, so < 1e-4 for the whole
family even with a hundred cells). The seeds are fixed, so the tests are deterministic; the
tolerances say how unlucky a seed would have to be to fail a correct builder.
"""

from __future__ import annotations

import itertools
import math
import tracemalloc

import numpy as np
import pytest

from brainsim import connect


def _pairs(e):
    return e.pre.astype(np.int64) * e.n_post + e.post


def _within(observed, expected, sd, n_sd=5.0):
    observed, expected, sd = (np.asarray(x, float) for x in (observed, expected, sd))
    return np.all(np.abs(observed - expected) <= n_sd * sd)


# ------------------------------------------------------------------ exact degrees, totals


DEGREE_BUILDERS = [
    (connect.fixed_indegree, "post", "pre"),
    (connect.fixed_outdegree, "pre", "post"),
]


@pytest.mark.parametrize("builder, fixed_side, partner_side", DEGREE_BUILDERS)
@pytest.mark.parametrize("allow_self", [True, False])
@pytest.mark.parametrize("k", [0, 1, 7, 30, 44])  # 30 and 44 > n/2: drawn as complements
def test_degree_builders_exact_and_distinct(builder, fixed_side, partner_side, k, allow_self):
    n = 45
    if not allow_self and k == 45:
        return
    e = builder(n, n, k, allow_self=allow_self, seed=k)
    fixed, partner = getattr(e, fixed_side), getattr(e, partner_side)
    assert e.pre.dtype == np.int32 and e.post.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(fixed, minlength=n), np.full(n, k))
    assert np.unique(_pairs(e)).size == e.n_synapses  # no multapses
    assert partner.min(initial=0) >= 0 and partner.max(initial=0) < n
    if not allow_self:
        assert not np.any(e.pre == e.post)
    # Grouped by the fixed side, partners ascending within a group.
    assert np.all(np.diff(fixed) >= 0)


@pytest.mark.parametrize("builder, fixed_side, partner_side", DEGREE_BUILDERS)
def test_degree_builders_rectangular(builder, fixed_side, partner_side):
    sizes = (30, 200) if builder is connect.fixed_indegree else (200, 30)
    e = builder(*sizes, 12, seed=3)
    n_fixed = e.n_post if fixed_side == "post" else e.n_pre
    np.testing.assert_array_equal(np.bincount(getattr(e, fixed_side), minlength=n_fixed), 12)
    assert getattr(e, partner_side).max() < 30
    assert np.unique(_pairs(e)).size == e.n_synapses


@pytest.mark.parametrize("builder, fixed_side, partner_side", DEGREE_BUILDERS)
@pytest.mark.parametrize("k", [2, 4])  # 2: direct draws with redraws; 4 > 6/2: complements
def test_degree_builders_draw_uniform_subsets(builder, fixed_side, partner_side, k):
    # 15 000 neurons each choose k of 6 partners: each of the C(6, k) = 15 subsets has
    # probability 1/15, its count is Binomial(15000, 1/15) (mean 1000, SD 30.6).
    n_rows, n_partners = 15_000, 6
    sizes = (n_partners, n_rows) if fixed_side == "post" else (n_rows, n_partners)
    e = builder(*sizes, k, seed=11)
    order = np.lexsort((getattr(e, partner_side), getattr(e, fixed_side)))
    chosen = getattr(e, partner_side)[order].reshape(n_rows, k)
    code = (2 ** chosen.astype(np.int64)).sum(axis=1)
    subsets = [sum(2**i for i in c) for c in itertools.combinations(range(n_partners), k)]
    counts = np.array([np.count_nonzero(code == s) for s in subsets])
    assert counts.sum() == n_rows
    p = 1 / len(subsets)
    assert _within(counts, n_rows * p, math.sqrt(n_rows * p * (1 - p)))


def test_degree_without_self_is_uniform_over_other_neurons():
    # 3000 builds of 6 neurons with in-degree 2 and no autapses: each of the 30 ordered pairs
    # i != j is a synapse with probability 2/5 in every build; frequency ~ Binomial(3000, 0.4).
    n, k, builds = 6, 2, 3000
    freq = np.zeros((n, n))
    rng = np.random.default_rng(0)
    for _ in range(builds):
        e = connect.fixed_indegree(n, n, k, allow_self=False, seed=rng)
        np.add.at(freq, (e.pre, e.post), 1)
    off = ~np.eye(n, dtype=bool)
    p = k / (n - 1)
    assert np.all(np.diag(freq) == 0)
    assert _within(freq[off], builds * p, math.sqrt(builds * p * (1 - p)))


def test_degree_builders_with_multapses():
    e = connect.fixed_indegree(10, 500, 15, allow_multapses=True, seed=2)  # k > n_pre is fine
    np.testing.assert_array_equal(np.bincount(e.post, minlength=500), 15)
    # 15 draws from 10 values always repeat one: every neuron has a multapse.
    per_post = np.sort((e.post.astype(np.int64) * 10 + e.pre).reshape(500, 15), axis=1)
    assert np.all(np.any(np.diff(per_post, axis=1) == 0, axis=1))
    e = connect.fixed_outdegree(50, 50, 5, allow_self=False, allow_multapses=True, seed=2)
    assert not np.any(e.pre == e.post)
    np.testing.assert_array_equal(np.bincount(e.pre, minlength=50), 5)


@pytest.mark.parametrize("allow_self", [True, False])
def test_fixed_total_number_exact_and_uniform(allow_self):
    n, total, builds = 8, 20, 300
    n_pairs = n * n if allow_self else n * (n - 1)
    freq = np.zeros((n, n))
    for s in range(builds):
        e = connect.fixed_total_number(n, n, total, allow_self=allow_self, seed=s)
        assert e.n_synapses == total
        assert np.unique(_pairs(e)).size == total
        np.add.at(freq, (e.pre, e.post), 1)
    # Each allowed pair is in the subset with probability total / n_pairs in every build.
    allowed = np.ones((n, n), bool) if allow_self else ~np.eye(n, dtype=bool)
    p = total / n_pairs
    assert _within(freq[allowed], builds * p, math.sqrt(builds * p * (1 - p)))
    assert np.all(freq[~allowed] == 0)


def test_fixed_total_number_large_extremes_and_multapses():
    e = connect.fixed_total_number(300, 200, 25_000, seed=1)
    assert e.n_synapses == 25_000 and np.unique(_pairs(e)).size == 25_000
    # Row-major output (sorted pairs).
    assert np.all(np.diff(_pairs(e)) > 0)
    full = connect.fixed_total_number(5, 4, 20, seed=0)  # every pair
    assert sorted(_pairs(full).tolist()) == list(range(20))
    assert connect.fixed_total_number(5, 4, 0, seed=0).n_synapses == 0
    m = connect.fixed_total_number(3, 3, 50, allow_multapses=True, allow_self=False, seed=4)
    assert m.n_synapses == 50 and not np.any(m.pre == m.post)


def test_fixed_probability_is_independent_of_block_size(monkeypatch):
    # Geometric skipping is consumed in blocks; the generator's stream (and so the edges and
    # the weights drawn after them) must not depend on the block size.
    ref = connect.fixed_probability(500, 400, 0.07, allow_self=True, seed=5,
                                    weight=connect.Normal(1.0, 0.2))
    monkeypatch.setattr(connect, "_BLOCK", 777)
    small = connect.fixed_probability(500, 400, 0.07, allow_self=True, seed=5,
                                      weight=connect.Normal(1.0, 0.2))
    np.testing.assert_array_equal(ref.pre, small.pre)
    np.testing.assert_array_equal(ref.post, small.post)
    np.testing.assert_array_equal(ref.weight, small.weight)


# ------------------------------------------------------------------- distance-dependent


def _min_image(dx, period):
    dx = np.abs(dx)
    return dx if period is None else np.minimum(dx % period, period - dx % period)


def _check_profile(e, pre_pos, post_pos, profile, box, allow_self=True, width=1.0):
    """Per distance bin, the number of synapses is a sum of independent Bernoulli(p(d))."""
    dims = pre_pos.shape[1]
    period = [None] * dims if box is None else np.broadcast_to(box, (dims,))
    sq = sum(
        _min_image(pre_pos[:, None, k] - post_pos[None, :, k], period[k]) ** 2
        for k in range(dims)
    )
    d = np.sqrt(sq)
    p = profile(d)
    connected = np.zeros(d.shape, bool)
    connected[e.pre, e.post] = True
    if not allow_self:
        np.fill_diagonal(p, 0.0)
    bins = np.floor(d / width).astype(int)
    for b in np.unique(bins):
        sel = bins == b
        if sel.sum() < 200:
            continue
        expected, var = p[sel].sum(), (p[sel] * (1 - p[sel])).sum()
        assert abs(connected[sel].sum() - expected) <= 5 * math.sqrt(var) + 1, (b, expected)
    return d


def test_distance_dependent_gaussian_on_periodic_grid():
    pos = connect.grid_positions(30, 30, spacing=1.0)
    profile = connect.Gaussian(p0=0.6, sigma=3.0)
    e = connect.distance_dependent(pos, pos, profile, box=(30.0, 30.0), allow_self=False,
                                   seed=1)
    assert not np.any(e.pre == e.post)
    d = _check_profile(e, pos, pos, profile, (30.0, 30.0), allow_self=False)
    assert d[0, 29] == 1.0 and d[0, 870] == 1.0  # neighbours across the boundary
    # Pairs more than 20 apart in the plane are close only across the boundary: they connect
    # as often as their wrapped distance says (and would almost never on an open grid).
    open_d = np.hypot(*(pos[:, None, k] - pos[None, :, k] for k in range(2)))
    far = open_d > 20
    p = np.where(far, profile(d), 0.0)
    got = np.count_nonzero(far[e.pre, e.post])
    assert got > 1000 and _within(got, p.sum(), math.sqrt((p * (1 - p)).sum()))


def test_distance_dependent_exponential_on_ring_and_open_boundaries():
    pos = connect.ring_positions(400)  # circumference 400
    profile = connect.Exponential(p0=0.8, length=10.0)
    ring = connect.distance_dependent(pos, pos, profile, box=400.0, seed=2)
    _check_profile(ring, pos, pos, profile, 400.0, width=2.0)
    line = connect.distance_dependent(pos, pos, profile, seed=2)  # open: a line, not a ring
    _check_profile(line, pos, pos, profile, None, width=2.0)
    # Neuron 0 and 399 are neighbours on the ring only: over the 20 neurons at each end,
    # ends connect across in the ring (many synapses expected) and hardly in the line.
    ends = lambda e: np.count_nonzero((e.pre < 20) & (e.post >= 380))  # noqa: E731
    assert ends(ring) > 20 * 2 and ends(line) <= 2


def test_distance_dependent_rectangular_and_reproducible():
    pre = connect.grid_positions(10, 12, spacing=0.5)
    post = np.random.default_rng(0).uniform(0, 6, (300, 2))
    prof = connect.Gaussian(1.0, 1.0)
    a = connect.distance_dependent(pre, post, prof, seed=7, weight=connect.Uniform(0, 1))
    b = connect.distance_dependent(pre, post, prof, seed=7, weight=connect.Uniform(0, 1))
    np.testing.assert_array_equal(_pairs(a), _pairs(b))
    np.testing.assert_array_equal(a.weight, b.weight)
    assert a.n_pre == 120 and a.n_post == 300 and a.pre.dtype == np.int32
    _check_profile(a, pre, post, prof, None, width=0.5)


# ------------------------------------------------------------------------- initialisers


def test_normal_uniform_and_lognormal_moments():
    rng = np.random.default_rng(0)
    n = 100_000
    x = connect.Normal(2.0, 0.5)(rng, n)
    assert abs(x.mean() - 2.0) < 5 * 0.5 / math.sqrt(n)
    assert abs(x.std() - 0.5) < 5 * 0.5 / math.sqrt(2 * n)
    u = connect.Uniform(1.0, 3.0)(rng, n)
    assert u.min() >= 1.0 and u.max() < 3.0
    assert abs(u.mean() - 2.0) < 5 * (2 / math.sqrt(12)) / math.sqrt(n)
    # LogNormal is parametrised by the mean and SD of the weights themselves.
    m, s = 0.5, 0.25
    w = connect.LogNormal(m, s)(rng, n)
    assert w.min() > 0
    assert abs(w.mean() - m) < 5 * s / math.sqrt(n)
    # SD of the sample SD ≈ (s/2) sqrt((kurtosis - 1)/n), kurtosis of this log-normal ≈ 8.0.
    var_ln = math.log1p((s / m) ** 2)
    kurt = math.exp(4 * var_ln) + 2 * math.exp(3 * var_ln) + 3 * math.exp(2 * var_ln) - 3
    assert abs(w.std() - s) < 5 * (s / 2) * math.sqrt((kurt - 1) / n)
    mu, sigma = connect.LogNormal(m, s).log_params
    assert abs(np.log(w).mean() - mu) < 5 * sigma / math.sqrt(n)


def test_clipped_clips_or_redraws():
    rng = np.random.default_rng(1)
    n = 50_000
    clipped = connect.Clipped(connect.Normal(0.0, 1.0), low=-1.0, high=1.0)(rng, n)
    assert clipped.min() == -1.0 and clipped.max() == 1.0
    # Clipping piles P(|Z| > 1) = 0.3173 of the mass onto the bounds.
    at_bounds = np.count_nonzero(np.abs(clipped) == 1.0)
    assert _within(at_bounds, n * 0.3173, math.sqrt(n * 0.3173 * 0.6827))
    redrawn = connect.Clipped(connect.Normal(0.0, 1.0), -1.0, 1.0, redraw=True)(rng, n)
    assert redrawn.min() > -1.0 and redrawn.max() < 1.0
    # Truncated standard normal on [-1, 1]: SD = sqrt(1 - 2 phi(1) / (2 Phi(1) - 1)) = 0.5396.
    assert abs(redrawn.std() - 0.5396) < 0.01
    with pytest.raises(ValueError, match="fewer than 1 in 10"):
        connect.Clipped(connect.Normal(0.0, 1.0), 50.0, 51.0, redraw=True)(rng, 10)


BUILDERS = [
    lambda **kw: connect.fixed_indegree(40, 40, 5, **kw),
    lambda **kw: connect.fixed_outdegree(40, 40, 5, **kw),
    lambda **kw: connect.fixed_total_number(40, 40, 200, **kw),
    lambda **kw: connect.fixed_probability(40, 40, 0.1, **kw),
    lambda **kw: connect.all_to_all(10, 10, **kw),
    lambda **kw: connect.one_to_one(10, **kw),
    lambda **kw: connect.distance_dependent(
        connect.ring_positions(40), connect.ring_positions(40), connect.Gaussian(0.5, 3.0), **kw
    ),
]


@pytest.mark.parametrize("build", BUILDERS)
def test_initialisers_work_as_weight_and_delay_of_every_builder(build):
    e = build(
        weight=connect.LogNormal(1.0, 0.3),
        delay=connect.Clipped(connect.Normal(1.5, 1.0), low=0.1),
        seed=3,
    )
    assert np.shape(e.weight) == (e.n_synapses,) and np.all(e.weight > 0)
    assert np.shape(e.delay) == (e.n_synapses,) and np.min(e.delay) >= 0.1
    c = build(weight=connect.Constant(2.5), seed=3)
    assert np.ndim(c.weight) == 0 and float(c.weight) == 2.5  # stored once
    again = build(
        weight=connect.LogNormal(1.0, 0.3),
        delay=connect.Clipped(connect.Normal(1.5, 1.0), low=0.1),
        seed=3,
    )
    np.testing.assert_array_equal(_pairs(e), _pairs(again))
    np.testing.assert_array_equal(e.weight, again.weight)
    np.testing.assert_array_equal(e.delay, again.delay)


@pytest.mark.parametrize(
    "build",
    [
        lambda s: connect.fixed_indegree(50, 50, 5, seed=s),
        lambda s: connect.fixed_outdegree(50, 50, 5, seed=s),
        lambda s: connect.fixed_total_number(50, 50, 100, seed=s),
    ],
)
def test_different_seeds_give_different_networks(build):
    assert not np.array_equal(_pairs(build(0)), _pairs(build(1)))


# ------------------------------------------------------------------------------ memory


@pytest.mark.parametrize(
    "build",
    [
        lambda n: connect.fixed_indegree(n // 100, n // 100, 100, seed=1),
        lambda n: connect.fixed_probability(n // 100, n // 100, 100 / (n // 100), seed=1),
        lambda n: connect.fixed_total_number(n // 100, n // 100, n, seed=1),
    ],
    ids=["fixed_indegree", "fixed_probability", "fixed_total_number"],
)
def test_build_memory_does_not_grow_beyond_the_result(build):
    # The builders work in blocks of 2^20 values: what they allocate beyond the result is a
    # constant (tens of MB), not a multiple of the synapses. Quadrupling the synapses from
    # 1.5e6 to 6e6 must leave it unchanged (one extra int64 copy of the indices would add 36 MB).
    extra = []
    for n in (1_500_000, 6_000_000):
        tracemalloc.start()
        e = build(n)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        extra.append(peak - e.pre.nbytes - e.post.nbytes)
        assert e.pre.dtype == np.int32
        del e
    assert extra[1] - extra[0] < 8 * 2**20, [x / 2**20 for x in extra]
    assert extra[1] < 64 * 2**20


# ------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: connect.fixed_indegree(10, 10, 11), ValueError, "`k` = 11 distinct"),
        (lambda: connect.fixed_indegree(10, 10, 10, allow_self=False), ValueError, "`k`"),
        (lambda: connect.fixed_outdegree(10, 5, 6), ValueError, "`k` = 6"),
        (lambda: connect.fixed_outdegree(10, 5, -1), ValueError, "`k`"),
        (lambda: connect.fixed_indegree(10, 5, 2, allow_self=False), ValueError, "n_pre == n_post"),
        (lambda: connect.fixed_indegree(0, 5, 2), ValueError, "`n_pre`"),
        (lambda: connect.fixed_total_number(3, 3, 10), ValueError, "`n_synapses`"),
        (lambda: connect.fixed_total_number(3, 3, 7, allow_self=False), ValueError, "`n_synapses`"),
        (lambda: connect.fixed_total_number(3, 3, 1.5), ValueError, "`n_synapses`"),
        (lambda: connect.Normal(0.0, -1.0), ValueError, "`std`"),
        (lambda: connect.LogNormal(0.0, 1.0), ValueError, "`mean`"),
        (lambda: connect.Uniform(2.0, 1.0), ValueError, "`high`"),
        (lambda: connect.Clipped(connect.Normal(0, 1), 1.0, 0.0), ValueError, "`high`"),
        (lambda: connect.Clipped(3.0), TypeError, "`initialiser`"),
        (lambda: connect.Gaussian(1.5, 1.0), ValueError, "`p0`"),
        (lambda: connect.Exponential(0.5, 0.0), ValueError, "`length`"),
        (lambda: connect.distance_dependent(np.zeros((3, 2)), np.zeros((3, 1)),
                                            connect.Gaussian(0.5, 1.0)), ValueError,
         "dimensions"),
        (lambda: connect.distance_dependent(np.zeros(3), np.zeros(3), lambda d: d + 2.0),
         ValueError, "`profile`"),
        (lambda: connect.distance_dependent(np.zeros(3), np.zeros(3), 0.5), TypeError,
         "`profile`"),
        (lambda: connect.distance_dependent(np.zeros(3), np.zeros(3), connect.Gaussian(0.5, 1.0),
                                            box=-1.0), ValueError, "`box`"),
        (lambda: connect.fixed_indegree(5, 5, 2, weight=lambda rng, k: np.ones(k + 1)),
         ValueError, "initialiser"),
    ],
)
def test_errors_name_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()
