r"""Windows of the indices of neurons that spiked, for loops over active neurons only.

:func:`active_window` returns the indices of the non-zero entries of a spike vector of rank
``start .. start + size - 1`` (ascending, padded with ``n``) and their total count, so a
consumer loops ``ceil(count / size)`` times and never drops a spike.

Two implementations with the same results:

* the reference (:mod:`brainsim.kernels._events`: spikes packed 32 to a word, word offsets by a
  prefix sum, a search per entry), portable to every backend;
* a native CPU kernel (``kernels/cpu/active_indices.cc``): one pass over the spike vector that
  skips blocks of zeros. XLA's CPU runtime makes the reference cost ~75 µs per step for 32,000
  neurons on the development machine (a dozen small ops), which dominated the per-step cost of
  plasticity; the kernel takes a few µs.

``AUTO`` uses the native kernel on CPU when it compiled and the reference elsewhere.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Int

from . import _dispatch
from ._dispatch import Implementation
from ._events import all_indices, chunk_indices, cpu_loop_or_single, spike_events
from ._tangent import differentiated_as


def _reference(spikes, start, size):
    events = spike_events(spikes)
    return chunk_indices(events, start, size), events.count.astype(jnp.int32)


def _native(spikes, start, size):
    n = spikes.shape[0]
    if spikes.dtype not in (jnp.float32, jnp.float64):
        spikes = spikes.astype(jnp.float32)  # bool / int / bf16: zero stays zero
    call = jax.ffi.ffi_call(
        "brainsim_active_indices",
        (jax.ShapeDtypeStruct((size,), jnp.int32), jax.ShapeDtypeStruct((), jnp.int32)),
        vmap_method="expand_dims",
    )
    return call(
        spikes,
        jnp.reshape(start, (1,)).astype(jnp.int32),
        n=np.int64(n),
        size=np.int64(size),
    )


def active_window(
    spikes,
    start,
    size: int,
    *,
    implementation: Implementation = Implementation.AUTO,
) -> tuple[Int[Array, " size"], Int[Array, ""]]:
    """Indices of the spiking neurons of rank ``start .. start + size - 1`` and the count.

    Arguments:
        spikes: ``(n,)`` spike values; non-zero marks a spike (any dtype).
        start: rank of the first index wanted (int, may be traced).
        size: static window length.
        implementation: ``AUTO``, ``REFERENCE`` or ``NATIVE_CPU`` (the only ones this op has).

    Returns:
        ``(indices, count)``: ``(size,)`` int32 ascending indices padded with ``n``, and the
        number of spiking neurons. Not differentiable (integer results): the spikes enter
        through ``stop_gradient``.
    """
    implementation = _dispatch.native_or_reference_implementation("active_window", implementation)
    if int(size) < 1:
        raise ValueError(f"active_window: `size` must be >= 1; got {size}.")
    spikes = lax.stop_gradient(jnp.asarray(spikes))
    if spikes.ndim != 1:
        raise ValueError(
            f"active_window: `spikes` must be one vector (n,); got shape {spikes.shape}. "
            "Use jax.vmap for a batch."
        )
    start = jnp.asarray(start, jnp.int32)
    size = int(size)
    return _dispatch.native_or_reference(
        implementation,
        (spikes, start),
        reference=functools.partial(_reference, size=size),
        native=functools.partial(_native, size=size),
    )


def for_each_active(
    spikes, size: int, body, init, *, implementation=Implementation.AUTO, single=None
):
    """Fold ``body(indices, carry) -> carry`` over windows of ``size`` spiking neurons.

    ``indices`` are ascending, padded with ``n``; ``ceil(count / size)`` iterations (none when
    nothing spiked), so every spike is visited once whatever the count. ``single=True``: one
    call with a window of all ``n`` neurons instead (no loop); ``None`` (default): the loop on a
    CPU, the single call on any other platform, where XLA would evaluate the loop's
    data-dependent predicate on the host, a device round trip per iteration (see
    :mod:`brainsim.kernels._events`). Same visits either way.

    Derivatives (forward and reverse mode) are those of the single call, whatever runs
    forward (:func:`~brainsim.kernels._tangent.differentiated_as`): a loop with a
    data-dependent trip count cannot be transposed.
    """

    def loop(carry):
        _, count = active_window(spikes, 0, size, implementation=implementation)

        def step(c, carry):
            idx, _ = active_window(spikes, c * size, size, implementation=implementation)
            return body(idx, carry)

        return lax.fori_loop(0, (count + size - 1) // size, step, carry)

    def whole(carry):
        return body(all_indices(spike_events(lax.stop_gradient(jnp.asarray(spikes)))), carry)

    if single:
        return whole(init)  # loop-free already
    return differentiated_as(
        lambda carry: cpu_loop_or_single(carry, loop, whole, force_single=single), whole, init
    )
