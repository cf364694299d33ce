r"""GPU Pallas kernel (Triton) for the trace-based STDP update of ELL synapses.

The same update as :mod:`brainsim.kernels._stdp` (``w <- clip(w ± (a f(w)) b)`` on the
synapses of the neurons that spiked), as an active-row design: the spiking neurons are
compacted into one list outside the kernel (:func:`brainsim.kernels._compact.compact_all`) and
one launch of ``capacity`` programs covers them all, program ``j`` owning list entries ``j,
j + capacity, ...`` (:func:`brainsim.kernels._pallas_gpu.for_each_owned_spike`: the trip count
is read on the device, so no spike is dropped and nothing loops on the host).

* Rows (presynaptic spikes): the program walks the neuron's ELL row in tiles of ``T`` lanes
  (a power of two), gathers targets, weights and the partner traces, and stores the new
  weights back into the row.
* Columns (postsynaptic spikes): the program walks the neuron's row of the transposed index
  (``post_slots``), gathers the weights at those slots (scattered over the weight array) and
  the presynaptic traces (slot // fan_out), and stores the new weights at the same slots.

No atomics are needed: rows of different neurons are disjoint, and so are columns (each slot
has one target). Every program only writes synapses of its own neuron, so the result is
deterministic. Guards, since an out-of-range access on a GPU reads or writes arbitrary memory
(interpret mode only clamps): indices are clamped before every access; lanes past the end of a
row and padding or corrupt slots of a column are *redirected* rather than masked (a masked
store is not portable to interpret mode): a row lane writes back the value it read, a column
lane rewrites the first valid slot of its own tile with that slot's own new value (identical
writes to one address within one vector store), and a tile without a valid slot writes
nothing. The weights are updated in place (aliased).

Float32 and float64. TPU has no general gather, so there is no TPU kernel: ``AUTO`` uses the
jnp reference there. Checked without a GPU: interpret mode against the reference and lowering
to Triton IR for CUDA (``tests/test_kernels_stdp.py``); the same tests pass compiled on an
H100 (``benchmarks/gpu_suite.sh tests``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from . import _compact, _compat
from ._pallas_gpu import _next_pow2, for_each_owned_spike, for_each_tile

LANE_TILE = 32
"""Synapses per tile (at most; fewer for a narrower row, always a power of two)."""


def _rows_kernel(idx_ref, nspk_ref, amp_ref, tgt_ref, tr_ref, prm_ref, _w_in, w_ref, *, step,
                 n_pre, fan_out, n_post, lanes, shared_amplitude):  # fmt: skip
    def update_row(r):
        a = amp_ref[0] if shared_amplitude else amp_ref[r]
        lane = lax.broadcasted_iota(jnp.int32, (lanes,), 0)

        def tile(k0):
            # Lanes past the row's end read and write its last synapse, the same value as
            # that synapse's own lane in this (last) tile.
            k = jnp.minimum(k0 + lane, fan_out - 1)
            t = tgt_ref[r, k]
            ok = (t >= 0) & (t < n_post)
            w = w_ref[r, k]
            new = step(w, a, tr_ref[jnp.clip(t, 0, n_post - 1)], prm_ref)
            w_ref[r, k] = jnp.where(ok, new, w)

        for_each_tile(fan_out, lanes, tile)

    for_each_owned_spike(lambda pos: idx_ref[pos], nspk_ref[0], n_pre, 0, update_row)


def _columns_kernel(idx_ref, nspk_ref, amp_ref, slot_ref, tr_ref, prm_ref, _w_in, w_ref, *,
                    step, n_post, fan_in, fan_out, n_syn, lanes, shared_amplitude):  # fmt: skip
    def update_column(c):
        a = amp_ref[0] if shared_amplitude else amp_ref[c]
        lane = lax.broadcasted_iota(jnp.int32, (lanes,), 0)

        def tile(r0):
            q = slot_ref[c, jnp.minimum(r0 + lane, fan_in - 1)]
            ok = (q >= 0) & (q < n_syn) & (r0 + lane < fan_in)
            first = jnp.min(jnp.where(ok, lane, lanes))

            @pl.when(first < lanes)
            def _():
                q_first = jnp.sum(jnp.where(lane == first, q, 0))
                q_safe = jnp.clip(jnp.where(ok, q, q_first), 0, n_syn - 1)
                w = w_ref[q_safe]
                pre = q_safe // jnp.int32(fan_out)
                w_ref[q_safe] = step(w, a, tr_ref[pre], prm_ref)

        for_each_tile(fan_in, lanes, tile)

    for_each_owned_spike(lambda pos: idx_ref[pos], nspk_ref[0], n_post, 0, update_column)


def update(values, index, spikes, amplitude, partner, params, *, step, columns: bool,
           n_post: int, capacity: int | None, interpret: bool, lane_tile: int = LANE_TILE):  # fmt: skip
    """The STDP update on one (unbatched) projection; ``step(w, a, b, params_ref)`` is the
    per-synapse formula. ``vmap`` batches through ``pallas_call`` (a grid axis per level)."""
    n_pre, fan_out = values.shape
    width = index.shape[1]
    n_event = index.shape[0]
    cap = _compact.check_capacity(capacity, n_event, owner="ell_trace_update")
    lanes = min(_next_pow2(lane_tile), _next_pow2(width))
    dtype = values.dtype
    amplitude = jnp.reshape(amplitude, (-1,)).astype(dtype)
    common = dict(step=step, lanes=lanes, shared_amplitude=amplitude.shape[0] == 1)
    if columns:
        kernel = functools.partial(_columns_kernel, n_post=n_post, fan_in=width,
                                   fan_out=fan_out, n_syn=n_pre * fan_out, **common)  # fmt: skip
        flat = values.reshape(-1)
    else:
        kernel = functools.partial(_rows_kernel, n_pre=n_pre, fan_out=fan_out, n_post=n_post,
                                   **common)  # fmt: skip
        flat = values
    index, partner, params = index.astype(jnp.int32), partner.astype(dtype), params.astype(dtype)

    idx, count = _compact.compact_all(spikes.astype(dtype))
    out = _compat.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct(flat.shape, flat.dtype),
        grid=(cap,),
        input_output_aliases={6: 0},
        interpret=interpret,
        compiler_params=None if interpret else _compat.triton_params(num_warps=1),
        name="brainsim_stdp_" + ("columns" if columns else "rows"),
    )(idx, count[None], amplitude, index, partner, params, flat)
    return out.reshape(values.shape)
