"""Quick matplotlib views of a :class:`~brainsim.SimulationResult`.

Each function draws into ``ax`` (a new figure's axes when ``None``) and returns the Axes, so
plots compose and can be styled afterwards. matplotlib is imported only when a function is
called, keeping ``import brainsim`` fast.

Example:
    >>> result = bs.simulate(net, 1000.0, key=jax.random.key(0), record=(bs.SpikeRaster(),))
    >>> ax, rate_ax = bs.plotting.raster(result, rate_panel=True, bin_ms=5.0)
    >>> bs.plotting.population_rate(result, "E", bin_ms=5.0)
    >>> bs.plotting.weights(w0, net.weights(result.state, "stdp"), unit="nS")
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import analysis


def _axes(ax):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots()[1]


def _t_start(result) -> float:
    return float(np.asarray(result.t_start).ravel()[0])


def _names(result, populations, sources: bool) -> list[str]:
    if populations is None:
        return [
            n
            for n, is_source in zip(
                result.population_names, result.population_is_source, strict=True
            )
            if sources or not is_source
        ]
    names = [populations] if isinstance(populations, str) else list(populations)
    for name in names:
        result._check_population(name)
    return names


def raster(
    result,
    populations: Sequence[str] | str | None = None,
    *,
    sources: bool = False,
    rate_panel: bool = False,
    bin_ms: float = 5.0,
    ax=None,
    s: float | None = None,
    colors: Sequence | None = None,
):
    """Spike raster: one dot per spike, populations stacked top to bottom in the order given.

    The first population is drawn at the top (for :func:`brainsim.networks.potjans_diesmann`
    the network order :data:`~brainsim.networks.PD14_POPULATIONS` is anatomical: L2/3 at the
    top, L6 at the bottom). Neuron ``i`` of a population is drawn at height ``offset + i``
    where ``offset`` is the total size of the populations drawn below it. Each population is
    one scatter collection labelled with its name and one color; the y axis carries the
    population names, in their colors, at the middle of their bands (no legend over the data).

    With ``rate_panel=True`` a panel below the raster (sharing its time axis) shows each
    population's rate (Hz per neuron) in bins of ``bin_ms`` ms, as :func:`population_rate`
    draws it, in the population's color, with a legend beside the panel.

    Arguments:
        result: a :class:`~brainsim.SimulationResult` with a spike recording.
        populations: names to draw, top to bottom (default: every population of the network
            in network order, spike sources left out unless ``sources=True``).
        sources: with ``populations=None``, also draw spike sources (Poisson, generators);
            they are inputs, not part of the network's activity, so hidden by default.
        rate_panel: add the population-rate panel below the raster.
        bin_ms: bin width of the rate panel (ms, a whole number of steps).
        ax: Axes to draw into (a new figure's when ``None``). With ``rate_panel`` its place
            in the figure is split in two (raster 3/4, rates 1/4).
        s: marker area (points²); default: dots of 1 point², or, for at most 50 neurons in
            all, vertical ticks filling their row (a spike train per row stays readable).
        colors: one matplotlib color per population (default: the color cycle).

    Returns:
        The raster's Axes; ``(raster_axes, rate_axes)`` with ``rate_panel=True``.
    """
    names = _names(result, populations, sources)
    if not names:
        raise ValueError(
            "raster: no population to draw: every population is a spike source; pass "
            "`sources=True` or name them in `populations`."
        )
    if colors is not None and len(colors) != len(names):
        raise ValueError(
            f"raster: `colors` has {len(colors)} entries for {len(names)} populations {names}."
        )
    ax, rate_ax = _raster_axes(ax, rate_panel)
    sizes = [result.population_sizes[result._check_population(n)] for n in names]
    offsets = np.cumsum([0, *sizes[::-1]])[::-1][1:]  # the first population on top
    cycle = _color_cycle()
    total = int(sum(sizes))
    ticks_marker = total <= 50
    marker = "|" if ticks_marker else "."
    if s is None:
        s = (200.0 / total) ** 2 if ticks_marker else 1.0
    ticks = []
    for i, (name, size, offset) in enumerate(zip(names, sizes, offsets, strict=True)):
        times, ids = result.spikes(name)
        color = cycle[i % len(cycle)] if colors is None else colors[i]
        ax.scatter(
            times,
            ids + offset,
            s=s,
            marker=marker,
            linewidths=1.0 if ticks_marker else 0,
            color=color,
            label=name,
            rasterized=True,
        )
        ticks.append(offset + (size - 1) / 2)
        if rate_ax is not None:
            population_rate(result, name, bin_ms, ax=rate_ax, color=color)
    t0 = _t_start(result)
    ax.set_xlim(t0, t0 + result.duration)
    ax.set_ylim(-0.5, total - 0.5)
    ax.set_yticks(ticks, names)
    for label, collection in zip(ax.get_yticklabels(), ax.collections, strict=True):
        label.set_color(collection.get_facecolor()[0])
    ax.set_ylabel("neuron (by population)")
    for boundary in offsets[:-1]:
        ax.axhline(boundary - 0.5, color="0.8", lw=0.5)
    if rate_ax is None:
        ax.set_xlabel("time (ms)")
        return ax
    ax.tick_params(labelbottom=False)
    rate_ax.set_ylabel(f"rate (Hz, {bin_ms:g} ms bins)")
    if len(names) > 1:  # beside the panel, not over the data
        rate_ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    return ax, rate_ax


def _color_cycle() -> list:
    import matplotlib as mpl

    return [c["color"] for c in mpl.rcParams["axes.prop_cycle"]]


def _raster_axes(ax, rate_panel: bool):
    """The raster's Axes and the rate panel's (``None`` without one)."""
    if not rate_panel:
        return _axes(ax), None
    if ax is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(layout="constrained")
        spec = fig.add_gridspec(2, 1, height_ratios=(3, 1))
    else:
        fig = ax.figure
        spec = ax.get_subplotspec().subgridspec(2, 1, height_ratios=(3, 1))
        ax.remove()
    top = fig.add_subplot(spec[0])
    return top, fig.add_subplot(spec[1], sharex=top)


def population_rate(result, population: str, bin_ms: float = 5.0, *, ax=None, **kwargs):
    """Population rate (Hz per neuron) of ``population`` in bins of ``bin_ms``, as steps.

    Uses any spike recording (:class:`~brainsim.SpikeRaster`, :class:`~brainsim.SpikeList` or
    :class:`~brainsim.PopulationRate`); see :func:`brainsim.analysis.population_rate`. Extra
    keyword arguments go to ``ax.stairs``.
    """
    counts = np.asarray(result.spike_counts(population)).astype(np.int64)
    t0 = _t_start(result)
    times = t0 + np.repeat(np.arange(counts.size), counts) * result.dt
    size = result.population_sizes[result.population_names.index(population)]
    starts, rate = analysis.population_rate(
        times, size, result.duration, result.dt, bin_ms, t_start=t0
    )
    ax = _axes(ax)
    edges = np.append(starts, t0 + result.duration)
    ax.stairs(rate, edges, label=population, **kwargs)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("rate (Hz)")
    return ax


def voltage_traces(
    result,
    population: str,
    variable: str = "v",
    neurons: Sequence[int] | None = None,
    *,
    ax=None,
    legend: bool = True,
    unit: str | None = None,
    **kwargs,
):
    """Recorded traces of ``variable`` for ``neurons`` of ``population`` (one line each).

    Needs a :class:`~brainsim.StateTrace` of that variable. ``neurons`` are neuron indices in
    the population (default: every recorded neuron); each must have been recorded. Lines are
    labelled ``"neuron i"`` and, with ``legend``, named in a legend outside the data (right of
    the Axes). The y label carries ``unit`` (default: mV for ``"v"``, none otherwise). Extra
    keyword arguments go to ``ax.plot``.
    """
    from ._monitors import StateTrace

    times, values = result.trace(population, variable)
    monitor = next(
        m
        for m in result.monitors
        if isinstance(m, StateTrace) and m.population == population and m.variable == variable
    )
    size = result.population_sizes[result.population_names.index(population)]
    recorded = list(range(size)) if monitor.neurons is None else list(monitor.neurons)
    chosen = recorded if neurons is None else [int(i) for i in np.ravel(neurons)]
    missing = [i for i in chosen if i not in recorded]
    if missing:
        raise ValueError(
            f"voltage_traces: neuron {missing[0]} of {population!r} was not recorded; recorded: "
            f"{recorded if len(recorded) <= 20 else f'{len(recorded)} neurons'}."
        )
    ax = _axes(ax)
    column = {n: c for c, n in enumerate(recorded)}
    for i in chosen:
        ax.plot(times, values[:, column[i]], label=f"neuron {i}", **kwargs)
    unit = "mV" if unit is None and variable == "v" else unit
    ax.set_xlabel("time (ms)")
    ax.set_ylabel(variable if unit is None else f"{variable} ({unit})")
    if legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    return ax


def weights(
    before,
    after,
    *,
    ax=None,
    bins: int = 50,
    unit: str | None = None,
    title: str | None = None,
):
    """Histograms of a projection's weights before and after a run, overlaid, with a legend.

    Arguments:
        before: the initial weight of every synapse (any shape; flattened), e.g. from the
            network before the run.
        after: the final weight of every synapse, e.g. ``network.weights(result.state,
            name)`` of a plastic projection.
        ax: Axes to draw into (a new figure's when ``None``).
        bins: number of bins, shared by both histograms (over the range of both).
        unit: weight unit for the x label (nS for conductance-based receptors, pA for
            current-based ones).
        title: Axes title.

    Returns:
        The Axes: two step histograms labelled ``"before"`` and ``"after"``.
    """
    before = np.ravel(np.asarray(before, dtype=float))
    after = np.ravel(np.asarray(after, dtype=float))
    both = np.concatenate([before, after])
    if both.size == 0 or not np.all(np.isfinite(both)):
        raise ValueError(
            "weights: `before` and `after` must be non-empty and finite; got "
            f"{before.size} and {after.size} weights, "
            f"{int(np.sum(~np.isfinite(both)))} not finite."
        )
    lo, hi = float(both.min()), float(both.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    ax = _axes(ax)
    ax.hist(before, edges, histtype="stepfilled", alpha=0.35, color="0.5", label="before")
    ax.hist(after, edges, histtype="step", lw=1.5, color="C0", label="after")
    ax.set_xlabel("weight" if unit is None else f"weight ({unit})")
    ax.set_ylabel("synapses")
    if title is not None:
        ax.set_title(title)
    ax.legend(frameon=False)
    return ax
