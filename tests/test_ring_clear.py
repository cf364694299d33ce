"""brainsim.kernels.clear_ring_row and the in-place update of a network's loop-carried state.

The op must zero exactly one row (taken modulo the ring's row count) in every implementation,
under vmap and under differentiation; and a compiled simulation loop must update the
receptors' rings and traces in place, with no per-step copy of them (the property the op and
the ordering of ``brainsim._step._update_group`` exist for).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brainsim.kernels import Implementation

import brainsim as bs
from brainsim import kernels
from brainsim._propagation import CSR, Dense, Sparse
from brainsim._simulate import _run_jit
from brainsim.networks import coba

N_POST, N_RING = 11, 5
IMPLEMENTATIONS = [Implementation.REFERENCE, Implementation.NATIVE_CPU, Implementation.AUTO]
native_only = pytest.mark.skipif(
    not kernels.native_cpu_available(), reason=f"native kernels: {kernels.native_cpu_status()}"
)


def _implementations():
    return [
        pytest.param(i, marks=native_only) if i is Implementation.NATIVE_CPU else i
        for i in IMPLEMENTATIONS
    ]


def _expected(ring, row):
    out = np.array(ring)
    r = row % N_RING
    out[r * N_POST : (r + 1) * N_POST] = 0
    return out


def _ring(seed, dtype=np.float32, batch=()):
    return np.random.default_rng(seed).normal(size=batch + (N_RING * N_POST,)).astype(dtype)


def _clear_and_check(impl, dtype, row):
    ring = _ring(row + 20, dtype)
    after = (jnp.ones(N_POST, dtype), jnp.arange(N_POST, dtype=dtype))
    got = jax.jit(
        lambda r, k: kernels.clear_ring_row(r, k, n_post=N_POST, after=after, implementation=impl)
    )(jnp.asarray(ring), row)
    assert got.dtype == dtype
    np.testing.assert_array_equal(np.asarray(got), _expected(ring, row))


@pytest.mark.parametrize("impl", _implementations(), ids=lambda i: i.value)
@pytest.mark.parametrize("row", [0, 3, 4, 5, 12, -1, -7])
def test_clears_exactly_one_row_modulo_the_ring(impl, row):
    _clear_and_check(impl, np.float32, row)


@pytest.mark.parametrize("impl", _implementations(), ids=lambda i: i.value)
def test_clears_float64_rings(impl, x64):
    for row in (1, 9, -3):
        _clear_and_check(impl, np.float64, row)


@pytest.mark.parametrize("impl", _implementations(), ids=lambda i: i.value)
def test_caller_ring_is_unchanged(impl):
    """The native kernel writes its output in place of the ring; a caller's (non-donated)
    ring must still hold its values afterwards."""
    ring = jnp.asarray(_ring(1))
    before = np.asarray(ring).copy()
    out = jax.jit(lambda r: kernels.clear_ring_row(r, 2, n_post=N_POST, implementation=impl))(ring)
    np.testing.assert_array_equal(np.asarray(ring), before)
    np.testing.assert_array_equal(np.asarray(out), _expected(before, 2))


@pytest.mark.parametrize("impl", _implementations(), ids=lambda i: i.value)
def test_vmap_matches_a_loop_over_the_batch(impl):
    rings = _ring(2, batch=(3,))
    rows = np.array([0, 7, -2], np.int32)
    after = np.random.default_rng(3).normal(size=(3, N_POST)).astype(np.float32)

    def clear(r, k, a):
        return kernels.clear_ring_row(r, k, n_post=N_POST, after=(a,), implementation=impl)

    expected = np.stack([_expected(rings[b], rows[b]) for b in range(3)])
    # batched ring, row and after
    got = jax.jit(jax.vmap(clear))(rings, rows, after)
    np.testing.assert_array_equal(np.asarray(got), expected)
    # shared ring, batched rows (each batch element clears its own copy)
    got = jax.jit(jax.vmap(clear, in_axes=(None, 0, None)))(rings[0], rows, after[0])
    np.testing.assert_array_equal(np.asarray(got), np.stack([_expected(rings[0], k) for k in rows]))
    # nested vmap: (2, 3) batch of rings, one row
    nested = jax.jit(jax.vmap(jax.vmap(clear, in_axes=(0, None, None)), in_axes=(0, None, None)))
    got = nested(np.stack([rings, rings[::-1]]), 6, after[0])
    np.testing.assert_array_equal(
        np.asarray(got), np.stack([[_expected(r, 6) for r in rs] for rs in (rings, rings[::-1])])
    )


@native_only
def test_native_kernel_clears_in_place_with_one_call_per_batch():
    def clear(r, k, a):
        return kernels.clear_ring_row(
            r, k, n_post=N_POST, after=(a,), implementation=Implementation.NATIVE_CPU
        )

    args = (_ring(4, batch=(3,)), np.arange(3, dtype=np.int32), np.zeros((3, N_POST), np.float32))
    hlo = jax.jit(jax.vmap(clear)).lower(*args).compile().as_text()
    calls = [
        line for line in hlo.split("\n") if "brainsim_ring_clear" in line and "custom-call(" in line
    ]
    assert len(calls) == 1, calls
    assert "output_to_operand_aliasing" in calls[0], calls[0]


@pytest.mark.parametrize("impl", _implementations(), ids=lambda i: i.value)
def test_gradient_and_tangent_clear_the_same_row(impl):
    ring = jnp.asarray(_ring(5))
    cot = jnp.asarray(np.random.default_rng(6).normal(size=ring.shape).astype(np.float32))

    def loss(r):
        return jnp.sum(cot * kernels.clear_ring_row(r, 8, n_post=N_POST, implementation=impl))

    grad = jax.grad(loss)(ring)
    np.testing.assert_array_equal(np.asarray(grad), _expected(cot, 8))
    _, tangent = jax.jvp(
        lambda r: kernels.clear_ring_row(r, 8, n_post=N_POST, implementation=impl),
        (ring,),
        (cot,),
    )
    np.testing.assert_array_equal(np.asarray(tangent), _expected(cot, 8))


def test_reference_marks_the_row_where_an_after_value_is_nan():
    """The reference orders the clearing by an element-wise data dependency; it shows only
    where an `after` value is NaN (a neuron whose state is lost anyway)."""
    after = jnp.zeros(N_POST).at[4].set(jnp.nan)
    got = np.asarray(
        kernels.clear_ring_row(
            jnp.asarray(_ring(7)),
            1,
            n_post=N_POST,
            after=(after,),
            implementation=Implementation.REFERENCE,
        )
    )
    row = got[N_POST : 2 * N_POST]
    assert np.isnan(row[4]) and np.all(np.delete(row, 4) == 0)
    x = jnp.arange(4.0)
    np.testing.assert_array_equal(np.asarray(kernels.after(x, jnp.ones(4), -jnp.ones(4))), x)


def test_bad_arguments_name_what_is_wrong():
    ring = jnp.zeros(N_RING * N_POST)
    with pytest.raises(ValueError, match="`ring` must be a flat array of D \\* n_post"):
        kernels.clear_ring_row(ring, 0, n_post=N_POST + 1)
    with pytest.raises(ValueError, match=r"`after\[1\]` must have shape \(11,\)"):
        kernels.clear_ring_row(ring, 0, n_post=N_POST, after=(jnp.zeros(N_POST), jnp.zeros(3)))
    with pytest.raises(ValueError, match="`implementation` must be one of"):
        kernels.clear_ring_row(ring, 0, n_post=N_POST, implementation=Implementation.PALLAS_TPU)


# ----------------------------------------------------------------- the simulation loop


def _loop_body_copies(net):
    """Copies of per-neuron arrays (traces, ring rows and rings) in the compiled loop body,
    on their own or as the root of a fused loop (XLA fuses a copy into a producer)."""
    state = net.init(jax.random.key(0))
    hlo = _run_jit.lower(net, state, (bs.PopulationRate(),), 10, None, 1).compile()
    text = hlo.compiled.as_text() if hasattr(hlo, "compiled") else hlo.as_text()
    computations = re.findall(r"\n(%\S+ \(.*?\n\})", text, re.S)
    body = max(computations, key=lambda c: c.count("\n") if "arg_tuple" in c.split("\n")[0] else 0)
    # A fused loop ending in a copy of an operand, or of an operand updated in one row
    # (dynamic-update-slice), writes the whole array to a new buffer: a copy as costly as a
    # separate one. A fused element-wise result under a copy is not one.
    copying = set()
    for c in computations:
        root = re.search(r"ROOT %\S+ = \S+ copy\((%\S+)\)", c)
        if root and re.search(
            re.escape(root.group(1)) + r" = \S+ (parameter|dynamic-update-slice)\(", c
        ):
            copying.add(c.split(" ")[0])
    smallest = min(p.size for p in net.populations)
    copies = []
    for line in body.split("\n"):
        m = re.search(r"= f(?:32|64)\[(\d+)\]\{0\} (copy|fusion)\(", line)
        if not m or int(m.group(1)) < smallest:
            continue
        called = re.search(r"calls=(%[\w.\-]+)", line)
        if m.group(2) == "copy" or (called and called.group(1) in copying):
            copies.append(line.strip()[:100])
    return copies


@pytest.mark.parametrize("delay", [None, 1.5], ids=["one-step", "delayed"])
@pytest.mark.parametrize(
    "layout",
    [
        Sparse(),
        Sparse(implementation=Implementation.REFERENCE),
        Dense(),
        pytest.param(CSR(), marks=native_only),
    ],
    ids=["sparse", "sparse-reference", "dense", "csr"],
)
def test_simulation_loop_updates_traces_and_rings_in_place(layout, delay):
    """No per-step copy of a receptor trace or ring: a copy of a delayed projection's ring
    (D × n values) cost more than the rest of the step (COBA 40k with 1.5 ms delays: 5×
    slower per step on the development machine, benchmarks/BENCHMARKS.md)."""
    net = coba(n_neurons=250, p=0.1, seed=0, delay=delay, layout=layout)
    assert _loop_body_copies(net) == []
