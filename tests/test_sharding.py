"""Multi-device simulation (brainsim/_sharding.py) against single-device runs.

The device count of JAX's CPU backend is fixed when jax is first imported
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``), so the equality checks run in a
subprocess with 8 host devices and meshes of 2, 4 and 8 of them.

What "the same" means. The sharded program applies the same floating-point operations to
every neuron and sums every neuron's synaptic input in the same order as the single-device
program, so spikes, recordings and state are equal bit for bit *given the same compiled
arithmetic*. XLA may contract ``a*b + c`` into a fused multiply-add depending on how it fuses
the surrounding program, which differs between the two programs and changes membrane
potentials in the last bit (and, in a chaotic network, spike trains after long enough). The
exactness test therefore compiles without FMA instructions (``--xla_cpu_max_isa=AVX``), where
any difference would be a real partitioning error (a wrong neuron block, a synapse on the
wrong device or in another order, a random draw that depends on the partition). A second
subprocess keeps the default flags and checks the practical claim: same spikes over a
short run, potentials within float32 rounding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brainsim as bs

WORKER = textwrap.dedent(
    r"""
    import json, sys
    import jax, numpy as np
    import brainsim as bs

    def network():
        rng = np.random.default_rng(7)
        n_e, n_i = 83, 21  # not multiples of 2, 4 or 8: padding neurons on some devices
        lif_e = bs.LIF(C_m=200.0, tau_m=20.0, E_L=-60.0, V_th=-50.0, V_reset=-60.0,
                       t_ref=2.0, I_e=rng.uniform(120.0, 200.0, n_e))  # per-neuron parameter
        lif_i = bs.LIF(C_m=200.0, tau_m=10.0, E_L=-60.0, V_th=-50.0, V_reset=-60.0, t_ref=1.0)
        rec = {"exc": bs.Receptor(bs.ExponentialSynapse(5.0), bs.ConductanceBased(0.0)),
               "inh": bs.Receptor(bs.ExponentialSynapse(10.0), bs.ConductanceBased(-80.0))}
        init = {"v": bs.init.Uniform(-60.0, -50.0)}
        pops = [
            bs.Population("P", 40, bs.PoissonSource(rng.uniform(10.0, 40.0, 40))),
            bs.Population("E", n_e, lif_e, receptors=rec, initial=init),
            bs.Population("I", n_i, lif_i, receptors=rec, initial=init,
                          currents=[bs.ConstantCurrent(rng.uniform(100.0, 180.0, n_i))]),
            bs.Population("Q", n_i, bs.PoissonSource(50.0)),  # a one-to-one drive of I
        ]
        def fp(n_pre, n_post, p, w, seed, delays):
            return bs.connect.fixed_probability(
                n_pre, n_post, p, weight=lambda r, m: r.uniform(0.5, 1.5, m) * w,
                delay=(lambda r, m: r.choice(delays, m)) if len(delays) > 1 else delays[0],
                seed=seed)
        projs = [
            bs.Projection("E", "E", fp(n_e, n_e, 0.1, 3.0, 1, [0.1, 0.4, 1.5]), receptor="exc"),
            bs.Projection("E", "I", fp(n_e, n_i, 0.2, 3.0, 2, [0.1, 0.3]), receptor="exc",
                          layout=bs.CSR(block_size=16)),
            bs.Projection("I", "I", fp(n_i, n_i, 0.2, 20.0, 4, [0.2, 0.6]), receptor="inh",
                          layout=bs.Sparse(implementation=bs.kernels.Implementation.REFERENCE)),
            bs.Projection("I", "E", fp(n_i, n_e, 0.2, 20.0, 3, [0.5]), receptor="inh",
                          stp=bs.TsodyksMarkram(U=0.3, tau_rec=200.0, tau_fac=50.0)),
            bs.Projection("P", "E", fp(40, n_e, 0.2, 2.0, 5, [1.0, 2.0]), receptor="exc"),
            bs.Projection("Q", "I", bs.connect.one_to_one(n_i, weight=lambda r, m: r.uniform(
                1.0, 3.0, m), seed=6), receptor="exc"),  # a PointwiseConnectivity, split
        ]
        return bs.Network(pops, projs, dt=0.1)

    def summary(result):
        out = {}
        for p in ("P", "E", "I"):
            t, i = result.spikes(p)
            out[p] = [np.round(t / 0.1).astype(int).tolist(), i.tolist()]
        out["rate"] = {p: np.asarray(result.spike_counts(p)).tolist() for p in ("E", "I")}
        out["trace"] = result.trace("E", "v")[1].tolist()
        out["gtrace"] = result.trace("E", "exc.g")[1].tolist()
        out["spikelist"] = [a.tolist() for a in result.spikes("I")]
        leaves = jax.tree.leaves(result.state)
        out["state"] = [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(
            x.dtype, jax.dtypes.prng_key) else x).astype(float).ravel().tolist() for x in leaves]
        return out

    mode, duration = sys.argv[1], float(sys.argv[2])
    sizes = [int(s) for s in sys.argv[3].split(",")]
    net = network()
    record = (bs.SpikeRaster(("P", "E")), bs.SpikeList("I", 5000), bs.PopulationRate(),
              bs.StateTrace("E", "v", neurons=[0, 40, 82], every=3),
              bs.StateTrace("E", "exc.g", neurons=[1, 41, 82], every=2))
    key = jax.random.key(11)
    runs = {"single": summary(bs.simulate(net, duration, key=key, record=record))}
    for n in sizes:
        mesh = jax.make_mesh((n,), ("neurons",), devices=jax.devices()[:n])
        if n != 4:
            runs[f"vector{n}"] = summary(bs.simulate_sharded(net, duration, mesh=mesh, key=key,
                                                             record=record))
        if n == 2 and mode == "exact":  # shown with a progress bar: in parts (7 ms, then 2)
            import io
            bar = io.StringIO()
            runs["progress2"] = summary(bs.simulate(
                net, duration, key=key, record=record, partition=bs.Sharded(mesh),
                progress=bs.Progress(every_ms=7.0, file=bar)))
            runs["progress2_bar"] = bar.getvalue()
        else:  # compacted exchange; capacity 2 overflows often, exercising the fallback
            sharded = bs.ShardedNetwork(net, mesh, capacity=2)
            runs["compact4"] = summary(bs.simulate_sharded(sharded, duration, key=key,
                                                           record=record))
            runs["synapses4"] = list(sharded.synapses_per_device())
            runs["n_synapses"] = net.n_synapses
    print("RESULT" + json.dumps(runs))
    """
)


def _start_worker(mode: str, duration: float, sizes, flags: str):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count=8 {flags}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, mode, str(duration), ",".join(map(str, sizes))],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-4000:]
    line = next(x for x in out.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


@pytest.fixture(scope="module")
def runs():
    """Both workers at once (each compiles four or two programs; the machine has 2 cores)."""
    exact = _start_worker("exact", 30.0, (2, 4, 8), "--xla_cpu_max_isa=AVX")
    default = _start_worker("default", 30.0, (2,), "")
    return {"exact": _result(exact), "default": _result(default)}


@pytest.mark.parametrize("variant", ["vector2", "compact4", "vector8", "progress2"])
def test_sharded_run_equals_single_device(runs, variant):
    single, sharded = runs["exact"]["single"], runs["exact"][variant]
    # The network must do something for the comparison to mean anything.
    assert len(single["E"][0]) > 30 and len(single["I"][0]) > 10 and len(single["P"][0]) > 10
    for key in ("P", "E", "I", "rate", "trace", "gtrace", "spikelist"):
        assert sharded[key] == single[key], key
    assert len(sharded["state"]) == len(single["state"])
    for a, b in zip(sharded["state"], single["state"], strict=True):
        assert a == b


def test_progress_bar_of_a_partitioned_run_reaches_the_end(runs):
    assert "300/300" in runs["exact"]["progress2_bar"]


def test_synapses_split_by_postsynaptic_neuron(runs):
    # Every synapse stored exactly once, on the device of its target.
    assert sum(runs["exact"]["synapses4"]) == runs["exact"]["n_synapses"]
    assert min(runs["exact"]["synapses4"]) > 0


def test_sharded_run_default_flags(runs):
    single, sharded = runs["default"]["single"], runs["default"]["vector2"]
    for key in ("P", "E", "I"):
        assert sharded[key] == single[key], key
    # Potentials may differ by fused multiply-add rounding only (float32 ulp at 60 mV ~ 4e-6).
    np.testing.assert_allclose(sharded["trace"], single["trace"], rtol=0, atol=1e-4)


# ------------------------------------------------------------------- argument errors


def _small_network(layout=None, edges=None):
    """Ten LIF neurons onto themselves (``edges``: default p = 0.3)."""
    pop = bs.Population(
        "E",
        10,
        bs.LIF(),
        receptors={"exc": bs.Receptor(bs.ExponentialSynapse(5.0), bs.CurrentBased())},
    )
    if edges is None:
        edges = bs.connect.fixed_probability(10, 10, 0.3, weight=1.0, seed=0)
    return bs.Network(
        [pop], [bs.Projection("E", "E", edges, receptor="exc", layout=layout)], dt=0.1
    )


def _mesh(shape=(1,), names=("neurons",)):
    return jax.make_mesh(shape, names, devices=jax.devices()[:1])


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        (dict(mesh="cpu"), TypeError, "`mesh`"),
        (dict(), ValueError, "`mesh=`"),
        (dict(mesh=_mesh((1, 1), ("a", "b"))), ValueError, "`axis=`"),
        (dict(mesh=_mesh(), axis="columns"), ValueError, "`axis`"),
        (dict(mesh=_mesh(), capacity=0), ValueError, "`capacity`"),
        (dict(mesh=_mesh(), capacity=2.5), ValueError, "`capacity`"),
    ],
)
def test_bad_mesh_arguments_name_the_argument(kwargs, error, name):
    with pytest.raises(error, match=name):
        bs.simulate_sharded(_small_network(), 1.0, key=jax.random.key(0), **kwargs)


def test_sharded_network_fixes_its_mesh():
    sharded = bs.ShardedNetwork(_small_network(), _mesh())
    assert sharded.n_devices == 1
    with pytest.raises(ValueError, match="`mesh`"):
        bs.simulate_sharded(sharded, 1.0, mesh=_mesh(), key=jax.random.key(0))


def _same_as_one_device(net):
    net = eqx.tree_at(lambda n: n.populations[0].model.I_e, net, jnp.asarray(500.0))
    key = jax.random.key(0)
    record = (bs.SpikeRaster(), bs.StateTrace("E", "v"))
    one = bs.simulate(net, 20.0, key=key, record=record)
    parted = bs.simulate(net, 20.0, key=key, record=record, partition=bs.Sharded(_mesh()))
    assert one.spikes("E")[0].size >= 10
    for a, b in zip(jax.tree.leaves(parted.recordings), jax.tree.leaves(one.recordings),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(parted.state.plasticity),
                    jax.tree.leaves(one.state.plasticity), strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)


def test_procedural_connectivity_is_partitioned():
    # Formats without a split by postsynaptic neuron run on every device (each keeping its
    # block of the delivery); the multi-device equality is in tests/test_composability.py.
    rule = bs.connect.procedural_fixed_outdegree(10, 10, 3, weight=1.0, seed=0)
    _same_as_one_device(_small_network(edges=rule))


def test_plastic_projections_are_partitioned():
    net = _small_network()
    proj = net.projections[0]
    plastic = bs.Network(
        list(net.populations),
        [bs.Projection(proj.pre, proj.post, bs.connect.fixed_probability(10, 10, 0.3, weight=1.0,
                                                                          seed=0),
                       receptor="exc", plasticity=bs.plasticity.PairSTDP())],
        dt=0.1,
    )
    _same_as_one_device(plastic)


def test_network_argument_type():
    with pytest.raises(TypeError, match="`network`"):
        bs.simulate_sharded("net", 1.0, mesh=_mesh(), key=jax.random.key(0))


def test_non_finite_state_is_reported_after_the_run():
    # A NaN current poisons population "E" from step 0; the fault is raised as by simulate().
    # (ConstantCurrent refuses NaN, so it is put in after construction, as a traced value.)
    pops = [bs.Population("E", 5, bs.LIF(), currents=[bs.ConstantCurrent(0.0)])]
    net = bs.Network(pops, dt=0.1)
    net = eqx.tree_at(lambda n: n.populations[0].currents[0].amplitude, net, np.float32(np.nan))
    with pytest.raises(bs.SimulationError, match="'E' at step 0"):
        bs.simulate_sharded(net, 1.0, mesh=_mesh(), key=jax.random.key(0))
    result = bs.simulate_sharded(net, 1.0, mesh=_mesh(), key=jax.random.key(0), check=False)
    assert np.asarray(result.faults.first_nonfinite_step).tolist() == [0]


def test_diverged_state_is_reported_after_the_run():
    # AdEx adaptation beyond NEST's 1e6 pA at the first spike: reported as by simulate().
    pops = [bs.Population("A", 3, bs.AdEx(b=2e6, I_e=1000.0))]
    net = bs.Network(pops, dt=0.1)
    single = bs.simulate(net, 20.0, key=jax.random.key(0), check=False)
    result = bs.simulate_sharded(net, 20.0, mesh=_mesh(), key=jax.random.key(0), check=False)
    step = int(single.faults.first_out_of_bounds_step[0])
    assert step > 0
    for field in ("first_out_of_bounds_step", "out_of_bounds_variable", "out_of_bounds_value"):
        assert np.asarray(getattr(result.faults, field)).tolist() == np.asarray(
            getattr(single.faults, field)).tolist(), field
    with pytest.raises(bs.SimulationError, match=rf"'w' reached 2e\+06 pA at step {step} "):
        bs.simulate_sharded(net, 20.0, mesh=_mesh(), key=jax.random.key(0))


def test_recordings_keep_their_dtype_with_a_spike_generator_first():
    # The network's first state array is a SpikeGenerator's integer cursor.
    pops = [bs.Population("A", 2, bs.SpikeGenerator([0.1], [0])),
            bs.Population("B", 3, bs.LIF(I_e=400.0))]
    record = (bs.StateTrace("B", "v"), bs.StateTrace("B", "refractory"))
    result = bs.simulate_sharded(bs.Network(pops, dt=0.1), 1.0, mesh=_mesh(),
                                 key=jax.random.key(0), record=record)
    assert [r.dtype for r in result.recordings] == [np.float32, np.int32]


def test_partition_arguments_are_checked():
    net = _small_network()
    with pytest.raises(TypeError, match="`partition`.*Sharded"):
        bs.simulate(net, 1.0, key=jax.random.key(0), partition="devices")
    with pytest.raises(TypeError, match="`mesh`"):
        bs.Sharded("mesh")
    with pytest.raises(ValueError, match="`capacity`"):
        bs.Sharded(_mesh(), capacity=0)
    with pytest.raises(ValueError, match="`axis`"):
        bs.Sharded(_mesh(), axis="time")
    sharded = bs.ShardedNetwork(net, _mesh())
    with pytest.raises(ValueError, match="ShardedNetwork.*partition=None"):
        bs.simulate(sharded, 1.0, key=jax.random.key(0), partition=bs.Sharded(_mesh()))
