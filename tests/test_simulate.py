"""The simulation driver: recordings (sizes, agreement, sampling), run-time faults, exact
continuation, batching without recompilation."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brainsim as bs
from brainsim import connect

DT = 0.1


def _active_network(n=13, n_src=5, seed=0, poisson=False):
    """A source (random spike times, or Poisson) onto a recurrent LIF population with
    heterogeneous bias currents that fires irregularly at tens of Hz.

    The spike-generator version compiles faster (the Poisson sampler adds its inversion
    loops), so only the tests about randomness use ``poisson=True``.
    """
    rng = np.random.default_rng(seed)
    if poisson:
        source = bs.PoissonSource(400.0)
    else:
        times = rng.integers(0, 2000, 400) * DT
        ids = rng.integers(0, n_src, 400)
        # Repeated (time, index) pairs: sources can emit several spikes in a step.
        source = bs.SpikeGenerator(np.concatenate([times, times[:10]]),
                                   np.concatenate([ids, ids[:10]]))
    lif = bs.LIF(C_m=250.0, tau_m=10.0, E_L=-70.0, V_th=-55.0, V_reset=-70.0, t_ref=2.0,
                 I_e=rng.uniform(250.0, 500.0, n))
    rec = {"e": bs.Receptor(bs.ExponentialSynapse(2.0), bs.CurrentBased())}
    pops = [bs.Population("P", n_src, source),
            bs.Population("N", n, lif, receptors=rec,
                          initial={"v": bs.init.Uniform(-70.0, -55.0)})]
    projs = [bs.Projection("P", "N", connect.fixed_probability(n_src, n, 0.5, weight=150.0,
                                                               seed=seed), receptor="e"),
             bs.Projection("N", "N", connect.fixed_probability(n, n, 0.3, weight=-40.0,
                                                               delay=0.5, allow_self=False,
                                                               seed=seed + 1),
                           receptor="e", layout=bs.Dense())]
    return bs.Network(pops, projs, dt=DT)


def _steps_ids(times, ids, t0=0.0):
    order = np.lexsort((ids, times))
    return np.rint((times[order] - t0) / DT).astype(int), ids[order]


# --------------------------------------------------------------------------- recordings


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_recording_sizes_are_as_documented(precision, request):
    if precision == "float64":
        request.getfixturevalue("x64")
    net = _active_network()
    n_steps = 50
    monitors = (bs.SpikeRaster(), bs.SpikeList("N", 100), bs.StateTrace("N", "v", every=3),
                bs.StateTrace("N", "refractory"), bs.PopulationRate())
    res = bs.simulate(net, n_steps=n_steps, key=jax.random.key(0), record=monitors)
    # Documented: SpikeRaster n_steps * ceil(n/8) bytes per neuron population and n_steps * n
    # per source; SpikeList 9 bytes per entry; StateTrace samples x neurons x itemsize;
    # PopulationRate 4 bytes per population and step.
    assert monitors[0].nbytes(net, n_steps) == n_steps * (2 + 5)
    assert monitors[1].nbytes(net, n_steps) == 900
    actual = [
        sum(a.nbytes for a in res.recordings[0].values()),
        sum(x.nbytes for x in (res.recordings[1].steps, res.recordings[1].ids,
                               res.recordings[1].counts)),
        res.recordings[2].nbytes,
        res.recordings[3].nbytes,
        sum(a.nbytes for a in res.recordings[4].values()),
    ]
    assert res.recordings[2].shape == (17, 13)  # ceil(50 / 3) samples
    assert [m.nbytes(net, n_steps) for m in monitors] == actual


def test_state_trace_of_selected_neurons():
    net = _active_network()
    sel = bs.StateTrace("N", "v", neurons=[0, 2, 12], every=2)
    res = bs.simulate(net, n_steps=40, key=jax.random.key(0),
                      record=(bs.StateTrace("N", "v"), sel))
    full = np.asarray(res.recordings[0])
    np.testing.assert_array_equal(np.asarray(res.recordings[1]), full[::2][:, [0, 2, 12]])
    assert sel.nbytes(net, 40) == res.recordings[1].nbytes == 20 * 3 * 4


def test_spike_raster_and_spike_list_agree():
    net = _active_network()
    key = jax.random.key(1)
    raster = bs.simulate(net, 100.0, key=key, record=(bs.SpikeRaster(),))
    listed = bs.simulate(net, 100.0, key=key,
                         record=(bs.SpikeList("N", 5000), bs.SpikeList("P", 5000)))
    for pop in ("N", "P"):
        steps_r, ids_r = _steps_ids(*raster.spikes(pop))
        steps_l, ids_l = _steps_ids(*listed.spikes(pop))
        assert steps_r.size > 50
        np.testing.assert_array_equal(steps_r, steps_l)
        np.testing.assert_array_equal(ids_r, ids_l)
        np.testing.assert_array_equal(raster.spike_counts(pop), listed.spike_counts(pop))
    # Sources can emit several spikes per step: they appear once per spike.
    assert np.asarray(raster.recordings[0]["P"]).max() >= 2


def test_spike_list_and_raster_agree_on_a_continued_run():
    # result.spikes() must give absolute times whatever the monitor, also for a run that
    # continues from an earlier state (t_start = 50 ms).
    net = _active_network()
    first = bs.simulate(net, 50.0, key=jax.random.key(2))
    raster = bs.simulate(net, 50.0, state=first.state, record=(bs.SpikeRaster(("N",)),))
    listed = bs.simulate(net, 50.0, state=first.state, record=(bs.SpikeList("N", 5000),))
    t_r, i_r = raster.spikes("N")
    t_l, i_l = listed.spikes("N")
    assert t_r.size > 20 and t_r.min() >= 50.0
    np.testing.assert_allclose(np.sort(t_l), np.sort(t_r), atol=1e-6)
    np.testing.assert_array_equal(listed.spike_counts("N"), raster.spike_counts("N"))


def test_spike_list_overflow_names_the_capacity_needed():
    net = _active_network()
    full = bs.simulate(net, 50.0, key=jax.random.key(3), record=(bs.SpikeRaster(("N",)),))
    total = full.spikes("N")[0].size
    assert total > 20
    with pytest.raises(bs.SimulationError, match=rf"capacity >= {total}\b"):
        bs.simulate(net, 50.0, key=jax.random.key(3), record=(bs.SpikeList("N", 20),))
    res = bs.simulate(net, 50.0, key=jax.random.key(3), record=(bs.SpikeList("N", 20),),
                      check=False)
    assert int(res.faults.recording_overflow[0]) == total - 20
    # The first 20 spikes are kept, in order.
    t_full, i_full = full.spikes("N")
    order = np.lexsort((i_full, t_full))
    np.testing.assert_array_equal(np.asarray(res.recordings[0].ids), i_full[order][:20])
    np.testing.assert_array_equal(np.asarray(res.recordings[0].steps),
                                  np.rint(t_full[order][:20] / DT).astype(int))


@pytest.mark.parametrize("kwargs, name", [
    ({"chunk_size": 0}, "chunk_size"),  # recorded nothing
    ({"chunk_size": -4}, "chunk_size"),
    ({"chunk_size": 8.0}, "chunk_size"),
    ({"chunk_size": True}, "chunk_size"),
    ({"capacity": True}, "capacity"),
    ({"capacity": 0}, "capacity"),
    ({"capacity": 100.5}, "capacity"),
])
def test_spike_list_refuses_sizes_that_are_not_positive_integers(kwargs, name):
    with pytest.raises(ValueError, match=rf"SpikeList: `{name}` must be a positive integer .*; "
                       rf"got {kwargs[name]!r}"):
        bs.SpikeList("N", **{"capacity": 100, **kwargs})


@pytest.mark.parametrize("population", [3, "", None, ("N",)])
def test_spike_list_population_must_be_a_name(population):
    with pytest.raises((TypeError, ValueError), match=r"SpikeList: `population` must be a"):
        bs.SpikeList(population, 100)


def test_spike_raster_source_overflow_count_cannot_wrap():
    """Four channels emit 2**30 + 384 spikes in one step: 4 (2**30 + 128) = 2**32 + 512 spikes
    beyond the byte, which an int32 count wrapped to 512. It is now reported as at least the
    int32 maximum; smaller losses exactly."""
    def run(counts):
        src = bs.SpikeArray(np.asarray([counts], np.float32))
        net = bs.Network([bs.Population("G", len(counts), src)], dt=DT)
        return bs.simulate(net, n_steps=2, key=jax.random.key(0), record=(bs.SpikeRaster(),),
                           check=False)

    huge = run([2.0**30 + 384] * 4)
    assert int(huge.faults.recording_overflow[0]) == 2**31 - 1
    with pytest.raises(bs.SimulationError, match=r"at least 2147483647 spikes of spike sources"):
        huge.raise_if_failed()
    exact = run([300.0, 1000.0, 7.0])  # 45 + 745 spikes beyond 255
    with pytest.raises(bs.SimulationError, match=r"SpikeRaster: 790 spikes of spike sources"):
        exact.raise_if_failed()


def test_spike_list_counters_saturate_instead_of_wrapping():
    """A SpikeList that has seen 2**31 - 2 entries (hours of a large network) adds four more:
    its counts stop at the int32 maximum, nothing is written at wrapped positions, and the
    report says "at least"."""
    from brainsim._monitors import INT32_MAX

    net = bs.Network([bs.Population("G", 4, bs.SpikeArray(np.zeros((1, 4))))], dt=DT)
    monitor = bs.SpikeList("G", 2)
    near = jnp.int32(INT32_MAX - 1)
    buf = monitor.init(net, 1, jnp.float32)._replace(total=near, too_many=near)
    out = monitor.update(net, buf, None, {"G": jnp.full((4,), 300.0)}, jnp.int32(0))
    assert int(out.total) == int(out.too_many) == INT32_MAX
    assert int(monitor.overflow(out)) == INT32_MAX
    assert not np.any(np.asarray(out.counts))
    assert "at least 2147483647 spike entries" in monitor.describe_overflow(INT32_MAX)


def test_spike_raster_source_counts_are_exact():
    # "Exact, never overflows": a source channel may emit more than 255 spikes in one step (a
    # lumped Poisson input at 5 MHz, or a generator with repeated events); the raster must
    # either record them or the run must fail.
    times = np.concatenate([np.full(300, 0.5), [0.7, 0.7]])
    net = bs.Network([bs.Population("G", 2, bs.SpikeGenerator(times, np.zeros(302, int)))],
                     dt=DT)
    try:
        res = bs.simulate(net, n_steps=20, key=jax.random.key(0),
                          record=(bs.SpikeRaster(), bs.PopulationRate()))
    except bs.SimulationError:
        return
    assert int(np.sum(res.recordings[1]["G"])) == 302
    assert res.spikes("G")[0].size == 302


def _nan_network(bad=np.inf, size=2):
    # The last neuron of population B receives `bad` at step 37 (a TimedArray row): its state
    # must turn non-finite in that step; population A stays finite. (The last one: for sizes
    # that are not a multiple of 16 it is in the tail the native sum adds after its blocks.)
    # A TimedArray refuses non-finite values, so `bad` is put in after construction (as a
    # value computed under jit would reach it).
    current = bs.TimedArray(np.zeros((60, size)), dt=DT)
    pops = [bs.Population("A", 3, bs.LIF(I_e=100.0)),
            bs.Population("B", size, bs.LIF(), currents=[current])]
    values = current.values.at[37, size - 1].set(bad)
    net = bs.Network(pops, dt=DT)
    return eqx.tree_at(lambda n: n.populations[1].currents[0].values, net, values)


@pytest.mark.parametrize("size", [3001, 5000])  # 187 and 312 blocks of 16, then a tail
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_one_nonfinite_neuron_among_thousands_is_found_at_its_step(bad, size):
    """The check sums each state array; NaN and ±inf must show in the sum whatever the
    population size and sign (a +inf and a -inf give NaN, also found)."""
    net = _nan_network(bad, size=size)
    res = bs.simulate(net, 5.0, key=jax.random.key(0), check=False)
    np.testing.assert_array_equal(res.faults.first_nonfinite_step, [-1, 37])


def test_nonfinite_state_raises_naming_population_and_first_step():
    net = _nan_network()
    with pytest.raises(bs.SimulationError, match=r"population 'B' at step 37 \(t = 3\.7 ms\)"):
        bs.simulate(net, 5.0, key=jax.random.key(0))
    res = bs.simulate(net, 5.0, key=jax.random.key(0), check=False)
    np.testing.assert_array_equal(res.faults.first_nonfinite_step, [-1, 37])


def test_nonfinite_state_raises_under_vmap():
    net = _nan_network()

    def run(i_e):
        n = eqx.tree_at(lambda n: n.populations[0].model.I_e, net, i_e)
        return bs.simulate(n, 5.0, key=jax.random.key(0)).state.step

    with pytest.raises(bs.SimulationError, match=r"Non-finite state \(NaN, inf or .*\) first "
                       r"appeared in population 'B' at step 37 .* in batch member 0"):
        jax.block_until_ready(bs.jit(jax.vmap(run))(jnp.array([100.0, 200.0])))


def test_state_trace_every_k_samples_at_k_dt():
    net = _active_network()
    res = bs.simulate(net, n_steps=50, key=jax.random.key(4),
                      record=(bs.StateTrace("N", "v"), bs.StateTrace("N", "v", every=4)))
    t1, v1 = res.trace("N", "v")
    m, v4 = res.monitors[1], np.asarray(res.recordings[1])
    assert m.every == 4 and v4.shape == (13, 13)  # ceil(50 / 4) samples
    np.testing.assert_array_equal(v4, v1[::4])
    np.testing.assert_allclose(t1[::4], DT * np.arange(0, 50, 4))
    # The first sample is the initial state (time 0), as documented.
    np.testing.assert_array_equal(v1[0], net.init(jax.random.key(4)).populations["N"].v)


def test_state_trace_with_a_spike_generator_as_first_population():
    # The first state array of the network is a SpikeGenerator's integer cursor: recording
    # buffers take each variable's own dtype, not that one.
    pops = [bs.Population("A", 2, bs.SpikeGenerator([0.1, 0.2], [0, 1])),
            bs.Population("B", 3, bs.LIF(I_e=400.0))]
    net = bs.Network(pops, dt=DT)
    record = (bs.StateTrace("B", "v"), bs.StateTrace("B", "refractory"),
              bs.StateTrace("A", "counts"), bs.StateTrace("A", "cursor"))
    res = bs.simulate(net, n_steps=10, key=jax.random.key(0), record=record)
    assert [r.dtype for r in res.recordings] == [jnp.float32, jnp.int32, jnp.float32, jnp.int32]
    # Sampled at the start of a step: the counts the generator emitted in the step before.
    assert res.trace("A", "counts")[1][2:4].sum() == 2


def test_state_trace_records_synaptic_traces():
    """``StateTrace(population, "receptor.field")`` records a receptor's trace (here the
    conductance ``g`` of receptor ``e``), sampled like a neuron variable at the start of every
    ``every``-th step, and read with ``result.trace``."""
    net = _active_network()
    key = jax.random.key(4)
    record = (bs.StateTrace("N", "e.g"), bs.StateTrace("N", "e.g", neurons=[1, 3], every=2))
    res = bs.simulate(net, n_steps=60, key=key, record=record)
    step = bs.jit(net.step)
    state, expected = net.init(key), []
    for _ in range(60):
        expected.append(np.asarray(state.receptors["N"]["e"].kinetics.g))
        state, _ = step(state)
    times, g = res.trace("N", "e.g")
    np.testing.assert_allclose(times, DT * np.arange(60))
    assert np.abs(g).max() > 0  # the synapses were active
    np.testing.assert_array_equal(g, np.stack(expected))
    np.testing.assert_array_equal(res.recordings[1], g[::2][:, [1, 3]])
    assert record[0].nbytes(net, 60) == g.nbytes


@pytest.mark.parametrize("variable", ["e.h", "x.g", "w"])
def test_state_trace_of_an_unknown_variable_lists_the_valid_names(variable):
    with pytest.raises(KeyError, match=rf"StateTrace 'N': unknown variable of LIF population "
                       rf".*{variable!r}.* Valid: 'e\.g', 'refractory', 'v'\."):
        bs.simulate(_active_network(), n_steps=5, key=jax.random.key(0),
                    record=(bs.StateTrace("N", variable),))


# ------------------------------------------------------------------------- continuation


def test_continuing_from_result_state_is_bitwise_identical():
    # With a Poisson source: the randomness of step k must not depend on where a run started.
    net = _active_network(poisson=True)
    key = jax.random.key(5)
    long = bs.simulate(net, 60.0, key=key, record=(bs.SpikeRaster(),))
    a = bs.simulate(net, 30.0, key=key, record=(bs.SpikeRaster(),))
    b = bs.simulate(net, 30.0, state=a.state, record=(bs.SpikeRaster(),))
    for x, y in zip(jax.tree.leaves(long.state), jax.tree.leaves(b.state), strict=True):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(x, y)
    for pop in ("N", "P"):
        joined = np.concatenate([np.asarray(a.recordings[0][pop]),
                                 np.asarray(b.recordings[0][pop])])
        np.testing.assert_array_equal(np.asarray(long.recordings[0][pop]), joined)
    # Spike times of the continued run are absolute: they equal the long run's second half.
    t_long, i_long = long.spikes("N")
    t_b, i_b = b.spikes("N")
    late = t_long >= 30.0 - 1e-9
    np.testing.assert_allclose(np.sort(t_b), np.sort(t_long[late]), atol=1e-6)


# ------------------------------------------------------------------------------ batching


def test_vmap_over_drives_equals_separate_runs_without_recompiling():
    lif = bs.LIF(C_m=250.0, tau_m=10.0, E_L=-70.0, V_th=-55.0, V_reset=-70.0, t_ref=2.0)
    net = bs.Network([bs.Population("N", 4, lif, initial={"v": bs.init.Uniform(-70.0, -55.0)})],
                     dt=DT)
    traces = []

    def run(i_e):
        traces.append(1)  # Python side effect: runs once per trace
        n = eqx.tree_at(lambda n: n.populations[0].model.I_e, net, i_e)
        return bs.simulate(n, 50.0, key=jax.random.key(6), record=(bs.SpikeRaster(),
                                                                    bs.StateTrace("N", "v")))

    batched = bs.jit(jax.vmap(run))
    drives = jnp.linspace(300.0, 1000.0, 8)
    res = batched(drives)
    assert len(traces) == 1
    res2 = batched(drives + 17.0)
    assert len(traces) == 1, "a second call with new values must not retrace"
    assert not np.array_equal(np.asarray(res2.recordings[1]), np.asarray(res.recordings[1]))
    for i in range(8):
        single = run(drives[i])
        one = res.batch(i)
        np.testing.assert_array_equal(np.asarray(one.recordings[0]["N"]),
                                      np.asarray(single.recordings[0]["N"]))
        # Element-wise arithmetic: vmap must not change the numbers beyond float32 rounding.
        np.testing.assert_allclose(one.trace("N", "v")[1], single.trace("N", "v")[1],
                                   rtol=0, atol=1e-4)
        assert one.rate("N") == single.rate("N")
    assert res.batch(0).rate("N") < res.batch(7).rate("N")


def test_bs_jit_functions_compose_with_grad_and_jit():
    # bs.jit is documented as the way to wrap one's own functions around simulate; such a
    # function must still work under jax.grad and inside another jax.jit, like any jitted
    # function in JAX.
    f = bs.jit(lambda x: jnp.sin(x) * 2.0)
    np.testing.assert_allclose(jax.grad(f)(jnp.float32(0.3)), 2.0 * np.cos(0.3), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(f)(jnp.float32(0.3)), 2.0 * np.sin(0.3), rtol=1e-6)


# ----------------------------------------------------------------------------- unrolling


def test_unrolled_loop_gives_the_same_run():
    """``unroll`` changes the compiled loop only: spikes and traces are those of the plain loop,
    also when the unroll factor does not divide the step count and under checkpointing."""
    net = _active_network()
    key = jax.random.key(3)
    record = (bs.SpikeRaster(), bs.StateTrace("N", "v"))
    plain = bs.simulate(net, n_steps=203, key=key, record=record)
    assert np.asarray(plain.recordings[0]["N"]).sum() > 20  # the network is active
    for kwargs in ({"unroll": 4}, {"unroll": 3, "checkpoint": bs.Checkpointing(levels=2)}):
        run = bs.simulate(net, n_steps=203, key=key, record=record, **kwargs)
        np.testing.assert_array_equal(
            np.asarray(run.recordings[0]["N"]), np.asarray(plain.recordings[0]["N"])
        )
        np.testing.assert_allclose(
            np.asarray(run.recordings[1]), np.asarray(plain.recordings[1]), rtol=1e-6, atol=1e-4
        )


@pytest.mark.parametrize("bad", [0, -2, 2.5, True])
def test_unroll_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="`unroll` must be a positive integer.*got"):
        bs.simulate(_active_network(), n_steps=5, key=jax.random.key(0), unroll=bad)


# ------------------------------------------------------------------------- compiler options


def test_brainsim_compiler_options_do_not_change_results(x64):
    """brainsim compiles with its own XLA options (``brainsim._compile``); they may change
    speed, never results. A Hodgkin–Huxley neuron under current steps (two spikes), with its
    conductances traced as in a fit, simulated with those options equals the same simulation
    compiled with XLA's defaults. (With XLA's copy-insertion region analysis, an option tried
    for speed, the trace differed: this test caught that miscompile.)"""
    from brainsim._compile import COMPILER_OPTIONS

    drive = bs.StepCurrent([5.0, 20.0, 30.0], [3.0, 10.0, 0.0])

    def trace(g):
        model = bs.HodgkinHuxley(g_Na=g[0], g_K=g[1], g_L=g[2])
        net = bs.Network([bs.Population("N", 1, model, currents=[drive])], dt=0.05)
        r = bs.simulate(net, n_steps=800, key=jax.random.key(0), record=(bs.StateTrace("N", "v"),))
        return r.recordings[0]

    g = jnp.asarray([100.0, 42.0, 0.36])
    with_options = np.asarray(jax.jit(trace, compiler_options=COMPILER_OPTIONS)(g))
    defaults = np.asarray(jax.jit(trace)(g))
    assert with_options.max() > 0.0  # it spikes
    np.testing.assert_array_equal(with_options, defaults)
