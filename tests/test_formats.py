"""Storage formats CSR and procedural: delivery equals the dense layout and a NumPy oracle,
implementations agree (procedural: bit for bit), gradients / JVPs / vmap equal the dense
reference, whole networks spike identically, and procedural synapses are a pure function of
(seed, neuron, index) whatever the chunking.

Tolerances: float32 sums of at most ~50 terms of magnitude <= 3 (1e-5 relative/absolute is
~100 ulp); procedural values are compared bit for bit where the arithmetic is exact.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brainsim.kernels import Implementation
from brainsim.kernels import _procedural_rng as gen

import brainsim as bs
from brainsim import connect, kernels

DT = 0.1
N_PRE, N_POST, N_EDGES = 60, 23, 400
TOL = dict(rtol=1e-5, atol=1e-5)
IMPLS = [Implementation.REFERENCE, Implementation.NATIVE_CPU, Implementation.AUTO]
native = pytest.mark.skipif(
    not kernels.native_cpu_available(), reason=f"native kernels: {kernels.native_cpu_status()}"
)


def _edges(weight_kind, delay_kind, seed=0, pair_delays=True):
    rng = np.random.default_rng(seed)
    pre = rng.integers(0, N_PRE, N_EDGES)
    post = rng.integers(0, N_POST, N_EDGES)
    pre[:40] = 5  # a hub: one row 10x longer than the mean (ELL pads every row to it)
    pre[pre == 7] = 8  # a neuron without synapses
    weight = {"scalar": 0.7, "per_edge": rng.normal(0.0, 1.0, N_EDGES)}[weight_kind]
    # Dense stores one delay per pair: derive per-edge delays from the pair unless asked not to.
    steps = (pre * 7 + post * 3) % 9 + 1 if pair_delays else rng.integers(1, 10, N_EDGES)
    delay = {"none": None, "scalar": 0.3, "per_edge": steps * DT}[delay_kind]
    return connect.from_arrays(pre, post, n_pre=N_PRE, n_post=N_POST, weight=weight, delay=delay)


def _build(layout, edges, dtype=jnp.float32):
    return layout.build(edges, DT, owner="test", round_delays=False, dtype=dtype)


def _oracle(ring, cursor, values, edges, n_ring):
    """NumPy: every synapse of a spiking neuron adds w * value to its ring slot, its lag (delay
    in steps plus one) after the cursor."""
    steps = (
        np.ones(edges.n_synapses, int)
        if edges.delay is None
        else np.broadcast_to(np.rint(np.asarray(edges.delay) / DT).astype(int) + 1, edges.pre.shape)
    )
    out = np.asarray(ring, np.float64).copy()
    slots = ((cursor + steps) % n_ring) * edges.n_post + edges.post
    v = values[edges.pre]
    np.add.at(out, slots, np.where(v != 0, edges.weights_per_edge() * v, 0.0))
    return out


def _values(n, density, seed):
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < density, rng.uniform(0.2, 3.0, n), 0.0).astype(np.float32)


@eqx.filter_jit
def _deliver(conn, ring, cursor, values):
    return conn.deliver(ring, cursor, values)


CONFIGS = [("scalar", "none"), ("scalar", "per_edge"), ("per_edge", "scalar"),
           ("per_edge", "per_edge")]


# ------------------------------------------------------------------------------------ CSR


@native
@pytest.mark.parametrize("weight_kind, delay_kind", CONFIGS)
@pytest.mark.parametrize("impl", IMPLS[:2], ids=lambda i: i.value)
def test_csr_deliver_equals_dense_ell_and_oracle(weight_kind, delay_kind, impl):
    edges = _edges(weight_kind, delay_kind)
    csr = _build(bs.CSR(block_size=16, implementation=impl), edges)
    ell = _build(bs.Sparse(), edges)
    dense = _build(bs.Dense(), edges)
    assert csr.n_synapses == N_EDGES and csr.indices.shape == (N_EDGES,)
    np.testing.assert_allclose(csr.to_dense(), dense.to_dense(), **TOL)
    n_ring = csr.max_delay + 1
    ring = jnp.asarray(np.random.default_rng(1).normal(size=n_ring * N_POST), jnp.float32)
    for density in (0.0, 0.05, 0.3, 1.0):
        values = _values(N_PRE, density, seed=int(density * 100))
        for cursor in (0, n_ring - 1, 1234):
            expected = _oracle(ring, cursor, values, edges, n_ring)
            got = _deliver(csr, ring, jnp.int32(cursor), jnp.asarray(values))
            np.testing.assert_allclose(got, expected, **TOL)
    np.testing.assert_allclose(_deliver(ell, ring, 0, jnp.asarray(values)),
                               _deliver(csr, ring, 0, jnp.asarray(values)), **TOL)


@native
def test_csr_native_equals_reference_float32_and_float64(x64):
    for dtype, tol in ((jnp.float32, 1e-6), (jnp.float64, 1e-13)):
        edges = _edges("per_edge", "per_edge", seed=2, pair_delays=False)
        ref = _build(bs.CSR(implementation=Implementation.REFERENCE), edges, dtype)
        nat = _build(bs.CSR(implementation=Implementation.NATIVE_CPU), edges, dtype)
        ring = jnp.asarray(np.random.default_rng(3).normal(size=ref.max_delay * N_POST), dtype)
        values = jnp.asarray(_values(N_PRE, 0.4, 4), dtype)
        a, b = _deliver(ref, ring, 3, values), _deliver(nat, ring, 3, values)
        assert a.dtype == b.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@native
@pytest.mark.parametrize("impl", IMPLS[:2], ids=lambda i: i.value)
def test_csr_out_of_range_targets_and_empty_rows(impl):
    edges = _edges("per_edge", "none", seed=5)
    csr = _build(bs.CSR(block_size=8, implementation=impl), edges)
    bad = np.asarray(csr.indices).copy()
    bad[[0, 10, 200]] = [-5, N_POST, N_POST + 100]  # corrupt targets: skipped, never clamped
    csr = eqx.tree_at(lambda c: c.indices, csr, jnp.asarray(bad))
    values = np.ones(N_PRE, np.float32)
    ring = jnp.zeros(csr.max_delay * N_POST, jnp.float32)
    got = np.asarray(_deliver(csr, ring, 0, jnp.asarray(values)))
    keep = (bad >= 0) & (bad < N_POST)
    w = np.asarray(csr.weights)
    expected = np.zeros(N_POST)
    np.add.at(expected, bad[keep], w[keep])
    np.testing.assert_allclose(got, expected, **TOL)
    # An empty projection and a projection whose spiking neurons have no synapse.
    empty = _build(bs.CSR(implementation=impl), connect.from_arrays([], [], n_pre=4, n_post=3))
    ring3 = jnp.arange(3.0, dtype=jnp.float32)
    np.testing.assert_array_equal(_deliver(empty, ring3, 0, jnp.ones(4, jnp.float32)), ring3)
    only7 = np.zeros(N_PRE, np.float32)
    only7[7] = 1.0  # neuron 7 has no synapse
    z = jnp.zeros(csr.max_delay * N_POST, jnp.float32)
    np.testing.assert_array_equal(_deliver(csr, z, 0, jnp.asarray(only7)), z)


def test_csr_memory_is_proportional_to_synapses():
    # One hub with 2000 synapses among 1000 neurons with 5: ELL pads every row to 2000.
    rng = np.random.default_rng(0)
    pre = np.concatenate([np.zeros(2000, int), np.repeat(np.arange(1, 1000), 5)])
    post = rng.integers(0, 500, pre.size)
    edges = connect.from_arrays(pre, post, n_pre=1000, n_post=500, weight=rng.normal(size=pre.size))
    csr = _build(bs.CSR(), edges)
    ell = _build(bs.Sparse(), edges)
    csr_bytes = sum(x.nbytes for x in (csr.indptr, csr.indices, csr.weights))
    ell_bytes = ell.targets.nbytes + ell.weights.nbytes
    assert csr_bytes <= 8 * pre.size + 4 * 1001
    assert ell_bytes > 100 * csr_bytes


# ------------------------------------------------------------------------------ gradients


def _grads(conn, ring, cursor, cot, values, leaves):
    """d/d(values, weight leaves) of sum(cot * deliver)."""

    def loss(v, w):
        c = eqx.tree_at(leaves, conn, w, is_leaf=lambda x: x is None)
        return jnp.sum(cot * c.deliver(ring, cursor, v))

    return jax.jit(jax.grad(loss, argnums=(0, 1)))(values, leaves(conn))


def _dense_grads(dense, ring, cursor, cot, values, w_of_leaves, leaves0):
    """The same derivatives through a Dense layout whose matrix is ``w_of_leaves(leaves)``."""

    def loss(v, w):
        d = eqx.tree_at(lambda d: d.weights, dense, w_of_leaves(w))
        return jnp.sum(cot * d.deliver(ring, cursor, v))

    return jax.jit(jax.grad(loss, argnums=(0, 1)))(values, leaves0)


@pytest.mark.parametrize("weight_kind, delay_kind", [("per_edge", "per_edge"), ("scalar", "none")])
@pytest.mark.parametrize("impl", IMPLS[:2], ids=lambda i: i.value)
def test_csr_gradients_and_jvp_equal_dense(weight_kind, delay_kind, impl):
    if impl is Implementation.NATIVE_CPU and not kernels.native_cpu_available():
        pytest.skip("native kernels unavailable")
    edges = _edges(weight_kind, delay_kind)
    csr = _build(bs.CSR(implementation=impl), edges)
    dense = _build(bs.Dense(), edges)
    n_ring, cursor = csr.max_delay + 1, 5
    rng = np.random.default_rng(2)
    ring = jnp.asarray(rng.normal(size=n_ring * N_POST), jnp.float32)
    cot = jnp.asarray(rng.normal(size=n_ring * N_POST), jnp.float32)
    values = jnp.asarray(_values(N_PRE, 0.2, 4))  # mostly silent: gradients must not vanish
    g_csr = _grads(csr, ring, cursor, cot, values, lambda c: c.weights)
    # The CSR weights as a function on the dense matrix: scatter-add by (pre, post).
    rows = np.repeat(np.arange(N_PRE), np.diff(np.asarray(csr.indptr)))
    idx = np.asarray(csr.indices)

    def w_dense(w):
        w = jnp.broadcast_to(w, idx.shape)
        return jnp.zeros((N_PRE, N_POST), w.dtype).at[rows, idx].add(w)

    g_dense = _dense_grads(dense, ring, cursor, cot, values, w_dense, csr.weights)
    silent = np.asarray(values) == 0
    assert np.any(np.asarray(g_dense[0])[silent] != 0)
    np.testing.assert_allclose(g_csr[0], g_dense[0], **TOL)
    np.testing.assert_allclose(g_csr[1], g_dense[1], rtol=1e-5, atol=1e-4)
    # Forward mode: the tangent in the spikes and weights together.
    dv = jnp.asarray(rng.normal(size=N_PRE), jnp.float32)
    dw = jnp.asarray(rng.normal(size=np.shape(csr.weights)), jnp.float32)

    def f_csr(v, w):
        return eqx.tree_at(lambda c: c.weights, csr, w).deliver(ring, cursor, v)

    def f_dense(v, w):
        return eqx.tree_at(lambda d: d.weights, dense, w_dense(w)).deliver(ring, cursor, v)

    out_c, tan_c = jax.jit(lambda: jax.jvp(f_csr, (values, csr.weights), (dv, dw)))()
    out_d, tan_d = jax.jit(lambda: jax.jvp(f_dense, (values, csr.weights), (dv, dw)))()
    np.testing.assert_allclose(out_c, out_d, **TOL)
    np.testing.assert_allclose(tan_c, tan_d, rtol=1e-4, atol=1e-4)


@native
def test_csr_vmap_is_one_native_call_and_equals_the_loop():
    edges = _edges("per_edge", "per_edge", pair_delays=False)
    csr = _build(bs.CSR(implementation=Implementation.NATIVE_CPU), edges)
    ring = jnp.zeros(csr.max_delay * N_POST, jnp.float32)
    batch = jnp.asarray(np.stack([_values(N_PRE, d, i) for i, d in enumerate([0, .1, .5, 1])]))
    fn = jax.jit(jax.vmap(lambda v: csr.deliver(ring, 3, v)))
    got = fn(batch)
    assert fn.lower(batch).compile().as_text().count('custom_call_target="brainsim_csr_deliver"') == 1
    for b in range(batch.shape[0]):
        expected = _oracle(ring, 3, np.asarray(batch[b]), edges, csr.max_delay)
        np.testing.assert_allclose(got[b], expected, **TOL)
    cot = jnp.asarray(np.random.default_rng(0).normal(size=ring.size), jnp.float32)

    def loss(v, w):
        return jnp.sum(cot * eqx.tree_at(lambda c: c.weights, csr, w).deliver(ring, 3, v))

    vg = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1)), in_axes=(0, None)))(batch, csr.weights)
    for b in range(batch.shape[0]):
        single = jax.grad(loss, argnums=(0, 1))(batch[b], csr.weights)
        np.testing.assert_allclose(vg[0][b], single[0], **TOL)
        np.testing.assert_allclose(vg[1][b], single[1], **TOL)


# ----------------------------------------------------------------------------- procedural

RULES = {
    "outdegree": lambda **kw: connect.procedural_fixed_outdegree(N_PRE, N_POST, 9, seed=17, **kw),
    "outdegree_no_self": lambda **kw: connect.procedural_fixed_outdegree(
        N_PRE, N_PRE, 9, allow_self=False, seed=18, **kw
    ),
    "outdegree_replace": lambda **kw: connect.procedural_fixed_outdegree(
        N_PRE, N_POST, 40, replace=True, seed=19, **kw
    ),
    "probability": lambda **kw: connect.procedural_fixed_probability(
        N_PRE, N_POST, 0.3, seed=20, **kw
    ),
    "probability_no_self": lambda **kw: connect.procedural_fixed_probability(
        N_PRE, N_PRE, 0.2, allow_self=False, seed=21, **kw
    ),
}
WEIGHTS = {"constant": 0.7, "uniform": connect.Uniform(-0.5, 1.5)}


def test_hash_is_threefry_and_numpy_equals_jnp():
    # Our uint32 Threefry-2x32-20 is JAX's (jax.random's generator), on NumPy and jnp.
    key = np.array([123456789, 987654321], np.uint32)
    count = np.arange(64, dtype=np.uint32)
    ref = np.asarray(jax.extend.random.threefry_2x32(jnp.asarray(key), jnp.asarray(count)))
    with np.errstate(over="ignore"):
        a, b = gen.threefry2x32(key[0], key[1], count[:32], count[32:])
    np.testing.assert_array_equal(np.concatenate([a, b]), ref)
    a_j, b_j = jax.jit(gen.threefry2x32)(*(jnp.asarray(x) for x in (key[0], key[1], count[:32],
                                                                     count[32:])))
    np.testing.assert_array_equal(np.concatenate([a_j, b_j]), ref)
    # mulhi from 16-bit halves equals the exact 64-bit product.
    x = np.random.default_rng(0).integers(0, 2**32, 1000, dtype=np.uint64)
    y = np.random.default_rng(1).integers(0, 2**32, 1000, dtype=np.uint64)
    with np.errstate(over="ignore"):
        hi = gen.mulhi32(x.astype(np.uint32), y.astype(np.uint32))
    np.testing.assert_array_equal(hi, ((x * y) >> np.uint64(32)).astype(np.uint32))
    # Targets and weight variates: host NumPy and jnp agree bit for bit.
    for name in ("outdegree_no_self", "outdegree_replace", "probability"):
        spec = RULES[name](weight=WEIGHTS["uniform"])
        rows = np.arange(N_PRE)[:, None]
        j = np.arange(spec.fan_out)[None, :]
        count_ = spec.fan_out if spec.counts is None else spec.counts[:, None]
        valid = np.broadcast_to(j < count_, (N_PRE, spec.fan_out))
        t_np, g_np = gen.procedural_synapses_numpy(spec.rule, rows, j, valid)
        t_j, g_j = jax.jit(lambda r, j_, v, rule=spec.rule: gen.procedural_synapses(rule, r, j_, v))(
            rows, j, valid)
        np.testing.assert_array_equal(np.where(valid, t_np, -1), np.where(valid, t_j, -1), name)
        np.testing.assert_array_equal(g_np, g_j, name)


@pytest.mark.parametrize("name", list(RULES))
def test_procedural_structure(name):
    spec = RULES[name](weight=WEIGHTS["uniform"])
    e = spec.edges()
    counts = np.bincount(e.pre, minlength=N_PRE)
    if spec.counts is None:
        np.testing.assert_array_equal(counts, spec.fan_out)
    else:
        np.testing.assert_array_equal(counts, spec.counts)
    assert e.n_synapses == spec.n_synapses
    if not spec.replace:
        assert np.unique(e.pre.astype(np.int64) * e.n_post + e.post).size == e.n_synapses
    if not spec.allow_self:
        assert not np.any(e.pre == e.post)
    assert e.post.min() >= 0 and e.post.max() < spec.n_post
    w = e.weights_per_edge()
    assert w.min() >= -0.5 and w.max() < 1.5
    # Identical on every build and whatever the block of regenerated rows.
    again = RULES[name](weight=WEIGHTS["uniform"]).edges(block_rows=7)
    np.testing.assert_array_equal(e.pre, again.pre)
    np.testing.assert_array_equal(e.post, again.post)
    np.testing.assert_array_equal(e.weight, again.weight)


def test_procedural_statistics():
    # Targets: 2000 neurons x 25 distinct targets among 100: each target's count is close to
    # Binomial(2000, 0.25) (counts of one target are independent across rows): 5 SDs.
    n_pre, n_post, k = 2000, 100, 25
    e = connect.procedural_fixed_outdegree(n_pre, n_post, k, seed=3).edges()
    hits = np.bincount(e.post, minlength=n_post)
    assert np.all(np.abs(hits - n_pre * k / n_post) < 5 * np.sqrt(n_pre * 0.25 * 0.75))
    # The first target of each row is uniform too (the permutation, not just the set).
    first = e.post.reshape(n_pre, k)[:, 0]
    f = np.bincount(first, minlength=n_post)
    assert np.all(np.abs(f - n_pre / n_post) < 5 * np.sqrt(n_pre * 0.01 * 0.99))
    # Fixed probability: counts ~ Binomial(n_post, p): mean within 5 SEM, variance within
    # 5 SDs of its sampling distribution; each pair's frequency uniform.
    n, p = 3000, 0.05
    spec = connect.procedural_fixed_probability(n, 400, p, seed=9)
    c = spec.counts
    var = 400 * p * (1 - p)
    assert abs(c.mean() - 400 * p) < 5 * np.sqrt(var / n)
    kurt = (1 - 6 * p * (1 - p)) / var
    assert abs(c.var(ddof=1) - var) < 5 * var * np.sqrt(2 / (n - 1) + kurt / n)
    hits = np.bincount(spec.edges().post, minlength=400)
    assert np.all(np.abs(hits - n * p) < 5 * np.sqrt(n * p * (1 - p)))
    # Uniform weights: the variates are uniform on [0, 1): mean and SD.
    w = connect.procedural_fixed_outdegree(2000, 100, 25, seed=4,
                                           weight=connect.Uniform(0.0, 1.0)).edges().weight
    assert abs(w.mean() - 0.5) < 5 * np.sqrt(1 / 12 / w.size)
    assert abs(w.std() - np.sqrt(1 / 12)) < 0.005
    # Different seeds differ.
    other = connect.procedural_fixed_outdegree(n_pre, n_post, k, seed=4).edges()
    assert not np.array_equal(e.post, other.post)


# Each rule with the weights it is tested with (both kinds are covered across the rules) and
# the reference's chunk sizes (several: delivery must not depend on them).
DELIVERY_CASES = [
    ("outdegree", "uniform", (1, 5)),
    ("outdegree_no_self", "constant", (4,)),
    ("outdegree_replace", "uniform", (4,)),
    ("probability", "constant", (4,)),
    ("probability_no_self", "uniform", (3, 64)),
]


@pytest.mark.parametrize("name, weight, chunks", DELIVERY_CASES)
def test_procedural_deliver_equals_oracle_bitwise_across_implementations(name, weight, chunks):
    spec = RULES[name](weight=WEIGHTS[weight], delay=0.2)
    edges = spec.edges()
    n_ring = 4
    ring = jnp.asarray(np.random.default_rng(1).normal(size=n_ring * spec.n_post), jnp.float32)
    variants = [(Implementation.REFERENCE, c) for c in chunks]
    if kernels.native_cpu_available():
        variants.append((Implementation.NATIVE_CPU, 8))
    conns = [_build(bs.Procedural(chunk_size=c, implementation=i), spec) for i, c in variants]
    assert conns[0].max_delay == 3 and conns[0].n_synapses == spec.n_synapses
    if len(chunks) > 1:  # the jnp regeneration of the whole matrix, once per rule kind
        np.testing.assert_allclose(conns[0].to_dense(), spec.to_dense(), rtol=1e-6, atol=1e-6)
    for density in (0.0, 0.1, 1.0):
        values = _values(N_PRE, density, seed=int(10 * density))
        binary = (values != 0).astype(np.float32)
        expected = _oracle(ring, 7, values, edges, n_ring)
        outs = []
        for conn in conns:
            np.testing.assert_allclose(_deliver(conn, ring, 7, jnp.asarray(values)), expected,
                                       **TOL)
            outs.append(np.asarray(_deliver(conn, ring, 7, jnp.asarray(binary))))
        # Binary spikes make every product exact: any difference between implementations or
        # chunk sizes would be in the regenerated synapses or the summation order. None.
        for o in outs[1:]:
            np.testing.assert_array_equal(outs[0], o)


@native
@pytest.mark.parametrize("name", ["outdegree", "outdegree_replace", "probability_no_self"])
def test_procedural_kernel_regenerates_the_host_synapses_exactly(name):
    # One neuron spiking into a zero ring with w = 0 + 1 * g reads back its targets and
    # variates exactly (g is exact in float32): the C++ kernel regenerates what the host does.
    spec = RULES[name](weight=connect.Uniform(0.0, 1.0))
    e = spec.edges()
    conn = _build(bs.Procedural(implementation=Implementation.NATIVE_CPU), spec)
    for i in (0, 17, N_PRE - 1):
        one = jnp.zeros(N_PRE, jnp.float32).at[i].set(1.0)
        got = np.asarray(_deliver(conn, jnp.zeros(spec.n_post, jnp.float32), 0, one))
        expected = np.zeros(spec.n_post, np.float32)
        mine = e.pre == i
        np.add.at(expected, e.post[mine], e.weights_per_edge()[mine].astype(np.float32))
        if spec.replace:
            np.testing.assert_allclose(got, expected, rtol=1e-6)  # multapses add up
        else:
            np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "name, impl",
    [("outdegree_no_self", Implementation.NATIVE_CPU), ("probability", Implementation.REFERENCE)],
    ids=lambda x: getattr(x, "value", x),
)
def test_procedural_gradients_and_jvp_equal_dense(name, impl):
    if impl is Implementation.NATIVE_CPU and not kernels.native_cpu_available():
        pytest.skip("native kernels unavailable")
    spec = RULES[name](weight=WEIGHTS["uniform"])
    conn = _build(bs.Procedural(implementation=impl), spec)
    dense = _build(bs.Dense(), spec)
    n_ring, cursor = 2, 1
    rng = np.random.default_rng(3)
    ring = jnp.asarray(rng.normal(size=n_ring * spec.n_post), jnp.float32)
    cot = jnp.asarray(rng.normal(size=n_ring * spec.n_post), jnp.float32)
    values = jnp.asarray(_values(N_PRE, 0.2, 6))

    def leaves(c):
        return (c.weight_loc, c.weight_scale)

    g = _grads(conn, ring, cursor, cot, values, leaves)
    # Dense reference: W(loc, scale) = loc * A + scale * G, A = synapse counts per pair and G
    # the sum of their uniform variates (matrices of the materialised synapses).
    e = spec.edges()
    a = np.zeros((N_PRE, spec.n_post))
    gsum = np.zeros((N_PRE, spec.n_post))
    np.add.at(a, (e.pre, e.post), 1.0)
    np.add.at(gsum, (e.pre, e.post), (e.weights_per_edge() + 0.5) / 2.0)
    a, gsum = jnp.asarray(a, jnp.float32), jnp.asarray(gsum, jnp.float32)
    gd = _dense_grads(dense, ring, cursor, cot, values, lambda w: w[0] * a + w[1] * gsum,
                      leaves(conn))
    silent = np.asarray(values) == 0
    assert np.any(np.asarray(gd[0])[silent] != 0)
    np.testing.assert_allclose(g[0], gd[0], **TOL)
    np.testing.assert_allclose(g[1][0], gd[1][0], rtol=1e-5)
    np.testing.assert_allclose(g[1][1], gd[1][1], rtol=1e-5)
    dv = jnp.asarray(rng.normal(size=N_PRE), jnp.float32)
    dw = (jnp.float32(0.3), jnp.float32(-0.7))

    def fp(v, w):
        return eqx.tree_at(leaves, conn, w).deliver(ring, cursor, v)

    def fd(v, w):
        return eqx.tree_at(lambda d: d.weights, dense, w[0] * a + w[1] * gsum).deliver(
            ring, cursor, v)

    out_p, tan_p = jax.jit(lambda: jax.jvp(fp, (values, leaves(conn)), (dv, dw)))()
    out_d, tan_d = jax.jit(lambda: jax.jvp(fd, (values, leaves(conn)), (dv, dw)))()
    np.testing.assert_allclose(out_p, out_d, **TOL)
    np.testing.assert_allclose(tan_p, tan_d, rtol=1e-4, atol=1e-4)


@native
def test_procedural_vmap_is_one_native_call_and_equals_the_loop():
    spec = RULES["probability"](weight=WEIGHTS["uniform"])
    conn = _build(bs.Procedural(implementation=Implementation.NATIVE_CPU), spec)
    ring = jnp.zeros(spec.n_post, jnp.float32)
    batch = jnp.asarray(np.stack([_values(N_PRE, d, i) for i, d in enumerate([0, .1, .5, 1])]))
    scales = jnp.asarray([0.5, 1.0, 2.0, 4.0], jnp.float32)

    def one(v, scale):
        return eqx.tree_at(lambda c: c.weight_scale, conn, scale).deliver(ring, 0, v)

    fn = jax.jit(jax.vmap(one))  # spikes and weights batched together
    got = fn(batch, scales)
    hlo = fn.lower(batch, scales).compile().as_text()
    assert hlo.count('custom_call_target="brainsim_procedural_deliver"') == 1
    single = jax.jit(one)
    for b in range(batch.shape[0]):
        np.testing.assert_allclose(got[b], single(batch[b], scales[b]), **TOL)
    e = connect.procedural_fixed_probability(N_PRE, N_POST, 0.3, seed=20,
                                             weight=connect.Uniform(-0.5, 3.5)).edges()
    np.testing.assert_allclose(got[3], _oracle(ring, 0, np.asarray(batch[3]), e, 1), **TOL)
    cot = jnp.asarray(np.random.default_rng(0).normal(size=ring.size), jnp.float32)

    def loss(v, loc):
        return jnp.sum(cot * eqx.tree_at(lambda c: c.weight_loc, conn, loc).deliver(ring, 0, v))

    grad = jax.grad(loss, argnums=(0, 1))
    vg = jax.jit(jax.vmap(grad, in_axes=(0, None)))(batch, conn.weight_loc)
    single_grad = jax.jit(grad)
    for b in range(batch.shape[0]):
        g = single_grad(batch[b], conn.weight_loc)
        np.testing.assert_allclose(vg[0][b], g[0], **TOL)
        np.testing.assert_allclose(vg[1][b], g[1], rtol=1e-5)


# ------------------------------------------------------------------------------- networks


def _network(connectivity, layout, n_exc=160, n_inh=40, dt=DT):
    lif = bs.LIF(C_m=250.0, tau_m=20.0, E_L=-60.0, V_th=-50.0, V_reset=-60.0, t_ref=2.0,
                 I_e=260.0)
    n = n_exc + n_inh
    pops = [bs.Population("net", n, lif, receptors={
        "e": bs.Receptor(bs.ExponentialSynapse(5.0), bs.CurrentBased()),
        "i": bs.Receptor(bs.ExponentialSynapse(10.0), bs.CurrentBased())},
        initial={"v": bs.init.Uniform(-60.0, -50.0)})]
    projs = [bs.Projection("net", "net", c, receptor=r, layout=layout, name=r)
             for r, c in connectivity.items()]
    return bs.Network(pops, projs, dt=dt)


def _spikes(net, steps=600):
    res = bs.simulate(net, steps * net.dt, key=jax.random.key(0),
                      record=(bs.SpikeRaster(),))
    return np.asarray(res.recordings[0]["net"])


def test_network_spikes_identical_with_sparse_and_csr():
    rng = np.random.default_rng(0)
    n = 200
    exc = connect.fixed_indegree(160, n, 20, weight=connect.Uniform(20.0, 60.0),
                                 delay=connect.Uniform(0.1, 1.5), seed=1)
    exc = connect.from_arrays(exc.pre, exc.post, n_pre=n, n_post=n, weight=exc.weight,
                              delay=np.round(exc.delay, 1))
    inh_out = connect.fixed_outdegree(40, n, 30, weight=-150.0, delay=0.8, seed=2)
    inh = connect.from_arrays(inh_out.pre + 160, inh_out.post, n_pre=n, n_post=n,
                              weight=-150.0 * rng.uniform(0.5, 1.5, inh_out.n_synapses),
                              delay=0.8)
    conns = {"e": exc, "i": inh}
    sparse = _spikes(_network(conns, bs.Sparse()))
    csr = _spikes(_network(conns, bs.CSR()))
    assert sparse.sum() > 100  # the network is active
    np.testing.assert_array_equal(sparse, csr)


def test_network_procedural_equals_its_materialisation():
    # Constant weights and binary spikes: every delivered value is exact, so the procedural
    # network and a Sparse network of the same (materialised) synapses spike identically.
    n = 200
    exc = connect.procedural_fixed_outdegree(n, n, 20, weight=45.0, delay=0.5,
                                             allow_self=False, seed=5)
    inh = connect.procedural_fixed_probability(n, n, 0.1, weight=-60.0, delay=0.3, seed=6)
    conns = {"e": exc, "i": inh}
    net = _network(conns, None)
    procedural = _spikes(net)
    assert isinstance(net.projections[0].connectivity, bs.ProceduralConnectivity)
    assert net.n_synapses == n * 20 + int(inh.counts.sum())
    materialised = _spikes(_network(conns, bs.Sparse()))
    assert procedural.sum() > 100
    np.testing.assert_array_equal(procedural, materialised)


# --------------------------------------------------------------------------------- errors


def test_format_errors_name_the_argument():
    edges = _edges("scalar", "none")
    with pytest.raises(ValueError, match="`block_size`"):
        _build(bs.CSR(block_size=0), edges)
    with pytest.raises(TypeError, match="Procedural layout"):
        _build(bs.Procedural(), edges)
    with pytest.raises(TypeError, match="`weight`"):
        connect.procedural_fixed_outdegree(10, 10, 3, weight=connect.Normal(1.0, 0.1))
    with pytest.raises(TypeError, match="`delay`"):
        connect.procedural_fixed_outdegree(10, 10, 3, delay=np.ones(30))
    with pytest.raises(ValueError, match="`seed`"):
        connect.procedural_fixed_outdegree(10, 10, 3, seed=2**32)
    with pytest.raises(ValueError, match="`seed`"):
        connect.procedural_fixed_probability(10, 10, 0.1, seed=np.random.default_rng(0))
    with pytest.raises(ValueError, match="`k` = 11"):
        connect.procedural_fixed_outdegree(10, 10, 11)
    with pytest.raises(ValueError, match="n_pre == n_post"):
        connect.procedural_fixed_probability(10, 12, 0.1, allow_self=False)
    with pytest.raises(ValueError, match="`p`"):
        connect.procedural_fixed_probability(10, 12, 1.1)
    with pytest.raises(ValueError, match="not a whole number of steps"):
        _build(bs.Procedural(), connect.procedural_fixed_outdegree(10, 10, 3, delay=0.05))


@native
@pytest.mark.parametrize("fmt", ["csr", "procedural"])
def test_native_kernels_add_into_the_ring_in_place(fmt):
    """The CSR and procedural native kernels write their output in place of the ring (no
    copy of the whole ring per call, which a simulation loop pays every step), with and
    without vmap, and leave a caller's ring as it was."""
    if fmt == "csr":
        edges = _edges("per_edge", "per_edge", pair_delays=False)
        conn = _build(bs.CSR(implementation=Implementation.NATIVE_CPU), edges)
        n_ring, target = conn.max_delay, "brainsim_csr_deliver"
    else:
        edges = connect.procedural_fixed_probability(
            N_PRE, N_POST, 0.3, seed=20, weight=connect.Uniform(-0.5, 3.5)
        )
        conn = _build(bs.Procedural(implementation=Implementation.NATIVE_CPU), edges)
        edges, n_ring, target = edges.edges(), 1, "brainsim_procedural_deliver"
    rng = np.random.default_rng(3)
    ring = jnp.asarray(rng.normal(size=n_ring * N_POST), jnp.float32)
    values = jnp.asarray(_values(N_PRE, 0.4, 5))
    one = jax.jit(lambda r, v: conn.deliver(r, 2, v))
    batched = jax.jit(jax.vmap(lambda r, v: conn.deliver(r, 2, v), in_axes=(None, 0)))
    for fn, args in ((one, (ring, values)), (batched, (ring, jnp.stack([values, values[::-1]])))):
        hlo = fn.lower(*args).compile().as_text()
        call = next(line for line in hlo.split("\n") if target in line and "custom-call(" in line)
        assert "output_to_operand_aliasing" in call, call
    before = np.asarray(ring).copy()
    got = one(ring, values)
    np.testing.assert_array_equal(np.asarray(ring), before)
    np.testing.assert_allclose(got, _oracle(before, 2, np.asarray(values), edges, n_ring), **TOL)
    got = batched(ring, jnp.stack([values, values[::-1]]))
    np.testing.assert_array_equal(np.asarray(ring), before)
    np.testing.assert_allclose(
        got[1], _oracle(before, 2, np.asarray(values[::-1]), edges, n_ring), **TOL
    )


ALL_IMPLS = IMPLS + [
    Implementation.PALLAS_TRITON,
    Implementation.PALLAS_PORTABLE,
    Implementation.PALLAS_TPU,
]


def _fused_clear_case(fmt, impl):
    """A connectivity of format ``fmt`` with implementation ``impl``, and its edges."""
    if fmt == "procedural":
        spec = connect.procedural_fixed_probability(
            N_PRE, N_POST, 0.3, seed=21, weight=connect.Uniform(-0.5, 3.5), delay=0.2
        )
        return _build(bs.Procedural(implementation=impl), spec), spec.edges()
    edges = _edges("per_edge", "per_edge", seed=4, pair_delays=False)
    layout = {"csr": bs.CSR, "ell": bs.Sparse}[fmt](implementation=impl)
    return _build(layout, edges), edges


@native
@pytest.mark.parametrize("fmt", ["ell", "csr", "procedural"])
@pytest.mark.parametrize("impl", ALL_IMPLS, ids=lambda i: i.value)
def test_clear_and_deliver_clears_the_row_then_delivers(fmt, impl):
    """``clear_and_deliver`` (the receptor's ring-row clear fused into the first delivery of a
    step) equals clearing row ``cursor mod D`` and then delivering, for every format and
    implementation (Pallas in interpret mode); the native kernels clear the row themselves,
    with no separate clearing kernel. Cursors 0 and 9 hit different rows, and row 9 mod D is
    also a target row of the longest delay."""
    conn, edges = _fused_clear_case(fmt, impl)
    n_ring = conn.max_delay
    rng = np.random.default_rng(6)
    ring = jnp.asarray(rng.normal(size=n_ring * N_POST), jnp.float32)
    values = jnp.asarray(_values(N_PRE, 0.4, 7))
    after = (jnp.zeros(N_POST, jnp.float32),)
    fused = jax.jit(lambda r, v, c: conn.clear_and_deliver(r, c, v, after=after), static_argnums=2)
    for cursor in (0, 9):
        cleared = np.asarray(ring, np.float64).copy()
        row = cursor % n_ring
        cleared[row * N_POST : (row + 1) * N_POST] = 0.0
        expected = _oracle(cleared, cursor, np.asarray(values), edges, n_ring)
        np.testing.assert_allclose(fused(ring, values, cursor), expected, **TOL)
    if impl is Implementation.NATIVE_CPU:
        hlo = fused.lower(ring, values, 9).compile().as_text()
        assert "brainsim_ring_clear" not in hlo
        assert hlo.count("custom-call(") == 1, "one native call: delivery and clear"


@native
@pytest.mark.parametrize("fmt", ["csr", "procedural"])
def test_clear_and_deliver_gradient_and_vmap_equal_the_reference(fmt):
    """Gradients with respect to the ring, the spikes and the weights, and a vmapped batch of
    rings (one native call), equal the reference; the cleared row passes no gradient back."""
    results = []
    for impl in (Implementation.REFERENCE, Implementation.NATIVE_CPU):
        conn, _ = _fused_clear_case(fmt, impl)
        n_ring = conn.max_delay
        rng = np.random.default_rng(8)
        ring = jnp.asarray(rng.normal(size=n_ring * N_POST), jnp.float32)
        rings = jnp.asarray(rng.normal(size=(3, n_ring * N_POST)), jnp.float32)
        cot = jnp.asarray(rng.normal(size=n_ring * N_POST), jnp.float32)
        values = jnp.asarray(_values(N_PRE, 0.4, 9))

        def loss(c, r, v, cot=cot):
            return jnp.sum(cot * c.clear_and_deliver(r, 4, v))

        grads = eqx.filter_grad(lambda args: loss(*args))((conn, ring, values))
        batched = jax.jit(jax.vmap(lambda r, c=conn, v=values: c.clear_and_deliver(r, 4, v)))
        results.append((grads, np.asarray(batched(rings))))
        if impl is Implementation.NATIVE_CPU:
            assert batched.lower(rings).compile().as_text().count("custom-call(") == 1
    (g_ref, out_ref), (g_nat, out_nat) = results
    np.testing.assert_allclose(out_nat, out_ref, **TOL)
    for a, b in zip(jax.tree.leaves(g_ref), jax.tree.leaves(g_nat), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), **TOL)
    row = 4 % n_ring
    ring_grad = np.asarray(g_ref[1])
    assert np.all(ring_grad[row * N_POST : (row + 1) * N_POST] == 0)
    assert np.any(ring_grad != 0)
