"""Plots draw exactly the recorded data (checked on the artists, Agg backend)."""

import subprocess
import sys

import jax
import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

import brainsim as bs
from brainsim import plotting

matplotlib.use("Agg")

GEN_TIMES = [1.0, 2.0, 2.0, 5.5]
GEN_IDS = [0, 1, 2, 0]


@pytest.fixture(scope="module")
def result():
    """Three generator channels with known spikes driving two LIF cells for 10 ms."""
    gen = bs.Population("gen", 3, bs.SpikeGenerator(GEN_TIMES, GEN_IDS))
    cell = bs.Population(
        "cell", 2, bs.LIF(C_m=200.0, tau_m=20.0, E_L=-60.0, V_th=-50.0, V_reset=-60.0,
                          I_e=300.0),
        receptors={"exc": bs.Receptor(bs.ExponentialSynapse(5.0), bs.CurrentBased())})
    proj = bs.Projection("gen", "cell", bs.connect.all_to_all(3, 2, weight=50.0),
                         receptor="exc")
    net = bs.Network([gen, cell], [proj], dt=0.1)
    return bs.simulate(net, 10.0, key=jax.random.key(0),
                       record=(bs.SpikeRaster(), bs.StateTrace("cell", "v")))


def axes():
    return Figure().add_subplot()


def test_raster_draws_every_spike_stacked_by_population(result):
    ax = plotting.raster(result, ax=axes())
    gen, cell = ax.collections
    assert [c.get_label() for c in ax.collections] == ["gen", "cell"]
    order = np.lexsort((GEN_IDS, GEN_TIMES))
    offsets = gen.get_offsets()
    np.testing.assert_allclose(offsets[np.lexsort((offsets[:, 1], offsets[:, 0]))],
                               np.column_stack([GEN_TIMES, GEN_IDS])[order], atol=1e-6)
    times, ids = result.spikes("cell")
    assert times.size > 0  # 300 pA drive fires the cells within 10 ms
    np.testing.assert_allclose(cell.get_offsets(), np.column_stack([times, ids + 3]))
    assert ax.get_xlim() == (0.0, 10.0) and ax.get_ylim() == (-0.5, 4.5)


def test_raster_of_chosen_populations(result):
    ax = plotting.raster(result, "cell", ax=axes(), colors=["k"])
    (cell,) = ax.collections
    times, ids = result.spikes("cell")
    np.testing.assert_allclose(cell.get_offsets(), np.column_stack([times, ids]))
    assert ax.get_ylim() == (-0.5, 1.5)


def test_population_rate_is_the_binned_rate(result):
    ax = plotting.population_rate(result, "gen", bin_ms=1.0, ax=axes())
    (stairs,) = ax.patches
    values, edges, _ = stairs.get_data()
    np.testing.assert_allclose(edges, np.arange(11.0))
    # 1 spike of 3 channels in a 1 ms bin is 333.3 Hz; bin [2, 3) has two.
    expected = np.zeros(10)
    expected[[1, 2, 5]] = [1, 2, 1]
    np.testing.assert_allclose(values, expected / (3 * 1e-3))


def test_voltage_traces_plot_the_recorded_values(result):
    times, values = result.trace("cell", "v")
    ax = plotting.voltage_traces(result, "cell", ax=axes())
    assert [line.get_label() for line in ax.lines] == ["neuron 0", "neuron 1"]
    for i, line in enumerate(ax.lines):
        np.testing.assert_allclose(line.get_xdata(), times)
        np.testing.assert_allclose(line.get_ydata(), values[:, i])
    assert ax.get_ylabel() == "v (mV)"
    ax = plotting.voltage_traces(result, "cell", neurons=[1], ax=axes())
    (line,) = ax.lines
    np.testing.assert_allclose(line.get_ydata(), values[:, 1])
    with pytest.raises(ValueError, match="neuron 5 of 'cell' was not recorded"):
        plotting.voltage_traces(result, "cell", neurons=[5], ax=axes())


def test_new_axes_when_none_given(result):
    import matplotlib.pyplot as plt

    try:
        ax = plotting.raster(result)
        assert ax.figure is plt.gcf()
    finally:
        plt.close("all")


def test_import_brainsim_does_not_import_matplotlib():
    code = "import sys, brainsim; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
