r"""Event-driven propagation through a fixed-fan-out (ELL) projection into a ring buffer.

``ell_deliver(ring, cursor, spikes, targets, weights, delays)`` adds, for every presynaptic
neuron ``i`` with ``spikes[i] != 0`` and every synapse ``k`` of its row,
``spikes[i] * weights[i, k]`` to ``ring[(cursor + delay[i, k]) mod D, targets[i, k]]`` (the ring
is ``D`` rows of ``n_post`` values, flattened; targets ``>= n_post`` are padding).

Implementations (a static choice, part of the compiled program):

* ``Implementation.REFERENCE`` — pure jnp (:mod:`brainsim.kernels._reference`), any platform.
* ``Implementation.NATIVE_CPU`` — the C++ kernel of :mod:`brainsim.kernels._cpu` (CPU only).
* ``Implementation.AUTO`` (default) — the native kernel when the program runs on a CPU and the
  kernel is available, otherwise the reference (chosen per platform at lowering time).

Differentiation: a ``custom_jvp`` whose tangent is the same sum over *all* synapses in jnp,
so gradients with respect to weights and to (surrogate) spikes equal those of the dense
computation (a neuron that did not spike still passes its surrogate gradient). Batching:
``vmap`` runs one native call over the whole batch.
"""

from __future__ import annotations

import enum
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import _cpu, _reference


class Implementation(enum.Enum):
    AUTO = "auto"
    REFERENCE = "reference"
    NATIVE_CPU = "native_cpu"


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
    implementation: Implementation = Implementation.AUTO,
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
    """
    if delays is None and homogeneous_delay < 1:
        raise ValueError(f"ell_deliver: `homogeneous_delay` must be >= 1; got {homogeneous_delay}.")
    if ring.shape[0] % n_post:
        raise ValueError(
            f"ell_deliver: ring length {ring.shape[0]} is not a multiple of n_post = {n_post}."
        )
    hd = 0 if delays is not None else int(homogeneous_delay)
    return _deliver(
        n_post,
        hd,
        chunk_size,
        Implementation(implementation),
        ring,
        spikes,
        weights,
        jnp.asarray(cursor, jnp.int32),
        targets,
        delays,
    )


@partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3))
def _deliver(n_post, hd, chunk, impl, ring, spikes, weights, cursor, targets, delays):
    args = (ring, cursor, spikes, targets, weights, delays)

    def reference(*args):
        return _reference.ell_deliver(*args, n_post=n_post, homogeneous_delay=hd, chunk_size=chunk)

    def native(*args):
        return _native(*args, n_post=n_post, homogeneous_delay=hd)

    if impl is Implementation.REFERENCE:
        return reference(*args)
    if impl is Implementation.NATIVE_CPU:
        if not _cpu.available():
            raise RuntimeError(f"native CPU kernels unavailable: {_cpu.status()}")
        return native(*args)
    if not _cpu.available():
        return reference(*args)
    return lax.platform_dependent(*args, cpu=native, default=reference)


@_deliver.defjvp
def _deliver_jvp(n_post, hd, chunk, impl, primals, tangents):
    ring, spikes, weights, cursor, targets, delays = primals
    ring_dot, spikes_dot, weights_dot, *_ = tangents
    out = _deliver(n_post, hd, chunk, impl, *primals)
    dense = partial(_reference.ell_deliver_dense, n_post=n_post, homogeneous_delay=hd)
    zero = jnp.zeros_like(ring)
    out_dot = (
        ring_dot
        + dense(zero, cursor, spikes_dot, targets, weights, delays)
        + dense(zero, cursor, spikes, targets, weights_dot, delays)
    )
    return out, out_dot


def _native(ring, cursor, spikes, targets, weights, delays, *, n_post, homogeneous_delay):
    n_pre, fan_out = targets.shape
    shared_weight = weights.ndim == 0
    w = jnp.reshape(weights, (1,)) if shared_weight else weights
    d = jnp.zeros((1,), jnp.int32) if delays is None else delays.astype(jnp.int32)
    call = jax.ffi.ffi_call(
        "brainsim_ell_deliver",
        jax.ShapeDtypeStruct(ring.shape, ring.dtype),
        # Batched calls pass shared arguments with a leading axis of 1; the kernel broadcasts
        # them, so one call serves the whole batch. The ring is not aliased to the output
        # because under vmap the two can differ in batch size (the copy is O(ring), small).
        vmap_method="expand_dims",
    )
    return call(
        spikes.astype(ring.dtype),
        targets.astype(jnp.int32),
        w.astype(ring.dtype),
        d,
        jnp.reshape(cursor, (1,)).astype(jnp.int32),
        ring,
        n_pre=np.int64(n_pre),
        fan_out=np.int64(fan_out),
        n_post=np.int64(n_post),
        homogeneous_delay=np.int64(homogeneous_delay),
        weight_base=np.int64(1 if shared_weight else n_pre * fan_out),
        delay_base=np.int64(1 if delays is None else n_pre * fan_out),
        ring_len=np.int64(ring.shape[0]),
    )
