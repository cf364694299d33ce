"""Window delivery: a projection's targets shifted into columns of a wider or narrower ring.

``procedural_deliver(post_offset=o, ring_width=W)`` adds the synapse with target ``t`` into
column ``t + o`` of a ring ``W`` wide when ``0 <= t + o < W`` and skips it otherwise;
``placed(o, W)`` of the Dense, Procedural and LearnableDelays connectivities does the same. The
truth everywhere is the unplaced delivery (or ``spikes @ to_dense()``) with its columns moved
by ``o`` and cut to ``[0, W)`` (``_windowed``, NumPy). Windows cover a population placed whole
in a merged group (``o >= 0``) and a device's share of it (``o < 0``, cut on either side, or
empty).

Tolerances: float64 sums of at most ~25 terms of magnitude <= 3 in another order: 1e-12.
Pallas kernels (interpret mode, float32) with constant weight 1 and binary spikes add integers:
exact. Gradients: float64, the jnp tangent against ``grad`` of the dense product, 1e-12.
"""

from __future__ import annotations

import contextlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brainsim.kernels import Implementation

import brainsim as bs
from brainsim import connect, kernels

N_PRE, N_POST, DT = 24, 20, 0.5
# (offset, width): placed whole at 0 and inside a wider ring, a device's window (negative
# offset, cut on the left, on both sides), cut on the right, and a window holding no target.
WINDOWS = [(0, N_POST), (7, 40), (-5, 8), (-13, 9), (12, 15), (-30, 5)]
native = pytest.mark.skipif(not kernels.native_cpu_available(), reason="no native kernels")


def _windowed(full, offset, width):
    """``full`` (``(..., N_POST)`` per neuron of the population) in ring columns: value ``t``
    at column ``t + offset`` of ``width`` where that column exists, zero elsewhere."""
    full = np.asarray(full)
    out = np.zeros(full.shape[:-1] + (width,), full.dtype)
    t = np.arange(full.shape[-1])
    ok = (t + offset >= 0) & (t + offset < width)
    out[..., t[ok] + offset] = full[..., t[ok]]
    return out


def _procedural(impl=Implementation.AUTO, replace=False, dtype=jnp.float64):
    if replace:  # multapses, constant weight 1: integer sums
        spec = connect.procedural_fixed_outdegree(N_PRE, N_POST, 30, weight=1.0, delay=1.0,
                                                  seed=6, replace=True)
    else:  # fixed probability without self-connections, uniform weights
        spec = connect.procedural_fixed_probability(
            N_PRE, N_PRE, 0.3, weight=connect.Uniform(-0.5, 1.5), delay=1.0, seed=5,
            allow_self=False)
    layout = bs.Procedural(implementation=impl)
    return layout.build(spec, DT, owner="test", round_delays=False, dtype=dtype)


def _spikes(n=N_PRE, seed=0):
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < 0.4, rng.uniform(0.5, 2.0, n), 0.0)


def _dense_of(conn):
    return np.asarray(eqx.filter_jit(conn.to_dense)(), np.float64)


def _expected_ring(ring, cursor, spikes, conn, matrix, offset, width):
    """The dense truth: ``spikes @ matrix`` (``conn.to_dense()``) in row
    ``(cursor + delay) mod D``, windowed."""
    out = np.array(ring, np.float64).reshape(-1, width)
    row = (cursor + conn.delay) % out.shape[0]
    out[row] += _windowed(np.asarray(spikes) @ matrix, offset, width)
    return out.ravel()


@pytest.mark.parametrize(
    "impl", [Implementation.REFERENCE, pytest.param(Implementation.NATIVE_CPU, marks=native)],
    ids=lambda i: i.value)
def test_procedural_window_equals_the_dense_product(x64, impl):
    """Through the connectivity's placement, which passes its window to the kernel."""
    conn = _procedural(impl)
    matrix = _dense_of(conn)
    spikes = jnp.asarray(_spikes())
    rng = np.random.default_rng(1)
    for offset, width in WINDOWS:
        ring = jnp.asarray(rng.normal(size=3 * width))
        placed = conn.placed(offset, width)
        assert (placed.n_post, placed.rule.n_post, placed.post_offset) == (width, N_PRE, offset)
        got = eqx.filter_jit(placed.deliver)(ring, 4, spikes)
        expected = _expected_ring(ring, 4, spikes, conn, matrix, offset, width)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12,
                                   err_msg=f"window {offset, width}")


@pytest.mark.parametrize(
    "impl", [Implementation.PALLAS_TRITON, Implementation.PALLAS_PORTABLE,
             Implementation.PALLAS_TPU], ids=lambda i: i.value)
def test_pallas_procedural_window_equals_the_dense_product(impl):
    """Interpret mode on CPU, a batch of spike vectors (every one-hot vector, an empty and an
    all-spiking one) under ``vmap``: one launch per window, integer sums compared exactly.
    Windows: a device's window cut on both sides, and the population inside a wider ring."""
    own = "tpu" if impl is Implementation.PALLAS_TPU else "gpu"
    elsewhere = jax.default_backend() not in ("cpu", own)  # interpret on the CPU then
    with jax.default_device(jax.devices("cpu")[0]) if elsewhere else contextlib.nullcontext():
        _check_pallas_windows(impl)


def _check_pallas_windows(impl):
    conn = _procedural(impl, replace=True, dtype=jnp.float32)
    rule = conn.rule
    spikes = np.concatenate([np.eye(N_PRE), np.zeros((1, N_PRE)), np.ones((1, N_PRE))])
    for offset, width in [(-5, 8), (7, 40)]:
        ring = np.zeros(3 * width, np.float32)

        def one(s, offset=offset, width=width, ring=ring):
            return kernels.procedural_deliver(
                ring, 4, s, conn.weight_loc, None, None, n_post=rule.n_post,
                fan_out=rule.fan_out, seed=rule.seed, replace=True, delay=conn.delay,
                post_offset=offset, ring_width=width, capacity=5, implementation=impl)

        got = np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(spikes, jnp.float32)))
        matrix = _dense_of(conn)
        expected = np.stack([_expected_ring(ring, 4, s, conn, matrix, offset, width)
                             for s in spikes])
        np.testing.assert_array_equal(got, expected, err_msg=f"window {offset, width}")
        assert got[-1].sum() > 0


@pytest.mark.parametrize(
    "impl", [Implementation.REFERENCE, pytest.param(Implementation.NATIVE_CPU, marks=native)],
    ids=lambda i: i.value)
def test_procedural_window_gradients_equal_the_dense_product(x64, impl):
    """``grad`` of a loss through the placed delivery (row cleared first, as a network does)
    with respect to spikes, weight loc and scale equals the dense product's; silent neurons
    get their gradient too."""
    conn = _procedural(impl)
    spikes = jnp.asarray(_spikes(seed=2))
    rng = np.random.default_rng(3)
    leaves = lambda c: (c.weight_loc, c.weight_scale)  # noqa: E731
    for offset, width in [(-5, 8), (7, 40), (0, N_POST)]:
        ring = jnp.asarray(rng.normal(size=3 * width))
        cot = jnp.asarray(rng.normal(size=3 * width))
        placed = conn.placed(offset, width)

        def loss(s, w, placed=placed, ring=ring, cot=cot):
            c = eqx.tree_at(leaves, placed, w)
            return jnp.sum(cot * c.clear_and_deliver(ring, 4, s, after=()))

        def dense_loss(s, w, offset=offset, width=width, ring=ring, cot=cot):
            matrix = eqx.tree_at(leaves, conn, w).to_dense()
            rows = ring.reshape(3, width).at[4 % 3].set(0)  # the cleared row
            to_columns = jnp.asarray(_windowed(np.eye(conn.rule.n_post), offset, width))
            rows = rows.at[(4 + conn.delay) % 3].add(s @ matrix @ to_columns)
            return jnp.sum(cot * rows.ravel())

        got = jax.jit(jax.grad(loss, argnums=(0, 1)))(spikes, leaves(conn))
        expected = jax.jit(jax.grad(dense_loss, argnums=(0, 1)))(spikes, leaves(conn))
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        if offset == -5:  # silent neurons get the gradient of their synapses in the window
            assert np.any(np.asarray(got[0])[np.asarray(spikes) == 0] != 0)
        assert jnp.abs(got[1][1]) > 0


@native
def test_procedural_window_vmap_is_one_native_call():
    """``vmap`` over spikes and weights of a placed (cut) window: one native call, equal to
    the unbatched calls bit for bit."""
    conn = _procedural(Implementation.NATIVE_CPU, dtype=jnp.float32).placed(-5, 8)
    batch = jnp.asarray(np.stack([_spikes(seed=s) for s in range(4)]), jnp.float32)
    locs = jnp.asarray([0.5, -1.0, 2.0, 0.0], jnp.float32)
    ring = jnp.zeros(3 * 8, jnp.float32)

    def one(s, loc):
        return eqx.tree_at(lambda c: c.weight_loc, conn, loc).clear_and_deliver(ring, 1, s)

    fn = jax.jit(jax.vmap(one))
    hlo = fn.lower(batch, locs).compile().as_text()
    assert hlo.count('custom_call_target="brainsim_procedural_deliver"') == 1
    got = fn(batch, locs)
    for b in range(4):
        np.testing.assert_array_equal(got[b], jax.jit(one)(batch[b], locs[b]))
    assert np.any(np.asarray(got) != 0)


# --------------------------------------------------------------------- stored-weight formats


def _dense():
    edges = connect.fixed_probability(N_PRE, N_POST, 0.4, weight=connect.Normal(1.0, 0.5),
                                      delay=connect.Uniform(0.0, 1.5), seed=8)
    return bs.Dense().build(edges, DT, owner="test", round_delays=True, dtype=jnp.float64)


def _learnable():
    edges = connect.fixed_probability(N_PRE, N_POST, 0.4, weight=connect.Normal(1.0, 0.5),
                                      delay=connect.Uniform(0.0, 1.5), seed=9)
    layout = bs.LearnableDelays(max_delay=2.0)
    return layout.build(edges, DT, owner="test", round_delays=False, dtype=jnp.float64)


@pytest.mark.parametrize("make", [_dense, _learnable, _procedural], ids=lambda f: f.__name__)
def test_placed_delivery_is_the_window_of_the_unplaced_one(x64, make):
    """Every window's ring equals the unplaced ring's columns moved and cut, per-pair and
    fractional delays (several rows) included; ``to_dense`` likewise. Windows that tile the
    population (devices owning 7 neurons each) give back the unplaced delivery."""
    conn = make()
    n = conn.n_post
    d = conn.max_delay + 1
    spikes = jnp.asarray(_spikes(seed=4))
    rng = np.random.default_rng(5)
    full = np.asarray(conn.deliver(jnp.zeros(d * n), 3, spikes)).reshape(d, n)
    matrix = _dense_of(conn)
    assert np.count_nonzero(full.any(axis=1)) >= (1 if make is _procedural else 2)
    for offset, width in WINDOWS:
        placed = conn.placed(offset, width)
        assert placed.n_post == width
        ring = rng.normal(size=d * width)
        got = eqx.filter_jit(placed.deliver)(jnp.asarray(ring), 3, spikes)
        expected = ring + _windowed(full, offset, width).ravel()
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12,
                                   err_msg=f"window {offset, width}")
        np.testing.assert_allclose(_dense_of(placed), _windowed(matrix, offset, width))
    tiles = [conn.placed(-first, 7).deliver(jnp.zeros(d * 7), 3, spikes).reshape(d, 7)
             for first in range(0, n, 7)]
    np.testing.assert_allclose(np.concatenate(tiles, axis=1)[:, :n], full, rtol=1e-12)


def test_placing_twice_composes_and_refuses_a_cut_window(x64):
    conn = _dense()
    twice = conn.placed(3, 30).placed(5, 50)
    assert (twice.post_offset, twice.n_post) == (8, 50)
    np.testing.assert_array_equal(twice.to_dense()[:, 8:28], conn.to_dense())
    assert conn.placed(0, N_POST) is conn
    with pytest.raises(ValueError, match="cannot be placed again"):
        conn.placed(-5, 8).placed(2, 20)
    with pytest.raises(ValueError, match="`width` must be a positive integer"):
        conn.placed(0, 0)
    with pytest.raises(TypeError, match="`offset` must be an int"):
        _learnable().placed(1.5, 30)


def test_bad_window_arguments_name_the_argument():
    ring = jnp.zeros(2 * 10)
    kw = dict(n_post=10, fan_out=2, seed=1)
    with pytest.raises(ValueError, match="`ring_width` must be >= 1"):
        kernels.procedural_deliver(ring, 0, jnp.ones(3), 1.0, ring_width=0, **kw)
    with pytest.raises(TypeError, match="`post_offset` must be a Python int"):
        kernels.procedural_deliver(ring, 0, jnp.ones(3), 1.0, post_offset=jnp.int32(2), **kw)
    with pytest.raises(ValueError, match="not a multiple of the ring width 7"):
        kernels.procedural_deliver(ring, 0, jnp.ones(3), 1.0, ring_width=7, **kw)
