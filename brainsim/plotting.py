"""Quick matplotlib views of a :class:`~brainsim.SimulationResult`.

Each function draws into ``ax`` (a new figure's axes when ``None``) and returns the Axes, so
plots compose and can be styled afterwards. matplotlib is imported only when a function is
called, keeping ``import brainsim`` fast.

Example:
    >>> result = bs.simulate(net, 1000.0, key=jax.random.key(0), record=(bs.SpikeRaster(),))
    >>> ax = bs.plotting.raster(result)
    >>> bs.plotting.population_rate(result, "E", bin_ms=5.0)
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


def raster(
    result,
    populations: Sequence[str] | str | None = None,
    *,
    ax=None,
    s: float = 1.0,
    colors: Sequence | None = None,
):
    """Spike raster: one dot per spike, populations stacked bottom to top in network order.

    A neuron ``i`` of a population is drawn at height ``offset + i`` where ``offset`` is the
    total size of the populations drawn below it. Each population is one scatter collection
    labelled with its name (``ax.legend()`` shows them).

    Arguments:
        result: a :class:`~brainsim.SimulationResult` with a spike recording.
        populations: names to draw (default: every population).
        ax: Axes to draw into.
        s: marker area (points²).
        colors: one matplotlib color per population (default: the color cycle).
    """
    names = (
        list(result.population_names)
        if populations is None
        else ([populations] if isinstance(populations, str) else list(populations))
    )
    ax = _axes(ax)
    offset = 0
    for i, name in enumerate(names):
        times, ids = result.spikes(name)
        size = result.population_sizes[result.population_names.index(name)]
        color = None if colors is None else colors[i]
        ax.scatter(
            times,
            ids + offset,
            s=s,
            marker=".",
            linewidths=0,
            color=color,
            label=name,
            rasterized=True,
        )
        offset += size
    t0 = _t_start(result)
    ax.set_xlim(t0, t0 + result.duration)
    ax.set_ylim(-0.5, offset - 0.5)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("neuron")
    return ax


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
    **kwargs,
):
    """Recorded traces of ``variable`` for ``neurons`` of ``population`` (one line each).

    Needs a :class:`~brainsim.StateTrace` of that variable. ``neurons`` are neuron indices in
    the population (default: every recorded neuron); each must have been recorded. Lines are
    labelled ``"neuron i"``. Extra keyword arguments go to ``ax.plot``.
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
    ax.set_xlabel("time (ms)")
    ax.set_ylabel(f"{variable} (mV)" if variable == "v" else variable)
    return ax
