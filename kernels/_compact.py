r"""Compacted spike lists of fixed capacity, for kernels that work on active rows only.

A kernel launch needs static shapes, so the indices of the neurons that spiked are packed into a
list of fixed ``capacity``: window ``p`` holds the spiking neurons of rank
``p * capacity ... (p + 1) * capacity - 1`` (ascending neuron index), padded with the sentinel
``n`` (one past the last neuron). A step with more spikes than ``capacity`` is never truncated:
:func:`for_each_window` runs one kernel launch per window, ``ceil(count / capacity)`` launches in
all (a ``lax.while_loop`` whose trip count is data-dependent), so the capacity trades launch
overhead against work on padding and never limits how many spikes are delivered.

Default capacity: ``ceil(n / DEFAULT_CAPACITY_DIVISOR)`` (at least ``MIN_CAPACITY``, at most
``n``). One sixteenth of a population spiking in one step is far above the activity of the
asynchronous regimes brainsim targets (COBA at ~10 Hz with ``dt = 0.1`` ms: 0.1% per step); a
synchronous burst above it costs extra launches, not spikes. When ``capacity >= n`` one window
holds every possible spike and the loop is dropped statically: on a GPU, where XLA evaluates a
data-dependent loop's predicate on the host (a device round trip per step), ``capacity = n``
can be the faster choice for the atomic kernel, whose programs past the last spike return at
once; the owner-block and TPU kernels gather ``capacity * fan_out`` synapses per window, so
they prefer a small capacity. Untuned: measure on the hardware.

Compaction is a cumulative sum and a binary search (no sort, no scatter), so it runs on every
backend and is deterministic.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int

DEFAULT_CAPACITY_DIVISOR = 16
"""Default capacity is ``ceil(n / DEFAULT_CAPACITY_DIVISOR)`` spikes per window."""
MIN_CAPACITY = 32
"""Smallest default capacity (small populations: one window covers most of them)."""


def default_capacity(n: int) -> int:
    """The default number of spikes per window for a population of ``n`` neurons."""
    return max(1, min(n, max(MIN_CAPACITY, math.ceil(n / DEFAULT_CAPACITY_DIVISOR))))


def check_capacity(capacity: int | None, n: int, *, owner: str = "ell_deliver") -> int:
    """Resolve ``capacity`` (``None`` = default) and validate it; never above ``n``."""
    if capacity is None:
        return default_capacity(n)
    if int(capacity) < 1:
        raise ValueError(
            f"{owner}: `capacity` must be >= 1 (spiking neurons per window); got {capacity}."
        )
    return max(1, min(int(capacity), n))


class SpikeCounts(NamedTuple):
    """Running counts of spiking neurons, shared by every window of one step."""

    inclusive: Int[Array, "*batch n"]
    """``inclusive[..., i]`` = number of spiking neurons among ``0 .. i``."""
    count: Int[Array, "*batch"]
    """Number of spiking neurons."""


def spike_counts(spikes: Float[Array, "*batch n"]) -> SpikeCounts:
    """Count the non-zero entries of ``spikes`` (along the last axis)."""
    inclusive = jnp.cumsum((spikes != 0).astype(jnp.int32), axis=-1, dtype=jnp.int32)
    return SpikeCounts(inclusive, inclusive[..., -1])


def window(counts: SpikeCounts, start, capacity: int) -> Int[Array, "*batch capacity"]:
    """Indices of the spiking neurons of rank ``start .. start + capacity - 1``, ascending.

    Entries past the last spike hold the sentinel ``n``. The neuron of rank ``j`` is the first
    ``i`` with ``inclusive[i] > j``: a binary search, ``log2(n)`` steps per entry.
    """
    n = counts.inclusive.shape[-1]
    rank = start + jnp.arange(capacity, dtype=jnp.int32)

    def one(inclusive, count):
        idx = jnp.searchsorted(inclusive, rank, side="right").astype(jnp.int32)
        return jnp.where(rank < count, idx, n)

    batch = counts.count.shape
    flat = jax.vmap(one)(counts.inclusive.reshape(-1, n), counts.count.reshape(-1))
    return flat.reshape(batch + (capacity,))


def n_windows(count, capacity: int):
    """How many windows of ``capacity`` cover ``count`` spikes."""
    return (count + capacity - 1) // capacity


def for_each_window(spikes, capacity: int, body, init):
    """Fold ``body(indices, window_count, carry) -> carry`` over every window of spikes.

    ``spikes`` is ``(batch, n)``; ``indices`` is ``(batch, capacity)`` (sentinel ``n``) and
    ``window_count`` ``(batch,)`` the number of valid entries of each row. The number of windows
    is that of the batch member with most spikes (members with fewer see empty windows).
    """
    n = spikes.shape[-1]
    counts = spike_counts(spikes)

    def run(start, carry):
        idx = window(counts, start, capacity)
        in_window = jnp.clip(counts.count - start, 0, capacity).astype(jnp.int32)
        return body(idx, in_window, carry)

    if capacity >= n:
        # One window holds every neuron: no loop, no data-dependent trip count.
        return run(jnp.int32(0), init)
    total = n_windows(jnp.max(counts.count), capacity)

    def step(state):
        p, carry = state
        return p + 1, run(p * capacity, carry)

    _, out = lax.while_loop(lambda s: s[0] < total, step, (jnp.int32(0), init))
    return out
