r"""Pallas kernels for procedural delivery: synapses regenerated from ``(seed, pre, k)``.

Every kernel evaluates the integer hash of :mod:`brainsim.kernels._procedural_rng` (Threefry-2x32
words, the keyed Feistel permutation with cycle walking, Lemire's multiply-shift, the 24-bit
weight variate) with the same uint32 operations as the jnp reference, so every implementation,
capacity and tile size regenerates bit-identical targets and variates. Every argument has a
leading batch axis of 1 (shared) or ``batch``: ``ring (b, D * W)``, ``cursor (b,)``,
``spikes (b, n_pre)``, ``loc (b,)``, ``scale (b,)`` or ``None``, ``counts (b, n_pre)`` or
``None``. Spikes are compacted (:mod:`brainsim.kernels._compact`; never a dropped spike).

The ring is ``width`` = ``W`` neurons wide and target ``t`` of the rule (drawn from
``range(n_post)``) adds into column ``t + offset`` when ``0 <= t + offset < W``, else nowhere
(the window delivery of :func:`brainsim.kernels.procedural_deliver`).

**Atomic scatter** (:func:`deliver_atomic`, ``Implementation.PALLAS_TRITON``). One launch, grid
``(batch, capacity)``, over the list of all spikes: program ``(b, j)`` owns list entries ``j,
j + capacity, ...`` (:func:`_pallas_gpu.for_each_owned_spike`) and regenerates the synapses of
each of those neurons *inside the kernel*, ``T = 32`` at a time (the synapse index ``k`` is the lane), and adds
them with one vector ``atomic_add`` per tile (:func:`_pallas_gpu.scatter_lanes`; equal slots
are merged first when targets are drawn with replacement, the only case where a row can hit one
neuron twice). Nothing but the spike vector is read: the memory traffic is the atomics. The
cycle walk is a ``while`` loop over the tile until every live lane is in range (expected
``4^h / n`` Feistel applications, at most ~4).

**Owner block** (:func:`deliver_owner`, ``PALLAS_PORTABLE``) and **TPU** (:func:`deliver_tpu`):
spikes in windows of fixed ``capacity`` (``ceil(count / capacity)`` launches); the synapses of
one window are regenerated once in jnp (the reference's own function,
:func:`_reference._procedural_rows`) into synapse streams, then accumulated by the shared
owner-block kernels (:func:`_pallas_gpu.owner_accumulate`, :func:`_pallas_tpu.accumulate`).
Regenerating inside those kernels would repeat the hash once per output block.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

from . import _compact, _pallas_gpu, _pallas_tpu, _reference
from ._procedural_rng import ProceduralRule, feistel, targets_and_variates

LANE_TILE = 32
"""Synapses regenerated per atomic tile (at most; a power of two)."""


def _prepare(ring, cursor, spikes, loc, scale, counts):
    ring = jnp.asarray(ring)
    dtype = ring.dtype
    args = (
        ring,
        jnp.asarray(cursor).astype(jnp.int32),
        jnp.asarray(spikes).astype(dtype),
        jnp.asarray(loc).astype(dtype),
        None if scale is None else jnp.asarray(scale).astype(dtype),
        None if counts is None else jnp.asarray(counts).astype(jnp.int32),
    )
    return args, max(a.shape[0] for a in args if a is not None)


def _kernel_walk(rule: ProceduralRule):
    """The cycle walk for in-kernel use: the loop condition is a ``max`` (Triton has no
    ``reduce_or``). Live lanes end on the same value as the reference's walk."""
    n_range = np.uint32(rule.n_range)

    def walk(j, keys, active):
        x = feistel(j, keys, rule.half_bits)

        def cond(x):
            return jnp.max(jnp.where(active & (x >= n_range), 1, 0)) > 0

        def body(x):
            return jnp.where(x >= n_range, feistel(x, keys, rule.half_bits), x)

        return lax.while_loop(cond, body, x)

    return walk


def _atomic_kernel(
    idx_ref,
    nspk_ref,
    cur_ref,
    spk_ref,
    loc_ref,
    *refs,
    rule,
    delay,
    n_ring,
    lanes,
    random,
    has_counts,
    copies,
    offset,
    width,
):
    """Program ``(b, j)``: regenerate and scatter the synapses of the ``j``-th spike of ``b``."""
    refs = list(refs)
    scale_ref = refs.pop(0) if random else None
    cnt_ref = refs.pop(0) if has_counts else None
    _ring_in, out_ref = refs  # aliased with out_ref: updated in place
    b = pl.program_id(0)
    bi, bc, bs, bl, bsc, bn = (b if c else 0 for c in copies)
    n_ring = jnp.int32(n_ring)

    def scatter_row(row_c):
        spike = spk_ref[bs, row_c]
        cursor = lax.rem(cur_ref[bc], n_ring)
        cursor = jnp.where(cursor < 0, cursor + n_ring, cursor)
        r = lax.rem(cursor + delay, n_ring)
        loc = loc_ref[bl]
        scale = scale_ref[bsc] if random else None
        lane = lax.broadcasted_iota(jnp.int32, (lanes,), 0)
        rows = (row_c + lane * 0).astype(jnp.uint32)
        walk = _kernel_walk(rule)

        def tile(i, carry):
            k = i * lanes + lane
            ok = (k < cnt_ref[bn, row_c]) & (k < rule.fan_out) if has_counts else k < rule.fan_out
            t, g = targets_and_variates(
                rule, rows, k.astype(jnp.uint32), ok, jnp, walk, random
            )
            w = loc if g is None else loc + scale * g.astype(loc.dtype)
            ok = ok & (t >= 0) & (t < rule.n_post)
            column = t + offset
            ok = ok & (column >= 0) & (column < width)
            _pallas_gpu.scatter_lanes(
                out_ref,
                b,
                ok,
                r,
                column,
                jnp.broadcast_to(w * spike, (lanes,)),
                n_post=width,
                n_ring=n_ring,
                merge=rule.replace,
            )
            return carry

        if has_counts:
            count = jnp.clip(cnt_ref[bn, row_c], 0, rule.fan_out)
            n_tiles = lax.div(count + (lanes - 1), jnp.int32(lanes))
        else:
            n_tiles = jnp.int32(-(-rule.fan_out // lanes))
        lax.fori_loop(jnp.int32(0), n_tiles, tile, jnp.int32(0))

    _pallas_gpu.for_each_owned_spike(
        lambda pos: idx_ref[bi, pos], nspk_ref[bi], rule.n_pre, 1, scatter_row
    )


def deliver_atomic(
    ring,
    cursor,
    spikes,
    loc,
    scale,
    counts,
    *,
    rule,
    delay: int,
    capacity: int,
    interpret=False,
    lane_tile: int = LANE_TILE,
    offset: int = 0,
    width: int | None = None,
):
    """Batched atomic-scatter procedural delivery (Triton); see the module docstring."""
    width = rule.n_post if width is None else width
    args, batch = _prepare(ring, cursor, spikes, loc, scale, counts)
    ring, cursor, spikes, loc, scale, counts = args
    length = ring.shape[1]
    if rule.fan_out == 0:
        return jnp.broadcast_to(ring, (batch, length))
    lanes = min(_pallas_gpu._next_pow2(lane_tile), _pallas_gpu._next_pow2(rule.fan_out))
    ext = jnp.pad(jnp.broadcast_to(ring, (batch, length)), ((0, 0), (0, lanes)))
    optional = tuple(x for x in (scale, counts) if x is not None)

    idx, count = _compact.compact_all(spikes)
    operands = (idx, count, cursor, spikes, loc) + optional
    many = [x.shape[0] > 1 for x in operands[1:5]]
    many += [
        scale is not None and scale.shape[0] > 1,
        counts is not None and counts.shape[0] > 1,
    ]
    kernel = functools.partial(
        _atomic_kernel,
        rule=rule,
        delay=delay,
        n_ring=length // width,
        lanes=lanes,
        random=scale is not None,
        has_counts=counts is not None,
        copies=tuple(many),
        offset=offset,
        width=width,
    )
    ext = _pallas_gpu.launch_atomic(
        kernel, operands, ext, capacity, lanes=lanes, interpret=interpret,
        name="brainsim_procedural_deliver_atomic",
    )
    return ext[:, :length]


# ------------------------------------------------------------------------- owner block, TPU


def regenerated_synapses(idx, spikes, loc, scale, counts, *, rule, dtype, offset=0, width=None):
    """Synapse streams ``(column, v, None)`` of one window of spikes (``idx (batch, capacity)``,
    sentinel ``n_pre``), each ``(batch, capacity * fan_out)``, ordered by spike: regenerated by
    the reference's own function, so the synapses are those of every other implementation.
    ``column`` is the target plus ``offset``, or ``-1`` outside ``[0, width)``."""
    width = rule.n_post if width is None else width
    args = (idx, spikes, loc, scale, counts)
    batch = max(a.shape[0] for a in args if a is not None)
    in_axes = tuple(None if a is None else (0 if a.shape[0] == batch > 1 else None) for a in args)
    squeezed = tuple(
        a if a is None or ax == 0 else a[0] for a, ax in zip(args, in_axes, strict=True)
    )
    j = jnp.arange(rule.fan_out, dtype=jnp.int32)

    def one(idx, spikes, loc, scale, counts):
        live = (idx >= 0) & (idx < rule.n_pre)
        rows = jnp.where(live, idx, rule.n_pre)
        t, valid, v = _reference._procedural_rows(
            rule, rows, j, live, counts, [(spikes, loc, scale)], dtype
        )
        column = t + offset
        ok = valid & (t >= 0) & (t < rule.n_post) & (column >= 0) & (column < width)
        return jnp.where(ok, column, -1).ravel(), jnp.where(ok, v, jnp.zeros((), dtype)).ravel()

    t, v = jax.vmap(one, in_axes=in_axes, axis_size=batch)(*squeezed)
    return t, v, None


def _deliver_blocks(args, batch, accumulate, *, rule, delay, capacity, rows, cols, offset, width):
    ring, cursor, spikes, loc, scale, counts = args
    if rule.fan_out == 0:
        return jnp.broadcast_to(ring, (batch, ring.shape[1]))
    n_ring = ring.shape[1] // width
    view = _pallas_tpu.RingView(n_ring, width, rows, cols)
    r0 = _pallas_tpu.homogeneous_row(cursor, delay, n_ring, batch)

    def body(idx, count, blocks):
        streams = regenerated_synapses(
            idx, spikes, loc, scale, counts, rule=rule, dtype=ring.dtype, offset=offset, width=width
        )
        return accumulate(blocks, count * rule.fan_out, r0, streams)

    blocks = _compact.for_each_window(spikes, capacity, body, view.to_blocks(ring, batch))
    return view.to_flat(blocks)


def deliver_owner(
    ring, cursor, spikes, loc, scale, counts, *, rule, delay: int, capacity: int, interpret=False,
    offset: int = 0, width: int | None = None
):  # fmt: skip
    """Batched deterministic owner-block procedural delivery (Triton)."""
    args, batch = _prepare(ring, cursor, spikes, loc, scale, counts)
    accumulate = functools.partial(
        _pallas_gpu.owner_accumulate,
        interpret=interpret,
        name="brainsim_procedural_deliver_owner",
    )
    return _deliver_blocks(
        args,
        batch,
        accumulate,
        rule=rule,
        delay=delay,
        capacity=capacity,
        rows=_pallas_gpu.OWNER_ROWS,
        cols=_pallas_gpu.OWNER_COLUMNS,
        offset=offset,
        width=rule.n_post if width is None else width,
    )


def deliver_tpu(
    ring, cursor, spikes, loc, scale, counts, *, rule, delay: int, capacity: int, interpret=False,
    offset: int = 0, width: int | None = None
):  # fmt: skip
    """Batched TPU procedural delivery (float32 only)."""
    args, batch = _prepare(ring, cursor, spikes, loc, scale, counts)
    _pallas_tpu.check_float32(args[0].dtype, "procedural")
    width = rule.n_post if width is None else width
    cols = _pallas_tpu.column_block(width)
    accumulate = functools.partial(
        _pallas_tpu.accumulate,
        interpret=interpret,
        cols=cols,
        name="brainsim_procedural_deliver_tpu",
    )
    return _deliver_blocks(
        args,
        batch,
        accumulate,
        rule=rule,
        delay=delay,
        capacity=capacity,
        rows=_pallas_tpu.ROW_BLOCK,
        cols=cols,
        offset=offset,
        width=width,
    )
