r"""Event-driven propagation through a fixed-fan-out (ELL) projection into a ring buffer.

``ell_deliver(ring, cursor, spikes, targets, weights, delays)`` adds, for every presynaptic
neuron ``i`` with ``spikes[i] != 0`` and every synapse ``k`` of its row,
``spikes[i] * weights[i, k]`` to ``ring[(cursor + delay[i, k]) mod D, targets[i, k]]`` (the ring
is ``D`` rows of ``n_post`` values, flattened; targets ``>= n_post`` are padding). With
``clear_row=True`` the row ``cursor mod D`` is zeroed first, once every array in ``after`` is
computed: the receptor's read-and-clear of :func:`brainsim.kernels.clear_ring_row` fused into
the delivery, which on the CPU saves one kernel per receptor and step (the native kernel
clears the row itself; every other implementation runs ``clear_ring_row`` first).

Implementations (a static choice, part of the compiled program):

* ``Implementation.REFERENCE`` — pure jnp (:mod:`brainsim.kernels._reference`), any platform.
* ``Implementation.NATIVE_CPU`` — the C++ kernel of :mod:`brainsim.kernels._cpu` (CPU only).
* ``Implementation.PALLAS_TRITON`` — GPU, atomic scatter by presynaptic neuron
  (:mod:`brainsim.kernels._pallas_gpu`); fastest on a GPU, float order not reproducible.
* ``Implementation.PALLAS_PORTABLE`` — GPU, owner-block kernel without atomics (deterministic),
  the design of the TPU kernel lowered through Triton.
* ``Implementation.PALLAS_TPU`` — TPU, owner-block one-hot matrix products
  (:mod:`brainsim.kernels._pallas_tpu`); float32 only.
* ``Implementation.AUTO`` (default) — chosen per platform at lowering time: CPU → the native
  kernel when available, else the reference; CUDA → ``PALLAS_TRITON``; TPU → ``PALLAS_TPU``
  for float32 rings, else the reference; any other platform → the reference.

A forced Pallas implementation runs in Pallas interpret mode when the program is lowered for a
CPU (slow; for tests and debugging) and compiled on its own platform; lowering it for another
platform is an error.

``capacity`` (default :func:`brainsim.kernels._compact.default_capacity`, about ``n_pre / 16``)
sizes the Pallas launches; no spike is ever dropped, whatever the count. The GPU atomic kernel
runs one launch of ``capacity`` programs that stride over the list of all spikes (nothing
loops on the host, which on a GPU would cost a device round trip per iteration); the owner-block
and TPU kernels gather ``capacity`` spikes per window and run ``ceil(count / capacity)``
windows.

Differentiation: a ``custom_jvp`` whose tangent is the same sum over *all* synapses in jnp,
so gradients with respect to weights and to (surrogate) spikes equal those of the dense
computation (a neuron that did not spike still passes its surrogate gradient). Batching:
``vmap`` runs one native call, or one Pallas launch with a batch grid axis, over the whole
batch (``jax.custom_batching.custom_vmap``; nested ``vmap``\ s merge into one batch axis).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import _compact, _pallas_gpu, _pallas_tpu, _reference
from ._batching import run_batched, run_in_place
from ._dispatch import Implementation, select
from ._ring import checked_after, clear_first, clear_tangent


def ell_deliver(
    ring,
    cursor,
    spikes,
    targets,
    weights,
    delays=None,
    *,
    n_post: int,
    homogeneous_delay: int = 1,
    chunk_size: int = 8,
    capacity: int | None = None,
    implementation: Implementation = Implementation.AUTO,
    clear_row: bool = False,
    after=(),
):
    """Deliver ``spikes`` through an ELL projection; see the module docstring.

    Arguments:
        ring: ``(D * n_post,)`` future input of the postsynaptic receptor.
        cursor: the current step (int); rows are ``(cursor + delay) mod D``.
        spikes: ``(n_pre,)`` spike values (0 = no spike).
        targets: ``(n_pre, fan_out)`` int32 postsynaptic indices, ``n_post`` for padding.
        weights: ``(n_pre, fan_out)`` per synapse, or a scalar shared by all.
        delays: ``(n_pre, fan_out)`` int32 steps (>= 1), or ``None`` to use
            ``homogeneous_delay`` for every synapse.
        chunk_size: spikes per loop iteration of the jnp reference.
        capacity: programs per launch of the GPU atomic kernel, spikes per window of the
            owner-block and TPU kernels (``None``: about ``n_pre / 16``, see
            :mod:`brainsim.kernels._compact`); any number of spikes is delivered.
        clear_row: zero row ``cursor mod D`` before delivering (the row the receptor read
            this step; a delay of ``D`` steps lands in it again).
        after: ``(n_post,)`` arrays the clearing waits for (the row's readers), as in
            :func:`brainsim.kernels.clear_ring_row`; only with ``clear_row``.
    """
    if delays is None and homogeneous_delay < 1:
        raise ValueError(f"ell_deliver: `homogeneous_delay` must be >= 1; got {homogeneous_delay}.")
    if ring.shape[0] % n_post:
        raise ValueError(
            f"ell_deliver: ring length {ring.shape[0]} is not a multiple of n_post = {n_post}."
        )
    after = checked_after("ell_deliver", clear_row, after)
    hd = 0 if delays is not None else int(homogeneous_delay)
    ring, spikes, targets, weights = map(jnp.asarray, (ring, spikes, targets, weights))
    delays = None if delays is None else jnp.asarray(delays)
    return _deliver(
        n_post,
        hd,
        chunk_size,
        _compact.check_capacity(capacity, targets.shape[0]),
        Implementation(implementation),
        bool(clear_row),
        ring,
        spikes,
        weights,
        jnp.asarray(cursor, jnp.int32),
        targets,
        delays,
        after,
    )


@partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3, 4, 5))
def _deliver(
    n_post, hd, chunk, capacity, impl, clear, ring, spikes, weights, cursor, targets, delays, after
):
    args = (ring, cursor, spikes, targets, weights, delays, *after)
    def without_after(args):
        return clear_first(args, 6, clear=clear, n_post=n_post)

    def reference(*args):
        return _reference.ell_deliver(
            *without_after(args), n_post=n_post, homogeneous_delay=hd, chunk_size=chunk
        )

    def native(*args):
        # The kernel clears the row (with `clear`) and adds into the ring in place: its output
        # aliases the ring.
        kernel = partial(_native, n_post=n_post, homogeneous_delay=hd, clear=clear)
        return run_in_place(kernel, *args)

    def pallas(which, interpret):
        def run(*args):
            return _pallas_jit(
                which, interpret, *without_after(args), n_post=n_post, hd=hd, capacity=capacity
            )

        return run

    # Pallas' generic interpreter serves CPU lowering: ``pltpu.InterpretParams`` (TPU-faithful)
    # carries IO effects, which ``vmap`` of ``platform_dependent`` rejects; tests run the TPU
    # kernel under it directly.
    return select(impl, args, reference=reference, native=native, pallas=pallas,
                  tpu_supported=ring.dtype == jnp.float32)


@_deliver.defjvp
def _deliver_jvp(n_post, hd, chunk, capacity, impl, clear, primals, tangents):
    ring, spikes, weights, cursor, targets, delays, after = primals
    ring_dot, spikes_dot, weights_dot, *_ = tangents
    out = _deliver(n_post, hd, chunk, capacity, impl, clear, *primals)
    dense = partial(_reference.ell_deliver_dense, n_post=n_post, homogeneous_delay=hd)
    zero = jnp.zeros_like(ring)
    if clear:  # the cleared row carries no tangent either
        ring_dot = clear_tangent(ring_dot, cursor, n_post)
    out_dot = (
        ring_dot
        + dense(zero, cursor, spikes_dot, targets, weights, delays)
        + dense(zero, cursor, spikes, targets, weights_dot, delays)
    )
    return out, out_dot


def _native(
    ring, cursor, spikes, targets, weights, delays, *after, n_post, homogeneous_delay, clear
):
    n_pre, fan_out = targets.shape
    shared_weight = weights.ndim == 0
    w = jnp.reshape(weights, (1,)) if shared_weight else weights
    d = jnp.zeros((1,), jnp.int32) if delays is None else delays.astype(jnp.int32)
    call = jax.ffi.ffi_call(
        "brainsim_ell_deliver",
        jax.ShapeDtypeStruct(ring.shape, ring.dtype),
        # Batched calls pass shared arguments with a leading axis of 1; the kernel broadcasts
        # them, so one call serves the whole batch. The ring (always batched like the output,
        # see `native` in _deliver) is aliased to the output: the kernel adds in place.
        vmap_method="expand_dims",
        input_output_aliases={5: 0},
    )
    return call(
        spikes.astype(ring.dtype),
        targets.astype(jnp.int32),
        w.astype(ring.dtype),
        d,
        jnp.reshape(cursor, (1,)).astype(jnp.int32),
        ring,
        *after,
        n_pre=np.int64(n_pre),
        fan_out=np.int64(fan_out),
        n_post=np.int64(n_post),
        homogeneous_delay=np.int64(homogeneous_delay),
        weight_base=np.int64(1 if shared_weight else n_pre * fan_out),
        delay_base=np.int64(1 if delays is None else n_pre * fan_out),
        ring_len=np.int64(ring.shape[0]),
        clear_row=np.int64(clear),
    )


# ----------------------------------------------------------------------------------- Pallas

_PALLAS_KERNEL = {
    Implementation.PALLAS_TRITON: _pallas_gpu.deliver_atomic,
    Implementation.PALLAS_PORTABLE: _pallas_gpu.deliver_owner,
    Implementation.PALLAS_TPU: _pallas_tpu.deliver,
}


def _pallas(
    impl, interpret, ring, cursor, spikes, targets, weights, delays, *, n_post, hd, capacity
):
    """Run a batched Pallas kernel on unbatched arguments (a leading batch axis of 1)."""
    kernel = partial(
        _PALLAS_KERNEL[impl],
        n_post=n_post,
        homogeneous_delay=hd,
        capacity=capacity,
        interpret=interpret,
    )
    return run_batched(kernel, ring, cursor, spikes, targets, weights, delays)


# AUTO traces every platform's branch (``lax.platform_dependent`` lowers only one): a jitted
# entry point lets JAX reuse the traced kernels for the same shapes and settings.
_pallas_jit = jax.jit(_pallas, static_argnums=(0, 1), static_argnames=("n_post", "hd", "capacity"))
