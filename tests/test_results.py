"""Results and sweeps by name (brainsim/_results.py, Network.set in brainsim/_set.py) and the
event-stream adapter (brainsim/_event_streams.py).

Truths: the closed-form LIF trajectory (a subthreshold neuron and its derivative with respect
to the bias current), the network rebuilt from scratch with the value ``set`` writes, separate
unbatched runs for batched ones, and hand-binned events for ``events_to_spikes``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brainsim as bs

DT = 0.1
KEY = jax.random.key(7)
N_E = 10


def network(I_e=None, weight=40.0, tau=5.0, layout=None):
    """Poisson input onto a LIF population with a spread of bias currents (pA)."""
    I_e = np.linspace(200.0, 450.0, N_E) if I_e is None else I_e
    lif = bs.LIF(C_m=250.0, tau_m=10.0, E_L=-70.0, V_th=-55.0, V_reset=-70.0, t_ref=2.0, I_e=I_e)
    exc = bs.Receptor(bs.ExponentialSynapse(tau=tau), bs.CurrentBased())
    edges = bs.connect.fixed_probability(20, N_E, 0.5, weight=weight, delay=0.5, seed=3)
    return bs.Network(
        [bs.Population("in", 20, bs.PoissonSource(80.0)),
         bs.Population("E", N_E, lif, receptors={"exc": exc})],
        [bs.Projection("in", "E", edges, receptor="exc", layout=layout)],
        dt=DT,
    )


RECORD = (bs.SpikeRaster(name="raster"), bs.SpikeList("E", 10_000, name="list"),
          bs.StateTrace("E", "v", neurons=[0, 9], every=4, name="v"), bs.PopulationRate())


@pytest.fixture(scope="module")
def result():
    return bs.simulate(network(), 60.0, key=KEY, record=RECORD)


# ------------------------------------------------------------------------------ by name


def test_monitor_names_address_recordings(result):
    assert result["v"] is result.recordings[2]
    np.testing.assert_array_equal(result["raster"]["E"], result.recordings[0]["E"])
    with pytest.raises(KeyError, match=r"unknown monitor name 'rastr'.*Did you mean 'raster'"):
        result["rastr"]
    with pytest.raises(ValueError, match="two monitors are named 'v'"):
        bs.simulate(network(), 1.0, key=KEY,
                    record=(bs.StateTrace("E", "v", name="v"), bs.SpikeRaster(name="v")))
    with pytest.raises(TypeError, match="`name` must be a name"):
        bs.StateTrace("E", "v", name=3)


def test_per_neuron_counts_agree_across_monitors_and_with_per_step(result):
    _, ids = result.spikes("E")
    per_neuron = result.spike_counts("E", per="neuron")
    assert per_neuron.shape == (N_E,) and per_neuron.dtype == np.int64
    np.testing.assert_array_equal(per_neuron, np.bincount(ids, minlength=N_E))
    # SpikeList alone gives the same counts as the raster (a different recording path).
    listed = bs.simulate(network(), 60.0, key=KEY, record=(bs.SpikeList("E", 10_000),))
    np.testing.assert_array_equal(listed.spike_counts("E", per="neuron"), per_neuron)
    assert per_neuron.sum() == result.spike_counts("E").sum() > 0
    # The per-step meaning is unchanged (the default).
    assert result.spike_counts("E").shape == (600,)
    # The neurons with the larger bias fire more (the inputs are shared, the bias rises).
    assert per_neuron[-1] > per_neuron[0]
    # Sources: a channel emitting 2 spikes in a step counts 2.
    _, src_ids = result.spikes("in")
    np.testing.assert_array_equal(result.spike_counts("in", per="neuron"),
                                  np.bincount(src_ids, minlength=20))


def test_isolated_lif_count_matches_closed_form():
    # Constant bias, no input: the period is t_ref + tau ln((V_inf - V_reset)/(V_inf - V_th)),
    # resolved to whole steps (a spike in the first step with V >= V_th, refractory t_ref/dt).
    I_e = np.array([400.0, 600.0, 900.0])
    lif = bs.LIF(C_m=250.0, tau_m=10.0, E_L=-70.0, V_th=-55.0, V_reset=-70.0, t_ref=2.0, I_e=I_e)
    net = bs.Network([bs.Population("N", 3, lif)], dt=DT)
    res = bs.simulate(net, 200.0, key=KEY, record=(bs.SpikeRaster(),))
    v_inf = -70.0 + I_e * 10.0 / 250.0
    steps_to_threshold = np.ceil(10.0 * np.log((v_inf + 70.0) / (v_inf + 55.0)) / DT - 1e-9)
    period = steps_to_threshold + 2.0 / DT
    expected = np.floor((2000 - steps_to_threshold) / period) + 1
    np.testing.assert_allclose(res.spike_counts("N", per="neuron"), expected, atol=1)
    np.testing.assert_allclose(res.rate("N"), res.spike_counts("N", per="neuron").mean() / 0.2)


def test_errors_name_what_was_recorded(result):
    with pytest.raises(ValueError, match=r"No StateTrace\('E', 'w'\).*recorded: .*trace 'E', 'v'"):
        result.trace("E", "w")
    with pytest.raises(KeyError, match="unknown population 'e'.*Did you mean 'E'"):
        result.spikes("e")
    only_rate = bs.simulate(network(), 1.0, key=KEY, record=(bs.PopulationRate(),))
    with pytest.raises(ValueError, match=r"No spike monitor.*PopulationRate.*SpikeRaster"):
        only_rate.spike_counts("E", per="neuron")
    with pytest.raises(ValueError, match="`per` must be 'step'"):
        result.spike_counts("E", per="neurons")
    with pytest.raises(ValueError, match=r"No WeightTrace\('x'\)"):
        result.weight_trace("x")


def test_batched_results_have_the_batch_axis_in_front():
    net = network()
    drives = jnp.stack([jnp.full(N_E, 250.0), jnp.full(N_E, 420.0), jnp.full(N_E, 600.0)])

    def run(i_e):
        return bs.simulate(net.set("E", I_e=i_e), 40.0, key=KEY, record=RECORD, check=False)

    batched = bs.jit(jax.vmap(run))(drives)
    assert batched.batch_shape == (3,)
    times, ids = batched.spikes("E")
    assert len(times) == len(ids) == 3
    rates = batched.rate("E")
    assert rates.shape == (3,) and rates[0] < rates[2]
    assert batched.spike_counts("E", per="neuron").shape == (3, N_E)
    assert batched.spike_counts("E").shape == (3, 400)
    t_v, v = batched.trace("E", "v")
    assert v.shape == (3, 100, 2) and t_v.shape == (100,)
    for b in range(3):
        one = run(drives[b]).raise_if_failed()
        np.testing.assert_array_equal(ids[b], one.spikes("E")[1])
        np.testing.assert_allclose(times[b], one.spikes("E")[0])
        np.testing.assert_array_equal(batched.spike_counts("E", per="neuron")[b],
                                      one.spike_counts("E", per="neuron"))
        assert rates[b] == pytest.approx(one.rate("E"))
        np.testing.assert_allclose(v[b], one.trace("E", "v")[1], rtol=1e-6, atol=1e-4)


# ------------------------------------------------------------------------------ sweeps


def test_set_under_vmap_equals_a_loop_of_separate_runs():
    net = network()

    def counts(i_e):
        res = bs.simulate(net.set("E", I_e=i_e), 40.0, key=KEY, record=(bs.PopulationRate(),),
                          check=False)
        return res.recordings[0]["E"]

    drives = jnp.linspace(150.0, 600.0, 5)
    swept = np.asarray(bs.jit(jax.vmap(counts))(drives))
    looped = np.stack([np.asarray(counts(float(d))) for d in drives])
    np.testing.assert_array_equal(swept, looped)
    assert swept.sum(axis=1)[0] < swept.sum(axis=1)[-1]


def test_set_equals_building_the_network_with_the_value():
    record = (bs.SpikeRaster(), bs.StateTrace("E", "exc.g", every=5))
    I_e = np.linspace(300.0, 380.0, N_E)
    built = bs.simulate(network(I_e=I_e, weight=25.0, tau=3.0), 40.0, key=KEY, record=record)
    set_ = network().set("E", I_e=I_e, **{"exc.tau": 3.0}).set("in->E:exc", weights=25.0)
    res = bs.simulate(set_, 40.0, key=KEY, record=record)
    for pop in ("in", "E"):
        for a, b in zip(res.spikes(pop), built.spikes(pop), strict=True):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(res.trace("E", "exc.g")[1], built.trace("E", "exc.g")[1])
    # Per-synapse weights (Sparse, from a distribution): the scalar goes to every synapse.
    spread = network(weight=lambda rng, n: rng.uniform(20.0, 60.0, n))
    assert spread.projection("in->E:exc").connectivity.weights.ndim == 2
    res2 = bs.simulate(spread.set("in->E:exc", weights=25.0).set("E", I_e=I_e, **{"exc.tau": 3.0}),
                       40.0, key=KEY, record=record)
    np.testing.assert_array_equal(res2.spikes("E")[1], built.spikes("E")[1])
    # Dense: the matrix in its storage shape (zeros stay absent synapses).
    dense = network(layout=bs.Dense(), weight=lambda rng, n: rng.uniform(20.0, 60.0, n))
    W = np.asarray(dense.projection("in->E:exc").connectivity.weights)
    dense = dense.set("in->E:exc", weights=25.0 * (W != 0)).set("E", I_e=I_e, **{"exc.tau": 3.0})
    res3 = bs.simulate(dense, 40.0, key=KEY, record=record)
    np.testing.assert_array_equal(res3.spikes("E")[1], built.spikes("E")[1])
    with pytest.raises(ValueError, match=r"`weights` must have shape \(20, 10\); got \(10, 20\)"):
        dense.set("in->E:exc", weights=W.T)


def test_set_is_pure_and_keeps_dtype():
    net = network()
    new = net.set("E", I_e=1)
    assert float(np.max(net.population("E").model.I_e)) == 450.0  # unchanged
    i_e = new.population("E").model.I_e
    assert i_e.dtype == net.population("E").model.I_e.dtype and float(i_e) == 1.0


def test_grad_through_set_matches_closed_form():
    # Subthreshold LIF from rest: V(t) = E_L + I_e R (1 - exp(-t / tau)), R = tau / C, so
    # dV(t)/dI_e = (tau / C)(1 - exp(-t / tau)) mV/pA (exact integration: no dt error).
    lif = bs.LIF(C_m=250.0, tau_m=10.0, E_L=-70.0, V_th=0.0, V_reset=-70.0, I_e=100.0)
    net = bs.Network([bs.Population("N", 1, lif)], dt=DT)

    def final_v(i_e):
        res = bs.simulate(net.set("N", I_e=i_e), 20.0, key=KEY, record=(bs.StateTrace("N", "v"),))
        return res.recordings[0][-1, 0]  # V at the start of the last step: t = 19.9 ms

    t = 19.9
    g = jax.grad(final_v)(100.0)
    np.testing.assert_allclose(g, 10.0 / 250.0 * (1 - np.exp(-t / 10.0)), rtol=1e-4)
    np.testing.assert_allclose(final_v(100.0), -70.0 + 4.0 * (1 - np.exp(-t / 10.0)), rtol=1e-5)


def test_set_errors():
    net = network()
    with pytest.raises(KeyError, match="unknown population or projection 'EE'.*Did you mean 'E'"):
        net.set("EE", I_e=1.0)
    with pytest.raises(KeyError, match="unknown parameter of population 'E'.*'i_e'.*Did you mean 'I_e'"):
        net.set("E", i_e=1.0)
    with pytest.raises(KeyError, match="'exc.tau'"):  # listed among the valid names
        net.set("E", **{"exc.taus": 1.0})
    with pytest.raises(KeyError, match="Did you mean 'weights'"):
        net.set("in->E:exc", weight=1.0)
    with pytest.raises(ValueError, match=r"`I_e` must have shape \(\) or \(10,\); got \(3,\)"):
        net.set("E", I_e=np.ones(3))
    with pytest.raises(ValueError, match="`I_e` must be finite"):
        net.set("E", I_e=np.nan)
    with pytest.raises(ValueError, match="give the parameters to set"):
        net.set("E")
    with pytest.raises(ValueError, match="Dense projection.*ambiguous"):
        network(layout=bs.Dense()).set("in->E:exc", weights=1.0)
    with pytest.raises(ValueError, match=r"`rate` must be a scalar or have shape \(20,\)"):
        net.set("in", rate=np.ones(3))


# ------------------------------------------------------------------------------ events

EVENT_DTYPE = [("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "?")]  # tonic's fields, t in µs
TONIC_DTYPES = [EVENT_DTYPE, [("x", int), ("y", int), ("t", int), ("p", int)],
                [("x", int), ("y", int), ("t", float), ("p", int)]]  # the three tonic uses


@pytest.mark.parametrize("dtype", TONIC_DTYPES)
def test_events_binned_with_counts_and_documented_channel(dtype):
    sensor = (3, 2, 2)
    ev = np.zeros(6, dtype=dtype)
    ev["x"] = [0, 2, 2, 1, 0, 2]
    ev["y"] = [0, 1, 1, 0, 1, 1]
    ev["p"] = [True, False, False, True, False, True]
    ev["t"] = [0, 99, 50, 100, 250, 299]  # dt 0.1 ms = 100 µs: steps 0, 0, 0, 1, 2, 2
    src = bs.events_to_spikes(ev, dt=DT, sensor_size=sensor)
    counts = np.asarray(src.spikes)
    assert counts.shape == (3, 12)
    expected = np.zeros((3, 12))
    for x, y, t, p in ev.tolist():
        expected[int(t) // 100, (x * 2 + y) * 2 + int(p)] += 1
    np.testing.assert_array_equal(counts, expected)
    assert counts[0, (2 * 2 + 1) * 2 + 0] == 2  # two events of one channel in one step


def test_events_round_trip_through_a_simulation():
    rng = np.random.default_rng(0)
    t_ms = np.sort(rng.uniform(0.0, 20.0, 300))
    channel = rng.integers(0, 16, 300)
    src = bs.events_to_spikes((t_ms, channel), dt=DT, n_channels=16, duration=25.0, t_start=5.0)
    assert src.spikes.shape == (250, 16)
    net = bs.Network([bs.Population("in", 16, src)], dt=DT)
    res = bs.simulate(net, 40.0, key=KEY, record=(bs.SpikeRaster(),))
    times, ids = res.spikes("in")
    k = np.floor(np.round(t_ms / DT, 9)).astype(int)
    order = np.lexsort((channel, k))
    np.testing.assert_array_equal(ids, channel[order])
    np.testing.assert_allclose(times, 5.0 + k[order] * DT, atol=1e-9)
    # The same events as an (N, 2) array in seconds.
    same = bs.events_to_spikes(np.stack([t_ms * 1e-3, channel], 1), dt=DT, n_channels=16,
                               duration=25.0, time_unit="s")
    np.testing.assert_array_equal(same.spikes, src.spikes)


def test_events_on_step_boundaries_fall_in_the_step_they_start():
    t = np.array([0.3, 0.7, 1.0])  # ms: 0.3 / 0.1 = 2.9999999999999996 in float64
    src = bs.events_to_spikes((t, np.zeros(3, int)), dt=DT, n_channels=1)
    np.testing.assert_array_equal(np.nonzero(np.asarray(src.spikes)[:, 0])[0], [3, 7, 10])


def test_events_errors():
    ev = np.zeros(2, dtype=EVENT_DTYPE)
    ev["x"] = [0, 5]
    with pytest.raises(ValueError, match=r"event 1 has x 5, outside 0..3"):
        bs.events_to_spikes(ev, dt=DT, sensor_size=(4, 1, 2))
    with pytest.raises(ValueError, match="need `sensor_size`"):
        bs.events_to_spikes(ev, dt=DT)
    with pytest.raises(ValueError, match="channel 4, outside 0..3"):
        bs.events_to_spikes(([0.0, 1.0], [1, 4]), dt=DT, n_channels=4)
    with pytest.raises(ValueError, match="time -1.0 ms < 0"):
        bs.events_to_spikes(([0.0, -1.0], [1, 2]), dt=DT, n_channels=4)
    with pytest.raises(ValueError, match="at or after `duration`"):
        bs.events_to_spikes(([0.0, 5.0], [1, 2]), dt=DT, n_channels=4, duration=5.0)
    with pytest.raises(ValueError, match="`time_unit` must be"):
        bs.events_to_spikes(([0.0], [1]), dt=DT, n_channels=4, time_unit="ns")
    polar = np.zeros(1, dtype=[("x", "<i2"), ("t", "<i8"), ("p", "<i1")])
    polar["p"] = -1
    with pytest.raises(ValueError, match="polarities must be 0..P-1"):
        bs.events_to_spikes(polar, dt=DT, sensor_size=(1, 1, 2))


def test_event_samples_batch_under_vmap():
    # Equal shapes from `duration`: a batch of samples is a vmap over the source's spikes.
    rng = np.random.default_rng(1)
    samples = [bs.events_to_spikes((rng.uniform(0, 9.9, 40), rng.integers(0, 8, 40)), dt=DT,
                                   n_channels=8, duration=10.0) for _ in range(3)]
    net = bs.Network([bs.Population("in", 8, samples[0])], dt=DT)

    def count(spikes):
        res = bs.simulate(net.set("in", spikes=spikes), 10.0, key=KEY,
                          record=(bs.PopulationRate(),), check=False)
        return res.recordings[0]["in"].sum()

    totals = jax.vmap(count)(jnp.stack([s.spikes for s in samples]))
    np.testing.assert_array_equal(totals, [40.0, 40.0, 40.0])
    assert eqx.tree_equal(net.set("in", spikes=samples[1].spikes).population("in").model.spikes,
                          samples[1].spikes)
