"""brainsim.kernels: every implementation of ell_deliver agrees with a NumPy oracle.

The native CPU kernel must equal the jnp reference exactly up to float summation order
(both add the same terms; order differs only when several synapses hit one target), for
shared and per-synapse weights and delays, padding, out-of-range targets, empty and full
spike vectors, float32 and float64, and under vmap (one call for the whole batch).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brainsim.kernels import Implementation

from brainsim import kernels

pytestmark = pytest.mark.skipif(
    not kernels.native_cpu_available(), reason=f"native kernels: {kernels.native_cpu_status()}"
)

N_PRE, N_POST, FAN_OUT, N_RING = 37, 29, 7, 4
IMPLEMENTATIONS = [Implementation.REFERENCE, Implementation.NATIVE_CPU, Implementation.AUTO]


def _problem(seed, density, shared_weight, shared_delay, dtype=np.float32):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, N_POST, (N_PRE, FAN_OUT)).astype(np.int32)
    targets[rng.random((N_PRE, FAN_OUT)) < 0.2] = N_POST  # padding
    targets[0, :3] = targets[0, 3]  # duplicate targets in one row
    spikes = np.where(rng.random(N_PRE) < density, rng.uniform(0.5, 2.0, N_PRE), 0.0)
    weights = np.asarray(1.5) if shared_weight else rng.normal(size=(N_PRE, FAN_OUT))
    delays = (
        None if shared_delay else rng.integers(1, N_RING + 1, (N_PRE, FAN_OUT)).astype(np.int32)
    )
    ring = rng.normal(size=N_RING * N_POST)
    return (ring.astype(dtype), spikes.astype(dtype), targets, np.asarray(weights, dtype), delays)


def _oracle(ring, cursor, spikes, targets, weights, delays, homogeneous_delay=2, n_ring=N_RING):
    out = np.array(ring, dtype=np.float64)
    w = np.broadcast_to(weights, targets.shape)
    for i in np.flatnonzero(spikes):
        for k in range(FAN_OUT):
            t = targets[i, k]
            if 0 <= t < N_POST:
                d = homogeneous_delay if delays is None else delays[i, k]
                out[((cursor + d) % n_ring) * N_POST + t] += spikes[i] * w[i, k]
    return out


def _deliver(impl, ring, cursor, spikes, targets, weights, delays, **options):
    """``ell_deliver`` with this module's sizes; ``options`` override ``homogeneous_delay=2``
    or add keywords (``clear_row``, ``after``)."""
    return kernels.ell_deliver(
        jnp.asarray(ring),
        cursor,
        jnp.asarray(spikes),
        jnp.asarray(targets),
        jnp.asarray(weights),
        None if delays is None else jnp.asarray(delays),
        n_post=N_POST,
        implementation=impl,
        **{"homogeneous_delay": 2, **options},
    )


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda i: i.value)
@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("shared_weight", [True, False])
@pytest.mark.parametrize("shared_delay", [True, False])
def test_ell_deliver_matches_oracle(impl, density, shared_weight, shared_delay):
    ring, spikes, targets, weights, delays = _problem(1, density, shared_weight, shared_delay)
    got = jax.jit(lambda *a: _deliver(impl, *a))(ring, 5, spikes, targets, weights, delays)
    expected = _oracle(ring, 5, spikes, targets, weights, delays)
    # float32 sums of at most ~40 terms of magnitude <= 6: 1e-5 relative is ~100 ulp.
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


def test_native_equals_reference_in_float64(x64):
    ring, spikes, targets, weights, delays = _problem(2, 0.4, False, False, np.float64)
    a = _deliver(Implementation.NATIVE_CPU, ring, 3, spikes, targets, weights, delays)
    b = _deliver(Implementation.REFERENCE, ring, 3, spikes, targets, weights, delays)
    assert a.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-13, atol=1e-13)


def test_out_of_range_targets_are_never_written():
    ring, spikes, targets, weights, delays = _problem(3, 1.0, False, True)
    targets[1, 0], targets[2, 0] = -5, N_POST + 100  # corrupt indices: skipped, not clamped
    got = _deliver(Implementation.NATIVE_CPU, ring, 0, spikes, targets, weights, delays)
    np.testing.assert_allclose(
        np.asarray(got), _oracle(ring, 0, spikes, targets, weights, delays), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("batched", ["spikes", "spikes_and_ring", "weights"])
def test_vmap_runs_one_batched_call_and_equals_the_loop(batched):
    ring, spikes, targets, weights, delays = _problem(4, 0.3, False, False)
    rng = np.random.default_rng(5)
    B = 6
    spikes_b = np.where(rng.random((B, N_PRE)) < 0.3, 1.0, 0.0).astype(np.float32)
    ring_b = rng.normal(size=(B, ring.size)).astype(np.float32)
    weights_b = rng.normal(size=(B,) + weights.shape).astype(np.float32)

    def one(r, s, w):
        return _deliver(Implementation.NATIVE_CPU, r, 1, s, targets, w, delays)

    in_axes = {
        "spikes": (None, 0, None),
        "spikes_and_ring": (0, 0, None),
        "weights": (None, None, 0),
    }[batched]
    args = (
        ring_b if in_axes[0] == 0 else ring,
        spikes_b if in_axes[1] == 0 else spikes,
        weights_b if in_axes[2] == 0 else weights,
    )
    fn = jax.jit(jax.vmap(one, in_axes=in_axes))
    got = np.asarray(fn(*args))
    hlo = fn.lower(*args).compile().as_text()
    assert hlo.count('custom_call_target="brainsim_ell_deliver"') == 1, "batched: one native call"
    for b in range(B):
        pick = [a[b] if ax == 0 else a for a, ax in zip(args, in_axes, strict=True)]
        np.testing.assert_allclose(got[b], np.asarray(one(*pick)), rtol=1e-6, atol=1e-6)


def test_gradients_are_the_same_for_every_implementation():
    ring, spikes, targets, weights, delays = _problem(6, 0.5, False, False)
    cot = np.random.default_rng(7).normal(size=ring.size).astype(np.float32)

    def loss(impl, s, w):
        return jnp.sum(jnp.asarray(cot) * _deliver(impl, ring, 2, s, targets, w, delays))

    grads = [
        jax.grad(lambda s, w, i=impl: loss(i, s, w), argnums=(0, 1))(
            jnp.asarray(spikes), jnp.asarray(weights)
        )
        for impl in IMPLEMENTATIONS
    ]
    for g in grads[1:]:
        for a, b in zip(grads[0], g, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    # Spikes that are zero still receive gradient (the tangent runs over every synapse).
    silent = spikes == 0
    assert np.any(np.asarray(grads[0][0])[silent] != 0)


def test_native_kernel_adds_into_the_ring_in_place():
    """The native kernel's output is aliased to its ring argument (the kernel adds in place
    instead of first copying the ring, O(ring) per call), with and without vmap, and the
    caller's ring is left as it was."""
    ring, spikes, targets, weights, delays = _problem(8, 0.5, True, True)

    def one(r, s):
        return _deliver(Implementation.NATIVE_CPU, r, 1, s, targets, weights, delays)

    batch = np.stack([spikes, spikes[::-1]])
    for fn, args in ((jax.jit(one), (ring, spikes)),
                     (jax.jit(jax.vmap(one, in_axes=(None, 0))), (ring, batch))):
        hlo = fn.lower(*args).compile().as_text()
        call = next(line for line in hlo.split("\n") if "brainsim_ell_deliver" in line)
        assert "output_to_operand_aliasing" in call, call
    ring_before = ring.copy()
    got = np.asarray(jax.jit(one)(jnp.asarray(ring), jnp.asarray(spikes)))
    np.testing.assert_array_equal(ring, ring_before)
    np.testing.assert_allclose(
        got, _oracle(ring, 1, spikes, targets, weights, delays), rtol=1e-5, atol=1e-5
    )


ALL_IMPLEMENTATIONS = IMPLEMENTATIONS + [
    Implementation.PALLAS_TRITON,
    Implementation.PALLAS_PORTABLE,
    Implementation.PALLAS_TPU,
]


@pytest.mark.parametrize("impl", ALL_IMPLEMENTATIONS, ids=lambda i: i.value)
@pytest.mark.parametrize("n_ring", [1, N_RING])
@pytest.mark.parametrize("cursor", [0, 6])
def test_clear_row_zeroes_the_current_row_before_delivering(impl, n_ring, cursor):
    """``clear_row=True`` is ``clear_ring_row`` then delivery: row ``cursor mod D`` is zeroed
    and then receives what arrives in it (delay D with D rows, or any delay with one row);
    every other row keeps its contents. Pallas kernels run in interpret mode on the CPU."""
    _, spikes, targets, weights, delays = _problem(9, 0.5, False, n_ring == 1)
    ring = np.random.default_rng(10).normal(size=n_ring * N_POST).astype(np.float32)
    if delays is not None:
        delays = np.minimum(delays, n_ring)
    homogeneous = 1 if n_ring == 1 else 2
    after = (jnp.ones(N_POST, jnp.float32),)

    def run(ring, spikes, weights):
        return _deliver(impl, ring, cursor, spikes, targets, weights, delays,
                        homogeneous_delay=homogeneous, clear_row=True, after=after)

    got = np.asarray(jax.jit(run)(ring, spikes, weights))
    cleared = ring.copy()
    row = cursor % n_ring
    cleared[row * N_POST : (row + 1) * N_POST] = 0.0
    expected = _oracle(cleared, cursor, spikes, targets, weights, delays, homogeneous, n_ring)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    if impl is Implementation.NATIVE_CPU:
        hlo = jax.jit(run).lower(ring, spikes, weights).compile().as_text()
        assert "brainsim_ring_clear" not in hlo, "the native kernel clears the row itself"
        assert hlo.count('custom_call_target="brainsim_ell_deliver"') == 1


def test_clear_row_under_vmap_and_grad_equals_the_reference():
    """Batched rings (one native call), and gradients with respect to the ring, the spikes and
    the weights: the cleared row passes no gradient back to the old ring."""
    ring, spikes, targets, weights, delays = _problem(11, 0.4, False, False)
    rng = np.random.default_rng(12)
    rings = rng.normal(size=(3, ring.size)).astype(np.float32)
    cot = rng.normal(size=ring.size).astype(np.float32)
    after = (jnp.zeros(N_POST, jnp.float32),)

    def deliver(impl, r, s, w):
        return _deliver(impl, r, 6, s, targets, w, delays, clear_row=True, after=after)

    results = {}
    for impl in (Implementation.REFERENCE, Implementation.NATIVE_CPU):
        batched = jax.jit(jax.vmap(lambda r, i=impl: deliver(i, r, spikes, weights)))
        grads = jax.grad(
            lambda r, s, w, i=impl: jnp.sum(cot * deliver(i, r, s, w)), argnums=(0, 1, 2)
        )(jnp.asarray(ring), jnp.asarray(spikes), jnp.asarray(weights))
        results[impl] = (np.asarray(batched(rings)), grads)
        if impl is Implementation.NATIVE_CPU:
            hlo = batched.lower(rings).compile().as_text()
            assert hlo.count('custom_call_target="brainsim_ell_deliver"') == 1
    (out_ref, g_ref), (out_nat, g_nat) = results.values()
    np.testing.assert_allclose(out_nat, out_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_ref, g_nat, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)
    row = 6 % N_RING
    ring_grad = np.asarray(g_ref[0])
    assert np.all(ring_grad[row * N_POST : (row + 1) * N_POST] == 0)
    np.testing.assert_array_equal(
        np.delete(ring_grad, np.s_[row * N_POST : (row + 1) * N_POST]),
        np.delete(cot, np.s_[row * N_POST : (row + 1) * N_POST]),
    )


def test_after_without_clear_row_is_an_error():
    ring, spikes, targets, weights, delays = _problem(13, 0.3, True, True)
    with pytest.raises(ValueError, match="clear_row=True"):
        kernels.ell_deliver(
            ring, 0, spikes, targets, weights, n_post=N_POST, after=(jnp.zeros(N_POST),)
        )
