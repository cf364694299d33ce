"""Pure-jnp reference implementations: the oracle for every kernel and the portable path."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from .._events import SpikeEvents, chunk_indices, n_chunks, spike_events


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
    exactly ``ceil(count / chunk_size)`` iterations.
    """
    events = spike_events(spikes) if events is None else events._replace(values=spikes)
    n_ring = ring.shape[0] // n_post

    def body(c, ring):
        idx = chunk_indices(events, c * chunk_size, chunk_size)
        tgt = targets.at[idx].get(mode="fill", fill_value=n_post)
        dl = None if delays is None else delays.at[idx].get(mode="fill", fill_value=1)
        spk = spikes.at[idx].get(mode="fill", fill_value=0)
        w = weights if weights.ndim == 0 else weights.at[idx].get(mode="fill", fill_value=0)
        contrib = jnp.broadcast_to((w * spk[:, None]).astype(ring.dtype), tgt.shape)
        slots = flat_slots(tgt, dl, homogeneous_delay, cursor, n_ring, n_post)
        return ring.at[slots.ravel()].add(contrib.ravel(), mode="drop")

    return lax.fori_loop(0, n_chunks(events, chunk_size), body, ring)


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
