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


@pytest.fixture(scope="module")
def result():
    lif = bs.LIF(C_m=250.0, tau_m=10.0, E_L=-70.0, V_th=-55.0, V_reset=-70.0, t_ref=2.0,
                 I_e=np.linspace(250.0, 500.0, 6))
    exc = bs.Receptor(bs.ExponentialSynapse(tau=5.0), bs.CurrentBased())
    net = bs.Network(
        [bs.Population("in", 8, bs.PoissonSource(100.0)),
         bs.Population("E", 6, lif, receptors={"exc": exc})],
        [bs.Projection("in", "E", bs.connect.fixed_probability(8, 6, 0.5, weight=30.0, seed=1),
                       receptor="exc")],
        dt=DT,
    )
    record = (bs.SpikeRaster(), bs.StateTrace("E", "v", neurons=[1, 4], every=5),
              bs.StateTrace("E", "exc.g", every=10))
    # Start from a continued state: exported times are absolute (t_start = 10 ms).
    first = bs.simulate(net, 10.0, key=KEY)
    return bs.simulate(net, 80.0, state=first.state, record=record)


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


def test_exporters_refuse_batches_and_name_the_extra(result, monkeypatch):
    batched = jax.tree.map(lambda x: jnp.stack([x, x]), result)  # as vmap gives
    pytest.importorskip("neo")
    with pytest.raises(ValueError, match=r"batched.*result.batch\(i\)"):
        batched.to_neo()
    pd = pytest.importorskip("pandas")
    df = batched.to_pandas()
    assert list(df.columns) == ["batch", "population", "neuron", "time_ms"]
    pd.testing.assert_frame_equal(df[df["batch"] == 1].drop(columns="batch").reset_index(drop=True),
                                  result.to_pandas())

    def missing(name):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(interop.importlib, "import_module", missing)
    with pytest.raises(ImportError, match=r"to_nwb needs the optional package 'pynwb'.*brainsim\[interop\]"):
        result.to_nwb("x.nwb")
