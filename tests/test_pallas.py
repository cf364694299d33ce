"""brainsim.kernels Pallas kernels: interpret mode on CPU against a NumPy oracle and the jnp
reference, and lowering for CUDA and TPU without the hardware.

Every Pallas implementation (Triton atomic scatter, the deterministic owner-block kernel, the TPU
one-hot kernel) runs in Pallas interpret mode on a CPU; on a machine with the kernel's own
accelerator the same tests run the compiled kernel there (a GPU machine checks the Triton
kernels for real). The cases cover padding and sink slots, empty and
all-spiking vectors, duplicate targets (merged before Triton's ``atomic_add``, whose interpret
mode loses duplicates), corrupt targets, delays and compacted indices, more spikes than the
capacity (several launches), shared and per-synapse weights and delays, float64, ``vmap`` (one
launch with a batch grid axis, nested too), ``grad``, ``jvp`` and ``vmap`` of ``grad``.

Tolerances: float32 sums of at most ~10 terms of magnitude <= 10 (rtol = atol = 1e-5, ~100 ulp);
the kernels add the same terms as the oracle in another order. float64: 1e-12.

Lowering: ``jax.export`` for ``cuda`` and ``tpu`` (no plugin needed); optionally, with the
``triton`` package installed, the Triton IR is compiled to an sm_90 cubin.

Sizes are small and shapes shared between cases (interpret mode is slow to compile): one
compiled function per (implementation, layout, capacity) serves every data variant.
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brainsim.kernels import Implementation, _compact, _compat, _pallas_gpu, _pallas_tpu
from conftest import pallas_grids as _pallas_grids

from brainsim import kernels

N_PRE, N_POST, FAN_OUT, N_RING, HD = 37, 29, 7, 4, 2
PALLAS = [Implementation.PALLAS_TRITON, Implementation.PALLAS_PORTABLE, Implementation.PALLAS_TPU]
LAYOUTS = {  # name: (shared weight, per-synapse delays)
    "shared_weight_one_delay": (True, False),
    "per_synapse": (False, True),
}


def _problem(seed, density, layout, dtype=np.float32, fan_out=FAN_OUT):
    shared_weight, hetero = LAYOUTS[layout]
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, N_POST, (N_PRE, fan_out)).astype(np.int32)
    targets[rng.random((N_PRE, fan_out)) < 0.2] = N_POST  # padding
    targets[0, :3] = targets[0, 3]  # duplicate targets in one row
    targets[1, :] = targets[1, 0]  # a row that hits one neuron with every synapse
    targets[2, :] = N_POST  # a row of padding only
    spikes = np.where(rng.random(N_PRE) < density, rng.uniform(0.5, 2.0, N_PRE), 0.0)
    if density > 0:
        spikes[:3] = [1.0, -0.5, 2.0]  # the special rows spike; spike values are not just 1
    weights = np.asarray(1.5) if shared_weight else rng.normal(size=(N_PRE, fan_out))
    delays = None
    if hetero:
        delays = rng.integers(1, N_RING + 1, (N_PRE, fan_out)).astype(np.int32)
        delays[1, :] = delays[1, 0]  # the duplicates of row 1 also share their delay
    ring = rng.normal(size=N_RING * N_POST)
    return ring.astype(dtype), spikes.astype(dtype), targets, np.asarray(weights, dtype), delays


def _oracle(ring, cursor, spikes, targets, weights, delays):
    out = np.array(ring, dtype=np.float64)
    w = np.broadcast_to(weights, targets.shape)
    for i in np.flatnonzero(spikes):
        for k in range(targets.shape[1]):
            t = targets[i, k]
            if 0 <= t < N_POST:
                d = HD if delays is None else delays[i, k]
                out[((cursor + d) % N_RING) * N_POST + t] += spikes[i] * w[i, k]
    return out


def _deliver(impl, capacity, ring, cursor, spikes, targets, weights, delays):
    return kernels.ell_deliver(
        ring,
        cursor,
        spikes,
        targets,
        weights,
        delays,
        n_post=N_POST,
        homogeneous_delay=HD,
        capacity=capacity,
        implementation=impl,
    )


_KERNEL_BACKEND = {
    Implementation.PALLAS_TRITON: "gpu",
    Implementation.PALLAS_PORTABLE: "gpu",
    Implementation.PALLAS_TPU: "tpu",
}


def _where(impl):
    """Run on the default device if it is the kernel's own accelerator (compiled kernel) or a
    CPU (interpret mode); on another accelerator, run on the CPU in interpret mode. On a GPU
    machine the Triton kernels are thus checked compiled, on the GPU, by the same tests."""
    backend = jax.default_backend()
    if impl in _KERNEL_BACKEND and backend not in ("cpu", _KERNEL_BACKEND[impl]):
        return jax.default_device(jax.devices("cpu")[0])
    return contextlib.nullcontext()


@pytest.fixture(autouse=True)
def _kernel_device(request):
    callspec = getattr(request.node, "callspec", None)
    impl = callspec.params.get("impl") if callspec else None
    with _where(impl):
        yield


def _close(got, expected, tol=1e-5):
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


# ------------------------------------------------------------------------ against the oracle


def _variants():
    """Data variants sharing one shape: empty, 30% and all-spiking vectors, cursors small and
    large, duplicate and corrupt targets, corrupt delays (they wrap like the reference)."""
    out = []
    for seed, density, cursor in [(1, 0.0, 0), (2, 0.3, 5), (3, 1.0, 2**20 + 3), (4, 1.0, 3)]:
        ring, spikes, targets, weights, delays = _problem(seed, density, "per_synapse")
        if seed == 4:
            targets[3, 0], targets[4, 1] = -5, N_POST + 100
            targets[5, 2], targets[6, 3] = np.iinfo(np.int32).max, np.iinfo(np.int32).min
            delays[7, 0], delays[8, 1] = -3, 10 * N_RING + 1
        out.append((ring, cursor, spikes, targets, weights, delays))
    return out


@pytest.mark.parametrize("impl", PALLAS, ids=lambda i: i.value)
def test_matches_oracle_with_overflowing_capacity(impl):
    """Per-synapse weights and delays; capacity 5, so 30% density (~13 spikes) needs 3 launches
    and all spiking (37) needs 8. The variants run as one batch (every argument batched)."""
    variants = _variants()
    batch = [np.stack([np.asarray(v[i]) for v in variants]) for i in range(6)]
    got = np.asarray(jax.jit(jax.vmap(functools.partial(_deliver, impl, 5)))(*batch))
    for g, v in zip(got, variants, strict=True):
        _close(g, _oracle(*v))
    np.testing.assert_array_equal(got[0], variants[0][0])  # nothing spiked: ring untouched


@pytest.mark.parametrize("impl", PALLAS, ids=lambda i: i.value)
def test_shared_weight_one_delay_under_nested_vmap(impl):
    """Shared weight and one delay; vmap over weights (outer) and spikes (inner) runs one launch
    per window whose grid leads with the merged batch 2 x 3, targets stay shared."""
    ring, spikes, targets, weight, _ = _problem(10, 0.4, "shared_weight_one_delay")
    rng = np.random.default_rng(11)
    spikes_b = np.where(rng.random((3, N_PRE)) < 0.4, 1.0, 0.0).astype(np.float32)
    spikes_b[2] = 1.0  # all spiking: 8 launches of capacity 5
    weights_b = np.asarray([1.5, -0.25], np.float32)

    def one(s, w):
        return _deliver(impl, 5, ring, 7, s, targets, w, None)

    fn = jax.vmap(jax.vmap(one, in_axes=(0, None)), in_axes=(None, 0))
    grids = _pallas_grids(jax.make_jaxpr(fn)(spikes_b, weights_b))
    # The interpreted (CPU) and compiled branches of platform_dependent: one launch each.
    assert len(grids) == 2 and all(g[0] == 6 for g in grids), grids
    got = np.asarray(jax.jit(fn)(spikes_b, weights_b))
    for a in range(2):
        for b in range(3):
            _close(got[a, b], _oracle(ring, 7, spikes_b[b], targets, weights_b[a], None))


@pytest.mark.parametrize(
    "impl", [Implementation.PALLAS_TRITON, Implementation.PALLAS_PORTABLE], ids=lambda i: i.value
)
def test_corrupt_compacted_indices_are_skipped(impl, monkeypatch):
    """A compacted list whose padding holds garbage instead of the sentinel delivers nothing
    extra: the atomic kernel checks each index in the kernel, the owner-block and TPU kernels in
    their shared gather (``active_synapses``)."""
    original = _compact.window

    def corrupt(counts, start, capacity):
        idx = original(counts, start, capacity)
        garbage = jnp.asarray([-1, N_PRE, N_PRE + 7, 2**30, -(2**30)], jnp.int32)
        junk = garbage[jnp.arange(capacity) % garbage.size]
        return jnp.where(idx == N_PRE, junk, idx)

    monkeypatch.setattr(_compact, "window", corrupt)
    ring, spikes, targets, weights, delays = _problem(6, 0.3, "per_synapse")
    fn = jax.jit(functools.partial(_deliver, impl, 8))  # fresh trace: the patch is in effect
    got = fn(ring, 4, spikes, targets, weights, delays)
    _close(np.asarray(got), _oracle(ring, 4, spikes, targets, weights, delays))


def test_duplicates_across_and_within_atomic_tiles():
    """Fan-out 40: two tiles of 32 lanes. Row 0 sends all 40 synapses to one slot (duplicates
    within and across tiles), row 1 alternates two slots."""
    ring, spikes, targets, weights, delays = _problem(7, 0.5, "per_synapse", fan_out=40)
    targets[0, :] = 11
    delays[0, :] = 2
    targets[1, :] = np.where(np.arange(40) % 2, 3, 4)
    delays[1, :] = 1
    spikes[:2] = [1.0, 1.0]
    fn = jax.jit(functools.partial(_deliver, Implementation.PALLAS_TRITON, 8))
    with _where(Implementation.PALLAS_TRITON):
        got = np.asarray(fn(ring, 0, spikes, targets, weights, delays))
    _close(got, _oracle(ring, 0, spikes, targets, weights, delays))


def test_merge_duplicates_keeps_sums_and_makes_addresses_unique():
    """Interpret mode keeps one of several equal addresses in an ``atomic_add``, so it cannot
    see a merge that leaves duplicates behind (a GPU would add them all): check the merge
    itself. Live addresses must be unique, sums per slot unchanged, redirected lanes zero."""
    rng = np.random.default_rng(17)
    lanes, ring_len = 32, 20
    sink = ring_len + np.arange(lanes)
    for trial in range(20):
        slot = rng.integers(0, 6 if trial % 2 else ring_len, lanes)
        slot = np.where(rng.random(lanes) < 0.2, sink, slot)  # padding lanes already sunk
        value = rng.normal(size=lanes).astype(np.float32)
        got_slot, got_value = map(np.asarray, _pallas_gpu.merge_duplicates(slot, value, sink))
        assert np.unique(got_slot).size == lanes  # every address distinct, sinks included
        expected = np.zeros(ring_len + lanes)
        np.add.at(expected, slot, value)
        merged = np.zeros(ring_len + lanes)
        np.add.at(merged, got_slot, got_value)
        _close(merged[:ring_len], expected[:ring_len])
        moved = got_slot != slot
        assert np.all(got_value[moved] == 0) and np.all(got_slot[moved] == sink[moved])


def test_tpu_kernel_under_the_tpu_interpreter():
    """The TPU kernel under ``pltpu.InterpretParams`` (TPU semantics: scalar prefetch in SMEM,
    block DMAs, uninitialised-memory checks), called directly with a batch of two; one window
    (capacity >= n_pre) to keep this interpreter's compile short."""
    ring, spikes, targets, weights, delays = _problem(8, 0.5, "per_synapse")
    spikes2 = np.stack([spikes, np.roll(spikes, 5)])
    run = functools.partial(
        _pallas_tpu.deliver,
        n_post=N_POST,
        homogeneous_delay=HD,
        capacity=N_PRE,
        interpret=_compat.tpu_interpret(),
    )
    with jax.default_device(jax.devices("cpu")[0]):  # an interpreter: CPU on any machine
        got = run(
            ring[None], jnp.asarray([1, 2]), spikes2, targets[None], weights[None], delays[None]
        )
    got = np.asarray(got)
    for b in range(2):
        _close(got[b], _oracle(ring, b + 1, spikes2[b], targets, weights, delays))


def test_float64(x64):
    ring, spikes, targets, weights, delays = _problem(9, 0.5, "per_synapse", np.float64)
    expected = _oracle(ring, 3, spikes, targets, weights, delays)
    for impl in (Implementation.PALLAS_TRITON, Implementation.PALLAS_PORTABLE):
        got = jax.jit(functools.partial(_deliver, impl, 6))(
            ring, 3, spikes, targets, weights, delays
        )
        assert got.dtype == jnp.float64
        _close(np.asarray(got), expected, 1e-12)
    with _where(Implementation.PALLAS_TPU), pytest.raises(TypeError, match="float32"):
        _deliver(Implementation.PALLAS_TPU, 6, ring, 3, spikes, targets, weights, delays)


# ------------------------------------------------------------------------------- transforms


def _transforms(impl):
    """``vmap`` (batch of two spike vectors) of ``linearize`` (primal and JVP) and of its
    transpose (the VJP that ``grad`` runs), with respect to spikes and weights."""
    ring, spikes, targets, weights, delays = _problem(12, 0.5, "per_synapse")
    cot = jnp.asarray(np.random.default_rng(13).normal(size=ring.size).astype(np.float32))

    def one(s, w):
        # capacity >= n_pre: one window, no loop (the static path).
        def deliver(s, w):
            return _deliver(impl, 64, ring, 2, s, targets, w, delays)

        out, jvp = jax.linearize(deliver, s, w)
        tangent = jvp(jnp.ones_like(s), jnp.ones_like(w))
        return out, tangent, jax.linear_transpose(jvp, s, w)(cot)

    # jnp, not NumPy: vmap over a NumPy constant inside jit trips a JAX assertion in
    # custom_jvp linearisation (with the reference as well).
    spikes_b = jnp.asarray(np.stack([spikes, np.roll(spikes, 3)]))
    return jax.jit(jax.vmap(one, in_axes=(0, None)))(spikes_b, jnp.asarray(weights)), spikes


@functools.cache
def _reference_transforms():
    (out, tangent, grads), spikes = _transforms(Implementation.REFERENCE)
    ring, _, targets, weights, delays = _problem(12, 0.5, "per_synapse")
    cot = jnp.asarray(np.random.default_rng(13).normal(size=ring.size).astype(np.float32))

    def loss(s):
        return jnp.sum(
            cot * _deliver(Implementation.REFERENCE, 64, ring, 2, s, targets, weights, delays)
        )

    # The transpose is what grad computes: confirm on the reference once.
    _close(np.asarray(grads[0][0]), np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(spikes))))
    return out, tangent, grads


@pytest.mark.parametrize("impl", PALLAS, ids=lambda i: i.value)
def test_jvp_vjp_under_vmap_equal_the_reference(impl):
    """The kernel computes the primal only; tangents are the jnp sum over all synapses."""
    got, spikes = _transforms(impl)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(_reference_transforms()), strict=True):
        _close(np.asarray(a), np.asarray(b))
    silent = spikes == 0  # the gradient runs over every synapse, spiking or not
    assert np.any(np.asarray(got[2][0])[0][silent] != 0)


def test_auto_nested_vmap():
    """AUTO (on CPU the native kernel when available, on a GPU the Triton kernel): nested
    vmaps fold into one batch."""
    ring, spikes, targets, weights, delays = _problem(14, 0.4, "per_synapse")
    spikes_b = np.stack([spikes, np.roll(spikes, 2), 0 * spikes])
    weights_b = np.stack([weights, 3.0 * weights])

    def one(s, w):
        return _deliver(Implementation.AUTO, None, ring, 0, s, targets, w, delays)

    got = jax.jit(jax.vmap(jax.vmap(one, in_axes=(0, None)), in_axes=(None, 0)))(
        spikes_b, weights_b
    )
    for a in range(2):
        for b in range(3):
            _close(
                np.asarray(got[a, b]), _oracle(ring, 0, spikes_b[b], targets, weights_b[a], delays)
            )


# ------------------------------------------------------------------------- compaction, sizes


def test_windows_cover_every_spike_in_order():
    rng = np.random.default_rng(15)
    spikes = np.where(rng.random((2, 100)) < 0.3, 1.0, 0.0)
    spikes[1] = 0.0
    counts = _compact.spike_counts(jnp.asarray(spikes))
    for b in range(2):
        nz = np.flatnonzero(spikes[b])
        got = np.concatenate(
            [np.asarray(_compact.window(counts, s, 7))[b] for s in range(0, 40, 7)]
        )
        np.testing.assert_array_equal(got[: nz.size], nz)
        assert np.all(got[nz.size :] == 100)
    assert _compact.default_capacity(10) == 10
    assert _compact.default_capacity(4000) == 250
    assert _compact.default_capacity(100) == _compact.MIN_CAPACITY
    with pytest.raises(ValueError, match="capacity"):
        ring, spikes, targets, weights, delays = _problem(0, 0.1, "per_synapse")
        _deliver(Implementation.PALLAS_TRITON, 0, ring, 0, spikes, targets, weights, delays)


# -------------------------------------------------------------------- lowering, no hardware


def _export(platform, impl, dtype=np.float32, batch=None):
    ring, spikes, targets, weights, delays = _problem(16, 0.3, "per_synapse", dtype)
    fn = functools.partial(_deliver, impl, 8)
    if batch:
        spikes = np.stack([spikes] * batch)
        fn = jax.vmap(fn, in_axes=(None, None, 0, None, None, None))
    with _compat.gpu_lowering_target():  # jax 0.11 needs a GPU target to lower Triton
        exported = jax.export.export(
            jax.jit(fn),
            platforms=[platform],
            disabled_checks=_compat.export_disabled_checks(platform),
        )(ring, 0, spikes, targets, weights, delays)
    return exported.mlir_module()


@pytest.mark.parametrize(
    ("impl", "batch"),
    [
        (Implementation.PALLAS_TRITON, 3),
        (Implementation.PALLAS_PORTABLE, 3),
        (Implementation.AUTO, None),
    ],
)
def test_lowers_for_cuda(impl, batch):
    """The Triton kernels lower to Triton IR inside a CUDA custom call (compiling that IR to
    PTX needs a GPU toolchain and is not checked here)."""
    module = _export("cuda", impl, batch=batch)
    assert _compat.TRITON_CUSTOM_CALL in module


def test_lowers_for_cuda_in_float64(x64):
    module = _export("cuda", Implementation.PALLAS_TRITON, np.float64)
    assert _compat.TRITON_CUSTOM_CALL in module


def test_triton_ir_compiles_to_a_cubin_for_sm90(monkeypatch, tmp_path):
    """Optional, needs the ``triton`` package (not a brainsim dependency): compile the lowered
    Triton IR of both GPU kernels, float32 and float64, with Triton's own compiler and ptxas
    for an H100 (sm_90) — the step XLA runs on a GPU machine. Uses a private JAX hook to see
    the IR; skipped when either is missing."""
    compiler = pytest.importorskip("triton.compiler.compiler")
    target = pytest.importorskip("triton.backends.compiler").GPUTarget("cuda", 90, 32)
    registration = pytest.importorskip("jax._src.pallas.triton.pallas_call_registration")
    original = registration.lowering.lower_jaxpr_to_triton_module
    modules = []

    def capture(*args, **kwargs):
        result = original(*args, **kwargs)
        modules.append(result.module.operation.get_asm(print_generic_op_form=True))
        return result

    monkeypatch.setattr(registration.lowering, "lower_jaxpr_to_triton_module", capture)
    for impl in (Implementation.PALLAS_TRITON, Implementation.PALLAS_PORTABLE):
        _export("cuda", impl, batch=3)
    assert len(modules) == 2
    for i, module in enumerate(modules):
        path = tmp_path / f"kernel{i}.ttir"
        path.write_text(module)
        assert compiler.compile(str(path), target=target).asm["cubin"]


@pytest.mark.parametrize(
    ("impl", "batch"), [(Implementation.PALLAS_TPU, 3), (Implementation.AUTO, None)]
)
def test_lowers_for_tpu(impl, batch):
    """Mosaic lowering (block shapes, scalar prefetch, dot precision) is checked; Mosaic's own
    compilation to TPU code happens on a TPU and is not."""
    module = _export("tpu", impl, batch=batch)
    assert _compat.TPU_CUSTOM_CALL in module


def test_auto_uses_the_reference_for_float64_on_tpu(x64):
    module = _export("tpu", Implementation.AUTO, np.float64)
    assert _compat.TPU_CUSTOM_CALL not in module


def test_forced_kernel_refuses_a_foreign_platform():
    # A forced implementation has branches for CPU (interpret) and its own platform only.
    with pytest.raises(NotImplementedError, match="not found for platform tpu"):
        _export("tpu", Implementation.PALLAS_TRITON)


def test_block_sizes_meet_backend_rules():
    # Triton: every in-kernel array a power of two; TPU: blocks divisible by (8, 128).
    for size in (_pallas_gpu.LANE_TILE, _pallas_gpu.OWNER_ROWS, _pallas_gpu.OWNER_COLUMNS):
        assert size & (size - 1) == 0
    assert _pallas_gpu.OWNER_ROWS >= 16 and _pallas_gpu.OWNER_TILE >= 16  # tl.dot minimum
    assert _pallas_tpu.ROW_BLOCK % 8 == 0 and _pallas_tpu.COLUMN_BLOCK % 128 == 0
    assert _pallas_tpu.TILE_ROWS % 8 == 0 and _pallas_tpu.LANES == 128
