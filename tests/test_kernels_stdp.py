"""The native CPU kernels behind plasticity: the trace-based STDP update of ELL synapses
(``ell_trace_update_pre`` / ``_post``) and the active-neuron windows (``active_window``),
against their pure-jnp references."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brainsim.kernels import Implementation, TraceDependence
from brainsim.kernels._active import active_window, for_each_active

from brainsim import kernels

REF, NATIVE = Implementation.REFERENCE, Implementation.NATIVE_CPU
KINDS = {"additive": 0.0, "multiplicative": 1.0, "power": 0.4}
WITHOUT_NATIVE = ("pallas", "one_window")
"""Tests (by name) that do not need the native kernels: the Pallas ones and the jnp windows."""


@pytest.fixture(autouse=True)
def _native_tests_on_the_cpu(request):
    """The native kernel exists on the CPU only: on a GPU machine every test but the Pallas ones
    runs on the CPU device, and the Pallas ones run the compiled kernel on the GPU. Without a
    C++ compiler only the tests of ``WITHOUT_NATIVE`` run."""
    name = request.node.name
    if not kernels.native_cpu_available() and not any(w in name for w in WITHOUT_NATIVE):
        pytest.skip(f"no native kernels: {kernels.native_cpu_status()}")
    if jax.default_backend() == "cpu" or "pallas" in name:
        yield
    else:
        with jax.default_device(jax.devices("cpu")[0]):
            yield


def ell(n_pre, n_post, fan_out, seed, dtype=np.float32):
    """Random ELL storage with padding (target ``n_post``) and random weights, also on the
    padding slots (which no update may touch)."""
    rng = np.random.default_rng(seed)
    targets = np.stack([rng.permutation(n_post)[:fan_out] for _ in range(n_pre)]).astype(np.int32)
    targets[rng.random(targets.shape) < 0.2] = n_post
    weights = rng.uniform(0.05, 0.95, targets.shape).astype(dtype)
    return targets, kernels.ell_post_slots(targets, n_post), jnp.asarray(weights), rng


def dependence(kind, dtype=jnp.float32):
    return TraceDependence(kind, jnp.asarray(0.1, dtype), jnp.asarray(0.9, dtype),
                           jnp.asarray(KINDS[kind], dtype))  # fmt: skip


def both(fn, other=NATIVE):
    """``fn(implementation)`` for the reference and ``other``."""
    return fn(REF), fn(other)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("potentiate", [False, True])
@pytest.mark.parametrize("per_neuron", [False, True])
@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
def test_native_equals_reference(kind, potentiate, per_neuron, density):
    n_pre, n_post = 70, 45
    targets, slots, w, rng = ell(n_pre, n_post, 9, seed=1)
    dep = dependence(kind)
    pre = jnp.asarray(rng.random(n_pre) < density, jnp.float32)
    post = jnp.asarray(rng.random(n_post) < density, jnp.float32)
    x, y = (jnp.asarray(rng.random(n), jnp.float32) for n in (n_pre, n_post))
    a_pre = jnp.asarray(rng.random(n_pre), jnp.float32) if per_neuron else 0.3
    a_post = jnp.asarray(rng.random(n_post), jnp.float32) if per_neuron else 0.3
    rows = both(lambda impl: kernels.ell_trace_update_pre(
        w, targets, pre, a_pre, y, dep, potentiate=potentiate, n_post=n_post,
        implementation=impl))  # fmt: skip
    cols = both(lambda impl: kernels.ell_trace_update_post(
        w, slots, post, a_post, x, dep, potentiate=potentiate, implementation=impl))  # fmt: skip
    for ref, native in (rows, cols):
        np.testing.assert_allclose(np.asarray(native), np.asarray(ref), rtol=2e-7, atol=1e-7)
    if density == 0:
        assert np.array_equal(np.asarray(rows[1]), np.asarray(w))
    elif density == 1:
        changed = np.asarray(rows[1]) != np.asarray(w)
        assert changed[targets < n_post].mean() > 0.9


def test_float64_and_the_formula():
    """In float64 the kernel gives clip(w ± (a f(w)) b) exactly as written, per synapse."""
    jax.config.update("jax_enable_x64", True)
    try:
        n_pre, n_post = 30, 20
        targets, slots, w, rng = ell(n_pre, n_post, 6, seed=2, dtype=np.float64)
        dep = dependence("power", jnp.float64)
        pre = jnp.asarray(rng.random(n_pre) < 0.5, jnp.float64)
        y = jnp.asarray(rng.random(n_post), jnp.float64)
        new = kernels.ell_trace_update_pre(w, targets, pre, 0.25, y, dep, potentiate=True,
                                           n_post=n_post, implementation=NATIVE)  # fmt: skip
        w_np, new_np = np.asarray(w), np.asarray(new)
        for i, s in zip(*np.nonzero(targets < n_post), strict=True):
            hat = np.clip((w_np[i, s] - 0.1) / 0.8, 0, 1)
            expect = np.clip(w_np[i, s] + (0.25 * (1 - hat) ** 0.4) * y[targets[i, s]], 0.1, 0.9)
            expect = expect if pre[i] else w_np[i, s]
            assert abs(new_np[i, s] - expect) < 1e-14
    finally:
        jax.config.update("jax_enable_x64", False)


def test_padding_and_silent_neurons_are_never_touched():
    n_pre, n_post = 40, 30
    targets, slots, w, rng = ell(n_pre, n_post, 8, seed=3)
    pre = np.zeros(n_pre, np.float32)
    post = np.zeros(n_post, np.float32)
    pre[[0, 7, 39]] = 1.0
    post[[3, 29]] = 2.0  # a count, not only 1
    new = kernels.ell_trace_update_pre(w, targets, pre, 0.3, jnp.ones(n_post),
                                       dependence("additive"), potentiate=False, n_post=n_post)
    new = kernels.ell_trace_update_post(new, slots, post, 0.07, jnp.ones(n_pre),
                                        dependence("additive"), potentiate=True)  # fmt: skip
    changed = np.asarray(new) != np.asarray(w)
    touched = (pre[:, None] != 0) | np.isin(targets, np.flatnonzero(post))
    assert not changed[targets == n_post].any()  # padding keeps even its non-zero garbage
    assert np.array_equal(changed & (targets < n_post), touched & (targets < n_post))


@pytest.mark.parametrize("batched_weights", [False, True])
def test_vmap_equals_the_loop(batched_weights):
    n_pre, n_post, batch = 35, 25, 4
    targets, slots, w, rng = ell(n_pre, n_post, 7, seed=4)
    spikes = jnp.asarray(rng.random((batch, n_post)) < 0.3, jnp.float32)
    x = jnp.asarray(rng.random((batch, n_pre)), jnp.float32)
    weights = jnp.stack([w * (1 + 0.1 * b) for b in range(batch)]) if batched_weights else w
    dep = dependence("multiplicative")

    def one(w_b, s, x_b, impl):
        return kernels.ell_trace_update_post(w_b, slots, s, 0.2, x_b, dep, potentiate=True,
                                             implementation=impl)  # fmt: skip

    axes = (0 if batched_weights else None, 0, 0)
    for impl in (REF, NATIVE):
        out = jax.jit(jax.vmap(lambda a, b, c, impl=impl: one(a, b, c, impl), axes))(
            weights, spikes, x
        )
        loop = [one(weights[b] if batched_weights else w, spikes[b], x[b], REF)
                for b in range(batch)]  # fmt: skip
        np.testing.assert_allclose(np.asarray(out), np.stack(loop), rtol=2e-7, atol=1e-7)
    # Nested vmap: one batched call with the two axes folded.
    nested = jax.vmap(jax.vmap(lambda s: one(w, s, x[0], NATIVE)))(spikes.reshape(2, 2, n_post))
    flat = jax.vmap(lambda s: one(w, s, x[0], REF))(spikes)
    np.testing.assert_allclose(np.asarray(nested).reshape(flat.shape), np.asarray(flat),
                               rtol=2e-7, atol=1e-7)  # fmt: skip


def test_forward_derivatives_equal_the_reference_and_finite_differences():
    n_pre, n_post = 30, 20
    targets, _, w, rng = ell(n_pre, n_post, 6, seed=5)
    pre = jnp.asarray(rng.random(n_pre) < 0.5, jnp.float32)
    y = jnp.asarray(rng.uniform(0.2, 0.4, n_post), jnp.float32)
    dep = dependence("multiplicative")

    def f(impl, w, y, a):
        return kernels.ell_trace_update_pre(w, targets, pre, a, y, dep, potentiate=False,
                                            n_post=n_post, implementation=impl)  # fmt: skip

    tangents = (jnp.ones_like(w) * 0.1, jnp.ones_like(y), jnp.float32(1.0))
    ref = jax.jvp(lambda *p: f(REF, *p), (w, y, jnp.float32(0.2)), tangents)
    nat = jax.jvp(lambda *p: f(NATIVE, *p), (w, y, jnp.float32(0.2)), tangents)
    np.testing.assert_allclose(np.asarray(nat[1]), np.asarray(ref[1]), rtol=1e-6, atol=1e-7)
    eps = 1e-3
    fd = (f(NATIVE, w + eps * tangents[0], y + eps, 0.2 + eps)
          - f(NATIVE, w - eps * tangents[0], y - eps, 0.2 - eps)) / (2 * eps)  # fmt: skip
    inside = (np.asarray(ref[0]) > 0.1 + 1e-3) & (np.asarray(ref[0]) < 0.9 - 1e-3)
    np.testing.assert_allclose(np.asarray(nat[1])[inside], np.asarray(fd)[inside], atol=2e-3)


def test_weights_are_updated_in_place_inside_a_scan():
    """No copy of the weight array per step: a reshape of the loop-carried weights around the
    in-place call once made XLA copy them before and after it (14x slower at 40k neurons)."""
    n_pre, n_post = 300, 200
    targets, slots, w, rng = ell(n_pre, n_post, 11, seed=6)
    spikes = jnp.asarray(rng.random((20, n_pre)) < 0.1, jnp.float32)
    dep = dependence("additive")

    def run(w, y):
        def step(carry, s):
            w, y = carry
            w = kernels.ell_trace_update_pre(w, targets, s, 0.01, y, dep, potentiate=False,
                                             n_post=n_post, implementation=NATIVE)
            w = kernels.ell_trace_update_post(w, slots, s[:n_post], 0.01, s, dep,
                                              potentiate=True, implementation=NATIVE)
            return (w, 0.9 * y + s[:n_post]), None  # fmt: skip

        return jax.lax.scan(step, (w, y), spikes)[0]

    hlo = jax.jit(run).lower(w, jnp.zeros(n_post)).compile().as_text()
    shape = f"{n_pre},{w.shape[1]}]"  # also matches a batched f32[1,n_pre,fan_out]
    copies = [line for line in hlo.splitlines() if re.search(r"= f32\[[0-9,]+\]\S* copy\(", line)
              and shape in line]  # fmt: skip
    assert len(copies) <= 1, copies  # at most the one copy of the argument before the loop


def test_bad_arguments_are_named():
    targets, slots, w, _ = ell(10, 8, 3, seed=7)
    dep = dependence("additive")
    with pytest.raises(ValueError, match="`spikes` must have shape \\(10,\\)"):
        kernels.ell_trace_update_pre(w, targets, jnp.ones(9), 0.1, jnp.ones(8), dep,
                                     potentiate=True, n_post=8)  # fmt: skip
    with pytest.raises(ValueError, match="`trace` must have shape \\(10,\\)"):
        kernels.ell_trace_update_post(w, slots, jnp.ones(8), 0.1, jnp.ones(8), dep,
                                      potentiate=True)  # fmt: skip
    with pytest.raises(ValueError, match="`amplitude` must be a scalar or have shape \\(8,\\)"):
        kernels.ell_trace_update_post(w, slots, jnp.ones(8), jnp.ones(10), jnp.ones(10), dep,
                                      potentiate=True)  # fmt: skip
    with pytest.raises(TypeError, match="`dependence` must be a TraceDependence"):
        kernels.ell_trace_update_pre(w, targets, jnp.ones(10), 0.1, jnp.ones(8),
                                     TraceDependence("hebbian", 0.0, 1.0, 0.0),
                                     potentiate=True, n_post=8)  # fmt: skip
    with pytest.raises(ValueError, match="`implementation` must be one of"):
        kernels.ell_trace_update_pre(w, targets, jnp.ones(10), 0.1, jnp.ones(8), dep,
                                     potentiate=True, n_post=8,
                                     implementation=Implementation.PALLAS_TPU)  # fmt: skip


# ------------------------------------------------------------------------- active windows


@pytest.mark.parametrize("n", [1, 63, 64, 65, 200, 1000])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 1.0])
def test_active_window_native_equals_reference(n, density):
    """Also checks the block scan shared by every native kernel (spike_scan.h): sizes below,
    at and above its 64-value block, with a partial last block."""
    rng = np.random.default_rng(n)
    spikes = np.where(rng.random(n) < density, rng.uniform(0.5, 2, n), 0).astype(np.float32)
    spikes[rng.random(n) < 0.1] = -0.0  # negative zero is no spike, as in `s != 0`
    expected = np.flatnonzero(spikes != 0)
    for start, size in ((0, 7), (5, 16), (n, 4), (0, n)):
        want = np.full(size, n)
        got = expected[start : start + size]
        want[: got.size] = got
        for impl in (REF, NATIVE):
            idx, count = jax.jit(lambda s, impl=impl, start=start, size=size: active_window(
                s, start, size, implementation=impl))(jnp.asarray(spikes))  # fmt: skip
            assert int(count) == expected.size
            np.testing.assert_array_equal(np.asarray(idx), want)


def test_active_window_takes_any_dtype_and_vmaps():
    rng = np.random.default_rng(0)
    spikes = rng.random((3, 100)) < 0.2
    for impl in (REF, NATIVE):
        idx, count = jax.vmap(lambda s, impl=impl: active_window(s, 0, 30, implementation=impl))(
            jnp.asarray(spikes)
        )
        for b in range(3):
            nz = np.flatnonzero(spikes[b])
            assert int(count[b]) == nz.size
            np.testing.assert_array_equal(np.asarray(idx[b])[: nz.size], nz)


def test_for_each_active_visits_every_spike_once():
    spikes = jnp.asarray(np.random.default_rng(1).random(500) < 0.3, jnp.float32)

    def visit(impl):
        return for_each_active(spikes, 16, lambda idx, acc: acc.at[idx].add(1, mode="drop"),
                               jnp.zeros(500, jnp.int32), implementation=impl)  # fmt: skip

    for impl in (REF, NATIVE):
        np.testing.assert_array_equal(np.asarray(visit(impl)), np.asarray(spikes != 0))
    # The single window of every neuron (the form a GPU lowers): the same visits.
    once = for_each_active(spikes, 16, lambda idx, acc: acc.at[idx].add(1, mode="drop"),
                           jnp.zeros(500, jnp.int32), single=True)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(once), np.asarray(spikes != 0))


def test_generic_updates_in_one_window_equal_the_window_loop(monkeypatch):
    """The generic row and column updates with one window of every neuron (what a GPU
    lowers) write exactly what the CPU's loop over windows of 4 writes."""
    import functools

    from brainsim.kernels import _plasticity

    n_pre, n_post = 60, 50
    targets, slots, w, rng = ell(n_pre, n_post, 9, seed=4)
    targets, slots = jnp.asarray(targets), jnp.asarray(slots)
    pre = jnp.asarray(rng.random(n_pre) < 0.4, jnp.float32)
    post = jnp.asarray(rng.random(n_post) < 0.4, jnp.float32)

    def fn(values, i, j, valid):
        return values + 0.01 * (i + 1) + 0.001 * (j + 1)  # never zero, depends on both

    def run():
        rows = kernels.ell_update_pre(w, targets, pre, fn, n_post=n_post, capacity=4)
        return rows, kernels.ell_update_post(rows, slots, post, fn, capacity=4)

    looped = run()
    monkeypatch.setattr(_plasticity, "for_each_active",
                        functools.partial(_plasticity.for_each_active, single=True))
    once = run()
    inputs = (np.asarray(w), np.asarray(w)), (np.asarray(looped[0]), np.asarray(once[0]))
    for (a, b), (a_in, b_in) in zip(zip(looped, once, strict=True), inputs, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        # The same synapses change, each once (a second visit would add its increment
        # again); values agree to float rounding (XLA fuses the two programs differently).
        assert (a != a_in).any()
        np.testing.assert_array_equal(a != a_in, b != b_in)
        np.testing.assert_allclose(a, b, rtol=3e-7, atol=0)


@pytest.mark.parametrize("columns", [False, True])
def test_work_split_over_threads_equals_reference(columns):
    """Enough spiking neurons that the kernel splits them over XLA's threads (chunks of
    ~1024 synapses): every synapse is still updated exactly once."""
    n_pre, n_post = 1500, 1200
    targets, slots, w, rng = ell(n_pre, n_post, 40, seed=8)
    spikes = jnp.asarray(rng.random(n_post if columns else n_pre) < 0.6, jnp.float32)
    trace = jnp.asarray(rng.random(n_pre if columns else n_post), jnp.float32)
    dep = dependence("power")

    def run(impl):
        if columns:
            return kernels.ell_trace_update_post(w, slots, spikes, 0.1, trace, dep,
                                                 potentiate=True, implementation=impl)
        return kernels.ell_trace_update_pre(w, targets, spikes, 0.1, trace, dep,
                                            potentiate=False, n_post=n_post,
                                            implementation=impl)  # fmt: skip

    ref, native = both(lambda impl: jax.jit(lambda: run(impl))())
    assert (np.asarray(native) != np.asarray(w)).mean() > 0.4
    np.testing.assert_allclose(np.asarray(native), np.asarray(ref), rtol=2e-7, atol=1e-7)


# ------------------------------------------------------------------ GPU Pallas kernel


PALLAS = Implementation.PALLAS_TRITON


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("capacity", [None, 3])
def test_pallas_kernel_equals_reference_in_interpret_mode(kind, capacity):
    """On CPU the Pallas kernel runs in interpret mode; ``capacity=3`` makes several windows
    (launches) per update, none dropped."""
    n_pre, n_post = 45, 40
    targets, slots, w, rng = ell(n_pre, n_post, 37, seed=9)  # 37: two tiles, a partial one
    dep = dependence(kind)
    pre = jnp.asarray(rng.random(n_pre) < 0.4, jnp.float32)
    post = jnp.asarray(rng.random(n_post) < 0.4, jnp.float32)
    x, y = (jnp.asarray(rng.random(n), jnp.float32) for n in (n_pre, n_post))
    a_post = jnp.asarray(rng.random(n_post), jnp.float32)
    for potentiate in (False, True):
        rows = both(lambda impl, p=potentiate: kernels.ell_trace_update_pre(
            w, targets, pre, 0.3, y, dep, potentiate=p, n_post=n_post, capacity=capacity,
            implementation=impl), PALLAS)  # fmt: skip
        cols = both(lambda impl, p=potentiate: kernels.ell_trace_update_post(
            w, slots, post, a_post, x, dep, potentiate=p, capacity=capacity,
            implementation=impl), PALLAS)  # fmt: skip
        for ref, pal in (rows, cols):
            assert not np.array_equal(np.asarray(ref), np.asarray(w))
            np.testing.assert_allclose(np.asarray(pal), np.asarray(ref), rtol=2e-7, atol=1e-7)


def test_pallas_kernel_never_writes_through_corrupt_indices():
    """Out-of-range targets and slots (corrupt index data) are skipped: interpret mode would
    clamp them, a GPU would write arbitrary memory, so the kernel guards them itself."""
    n_pre, n_post = 20, 16
    targets, slots, w, rng = ell(n_pre, n_post, 6, seed=10)
    bad_targets = targets.copy()
    bad_targets[3, 1], bad_targets[5, 0] = -4, n_post + 7
    bad_slots = np.asarray(slots).copy()
    bad_slots[2, 0], bad_slots[7, 1] = -1, n_pre * 6 + 50
    spikes_pre, spikes_post = jnp.ones(n_pre), jnp.ones(n_post)
    dep = dependence("additive")
    results = []
    for impl in (REF, PALLAS):
        rows = kernels.ell_trace_update_pre(w, bad_targets, spikes_pre, 0.2, jnp.ones(n_post),
                                            dep, potentiate=True, n_post=n_post,
                                            implementation=impl)  # fmt: skip
        cols = kernels.ell_trace_update_post(w, bad_slots, spikes_post, 0.2, jnp.ones(n_pre),
                                             dep, potentiate=True, implementation=impl)  # fmt: skip
        changed_rows = np.asarray(rows) != np.asarray(w)
        assert not changed_rows[3, 1] and not changed_rows[5, 0]
        assert not changed_rows[bad_targets == n_post].any()
        touched = np.zeros(w.size, bool)
        valid = (bad_slots >= 0) & (bad_slots < w.size)
        touched[bad_slots[valid]] = True
        changed_cols = np.asarray(cols).ravel() != np.asarray(w).ravel()
        assert not (changed_cols & ~touched).any() and changed_cols[touched].mean() > 0.8
        results.append((np.asarray(rows), np.asarray(cols)))
    for ref, pal in zip(*results, strict=True):  # and no slot was updated twice
        np.testing.assert_allclose(pal, ref, rtol=2e-7, atol=1e-7)


def _export_stdp(platform, impl, dtype=np.float32):
    targets, slots, w, rng = ell(30, 20, 9, seed=11, dtype=dtype)
    dep = dependence("power", dtype)

    def fn(w, pre, post, x, y):
        w = kernels.ell_trace_update_pre(w, targets, pre, 0.1, y, dep, potentiate=False,
                                         n_post=20, implementation=impl)
        return kernels.ell_trace_update_post(w, slots, post, 0.1, x, dep, potentiate=True,
                                             implementation=impl)  # fmt: skip

    args = (w, jnp.ones(30, dtype), jnp.ones(20, dtype), jnp.ones(30, dtype), jnp.ones(20, dtype))
    from brainsim.kernels import _compat

    with _compat.gpu_lowering_target():
        exported = jax.export.export(
            jax.jit(fn), platforms=[platform],
            disabled_checks=_compat.export_disabled_checks(platform),
        )(*args)  # fmt: skip
    return exported.mlir_module(), _compat


@pytest.mark.parametrize("impl", [PALLAS, Implementation.AUTO])
def test_pallas_kernel_lowers_for_cuda(impl):
    module, compat = _export_stdp("cuda", impl)
    assert module.count(compat.TRITON_CUSTOM_CALL) >= 2  # rows and columns


def test_pallas_kernel_lowers_for_cuda_in_float64(x64):
    module, compat = _export_stdp("cuda", PALLAS, np.float64)
    assert compat.TRITON_CUSTOM_CALL in module


def test_auto_on_tpu_is_the_reference():
    module, compat = _export_stdp("tpu", Implementation.AUTO)
    assert compat.TPU_CUSTOM_CALL not in module and compat.TRITON_CUSTOM_CALL not in module


def test_pallas_kernel_under_vmap():
    n_pre, n_post, batch = 25, 20, 3
    targets, slots, w, rng = ell(n_pre, n_post, 7, seed=12)
    spikes = jnp.asarray(rng.random((batch, n_post)) < 0.4, jnp.float32)
    x = jnp.asarray(rng.random(n_pre), jnp.float32)
    dep = dependence("multiplicative")

    def run(impl):
        return jax.vmap(lambda s: kernels.ell_trace_update_post(
            w, slots, s, 0.2, x, dep, potentiate=True, implementation=impl))(spikes)  # fmt: skip

    ref, pal = both(run, PALLAS)
    np.testing.assert_allclose(np.asarray(pal), np.asarray(ref), rtol=2e-7, atol=1e-7)
