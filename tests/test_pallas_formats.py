"""Pallas kernels of the CSR and procedural formats: interpret mode on CPU against NumPy oracles,
``vmap``/``jvp``/``grad`` against the reference, and lowering for CUDA and TPU without hardware.

Every kernel (Triton atomic scatter, owner block, TPU) runs in Pallas interpret mode; on a GPU
machine the Triton kernels would run compiled (``_where``, as in ``tests/test_pallas.py``).
Cases: padding lanes, empty rows, empty / sparse / all-spiking vectors, duplicate targets within
and across atomic tiles, out-of-range targets and compacted indices (garbage instead of the
sentinel: checked explicitly, since interpret mode clamps where a GPU reads arbitrary memory),
shared and per-synapse weights and delays, several windows per step (small capacity), batches
(one launch with a batch grid axis, nested ``vmap`` too).

Tolerances: float32 sums of at most ~50 terms of magnitude <= 10 (rtol = atol = 1e-5, ~100
ulp): the kernels add the same terms in another order. Procedural synapses are compared bit for
bit: with one spiking neuron per batch element and a zero ring each slot receives at most one
synapse (rules without replacement), or integer-valued sums (constant weight 1), so any
difference would be a differently regenerated synapse. The oracle regenerates them on the host
(``procedural_synapses_numpy``, itself checked bit for bit against jnp in ``tests/test_formats.py``).

Interpret mode compiles slowly: each compiled function serves several data variants at once
(a batch), and every shape is used by one test only.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brainsim.kernels import Implementation, _compact, _compat
from brainsim.kernels import _procedural_rng as gen
from conftest import pallas_grids as _pallas_grids

from brainsim import kernels

PALLAS = [Implementation.PALLAS_TRITON, Implementation.PALLAS_PORTABLE, Implementation.PALLAS_TPU]
_BACKEND = {
    Implementation.PALLAS_TRITON: "gpu",
    Implementation.PALLAS_PORTABLE: "gpu",
    Implementation.PALLAS_TPU: "tpu",
}


@pytest.fixture(autouse=True)
def _kernel_device(request):
    """Interpret on the CPU unless the default device is the kernel's own accelerator."""
    callspec = getattr(request.node, "callspec", None)
    impl = callspec.params.get("impl") if callspec else None
    backend = jax.default_backend()
    if impl in _BACKEND and backend not in ("cpu", _BACKEND[impl]):
        with jax.default_device(jax.devices("cpu")[0]):
            yield
    else:
        yield


@pytest.fixture
def corrupt_windows(monkeypatch):
    """Compacted spike lists whose padding holds garbage (negative, past the end, huge) instead
    of the sentinel: every kernel must check each index before use."""
    original = _compact.window

    def corrupt(counts, start, capacity):
        idx = original(counts, start, capacity)
        n = counts.inclusive.shape[-1]
        garbage = jnp.asarray([-1, n, n + 7, 2**30, -(2**30)], jnp.int32)
        return jnp.where(idx == n, garbage[jnp.arange(capacity) % garbage.size], idx)

    monkeypatch.setattr(_compact, "window", corrupt)


def _close(got, expected, tol=1e-5):
    np.testing.assert_allclose(np.asarray(got), expected, rtol=tol, atol=tol)


# ------------------------------------------------------------------------------------ CSR

N_PRE, N_POST, N_RING = 23, 13, 4
HUB = 45  # longer than one 32-lane atomic tile


def _csr_structure(seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 6, N_PRE)
    lengths[2] = 0  # an empty row
    lengths[3] = HUB
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    n_syn = int(indptr[-1])
    indices = rng.integers(0, N_POST, n_syn).astype(np.int32)
    delays = rng.integers(1, N_RING + 1, n_syn).astype(np.int32)
    hub = slice(indptr[3], indptr[4])
    indices[hub][:40] = 2  # duplicates within and across the hub's two tiles
    delays[hub][:40] = 1
    return indptr, indices, delays


def _csr_oracle(ring, cursor, spikes, indptr, indices, weights, delays, hd=1):
    out = np.array(ring, np.float64)
    w = np.broadcast_to(weights, indices.shape)
    for i in np.flatnonzero(spikes):
        for s in range(indptr[i], indptr[i + 1]):
            t = indices[s]
            if 0 <= t < N_POST:
                d = hd if delays is None else delays[s]
                out[((cursor + d) % N_RING) * N_POST + t] += spikes[i] * w[s]
    return out


def _csr(impl, capacity, ring, cursor, spikes, indptr, indices, weights, delays, hd=1):
    return kernels.csr_deliver(
        ring,
        cursor,
        spikes,
        indptr,
        indices,
        weights,
        delays,
        n_post=N_POST,
        homogeneous_delay=hd,
        capacity=capacity,
        implementation=impl,
    )


def _csr_variants():
    """One structure, four data variants: empty (cursor 0), 30% (5), all spiking (large
    cursor), all spiking with corrupt targets and delays that wrap."""
    indptr, indices, delays = _csr_structure()
    rng = np.random.default_rng(1)
    out = []
    for density, cursor in [(0.0, 0), (0.3, 5), (1.0, 2**20 + 3), (1.0, 3)]:
        spikes = np.where(rng.random(N_PRE) < density, rng.uniform(0.5, 2.0, N_PRE), 0.0)
        if density > 0:
            spikes[2:4] = [1.5, -0.5]  # the empty row and the hub spike
        idx, dl = indices.copy(), delays.copy()
        if cursor == 3:
            idx[[0, 5, 9, 60]] = [-5, N_POST, np.iinfo(np.int32).max, np.iinfo(np.int32).min]
            dl[[1, 6]] = [-3, 10 * N_RING + 1]
        weights = rng.normal(size=idx.size)
        ring = rng.normal(size=N_RING * N_POST)
        out.append(
            (
                ring.astype(np.float32),
                cursor,
                spikes.astype(np.float32),
                indptr,
                idx,
                weights.astype(np.float32),
                dl,
            )
        )
    return out


@pytest.mark.parametrize("impl", PALLAS, ids=lambda i: i.value)
def test_csr_per_synapse_matches_oracle(impl, corrupt_windows):
    """Per-synapse weights and delays, every argument batched (4 variants in one launch per
    window); capacity 4: all spiking needs 6 windows (atomic), the owner block's synapse
    windows of 32 need 4."""
    variants = _csr_variants()
    batch = [np.stack([np.asarray(v[i]) for v in variants]) for i in range(7)]
    got = jax.jit(jax.vmap(functools.partial(_csr, impl, 4)))(*batch)
    for g, v in zip(np.asarray(got), variants, strict=True):
        _close(g, _csr_oracle(*v))
    np.testing.assert_array_equal(np.asarray(got)[0], variants[0][0])  # nothing spiked


@pytest.mark.parametrize("impl", PALLAS, ids=lambda i: i.value)
def test_csr_shared_weight_one_delay_under_nested_vmap(impl):
    """A shared weight and a homogeneous delay of 3; vmap over weights (outer) and spikes
    (inner) is one launch whose grid leads with the merged batch 2 x 3; the structure stays
    shared. Includes an empty and an all-spiking vector."""
    indptr, indices, _ = _csr_structure(2)
    rng = np.random.default_rng(3)
    ring = rng.normal(size=N_RING * N_POST).astype(np.float32)
    spikes_b = np.where(rng.random((3, N_PRE)) < 0.4, 1.0, 0.0).astype(np.float32)
    spikes_b[1] = 0.0
    spikes_b[2] = 1.0
    weights_b = np.asarray([1.5, -0.25], np.float32)

    def one(s, w):
        return _csr(impl, 5, ring, 6, s, indptr, indices, w, None, hd=3)

    fn = jax.vmap(jax.vmap(one, in_axes=(0, None)), in_axes=(None, 0))
    grids = _pallas_grids(jax.make_jaxpr(fn)(spikes_b, weights_b))
    assert grids and all(g[0] == 6 for g in grids), grids  # batched, not a loop
    got = np.asarray(jax.jit(fn)(spikes_b, weights_b))
    for a in range(2):
        for b in range(3):
            expected = _csr_oracle(ring, 6, spikes_b[b], indptr, indices, weights_b[a], None, 3)
            _close(got[a, b], expected)


def _csr_slots(indptr, indices, delays, cursor):
    """Per synapse: its row and its flat ring slot (-1 where the target is out of range)."""
    rows = np.repeat(np.arange(N_PRE), np.diff(indptr))
    ok = (indices >= 0) & (indices < N_POST)
    return rows, np.where(ok, ((cursor + delays) % N_RING) * N_POST + indices, -1)


def test_csr_transforms_equal_the_dense_sum():
    """vmap of jvp and of the VJP (what grad runs) with respect to spikes and weights: the
    tangent is the sum over *all* synapses (silent neurons get gradients too), checked
    against NumPy."""
    indptr, indices, delays = _csr_structure(4)
    rng = np.random.default_rng(5)
    ring = rng.normal(size=N_RING * N_POST).astype(np.float32)
    cot = rng.normal(size=N_RING * N_POST).astype(np.float32)
    weights = rng.normal(size=indices.size).astype(np.float32)
    spikes = np.where(rng.random((2, N_PRE)) < 0.4, 1.0, 0.0).astype(np.float32)

    def one(s, w):
        def f(s, w):
            return _csr(Implementation.PALLAS_TRITON, 64, ring, 2, s, indptr, indices, w, delays)

        out, jvp = jax.linearize(f, s, w)
        tangent = jvp(jnp.ones_like(s), jnp.ones_like(w))
        return out, tangent, jax.linear_transpose(jvp, s, w)(jnp.asarray(cot))

    out, tangent, (g_s, g_w) = jax.jit(jax.vmap(one, in_axes=(0, None)))(
        jnp.asarray(spikes), jnp.asarray(weights)
    )
    rows, slots = _csr_slots(indptr, indices, delays, 2)
    live = slots >= 0
    for b in range(2):
        _close(out[b], _csr_oracle(ring, 2, spikes[b], indptr, indices, weights, delays))
        expected = np.zeros(ring.size)
        np.add.at(expected, slots[live], (weights + spikes[b][rows])[live])
        _close(tangent[b], expected)
        gs = np.zeros(N_PRE)
        np.add.at(gs, rows[live], (weights * cot[slots])[live])
        _close(g_s[b], gs)
        _close(g_w[b], np.where(live, spikes[b][rows] * cot[slots], 0.0))
        assert np.any(gs[spikes[b] == 0] != 0)


# ----------------------------------------------------------------------------- procedural

P_PRE, P_RING, P_DELAY, P_CURSOR = 24, 3, 2, 4
RULES = {
    # Distinct targets without self-connections, per-neuron counts, uniform weights: the
    # weight variates are exact in float32 (loc -0.5, scale 2).
    "counts_no_self": dict(n_post=P_PRE, fan_out=9, seed=5, replace=False, allow_self=False),
    # With replacement (multapses: merged before the atomic add), 40 synapses = 2 tiles,
    # constant weight 1 (integer sums, exact in any order).
    "replace": dict(n_post=19, fan_out=40, seed=6, replace=True, allow_self=True),
}


def _proc_args(name):
    rng = np.random.default_rng(7)
    counts = rng.integers(0, 10, P_PRE).astype(np.int32) if name == "counts_no_self" else None
    if counts is not None:
        counts[0] = 0  # an empty row
    loc, scale = (-0.5, 2.0) if name == "counts_no_self" else (1.0, None)
    return counts, loc, scale


def _proc_oracle(name, spikes):
    rule_kw = RULES[name]
    counts, loc, scale = _proc_args(name)
    rule = gen.ProceduralRule(
        P_PRE,
        rule_kw["n_post"],
        rule_kw["fan_out"],
        rule_kw["seed"],
        rule_kw["replace"],
        rule_kw["allow_self"],
    )
    rows = np.arange(P_PRE)[:, None]
    j = np.arange(rule.fan_out)[None, :]
    valid = np.broadcast_to(
        j < (rule.fan_out if counts is None else counts[:, None]), (P_PRE, rule.fan_out)
    )
    t, g = gen.procedural_synapses_numpy(rule, rows, j, valid, need_g=scale is not None)
    w = np.float32(loc) + (0 if scale is None else np.float32(scale) * g)
    w = np.broadcast_to(np.float32(w), t.shape)
    out = np.zeros((spikes.shape[0], P_RING * rule.n_post), np.float32)
    base = ((P_CURSOR + P_DELAY) % P_RING) * rule.n_post
    for b, s in enumerate(spikes):
        for i in np.flatnonzero(s):
            for k in np.flatnonzero(valid[i]):
                out[b, base + t[i, k]] += np.float32(s[i]) * w[i, k]
    return out


@pytest.mark.parametrize(
    "impl, name",
    [
        (Implementation.PALLAS_TRITON, "counts_no_self"),
        (Implementation.PALLAS_TRITON, "replace"),
        (Implementation.PALLAS_PORTABLE, "counts_no_self"),
        (Implementation.PALLAS_TPU, "replace"),
    ],
    ids=lambda x: getattr(x, "value", x),
)
def test_procedural_regenerates_the_host_synapses_bitwise(impl, name, corrupt_windows):
    """A batch of every one-hot spike vector (each reads back one neuron's synapses exactly),
    an empty vector and an all-spiking one (capacity 5: 5 windows). The owner-block and TPU
    kernels share their regeneration, so each rule is run by the atomic kernel (which
    regenerates in the kernel) and by one of them."""
    counts, loc, scale = _proc_args(name)
    spikes = np.concatenate([np.eye(P_PRE), np.zeros((1, P_PRE)), np.ones((1, P_PRE))])
    spikes = spikes.astype(np.float32)
    n_post = RULES[name]["n_post"]
    ring = np.zeros(P_RING * n_post, np.float32)

    def one(s):
        return kernels.procedural_deliver(
            ring,
            P_CURSOR,
            s,
            loc,
            scale,
            counts,
            delay=P_DELAY,
            capacity=5,
            implementation=impl,
            **RULES[name],
        )

    got = np.asarray(jax.jit(jax.vmap(one))(spikes))
    expected = _proc_oracle(name, spikes)
    np.testing.assert_array_equal(got[:-1], expected[:-1])
    if scale is None:
        np.testing.assert_array_equal(got[-1], expected[-1])  # integer sums
    else:
        _close(got[-1], expected[-1])
    assert np.any(got[:P_PRE] != 0)


def test_procedural_vmap_grad_equals_the_dense_sum():
    """vmap (spike vectors) of grad with respect to spikes, loc and scale: the dense jnp
    tangent over every regenerated synapse, checked against NumPy; one launch per window."""
    name = "counts_no_self"
    counts, loc, scale = _proc_args(name)
    rule = RULES[name]
    rng = np.random.default_rng(8)
    spikes = np.where(rng.random((2, P_PRE)) < 0.3, 1.0, 0.0).astype(np.float32)
    cot = rng.normal(size=P_RING * P_PRE).astype(np.float32)
    ring = jnp.zeros(P_RING * P_PRE, jnp.float32)

    def loss(s, lo, sc):
        out = kernels.procedural_deliver(
            ring,
            P_CURSOR,
            s,
            lo,
            sc,
            counts,
            delay=P_DELAY,
            capacity=8,
            implementation=Implementation.PALLAS_TRITON,
            **rule,
        )
        return jnp.sum(jnp.asarray(cot) * out)

    fn = jax.vmap(jax.grad(loss, argnums=(0, 1, 2)), in_axes=(0, None, None))
    args = (jnp.asarray(spikes), jnp.float32(loc), jnp.float32(scale))
    grids = _pallas_grids(jax.make_jaxpr(fn)(*args))
    assert grids and all(g[0] == 2 for g in grids), grids  # one batched launch
    g_s, g_loc, g_scale = jax.jit(fn)(*args)
    r = gen.ProceduralRule(
        P_PRE, rule["n_post"], rule["fan_out"], rule["seed"], rule["replace"], rule["allow_self"]
    )
    j = np.arange(r.fan_out)[None, :]
    valid = np.broadcast_to(j < counts[:, None], (P_PRE, r.fan_out))
    t, g = gen.procedural_synapses_numpy(r, np.arange(P_PRE)[:, None], j, valid)
    c = np.where(valid, cot[((P_CURSOR + P_DELAY) % P_RING) * P_PRE + np.where(valid, t, 0)], 0)
    w = loc + scale * g.astype(np.float64)
    for b in range(2):
        _close(g_s[b], (w * c).sum(1), 1e-4)
        _close(g_loc[b], spikes[b] @ c.sum(1), 1e-4)
        _close(g_scale[b], spikes[b] @ (g * c).sum(1), 1e-4)
        assert np.any(np.asarray(g_s[b])[spikes[b] == 0] != 0)


# -------------------------------------------------------------------- lowering, no hardware


def _both_formats(impl, batch=2):
    """One function delivering through a CSR projection (per-synapse weights and delays) and
    both procedural rules, batched over spike vectors."""
    indptr, indices, delays = _csr_structure(9)
    weights = np.linspace(-1, 1, indices.size).astype(np.float32)
    rings = {n: np.zeros(P_RING * r["n_post"], np.float32) for n, r in RULES.items()}

    def one(s_csr, s_proc):
        out = [
            _csr(
                impl,
                4,
                np.zeros(N_RING * N_POST, np.float32),
                1,
                s_csr,
                indptr,
                indices,
                weights,
                delays,
            )
        ]
        for name, rule in RULES.items():
            counts, loc, scale = _proc_args(name)
            out.append(
                kernels.procedural_deliver(
                    rings[name],
                    1,
                    s_proc,
                    loc,
                    scale,
                    counts,
                    delay=P_DELAY,
                    capacity=4,
                    implementation=impl,
                    **rule,
                )
            )
        return out

    args = (np.ones((batch, N_PRE), np.float32), np.ones((batch, P_PRE), np.float32))
    return jax.jit(jax.vmap(one)), args


def _export(platform, impl):
    fn, args = _both_formats(impl)
    with _compat.gpu_lowering_target():
        exported = jax.export.export(
            fn, platforms=[platform], disabled_checks=_compat.export_disabled_checks(platform)
        )(*args)
    return exported.mlir_module()


@pytest.mark.parametrize(
    "platform, impl",
    [
        ("cuda", Implementation.AUTO),  # AUTO picks the Triton atomic kernels on CUDA
        ("cuda", Implementation.PALLAS_PORTABLE),
        ("tpu", Implementation.AUTO),  # and the TPU kernels on a TPU (float32)
    ],
    ids=lambda x: getattr(x, "value", x),
)
def test_kernels_lower_without_hardware(platform, impl):
    """Triton IR inside CUDA custom calls / Mosaic TPU custom calls, one per kernel (CSR and
    both procedural rules): the in-kernel hash, cycle walk and data-dependent row loops all
    lower. Compiling that IR to machine code needs the device toolchain and is not checked."""
    module = _export(platform, impl)
    target = _compat.TRITON_CUSTOM_CALL if platform == "cuda" else _compat.TPU_CUSTOM_CALL
    assert module.count(target) >= 3, module.count(target)


def test_forced_kernel_refuses_a_foreign_platform():
    with pytest.raises(NotImplementedError, match="not found for platform tpu"):
        _export("tpu", Implementation.PALLAS_TRITON)


def test_empty_projections_and_capacity_errors():
    ring = jnp.arange(6.0, dtype=jnp.float32)
    got = kernels.procedural_deliver(
        ring,
        0,
        jnp.ones(4),
        1.0,
        n_post=3,
        fan_out=0,
        seed=1,
        implementation=Implementation.PALLAS_TRITON,
    )
    np.testing.assert_array_equal(got, ring)
    with pytest.raises(ValueError, match="capacity"):
        kernels.csr_deliver(
            ring,
            0,
            jnp.ones(2),
            jnp.asarray([0, 1, 2]),
            jnp.asarray([0, 1]),
            1.0,
            n_post=3,
            capacity=0,
        )


# ------------------------------------------------------------------ no loops on the host


def _host_loops(closed_jaxpr):
    """``while`` loops outside Pallas kernels (inside a kernel a loop runs on the device)."""
    found = []

    def walk(jx):
        for eqn in jx.eqns:
            if eqn.primitive.name == "while":
                found.append(eqn)
            if eqn.primitive.name != "pallas_call":
                for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                    walk(sub)

    walk(closed_jaxpr.jaxpr)
    return found


def test_gpu_atomic_kernels_need_no_loop_on_the_host():
    """On a GPU, XLA evaluates the predicate of a data-dependent ``while`` on the host: a device
    round trip per iteration (per-step windows of spikes made COBA 4k cost ~1 ms per step on an
    H100). The Triton kernels of every format and of the STDP update cover all spikes in one
    launch, whatever the count: a capacity far below the spike count must not add a loop."""
    triton = Implementation.PALLAS_TRITON
    rng = np.random.default_rng(0)
    spikes = jnp.ones(N_PRE, jnp.float32)  # every neuron spikes; capacity 2
    indptr, indices, delays = _csr_structure()
    targets = jnp.asarray(rng.integers(0, N_POST, (N_PRE, 5)), jnp.int32)
    weights = jnp.asarray(rng.normal(size=(N_PRE, 5)), jnp.float32)
    ring = jnp.zeros(N_RING * N_POST, jnp.float32)
    dep = kernels.TraceDependence("additive", jnp.float32(0.0), jnp.float32(1.0),
                                  jnp.float32(0.0))  # fmt: skip
    slots = kernels.ell_post_slots(np.asarray(targets), N_POST)
    ops = {
        "ell": lambda: kernels.ell_deliver(ring, 3, spikes, targets, weights, n_post=N_POST,
                                           homogeneous_delay=1, capacity=2,
                                           implementation=triton),  # fmt: skip
        "csr": lambda: _csr(triton, 2, ring, 3, spikes, indptr, indices,
                            jnp.ones(indices.size, jnp.float32), delays),  # fmt: skip
        "procedural": lambda: kernels.procedural_deliver(
            jnp.zeros(P_RING * P_PRE, jnp.float32), P_CURSOR, jnp.ones(P_PRE, jnp.float32),
            1.0, None, None, delay=P_DELAY, capacity=2, implementation=triton,
            **RULES["counts_no_self"]),  # fmt: skip
        "stdp_rows": lambda: kernels.ell_trace_update_pre(
            weights, targets, spikes, 0.1, jnp.ones(N_POST), dep, potentiate=True,
            n_post=N_POST, capacity=2, implementation=triton),  # fmt: skip
        "stdp_columns": lambda: kernels.ell_trace_update_post(
            weights, slots, jnp.ones(N_POST), 0.1, jnp.ones(N_PRE), dep, potentiate=False,
            capacity=2, implementation=triton),  # fmt: skip
    }
    for name, op in ops.items():
        jaxpr = jax.make_jaxpr(op)()
        assert _pallas_grids(jaxpr), name  # the kernel is there
        assert not _host_loops(jaxpr), name
    # The owner-block kernel does loop over windows (it needs the capacity to bound its
    # synapse streams): the check can fail.
    owner = jax.make_jaxpr(lambda: kernels.ell_deliver(
        ring, 3, spikes, targets, weights, n_post=N_POST, homogeneous_delay=1, capacity=2,
        implementation=Implementation.PALLAS_PORTABLE))()  # fmt: skip
    assert _host_loops(owner)


def test_csr_reference_off_the_cpu_delivers_what_the_loop_delivers(monkeypatch):
    """Off the CPU the jnp CSR reference reads every stored synapse in one block instead of
    looping over blocks of the spiking rows' synapses: the same ring, for every variant
    (empty, sparse, all spiking, corrupt targets and delays)."""
    from brainsim.kernels import _reference

    def run(v):
        ring, cursor, spikes, indptr, indices, weights, delays = map(jnp.asarray, v)
        return np.asarray(_reference.csr_deliver(
            ring, cursor, spikes, indptr, indices, weights, delays, n_post=N_POST,
            homogeneous_delay=1, block_size=4))  # fmt: skip

    variants = _csr_variants()
    looped = [run(v) for v in variants]
    monkeypatch.setattr(jax.lax, "platform_dependent",
                        lambda *args, default, **branches: default(*args))  # fmt: skip
    for v, expected in zip(variants, looped, strict=True):
        np.testing.assert_allclose(run(v), expected, rtol=1e-6, atol=1e-6)
        _close(run(v), _csr_oracle(*v))
