r"""GPU Pallas kernels (Triton) for ELL delivery: atomic scatter, and a deterministic owner-block
kernel.

Both start from compacted spike lists (:mod:`brainsim.kernels._compact`; no spike is ever
dropped) and take every argument with a leading batch axis of 1 (shared) or ``batch``: a
``vmap`` runs one launch whose grid has a batch axis.

**Atomic scatter** (``Implementation.PALLAS_TRITON``, :func:`deliver_atomic`). One launch,
grid ``(batch, capacity)``, over the list of all spikes (:func:`_compact.compact_all`):
program ``(b, j)`` owns list entries ``j, j + capacity, ...`` below the spike count
(:func:`for_each_owned_spike`; programs with nothing to do return at once). For each, it walks
the neuron's ELL row in tiles of ``T`` lanes (``T`` a power of two, every in-kernel array is
power-of-two sized as Triton requires), gathers targets, weights and delays, and adds
``spike * weight`` to ring slot ``((cursor + delay) mod D) * n_post + target`` with one vector
``atomic_add`` per tile. Work is proportional to the synapses of the neurons that spiked.
Design points:

* Guards: the compacted index, the lane and the target are checked explicitly before use
  (indices are clamped into range *and* the result masked), because an out-of-range gather on a
  GPU reads arbitrary memory (interpret mode merely clamps). Targets outside ``[0, n_post)``
  (padding, corrupt values) and lanes past ``fan_out`` go to a *sink*: the ring is extended by
  ``T`` slots and lane ``k`` of a tile sinks into slot ``D * n_post + k``, so even sink lanes
  never share an address within one ``atomic_add`` (``atomic_add(mask=...)`` is not available
  in interpret mode, so masking is not used).
* Duplicates: two synapses of one row can hit the same slot (multapses with equal delays).
  The GPU adds both, but interpret mode discharges ``atomic_add`` as a gather-add-scatter that
  keeps only one of them (jax#24117). Each tile therefore merges duplicates first
  (:func:`merge_duplicates`: a ``T x T`` comparison sums the values of equal slots into the
  first lane that holds the slot and sends the others to their sinks), so within one
  ``atomic_add`` every address is unique and both modes agree. The merge costs ``T``
  comparisons per synapse, cheap next to a global atomic.
* Float order: atomics from different programs land in any order; results are exact up to
  float summation order (not bit-reproducible from run to run).

**Owner block** (``Implementation.PALLAS_PORTABLE``, :func:`deliver_owner`): the atomic-free
design of :mod:`brainsim.kernels._pallas_tpu` lowered through Triton. Compaction and the
gather of active rows into synapse streams happen outside the kernel (jnp); grid
``(batch, row blocks, column blocks)``, program ``(b, i, k)`` owns ring block
``rows [i Dr, (i+1) Dr) x neurons [k Bn, (k+1) Bn)`` of the ``(D, n_post)`` view, loops over the
live synapse tiles of its window (a dynamic trip count: only ``ceil(count * fan_out / K)``
tiles) and accumulates each as a one-hot matrix product (:func:`_pallas_tpu.onehot_block` at
``Precision.HIGHEST``: IEEE float32 FMAs, never TF32; float64 on the FP64 MMA path). No
atomics, no two programs share an output block, fixed summation order: bit-for-bit
deterministic. Cost is
``O(live synapses x n_post)`` (times ``D / Dr`` with per-synapse delays) instead of
``O(live synapses)``: use it for reproducibility and for small and medium networks.

Both kernels support float32 and float64 (GPU atomics exist for both). Sizes: ``T = 32`` lanes
(one warp per program), owner blocks of ``16 x 64`` with tiles of 32 synapses, 4 warps; untuned.

Building blocks shared with the CSR and procedural kernels (:mod:`brainsim.kernels._pallas_csr`,
:mod:`brainsim.kernels._pallas_procedural`): :func:`scatter_lanes` (sink slots, duplicate merge,
one vector ``atomic_add``) and :func:`owner_accumulate` (the owner-block launch on one window of
synapse streams, whatever format produced them).

Checked without a GPU: the Triton IR of both kernels (jax 0.10.2 and 0.11.2, float32 and
float64) compiles to an sm_90 cubin with Triton 3.9's compiler and ptxas (the atomic kernel to
``atom.global.gpu.acq_rel.add``, see ``tests/test_pallas.py``). On a GPU: the same tests pass
compiled on an H100 with jax 0.11.2 (``benchmarks/gpu_suite.sh tests``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from . import _compact, _compat, _pallas_tpu

LANE_TILE = 32
"""Synapses per atomic tile (at most; fewer for a smaller fan-out, always a power of two)."""
OWNER_ROWS = 16
"""Ring rows per owner block (a power of two, >= 16 for Triton's matrix product)."""
OWNER_COLUMNS = 64
"""Postsynaptic neurons per owner block."""
OWNER_TILE = 32
"""Synapses per owner-block tile (the contraction size of the one-hot product)."""


def _next_pow2(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


def _batch_of(*args) -> int:
    return max(a.shape[0] for a in args if a is not None)


# ------------------------------------------------------------------------------ atomic scatter


def merge_duplicates(slot, value, sink):
    """Make the addresses of one vector ``atomic_add`` unique without changing the sums.

    ``slot``, ``value``, ``sink``: ``(T,)`` lanes (``sink`` distinct per lane and outside the
    ring). The first lane of each distinct slot receives the sum of the values of all lanes with
    that slot; the other lanes are redirected to their own sink slot with value 0. Returns
    ``(slots, values)``. A ``T x T`` comparison: ``T`` operations per synapse, no sort.
    """
    lanes = slot.shape[0]
    zero = jnp.zeros((), value.dtype)
    same = slot[:, None] == slot[None, :]
    before = lax.broadcasted_iota(jnp.int32, (lanes, lanes), 1) < lax.broadcasted_iota(
        jnp.int32, (lanes, lanes), 0
    )
    first = jnp.max(jnp.where(same & before, 1, 0), axis=1) == 0
    total = jnp.sum(jnp.where(same, value[None, :], zero), axis=1)
    return jnp.where(first, slot, sink), jnp.where(first, total, zero)


def scatter_lanes(out_ref, b, ok, row, target, value, *, n_post, n_ring, merge=True):
    """One vector ``atomic_add`` of ``value`` into ring slots ``row * n_post + target`` of batch
    element ``b`` of the sink-extended ring ``out_ref``; lanes with ``ok`` false go to their own
    sink slot ``D * n_post + lane`` with value 0 (no mask: interpret mode rejects it).

    ``merge``: merge equal slots first (:func:`merge_duplicates`); only a caller whose lanes can
    never share a slot may skip it. Every in-kernel array has the lane count (a power of two).
    """
    lanes = ok.shape[0]
    sink = jnp.int32(n_ring * n_post) + lax.broadcasted_iota(jnp.int32, (lanes,), 0)
    zero = jnp.zeros((), out_ref.dtype)
    slot = jnp.where(ok, row * n_post + jnp.clip(target, 0, n_post - 1), sink)
    value = jnp.where(ok, value.astype(out_ref.dtype), zero)
    if merge:
        slot, value = merge_duplicates(slot, value, sink)
    _compat.atomic_add(out_ref, (b, slot), value)


def _atomic_kernel(
    idx_ref,
    nspk_ref,
    cur_ref,
    spk_ref,
    tgt_ref,
    w_ref,
    *refs,
    n_pre,
    fan_out,
    n_post,
    n_ring,
    homogeneous_delay,
    lanes,
    shared_weight,
    hetero,
    copies,
):
    """Program ``(b, j)``: scatter the rows of the spikes of batch element ``b`` that it owns
    (:func:`for_each_owned_spike`).

    ``copies`` says, per operand (idx and count, cursor, spikes, targets, weights, delays),
    whether it has one copy per batch element (index ``b``) or is shared (index 0).
    """
    if hetero:
        dl_ref, _ring_in, out_ref = refs
    else:
        _ring_in, out_ref = refs  # aliased with out_ref: updated in place
    b = pl.program_id(0)
    bi, bc, bs, bt, bw, bd = (b if c else 0 for c in copies)
    n_ring = jnp.int32(n_ring)  # lax ops do not promote: keep int32 under jax_enable_x64

    def scatter_row(row_c):
        spike = spk_ref[bs, row_c]
        cursor = lax.rem(cur_ref[bc], n_ring)
        cursor = jnp.where(cursor < 0, cursor + n_ring, cursor)
        lane = lax.broadcasted_iota(jnp.int32, (lanes,), 0)

        def tile(k0):
            k = k0 + lane
            k_ok = k < fan_out
            k_c = jnp.minimum(k, fan_out - 1)
            t = tgt_ref[bt, row_c, k_c]
            ok = k_ok & (t >= 0) & (t < n_post)
            w = w_ref[bw] if shared_weight else w_ref[bw, row_c, k_c]
            if hetero:
                r = lax.rem(cursor + lax.rem(dl_ref[bd, row_c, k_c], n_ring), n_ring)
                r = jnp.where(r < 0, r + n_ring, r)
            else:
                r = lax.rem(cursor + homogeneous_delay, n_ring)
            scatter_lanes(out_ref, b, ok, r, t, spike * w, n_post=n_post, n_ring=n_ring)

        for_each_tile(fan_out, lanes, tile)

    for_each_owned_spike(lambda pos: idx_ref[bi, pos], nspk_ref[bi], n_pre, 1, scatter_row)


def for_each_owned_spike(read_index, count, n: int, axis: int, body):
    """Call ``body(row)`` for every spike that this program owns in a compacted list.

    With ``P`` programs along grid ``axis``, program ``j`` owns list entries ``j, j + P,
    j + 2P, ...`` below ``count`` (a grid-stride loop, its trip count read on the device), so
    one launch covers any number of spikes with no loop on the host. ``read_index(pos)`` reads
    entry ``pos``; entries outside ``[0, n)`` (corrupt list data) are skipped, and ``row`` is
    passed clamped into range.
    """
    # int32 throughout: lax ops do not promote, and jax_enable_x64 makes Python ints 64-bit.
    j = jnp.asarray(pl.program_id(axis), jnp.int32)
    programs = jnp.asarray(pl.num_programs(axis), jnp.int32)
    count = jnp.clip(count, 0, n).astype(jnp.int32)
    trips = lax.div(jnp.maximum(count - j + programs - 1, jnp.int32(0)), programs)

    def one(i, carry):
        row = read_index(j + i * programs)

        @pl.when((row >= 0) & (row < n))
        def _():
            body(jnp.clip(row, 0, n - 1))

        return carry

    lax.fori_loop(jnp.int32(0), trips, one, jnp.int32(0))


def for_each_tile(width: int, lanes: int, tile):
    """Call ``tile(k0)`` for ``k0 = 0, lanes, 2 lanes, ...`` below the static ``width``: a
    plain call when one tile covers it, otherwise a ``fori_loop`` (int32 throughout)."""
    n_tiles = pl.cdiv(width, lanes)
    if n_tiles == 1:
        tile(jnp.int32(0))
        return
    step = jnp.int32(lanes)
    lax.fori_loop(jnp.int32(0), jnp.int32(n_tiles), lambda i, c: (tile(i * step), c)[1], 0)


def launch_atomic(kernel, operands, ext, programs: int, *, lanes: int, interpret, name: str):
    """One atomic-scatter launch: grid ``(batch, programs)``, the extended ring ``ext``
    updated in place (aliased to the last operand), one warp per 32 lanes up to four."""
    return _compat.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct(ext.shape, ext.dtype),
        grid=(ext.shape[0], programs),
        input_output_aliases={len(operands): 0},
        interpret=interpret,
        compiler_params=None
        if interpret
        else _compat.triton_params(num_warps=max(1, min(4, lanes // 32))),
        name=name,
    )(*operands, ext)


def deliver_atomic(
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
    lane_tile: int = LANE_TILE,
):
    """Batched atomic-scatter delivery (Triton); see the module docstring.

    ``ring (b, D * n_post)``, ``cursor (b,)``, ``spikes (b, n_pre)``, ``targets (b, n_pre, F)``,
    ``weights (b, n_pre, F)`` or ``(b,)``, ``delays (b, n_pre, F)`` or ``None``, each leading
    axis 1 or ``batch``. Returns the ``(batch, D * n_post)`` ring.
    """
    ring, cursor, spikes, targets, weights = map(
        jnp.asarray, (ring, cursor, spikes, targets, weights)
    )
    delays = None if delays is None else jnp.asarray(delays)
    batch = _batch_of(ring, cursor, spikes, targets, weights, delays)
    n_pre, fan_out = targets.shape[1:]
    length = ring.shape[1]
    n_ring = length // n_post
    lanes = min(_next_pow2(lane_tile), _next_pow2(fan_out))
    dtype = ring.dtype
    spikes = spikes.astype(dtype)
    weights = weights.astype(dtype)
    hetero = delays is not None
    ext = jnp.pad(jnp.broadcast_to(ring, (batch, length)), ((0, 0), (0, lanes)))

    idx, count = _compact.compact_all(spikes)
    operands = (idx, count, cursor, spikes, targets, weights) + ((delays,) if hetero else ())
    copies = tuple(x.shape[0] > 1 for x in operands[1:]) + ((False,) if not hetero else ())
    kernel = functools.partial(
        _atomic_kernel,
        n_pre=n_pre,
        fan_out=fan_out,
        n_post=n_post,
        n_ring=n_ring,
        homogeneous_delay=homogeneous_delay,
        lanes=lanes,
        shared_weight=weights.ndim == 1,
        hetero=hetero,
        copies=copies,
    )
    ext = launch_atomic(
        kernel, operands, ext, capacity, lanes=lanes, interpret=interpret,
        name="brainsim_ell_deliver_atomic",
    )
    return ext[:, :length]


# --------------------------------------------------------------------------------- owner block


def _owner_kernel(nt_ref, r0_ref, t_ref, v_ref, *refs, hetero, rows, cols, tile):
    """Program ``(b, i, k)``: ring block ``(i, k)`` of batch element ``b`` plus the one-hot
    products of the ``nt[b]`` live synapse tiles (with one delay, ``i`` is the block row of
    ring row ``r0[b]`` whatever the grid says: the grid has a single block row then)."""
    if hetero:
        r_ref, ring_ref, out_ref = refs
    else:
        ring_ref, out_ref = refs
    b, i, k = (pl.program_id(a) for a in range(3))
    r0 = r0_ref[b]
    if not hetero:
        i = lax.div(r0, jnp.int32(rows))  # one delay: only the block row that holds ring row r0
    block = (b, pl.ds(i * rows, rows), pl.ds(k * cols, cols))

    def add_tile(s, acc):
        part = pl.ds(s * tile, tile)
        t = t_ref[b, part][None, :]
        v = v_ref[b, part][None, :]
        r = r_ref[b, part][None, :] if hetero else r0
        return acc + _pallas_tpu.onehot_block(t, v, r, i * rows, k * cols, rows, cols)

    out_ref[block] = lax.fori_loop(0, nt_ref[b], add_tile, ring_ref[block])


def owner_accumulate(
    blocks,
    live,
    r0,
    streams,
    *,
    interpret,
    name: str,
    rows: int = OWNER_ROWS,
    cols: int = OWNER_COLUMNS,
    tile: int = OWNER_TILE,
):
    """Add one window's synapse streams into the ring blocks with the owner-block kernel.

    ``blocks``: ``(batch, Dp, Np)`` (a :class:`_pallas_tpu.RingView` of ``rows x cols`` blocks);
    ``live``: ``(batch,)`` number of leading live stream entries; ``r0``: ``(batch,)`` ring row
    of a homogeneous delay; ``streams``: ``(t, v, r)``, each ``(batch, S)`` (``r = None``: one
    delay). Shared by every format: only the stream gather differs between them.
    """
    batch = blocks.shape[0]
    t, v, r = streams
    hetero = r is not None
    size = -(-max(t.shape[1], 1) // tile) * tile
    pad = ((0, 0), (0, size - t.shape[1]))
    t = jnp.pad(t, pad, constant_values=-1)
    v = jnp.pad(v, pad)
    live = jnp.broadcast_to((live + tile - 1) // tile, (batch,)).astype(jnp.int32)
    r0 = jnp.broadcast_to(r0, (batch,)).astype(jnp.int32)
    operands = (live, r0, t, v) + ((jnp.pad(r, pad),) if hetero else ())
    kernel = functools.partial(_owner_kernel, hetero=hetero, rows=rows, cols=cols, tile=tile)
    n_row_blocks = blocks.shape[1] // rows if hetero else 1
    return _compat.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct(blocks.shape, blocks.dtype),
        grid=(batch, n_row_blocks, blocks.shape[2] // cols),
        input_output_aliases={len(operands): 0},
        interpret=interpret,
        compiler_params=None if interpret else _compat.triton_params(num_warps=4),
        name=name,
    )(*operands, blocks)


def deliver_owner(
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
    rows: int = OWNER_ROWS,
    cols: int = OWNER_COLUMNS,
    tile: int = OWNER_TILE,
):
    """Batched deterministic owner-block delivery (Triton); arguments as :func:`deliver_atomic`."""
    ring, cursor, spikes, targets, weights = map(
        jnp.asarray, (ring, cursor, spikes, targets, weights)
    )
    delays = None if delays is None else jnp.asarray(delays)
    batch = _batch_of(ring, cursor, spikes, targets, weights, delays)
    fan_out = targets.shape[2]
    n_ring = ring.shape[1] // n_post
    dtype = ring.dtype
    view = _pallas_tpu.RingView(n_ring, n_post, rows, cols)
    r0 = _pallas_tpu.homogeneous_row(cursor, homogeneous_delay, n_ring, batch)

    def body(idx, count, blocks):
        streams = _pallas_tpu.active_synapses(
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
        streams = tuple(None if x is None else x.reshape(batch, -1) for x in streams)
        return owner_accumulate(
            blocks,
            count * fan_out,
            r0,
            streams,
            interpret=interpret,
            name="brainsim_ell_deliver_owner",
            rows=rows,
            cols=cols,
            tile=tile,
        )

    blocks = _compact.for_each_window(spikes, capacity, body, view.to_blocks(ring, batch))
    return view.to_flat(blocks)
