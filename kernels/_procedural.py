r"""Procedural ("just-in-time") connectivity: the delivery op, synapses regenerated per spike.

The synapses of presynaptic neuron ``i`` are a pure function of ``(seed, i, j)``, the
counter-based hash of :mod:`brainsim.kernels._procedural_rng`; this module is the op
:func:`procedural_deliver` that regenerates and scatters them, with its dispatch, ``custom_jvp``
and batching. Every implementation (the jnp reference, the native CPU kernel
``kernels/cpu/procedural_deliver.cc``, the Pallas kernels of
:mod:`brainsim.kernels._pallas_procedural`) sees bit-identical synapses.

**Window delivery.** The ring need not be the postsynaptic population's own: with
``post_offset`` :math:`o` and ``ring_width`` :math:`W` a synapse with regenerated target
:math:`t \in [0, n_\text{post})` adds into column :math:`t + o` of a ring :math:`W` neurons wide
when :math:`0 \le t + o < W`, and is skipped otherwise. The synapses (and the hash) are those of
the population of ``n_post`` neurons either way. Two uses: a population that is neurons
:math:`o .. o + n_\text{post} - 1` of a merged group (:math:`o \ge 0`, every target kept), and
a device that owns neurons :math:`f .. f + n_\text{local} - 1` of the population
(:math:`o = -f`, :math:`W = n_\text{local}`: only the targets in its window are kept).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _batching, _compact, _dispatch, _pallas_procedural, _reference
from ._dispatch import Implementation
from ._procedural_rng import ProceduralRule
from ._ring import checked_after, clear_first, clear_tangent


def procedural_deliver(
    ring,
    cursor,
    spikes,
    weight_loc,
    weight_scale=None,
    counts=None,
    *,
    n_post: int,
    fan_out: int,
    seed: int,
    replace: bool = False,
    allow_self: bool = True,
    delay: int = 1,
    post_offset: int = 0,
    ring_width: int | None = None,
    chunk_size: int = 8,
    capacity: int | None = None,
    implementation: Implementation = Implementation.AUTO,
    clear_row: bool = False,
    after=(),
):
    r"""Deliver ``spikes`` through a procedural projection into a ring buffer.

    For every presynaptic neuron ``i`` with ``spikes[i] != 0`` and ``j < count_i`` (``fan_out``,
    or ``counts[i]``), add ``spikes[i] * w_ij`` to ``ring[(cursor + delay) mod D, t_ij + o]``
    where ``t_ij`` and ``w_ij`` are regenerated from ``(seed, i, j)`` (module docstring), the
    ring is ``W`` = ``ring_width`` neurons wide and ``o`` = ``post_offset``; a synapse whose
    column ``t_ij + o`` falls outside ``[0, W)`` is skipped:

    .. math::
        \text{ring}[(c + d) \bmod D,\; t_{ij} + o] \mathrel{+}= s_i\, w_{ij}
        \quad \text{for } 0 \le t_{ij} + o < W.

    Arguments:
        ring: ``(D * W,)`` future input of the postsynaptic receptor (``W`` = ``ring_width``).
        cursor: the current step (int).
        spikes: ``(n_pre,)`` spike values (0 = no spike).
        weight_loc: scalar; the weight of every synapse, or the low end of uniform weights.
        weight_scale: ``None`` (constant weights) or a scalar: ``w = loc + scale · U[0, 1)``.
        counts: ``None`` (every neuron has ``fan_out`` synapses) or ``(n_pre,)`` int32 counts
            ``≤ fan_out`` (fixed-probability connectivity).
        n_post: postsynaptic population size: targets are drawn from ``range(n_post)``.
        fan_out: synapses per neuron, or the largest count.
        seed: uint32 seed of the connectivity.
        replace: draw targets with replacement (multapses possible) instead of distinct ones.
        allow_self: ``False`` excludes ``i → i`` (``n_pre == n_post``).
        delay: homogeneous delay in steps (>= 1).
        post_offset: column of the ring that target 0 adds into (any int; negative for a
            window that starts inside the population).
        ring_width: neurons per ring row ``W`` (default ``n_post``).
        chunk_size: spikes per iteration of the jnp reference (never limits delivery).
        capacity: programs of the Triton atomic kernel's one launch, spikes per window of the
            owner-block and TPU kernels (``None``: about ``n_pre / 16``,
            :mod:`brainsim.kernels._compact`); any number of spikes is delivered.
        implementation: :class:`Implementation`: the reference, the native CPU kernel, or the
            Pallas kernels of :mod:`brainsim.kernels._pallas_procedural` (Triton atomic scatter
            regenerating synapses in the kernel, owner block, TPU); ``AUTO`` picks per platform
            (:mod:`brainsim.kernels._dispatch`).
        clear_row, after: zero row ``cursor mod D`` first, once ``after`` is computed, as in
            :func:`~brainsim.kernels.ell_deliver` (the native kernel clears it itself);
            ``after`` arrays are ``(W,)``.

    Example (a population of 4 neurons as neurons 3..6 of a ring 8 wide):
        >>> import jax.numpy as jnp
        >>> ring = procedural_deliver(jnp.zeros(2 * 8), 0, jnp.ones(3), 1.0, n_post=4,
        ...                           fan_out=2, seed=1, post_offset=3, ring_width=8)
        >>> float(ring[8:11].sum() + ring[15]), float(ring.sum())
        (0.0, 6.0)
    """
    after = checked_after("procedural_deliver", clear_row, after)
    n_pre = spikes.shape[-1]
    rule = ProceduralRule(int(n_pre), int(n_post), int(fan_out), int(seed), bool(replace), bool(allow_self))
    _check_rule(rule, delay, chunk_size)
    offset, width = _check_window(post_offset, n_post if ring_width is None else ring_width)
    if ring.shape[0] % width:
        raise ValueError(
            f"procedural_deliver: ring length {ring.shape[0]} is not a multiple of the ring "
            f"width {width} (`ring_width`, default n_post); pass a ring of D * {width} values."
        )
    capacity = _compact.check_capacity(capacity, max(int(n_pre), 1), owner="procedural_deliver")
    static = _Static(
        rule,
        int(delay),
        int(chunk_size),
        Implementation(implementation),
        capacity,
        bool(clear_row),
        offset,
        width,
    )
    loc = jnp.asarray(weight_loc)
    scale = None if weight_scale is None else jnp.asarray(weight_scale)
    counts = None if counts is None else jnp.asarray(counts, jnp.int32)
    return _deliver(static, ring, spikes, loc, scale, jnp.asarray(cursor, jnp.int32), counts, after)


def _check_rule(rule: ProceduralRule, delay: int, chunk_size: int) -> None:
    if delay < 1:
        raise ValueError(f"procedural_deliver: `delay` must be >= 1 step; got {delay}.")
    if chunk_size < 1:
        raise ValueError(f"procedural_deliver: `chunk_size` must be >= 1; got {chunk_size}.")
    if not 0 <= rule.seed < 2**32:
        raise ValueError(f"procedural_deliver: `seed` must lie in [0, 2**32); got {rule.seed}.")
    if rule.n_range < 1 and rule.fan_out > 0:
        raise ValueError("procedural_deliver: no possible target (n_post = 1 without self).")
    if not rule.replace and rule.fan_out > rule.n_range:
        raise ValueError(
            f"procedural_deliver: `fan_out` = {rule.fan_out} distinct targets exceed the "
            f"{rule.n_range} possible ones; use replace=True or a smaller fan-out."
        )
    if not rule.allow_self and rule.n_pre != rule.n_post:
        raise ValueError(
            "procedural_deliver: `allow_self=False` needs n_pre == n_post; got "
            f"{rule.n_pre} and {rule.n_post}."
        )


def _check_window(post_offset, ring_width) -> tuple[int, int]:
    """``(post_offset, ring_width)`` as Python ints, or an error naming the bad one."""
    for name, value in (("post_offset", post_offset), ("ring_width", ring_width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(
                f"procedural_deliver: `{name}` must be a Python int (static structure); got "
                f"{type(value).__name__}."
            )
    if ring_width < 1:
        raise ValueError(f"procedural_deliver: `ring_width` must be >= 1; got {ring_width}.")
    return int(post_offset), int(ring_width)


class _Static(NamedTuple):
    rule: ProceduralRule
    delay: int
    chunk: int
    impl: Implementation
    capacity: int
    clear: bool
    offset: int
    """Column of target 0 in the ring."""
    width: int
    """Neurons per ring row."""

    @property
    def window(self) -> dict:
        return dict(offset=self.offset, width=self.width)


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def _deliver(static, ring, spikes, loc, scale, cursor, counts, after):
    args = (ring, cursor, spikes, loc, scale, counts, *after)

    def without_after(args):
        return clear_first(args, 6, clear=static.clear, n_post=static.width)

    def reference(*args):
        return _reference.procedural_deliver(
            *without_after(args),
            rule=static.rule,
            delay=static.delay,
            chunk_size=static.chunk,
            **static.window,
        )

    def native(*args):
        kernel = partial(
            _native, rule=static.rule, delay=static.delay, clear=static.clear, **static.window
        )
        return _batching.run_in_place(kernel, *args)

    def pallas(which, interpret):
        def run(*args):
            return _pallas_jit(
                which,
                interpret,
                *without_after(args),
                rule=static.rule,
                delay=static.delay,
                capacity=static.capacity,
                **static.window,
            )

        return run

    return _dispatch.select(
        static.impl,
        args,
        reference=reference,
        native=native,
        pallas=pallas,
        tpu_supported=ring.dtype == jnp.float32,
    )


@_deliver.defjvp
def _deliver_jvp(static, primals, tangents):
    ring, spikes, loc, scale, cursor, counts, after = primals
    ring_dot, spikes_dot, loc_dot, scale_dot, *_ = tangents
    out = _deliver(static, *primals)
    if static.clear:  # the cleared row carries no tangent either
        ring_dot = clear_tangent(ring_dot, cursor, static.width)
    # Regenerate every synapse (not only those of neurons that spiked): silent neurons still
    # pass their surrogate gradient. The expression is linear in the tangents, so JAX
    # transposes it for reverse mode.
    # One pass regenerates the synapses for both terms of the product rule.
    terms = [(spikes_dot, loc, scale), (spikes, loc_dot, scale_dot)]
    out_dot = _reference.procedural_deliver_dense(
        ring_dot, cursor, terms, counts, rule=static.rule, delay=static.delay, **static.window
    )
    return out, out_dot


def _native(
    ring,
    cursor,
    spikes,
    loc,
    scale,
    counts,
    *after,
    rule: ProceduralRule,
    delay: int,
    clear: bool,
    offset: int,
    width: int,
):
    dtype = ring.dtype
    call = jax.ffi.ffi_call(
        "brainsim_procedural_deliver",
        jax.ShapeDtypeStruct(ring.shape, dtype),
        vmap_method="expand_dims",
        # The kernel adds into the ring in place (batched like the output, see `native`).
        input_output_aliases={5: 0},
    )
    return call(
        spikes.astype(dtype),
        jnp.zeros((1,), jnp.int32) if counts is None else counts.astype(jnp.int32),
        jnp.reshape(loc, (1,)).astype(dtype),
        jnp.zeros((1,), dtype) if scale is None else jnp.reshape(scale, (1,)).astype(dtype),
        jnp.reshape(cursor, (1,)).astype(jnp.int32),
        ring,
        *after,
        n_pre=np.int64(rule.n_pre),
        n_post=np.int64(rule.n_post),
        fan_out=np.int64(rule.fan_out),
        n_range=np.int64(rule.n_range),
        half_bits=np.int64(rule.half_bits),
        seed=np.int64(rule.seed),
        replace=np.int64(rule.replace),
        allow_self=np.int64(rule.allow_self),
        random_weight=np.int64(scale is not None),
        has_counts=np.int64(counts is not None),
        delay=np.int64(delay),
        ring_len=np.int64(ring.shape[0]),
        clear_row=np.int64(clear),
        post_offset=np.int64(offset),
        ring_width=np.int64(width),
    )


def _pallas(
    impl, interpret, *args, rule: ProceduralRule, delay: int, capacity: int, offset: int, width: int
):
    """Run a batched Pallas kernel on unbatched arguments (``vmap`` folds into its batch)."""
    kernel = {
        Implementation.PALLAS_TRITON: _pallas_procedural.deliver_atomic,
        Implementation.PALLAS_PORTABLE: _pallas_procedural.deliver_owner,
        Implementation.PALLAS_TPU: _pallas_procedural.deliver_tpu,
    }[impl]
    call = partial(
        kernel,
        rule=rule,
        delay=delay,
        capacity=capacity,
        interpret=interpret,
        offset=offset,
        width=width,
    )
    return _batching.run_batched(call, *args)


# AUTO traces every platform's branch: a jitted entry point reuses the traced kernels.
_pallas_jit = jax.jit(
    _pallas,
    static_argnums=(0, 1),
    static_argnames=("rule", "delay", "capacity", "offset", "width"),
)
