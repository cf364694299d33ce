r"""Pallas kernels for CSR delivery: Triton atomic scatter by row, owner block, TPU.

The same three designs as the ELL kernels (:mod:`brainsim.kernels._pallas_gpu`,
:mod:`brainsim.kernels._pallas_tpu`), adapted to rows of varying length. Every argument has a
leading batch axis of 1 (shared) or ``batch``: ``ring (b, D * n_post)``, ``cursor (b,)``,
``spikes (b, n_pre)``, ``indptr (b, n_pre + 1)``, ``indices (b, S)``, ``weights (b, S)`` or
``(b,)``, ``delays (b, S)`` or ``None``.

**Atomic scatter** (:func:`deliver_atomic`, ``Implementation.PALLAS_TRITON``). One launch over
the list of all spikes (:func:`brainsim.kernels._compact.compact_all`, never a dropped spike);
grid ``(batch, capacity)``, program ``(b, j)`` owns list entries ``j, j + capacity, ...``
(:func:`_pallas_gpu.for_each_owned_spike`) and walks each one's row ``indptr[i] .. indptr[i+1]`` in tiles of ``T = 32``
lanes (a data-dependent trip count), each tile one vector ``atomic_add`` after merging equal
slots (:func:`_pallas_gpu.scatter_lanes`). Guards: the compacted index, ``indptr`` (clamped
into ``[0, S]`` and made non-decreasing per row), the synapse position and the target are all
checked before use; bad lanes go to per-lane sink slots past the ring. ``indptr`` must be
non-decreasing (every builder makes it so); for a corrupt one the kernels stay in bounds but
what they deliver is unspecified (as for the reference). A row's work is serial
in its program, so one hub row of ``10^4`` synapses costs ``10^4 / T`` tile steps: fine for
the degree spreads of random graphs, not for scale-free hubs.

**Owner block** (:func:`deliver_owner`, ``PALLAS_PORTABLE``) and **TPU** (:func:`deliver_tpu`):
the synapses of the spiking neurons, concatenated in neuron order, form a virtual array of
``total`` positions (as in the jnp reference); it is cut into windows of ``window`` positions
(a loop of ``ceil(total / window)`` launches, so no synapse is dropped), and each window is
gathered into synapse streams in jnp (a binary search finds each position's row: load-balanced,
hubs cost nothing extra) and accumulated by the shared owner-block kernels
(:func:`_pallas_gpu.owner_accumulate`, :func:`_pallas_tpu.accumulate`). Default window:
``capacity`` times the mean row length, rounded up to the kernel's synapse tile.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from . import _compact, _pallas_gpu, _pallas_tpu

LANE_TILE = 32
"""Synapses per atomic tile (at most; a power of two)."""


def _batch_of(*args) -> int:
    return max(a.shape[0] for a in args if a is not None)


def _prepare(ring, cursor, spikes, indptr, indices, weights, delays):
    ring, cursor, spikes, indptr, indices, weights = map(
        jnp.asarray, (ring, cursor, spikes, indptr, indices, weights)
    )
    dtype = ring.dtype
    args = (
        ring,
        cursor.astype(jnp.int32),
        spikes.astype(dtype),
        indptr.astype(jnp.int32),
        indices.astype(jnp.int32),
        weights.astype(dtype),
        None if delays is None else jnp.asarray(delays).astype(jnp.int32),
    )
    return args, _batch_of(*args)


# ------------------------------------------------------------------------------ atomic scatter


def _atomic_kernel(
    idx_ref,
    nspk_ref,
    cur_ref,
    spk_ref,
    ptr_ref,
    ind_ref,
    w_ref,
    *refs,
    n_pre,
    n_syn,
    n_post,
    n_ring,
    homogeneous_delay,
    lanes,
    shared_weight,
    hetero,
    copies,
):
    """Program ``(b, j)``: scatter the CSR row of the ``j``-th spike of batch element ``b``."""
    if hetero:
        dl_ref, _ring_in, out_ref = refs
    else:
        _ring_in, out_ref = refs  # aliased with out_ref: updated in place
    b = pl.program_id(0)
    bi, bc, bs, bp, bx, bw, bd = (b if c else 0 for c in copies)
    n_ring = jnp.int32(n_ring)

    def scatter_row(row_c):
        start = jnp.clip(ptr_ref[bp, row_c], 0, n_syn)
        end = jnp.clip(ptr_ref[bp, row_c + 1], start, n_syn)
        spike = spk_ref[bs, row_c]
        cursor = lax.rem(cur_ref[bc], n_ring)
        cursor = jnp.where(cursor < 0, cursor + n_ring, cursor)
        lane = lax.broadcasted_iota(jnp.int32, (lanes,), 0)

        def tile(i, carry):
            s = start + i * lanes + lane
            s_c = jnp.clip(s, 0, n_syn - 1)
            t = ind_ref[bx, s_c]
            ok = (s < end) & (t >= 0) & (t < n_post)
            w = w_ref[bw] if shared_weight else w_ref[bw, s_c]
            if hetero:
                r = lax.rem(cursor + lax.rem(dl_ref[bd, s_c], n_ring), n_ring)
                r = jnp.where(r < 0, r + n_ring, r)
            else:
                r = lax.rem(cursor + homogeneous_delay, n_ring)
            _pallas_gpu.scatter_lanes(out_ref, b, ok, r, t, spike * w, n_post=n_post, n_ring=n_ring)
            return carry

        n_tiles = lax.div(end - start + (lanes - 1), jnp.int32(lanes))
        lax.fori_loop(jnp.int32(0), n_tiles, tile, jnp.int32(0))

    _pallas_gpu.for_each_owned_spike(
        lambda pos: idx_ref[bi, pos], nspk_ref[bi], n_pre, 1, scatter_row
    )


def deliver_atomic(
    ring,
    cursor,
    spikes,
    indptr,
    indices,
    weights,
    delays,
    *,
    n_post: int,
    homogeneous_delay: int,
    capacity: int,
    interpret=False,
    lane_tile: int = LANE_TILE,
):
    """Batched atomic-scatter CSR delivery (Triton); see the module docstring."""
    args, batch = _prepare(ring, cursor, spikes, indptr, indices, weights, delays)
    ring, cursor, spikes, indptr, indices, weights, delays = args
    n_pre = spikes.shape[1]
    n_syn = indices.shape[1]
    length = ring.shape[1]
    lanes = min(_pallas_gpu._next_pow2(lane_tile), _pallas_gpu._next_pow2(n_syn))
    hetero = delays is not None
    ext = jnp.pad(jnp.broadcast_to(ring, (batch, length)), ((0, 0), (0, lanes)))

    idx, count = _compact.compact_all(spikes)
    operands = (idx, count, cursor, spikes, indptr, indices, weights)
    operands += (delays,) if hetero else ()
    copies = tuple(x.shape[0] > 1 for x in operands[1:]) + ((False,) if not hetero else ())
    kernel = functools.partial(
        _atomic_kernel,
        n_pre=n_pre,
        n_syn=n_syn,
        n_post=n_post,
        n_ring=length // n_post,
        homogeneous_delay=homogeneous_delay,
        lanes=lanes,
        shared_weight=weights.ndim == 1,
        hetero=hetero,
        copies=copies,
    )
    ext = _pallas_gpu.launch_atomic(
        kernel, operands, ext, capacity, lanes=lanes, interpret=interpret,
        name="brainsim_csr_deliver_atomic",
    )
    return ext[:, :length]


# ---------------------------------------------------------------- synapse windows (owner, TPU)


def synapse_window(capacity: int, n_pre: int, n_syn: int, tile: int) -> int:
    """Synapse positions per owner/TPU launch: ``capacity`` rows of mean length, whole tiles."""
    mean = -(-n_syn // max(n_pre, 1))
    want = max(1, capacity * mean)
    return -(-min(want, n_syn) // tile) * tile


def for_each_synapse_window(
    cursor, spikes, indptr, indices, weights, delays, *, n_post, n_ring, window, body, init
):
    """Fold ``body(streams, live, carry) -> carry`` over windows of the spiking rows' synapses.

    ``streams = (t, v, r)`` each ``(batch, window)`` (``t = -1`` where nothing lands, ``r``
    ``None`` without per-synapse delays) and ``live (batch,)`` the number of leading live
    positions. ``ceil(max total / window)`` iterations (statically one when ``window`` covers
    every synapse).
    """
    batch = _batch_of(cursor, spikes, indptr, indices, weights, delays)
    n_pre = spikes.shape[1]
    n_syn = indices.shape[1]
    dtype = spikes.dtype
    # A running maximum keeps the total within n_syn even for a corrupt (decreasing) indptr,
    # so the single static window never leaves synapses behind.
    ptr = lax.cummax(jnp.clip(indptr, 0, n_syn), axis=1)
    lengths = ptr[:, 1:] - ptr[:, :-1]
    lengths = jnp.where(spikes != 0, lengths, 0)  # (batch, n_pre)
    ends = jnp.cumsum(lengths, axis=1, dtype=jnp.int32)
    begins = ends - lengths
    total = ends[:, -1]
    shared = (cursor, spikes, ptr, indices, weights, delays, ends, begins, total)
    in_axes = tuple(
        None if a is None else (0 if a.shape[0] == batch and batch > 1 else None) for a in shared
    )
    squeezed = tuple(
        a if a is None or ax == 0 else a[0] for a, ax in zip(shared, in_axes, strict=True)
    )
    positions = jnp.arange(window, dtype=jnp.int32)

    def gather(start, cursor, spikes, ptr, indices, weights, delays, ends, begins, total):
        p = start + positions
        valid = p < total
        row = jnp.minimum(jnp.searchsorted(ends, p, side="right"), n_pre - 1).astype(jnp.int32)
        syn = jnp.clip(ptr[row] + (p - begins[row]), 0, n_syn - 1)
        t = indices[syn]
        ok = valid & (t >= 0) & (t < n_post)
        w = weights if weights.ndim == 0 else weights[syn]
        v = jnp.where(ok, spikes[row] * w, jnp.zeros((), dtype))
        r = None
        if delays is not None:
            r = jnp.where(ok, jnp.mod(jnp.mod(cursor, n_ring) + delays[syn], n_ring), 0)
        return jnp.where(ok, t, -1), v, r

    def run(start, carry):
        streams = jax.vmap(functools.partial(gather, start), in_axes=in_axes, axis_size=batch)(
            *squeezed
        )
        live = jnp.clip(total - start, 0, window).astype(jnp.int32)
        return body(streams, jnp.broadcast_to(live, (batch,)), carry)

    if window >= n_syn:
        return run(jnp.int32(0), init)
    trips = (jnp.max(total) + window - 1) // window

    def step(state):
        k, carry = state
        return k + 1, run(k * window, carry)

    return lax.while_loop(lambda s: s[0] < trips, step, (jnp.int32(0), init))[1]


def _deliver_blocks(args, batch, accumulate, *, n_post, homogeneous_delay, window, rows, cols):
    ring, cursor, spikes, indptr, indices, weights, delays = args
    n_ring = ring.shape[1] // n_post
    view = _pallas_tpu.RingView(n_ring, n_post, rows, cols)
    r0 = _pallas_tpu.homogeneous_row(cursor, homogeneous_delay, n_ring, batch)

    def body(streams, live, blocks):
        return accumulate(blocks, live, r0, streams)

    blocks = for_each_synapse_window(
        cursor,
        spikes,
        indptr,
        indices,
        weights,
        delays,
        n_post=n_post,
        n_ring=n_ring,
        window=window,
        body=body,
        init=view.to_blocks(ring, batch),
    )
    return view.to_flat(blocks)


def deliver_owner(
    ring,
    cursor,
    spikes,
    indptr,
    indices,
    weights,
    delays,
    *,
    n_post: int,
    homogeneous_delay: int,
    capacity: int,
    interpret=False,
):
    """Batched deterministic owner-block CSR delivery (Triton); see the module docstring."""
    args, batch = _prepare(ring, cursor, spikes, indptr, indices, weights, delays)
    tile = _pallas_gpu.OWNER_TILE
    window = synapse_window(capacity, args[2].shape[1], args[4].shape[1], tile)
    accumulate = functools.partial(
        _pallas_gpu.owner_accumulate, interpret=interpret, name="brainsim_csr_deliver_owner"
    )
    return _deliver_blocks(
        args,
        batch,
        accumulate,
        n_post=n_post,
        homogeneous_delay=homogeneous_delay,
        window=window,
        rows=_pallas_gpu.OWNER_ROWS,
        cols=_pallas_gpu.OWNER_COLUMNS,
    )


def deliver_tpu(
    ring,
    cursor,
    spikes,
    indptr,
    indices,
    weights,
    delays,
    *,
    n_post: int,
    homogeneous_delay: int,
    capacity: int,
    interpret=False,
):
    """Batched TPU CSR delivery (float32 only); see the module docstring."""
    args, batch = _prepare(ring, cursor, spikes, indptr, indices, weights, delays)
    _pallas_tpu.check_float32(args[0].dtype, "CSR")
    tile = _pallas_tpu.TILE_ROWS * _pallas_tpu.LANES
    window = synapse_window(capacity, args[2].shape[1], args[4].shape[1], tile)
    cols = _pallas_tpu.column_block(n_post)
    accumulate = functools.partial(
        _pallas_tpu.accumulate, interpret=interpret, cols=cols, name="brainsim_csr_deliver_tpu"
    )
    return _deliver_blocks(
        args,
        batch,
        accumulate,
        n_post=n_post,
        homogeneous_delay=homogeneous_delay,
        window=window,
        rows=_pallas_tpu.ROW_BLOCK,
        cols=cols,
    )
