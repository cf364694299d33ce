"""Pure-jnp reference implementations: the oracle for every kernel and the portable path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ._events import SpikeEvents, cpu_loop_or_single, for_each_chunk, spike_events
from ._procedural_rng import dense_block_rows, procedural_synapses


def flat_slots(targets, delays, homogeneous_delay: int, cursor, n_ring: int, n_post: int):
    """Flat ring positions of ``targets``; padding (``>= n_post``) maps past the end."""
    d = homogeneous_delay if delays is None else delays
    row = (cursor + d) % n_ring
    return jnp.where((targets >= 0) & (targets < n_post), row * n_post + targets, n_ring * n_post)


def ell_deliver(
    ring,
    cursor,
    spikes,
    targets,
    weights,
    delays,
    *,
    n_post: int,
    homogeneous_delay: int,
    chunk_size: int,
    events: SpikeEvents | None = None,
):
    """Event-driven ELL delivery in jnp: loop over chunks of the spiking neurons.

    Only the rows of neurons with a non-zero spike are read, ``chunk_size`` at a time, for
    exactly ``ceil(count / chunk_size)`` iterations (on a CPU; elsewhere one chunk of every
    neuron, see :func:`brainsim.kernels._events.for_each_chunk`).
    """
    events = spike_events(spikes) if events is None else events._replace(values=spikes)
    n_ring = ring.shape[0] // n_post

    def body(idx, _start, ring):
        tgt = targets.at[idx].get(mode="fill", fill_value=n_post)
        dl = None if delays is None else delays.at[idx].get(mode="fill", fill_value=1)
        spk = spikes.at[idx].get(mode="fill", fill_value=0)
        w = weights if weights.ndim == 0 else weights.at[idx].get(mode="fill", fill_value=0)
        contrib = jnp.broadcast_to((w * spk[:, None]).astype(ring.dtype), tgt.shape)
        slots = flat_slots(tgt, dl, homogeneous_delay, cursor, n_ring, n_post)
        return ring.at[slots.ravel()].add(contrib.ravel(), mode="drop")

    return for_each_chunk(events, chunk_size, body, ring)


def ell_deliver_dense(
    ring, cursor, spikes, targets, weights, delays, *, n_post: int, homogeneous_delay: int
):
    """The same sum over *every* synapse (linear in spikes and weights): the tangent rule."""
    n_ring = ring.shape[0] // n_post
    slots = flat_slots(targets, delays, homogeneous_delay, cursor, n_ring, n_post)
    w = jnp.broadcast_to(weights, targets.shape)
    contrib = spikes[:, None].astype(w.dtype) * w
    return ring + jnp.zeros_like(ring).at[slots.ravel()].add(
        contrib.astype(ring.dtype).ravel(), mode="drop"
    )


# ------------------------------------------------------------------------------------ CSR


def _csr_gather(indptr, indices, weights, delays, rows, synapses, valid, n_post):
    tgt = jnp.where(valid, indices.at[synapses].get(mode="fill", fill_value=n_post), n_post)
    w = weights if weights.ndim == 0 else weights.at[synapses].get(mode="fill", fill_value=0)
    dl = None if delays is None else delays.at[synapses].get(mode="fill", fill_value=1)
    return tgt, w, dl


def csr_deliver(
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
    block_size: int,
):
    """Event-driven CSR delivery in jnp, load-balanced over synapses.

    The synapses of the spiking neurons, concatenated in neuron order, are a virtual array of
    length ``total = Σ_{i spiking} (indptr[i+1] - indptr[i])``; it is read in blocks of
    ``block_size`` positions, each locating its neuron with a binary search over the running
    sum of the spiking rows' lengths. The loop runs ``ceil(total / block_size)`` times, so the
    work is proportional to the delivered synapses (plus an O(n_pre) scan for the spikes), and
    a neuron with a huge fan-out costs no more than many neurons with small ones. That loop runs
    on a CPU; elsewhere one block covers every stored synapse (no loop whose trip count the host
    must read, see :mod:`brainsim.kernels._events`).
    """
    n_pre = spikes.shape[0]
    if indices.shape[0] == 0:
        return ring
    n_ring = ring.shape[0] // n_post
    lengths = jnp.where(spikes != 0, indptr[1:] - indptr[:-1], 0)
    ends = jnp.cumsum(lengths)
    begins = ends - lengths
    total = ends[-1]

    def block(start, size, ring):
        p = start + jnp.arange(size, dtype=ends.dtype)
        row = jnp.minimum(jnp.searchsorted(ends, p, side="right"), n_pre - 1)
        valid = p < total
        syn = indptr[row] + (p - begins[row])
        tgt, w, dl = _csr_gather(indptr, indices, weights, delays, row, syn, valid, n_post)
        contrib = jnp.broadcast_to((w * spikes[row]).astype(ring.dtype), tgt.shape)
        slots = flat_slots(tgt, dl, homogeneous_delay, cursor, n_ring, n_post)
        return ring.at[slots].add(contrib, mode="drop")

    def loop(ring):
        def body(b, ring):
            return block(b * block_size, block_size, ring)

        return lax.fori_loop(0, (total + block_size - 1) // block_size, body, ring)

    def whole(ring):
        return block(0, indices.shape[0], ring)

    return cpu_loop_or_single(ring, loop, whole)


def csr_deliver_dense(
    ring, cursor, spikes, indptr, indices, weights, delays, *, n_post: int, homogeneous_delay: int
):
    """The same sum over *every* synapse (linear in spikes and weights): the tangent rule."""
    n_pre = spikes.shape[0]
    n_syn = indices.shape[0]
    if n_syn == 0:
        return ring
    n_ring = ring.shape[0] // n_post
    rows = jnp.repeat(
        jnp.arange(n_pre, dtype=jnp.int32), indptr[1:] - indptr[:-1], total_repeat_length=n_syn
    )
    slots = flat_slots(indices, delays, homogeneous_delay, cursor, n_ring, n_post)
    contrib = jnp.broadcast_to(weights, indices.shape) * spikes[rows].astype(weights.dtype)
    return ring + jnp.zeros_like(ring).at[slots].add(contrib.astype(ring.dtype), mode="drop")


# ----------------------------------------------------------------------------- procedural


def _procedural_rows(rule, rows, j, live, counts, terms, dtype):
    """Targets, validity and summed values ``Σ_t spikes_t[i] (loc_t + scale_t g_ij)`` of the
    synapses ``(rows, j)``; ``terms`` is a sequence of ``(spikes, loc, scale)``."""
    count = rule.fan_out if counts is None else counts.at[rows].get(mode="fill", fill_value=0)
    valid = live[:, None] & (j[None, :] < jnp.reshape(count, (-1, 1)))
    random = any(scale is not None for _, _, scale in terms)
    targets, g = procedural_synapses(rule, rows[:, None], j[None, :], valid, need_g=random)
    contrib = jnp.zeros(valid.shape, dtype)
    for spikes, loc, scale in terms:
        w = loc.astype(dtype)
        if scale is not None:
            w = w + scale.astype(dtype) * g.astype(dtype)
        values = spikes.at[rows].get(mode="fill", fill_value=0).astype(dtype)
        contrib = contrib + w * values[:, None]
    return targets, valid, contrib


def window_slots(targets, valid, base, *, offset: int, width: int, n_ring: int):
    """Flat ring slots ``base + targets + offset`` of the synapses whose column
    ``targets + offset`` lies in ``[0, width)`` (a ring ``width`` neurons wide); every other
    synapse maps past the end (``n_ring * width``, dropped by the scatter)."""
    columns = targets + offset
    inside = valid & (columns >= 0) & (columns < width)
    return jnp.where(inside, base + columns, n_ring * width)


def procedural_deliver(
    ring, cursor, spikes, loc, scale, counts, *, rule, delay: int, chunk_size: int,
    offset: int = 0, width: int | None = None, events=None
):  # fmt: skip
    """Event-driven procedural delivery in jnp: the synapses of ``chunk_size`` spiking neurons
    at a time are regenerated (see :mod:`brainsim.kernels._procedural_rng`) and scattered, for
    exactly ``ceil(count / chunk_size)`` iterations (on a CPU; elsewhere one chunk of every
    neuron, see :func:`brainsim.kernels._events.for_each_chunk`). A synapse with target ``t``
    adds into column ``t + offset`` of a ring ``width`` wide (default ``rule.n_post``) when
    that column exists (:func:`window_slots`)."""
    if rule.fan_out == 0:
        return ring
    events = spike_events(spikes) if events is None else events._replace(values=spikes)
    width = rule.n_post if width is None else width
    n_ring = ring.shape[0] // width
    base = ((cursor + delay) % n_ring) * width
    j = jnp.arange(rule.fan_out, dtype=jnp.int32)

    def body(rows, _start, ring):
        targets, valid, contrib = _procedural_rows(
            rule, rows, j, rows < rule.n_pre, counts, [(spikes, loc, scale)], ring.dtype
        )
        slots = window_slots(targets, valid, base, offset=offset, width=width, n_ring=n_ring)
        return ring.at[slots.ravel()].add(contrib.ravel(), mode="drop")

    return for_each_chunk(events, chunk_size, body, ring)


def procedural_deliver_dense(
    ring, cursor, terms, counts, *, rule, delay: int, offset: int = 0, width: int | None = None
):
    """The sum over *every* synapse of ``Σ_t spikes_t[i] (loc_t + scale_t g_ij)``, regenerated
    block by block: with ``terms = [(spikes, loc, scale)]`` the delivery itself, and with
    ``[(spikes_dot, loc, scale), (spikes, loc_dot, scale_dot)]`` its tangent. ``offset`` and
    ``width`` place the targets as in :func:`procedural_deliver`.

    A ``lax.scan`` over blocks of presynaptic neurons with a rematerialised body: linear in
    each term's spikes and weights, transposable, and its memory is one block of synapses.
    """
    if rule.fan_out == 0:
        return ring
    width = rule.n_post if width is None else width
    n_ring = ring.shape[0] // width
    base = ((cursor + delay) % n_ring) * width
    block = min(dense_block_rows(rule.fan_out), rule.n_pre)
    n_blocks = -(-rule.n_pre // block)
    j = jnp.arange(rule.fan_out, dtype=jnp.int32)

    @jax.checkpoint
    def body(acc, b):
        rows = b * block + jnp.arange(block, dtype=jnp.int32)
        targets, valid, contrib = _procedural_rows(
            rule, rows, j, rows < rule.n_pre, counts, terms, acc.dtype
        )
        slots = window_slots(targets, valid, base, offset=offset, width=width, n_ring=n_ring)
        return acc.at[slots.ravel()].add(contrib.ravel(), mode="drop"), None

    acc, _ = lax.scan(body, jnp.zeros_like(ring), jnp.arange(n_blocks, dtype=jnp.int32))
    return ring + acc
