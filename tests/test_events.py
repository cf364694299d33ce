"""Compacted spike events: ``spike_events`` + ``chunk_indices`` must list exactly the non-zero
entries, in ascending order, whatever the size, density and chunk size."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brainsim.kernels._events import chunk_indices, for_each_chunk, n_chunks, spike_events

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


@pytest.mark.parametrize("single", [False, True])
@pytest.mark.parametrize("n, density", [(1000, 0.01), (1000, 1.0), (40_000, 0.3), (33, 0.0)])
def test_for_each_chunk_visits_every_spike_once_in_order(single, n, density):
    """The CPU loop (chunks of 64) and the single call of the other platforms give the same
    ranks and indices: each spiking neuron once, at its rank."""
    values = jnp.asarray(_random_values(n, density, seed=7))
    expected = np.flatnonzero(np.asarray(values))

    @jax.jit
    def ranks(values):
        def body(idx, start, out):
            pos = start + jnp.arange(idx.shape[0])
            return out.at[jnp.where(idx < n, pos, n)].set(idx, mode="drop")

        return for_each_chunk(spike_events(values), 64, body, jnp.full(n, -1, jnp.int32),
                              single=single)  # fmt: skip

    got = np.asarray(ranks(values))
    np.testing.assert_array_equal(got[: expected.size], expected)
    assert np.all(got[expected.size:] == -1)


def test_gpu_form_of_the_reference_and_spike_list_equals_the_cpu_loop(monkeypatch):
    """The single-call form (what a GPU or TPU lowers) of the jnp reference deliveries and of
    the SpikeList monitor records and delivers exactly what the CPU loop does."""
    from brainsim.kernels import Implementation

    import brainsim as bs
    from brainsim import _monitors, networks

    # Chunks of one or two spikes: most steps need several chunks in the CPU loop.
    layout = bs.Sparse(chunk_size=1, implementation=Implementation.REFERENCE)
    net = networks.coba(n_neurons=400, p=0.1, seed=0, layout=layout)
    record = (bs.SpikeList("E", capacity=20_000, chunk_size=2), bs.StateTrace("I", "v"))

    def run():
        return bs.simulate(net, n_steps=1000, key=jax.random.key(1), record=record)

    loop = run()
    single = functools.partial(for_each_chunk, single=True)
    monkeypatch.setattr(_monitors, "for_each_chunk", single)
    monkeypatch.setattr(bs.kernels._reference, "for_each_chunk", single)
    jax.clear_caches()
    whole = run()
    assert loop.spikes("E")[1].size > 300  # enough spikes to need several chunks
    np.testing.assert_array_equal(loop.spikes("E")[1], whole.spikes("E")[1])
    np.testing.assert_array_equal(loop.spikes("E")[0], whole.spikes("E")[0])
    np.testing.assert_allclose(np.asarray(loop.recordings[1]), np.asarray(whole.recordings[1]),
                               rtol=1e-6, atol=1e-4)  # fmt: skip
