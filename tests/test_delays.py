"""Synaptic delays: a spike emitted in step t over a synapse of d steps reaches the receptor
exactly at the start of step t + d + 1 (Brian2's and NEST's timing: a zero delay acts in the
next step), for homogeneous and per-synapse delays, in both layouts."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import first_nonzero_row, generator_network, quiet_lif, receptor_history

import brainsim as bs
from brainsim import connect

DT = 0.1
TAU = 5.0
# chunk_size=3: when all 6 presynaptic neurons fire in one step (see below) they span two chunks.
LAYOUTS = {"dense": bs.Dense(), "sparse": bs.Sparse(chunk_size=3)}


def _expected_trace(spike_steps, spike_ids, edges, delay_steps, n_steps):
    """Reference: every (spike, synapse) pair adds w e^{-(j - a + 1) dt / tau} to the trace after
    step j >= a, a = emission step + delay steps + 1 (the value after step j is at t_{j+1})."""
    out = np.zeros((n_steps, edges.n_post))
    w = edges.weights_per_edge()
    d = np.broadcast_to(delay_steps, edges.pre.shape)
    j = np.arange(n_steps)
    for s, i in zip(spike_steps, spike_ids, strict=True):
        for e in np.flatnonzero(edges.pre == i):
            a = s + d[e] + 1
            out[:, edges.post[e]] += np.where(j >= a, w[e] * np.exp(-(j - a + 1) * DT / TAU), 0.0)
    return out


def _check(edges, delay_steps, spike_steps, spike_ids, layout, n_steps):
    net = generator_network(np.asarray(spike_steps) * DT, spike_ids, edges.n_pre, edges.n_post,
                            edges, kinetics=bs.ExponentialSynapse(TAU), layout=layout, dt=DT)
    got, _ = receptor_history(net, n_steps)
    expected = _expected_trace(spike_steps, spike_ids, edges, delay_steps, n_steps)
    # float32 trace (peak sums of a few weights of order 1): 1e-5 absolute is ~100 ulps, while a
    # one-step timing error changes a value by w (1 - e^{-dt/tau}) ≈ 2e-2 w or more.
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    return got


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("delay_ms", [None, 0.0, 0.1, 0.5, 1.7])  # None: zero delay
def test_homogeneous_delay_arrives_at_t_plus_d_plus_one(layout, delay_ms):
    d = 0 if delay_ms is None else round(delay_ms / DT)
    edges = connect.all_to_all(3, 2, weight=1.0, delay=delay_ms)
    spike_steps, spike_ids = [2, 5, 5, 13], [0, 1, 2, 2]
    got = _check(edges, d, spike_steps, spike_ids, LAYOUTS[layout], 60)
    # The first jump of every target is exactly at step 2 + d + 1.
    np.testing.assert_array_equal(first_nonzero_row(got), [3 + d, 3 + d])
    assert np.all(got[: 3 + d] == 0)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_per_synapse_delays_arrive_at_t_plus_d_plus_one(layout):
    rng = np.random.default_rng(7)
    n_pre, n_post = 6, 5
    # Unique pairs (Dense stores one delay per pair) with delays of 0..25 steps.
    pairs = rng.choice(n_pre * n_post, size=18, replace=False)
    pre, post = np.divmod(pairs, n_post)
    steps = rng.integers(0, 26, size=pre.size)
    steps[0] = 0
    edges = connect.from_arrays(pre, post, n_pre=n_pre, n_post=n_post,
                                weight=rng.uniform(0.5, 2.0, pre.size), delay=steps * DT)
    # Spikes spread over 120 steps: the 26-row ring buffer wraps around several times.
    # All six neurons also fire together in step 50.
    spike_steps = np.concatenate([rng.integers(0, 120, size=40), np.full(n_pre, 50)])
    spike_ids = np.concatenate([rng.integers(0, n_pre, size=40), np.arange(n_pre)])
    _check(edges, steps, spike_steps, spike_ids, LAYOUTS[layout], 160)


def test_single_spike_per_synapse_jump_step():
    # One presynaptic neuron, four targets with delays 0, 1, 7 and 20 steps: each target's
    # trace is zero until step t + d + 1 and jumps there.
    t = 4
    edges = connect.from_arrays([0, 0, 0, 0], [0, 1, 2, 3], n_pre=1, n_post=4, weight=1.0,
                                delay=np.array([0.0, 0.1, 0.7, 2.0]))
    for layout in (bs.Dense(), bs.Sparse()):
        net = generator_network([t * DT], [0], 1, 4, edges, layout=layout, dt=DT)
        g, _ = receptor_history(net, 40)
        np.testing.assert_array_equal(first_nonzero_row(g), [t + 1, t + 2, t + 8, t + 21])


def test_sparse_duplicate_pairs_with_different_delays():
    # The same pair connected twice with different delays (allowed in Sparse only).
    edges = connect.from_arrays([0, 0, 1, 1], [1, 1, 0, 1], n_pre=2, n_post=2,
                                weight=np.array([1.0, 2.0, 0.5, 1.5]),
                                delay=np.array([0.3, 1.2, 0.1, 0.3]))
    steps = np.array([3, 12, 1, 3])
    _check(edges, steps, [0, 2, 9], [0, 1, 0], bs.Sparse(), 40)
    with pytest.raises(ValueError, match="Sparse"):
        generator_network([0.0], [0], 2, 2, edges, layout=bs.Dense(), dt=DT)


@pytest.mark.parametrize(
    "layouts",
    [(bs.Sparse(), bs.Sparse(), bs.Dense()), (bs.Dense(), bs.Sparse(), bs.CSR())],
    ids=["sparse-first", "dense-first"],
)
def test_projections_into_one_receptor_add(layouts):
    # Three projections from the same source into the same receptor, delivered in turn: the
    # trace is the sum of the three. The first delivery also clears the ring row the receptor
    # read (fused into the kernel for Sparse, a separate clear for the others); a receptor no
    # projection feeds keeps a trace of zero.
    e1 = connect.one_to_one(3, weight=1.0, delay=0.2)
    e2 = connect.all_to_all(3, 3, weight=0.5, delay=0.4)
    e3 = connect.from_arrays([2], [0], n_pre=3, n_post=3, weight=4.0, delay=0.1)
    receptor = bs.Receptor(bs.ExponentialSynapse(TAU), bs.CurrentBased())
    pops = [
        bs.Population("src", 3, bs.SpikeGenerator([0.0, 0.3], [0, 2])),
        bs.Population("post", 3, quiet_lif(), receptors={"r": receptor, "unused": receptor}),
    ]
    projs = [
        bs.Projection("src", "post", e, receptor="r", layout=lay, name=f"p{i}")
        for i, (e, lay) in enumerate(zip((e1, e2, e3), layouts, strict=True))
    ]
    net = bs.Network(pops, projs, dt=DT)
    got, _ = receptor_history(net, 30)
    expected = sum(
        _expected_trace([0, 3], [0, 2], e, d, 30) for e, d in ((e1, 2), (e2, 4), (e3, 1))
    )
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    unused, _ = receptor_history(net, 30, receptor="unused")
    assert np.all(unused == 0)


@pytest.mark.parametrize("layout", [bs.Dense(), bs.Sparse()])
def test_round_delays(layout):
    # 0.17 ms is 1.7 steps: rejected, unless round_delays=True, which makes it 2 steps (so the
    # spikes of step 5 first act in step 5 + 2 + 1).
    edges = connect.one_to_one(2, weight=1.0, delay=0.17)
    with pytest.raises(ValueError, match=r"delay 0\.17 ms.*dt = 0\.1 ms"):
        generator_network([0.0], [0], 2, 2, edges, layout=layout, dt=DT)
    net = generator_network([0.5, 0.5], [0, 1], 2, 2, edges, layout=layout, dt=DT,
                            round_delays=True)
    g, _ = receptor_history(net, 20)
    np.testing.assert_array_equal(first_nonzero_row(g), [8, 8])


@pytest.mark.parametrize("layout", [bs.Dense(), bs.Sparse()])
def test_off_grid_per_synapse_delay_is_named(layout):
    delays = np.array([0.2, 0.3, 0.35])
    edges = connect.from_arrays([0, 1, 2], [0, 1, 2], n_pre=3, n_post=3, delay=delays)
    with pytest.raises(ValueError, match=r"delay 0\.35 ms.*dt = 0\.1 ms"):
        generator_network([0.0], [0], 3, 3, edges, layout=layout, dt=DT)


@pytest.mark.parametrize("layout", [bs.Dense(), bs.Sparse()])
@pytest.mark.parametrize(
    "delay, round_delays, message",
    [
        (0.05, False, r"delay 0\.05 ms is not a whole number"),
        (-0.1, False, r"`delay` must be >= 0 \(in ms\)"),
        (-0.07, True, r"`delay` must be >= 0 \(in ms\)"),
        (np.array([0.3, -0.2]), False, r"`delay` must be >= 0 \(in ms\)"),
        (np.array([0.3, np.nan]), False, r"`delay` contains non-finite values"),
        (np.inf, False, r"`delay` contains non-finite values"),
    ],
)
def test_negative_or_off_grid_delay_raises(layout, delay, round_delays, message):
    with pytest.raises(ValueError, match=message):
        edges = connect.one_to_one(2, delay=delay)
        generator_network([0.0], [0], 2, 2, edges, layout=layout, dt=DT,
                          round_delays=round_delays)


@pytest.mark.parametrize("layout", [bs.Dense(), bs.Sparse(), bs.CSR()])
def test_zero_and_rounded_to_zero_delays_act_in_the_next_step(layout):
    # Brian2 allows zero delays: a spike of step t acts in step t + 1, the earliest possible.
    edges = connect.one_to_one(2, weight=1.0, delay=np.array([0.0, 0.04]))
    net = generator_network([0.5, 0.5], [0, 1], 2, 2, edges, layout=layout, dt=DT,
                            round_delays=True)
    g, _ = receptor_history(net, 20)
    np.testing.assert_array_equal(first_nonzero_row(g), [6, 6])
