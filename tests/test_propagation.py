"""Spike delivery: the event-driven ELL layout must equal the dense layout and a NumPy
reference — values, JVPs and gradients (including through neurons that did not spike), and
under ``vmap``."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brainsim as bs
from brainsim import connect

DT = 0.1
N_PRE, N_POST, N_EDGES = 60, 23, 400  # ~6.7 synapses per neuron, many duplicate pairs


def _edges(weight_kind, delay_kind, seed=0, pair_delays=True):
    rng = np.random.default_rng(seed)
    pre = rng.integers(0, N_PRE, N_EDGES)
    post = rng.integers(0, N_POST, N_EDGES)
    pre[:40] = 5  # one neuron with a large fan-out (40+), several chunks of padding elsewhere
    weight = {"scalar": 0.7, "per_edge": rng.normal(0.0, 1.0, N_EDGES)}[weight_kind]
    if delay_kind == "none":
        delay = None
    elif delay_kind == "scalar":
        delay = 0.3
    else:
        # A Dense layout stores one delay per pair: derive it from the pair unless asked not to.
        steps = (pre * 7 + post * 3) % 9 + 1 if pair_delays else rng.integers(1, 10, N_EDGES)
        delay = steps * DT
    return connect.from_arrays(pre, post, n_pre=N_PRE, n_post=N_POST, weight=weight,
                               delay=delay)


def _steps(edges):
    """Lag of every synapse: its delay in steps plus one (a zero delay acts in the next step)."""
    if edges.delay is None:
        return np.ones(edges.n_synapses, int)
    delay = np.rint(np.asarray(edges.delay) / DT).astype(int)
    return np.broadcast_to(delay + 1, edges.pre.shape)


def _build(layout, edges):
    return layout.build(edges, DT, owner="test", round_delays=False, dtype=jnp.float32)


def _slots(edges, cursor, n_ring):
    return ((cursor + _steps(edges)) % n_ring) * edges.n_post + edges.post


def _reference(ring, cursor, values, edges, n_ring):
    """NumPy: every synapse of a spiking neuron adds w * value to its ring slot."""
    out = np.asarray(ring, np.float64).copy()
    contrib = edges.weights_per_edge() * values[edges.pre]
    np.add.at(out, _slots(edges, cursor, n_ring), np.where(values[edges.pre] != 0, contrib, 0.0))
    return out


def _values(density, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random(N_PRE) < density
    # Float spike values (STP efficacies, Poisson counts) in [0.2, 3).
    return np.where(mask, rng.uniform(0.2, 3.0, N_PRE), 0.0).astype(np.float32)


@eqx.filter_jit
def _deliver(conn, ring, cursor, values):
    return conn.deliver(ring, cursor, values)


CONFIGS = [(w, d) for w in ("scalar", "per_edge") for d in ("none", "scalar", "per_edge")]
# float32 sums of up to ~50 terms of magnitude ≤ 3: 1e-5 relative / 1e-5 absolute is ~100 ulp.
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("weight_kind, delay_kind", CONFIGS)
@pytest.mark.parametrize("chunk_size", [1, 8])
def test_sparse_deliver_equals_dense_and_reference(weight_kind, delay_kind, chunk_size):
    edges = _edges(weight_kind, delay_kind)
    ell = _build(bs.Sparse(chunk_size=chunk_size), edges)
    dense = _build(bs.Dense(), edges)
    assert ell.max_delay == dense.max_delay == _steps(edges).max()
    n_ring = ell.max_delay + 1
    rng = np.random.default_rng(1)
    ring = jnp.asarray(rng.normal(size=n_ring * N_POST), jnp.float32)
    np.testing.assert_allclose(ell.to_dense(), dense.to_dense(), **TOL)
    for density in (0.0, 0.05, 0.3, 1.0):
        values = _values(density, seed=int(density * 100))
        for cursor in (0, n_ring - 1, 1234):
            expected = _reference(ring, cursor, values, edges, n_ring)
            got_ell = _deliver(ell, ring, jnp.int32(cursor), jnp.asarray(values))
            got_dense = _deliver(dense, ring, jnp.int32(cursor), jnp.asarray(values))
            np.testing.assert_allclose(got_ell, expected, **TOL)
            np.testing.assert_allclose(got_dense, expected, **TOL)


def test_sparse_duplicate_pairs_with_distinct_delays():
    edges = _edges("per_edge", "per_edge", pair_delays=False)
    ell = _build(bs.Sparse(chunk_size=4), edges)
    n_ring = ell.max_delay
    ring = jnp.zeros(n_ring * N_POST, jnp.float32)
    values = _values(0.5, seed=3)
    got = _deliver(ell, ring, jnp.int32(7), jnp.asarray(values))
    np.testing.assert_allclose(got, _reference(ring, 7, values, edges, n_ring), **TOL)


# ------------------------------------------------------------------------------ gradients


def _loss_fn(conn, ring, cursor, cotangent):
    def loss(values, weights):
        c = eqx.tree_at(lambda c: c.weights, conn, weights)
        return jnp.sum(cotangent * c.deliver(ring, cursor, values))

    return loss


def _ell_slots(conn, cursor, n_ring):
    targets = np.asarray(conn.targets)
    d = conn.homogeneous_delay if conn.delays is None else np.asarray(conn.delays)
    slots = ((cursor + d) % n_ring) * N_POST + np.minimum(targets, N_POST - 1)
    return slots, targets < N_POST


@pytest.mark.parametrize("weight_kind, delay_kind", CONFIGS)
def test_sparse_gradients_equal_dense_and_reference(weight_kind, delay_kind):
    edges = _edges(weight_kind, delay_kind)
    ell = _build(bs.Sparse(chunk_size=8), edges)
    dense = _build(bs.Dense(), edges)
    n_ring, cursor = ell.max_delay, 5
    rng = np.random.default_rng(2)
    ring = jnp.asarray(rng.normal(size=n_ring * N_POST), jnp.float32)
    cot = rng.normal(size=n_ring * N_POST)
    values = _values(0.2, seed=4)  # most neurons silent: their gradient must not vanish
    cursor_j = jnp.int32(cursor)
    g_ell = jax.jit(jax.grad(_loss_fn(ell, ring, cursor_j, jnp.asarray(cot, jnp.float32)),
                             argnums=(0, 1)))(jnp.asarray(values), ell.weights)
    g_dense = jax.jit(jax.grad(_loss_fn(dense, ring, cursor_j, jnp.asarray(cot, jnp.float32)),
                               argnums=(0, 1)))(jnp.asarray(values), dense.weights)
    # d loss / d value_i = sum over i's synapses of w * cot[slot], spiking or not.
    slot = _slots(edges, cursor, n_ring)
    w = edges.weights_per_edge()
    expected_dv = np.zeros(N_PRE)
    np.add.at(expected_dv, edges.pre, w * cot[slot])
    assert np.any(expected_dv[values == 0] != 0)
    np.testing.assert_allclose(g_ell[0], expected_dv, **TOL)
    np.testing.assert_allclose(g_dense[0], expected_dv, **TOL)
    # d loss / d weight of synapse e = value_pre * cot[slot] (ELL stores one weight per synapse,
    # or one shared scalar).
    ell_slots, valid = _ell_slots(ell, cursor, n_ring)
    per_syn = np.where(valid, values[:, None] * cot[ell_slots], 0.0)
    if weight_kind == "scalar":
        np.testing.assert_allclose(g_ell[1], per_syn.sum(), rtol=1e-5)
    else:
        np.testing.assert_allclose(g_ell[1], per_syn, **TOL)
        # Dense: d loss / d W[i, j]; every synapse of the pair sees that same derivative.
        gd = np.asarray(g_dense[1])
        targets = np.asarray(ell.targets)
        np.testing.assert_allclose(np.where(valid, gd[np.arange(N_PRE)[:, None],
                                                      np.minimum(targets, N_POST - 1)], 0.0),
                                   per_syn, **TOL)


@pytest.mark.parametrize("weight_kind, delay_kind", [("per_edge", "per_edge"), ("scalar", "none")])
def test_sparse_jvp_equals_dense(weight_kind, delay_kind):
    edges = _edges(weight_kind, delay_kind)
    ell = _build(bs.Sparse(chunk_size=8), edges)
    dense = _build(bs.Dense(), edges)
    n_ring = ell.max_delay
    rng = np.random.default_rng(5)
    ring = jnp.asarray(rng.normal(size=n_ring * N_POST), jnp.float32)
    values = jnp.asarray(_values(0.3, seed=6))
    dv = jnp.asarray(rng.normal(size=N_PRE), jnp.float32)

    def f(conn, dw):
        def g(v, w):
            c = eqx.tree_at(lambda c: c.weights, conn, w)
            return c.deliver(ring, jnp.int32(2), v)

        return jax.jvp(g, (values, conn.weights), (dv, dw))

    dw_ell = jnp.asarray(rng.normal(size=np.shape(ell.weights)), jnp.float32)
    out_e, tan_e = jax.jit(lambda dw: f(ell, dw))(dw_ell)
    # The same weight perturbation expressed on the dense matrix (a scalar weight perturbs every
    # synapse; per-synapse perturbations add up per pair).
    if weight_kind == "scalar":
        dw_dense = dw_ell * jnp.asarray(np.asarray(dense.weights) / 0.7)
    else:
        dw_dense = eqx.tree_at(lambda c: c.weights, ell, dw_ell).to_dense()
    out_d, tan_d = jax.jit(lambda dw: f(dense, dw))(dw_dense)
    np.testing.assert_allclose(out_e, out_d, **TOL)
    np.testing.assert_allclose(tan_e, tan_d, rtol=1e-4, atol=1e-4)


def test_sparse_deliver_vmap_equals_loop():
    edges = _edges("per_edge", "per_edge")
    ell = _build(bs.Sparse(chunk_size=8), edges)
    n_ring = ell.max_delay
    ring = jnp.zeros(n_ring * N_POST, jnp.float32)
    batch = np.stack([_values(d, seed=i) for i, d in enumerate([0.0, 0.02, 0.2, 0.6, 1.0])])
    batched = jax.jit(jax.vmap(lambda v: ell.deliver(ring, jnp.int32(3), v)))(
        jnp.asarray(batch))
    for b in range(batch.shape[0]):
        np.testing.assert_allclose(batched[b], _reference(ring, 3, batch[b], edges, n_ring),
                                   **TOL)
    # Gradients under vmap too.
    cot = jnp.asarray(np.random.default_rng(0).normal(size=n_ring * N_POST), jnp.float32)
    loss = _loss_fn(ell, ring, jnp.int32(3), cot)
    grad = jax.grad(loss)
    vg = jax.jit(jax.vmap(grad, in_axes=(0, None)))(jnp.asarray(batch), ell.weights)
    single = jax.jit(grad)
    for b in range(batch.shape[0]):
        np.testing.assert_allclose(vg[b], single(jnp.asarray(batch[b]), ell.weights), **TOL)


def test_network_gradient_sparse_equals_dense():
    # d(total spike count of a LIF layer) / d(weights) through a whole simulation: identical
    # with Sparse and Dense storage (the layout is storage, not model).
    rng = np.random.default_rng(0)
    n_in, n_out = 20, 8
    pre = np.repeat(np.arange(n_in), 3)
    post = rng.integers(0, n_out, pre.size)
    _, first = np.unique(pre * n_out + post, return_index=True)
    pre, post = pre[first], post[first]  # unique pairs, so the two layouts hold the same numbers
    edges = connect.from_arrays(pre, post, n_pre=n_in, n_post=n_out,
                                weight=rng.uniform(50.0, 150.0, pre.size), delay=0.2)
    lif = bs.LIF(C_m=250.0, tau_m=10.0, E_L=-70.0, V_th=-55.0, V_reset=-70.0, t_ref=2.0,
                 I_e=300.0)
    times = np.sort(rng.uniform(0, 30, 60)).round(1)
    ids = rng.integers(0, n_in, 60)

    def make(layout):
        pops = [bs.Population("in", n_in, bs.SpikeGenerator(times, ids)),
                bs.Population("out", n_out, lif, receptors={
                    "e": bs.Receptor(bs.ExponentialSynapse(5.0), bs.CurrentBased())})]
        return bs.Network(pops, [bs.Projection("in", "out", edges, receptor="e", layout=layout)],
                          dt=DT)

    def loss(net):
        res = bs.simulate(net, 40.0, key=jax.random.key(0), record=(bs.PopulationRate("out"),))
        return jnp.sum(res.recordings[0]["out"])

    def grads(net):
        return bs.jit(jax.value_and_grad(lambda w: loss(
            eqx.tree_at(lambda n: n.projections[0].connectivity.weights, net, w))))(
            net.projections[0].connectivity.weights)

    sparse_net, dense_net = make(bs.Sparse(chunk_size=4)), make(bs.Dense())
    (ls, gs), (ld, gd) = grads(sparse_net), grads(dense_net)
    assert ls == ld and ls > 0
    targets = np.asarray(sparse_net.projections[0].connectivity.targets)
    valid = targets < n_out
    gd_at = np.asarray(gd)[np.arange(n_in)[:, None], np.minimum(targets, n_out - 1)]
    assert np.all(np.isfinite(gs)) and np.any(np.asarray(gs)[valid] != 0)
    np.testing.assert_allclose(np.where(valid, gs, 0.0), np.where(valid, gd_at, 0.0),
                               rtol=1e-4, atol=1e-6 * np.max(np.abs(gd)))
