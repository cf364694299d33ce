r"""Compacted spike lists, for kernels that work on active rows only.

A kernel launch needs static shapes, so the indices of the neurons that spiked are packed into a
list of static length, padded with the sentinel ``n`` (one past the last neuron). Two ways to
cover a step's spikes, neither of which ever drops one:

* One list of all spikes (:func:`compact_all`) and one launch whose ``capacity`` programs stride
  over it (:func:`brainsim.kernels._pallas_gpu.for_each_owned_spike`): the GPU atomic kernels
  (ELL, CSR, procedural, STDP). The trip count is read on the device. A loop on the host would
  be a ``lax.while_loop`` with a data-dependent trip count, whose predicate XLA evaluates on the
  host, a device round trip per iteration: measured on an H100, such loops made COBA 4k cost
  ~1 ms per step.
* Windows of fixed ``capacity`` (:func:`for_each_window`): window ``p`` holds the spiking
  neurons of rank ``p * capacity ... (p + 1) * capacity - 1`` (ascending neuron index);
  ``ceil(count / capacity)`` launches in a ``lax.while_loop``: the owner-block and TPU kernels,
  which gather ``capacity * fan_out`` synapses per window, so they need the capacity to bound
  their streams.

Default capacity: ``ceil(n / DEFAULT_CAPACITY_DIVISOR)`` (at least ``MIN_CAPACITY``, at most
``n``). One sixteenth of a population spiking in one step is far above the activity of the
asynchronous regimes brainsim targets (COBA at ~10 Hz with ``dt = 0.1`` ms: 0.1% per step); a
synchronous burst above it costs extra launches (windows) or longer programs (striding), not
spikes. When ``capacity >= n`` one window holds every possible spike and the window loop is
dropped statically.

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
        # Unrolled: the default method is a loop of log2(n) iterations, each a launch on a GPU.
        idx = jnp.searchsorted(inclusive, rank, side="right", method="scan_unrolled")
        idx = idx.astype(jnp.int32)
        return jnp.where(rank < count, idx, n)

    batch = counts.count.shape
    flat = jax.vmap(one)(counts.inclusive.reshape(-1, n), counts.count.reshape(-1))
    return flat.reshape(batch + (capacity,))


def compact_all(spikes: Float[Array, "*batch n"]):
    """Every spiking neuron in one list: ``(indices, count)``, ``indices`` ``(*batch, n)``
    ascending with the sentinel ``n`` after the last spike, ``count`` ``(*batch,)``.

    For the GPU kernels that stride over the list inside one launch
    (:func:`brainsim.kernels._pallas_gpu.for_each_owned_spike`): no loop over windows, so no
    data-dependent trip count for XLA to evaluate on the host.
    """
    counts = spike_counts(spikes)
    return window(counts, jnp.int32(0), spikes.shape[-1]), counts.count


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
