r"""Event-driven synapse-wise updates on ELL storage: touch only synapses of neurons that spiked.

Long-term plasticity changes a synapse when its presynaptic or its postsynaptic neuron fires.
With ELL storage by presynaptic neuron (``values[i, s]`` is synapse ``s`` of neuron ``i``, its
target ``targets[i, s]``, padding ``n_post``):

* :func:`ell_update_pre` rewrites the rows of the presynaptic neurons that spiked;
* :func:`ell_update_post` rewrites the columns of the postsynaptic neurons that spiked, through
  a transposed index built once (:func:`ell_post_slots`): ``post_slots[j, r]`` is the flat slot
  ``i * fan_out + s`` of the ``r``-th synapse onto neuron ``j``, padded with
  ``n_pre * fan_out``.

:func:`csr_update_pre` / :func:`csr_update_post` do the same on CSR storage (flat weights,
``indptr``), with a transposed index that is also compressed (:func:`csr_post_index`).

Both work on windows of ``capacity`` active neurons (:func:`~brainsim.kernels._active.
for_each_active`: a native scan on CPU): one window per loop iteration, ``ceil(count /
capacity)`` iterations, so a step with more spikes than ``capacity`` costs more iterations and
never drops a spike. Work per step is proportional to the synapses of the active neurons plus
one pass over each spike vector. Off the CPU (GPU, TPU) one window holds every neuron, so there
is no loop whose trip count the host must read, at the cost of a pass over every synapse.

Trace-based STDP, the common case, has a native in-place kernel instead
(:mod:`brainsim.kernels._stdp`); these generic updates serve every other rule.

The update itself is a function ``fn(values, pre, post, valid) -> new_values`` on a block of
synapses: ``pre`` and ``post`` are the (broadcast) neuron indices of each synapse and ``valid``
masks padding; entries where ``valid`` is false are never written. Every synapse appears at
most once in a window, so the writes do not collide. These are pure-jnp references (the
portable path). They differentiate in forward and reverse mode as one window of every
neuron, which needs no loop (:func:`~brainsim.kernels._active.for_each_active`): gradients
equal those of the dense update (:func:`dense_update_pre` / ``_post``) on the same synapses.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ._active import for_each_active

DEFAULT_CAPACITY = 16
"""Smallest default number of active neurons per loop iteration."""
CAPACITY_DIVISOR = 400
"""Default capacity ``ceil(n / 400)`` (between 16 and 128): a little above the number of ``n``
neurons that spike in one step at 20 Hz with dt = 0.1 ms (40k COBA: ~70 E spikes per step, 80;
4k: ~7, 16), so most steps run one iteration. A padding row costs about as much as an active
one, so the capacity should not be much larger either. Measured on the 40k COBA E->E
projection alone (2 CPUs, both updates, interleaved runs): capacity 80 took 0.54-0.63 ms per
step, 100 0.60 ms, 63 (two iterations) 0.77-1.0 ms, 125 0.88 ms. Never a limit on how many
neurons are updated."""


def _capacity(capacity, n):
    if capacity is None:
        return min(n, max(DEFAULT_CAPACITY, min(128, -(-n // CAPACITY_DIVISOR))))
    if int(capacity) < 1:
        raise ValueError(f"plasticity update: `capacity` must be >= 1; got {capacity}.")
    return min(int(capacity), n)

UpdateFn = Callable[[Array, Array, Array, Array], Array]


def ell_post_slots(targets: np.ndarray, n_post: int) -> np.ndarray:
    """The transposed index of an ELL matrix (host side, at network build).

    Returns ``(n_post, fan_in)`` int32 flat slots ``i * fan_out + s`` of the synapses onto each
    postsynaptic neuron in ascending slot order, padded with ``n_pre * fan_out``.
    """
    targets = np.asarray(targets)
    n_pre, fan_out = targets.shape
    flat = targets.ravel()
    valid = np.flatnonzero((flat >= 0) & (flat < n_post))
    post = flat[valid]
    order = np.argsort(post, kind="stable")
    post, slots = post[order], valid[order]
    counts = np.bincount(post, minlength=n_post)
    fan_in = max(int(counts.max(initial=0)), 1)
    starts = np.cumsum(counts) - counts
    rank = np.arange(post.size) - starts[post]
    out = np.full((n_post, fan_in), n_pre * fan_out, np.int64)
    out[post, rank] = slots
    if n_pre * fan_out >= np.iinfo(np.int32).max:
        raise ValueError("ell_post_slots: more than 2**31 synapse slots; split the projection.")
    return out.astype(np.int32)


def ell_update_pre(
    values: Float[Array, "n_pre fan_out"],
    targets: Int[Array, "n_pre fan_out"],
    spikes: Float[Array, " n_pre"],
    fn: UpdateFn,
    *,
    n_post: int,
    capacity: int | None = None,
    single: bool | None = None,
) -> Float[Array, "n_pre fan_out"]:
    """Apply ``fn`` to the synapses of every presynaptic neuron with a non-zero spike.

    ``fn`` receives ``(values[rows], rows[:, None], targets[rows], valid)`` for a window of
    active rows (``capacity`` of them; padding rows have index ``n_pre``). ``single``: one
    window of every row, no loop (:func:`~brainsim.kernels._active.for_each_active`).
    """
    n_pre = values.shape[0]
    cap = _capacity(capacity, n_pre)

    def body(rows, vals):
        # Gather from clamped rows (cheap in-bounds gathers); padding rows are masked and
        # dropped on the write.
        active = rows < n_pre
        safe = jnp.where(active, rows, 0)
        tgt = jnp.where(active[:, None], targets.at[safe].get(mode="promise_in_bounds"), n_post)
        block = vals.at[safe].get(mode="promise_in_bounds")
        valid = (tgt >= 0) & (tgt < n_post)  # padding (n_post) and corrupt entries
        tgt = jnp.where(valid, tgt, n_post)
        new = jnp.where(valid, fn(block, rows[:, None], tgt, valid), block)
        return vals.at[rows].set(new.astype(vals.dtype), mode="drop")

    return for_each_active(spikes, cap, body, values, single=single)


def ell_update_post(
    values: Float[Array, "n_pre fan_out"],
    post_slots: Int[Array, "n_post fan_in"],
    spikes: Float[Array, " n_post"],
    fn: UpdateFn,
    *,
    capacity: int | None = None,
    single: bool | None = None,
) -> Float[Array, "n_pre fan_out"]:
    """Apply ``fn`` to the synapses onto every postsynaptic neuron with a non-zero spike.

    ``fn`` receives ``(values at the slots, pre indices, cols[:, None], valid)`` for a window of
    active postsynaptic neurons, gathered through ``post_slots`` (:func:`ell_post_slots`).
    ``single`` as in :func:`ell_update_pre`.
    """
    n_pre, fan_out = values.shape
    n_post = post_slots.shape[0]
    n_slots = n_pre * fan_out
    cap = _capacity(capacity, n_post)

    def body(cols, flat):
        slots = post_slots.at[cols].get(mode="fill", fill_value=n_slots)
        valid = (slots >= 0) & (slots < n_slots)  # padding (n_slots) and corrupt entries
        pre = jnp.where(valid, slots // fan_out, n_pre)
        return _rewrite(flat, slots, valid, pre, cols[:, None], fn)

    out = for_each_active(spikes, cap, body, values.reshape(-1), single=single)
    return out.reshape(values.shape)


def dense_update_pre(values, spikes, fn):
    """Dense counterpart of :func:`ell_update_pre` on an ``(n_pre, n_post)`` matrix (oracle)."""
    n_pre, n_post = values.shape
    rows = jnp.arange(n_pre)[:, None]
    cols = jnp.arange(n_post)[None, :]
    valid = jnp.broadcast_to(spikes[:, None] != 0, values.shape)
    return jnp.where(valid, fn(values, rows, cols, valid), values).astype(values.dtype)


def dense_update_post(values, spikes, fn):
    """Dense counterpart of :func:`ell_update_post` on an ``(n_pre, n_post)`` matrix (oracle)."""
    n_pre, n_post = values.shape
    rows = jnp.arange(n_pre)[:, None]
    cols = jnp.arange(n_post)[None, :]
    valid = jnp.broadcast_to(spikes[None, :] != 0, values.shape)
    return jnp.where(valid, fn(values, rows, cols, valid), values).astype(values.dtype)


def _rewrite(flat, slots, valid, pre, post, fn):
    """``flat`` with ``fn`` applied to the synapses at the flat ``slots`` where ``valid``
    (``pre`` / ``post``: their neurons); every other entry, and the slots where ``valid`` is
    false, are left as they are."""
    n_slots = flat.shape[0]
    slots = jnp.where(valid, slots, n_slots)
    block = flat.at[slots].get(mode="fill", fill_value=0)
    new = jnp.where(valid, fn(block, pre, post, valid), block)
    return flat.at[slots].set(new.astype(flat.dtype), mode="drop")


# ------------------------------------------------------------------------------------- CSR


def csr_post_index(indptr: np.ndarray, indices: np.ndarray, n_post: int):
    """The synapses of a CSR matrix by postsynaptic neuron (host side, at network build).

    Returns ``(post_ptr, post_slots, max_fan_in)``: the synapses onto neuron ``j`` are the
    flat slots ``post_slots[post_ptr[j] : post_ptr[j + 1]]`` (ascending), int32; memory
    proportional to the synapses, like CSR itself.
    """
    indices = np.asarray(indices)
    n_syn = indices.shape[0]
    if n_syn >= np.iinfo(np.int32).max:
        raise ValueError("csr_post_index: more than 2**31 synapses; split the projection.")
    valid = np.flatnonzero((indices >= 0) & (indices < n_post))
    order = valid[np.argsort(indices[valid], kind="stable")]
    counts = np.bincount(indices[valid], minlength=n_post)
    post_ptr = np.zeros(n_post + 1, np.int32)
    np.cumsum(counts, out=post_ptr[1:])
    return post_ptr, order.astype(np.int32), max(int(counts.max(initial=0)), 1)


def _ranges(ptr, neurons, width: int):
    """Flat positions ``ptr[e] + k`` (``k < width``) of the neurons ``neurons`` (padding
    ``len(ptr) - 1``) and where they are inside their neuron's range."""
    n = ptr.shape[0] - 1
    active = neurons < n
    safe = jnp.where(active, neurons, 0)
    start = ptr[safe]
    stop = jnp.where(active, ptr[safe + 1], start)
    pos = start[:, None] + jnp.arange(width, dtype=start.dtype)[None, :]
    return pos, pos < stop[:, None]


def csr_update_pre(
    values: Float[Array, " n_synapses"],
    indptr: Int[Array, " n_pre_plus_1"],
    indices: Int[Array, " n_synapses"],
    spikes: Float[Array, " n_pre"],
    fn: UpdateFn,
    *,
    n_post: int,
    max_fan_out: int,
    capacity: int | None = None,
    single: bool | None = None,
) -> Float[Array, " n_synapses"]:
    """:func:`ell_update_pre` for CSR storage: ``fn`` on the synapses
    ``indptr[i] .. indptr[i+1]-1`` of every presynaptic neuron ``i`` that spiked, read in
    windows of ``capacity`` rows of ``max_fan_out`` (the longest row) slots."""
    n_pre = indptr.shape[0] - 1
    cap = _capacity(capacity, n_pre)

    def body(rows, flat):
        slots, valid = _ranges(indptr, rows, max_fan_out)
        post = indices.at[slots].get(mode="fill", fill_value=n_post)
        valid = valid & (post >= 0) & (post < n_post)
        return _rewrite(flat, slots, valid, rows[:, None], jnp.where(valid, post, n_post), fn)

    return for_each_active(spikes, cap, body, values, single=single)


def csr_update_post(
    values: Float[Array, " n_synapses"],
    indptr: Int[Array, " n_pre_plus_1"],
    post_ptr: Int[Array, " n_post_plus_1"],
    post_slots: Int[Array, " n_synapses"],
    spikes: Float[Array, " n_post"],
    fn: UpdateFn,
    *,
    max_fan_in: int,
    capacity: int | None = None,
    single: bool | None = None,
) -> Float[Array, " n_synapses"]:
    """:func:`ell_update_post` for CSR storage: ``fn`` on the synapses onto every
    postsynaptic neuron that spiked, found through :func:`csr_post_index`; the presynaptic
    neuron of a slot is searched in ``indptr``."""
    n_pre, n_slots = indptr.shape[0] - 1, values.shape[0]
    n_post = post_ptr.shape[0] - 1
    cap = _capacity(capacity, n_post)

    def body(cols, flat):
        pos, valid = _ranges(post_ptr, cols, max_fan_in)
        slots = post_slots.at[jnp.where(valid, pos, n_slots)].get(mode="fill", fill_value=n_slots)
        valid = valid & (slots >= 0) & (slots < n_slots)
        pre = jnp.searchsorted(indptr, slots, side="right").astype(slots.dtype) - 1
        return _rewrite(flat, slots, valid, jnp.where(valid, pre, n_pre), cols[:, None], fn)

    return for_each_active(spikes, cap, body, values, single=single)
