r"""``fast_sum`` and ``segment_sums``: sums of population-sized arrays, without XLA's scalar CPU
reductions.

A simulation step reduces a few population-sized arrays: the spike counts of a rate monitor
and the finiteness check of every state array. At the sizes of a COBA 4k network (800 and
3200 neurons) these reductions cost more than the neuron update itself on CPU: XLA's CPU
backend splits a ``reduce`` of more than 32 values into windowed reductions of 32, each its
own kernel running at scalar speed (about 2.5 µs for 3200 values on the development machine,
against 0.3 µs for an element-wise update of the same array).

On CPU the native kernel ``kernels/cpu/sum.cc`` sums each array in one pass with vector
registers; on other platforms, for other dtypes, or without the native kernels, ``jnp.sum``.
A pure-jnp rewrite (pairwise folding ``x[:h] + x[h:]``) was as fast, but as an element-wise
consumer it let XLA fuse, and so duplicate, the neuron update into the monitor's sum, which
then read the old state after it had been overwritten and forced copies of every state array
(and ring) in the loop; a custom call is a fusion boundary and cannot cause that.

:func:`segment_sums` sums consecutive segments of one array in one call: a rate monitor of the
eight populations of a merged group (slices of the group's spike vector, which XLA joins back
into the vector itself) is one kernel per step, not eight, whatever the number of populations.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import _dispatch
from ._dispatch import Implementation

_NATIVE_DTYPES = (jnp.float32, jnp.float64)


def fast_sum(x, *, dtype=None, implementation=Implementation.AUTO):
    """Sum of all elements of ``x``, with the dtype of ``jnp.sum(x, dtype=dtype)``.

    Equal to ``jnp.sum(x, dtype=dtype)`` up to the order of the additions (module docstring),
    NaN and ±inf propagating as there. Differentiable (the tangent is summed with
    ``jnp.sum``) and batchable (``vmap`` makes one kernel call for the whole batch).

    ``implementation``: ``AUTO`` (the native kernel on CPU for float32/float64, else
    ``jnp.sum``), ``REFERENCE`` (``jnp.sum``) or ``NATIVE_CPU``.
    """
    x = jnp.ravel(jnp.asarray(x))
    return segment_sums(x, (x.size,), dtype=dtype, implementation=implementation, op="fast_sum")[0]


def segment_sums(x, sizes, *, dtype=None, implementation=Implementation.AUTO, op="segment_sums"):
    """Sums of consecutive segments of the 1-D array ``x``: ``sizes`` (static non-negative
    integers adding up to ``x.size``) are the segments' lengths, laid end to end; returns one
    sum per segment, with the dtype of ``jnp.sum(x, dtype=dtype)``.

    ``segment_sums(x, (a, b))`` equals ``jnp.stack([x[:a].sum(), x[a:a + b].sum()])`` up to
    the order of the additions, in one kernel call; differentiable and batchable as
    :func:`fast_sum`, with the same ``implementation`` choices.
    """
    impl = _dispatch.native_or_reference_implementation(op, implementation)
    x = jnp.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{op}: `x` must be one-dimensional; got shape {x.shape}.")
    sizes = tuple(int(n) for n in np.asarray(sizes, dtype=np.int64).reshape(-1))
    if not sizes or min(sizes) < 0 or sum(sizes) != x.size:
        raise ValueError(
            f"{op}: `sizes` must be one or more non-negative segment lengths adding up to "
            f"x.size = {x.size}; got {sizes}."
        )
    x = x.astype(jax.eval_shape(partial(jnp.sum, dtype=dtype), x).dtype)
    if x.dtype not in _NATIVE_DTYPES:
        if impl is Implementation.NATIVE_CPU:
            raise ValueError(
                f"{op}: the native kernel sums float32 and float64; got {x.dtype}. "
                "Pass dtype=jnp.float32 or use implementation=AUTO."
            )
        impl = Implementation.REFERENCE
    return _sum(impl, sizes, x)


@partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _sum(impl, sizes, x):
    return _dispatch.native_or_reference(
        impl, (x,), reference=partial(_reference, sizes), native=partial(_native, sizes)
    )


@_sum.defjvp
def _sum_jvp(impl, sizes, primals, tangents):
    # jnp.sum for the tangent: linear and transposable, so grad works through it.
    return _sum(impl, sizes, *primals), _reference(sizes, *tangents)


def _reference(sizes, x):
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return jnp.stack(
        [jnp.sum(x[a:b], dtype=x.dtype) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    )


def _native(sizes, x):
    call = jax.ffi.ffi_call(
        "brainsim_sum",
        jax.ShapeDtypeStruct((len(sizes),), x.dtype),
        vmap_method="broadcast_all",
    )
    return call(x, sizes=np.asarray(sizes, np.int64))
