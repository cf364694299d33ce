r"""Clearing the ring-buffer row a receptor has just read, without copying the ring.

``clear_ring_row(ring, row, n_post=n, after=(...))`` returns ``ring`` (``D`` rows of ``n``
values, flattened) with row ``row mod D`` set to zero: the row of the current step, read by
the receptor, must be empty before the row comes round again ``D`` steps later.

Why an op of its own: a simulation loop carries the ring from step to step and XLA rewrites a
loop-carried buffer in place only when it can prove that every read of the old value happens
first. The readers of the row here are the neuron update and the trace decay; the arrays in
``after`` are their results, and the op waits for them:

* native CPU kernel (``kernels/cpu/ring_clear.cc``): ``after`` are extra operands of the custom
  call, not read. (A ``dynamic_update_slice`` followed by the in-place native delivery kernel
  made XLA copy the whole ring every step, ``D × n`` values; with this kernel it does not.)
* reference (any platform): ``dynamic_update_slice`` of a zero row computed as
  ``where(isnan(a), nan, 0)`` over the ``after`` arrays, an element-wise data dependency. It
  differs from zero only where an ``after`` value is already NaN.

``AUTO`` uses the native kernel on CPU when it compiled and the ring has more than one row,
the reference otherwise. The op is linear in ``ring`` and differentiable (the tangent's row is
cleared too); ``vmap`` runs one call for the whole batch.

A network clears the row of a receptor that projections feed inside the first of their
deliveries instead (``clear_row=True`` of ``ell_deliver``, ``csr_deliver`` and
``procedural_deliver``: the native kernels zero the row before scattering, one kernel call
instead of two; the other implementations call this op first, through :func:`clear_first`).
This op remains for receptors no projection feeds and for the sharded step.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import _dispatch
from ._dispatch import Implementation


def after(x, *values):
    """``x`` with a data dependency on every array in ``values`` (each shaped like ``x``).

    ``where(isnan(v), nan, x)``: equal to ``x`` wherever every value is a number. XLA cannot
    schedule ``x``'s computation before the values exist, which is what lets it update a
    buffer in place after they have read it. Element-wise, so it stays local to a device when
    the arrays are sharded.
    """
    broken = jnp.zeros(x.shape, bool)
    for v in values:
        broken = broken | jnp.isnan(v)
    return jnp.where(broken, jnp.asarray(jnp.nan, x.dtype), x)


def clear_ring_row(ring, row, *, n_post: int, after=(), implementation=Implementation.AUTO):
    """``ring`` with row ``row mod D`` zeroed, once every array in ``after`` is computed.

    Arguments:
        ring: ``(D * n_post,)`` float32 or float64.
        row: int, the row to clear (taken modulo ``D``).
        n_post: the row length.
        after: ``(n_post,)`` arrays that read the row (module docstring); may be empty.
        implementation: ``AUTO``, ``REFERENCE`` or ``NATIVE_CPU``.
    """
    impl = _dispatch.native_or_reference_implementation("clear_ring_row", implementation)
    ring = jnp.asarray(ring)
    if ring.ndim != 1 or n_post < 1 or ring.shape[0] % n_post:
        raise ValueError(
            f"clear_ring_row: `ring` must be a flat array of D * n_post values; got shape "
            f"{ring.shape} with n_post = {n_post}."
        )
    after = tuple(jnp.asarray(a) for a in after)
    for i, a in enumerate(after):
        if a.shape != (n_post,):
            raise ValueError(
                f"clear_ring_row: `after[{i}]` must have shape ({n_post},) like a ring row; got "
                f"{a.shape}."
            )
    if impl is Implementation.AUTO and ring.shape[0] == n_post:
        # A one-row ring (one-step delays) is cleared whole: the reference's zero row is then
        # a fresh buffer that XLA fuses and places itself, cheaper than a kernel call (5 % of
        # a COBA 4k step).
        impl = Implementation.REFERENCE
    return _clear(n_post, impl, ring, jnp.asarray(row, jnp.int32), after)


@partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _clear(n_post, impl, ring, row, after_values):
    return _dispatch.native_or_reference(
        impl,
        (ring, row, after_values),
        reference=partial(_reference, n_post=n_post),
        native=partial(_native, n_post=n_post),
    )


@_clear.defjvp
def _clear_jvp(n_post, impl, primals, tangents):
    ring, row, after_values = primals
    return _clear(n_post, impl, ring, row, after_values), clear_tangent(tangents[0], row, n_post)


def checked_after(op: str, clear_row: bool, after) -> tuple:
    """The ``after`` arrays of a delivery op as a tuple; they are an error without
    ``clear_row`` (they order the clearing, nothing else)."""
    after = tuple(jnp.asarray(a) for a in after)
    if after and not clear_row:
        raise ValueError(f"{op}: `after` orders the clearing of a row; pass clear_row=True.")
    return after


def clear_first(args, n_own: int, *, clear: bool, n_post: int) -> tuple:
    """A delivery's own arguments ``args[:n_own]`` (ring and cursor first), the ring's row
    ``cursor mod D`` cleared first when ``clear``, once ``args[n_own:]`` (its ``after`` arrays)
    are computed: ``clear_row=True`` on every implementation but a native kernel's."""
    ring, cursor, *rest = args[:n_own]
    if clear:
        ring = clear_ring_row(ring, cursor, n_post=n_post, after=args[n_own:])
    return (ring, cursor, *rest)


def clear_tangent(ring_dot, row, n_post: int):
    """The tangent of a ring whose row ``row mod D`` was cleared: that row zeroed, in jnp (a
    linear op JAX can transpose, unlike the native kernel)."""
    zero_row = jnp.zeros((n_post,), ring_dot.dtype)
    start = (row % (ring_dot.shape[0] // n_post)) * n_post
    return lax.dynamic_update_slice(ring_dot, zero_row, (start,))


def _reference(ring, row, after_values, *, n_post):
    start = (row % (ring.shape[0] // n_post)) * n_post
    cleared = after(jnp.zeros((n_post,), ring.dtype), *after_values)
    return lax.dynamic_update_slice(ring, cleared, (start,))


def _native(ring, row, after_values, *, n_post):
    if ring.dtype not in (jnp.float32, jnp.float64):
        return _reference(ring, row, after_values, n_post=n_post)
    call = jax.ffi.ffi_call(
        "brainsim_ring_clear",
        jax.ShapeDtypeStruct(ring.shape, ring.dtype),
        # Every argument gets the batch axis, the ring included: the output aliases it.
        vmap_method="broadcast_all",
        input_output_aliases={0: 0},
    )
    return call(
        ring,
        jnp.reshape(row, (1,)),
        *after_values,
        n_post=np.int64(n_post),
        ring_len=np.int64(ring.shape[0]),
    )
