r"""Results out to the ecosystem: pandas, Neo (so Elephant's analyses run) and NWB.

These are optional: ``pip install "brainsim[interop]"`` installs pandas, neo, elephant,
quantities and pynwb; each is imported only when its exporter is called. Each takes a
:class:`~brainsim.SimulationResult` or a run written by :func:`~brainsim.run_long` (a
:class:`~brainsim.StoredRun`, read from its files; times from the run's start, as its
``spikes`` gives them) and exports every spike (:class:`~brainsim.SpikeRaster`,
:class:`~brainsim.SpikeList`) and every :class:`~brainsim.StateTrace` recorded. A batched
result (``vmap``) becomes one frame with a ``batch`` column (pandas) or one Neo segment per
member (Neo's trials); NWB files hold one run (write ``result.batch(i)``).

Units: brainsim's times are ms; pandas and Neo keep ms, NWB stores seconds (its standard).
A trace's unit is that of its variable: ``v`` (membrane potential) in mV; other variables are
exported without a unit (``"n/a"`` / dimensionless) and named in the metadata.

Example:
    >>> result = bs.simulate(net, 1000.0, key=key, record=(bs.SpikeRaster(), bs.StateTrace("E", "v")))
    >>> df = result.to_pandas()                    # population, neuron, time_ms
    >>> block = result.to_neo()                    # neo.Block; elephant works on its SpikeTrains
    >>> result.to_nwb("run.nwb")                   # units table + TimeSeries
"""

from __future__ import annotations

import datetime
import importlib
import os

import numpy as np

EXTRA = "interop"


def _require(module: str, exporter: str):
    """Import ``module`` or raise an ImportError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{exporter} needs the optional package {module!r}: pip install "
            f"'brainsim[{EXTRA}]' (or pip install {module})."
        ) from e


def _one_run(result, exporter: str):
    if getattr(result, "batch_shape", ()):
        raise ValueError(
            f"{exporter}: the result is batched (batch shape {result.batch_shape}); export one "
            "member at a time: result.batch(i)."
        )


def spiking_populations(result) -> list[str]:
    """The populations whose spikes ``result`` recorded, in network order."""
    return result.spiking_populations()


def traces(result):
    """Every :class:`StateTrace` ``result`` recorded, as
    :class:`~brainsim._results.TraceRecord` ``(population, variable, every, times, values,
    neurons)``."""
    return result.trace_records()


def _no_traces(result) -> ValueError:
    got = "; ".join(result.recorded()) or "nothing"
    return ValueError(
        f"No StateTrace was recorded (recorded: {got}). Record one, e.g. bs.StateTrace('E', 'v')."
    )


def unit_of(variable: str) -> str:
    """The unit of a recorded state variable, as far as its name says (``"v"`` → mV)."""
    field = variable.rpartition(".")[2]
    return "mV" if field in ("v", "V", "V_m", "v_m") else ""


# ------------------------------------------------------------------------------ pandas


def to_pandas(result, kind: str = "spikes", *, wide: bool = False):
    """A :class:`pandas.DataFrame` of ``result``.

    Arguments:
        kind: ``"spikes"`` — tidy, one row per spike: columns ``population`` (str),
            ``neuron`` (int, index within the population), ``time_ms`` (float, ms); a
            batched result adds a leading ``batch`` column (the flat member index).
            ``"traces"`` — every :class:`StateTrace`: long (default) one row per sample and
            neuron, columns ``population``, ``variable``, ``neuron``, ``time_ms``, ``value``.
        wide: for ``"traces"``: one row per time (index ``time_ms``) and one column per
            ``(population, variable, neuron)`` (a column MultiIndex); traces sampled on
            different grids are aligned on the union of times (NaN where not sampled).
    """
    pd = _require("pandas", "to_pandas")
    if kind == "spikes":
        if result.batch_shape:
            frames = []
            for b, idx in enumerate(np.ndindex(result.batch_shape)):
                df = to_pandas(result.batch(idx), "spikes")
                df.insert(0, "batch", b)
                frames.append(df)
            return pd.concat(frames, ignore_index=True)
        parts = {"population": [], "neuron": [], "time_ms": []}
        for name in spiking_populations(result):
            times, ids = result.spikes(name)
            parts["population"].append(np.full(len(times), name, dtype=object))
            parts["neuron"].append(np.asarray(ids, np.int64))
            parts["time_ms"].append(np.asarray(times, np.float64))
        cols = {
            k: np.concatenate(v) if v else np.zeros((0,), object if k == "population" else None)
            for k, v in parts.items()
        }
        df = pd.DataFrame(cols)
        df["population"] = df["population"].astype(str)
        return df.sort_values(["time_ms", "population", "neuron"], kind="stable").reset_index(
            drop=True
        )
    if kind == "traces":
        _one_run(result, "to_pandas")
        found = traces(result)
        if not found:
            raise _no_traces(result)
        if wide:
            columns = {}
            for m in found:
                for j, i in enumerate(m.neurons):
                    columns[(m.population, m.variable, int(i))] = pd.Series(
                        np.asarray(m.values[:, j]), m.times
                    )
            df = pd.DataFrame(columns)
            df.columns.names = ["population", "variable", "neuron"]
            df.index.name = "time_ms"
            return df.sort_index()
        frames = []
        for m in found:
            s, n = m.values.shape
            frames.append(
                pd.DataFrame(
                    {
                        "population": m.population,
                        "variable": m.variable,
                        "neuron": np.tile(m.neurons, s).astype(np.int64),
                        "time_ms": np.repeat(m.times, n),
                        "value": np.asarray(m.values).reshape(-1),
                    }
                )
            )
        return pd.concat(frames, ignore_index=True)
    raise ValueError(f"to_pandas: `kind` must be 'spikes' or 'traces'; got {kind!r}.")


# ------------------------------------------------------------------------------ Neo


def to_neo(result):
    """A :class:`neo.Block` with one :class:`neo.Segment` holding the run (a batched result:
    one segment per member, ``"batch <i>"``, annotated ``batch``: Neo's trials).

    * one :class:`neo.SpikeTrain` per neuron of every population whose spikes were recorded
      (silent neurons included, so rates average over the whole population): times in ms,
      ``t_start``/``t_stop`` the run's start and end (ms), annotated ``population`` and
      ``neuron``; the block's :class:`neo.Group` named after the population gathers them
      (of every segment);
    * one :class:`neo.AnalogSignal` per :class:`StateTrace`, ``(samples, neurons)``, sampling
      period ``every * dt`` ms, starting at the run's start, in the variable's unit
      (:func:`unit_of`), annotated ``population``, ``variable`` and ``neurons``.

    ``elephant.statistics.mean_firing_rate(train)`` of a train then counts its spikes over
    ``t_stop - t_start``, so the mean over a population's trains is ``result.rate(name)``.
    """
    neo = _require("neo", "to_neo")
    pq = _require("quantities", "to_neo")
    block = neo.Block(name="brainsim run")
    groups = {name: neo.Group(name=name) for name in spiking_populations(result)}
    block.groups.extend(groups.values())
    batch_shape = tuple(getattr(result, "batch_shape", ()))
    members = list(np.ndindex(batch_shape)) if batch_shape else [None]
    for b, index in enumerate(members):
        run = result if index is None else result.batch(index)
        seg = neo.Segment(name="run" if index is None else f"batch {b}")
        if index is not None:
            seg.annotate(batch=b, batch_index=index)
        block.segments.append(seg)
        _neo_segment(neo, pq, run, seg, groups)
    return block


def _neo_segment(neo, pq, run, seg, groups) -> None:
    """Fill ``seg`` with the spike trains and signals of one run."""
    t0 = float(np.ravel(run.t_start)[0])
    t1 = t0 + run.duration
    for name, group in groups.items():
        times, ids = run.spikes(name)
        size = run.population_sizes[run.population_names.index(name)]
        order = np.argsort(ids, kind="stable")
        bounds = np.searchsorted(np.asarray(ids)[order], np.arange(size + 1))
        for i in range(size):
            train = neo.SpikeTrain(
                np.asarray(times)[order[bounds[i] : bounds[i + 1]]],
                units="ms",
                t_start=t0 * pq.ms,
                t_stop=t1 * pq.ms,
                name=f"{name}[{i}]",
                population=name,
                neuron=i,
            )
            seg.spiketrains.append(train)
            group.add(train)
    for m in traces(run):
        signal = neo.AnalogSignal(
            np.asarray(m.values),
            units=unit_of(m.variable) or pq.dimensionless,
            sampling_period=m.every * run.dt * pq.ms,
            t_start=float(m.times[0]) * pq.ms,
            name=f"{m.population}.{m.variable}",
            population=m.population,
            variable=m.variable,
            neurons=np.asarray(m.neurons),
        )
        seg.analogsignals.append(signal)


# ------------------------------------------------------------------------------ NWB


def to_nwb(
    result,
    target,
    *,
    session_description: str = "brainsim simulation",
    identifier: str | None = None,
    session_start_time: datetime.datetime | None = None,
):
    """Write ``result`` in Neurodata Without Borders format (times in seconds).

    * spikes: the file's units table, one unit per neuron of every population whose spikes
      were recorded, ``spike_times`` in s, with columns ``population`` and ``neuron``;
    * traces: one :class:`pynwb.TimeSeries` per :class:`StateTrace` in ``acquisition``,
      named ``"<population>.<variable>"``, ``data`` ``(samples, neurons)`` in the variable's
      unit (``"n/a"`` when unknown), ``starting_time`` s and ``rate`` Hz, the neuron indices
      in its ``description``.

    Arguments:
        target: a path (a new file is written, an existing one overwritten) or a
            ``pynwb.NWBFile`` (filled in and not written).
        session_description, identifier, session_start_time: the NWB file's required
            metadata when ``target`` is a path (defaults: a fixed description, a fresh UUID,
            now in UTC).

    Returns:
        The ``NWBFile``.
    """
    pynwb = _require("pynwb", "to_nwb")
    _one_run(result, "to_nwb")
    if isinstance(target, str | os.PathLike):
        import uuid

        nwbfile = pynwb.NWBFile(
            session_description=session_description,
            identifier=identifier or str(uuid.uuid4()),
            session_start_time=session_start_time or datetime.datetime.now(datetime.UTC),
        )
        path = target
    elif isinstance(target, pynwb.NWBFile):
        nwbfile, path = target, None
    else:
        raise TypeError(
            f"to_nwb: `target` must be a file path or a pynwb.NWBFile; got {type(target).__name__}."
        )
    populations = spiking_populations(result)
    if populations:
        nwbfile.add_unit_column("population", "brainsim population of the neuron")
        nwbfile.add_unit_column("neuron", "index of the neuron within its population")
    for name in populations:
        times, ids = result.spikes(name)
        size = result.population_sizes[result.population_names.index(name)]
        order = np.argsort(ids, kind="stable")
        bounds = np.searchsorted(np.asarray(ids)[order], np.arange(size + 1))
        for i in range(size):
            spikes_s = np.asarray(times, np.float64)[order[bounds[i] : bounds[i + 1]]] * 1e-3
            nwbfile.add_unit(spike_times=spikes_s, population=name, neuron=i)
    for m in traces(result):
        nwbfile.add_acquisition(
            pynwb.TimeSeries(
                name=f"{m.population}.{m.variable}",
                data=np.asarray(m.values),
                unit=unit_of(m.variable) or "n/a",
                starting_time=float(m.times[0]) * 1e-3,
                rate=1e3 / (m.every * result.dt),
                description=(
                    f"StateTrace {m.population!r} {m.variable!r} of neurons "
                    f"{np.asarray(m.neurons).tolist()}"
                ),
            )
        )
    if path is not None:
        with pynwb.NWBHDF5IO(os.fspath(path), "w") as io:
            io.write(nwbfile)
    return nwbfile
