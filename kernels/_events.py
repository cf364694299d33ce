r"""Compacted spike events: which neurons fired this step, found without a sort.

XLA's ``nonzero``/``cumsum`` are slow on CPU for thousands of neurons (tens of µs per step), so
spikes are packed 32 to a ``uint32`` word, words are counted with ``population_count``, and the
``j``-th spiking neuron is located by a search over word offsets followed by a bit select. The
result is read in fixed-size chunks (``chunk_indices``) so a consumer can loop over exactly
``ceil(count / chunk)`` chunks: every spike is delivered whatever its number, and no capacity can
overflow.

:func:`for_each_chunk` runs that loop on a CPU only. On a GPU (or TPU), XLA evaluates the
predicate of a loop with a data-dependent trip count on the host, a device round trip per
iteration (measured on an H100: ~1 ms per step of a small network with a handful of such
loops), so there the consumer gets one chunk holding every neuron instead: more work on padding,
no loop.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int, UInt32

_BITS = 32


class SpikeEvents(NamedTuple):
    """The spikes of one population in one step, in dense and compacted-searchable form."""

    values: Float[Array, " n"]
    """Spike values (1.0 for a spike; other values e.g. after short-term plasticity)."""
    words: UInt32[Array, " w"]
    """Bit ``b`` of word ``i`` is set where neuron ``32 i + b`` has a non-zero value."""
    offsets: Int[Array, " w"]
    """Number of spiking neurons before word ``i``."""
    count: Int[Array, ""]
    """Number of spiking neurons."""


def spike_events(values: Float[Array, " n"]) -> SpikeEvents:
    """Pack the non-zero entries of ``values`` into searchable words."""
    n = values.shape[0]
    n_words = -(-n // _BITS)
    mask = jnp.pad(values != 0, (0, n_words * _BITS - n)).reshape(n_words, _BITS)
    shifts = jnp.arange(_BITS, dtype=jnp.uint32)
    words = jnp.sum(mask.astype(jnp.uint32) << shifts, axis=1, dtype=jnp.uint32)
    per_word = lax.population_count(words).astype(jnp.int32)
    inclusive = jnp.cumsum(per_word)
    return SpikeEvents(values, words, inclusive - per_word, inclusive[-1])


def chunk_indices(events: SpikeEvents, start, size: int) -> Int[Array, " size"]:
    """Indices of spiking neurons number ``start .. start+size-1`` (ascending), padded with ``n``."""
    n = events.values.shape[0]
    n_words = events.words.shape[0]
    j = start + jnp.arange(size, dtype=jnp.int32)
    inclusive = events.offsets + lax.population_count(events.words).astype(jnp.int32)
    method = "compare_all" if n_words <= 1024 else "scan"
    word = jnp.minimum(jnp.searchsorted(inclusive, j, side="right", method=method), n_words - 1)
    rank = j - events.offsets[word]
    bits = events.words[word]
    upto = (jnp.uint32(2) << jnp.arange(_BITS, dtype=jnp.uint32)) - jnp.uint32(1)
    set_upto = lax.population_count(bits[:, None] & upto[None, :]).astype(jnp.int32)
    bit = jnp.argmax(set_upto > rank[:, None], axis=1).astype(jnp.int32)
    return jnp.where(j < events.count, word * _BITS + bit, n)


def n_chunks(events: SpikeEvents, size: int):
    """How many chunks of ``size`` cover all spikes."""
    return (events.count + size - 1) // size


def cpu_loop_or_single(operand, loop, single, *, force_single: bool | None = None):
    """``loop(operand)`` when the program is lowered for a CPU, ``single(operand)`` on every
    other platform, where XLA evaluates a data-dependent loop's predicate on the host (module
    docstring). The two must compute the same thing. ``force_single``: ``True`` / ``False``
    picks one form whatever the platform (tests); ``None`` chooses at lowering."""
    if force_single is None:
        return lax.platform_dependent(operand, cpu=loop, default=single)
    return single(operand) if force_single else loop(operand)


def all_indices(events: SpikeEvents) -> Int[Array, " n"]:
    """Indices of every spiking neuron (ascending), padded with ``n``: one chunk of size ``n``,
    from ``jnp.nonzero`` with a static size (no search, no loop)."""
    n = events.values.shape[0]
    return jnp.nonzero(events.values != 0, size=n, fill_value=n)[0].astype(jnp.int32)


def for_each_chunk(events: SpikeEvents, size: int, body, init, *, single: bool | None = None):
    """Fold ``body(indices, start, carry) -> carry`` over the spikes in chunks.

    ``indices`` are the spiking neurons of rank ``start .. start + len(indices) - 1``
    (:func:`chunk_indices`, padded with ``n``). ``single=False``: chunks of ``size``, exactly
    ``ceil(count / size)`` iterations of a loop; ``single=True``: one call with all ``n``
    indices (:func:`all_indices`), no loop. ``None`` (default): the loop on a CPU, the single
    call on any other platform (module docstring), chosen when the program is lowered.
    """
    n = events.values.shape[0]

    def loop(carry):
        def step(c, x):
            start = c * size
            return body(chunk_indices(events, start, size), start, x)

        return lax.fori_loop(0, n_chunks(events, size), step, carry)

    def whole(carry):
        return body(all_indices(events), jnp.int32(0), carry)

    if single is None and size >= n:
        return whole(init)  # one chunk holds every neuron anyway
    return cpu_loop_or_single(init, loop, whole, force_single=single)
