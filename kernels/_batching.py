"""Batching of the kernels: ``vmap`` (nested or not) becomes one launch with a batch axis.

A kernel here takes every argument with a leading batch axis of 1 (shared by the whole batch)
or ``B``. :func:`run_batched` calls such a kernel on unbatched arguments; its ``vmap`` rule
(:func:`batched`) folds the mapped axes into the leading one. :func:`run_in_place` does the
same for a native kernel that writes its first argument (the ring) in place.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def batched(call):
    """``call`` (arguments with a leading batch axis of 1 or B) with a ``vmap`` rule that folds
    the mapped axis into the leading one, so any nesting of ``vmap`` runs one launch."""

    @jax.custom_batching.custom_vmap
    def run(*args):
        return call(*args)

    @run.def_vmap
    def _rule(axis_size, in_batched, *args):
        inner = max(a.shape[1] if b else a.shape[0] for a, b in zip(args, in_batched, strict=True))
        merged = []
        for a, b in zip(args, in_batched, strict=True):
            if b:
                a = jnp.broadcast_to(a, (axis_size, inner) + a.shape[2:])
                merged.append(a.reshape((axis_size * inner,) + a.shape[2:]))
            elif a.shape[0] == 1:
                merged.append(a)  # shared by every batch element: stays one copy
            else:
                merged.append(jnp.tile(a, (axis_size,) + (1,) * (a.ndim - 1)))
        out = run(*merged)
        return out.reshape((axis_size, inner) + out.shape[1:]), True

    return run


def run_batched(kernel, *args):
    """``kernel`` (every non-``None`` argument with a leading batch axis of 1 or ``B``) on
    unbatched arguments, with a ``vmap`` rule that folds mapped axes into the leading one."""
    present = tuple(a is not None for a in args)

    def call(*xs):
        it = iter(xs)
        return kernel(*(next(it) if p else None for p in present))

    return batched(call)(*(jnp.asarray(a)[None] for a in args if a is not None))[0]


def unbatched_map(fn, args, *, own_copy=()):
    """Map ``fn`` over the leading batch axis (1 = shared) with a single ``vmap``. The
    arguments at the positions ``own_copy`` get one copy per batch element even when shared
    (``fn`` writes them in place)."""
    args = [a for a in args]
    batch = max(a.shape[0] for a in args if a is not None)
    for i in own_copy:
        args[i] = jnp.broadcast_to(args[i], (batch,) + args[i].shape[1:])
    in_axes = [None if a is None or a.shape[0] == 1 else 0 for a in args]
    args = [a if a is None or ax == 0 else a[0] for a, ax in zip(args, in_axes, strict=True)]
    return jax.vmap(fn, in_axes=in_axes, axis_size=batch)(*args)


def run_in_place(kernel, ring, *args):
    """Like :func:`run_batched` for a native ``kernel(ring, *args)`` whose output aliases
    ``ring`` (it adds in place): under ``vmap`` a shared ring gets one copy per batch element
    first, so the output and the aliased ring always have the same shape. The native kernels'
    ``expand_dims`` batching handles one level only, hence the single ``vmap``."""

    def call(*xs):
        return unbatched_map(kernel, xs, own_copy=(0,))

    return run_batched(call, ring, *args)
