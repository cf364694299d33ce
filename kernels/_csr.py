r"""Event-driven propagation through a CSR projection (rows = presynaptic neurons).

``csr_deliver(ring, cursor, spikes, indptr, indices, weights, delays)`` adds, for every
presynaptic neuron ``i`` with ``spikes[i] != 0`` and every synapse ``s`` in
``indptr[i] .. indptr[i+1]-1``, ``spikes[i] * weights[s]`` to
``ring[(cursor + delay[s]) mod D, indices[s]]`` (targets outside ``0 .. n_post-1`` are skipped).
Memory is proportional to the number of synapses, whatever the spread of out-degrees (ELL pads
every row to the largest one).

Implementations, differentiation and batching are those of :func:`~brainsim.kernels.ell_deliver`:
a jnp reference (load-balanced over the delivered synapses), a native CPU kernel, Pallas kernels
for GPU (Triton atomic scatter by row; deterministic owner block) and TPU
(:mod:`brainsim.kernels._pallas_csr`), chosen per platform by :mod:`brainsim.kernels._dispatch`
(``implementation=`` overrides), a ``custom_jvp`` whose tangent sums over every synapse in jnp,
and ``vmap`` through one native call or one Pallas launch with a batch grid axis.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import _batching, _compact, _dispatch, _pallas_csr, _reference
from ._dispatch import Implementation
from ._ring import checked_after, clear_first, clear_ring_row, clear_tangent


def csr_deliver(
    ring,
    cursor,
    spikes,
    indptr,
    indices,
    weights,
    delays=None,
    *,
    n_post: int,
    homogeneous_delay: int = 1,
    block_size: int = 256,
    capacity: int | None = None,
    implementation: Implementation = Implementation.AUTO,
    clear_row: bool = False,
    after=(),
):
    """Deliver ``spikes`` through a CSR projection; see the module docstring.

    Arguments:
        ring: ``(D * n_post,)`` future input of the postsynaptic receptor.
        cursor: the current step (int); rows are ``(cursor + delay) mod D``.
        spikes: ``(n_pre,)`` spike values (0 = no spike).
        indptr: ``(n_pre + 1,)`` int32 row offsets (non-decreasing, ``indptr[0] = 0``).
        indices: ``(n_synapses,)`` int32 postsynaptic indices.
        weights: ``(n_synapses,)`` per synapse, or a scalar shared by all.
        delays: ``(n_synapses,)`` int32 steps (>= 1), or ``None`` for ``homogeneous_delay``.
        block_size: synapses per iteration of the jnp reference (never limits delivery).
        capacity: programs of the Triton atomic kernel's one launch (``None``: about
            ``n_pre / 16``, :mod:`brainsim.kernels._compact`); the owner-block and TPU kernels
            take windows of ``capacity`` mean-length rows of synapses. More spikes run longer
            programs or more windows, never fewer synapses.
        implementation: :class:`~brainsim.kernels.Implementation`.
        clear_row, after: zero row ``cursor mod D`` first, once ``after`` is computed, as in
            :func:`~brainsim.kernels.ell_deliver` (the native kernel clears it itself).
    """
    if delays is None and homogeneous_delay < 1:
        raise ValueError(f"csr_deliver: `homogeneous_delay` must be >= 1; got {homogeneous_delay}.")
    if block_size < 1:
        raise ValueError(f"csr_deliver: `block_size` must be >= 1; got {block_size}.")
    if ring.shape[0] % n_post:
        raise ValueError(
            f"csr_deliver: ring length {ring.shape[0]} is not a multiple of n_post = {n_post}."
        )
    if indptr.shape[-1] != spikes.shape[-1] + 1:
        raise ValueError(
            f"csr_deliver: `indptr` has {indptr.shape[-1]} entries; expected n_pre + 1 = "
            f"{spikes.shape[-1] + 1}."
        )
    after = checked_after("csr_deliver", clear_row, after)
    if indices.shape[-1] == 0:  # no synapse: nothing to deliver, and nothing to differentiate
        return clear_ring_row(ring, cursor, n_post=n_post, after=after) if clear_row else ring
    hd = 0 if delays is not None else int(homogeneous_delay)
    ring, spikes, indptr, indices, weights = map(
        jnp.asarray, (ring, spikes, indptr, indices, weights)
    )
    delays = None if delays is None else jnp.asarray(delays)
    return _deliver(
        n_post,
        hd,
        int(block_size),
        _compact.check_capacity(capacity, spikes.shape[-1], owner="csr_deliver"),
        Implementation(implementation),
        bool(clear_row),
        ring,
        spikes,
        weights,
        jnp.asarray(cursor, jnp.int32),
        indptr,
        indices,
        delays,
        after,
    )


@partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3, 4, 5))
def _deliver(
    n_post,
    hd,
    block,
    capacity,
    impl,
    clear,
    ring,
    spikes,
    weights,
    cursor,
    indptr,
    indices,
    delays,
    after,
):
    args = (ring, cursor, spikes, indptr, indices, weights, delays, *after)

    def without_after(args):
        return clear_first(args, 7, clear=clear, n_post=n_post)

    def reference(*args):
        return _reference.csr_deliver(
            *without_after(args), n_post=n_post, homogeneous_delay=hd, block_size=block
        )

    def native(*args):
        kernel = partial(_native, n_post=n_post, homogeneous_delay=hd, clear=clear)
        return _batching.run_in_place(kernel, *args)

    def pallas(which, interpret):
        def run(*args):
            return _pallas_jit(
                which, interpret, *without_after(args), n_post=n_post, hd=hd, capacity=capacity
            )

        return run

    return _dispatch.select(
        impl,
        args,
        reference=reference,
        native=native,
        pallas=pallas,
        tpu_supported=ring.dtype == jnp.float32,
    )


@_deliver.defjvp
def _deliver_jvp(n_post, hd, block, capacity, impl, clear, primals, tangents):
    ring, spikes, weights, cursor, indptr, indices, delays, after = primals
    ring_dot, spikes_dot, weights_dot, *_ = tangents
    out = _deliver(n_post, hd, block, capacity, impl, clear, *primals)
    dense = partial(_reference.csr_deliver_dense, n_post=n_post, homogeneous_delay=hd)
    zero = jnp.zeros_like(ring)
    if clear:  # the cleared row carries no tangent either
        ring_dot = clear_tangent(ring_dot, cursor, n_post)
    out_dot = (
        ring_dot
        + dense(zero, cursor, spikes_dot, indptr, indices, weights, delays)
        + dense(zero, cursor, spikes, indptr, indices, weights_dot, delays)
    )
    return out, out_dot


def _native(
    ring, cursor, spikes, indptr, indices, weights, delays, *after, n_post, homogeneous_delay, clear
):
    n_pre = spikes.shape[-1]
    n_syn = indices.shape[-1]
    shared_weight = weights.ndim == 0
    w = jnp.reshape(weights, (1,)) if shared_weight else weights
    d = jnp.zeros((1,), jnp.int32) if delays is None else delays.astype(jnp.int32)
    call = jax.ffi.ffi_call(
        "brainsim_csr_deliver",
        jax.ShapeDtypeStruct(ring.shape, ring.dtype),
        vmap_method="expand_dims",
        # The kernel adds into the ring in place (batched like the output, see `native`).
        input_output_aliases={6: 0},
    )
    return call(
        spikes.astype(ring.dtype),
        indptr.astype(jnp.int32),
        indices.astype(jnp.int32),
        w.astype(ring.dtype),
        d,
        jnp.reshape(cursor, (1,)).astype(jnp.int32),
        ring,
        *after,
        n_pre=np.int64(n_pre),
        n_synapses=np.int64(n_syn),
        n_post=np.int64(n_post),
        homogeneous_delay=np.int64(homogeneous_delay),
        weight_base=np.int64(1 if shared_weight else n_syn),
        delay_base=np.int64(1 if delays is None else n_syn),
        ring_len=np.int64(ring.shape[0]),
        clear_row=np.int64(clear),
    )


_PALLAS_KERNEL = {
    Implementation.PALLAS_TRITON: _pallas_csr.deliver_atomic,
    Implementation.PALLAS_PORTABLE: _pallas_csr.deliver_owner,
    Implementation.PALLAS_TPU: _pallas_csr.deliver_tpu,
}


def _pallas(impl, interpret, *args, n_post, hd, capacity):
    """Run a batched Pallas kernel on unbatched arguments (``vmap`` folds into its batch)."""
    kernel = partial(
        _PALLAS_KERNEL[impl],
        n_post=n_post,
        homogeneous_delay=hd,
        capacity=capacity,
        interpret=interpret,
    )
    return _batching.run_batched(kernel, *args)


# AUTO traces every platform's branch: a jitted entry point reuses the traced kernels.
_pallas_jit = jax.jit(_pallas, static_argnums=(0, 1), static_argnames=("n_post", "hd", "capacity"))
