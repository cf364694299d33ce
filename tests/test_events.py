"""Compacted spike events: ``spike_events`` + ``chunk_indices`` must list exactly the non-zero
entries, in ascending order, whatever the size, density and chunk size."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from brainsim._events import chunk_indices, n_chunks, spike_events

SIZES = [1, 31, 32, 33, 1000, 4000, 40_000]  # 40,000 neurons = 1250 words: the "scan" search
DENSITIES = [0.0, 0.01, 0.5, 1.0]


@functools.partial(jax.jit, static_argnums=(1,))
def _all_chunks(values, size):
    """Every chunk that could be needed (ceil(n/size) + 1) and the events' count / n_chunks."""
    events = spike_events(values)
    n = values.shape[0]
    starts = jnp.arange(-(-n // size) + 1, dtype=jnp.int32) * size
    idx = jax.vmap(lambda s: chunk_indices(events, s, size))(starts)
    return idx, events.count, n_chunks(events, size)


def _random_values(n, density, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random(n) < density
    if density == 1.0:
        mask[:] = True
    # Spike values need not be 1: STP efficacies and Poisson counts, even negative values.
    values = np.where(mask, rng.choice([1.0, 2.0, 0.37, -0.5], size=n), 0.0)
    return values.astype(np.float32)


# (n, chunk size): one-element chunks on the small sizes only (on thousands of neurons they
# would only be slow, not different).
CASES = [(n, size) for n in SIZES for size in (1, 8, 64) if size > 1 or n < 1000]


@pytest.mark.parametrize("n, size", CASES)
@pytest.mark.parametrize("density", DENSITIES)
def test_chunks_list_exactly_the_nonzero_indices(n, size, density):
    values = _random_values(n, density, seed=n + int(100 * density))
    expected = np.flatnonzero(values)
    idx, count, chunks = _all_chunks(jnp.asarray(values), size)
    idx = np.asarray(idx).ravel()
    assert int(count) == expected.size
    assert int(chunks) == -(-expected.size // size)
    # The first `count` entries are the spiking neurons in ascending order, the rest padding n.
    np.testing.assert_array_equal(idx[: expected.size], expected)
    assert np.all(idx[expected.size:] == n)


def test_words_and_offsets():
    values = np.zeros(70, np.float32)
    values[[0, 5, 31, 32, 64, 69]] = 1.0
    ev = spike_events(jnp.asarray(values))
    words = np.asarray(ev.words)
    assert words.shape == (3,)
    assert words[0] == (1 << 0) | (1 << 5) | (1 << 31)
    assert words[1] == 1
    assert words[2] == (1 << 0) | (1 << 5)
    np.testing.assert_array_equal(ev.offsets, [0, 3, 4])
    assert int(ev.count) == 6


def test_chunks_under_vmap():
    rng = np.random.default_rng(0)
    batch = (rng.random((5, 300)) < np.array([0.0, 0.02, 0.3, 0.9, 1.0])[:, None]).astype(
        np.float32)

    @jax.jit
    def first_chunk(v):
        ev = spike_events(v)
        return chunk_indices(ev, 0, 300), ev.count

    idx, count = jax.vmap(first_chunk)(jnp.asarray(batch))
    for b in range(5):
        expected = np.flatnonzero(batch[b])
        assert int(count[b]) == expected.size
        np.testing.assert_array_equal(np.asarray(idx[b])[: expected.size], expected)
        assert np.all(np.asarray(idx[b])[expected.size:] == 300)
