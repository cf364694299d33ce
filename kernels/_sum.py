r"""``fast_sum``: the sum of a population-sized array, without XLA's scalar CPU reductions.

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
    impl = _dispatch.native_or_reference_implementation("fast_sum", implementation)
    x = jnp.ravel(jnp.asarray(x))
    x = x.astype(jax.eval_shape(partial(jnp.sum, dtype=dtype), x).dtype)
    if x.dtype not in _NATIVE_DTYPES:
        if impl is Implementation.NATIVE_CPU:
            raise ValueError(
                f"fast_sum: the native kernel sums float32 and float64; got {x.dtype}. "
                "Pass dtype=jnp.float32 or use implementation=AUTO."
            )
        impl = Implementation.REFERENCE
    return _sum(impl, x)


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def _sum(impl, x):
    return _dispatch.native_or_reference(impl, (x,), reference=_reference, native=_native)


@_sum.defjvp
def _sum_jvp(impl, primals, tangents):
    # jnp.sum for the tangent: linear and transposable, so grad works through it.
    return _sum(impl, *primals), _reference(*tangents)


def _reference(x):
    return jnp.sum(x, dtype=x.dtype)


def _native(x):
    call = jax.ffi.ffi_call(
        "brainsim_sum", jax.ShapeDtypeStruct((), x.dtype), vmap_method="broadcast_all"
    )
    return call(x, n=np.int64(x.shape[-1]))
