r"""Owner-block ELL delivery without atomics or gathers: the TPU kernel and its shared parts.

TPU kernels have no atomics and no general gather, and every block must be divisible by
(8, 128). The delivery is therefore split in two:

1. **Compaction and gather outside the kernel** (jnp, :func:`active_synapses`): the spiking
   neurons of one window (:mod:`brainsim.kernels._compact`) select their ELL rows, which are
   flattened into three *synapse streams* of ``capacity * fan_out`` entries: the target ``t``
   (``-1`` for padding, out-of-range targets and rows past the last spike: every index is
   checked here, so the kernel never sees a bad one), the value ``v = spike * weight`` (``0``
   where ``t = -1``) and the ring row ``r = (cursor + delay) mod D``. Entries are ordered by
   spike, so the first ``count * fan_out`` are the only live ones.
2. **Owner-block accumulation in the kernel**: the ring is viewed as ``(D, n_post)`` and cut into
   output blocks of ``(Dr, Bn)``; each block is owned by one sequence of grid steps, which adds
   the synapses that land in it as a one-hot matrix product on the MXU (:func:`onehot_block`):

   .. math:: \text{out}[d, n] \mathrel{+}= \sum_s [r_s = d]\, v_s\, [t_s = n],
      \quad W_{ds} = [r_s = d]\, v_s,\; H_{ns} = [t_s = n],\; \text{out} \mathrel{+}= W H^\top.

   The one-hot factors are built from iotas and comparisons (no gather) and the product runs
   at ``Precision.HIGHEST`` (float32 accumulation; the default bf16 passes would round the
   weights). No two programs write the same block and the order of additions is fixed, so the
   result is deterministic.

TPU grid ``(batch, row blocks, column blocks, synapse tiles)``, the last axis sequential
("arbitrary"): the output block stays in VMEM while the synapse tiles stream past it; step 0
copies the ring block in. Scalar prefetch carries, per batch element, the number of live
synapse tiles (tiles past it are skipped and their index map is clamped to the last live tile, so
they cost no DMA) and the homogeneous-delay row (with one delay only the row block that holds
``(cursor + delay) mod D`` is visited; the others keep their values through the input/output
alias). Streams are stored as ``(batch, tiles * 8, 128)`` so a tile is an ``(8, 128)`` block,
processed one 128-lane row at a time.

Sizes: ``Dr = 8`` ring rows, ``Bn = min(512, n_post rounded up to 128)`` neurons, tiles of
``8 x 128`` synapses; the ring is padded to whole blocks outside the kernel.

Cost: ``O(capacity * fan_out)`` for the gather (per window, done by XLA) and, per live synapse
tile, ``O(Bn * 1024)`` comparisons plus a ``(Dr x 1024) @ (1024 x Bn)`` product for each output
block — ``O(live synapses x n_post)`` in all (times ``D / Dr`` with per-synapse delays) instead
of the ``O(live synapses)`` of a scatter: the price of having none. Not yet measured on a TPU.
Float32 only (the TPU has no float64 vector unit); ``ell_deliver`` falls back to the reference
for float64.

:func:`accumulate` (one launch on one window of synapse streams) is shared with the CSR and
procedural TPU kernels, which differ only in how they gather (CSR: windows over the spiking
rows' synapses) or regenerate (procedural) the streams.

The same owner-block body runs on GPUs through Triton as ``Implementation.PALLAS_PORTABLE``
(:mod:`brainsim.kernels._pallas_gpu`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from . import _compact, _compat

LANES = 128
"""Synapses per stream row (one TPU vector register row)."""
TILE_ROWS = 8
"""Stream rows per TPU synapse tile: a tile is one (8, 128) block, 1024 synapses."""
ROW_BLOCK = 8
"""Ring rows per TPU output block."""
COLUMN_BLOCK = 512
"""Postsynaptic neurons per TPU output block (at most; a multiple of 128)."""


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _copies(x, batch: int) -> bool:
    """Whether a leading-batch argument has one copy per batch element (else it is shared)."""
    return x.shape[0] == batch and batch > 1


def active_synapses(
    idx, cursor, spikes, targets, weights, delays, *, n_post, n_ring, homogeneous_delay, dtype
):
    """Gather the synapse streams of one window of spikes (see the module docstring).

    Every argument has a leading batch axis of 1 (shared) or ``batch``; ``idx`` holds the
    compacted neuron indices (sentinel ``n_pre``). Returns ``t`` (int32, ``-1`` = nothing),
    ``v`` (``dtype``) and ``r`` (int32 ring rows, or ``None`` for a homogeneous delay), each
    ``(batch, capacity * fan_out)``.
    """
    n_pre, fan_out = targets.shape[1:]
    args = (idx, cursor, spikes, targets, weights, delays)
    batch = max(a.shape[0] for a in args if a is not None)
    in_axes = tuple(None if a is None else (0 if _copies(a, batch) else None) for a in args)
    squeezed = tuple(
        a if a is None or ax == 0 else a[0] for a, ax in zip(args, in_axes, strict=True)
    )

    def one(idx, cursor, spikes, targets, weights, delays):
        live = (idx >= 0) & (idx < n_pre)
        row = jnp.clip(idx, 0, n_pre - 1)
        t = targets[row]
        ok = live[:, None] & (t >= 0) & (t < n_post)
        w = weights if weights.ndim == 0 else weights[row]
        v = jnp.where(ok, spikes[row][:, None].astype(dtype) * w.astype(dtype), 0)
        t = jnp.where(ok, t, -1).ravel()
        if delays is None:
            return t, v.ravel(), None
        r = jnp.mod(jnp.mod(cursor, n_ring) + delays[row], n_ring)
        return t, v.ravel(), jnp.where(ok, r, 0).astype(jnp.int32).ravel()

    return jax.vmap(one, in_axes=in_axes, axis_size=batch)(*squeezed)


def onehot_block(t, v, r, row0, col0, rows: int, cols: int):
    """The ``(rows, cols)`` block at ``(row0, col0)`` of :math:`\\sum_s [r_s = d] v_s [t_s = n]`.

    ``t``, ``v``, ``r`` are ``(1, K)`` rows of a synapse stream (``r`` may be a scalar: every
    synapse in one ring row). Only iotas, comparisons, selects and one matrix product: this body
    lowers with Mosaic TPU and with Triton.
    """
    k = t.shape[-1]
    d = row0 + lax.broadcasted_iota(jnp.int32, (rows, k), 0)
    w = jnp.where(d == r, v, jnp.zeros((), v.dtype))
    n = col0 + lax.broadcasted_iota(jnp.int32, (cols, k), 0)
    h = jnp.where(n == t, jnp.ones((), v.dtype), jnp.zeros((), v.dtype))
    return lax.dot_general(
        w,
        h,
        (((1,), (1,)), ((), ())),
        precision=lax.Precision.HIGHEST,
        preferred_element_type=v.dtype,
    )


class RingView:
    """The flat ``(batch, D * n_post)`` ring as a padded ``(batch, Dp, Np)`` array and back."""

    def __init__(self, n_ring: int, n_post: int, row_block: int, col_block: int):
        self.n_ring, self.n_post = n_ring, n_post
        self.rows = _round_up(n_ring, row_block)
        self.cols = _round_up(n_post, col_block)

    def to_blocks(self, ring, batch: int):
        ring = jnp.broadcast_to(ring, (batch, ring.shape[1])).reshape(
            batch, self.n_ring, self.n_post
        )
        return jnp.pad(ring, ((0, 0), (0, self.rows - self.n_ring), (0, self.cols - self.n_post)))

    def to_flat(self, blocks):
        return blocks[:, : self.n_ring, : self.n_post].reshape(blocks.shape[0], -1)


def _streams_as_tiles(streams, tile: int, lanes: int):
    """Pad each ``(batch, S)`` stream to whole tiles and shape it ``(batch, S / lanes, lanes)``."""
    t, v, r = streams
    size = _round_up(max(t.shape[1], 1), tile)
    pad = ((0, 0), (0, size - t.shape[1]))
    t = jnp.pad(t, pad, constant_values=-1)
    v = jnp.pad(v, pad)
    r = None if r is None else jnp.pad(r, pad)
    shape = (t.shape[0], size // lanes, lanes)
    return t.reshape(shape), v.reshape(shape), None if r is None else r.reshape(shape)


def _tpu_kernel(nt_ref, r0_ref, t_ref, v_ref, *refs, hetero, rows, cols, tile_rows):
    """One grid step ``(b, row block, column block, tile s)``: add tile ``s`` to the block."""
    if hetero:
        r_ref, ring_ref, out_ref = refs
    else:
        ring_ref, out_ref = refs
    b, rb, cb, s = (pl.program_id(i) for i in range(4))
    if not hetero:
        rb = lax.div(r0_ref[b], jnp.int32(rows))  # r0 >= 0; `//` would need the chip's sign rule

    @pl.when(s == 0)
    def _():
        out_ref[...] = ring_ref[...]

    @pl.when(s < nt_ref[b])
    def _():
        acc = out_ref[...]
        for i in range(tile_rows):  # static: one 128-lane stream row at a time
            r = r_ref[i : i + 1, :] if hetero else r0_ref[b]
            acc += onehot_block(
                t_ref[i : i + 1, :], v_ref[i : i + 1, :], r, rb * rows, cb * cols, rows, cols
            )
        out_ref[...] = acc


def accumulate(blocks, live, r0, streams, *, interpret, cols: int, name: str):
    """Add one window's synapse streams into the ring blocks with the TPU owner-block kernel.

    ``blocks``: ``(batch, Dp, Np)`` (:class:`RingView`, ``Np`` a multiple of ``cols``);
    ``live``: ``(batch,)`` number of leading live entries of the streams (entries past it are
    never read); ``r0``: ``(batch,)`` ring row of a homogeneous delay; ``streams``: ``(t, v, r)``
    each ``(batch, S)`` as :func:`active_synapses` returns them (``r = None``: every synapse in
    row ``r0``). Shared by every format: only the stream gather differs between them.
    """
    batch = blocks.shape[0]
    hetero = streams[2] is not None
    tile = TILE_ROWS * LANES
    t, v, r = _streams_as_tiles(streams, tile, LANES)
    n_tiles = t.shape[1] // TILE_ROWS
    n_row_blocks = blocks.shape[1] // ROW_BLOCK if hetero else 1
    live = jnp.broadcast_to((live + tile - 1) // tile, (batch,)).astype(jnp.int32)
    r0 = jnp.broadcast_to(r0, (batch,)).astype(jnp.int32)

    def last_live(s, nt_b):
        return jnp.minimum(s, jnp.maximum(nt_b - 1, 0))

    stream_spec = pl.BlockSpec(
        (None, TILE_ROWS, LANES), lambda b, rb, cb, s, nt, r0: (b, last_live(s, nt[b]), 0)
    )

    def block_index(b, rb, cb, s, nt, r0):
        return (b, rb if hetero else lax.div(r0[b], jnp.int32(ROW_BLOCK)), cb)

    block_spec = pl.BlockSpec((None, ROW_BLOCK, cols), block_index)
    kernel = functools.partial(
        _tpu_kernel, hetero=hetero, rows=ROW_BLOCK, cols=cols, tile_rows=TILE_ROWS
    )
    operands = (t, v, r) if hetero else (t, v)
    return _compat.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct(blocks.shape, blocks.dtype),
        grid_spec=_compat.PrefetchScalarGridSpec(
            num_scalar_prefetch=2,
            grid=(batch, n_row_blocks, blocks.shape[2] // cols, n_tiles),
            in_specs=[stream_spec] * len(operands) + [block_spec],
            out_specs=block_spec,
        ),
        # Inputs count the scalar-prefetch operands: the ring is operand 2 + len(operands).
        input_output_aliases={2 + len(operands): 0},
        interpret=interpret,
        compiler_params=None
        if interpret
        else _compat.tpu_params("parallel", "parallel", "parallel", "arbitrary"),
        name=name,
    )(live, r0, *operands, blocks)


def homogeneous_row(cursor, homogeneous_delay: int, n_ring: int, batch: int):
    """``(cursor + delay) mod D`` per batch element, int32 ``(batch,)``."""
    return jnp.broadcast_to(
        jnp.mod(jnp.mod(cursor, n_ring) + homogeneous_delay, n_ring), (batch,)
    ).astype(jnp.int32)


def check_float32(dtype, what: str = "ELL") -> None:
    if dtype != jnp.float32:
        raise TypeError(f"the TPU {what} kernel supports float32 rings only; got {dtype}.")


def column_block(n_post: int, col_block: int = COLUMN_BLOCK) -> int:
    """Postsynaptic neurons per TPU output block for ``n_post`` neurons."""
    return min(col_block, _round_up(n_post, LANES))


def deliver(
    ring,
    cursor,
    spikes,
    targets,
    weights,
    delays,
    *,
    n_post: int,
    homogeneous_delay: int,
    capacity: int,
    interpret=False,
    col_block: int = COLUMN_BLOCK,
):
    """Batched TPU delivery; arguments have a leading batch axis of 1 or ``batch``.

    ``ring (b, D * n_post)``, ``cursor (b,)``, ``spikes (b, n_pre)``, ``targets (b, n_pre, F)``,
    ``weights (b, n_pre, F)`` or ``(b,)``, ``delays (b, n_pre, F)`` or ``None``. Returns the
    ``(batch, D * n_post)`` ring. ``interpret``: ``False`` to compile for a TPU, or an
    interpret value (``True`` / ``pltpu.InterpretParams()``) to run on CPU.
    """
    ring, cursor, spikes, targets, weights = map(
        jnp.asarray, (ring, cursor, spikes, targets, weights)
    )
    delays = None if delays is None else jnp.asarray(delays)
    dtype = ring.dtype
    check_float32(dtype)
    batch = max(a.shape[0] for a in (ring, cursor, spikes, targets, weights))
    if delays is not None:
        batch = max(batch, delays.shape[0])
    fan_out = targets.shape[2]
    n_ring = ring.shape[1] // n_post
    cols = column_block(n_post, col_block)
    view = RingView(n_ring, n_post, ROW_BLOCK, cols)
    r0 = homogeneous_row(cursor, homogeneous_delay, n_ring, batch)

    def body(idx, count, blocks):
        streams = active_synapses(
            idx,
            cursor,
            spikes,
            targets,
            weights,
            delays,
            n_post=n_post,
            n_ring=n_ring,
            homogeneous_delay=homogeneous_delay,
            dtype=dtype,
        )
        return accumulate(
            blocks,
            count * fan_out,
            r0,
            streams,
            interpret=interpret,
            cols=cols,
            name="brainsim_ell_deliver_tpu",
        )

    blocks = _compact.for_each_window(spikes, capacity, body, view.to_blocks(ring, batch))
    return view.to_flat(blocks)
