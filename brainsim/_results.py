r"""Reading a :class:`~brainsim.SimulationResult` by name: spikes, traces, rates and weights
of a population or projection, whatever monitor recorded them, and the exporters.

Every accessor converts to NumPy on the host. A batched result (the output of ``jax.vmap``
over :func:`~brainsim.simulate`) has the batch axes in front of every array: regular
quantities keep them (``trace`` values ``(*batch, samples, neurons)``, ``rate`` ``(*batch,)``,
``spike_counts`` ``(*batch, n_steps)`` or ``(*batch, size)``); spikes, whose number differs
between members, come as nested lists of arrays, one per member (``times[b]``, ``ids[b]``).
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import numpy as np

from ._errors import unknown_name_error
from ._monitors import PopulationRate, SpikeList, SpikeRaster, StateTrace, WeightTrace

_PER = ("step", "neuron")


class TraceRecord(NamedTuple):
    """One recorded :class:`StateTrace` as the exporters read it."""

    population: str
    variable: str
    every: int
    """Steps between samples."""
    times: np.ndarray
    """Sample times (ms), ``(samples,)``."""
    values: np.ndarray
    """``(samples, neurons)`` in the variable's own unit."""
    neurons: np.ndarray
    """The recorded neurons' indices within the population."""


def per_option(per: str) -> str:
    """``per`` of ``spike_counts``, or a ValueError naming the choices."""
    if per not in _PER:
        raise ValueError(
            f"spike_counts: `per` must be 'step' (population total per step) or 'neuron' "
            f"(each neuron's total); got {per!r}."
        )
    return per


def monitor_name(monitor) -> str | None:
    """The ``name`` a monitor was given (``None``: unnamed; user monitors may declare one)."""
    name = getattr(monitor, "name", None)
    return name if isinstance(name, str) else None


def check_monitor_names(monitors, owner: str) -> None:
    """Raise if two monitors share a ``name`` (``result[name]`` must find one recording)."""
    seen = set()
    for m in monitors:
        name = monitor_name(m)
        if name is not None and name in seen:
            raise ValueError(
                f"{owner}: two monitors are named {name!r}; give each a distinct name= (it "
                "addresses its recording: result[name])."
            )
        seen.add(name)


def recorded_lines(monitors) -> list[str]:
    """What ``monitors`` record, one short phrase each (for error messages)."""
    lines = []
    for m in monitors:
        if isinstance(m, SpikeRaster):
            what = "all populations" if m.populations is None else ", ".join(m.populations)
            lines.append(f"spikes of {what} (SpikeRaster)")
        elif isinstance(m, SpikeList):
            lines.append(f"spikes of {m.population} (SpikeList)")
        elif isinstance(m, PopulationRate):
            what = "all populations" if m.populations is None else ", ".join(m.populations)
            lines.append(f"spike counts per step of {what} (PopulationRate)")
        elif isinstance(m, StateTrace):
            lines.append(f"trace {m.population!r}, {m.variable!r} (StateTrace)")
        elif isinstance(m, WeightTrace):
            lines.append(f"weights of {m.projection!r} (WeightTrace)")
        else:
            lines.append(type(m).__name__)
        if monitor_name(m) is not None:
            lines[-1] += f" named {monitor_name(m)!r}"
    return lines


def _nested(shape: tuple[int, ...], values: list):
    """``values`` (row-major over ``shape``) as nested lists of that shape."""
    if len(shape) <= 1:
        return list(values)
    step = len(values) // shape[0]
    return [_nested(shape[1:], values[i * step : (i + 1) * step]) for i in range(shape[0])]


class ResultAccess(eqx.Module):
    """The by-name accessors of :class:`~brainsim.SimulationResult` (which holds the fields
    they read: ``monitors``, ``recordings``, ``population_names``, ``dt``, ...)."""

    # ---------------------------------------------------------------------- structure

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """The batch axes of a ``vmap``-ed result (``()`` for a single run)."""
        return tuple(np.shape(self.start[0]))

    def batch(self, index):
        """One element of a batched (``vmap``-ed) result: ``index`` an int, or a tuple of ints
        for nested ``vmap``."""
        return jax.tree.map(lambda x: x[index], self)

    def _members(self, fn) -> list:
        """``fn`` applied to every member of a batched result, row-major over the batch."""
        return [fn(self.batch(idx)) for idx in np.ndindex(self.batch_shape)]

    def _stacked(self, fn) -> np.ndarray:
        """``fn(member)`` (an array) for every member, stacked with the batch axes in front."""
        if not self.batch_shape:
            return fn(self)
        values = [np.asarray(v) for v in self._members(fn)]
        return np.stack(values).reshape(self.batch_shape + values[0].shape)

    def recorded(self) -> list[str]:
        """What this run recorded, one line per monitor (e.g. ``"trace 'E', 'v'
        (StateTrace)"``)."""
        return recorded_lines(self.monitors)

    def _missing(self, what: str, fix: str) -> ValueError:
        got = "; ".join(self.recorded()) or "nothing (record=() was empty)"
        return ValueError(f"No {what} was recorded (recorded: {got}). {fix}")

    def _check_population(self, population: str) -> int:
        if population not in self.population_names:
            raise unknown_name_error("population", population, self.population_names)
        return self.population_names.index(population)

    def __getitem__(self, name):
        """The recording of the monitor given ``name=`` (or at position ``name``, an int)."""
        if isinstance(name, int):
            return self.recordings[name]
        names = [monitor_name(m) for m in self.monitors]
        if name not in names:
            valid = [n for n in names if n is not None]
            if not valid:
                raise KeyError(
                    f"result[{name!r}]: no monitor was given a name; pass name= to a monitor "
                    f"(e.g. bs.StateTrace('E', 'v', name={name!r})) or index by position."
                )
            raise unknown_name_error("monitor name", name, valid, where="result[...]")
        return self.recordings[names.index(name)]

    def _find(self, kind, predicate):
        for m, r in zip(self.monitors, self.recordings, strict=True):
            if isinstance(m, kind) and predicate(m):
                return m, r
        return None

    # ---------------------------------------------------------------------- spikes

    def spikes(self, population: str):
        """``(times_ms, ids)`` of every spike of ``population``, sorted by time then index (one
        entry per spike: a source channel emitting 2 spikes in a step appears twice). Needs a
        :class:`SpikeRaster` or :class:`SpikeList` of the population.

        A batched result gives ``(times, ids)`` as lists with one array per member (nested
        lists for nested ``vmap``)."""
        i = self._check_population(population)
        if self.batch_shape:
            pairs = self._members(lambda r: r.spikes(population))
            return (
                _nested(self.batch_shape, [t for t, _ in pairs]),
                _nested(self.batch_shape, [n for _, n in pairs]),
            )
        steps, ids = self._spike_steps(population, i)
        return self._t0() + self.timing.spike_time(steps, self.dt), ids

    def _spike_steps(self, population: str, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, ids)`` of one (unbatched) run's spikes, steps counted from its start."""
        found = self._find(
            SpikeRaster, lambda m: m.populations is None or population in m.populations
        )
        if found is not None:
            rows = np.asarray(found[1][population])
            # Sources are stored as one count byte per channel, neurons as packed bits.
            counts = (
                rows
                if self.population_is_source[i]
                else np.unpackbits(rows, axis=1, count=self.population_sizes[i])
            )
            steps, ids = np.nonzero(counts)
            reps = counts[steps, ids].astype(np.int64)
            return np.repeat(steps, reps), np.repeat(ids, reps)
        found = self._find(SpikeList, lambda m: m.population == population)
        if found is not None:
            buf = found[1]
            n = min(int(np.asarray(buf.total)), found[0].capacity)
            reps = np.asarray(buf.counts)[:n].astype(np.int64)
            steps = np.repeat(np.asarray(buf.steps)[:n], reps)
            ids = np.repeat(np.asarray(buf.ids)[:n], reps)
            return steps, ids
        raise self._missing(
            f"spike monitor of population {population!r}",
            "Pass record=(bs.SpikeRaster(),) or bs.SpikeList(...) to simulate.",
        )

    def spike_counts(self, population: str, *, per: str = "step") -> np.ndarray:
        """Spike counts of ``population``.

        ``per="step"`` (default): the population's total in every step, ``(n_steps,)``
        float32, from a :class:`PopulationRate` or any spike monitor. ``per="neuron"``: each
        neuron's total over the run, ``(size,)`` int64 (Brian2's ``SpikeMonitor.count``), from
        a :class:`SpikeRaster` or :class:`SpikeList`. Batched: the batch axes in front.
        """
        per_option(per)
        i = self._check_population(population)
        if per == "neuron":
            size = self.population_sizes[i]

            def per_neuron(r):
                _, ids = r._spike_steps(population, i)
                return np.bincount(ids, minlength=size).astype(np.int64)

            return self._stacked(per_neuron)
        found = self._find(
            PopulationRate, lambda m: m.populations is None or population in m.populations
        )
        if found is not None:
            return np.asarray(found[1][population])

        def per_step(r):
            steps, _ = r._spike_steps(population, i)
            return np.bincount(steps, minlength=self.n_steps).astype(np.float32)

        return self._stacked(per_step)

    def rate(self, population: str):
        """Mean firing rate of ``population`` over the run (Hz): spikes / (size · duration).
        A float; an array ``(*batch,)`` for a batched result."""
        size = self.population_sizes[self._check_population(population)]
        total = np.sum(self.spike_counts(population), axis=-1, dtype=np.float64)
        rate = total / (size * self.duration * 1e-3)
        return float(rate) if np.ndim(rate) == 0 else rate

    # ---------------------------------------------------------------------- traces, weights

    def trace(self, population: str, variable: str) -> tuple[np.ndarray, np.ndarray]:
        """``(times_ms, values)`` of a :class:`StateTrace`: values ``(samples, neurons)`` in
        the variable's own unit (``v``: mV), batched ``(*batch, samples, neurons)``; times
        ``(samples,)`` from the run's start (the first member's, for a batch)."""
        self._check_population(population)
        found = self._find(
            StateTrace, lambda m: m.population == population and m.variable == variable
        )
        if found is None:
            raise self._missing(
                f"StateTrace({population!r}, {variable!r})",
                f"Pass record=(bs.StateTrace({population!r}, {variable!r}),) to simulate.",
            )
        return self._sampled(*found)

    def _sampled(self, monitor, values) -> tuple[np.ndarray, np.ndarray]:
        """``(times_ms, values)`` of a recording sampled every ``monitor.every`` steps."""
        values = np.asarray(values)
        n = values.shape[len(self.batch_shape)]
        return self._t0() + np.arange(n) * monitor.every * self.dt, values

    def weights(self, projection: str) -> np.ndarray:
        """Final weights of a plastic projection, in its storage (Dense: ``(n_pre, n_post)``;
        Sparse: ``(n_pre, fan_out)`` aligned with ``connectivity.targets``); use
        ``network.weights(result.state, name)`` for the dense matrix of any layout (static
        projections included). Batched: the batch axes in front."""
        plastic = self.state.plasticity
        if projection not in plastic:
            raise unknown_name_error(
                "plastic projection (static weights are network.weights(state, name))",
                projection,
                list(plastic),
            )
        return np.asarray(plastic[projection].weights)

    def weight_trace(self, projection: str) -> tuple[np.ndarray, np.ndarray]:
        """``(times_ms, weights[samples, ...])`` of a :class:`WeightTrace` (batched: the batch
        axes in front of the samples)."""
        found = self._find(WeightTrace, lambda m: m.projection == projection)
        if found is None:
            raise self._missing(
                f"WeightTrace({projection!r})",
                f"Pass record=(bs.WeightTrace({projection!r}),) to simulate.",
            )
        return self._sampled(*found)

    # ---------------------------------------------------------------------- exporters

    def spiking_populations(self) -> list[str]:
        """The populations whose spikes this run recorded, in network order."""
        names = []
        for name in self.population_names:
            for m in self.monitors:
                if (
                    isinstance(m, SpikeRaster) and (m.populations is None or name in m.populations)
                ) or (isinstance(m, SpikeList) and m.population == name):
                    names.append(name)
                    break
        return names

    def trace_records(self) -> list[TraceRecord]:
        """Every :class:`StateTrace` recorded (one run: select a batch member first)."""
        out = []
        for m in self.monitors:
            if isinstance(m, StateTrace):
                times, values = self.trace(m.population, m.variable)
                ids = np.arange(values.shape[-1]) if m.neurons is None else np.asarray(m.neurons)
                out.append(TraceRecord(m.population, m.variable, m.every, times, values, ids))
        return out

    def to_pandas(self, kind: str = "spikes", *, wide: bool = False):
        """This run as a :class:`pandas.DataFrame` (``pip install brainsim[interop]``):
        :func:`brainsim.interop.to_pandas`."""
        from . import interop

        return interop.to_pandas(self, kind, wide=wide)

    def to_neo(self):
        """This run as a :class:`neo.Block` (``pip install brainsim[interop]``):
        :func:`brainsim.interop.to_neo`."""
        from . import interop

        return interop.to_neo(self)

    def to_nwb(self, target, **kwargs):
        """This run written to an NWB file or added to an ``NWBFile`` (``pip install
        brainsim[interop]``): :func:`brainsim.interop.to_nwb`."""
        from . import interop

        return interop.to_nwb(self, target, **kwargs)
