"""Learnable delays (brainsim.LearnableDelays): exact at whole steps and equal to the
event-driven layouts there, gradients equal to finite differences, a known delay recovered
from a voltage trace, and a timing task that only learned delays solve.

The gradient checks run in float64 with central differences (step 1e-6 ms, on a loss that is
smooth between whole steps: truncation O(h²) and rounding O(eps/h) are both below 1e-8
relative), so agreement is asserted to 1e-5.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import brainsim as bs
from brainsim import connect, fit

DT = 0.5


def _quiet_lif():
    return bs.LIF(C_m=200.0, tau_m=10.0, E_L=-65.0, V_th=1e6, V_reset=-65.0, t_ref=0.0)


def _network(layout, edges, times, indices, n_pre, n_post):
    # Spike generators -> subthreshold LIF through an excitatory conductance: smooth in the
    # delays between whole steps.
    rec = {"e": bs.Receptor(bs.ExponentialSynapse(2.0), bs.ConductanceBased(0.0))}
    pops = [bs.Population("src", n_pre, bs.SpikeGenerator(times, indices)),
            bs.Population("N", n_post, _quiet_lif(), receptors=rec)]
    return bs.Network(pops, [bs.Projection("src", "N", edges, receptor="e", layout=layout)],
                      dt=DT)


def _random_network(layout, delays, seed=0):
    # 4 spike generators -> 3 neurons, p = 0.7, plus a second synapse 0 -> 0 (a multapse: two
    # synapses of one pair with different delays must both arrive); ``delays(rng, k)`` in ms.
    rng = np.random.default_rng(seed)
    times = np.round(rng.uniform(0.0, 20.0, 40) / DT) * DT
    indices = rng.integers(0, 4, 40)
    edges = connect.fixed_probability(4, 3, 0.7, seed=1)
    pre = np.concatenate([edges.pre, [0]])
    post = np.concatenate([edges.post, [0]])
    edges = connect.from_arrays(pre, post, n_pre=4, n_post=3,
                                weight=rng.uniform(1.0, 3.0, pre.size),
                                delay=delays(rng, pre.size))
    return _network(layout, edges, times, indices, 4, 3)


def _voltage(net, n_steps=90):
    return bs.simulate(net, n_steps=n_steps, key=jax.random.key(0),
                       record=(fit.Trace("N"),)).recordings[0]


def _whole_step_delays(rng, k):
    return rng.integers(1, 9, k) * DT


def test_whole_step_delays_deliver_exactly_as_the_event_driven_layout():
    learned = _random_network(bs.LearnableDelays(5.0), _whole_step_delays)
    sparse = _random_network(bs.Sparse(), _whole_step_delays)
    v_learned, v_sparse = _voltage(learned), _voltage(sparse)
    assert float(jnp.abs(v_sparse + 65.0).max()) > 1.0  # the input matters
    # Same synapses, same rows: only the float summation order may differ.
    np.testing.assert_allclose(v_learned, v_sparse, rtol=0, atol=1e-5)
    # Rounding whole-step delays changes nothing.
    rounded = bs.round_learned_delays(learned)
    conn = rounded.projections[0].connectivity
    assert isinstance(conn, bs.EllConnectivity)
    assert conn.max_delay == sparse.projections[0].connectivity.max_delay
    np.testing.assert_allclose(_voltage(rounded), v_learned, rtol=0, atol=1e-5)
    np.testing.assert_allclose(learned.projections[0].connectivity.to_dense(),
                               sparse.projections[0].connectivity.to_dense(), rtol=1e-6)


def test_fractional_delays_interpolate_between_neighbouring_steps():
    # A delay of 2.3 steps is 0.7 of the response at 2 steps plus 0.3 of that at 3 steps
    # (linear in the input, so exact up to float rounding).
    times, indices = np.array([1.0, 6.0]), np.array([0, 0])

    def v(layout, delay):
        edges = connect.one_to_one(1, weight=200.0, delay=delay)
        rec = {"e": bs.Receptor(bs.ExponentialSynapse(2.0), bs.CurrentBased())}
        net = bs.Network([bs.Population("src", 1, bs.SpikeGenerator(times, indices)),
                          bs.Population("N", 1, _quiet_lif(), receptors=rec)],
                         [bs.Projection("src", "N", edges, receptor="e", layout=layout)], dt=DT)
        return _voltage(net, 40)

    # (Whole-step delays equal the event-driven layout: previous test. Same layout here, so
    # one compilation serves the three runs.)
    layout = bs.LearnableDelays(4.0)
    mixed = v(layout, 2.3 * DT) + 65.0
    expected = 0.7 * (v(layout, 2 * DT) + 65.0) + 0.3 * (v(layout, 3 * DT) + 65.0)
    assert float(jnp.abs(expected).max()) > 0.1
    np.testing.assert_allclose(mixed, expected, rtol=1e-5, atol=1e-6)
    # Rounding goes to the nearest step (2.3 -> 2, 2.6 -> 3 steps).
    net = _random_network(bs.LearnableDelays(5.0), _whole_step_delays)
    conn = net.projections[0].connectivity
    conn = eqx.tree_at(lambda c: c.delays, conn, conn.delays + 0.3 * DT)
    np.testing.assert_allclose(conn.rounded_edges().delay, np.asarray(conn.delays)
                               - 0.3 * DT, atol=1e-6)
    conn = eqx.tree_at(lambda c: c.delays, conn, conn.delays + 0.3 * DT)
    np.testing.assert_allclose(conn.rounded_edges().delay, np.asarray(conn.delays)
                               + 0.4 * DT, atol=1e-6)


def test_a_batch_of_delay_sets_runs_in_one_vmap():
    # Delays are array leaves: a vmap over networks that differ only in their delays is one
    # compiled program and equals the separate runs.
    net = _random_network(bs.LearnableDelays(5.0), _whole_step_delays)
    base = net.projections[0].connectivity.delays
    batch = jnp.stack([base, jnp.clip(base + 0.7, DT, 5.0), jnp.clip(base - 1.3, DT, 5.0)])

    def run(d):
        return _voltage(eqx.tree_at(lambda n: n.projections[0].connectivity.delays, net, d))

    together = bs.jit(jax.vmap(run))(batch)
    for i in range(batch.shape[0]):
        np.testing.assert_allclose(together[i], run(batch[i]), rtol=0, atol=1e-5)
    assert float(jnp.abs(together[1] - together[0]).max()) > 0.1  # the delays matter


def test_delay_and_weight_gradients_match_finite_differences(x64):
    # Fractional parts between 0.2 and 0.8 of a step: away from the kinks at whole steps.
    def delays(rng, k):
        return (rng.integers(1, 8, k) + rng.uniform(0.2, 0.8, k)) * DT

    net = _random_network(bs.LearnableDelays(5.0), delays)
    tr = fit.Trainable(net, lambda n: (n.projections[0].connectivity.delays,
                                       n.projections[0].connectivity.weights))

    def loss(params):
        return jnp.mean((_voltage(tr.build(params)) + 60.0) ** 2)

    params = tr.init()
    grads = jax.grad(loss)(params)
    loss = jax.jit(loss)
    for i, x in enumerate(params):
        fd = np.zeros(x.shape)
        for j in range(x.shape[0]):
            h = 1e-6
            up = tuple(p.at[j].add(h) if m == i else p for m, p in enumerate(params))
            down = tuple(p.at[j].add(-h) if m == i else p for m, p in enumerate(params))
            fd[j] = (float(loss(up)) - float(loss(down))) / (2 * h)
        np.testing.assert_allclose(grads[i], fd, rtol=1e-5, atol=1e-8 * np.abs(fd).max())
        assert np.all(np.abs(fd) > 0)  # every delay and weight matters


def test_a_known_delay_is_recovered_from_a_voltage_trace(x64):
    # Target: event-driven network with delays 3.0 and 6.5 ms; fit from 5.0 and 4.0 ms.
    # Measured: 3.0023 and 6.5011 ms after 80 Adam steps (loss 0.13 -> 2e-5 mV²).
    times, indices = np.array([2.0, 11.0, 25.0, 5.0, 18.0, 30.0]), np.array([0, 0, 0, 1, 1, 1])
    true = np.array([3.0, 6.5])

    def network(layout, delay):
        return _network(layout, connect.one_to_one(2, weight=3.0, delay=delay), times, indices,
                        2, 2)

    target = _voltage(network(bs.Sparse(), true), 100)
    start = network(bs.LearnableDelays(10.0), np.array([5.0, 4.0]))
    tr = fit.Trainable(start, lambda n: n.projections[0].connectivity.delays,
                       fit.Interval(DT, 10.0))

    def loss(params, batch, key):
        return fit.voltage_mse(_voltage(tr.build(params), 100), target)

    result = fit.fit(loss, tr.init(), optax.adam(0.1), steps=80, progress=False)
    np.testing.assert_allclose(tr.values(result.params), true, atol=0.01)  # 1/50 of a step
    rounded = bs.round_learned_delays(tr.build(result.params))
    np.testing.assert_allclose(_voltage(rounded, 100), target, atol=1e-9)


# ---------------------------------------------------------------------- a timing task

T_TASK = 50
DELTAS = np.array([-12, -4, 4, 12])  # ms between the spikes of input B and input A


def _timing_data(n, seed):
    # Two inputs spike once each; the class is the interval t_B - t_A (±1 ms jitter per
    # spike, random onset). Patterns of classes ±Δ are time-reversed copies of each other.
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(DELTAS), n)
    centre = rng.integers(14, 20, n)
    t_a = centre - DELTAS[y] // 2 + rng.integers(-1, 2, n)
    t_b = centre + DELTAS[y] // 2 + rng.integers(-1, 2, n)
    x = np.zeros((n, T_TASK, 2), np.float32)
    x[np.arange(n), t_a, 0] = 1.0
    x[np.arange(n), t_b, 1] = 1.0
    return x, y


def _timing_network():
    # 2 inputs -> 4 leaky readouts (one per class, logits = peak membrane potential), all to
    # all, initial delays 9-11 ms.
    rng = np.random.default_rng(0)
    readout = bs.LIF(C_m=100.0, tau_m=5.0, E_L=0.0, V_th=1e6, V_reset=0.0, t_ref=0.0)
    rec = {"e": bs.Receptor(bs.ExponentialSynapse(3.0), bs.CurrentBased())}
    edges = connect.all_to_all(2, 4, weight=100.0, delay=rng.uniform(9.0, 11.0, 8))
    pops = [bs.Population("in", 2, bs.SpikeArray(np.zeros((T_TASK, 2), np.float32))),
            bs.Population("out", 4, readout, receptors=rec)]
    proj = bs.Projection("in", "out", edges, receptor="e", layout=bs.LearnableDelays(20.0))
    return bs.Network(pops, [proj], dt=1.0)


def _peak_voltages(net, x):
    def one(xi):
        n = eqx.tree_at(lambda m: m.populations[0].model.spikes, net, xi)
        return bs.simulate(n, n_steps=T_TASK + 25, key=jax.random.key(0),
                           record=(fit.Trace("out"),)).recordings[0]

    return jnp.max(jax.vmap(one)(x), axis=-2)


def test_learned_delays_beat_fixed_delays_on_a_timing_task():
    # Measured (80 Adam steps, batch 64): learned delays 100 % test accuracy, fixed delays
    # (weights only, same start) 25-50 % (50 % = the size of Δ told apart, not its sign).
    # Learned d_A - d_B: -13.8, -3.9, 4.0, 13.3 ms (Δ = -12, -4, 4, 12): the outer classes are
    # only pushed away from the inner ones by the cross-entropy, not pinned to ±12.
    net = _timing_network()
    x_train, y_train = _timing_data(256, 1)
    x_test, y_test = _timing_data(256, 2)
    conn = lambda n: n.projections[0].connectivity  # noqa: E731
    accuracies = {}
    for learn in (True, False):
        if learn:
            tr = fit.Trainable(net, lambda n: (conn(n).weights, conn(n).delays),
                               (fit.Identity(), fit.Interval(1.0, 20.0)))
        else:
            tr = fit.Trainable(net, lambda n: conn(n).weights)

        def loss(params, batch, key, tr=tr):
            x, y = batch
            return fit.membrane_cross_entropy(_peak_voltages(tr.build(params), x)[:, None], y)

        result = fit.fit(loss, tr.init(), optax.adam(0.1), steps=80, data=(x_train, y_train),
                         batch_size=64, seed=0, progress=False)
        trained = tr.build(result.params)
        peaks = bs.jit(_peak_voltages)(trained, jnp.asarray(x_test))
        accuracies[learn] = float(fit.accuracy(peaks, y_test))
        if learn:
            d = np.asarray(conn(trained).delays).reshape(2, 4)  # rows: inputs A, B
            np.testing.assert_allclose(d[0] - d[1], DELTAS, atol=2.5)
            assert np.all(np.diff(d[0] - d[1]) > 5.0)
            # Event-driven inference with rounded delays keeps the accuracy.
            rounded = bs.round_learned_delays(trained)
            peaks = bs.jit(_peak_voltages)(rounded, jnp.asarray(x_test))
            assert float(fit.accuracy(peaks, y_test)) >= 0.95
    assert accuracies[True] >= 0.95, accuracies
    assert accuracies[False] <= 0.65, accuracies
    assert accuracies[True] - accuracies[False] >= 0.3


def test_errors_name_the_argument():
    edges = connect.one_to_one(2, weight=1.0, delay=3.0)
    with pytest.raises(ValueError, match="max_delay"):
        bs.LearnableDelays(-1.0)
    with pytest.raises(ValueError, match="shorter than one step"):
        _network(bs.LearnableDelays(0.4), edges, [1.0], [0], 2, 2)
    with pytest.raises(ValueError, match="outside"):
        _network(bs.LearnableDelays(2.0), edges, [1.0], [0], 2, 2)
    net = _network(bs.LearnableDelays(4.0), edges, [1.0], [0], 2, 2)
    with pytest.raises(TypeError, match="layout"):
        bs.round_learned_delays(net, bs.LearnableDelays(4.0))
