"""The monitor protocol (brainsim/_monitors.py): a monitor written outside the package, with
only the minimal methods, works in every driver and gives the numbers plain ``simulate`` gives:
``run_long`` streams it (through a crash and resume), ``simulate_sharded`` shows it the whole
network's state; WeightTrace streams like every built-in monitor.

The user monitor is the mean membrane potential of a population per step; its truth is the
mean of a StateTrace of every neuron (a different code path: a carried buffer, host-side
mean). Sharded runs need several host devices, fixed when jax is first imported, so they run
in a subprocess (as in tests/test_sharding.py).
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
from test_long_run import assert_same_files, crash_in_chunk

import brainsim as bs
from brainsim import plasticity as pl

DT = 0.1
DURATION = 30.0  # ms = 300 steps
CHUNK = 6.0  # ms = 60 steps: 5 chunks
KEY = jax.random.key(3)


class MeanVoltage(bs.AbstractMonitor):
    """Mean membrane potential of ``population`` at the start of every step (mV): only the
    minimal methods (per_step, nbytes, describe)."""

    population: str = eqx.field(static=True)

    def per_step(self, network, state_before, spikes, k):
        return jnp.mean(network.population_state(state_before, self.population).v)

    def nbytes(self, network, n_steps):
        return 4 * n_steps

    def describe(self, network, n_steps):
        return f"MeanVoltage {self.population}: {4 * n_steps / 1e6:.2f} MB"


class SpikesPerStep(bs.AbstractMonitor):
    """Spikes of ``population`` per step, written into a carried ``(n_steps,)`` buffer (the
    buffer path of the default streaming: one row per step)."""

    population: str = eqx.field(static=True)

    def init(self, network, n_steps, dtype):
        return jnp.zeros((n_steps,), jnp.int32)

    def update(self, network, buffer, state_before, spikes, k):
        return buffer.at[k].set(jnp.sum(spikes[self.population] != 0, dtype=jnp.int32))

    def nbytes(self, network, n_steps):
        return 4 * n_steps

    def describe(self, network, n_steps):
        return f"SpikesPerStep {self.population}"


class FinalVoltage(bs.AbstractMonitor):
    """The potentials after the run (a buffer overwritten every step): not one row per step,
    so it cannot be streamed by default."""

    population: str = eqx.field(static=True)

    def init(self, network, n_steps, dtype):
        return jnp.zeros((network.population(self.population).size,), jnp.float32)

    def update(self, network, buffer, state_before, spikes, k):
        return network.population_state(state_before, self.population).v

    def nbytes(self, network, n_steps):
        return 4 * network.population(self.population).size

    def describe(self, network, n_steps):
        return f"FinalVoltage {self.population}"


class ChunkTotals(bs.AbstractMonitor):
    """The number of spikes in a chunk: one row per chunk, by its own ``streams`` and
    ``rows``."""

    population: str = eqx.field(static=True)

    def init(self, network, n_steps, dtype):
        return jnp.zeros((), jnp.int32)

    def update(self, network, buffer, state_before, spikes, k):
        return buffer + jnp.sum(spikes[self.population] != 0, dtype=jnp.int32)

    def nbytes(self, network, n_steps):
        return 4

    def describe(self, network, n_steps):
        return f"ChunkTotals {self.population}"

    def streams(self, network, recording, n_steps):
        return (bs.Stream("total", "<i4", every=None),)

    def rows(self, network, recording, k0):
        return {"total": np.asarray(recording).reshape(1)}


def network():
    """Poisson input onto a recurrent LIF population through a plastic (STDP) projection."""
    n = 12
    lif = bs.LIF(C_m=250.0, tau_m=10.0, E_L=-70.0, V_th=-55.0, V_reset=-70.0, t_ref=2.0,
                 I_e=np.linspace(300.0, 420.0, n))
    rec = {"e": bs.Receptor(bs.ExponentialSynapse(2.0), bs.CurrentBased())}
    stdp = pl.PairSTDP(A_plus=2.0, A_minus=2.1, weight_dependence=pl.Additive(w_max=120.0))
    pops = [bs.Population("P", 8, bs.PoissonSource(400.0)),
            bs.Population("N", n, lif, receptors=rec, initial={"v": bs.init.Uniform(-70.0, -55.0)})]
    projs = [
        bs.Projection("P", "N", bs.connect.fixed_probability(8, n, 0.5, weight=60.0, delay=1.3,
                                                             seed=1),
                      receptor="e", plasticity=stdp, name="ff"),
        bs.Projection("N", "N", bs.connect.fixed_probability(n, n, 0.3, weight=-30.0, delay=0.7,
                                                             allow_self=False, seed=2),
                      receptor="e"),
    ]
    return bs.Network(pops, projs, dt=DT)


RECORD = (MeanVoltage("N"), bs.WeightTrace("ff", every=5), SpikesPerStep("N"),
          bs.SpikeRaster(("N",)))


@pytest.fixture(scope="module")
def reference():
    net = network()
    return net, bs.simulate(net, DURATION, key=KEY, record=RECORD + (bs.StateTrace("N", "v"),))


@pytest.fixture(scope="module")
def uninterrupted(reference, tmp_path_factory):
    net, _ = reference
    out = tmp_path_factory.mktemp("whole")
    run = bs.run_long(net, DURATION, out, key=KEY, chunk=CHUNK, record=RECORD,
                      checkpoint_every=2 * CHUNK, progress=False)
    return out, run


def test_user_monitor_in_simulate_is_the_mean_of_the_trace(reference):
    _, ref = reference
    mean_v = np.asarray(ref.recordings[0])
    _, v = ref.trace("N", "v")
    assert mean_v.shape == (300,) and np.ptp(mean_v) > 1.0  # the potentials move
    # Both are float32 means of the same 12 values (summed in possibly another order).
    np.testing.assert_allclose(mean_v, v.mean(axis=1), rtol=1e-6)
    counts = np.asarray(ref.recordings[2])
    assert counts.sum() > 20 and np.array_equal(counts, ref.spike_counts("N"))
    times, w = ref.weight_trace("ff")
    assert w.shape[0] == 60 and not np.array_equal(w[0], w[-1])  # plasticity acts


def _check_run(run, ref):
    """The stored run holds what one simulate call over the whole duration returns."""
    assert run.n_steps == 300
    stored = run.recording(MeanVoltage("N"))
    assert list(stored) == ["values"]
    assert np.array_equal(stored["values"], np.asarray(ref.recordings[0]))
    assert np.array_equal(run.recording(2)["values"], np.asarray(ref.recordings[2]))
    times, w = run.weight_trace("ff")
    ref_times, ref_w = ref.weight_trace("ff")
    assert np.array_equal(w, ref_w) and np.allclose(times, ref_times)
    t, ids = run.spikes("N")
    t_ref, ids_ref = ref.spikes("N")
    assert np.array_equal(np.rint(t / DT), np.rint(t_ref / DT)) and np.array_equal(ids, ids_ref)


def test_run_long_streams_user_monitors_and_weight_traces(reference, uninterrupted):
    _, ref = reference
    _, run = uninterrupted
    _check_run(run, ref)
    times, values = run.samples("values")  # the first monitor's default stream
    assert np.array_equal(values, np.asarray(ref.recordings[0]))
    assert np.allclose(times, np.arange(300) * DT)


def test_crash_and_resume_with_user_monitors(reference, uninterrupted, tmp_path, monkeypatch):
    net, ref = reference
    whole_dir, _ = uninterrupted
    out = tmp_path / "crashed"
    # Killed in chunk 4: chunks 1-3 written, checkpoint after chunk 2.
    crash_in_chunk(monkeypatch, 4, lambda: bs.run_long(
        net, DURATION, out, key=KEY, chunk=CHUNK, record=RECORD, checkpoint_every=2 * CHUNK,
        progress=False))
    crashed = bs.load_run(out)
    assert crashed.n_steps == 180 and len(crashed.recording(0)["values"]) == 180
    run = bs.run_long(net, DURATION, out, chunk=CHUNK, record=RECORD,
                      checkpoint_every=2 * CHUNK, progress=False)
    _check_run(run, ref)
    _check_run(bs.load_run(out), ref)
    assert_same_files(out, whole_dir)


def test_monitors_without_a_row_per_step_declare_their_streams(reference, tmp_path):
    net, ref = reference
    with pytest.raises(TypeError, match=r"cannot stream FinalVoltage: its recording 'values' "
                                        r"has shape \(12,\), not one row per step of a 60-step "
                                        r"chunk"):
        bs.run_long(net, DURATION, tmp_path / "a", key=KEY, chunk=CHUNK,
                    record=(FinalVoltage("N"),), progress=False)
    run = bs.run_long(net, DURATION, tmp_path / "b", key=KEY, chunk=CHUNK,
                      record=(ChunkTotals("N"),), progress=False)
    totals = run.recording(0)["total"]
    per_step = np.asarray(ref.recordings[2])
    assert np.array_equal(totals, per_step.reshape(5, 60).sum(axis=1))
    with pytest.raises(ValueError, match=r"No sampled stream 'total'"):
        run.samples("total")  # events, not samples


def test_a_run_of_another_format_version_is_refused_clearly(uninterrupted, tmp_path):
    whole_dir, _ = uninterrupted
    meta = json.loads((whole_dir / "run.json").read_text())
    meta["format_version"] = 2
    (tmp_path / "run.json").write_text(json.dumps(meta))
    with pytest.raises(bs.CheckpointError, match=r"has run format version 2; this brainsim .* "
                                                 r"reads version 3\. Read the folder with"):
        bs.load_run(tmp_path)


SHARDED = textwrap.dedent(
    r"""
    import glob, json, os, re, sys
    import equinox as eqx, jax, jax.numpy as jnp, numpy as np
    import brainsim as bs

    sys.path.insert(0, sys.argv[2])
    from test_monitor_protocol import MeanVoltage, SpikesPerStep

    def network():
        n = 15  # odd: the second device holds a padding neuron
        lif = bs.LIF(C_m=200.0, tau_m=20.0, E_L=-60.0, V_th=-50.0, V_reset=-60.0, t_ref=2.0,
                     I_e=np.linspace(150.0, 260.0, n))
        rec = {"e": bs.Receptor(bs.ExponentialSynapse(5.0), bs.CurrentBased())}
        pops = [bs.Population("P", 10, bs.PoissonSource(30.0)),
                bs.Population("E", n, lif, receptors=rec,
                              initial={"v": bs.init.Uniform(-60.0, -50.0)})]
        fp = bs.connect.fixed_probability
        projs = [bs.Projection("P", "E", fp(10, n, 0.3, weight=40.0, delay=0.5, seed=1),
                               receptor="e"),
                 bs.Projection("E", "E", fp(n, n, 0.3, weight=-20.0, delay=0.3, seed=2),
                               receptor="e")]
        return bs.Network(pops, projs, dt=0.1)

    net, key = network(), jax.random.key(0)
    mesh = jax.make_mesh((2,), ("neurons",))
    record = (MeanVoltage("E"), SpikesPerStep("E"))
    single = bs.simulate(net, 20.0, key=key, record=record + (bs.StateTrace("E", "v"),))
    bs.simulate_sharded(net, 20.0, mesh=mesh, key=key)  # the program without monitors
    sharded = bs.simulate_sharded(net, 20.0, mesh=mesh, key=key, record=(MeanVoltage("E"),))
    both = bs.simulate_sharded(net, 20.0, mesh=mesh, key=key, record=record)
    gathers = [len(re.findall(r"= \S+ all-gather(?:-start)?\(", open(f).read()))
               for f in sorted(glob.glob(sys.argv[1] + "/*run_sharded*after_optimizations.txt"))]
    print("RESULT" + json.dumps({
        "single": [np.asarray(r).tolist() for r in single.recordings],
        "sharded": np.asarray(sharded.recordings[0]).tolist(),
        "both": [np.asarray(r).tolist() for r in both.recordings],
        "gathers": gathers,
    }))
    """
)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    dump = tmp_path_factory.mktemp("hlo")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count=2 --xla_dump_to={dump} "
                        "--xla_dump_hlo_module_re=.*run_sharded.*")
    proc = subprocess.run([sys.executable, "-c", SHARDED, str(dump), os.path.dirname(__file__)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def test_sharded_user_monitor_sees_the_whole_population(sharded):
    mean_v, counts, v = (np.asarray(x) for x in sharded["single"])
    # The mean over device 0's neurons alone (what a monitor saw before) is far off: the test
    # can tell a local view from the global one.
    assert np.abs(v[:, :8].mean(axis=1) - mean_v).max() > 0.1
    assert counts.sum() > 10
    # Same network, same key: the sharded run computes the same potentials; default XLA flags
    # may contract a*b + c differently in the two programs (tests/test_sharding.py), so allow
    # float32 rounding of values near -55 mV.
    np.testing.assert_allclose(sharded["sharded"], mean_v, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(sharded["both"][0], mean_v, rtol=1e-6, atol=1e-4)
    assert np.array_equal(sharded["both"][1], counts)


def test_sharded_monitors_gather_only_what_they_read(sharded):
    """The driver offers every monitor the whole state by all-gathering every partitioned
    array; the compiler keeps only the gathers a monitor reads: one more (the potentials)
    for MeanVoltage than for no monitor, none more for a monitor of spikes only."""
    none, mean_v, both = sharded["gathers"]
    assert mean_v == none + 1 and both == mean_v
