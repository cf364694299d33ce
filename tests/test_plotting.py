"""Plots draw exactly the recorded data (checked on the artists, Agg backend)."""

import subprocess
import sys

import jax
import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

import brainsim as bs
from brainsim import analysis, plotting

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


def test_raster_draws_every_spike_first_population_on_top(result):
    ax = plotting.raster(result, sources=True, ax=axes())
    gen, cell = ax.collections
    assert [c.get_label() for c in ax.collections] == ["gen", "cell"]
    # Network order from the top down: gen (3 channels) above cell (2 neurons).
    order = np.lexsort((GEN_IDS, GEN_TIMES))
    offsets = gen.get_offsets()
    np.testing.assert_allclose(offsets[np.lexsort((offsets[:, 1], offsets[:, 0]))],
                               np.column_stack([GEN_TIMES, np.add(GEN_IDS, 2)])[order],
                               atol=1e-6)
    times, ids = result.spikes("cell")
    assert times.size > 0  # 300 pA drive fires the cells within 10 ms
    np.testing.assert_allclose(cell.get_offsets(), np.column_stack([times, ids]))
    assert ax.get_xlim() == (0.0, 10.0) and ax.get_ylim() == (-0.5, 4.5)
    # Population names label the middle of their bands; no legend over the data.
    assert [t.get_text() for t in ax.get_yticklabels()] == ["gen", "cell"]
    np.testing.assert_allclose(ax.get_yticks(), [3.0, 0.5])
    assert ax.get_legend() is None


def test_raster_hides_spike_sources_by_default(result):
    ax = plotting.raster(result, ax=axes())
    (cell,) = ax.collections
    assert cell.get_label() == "cell"
    assert ax.get_ylim() == (-0.5, 1.5)


def test_raster_draws_populations_in_the_order_given(result):
    ax = plotting.raster(result, ["cell", "gen"], ax=axes(), colors=["k", "r"])
    cell, gen = ax.collections
    times, ids = result.spikes("cell")
    np.testing.assert_allclose(cell.get_offsets(), np.column_stack([times, ids + 3]))
    assert gen.get_offsets()[:, 1].max() <= 2.0
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cell", "gen"]


def test_raster_of_chosen_populations(result):
    ax = plotting.raster(result, "cell", ax=axes(), colors=["k"])
    (cell,) = ax.collections
    times, ids = result.spikes("cell")
    np.testing.assert_allclose(cell.get_offsets(), np.column_stack([times, ids]))
    assert ax.get_ylim() == (-0.5, 1.5)


def test_raster_refuses_bad_arguments(result):
    with pytest.raises(ValueError, match="colors"):
        plotting.raster(result, ["cell", "gen"], colors=["k"], ax=axes())
    with pytest.raises(KeyError, match="nope"):  # the result's own unknown-name error
        plotting.raster(result, ["nope"], ax=axes())


def test_raster_rate_panel_shows_the_population_rates(result):
    fig = Figure()
    ax, rate_ax = plotting.raster(result, sources=True, rate_panel=True, bin_ms=2.0,
                                  ax=fig.add_subplot())
    assert fig.axes == [ax, rate_ax]  # the given Axes' place is split in two
    assert rate_ax.get_shared_x_axes().joined(ax, rate_ax)
    gen_stairs, cell_stairs = rate_ax.patches
    for name, stairs, scatter in [("gen", gen_stairs, ax.collections[0]),
                                  ("cell", cell_stairs, ax.collections[1])]:
        times, _ = result.spikes(name)
        size = result.population_sizes[result.population_names.index(name)]
        starts, rate = analysis.population_rate(times, size, 10.0, result.dt, 2.0)
        values, edges, _ = stairs.get_data()
        np.testing.assert_allclose(values, rate)
        np.testing.assert_allclose(edges, np.append(starts, 10.0))
        assert stairs.get_label() == name
        np.testing.assert_allclose(stairs.get_edgecolor(), scatter.get_facecolor()[0])
    # gen's spikes at 1, 2, 2 and 5.5 ms: 1, 2 and 1 spikes of 3 channels in 2 ms bins.
    np.testing.assert_allclose(gen_stairs.get_data()[0], np.array([1, 2, 1, 0, 0]) / 6e-3)
    assert rate_ax.get_xlabel() == "time (ms)" and "Hz" in rate_ax.get_ylabel()
    assert [t.get_text() for t in rate_ax.get_legend().get_texts()] == ["gen", "cell"]
    for label, scatter in zip(ax.get_yticklabels(), ax.collections, strict=True):
        np.testing.assert_allclose(to_rgba(label.get_color()), scatter.get_facecolor()[0])


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
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["neuron 0", "neuron 1"]
    ax = plotting.voltage_traces(result, "cell", neurons=[1], ax=axes())
    (line,) = ax.lines
    np.testing.assert_allclose(line.get_ydata(), values[:, 1])
    with pytest.raises(ValueError, match="neuron 5 of 'cell' was not recorded"):
        plotting.voltage_traces(result, "cell", neurons=[5], ax=axes())


def test_weights_before_and_after_overlaid_with_a_legend():
    rng = np.random.default_rng(0)
    before = rng.uniform(0.0, 1.0, 200)
    after = np.where(before > 0.5, 1.0, 0.0)  # pushed to the bounds
    ax = plotting.weights(before, after, bins=10, unit="nS", ax=axes(), title="stdp")
    drawn, final = ax.patches
    assert [drawn.get_label(), final.get_label()] == ["before", "after"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["before", "after"]
    assert ax.get_xlabel() == "weight (nS)" and ax.get_title() == "stdp"
    # The step outline of "after" holds its counts: 200 - k at 0 and k at 1.
    heights = final.get_xy()[:, 1]
    assert heights.max() == max(np.sum(after == 0), np.sum(after == 1))
    with pytest.raises(ValueError, match="finite"):
        plotting.weights(before, np.full(3, np.nan), ax=axes())


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


def test_cli_plots_raster_with_rates_and_weights_before_after(tmp_path, monkeypatch, capsys):
    """`brainsim run` on Song's STDP config: the raster hides the 1000 Poisson inputs and has a
    rate panel; weights.png overlays the network's initial weights and the final ones."""
    from pathlib import Path

    from matplotlib.figure import Figure as MplFigure

    from brainsim import cli

    saved = {}
    real_savefig = MplFigure.savefig

    def savefig(fig, path, *args, **kwargs):
        saved[Path(path).name] = fig
        return real_savefig(fig, path, *args, **kwargs)

    monkeypatch.setattr(MplFigure, "savefig", savefig)
    config = Path(__file__).resolve().parent.parent / "configs" / "song_stdp.toml"
    assert cli.main(["run", str(config), "--duration", "200", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    raster_ax, rate_ax = saved["raster.png"].axes
    assert [t.get_text() for t in raster_ax.get_yticklabels()] == ["out"]  # no "input" rows
    (stairs,) = rate_ax.patches
    assert stairs.get_label() == "out" and rate_ax.get_xlabel() == "time (ms)"
    (ax,) = saved["weights.png"].axes
    before, after = ax.patches
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["before", "after"]
    assert ax.get_xlabel() == "weight (nS)"
    # Both histograms share 50 bins over the range of the initial and final weights; "before"
    # holds the config's initial weights (uniform in [0, 0.01] nS), "after" weights.npz's.
    (proj,) = bs.load_config(config).network.projections
    pre, post, valid = proj.synapses.pairs()
    initial = np.asarray(proj.connectivity.weights)[valid]
    final = np.load(tmp_path / "weights.npz")["stdp.weight"]
    assert not np.allclose(initial, final)  # STDP moved them in 200 ms
    edges = np.linspace(min(initial.min(), final.min()), max(initial.max(), final.max()), 51)
    for patch, w in [(before, initial), (after, final)]:
        heights = set(np.round(patch.get_xy()[:, 1], 6)) - {0.0}
        assert heights == set(np.histogram(w, edges)[0].astype(float)) - {0.0}
