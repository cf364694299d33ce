"""Exporters (brainsim/interop.py): every exporter is checked against its own reader —
pandas frames against ``result.spikes``/``trace``, Neo spike trains through Elephant's mean
firing rate against ``result.rate``, NWB by writing a file and reading it back with pynwb.

The packages are the ``interop`` extra, part of the ``test`` extra; a missing one skips its
test (``importorskip``), and the ImportError users see is checked with a simulated absence.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brainsim as bs
from brainsim import interop

DT = 0.1
KEY = jax.random.key(11)


def _network():
    lif = bs.LIF(C_m=250.0, tau_m=10.0, E_L=-70.0, V_th=-55.0, V_reset=-70.0, t_ref=2.0,
                 I_e=np.linspace(250.0, 500.0, 6))
    exc = bs.Receptor(bs.ExponentialSynapse(tau=5.0), bs.CurrentBased())
    return bs.Network(
        [bs.Population("in", 8, bs.PoissonSource(100.0)),
         bs.Population("E", 6, lif, receptors={"exc": exc})],
        [bs.Projection("in", "E", bs.connect.fixed_probability(8, 6, 0.5, weight=30.0, seed=1),
                       receptor="exc")],
        dt=DT,
    )


RECORD = (bs.SpikeRaster(name="raster"), bs.StateTrace("E", "v", neurons=[1, 4], every=5),
          bs.StateTrace("E", "exc.g", every=10))


@pytest.fixture(scope="module")
def result():
    net = _network()
    # Start from a continued state: exported times are absolute (t_start = 10 ms).
    first = bs.simulate(net, 10.0, key=KEY)
    return bs.simulate(net, 80.0, state=first.state, record=RECORD)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """The same 80 ms from a fresh state, by simulate and by run_long in 4 chunks."""
    net = _network()
    state = net.init(KEY)
    whole = bs.simulate(net, 80.0, state=state, record=RECORD)
    run = bs.run_long(net, 80.0, tmp_path_factory.mktemp("run"), state=state, chunk=20.0,
                      record=RECORD)
    return whole, run


def test_pandas_spikes_and_traces(result):
    pd = pytest.importorskip("pandas")
    df = result.to_pandas()
    assert list(df.columns) == ["population", "neuron", "time_ms"]
    assert np.all(np.diff(df["time_ms"]) >= 0)
    for pop in ("in", "E"):
        times, ids = result.spikes(pop)
        part = df[df["population"] == pop].sort_values(["time_ms", "neuron"], kind="stable")
        np.testing.assert_array_equal(part["neuron"], ids)
        np.testing.assert_allclose(part["time_ms"], times)
    long = result.to_pandas("traces")
    t, v = result.trace("E", "v")
    v_rows = long[long["variable"] == "v"]
    np.testing.assert_allclose(v_rows[v_rows["neuron"] == 4]["value"], v[:, 1])
    np.testing.assert_allclose(v_rows[v_rows["neuron"] == 4]["time_ms"], t)
    assert len(long) == v.size + result.trace("E", "exc.g")[1].size
    wide = result.to_pandas("traces", wide=True)
    np.testing.assert_allclose(wide[("E", "v", 1)].loc[t], v[:, 0])
    assert isinstance(wide.columns, pd.MultiIndex)
    # exc.g is sampled every 10 steps, v every 5: the union of times, NaN between samples.
    assert wide[("E", "exc.g", 0)].isna().sum() == len(t) - len(result.trace("E", "exc.g")[0])
    with pytest.raises(ValueError, match="`kind` must be 'spikes' or 'traces'"):
        result.to_pandas("rates")


def test_neo_spiketrains_give_elephants_rate(result):
    pytest.importorskip("neo")
    pq = pytest.importorskip("quantities")
    statistics = pytest.importorskip("elephant.statistics")
    block = result.to_neo()
    seg = block.segments[0]
    assert len(seg.spiketrains) == 8 + 6
    group = next(g for g in block.groups if g.name == "E")
    per_neuron = result.spike_counts("E", per="neuron")
    for i, train in enumerate(group.spiketrains):
        assert train.units == pq.ms and train.annotations["neuron"] == i
        assert float(train.t_start) == pytest.approx(10.0) and float(train.t_stop) == 90.0
        assert len(train) == per_neuron[i]
    rates = [float(statistics.mean_firing_rate(t).rescale("Hz")) for t in group.spiketrains]
    assert np.mean(rates) == pytest.approx(result.rate("E"), rel=1e-9)
    assert result.rate("E") > 0
    signal = next(s for s in seg.analogsignals if s.name == "E.v")
    assert signal.units == pq.mV and signal.shape == (160, 2)
    assert float(signal.sampling_period.rescale("ms")) == pytest.approx(0.5)
    assert float(signal.t_start.rescale("ms")) == pytest.approx(10.0)
    np.testing.assert_allclose(signal.magnitude, result.trace("E", "v")[1])


def test_nwb_write_and_read_back(result, tmp_path):
    pynwb = pytest.importorskip("pynwb")
    path = tmp_path / "run.nwb"
    result.to_nwb(path, identifier="test-run")
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        assert nwb.identifier == "test-run"
        units = nwb.units.to_dataframe()
        assert len(units) == 8 + 6
        for pop in ("in", "E"):
            times, ids = result.spikes(pop)
            rows = units[units["population"] == pop]
            for _, row in rows.iterrows():
                mine = times[ids == row["neuron"]]
                np.testing.assert_allclose(np.asarray(row["spike_times"]) * 1e3, mine, atol=1e-9)
        series = nwb.acquisition["E.v"]
        np.testing.assert_allclose(series.data[:], result.trace("E", "v")[1])
        assert series.unit == "mV"
        assert series.rate == pytest.approx(2000.0) and series.starting_time == pytest.approx(0.01)
        assert nwb.acquisition["E.exc.g"].unit == "n/a"


def test_batched_results_export_per_member_and_nwb_refuses(result, monkeypatch):
    """Neo: one segment per member (trials), each that member's trains; pandas: a batch
    column; NWB holds one run and says how to write a member."""
    other = bs.simulate(_network(), 80.0, state=result.state, record=RECORD)
    batched = jax.tree.map(lambda *x: jnp.stack(x), result, other)  # as vmap gives
    pytest.importorskip("neo")
    block = batched.to_neo()
    assert [seg.name for seg in block.segments] == ["batch 0", "batch 1"]
    for b, member in enumerate((result, other)):
        seg = block.segments[b]
        assert seg.annotations["batch"] == b
        times, ids = member.spikes("E")
        trains = [t for t in seg.spiketrains if t.annotations["population"] == "E"]
        for i, train in enumerate(trains):
            np.testing.assert_allclose(train.magnitude, times[ids == i])
        assert float(trains[0].t_start) == pytest.approx(float(member.t_start))
        np.testing.assert_allclose(seg.analogsignals[0].magnitude, member.trace("E", "v")[1])
    assert len(next(g for g in block.groups if g.name == "E").spiketrains) == 2 * 6
    pytest.importorskip("pynwb")
    with pytest.raises(ValueError, match=r"to_nwb: the result is batched.*result.batch\(i\)"):
        batched.to_nwb("x.nwb")
    pd = pytest.importorskip("pandas")
    df = batched.to_pandas()
    assert list(df.columns) == ["batch", "population", "neuron", "time_ms"]
    pd.testing.assert_frame_equal(df[df["batch"] == 1].drop(columns="batch").reset_index(drop=True),
                                  other.to_pandas())

    def missing(name):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(interop.importlib, "import_module", missing)
    with pytest.raises(ImportError, match=r"to_nwb needs the optional package 'pynwb'.*brainsim\[interop\]"):
        result.to_nwb("x.nwb")


def test_stored_run_reads_and_exports_as_the_result(stored, tmp_path):
    """A run_long run is read like the simulate result of the same steps: by monitor name,
    per-neuron and per-step counts (without a PopulationRate), and every exporter."""
    whole, run = stored
    np.testing.assert_array_equal(run["raster"]["spikes/E/ids"], run.recording(0)["spikes/E/ids"])
    for pop in ("in", "E"):
        np.testing.assert_array_equal(run.spike_counts(pop, per="neuron"),
                                      whole.spike_counts(pop, per="neuron"))
        np.testing.assert_array_equal(run.spike_counts(pop), whole.spike_counts(pop))
    assert whole.spike_counts("E", per="neuron").sum() > 0
    with pytest.raises(ValueError, match="`per` must be 'step'"):
        run.spike_counts("E", per="second")
    with pytest.raises(KeyError, match="unknown monitor name 'rastr'. Did you mean 'raster'"):
        run["rastr"]
    pd = pytest.importorskip("pandas")
    pd.testing.assert_frame_equal(run.to_pandas(), whole.to_pandas())
    pd.testing.assert_frame_equal(run.to_pandas("traces"), whole.to_pandas("traces"),
                                  check_dtype=False)
    pytest.importorskip("neo")
    ours, theirs = run.to_neo().segments[0], whole.to_neo().segments[0]
    for a, b in zip(ours.spiketrains, theirs.spiketrains, strict=True):
        np.testing.assert_array_equal(a.magnitude, b.magnitude)
        assert a.annotations == b.annotations and float(a.t_stop) == float(b.t_stop)
    for a, b in zip(ours.analogsignals, theirs.analogsignals, strict=True):
        np.testing.assert_array_equal(a.magnitude, b.magnitude)
        np.testing.assert_array_equal(a.annotations["neurons"], b.annotations["neurons"])
    pynwb = pytest.importorskip("pynwb")
    run.to_nwb(tmp_path / "long.nwb", identifier="long")
    with pynwb.NWBHDF5IO(str(tmp_path / "long.nwb"), "r") as io:
        nwb = io.read()
        assert len(nwb.units.to_dataframe()) == 8 + 6
        np.testing.assert_allclose(nwb.acquisition["E.v"].data[:], whole.trace("E", "v")[1])
