r"""Declarative recording: small values that say what to record, with preallocated buffers.

Pass a tuple of monitors to :func:`~brainsim.simulate`; each one's memory is fixed before the
run and reported by ``monitor.nbytes(network, n_steps)``:

* :class:`SpikeRaster` — every spike, bit-packed: ``n_steps × ceil(n/8)`` bytes per neuron
  population (spike sources: one byte per channel and step, the spike count; a count above
  255 in one step is a run-time fault reported after the run).
* :class:`SpikeList` — compact ``(step, index, count)`` entries up to ``capacity``; more spikes
  than that is a run-time fault reported after the run with the capacity needed.
* :class:`StateTrace` — one state variable of chosen neurons every ``every`` steps.
* :class:`PopulationRate` — the number of spikes of each population in every step.
* :class:`WeightTrace` — the weights of a plastic projection every ``every`` steps.

The result reads recordings by name, whichever monitor made them: ``result.spikes("E")``,
``result.trace("E", "v")``, ``result.rate("E")``, ``result.spike_counts("E", per="neuron")``
(:mod:`brainsim._results`).

Every driver treats every monitor alike, through the protocol of :class:`AbstractMonitor`
(what it records per step, what it sees under :func:`~brainsim.simulate_sharded`, how
:func:`~brainsim.run_long` streams it to disk); the built-in monitors are ordinary users of
that protocol, so a monitor written outside brainsim works in every driver.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._errors import check_name, check_positive_int, integer_array, unknown_name_error
from .kernels import fast_sum, for_each_chunk, segment_sums, spike_events

INT32_MAX = int(np.iinfo(np.int32).max)


def saturating_add(total, extra):
    """``total + extra`` for non-negative int32 counts, held at :data:`INT32_MAX` instead of
    wrapping around to a small or negative number; a count at the maximum means "at least"."""
    return total + jnp.minimum(extra, INT32_MAX - total)


def count_as_int32(x):
    """A non-negative floating-point count as int32, :data:`INT32_MAX` if it does not fit."""
    fits = x < 2.0**31
    return jnp.where(fits, jnp.minimum(x, 2.0**31 - 256).astype(jnp.int32), INT32_MAX)


def count_text(count: int) -> str:
    """A count for a message: a saturated one (:func:`saturating_add`) reads "at least"."""
    return f"at least {count}" if count >= INT32_MAX else str(count)


def _indices(owner: str, name: str, values) -> tuple[int, ...]:
    return tuple(int(i) for i in integer_array(name, values, owner=owner).ravel())


def _population_names(network, populations, owner) -> tuple[str, ...]:
    names = [p.name for p in network.populations]
    if populations is None:
        return tuple(names)
    if isinstance(populations, str):
        populations = (populations,)
    for name in populations:
        if name not in names:
            raise unknown_name_error("population", name, names, where=owner)
    return tuple(populations)


def check_monitor_name(name, owner: str) -> str | None:
    """A monitor's optional ``name=``: ``None`` or a non-empty string."""
    if name is None:
        return None
    return check_name("name", name, owner=owner)


class Stream(NamedTuple):
    """One quantity a monitor streams to disk in :func:`~brainsim.run_long`: an append-only
    file of rows, every row of ``shape`` and ``dtype``.

    Example: ``Stream("values", "<f4", ())`` is one float32 per row; ``Stream("spikes/E/ids",
    "<i4", (), every=None)`` one neuron index per spike.
    """

    key: str
    """What the rows hold, unique among the monitor's streams; :meth:`StoredRun.recording`
    returns ``{key: rows}`` and the run's accessors look quantities up by key
    (``"spikes/<population>/steps"`` and ``".../ids"``, ``"spike_counts/<population>"``,
    ``"trace/<population>/<variable>"``, ``"weights/<projection>"``)."""
    dtype: str
    """NumPy dtype string of the rows (``np.dtype(x).str``, e.g. ``"<f4"``)."""
    shape: tuple[int, ...] = ()
    """Shape of one row."""
    every: int | None = 1
    """Rows are samples: row ``i`` holds the value at step ``i * every`` of the run (times
    ``i * every * dt`` from its start). ``None``: rows are events (spike entries), any number
    per chunk, with their own step stream."""

    def to_json(self) -> dict:
        return {
            "key": self.key,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "every": self.every,
        }


class AbstractMonitor(eqx.Module):
    """A recording, and everything a driver needs to know about it.

    The per-step part (every driver; all methods are traced inside the compiled loop):

    * ``init(network, n_steps, dtype)``: the buffer carried through the loop (or ``None``);
    * ``update(network, buffer, state_before, spikes, k)``: the buffer after step ``k``;
    * ``per_step(network, state_before, spikes, k)``: a value stacked by ``lax.scan`` into the
      ``(n_steps, ...)`` recording (or ``None``);
    * ``nbytes`` and ``describe`` (abstract): the memory of a run's recording, one line for it;
    * ``overflow`` / ``describe_overflow``: items that did not fit a fixed buffer.

    ``state_before`` is the :class:`~brainsim.NetworkState` at the start of step ``k`` (read a
    population with ``network.population_state(state, name)`` and
    ``network.receptor_states(state, name)``), ``spikes`` maps every population to its spikes
    of step ``k``. The recording is the ``per_step`` output if there is one, else the buffer
    (``result.recordings[i]``, or ``result[name]`` for a monitor with a ``name`` field: every
    built-in monitor takes ``name=``, and a monitor of your own may declare one).

    **Across shards (gather).** In :func:`~brainsim.simulate_sharded` a monitor sees exactly
    what it sees in :func:`~brainsim.simulate`: the whole network's state and spikes, in the
    single-device layout, computed identically on every device (its buffer and outputs are
    therefore replicated and need no combining). The driver builds that view by all-gathering
    the partitioned state; the compiler removes the gathers of the state no monitor reads, so a
    monitor costs the communication of what it reads. A monitor has nothing to declare. (The
    ``network`` it is given there holds the structure, names, sizes and static fields, but
    not the arrays: parameters and synapses stay split over the devices.)

    **Streaming to disk.** :func:`~brainsim.run_long` runs the same loop in chunks and appends
    each chunk's recording to files:

    * ``streams(network, recording, n_steps)``: the files, as :class:`Stream` values, given the
      shapes (:class:`jax.ShapeDtypeStruct`) of one ``n_steps``-step chunk's recording;
    * ``rows(network, recording, k0)``: on the host, one chunk's recording (NumPy-convertible
      arrays; ``k0`` the network's absolute step at the chunk's start) as ``{key: rows}``.

    By default every array of the recording is one stream of per-step rows keyed by its path
    in the recording (``"values"`` for a single array), which is right for any monitor whose
    recording has one row per step (every ``per_step`` monitor); other monitors override both.
    :class:`~brainsim.StoredRun` reads the rows back (``run.recording(monitor)``).

    Example (a monitor written outside brainsim: it works in ``simulate``, ``run_long`` and
    ``simulate_sharded`` as it stands)::

        class MeanVoltage(bs.AbstractMonitor):
            population: str = eqx.field(static=True)

            def per_step(self, network, state_before, spikes, k):
                return jnp.mean(network.population_state(state_before, self.population).v)

            def nbytes(self, network, n_steps):
                return 4 * n_steps

            def describe(self, network, n_steps):
                return f"MeanVoltage {self.population}: {4 * n_steps / 1e6:.2f} MB"

        result = bs.simulate(net, 100.0, key=key, record=(MeanVoltage("E"),))
        v_mean = result.recordings[0]                       # (n_steps,)
        run = bs.run_long(net, 60_000.0, "out", key=key, record=(MeanVoltage("E"),))
        v_mean = run.recording(0)["values"]                 # (n_steps,), memory-mapped
    """

    def init(self, network, n_steps: int, dtype):
        return None

    def update(self, network, buffer, state_before, spikes, k):
        return buffer

    def per_step(self, network, state_before, spikes, k):
        return None

    @abc.abstractmethod
    def nbytes(self, network, n_steps: int) -> int:
        """Memory of the recording, bytes."""

    @abc.abstractmethod
    def describe(self, network, n_steps: int) -> str:
        """One line: what is recorded and its size."""

    def overflow(self, buffer):
        """Number of items that did not fit (0 when the monitor cannot overflow), an int32 held
        at :data:`INT32_MAX` (:func:`saturating_add`) rather than wrapping."""
        return None

    def describe_overflow(self, count: int) -> str:
        """The error message for ``count`` items that did not fit (``count`` > 0)."""
        return f"{type(self).__name__}: {count_text(count)} items did not fit its buffer."

    def resized_for(self, count: int) -> str | None:
        """The monitor to record instead after ``count`` items did not fit, as code for a
        message (``None``: no advice); :func:`~brainsim.run_long` tells the user to resume
        with it."""
        return None

    def streams(self, network, recording, n_steps: int) -> tuple[Stream, ...]:
        """The files ``run_long`` appends this monitor's recording to, from the shapes of one
        ``n_steps``-step chunk's recording (a pytree of :class:`jax.ShapeDtypeStruct`)."""
        return per_step_streams(self, recording, n_steps)

    def rows(self, network, recording, k0: int) -> dict:
        """``{stream key: rows}`` of one chunk's recording, on the host (NumPy).

        ``k0`` is the network's absolute step at the chunk's start (spike steps are stored
        absolute)."""
        return dict(_keyed_leaves(recording))


def _keyed_leaves(tree, prefix: str = ""):
    """``(key, leaf)`` pairs of a recording: the leaf's path joined by ``/`` (after
    ``prefix``), ``"values"`` for a recording that is a single array."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        parts = [prefix] if prefix else []
        for entry in path:
            for attr in ("key", "name", "idx"):
                if hasattr(entry, attr):
                    parts.append(str(getattr(entry, attr)))
                    break
        out.append(("/".join(parts) or "values", leaf))
    return out


def per_step_streams(monitor, recording, n_steps: int, prefix: str = "") -> tuple[Stream, ...]:
    """One stream of per-step rows per array of ``recording`` (the default of
    :meth:`AbstractMonitor.streams`); refused for arrays without one row per step."""
    streams = []
    for key, leaf in _keyed_leaves(recording, prefix):
        if leaf.shape[:1] != (n_steps,):
            raise TypeError(
                f"run_long: cannot stream {type(monitor).__name__}: its recording {key!r} has "
                f"shape {leaf.shape}, not one row per step of a {n_steps}-step chunk. Record "
                "per step (per_step) or give the monitor `streams` and `rows` methods "
                "(brainsim.AbstractMonitor)."
            )
        streams.append(Stream(key, np.dtype(leaf.dtype).str, tuple(leaf.shape[1:])))
    return tuple(streams)


class SpikeRaster(AbstractMonitor):
    """All spikes of ``populations`` (default all) as packed per-step bit rows; read with
    ``result.spikes(population)`` (times in ms, neuron indices)."""

    populations: tuple[str, ...] | None = eqx.field(static=True, default=None)
    name: str | None = eqx.field(static=True, default=None, kw_only=True)
    """Addresses the recording: ``result[name]``."""

    def __check_init__(self):
        check_monitor_name(self.name, "SpikeRaster")

    def names(self, network):
        return _population_names(network, self.populations, "SpikeRaster")

    def _sources(self, network):
        return [n for n in self.names(network) if network.population(n).is_source]

    def init(self, network, n_steps, dtype):
        # Spikes of recorded spike-source channels beyond the 255 that one byte holds per step.
        return jnp.zeros((), jnp.int32) if self._sources(network) else None

    def update(self, network, buffer, state_before, spikes, k):
        if buffer is None:
            return None
        # One sum over every recorded source (one kernel, however many sources; their spikes
        # are slices of their groups', which XLA joins back), in the spikes' floating-point
        # type (exact while a step's excess is below 2**24 in float32, where the counts
        # themselves stop being exact integers), then added without wrapping: an int32 sum of
        # huge counts could come out small.
        sources = jnp.concatenate([jnp.ravel(spikes[n]) for n in self._sources(network)])
        excess = fast_sum(jnp.maximum(sources - 255, 0))
        return saturating_add(buffer, count_as_int32(excess))

    def overflow(self, buffer):
        return buffer

    def describe_overflow(self, count):
        return (
            f"SpikeRaster: {count_text(count)} spikes of spike sources did not fit one byte per "
            "channel and step (more than 255 spikes of one channel in one step); record those "
            "sources with SpikeList or PopulationRate instead."
        )

    def per_step(self, network, state_before, spikes, k):
        out = {}
        for name in self.names(network):
            s = spikes[name]
            if network.population(name).is_source:
                out[name] = jnp.clip(s, 0, 255).astype(jnp.uint8)
            else:
                out[name] = jnp.packbits((s != 0).astype(jnp.uint8))
        return out

    def nbytes(self, network, n_steps):
        total = 0
        for name in self.names(network):
            p = network.population(name)
            total += n_steps * (p.size if p.is_source else -(-p.size // 8))
        return total

    def describe(self, network, n_steps):
        return (
            f"SpikeRaster {list(self.names(network))}: {self.nbytes(network, n_steps) / 1e6:.2f} MB"
        )

    def streams(self, network, recording, n_steps):
        return tuple(s for name in self.names(network) for s in spike_streams(name))

    def rows(self, network, recording, k0):
        out = {}
        for name in self.names(network):
            steps, ids = _raster_events(
                np.asarray(recording[name]), network.population(name).is_source
            )
            out[f"spikes/{name}/steps"] = steps.astype(np.int64) + k0
            out[f"spikes/{name}/ids"] = ids.astype(np.int32)
        return out


def spike_streams(population: str) -> tuple[Stream, Stream]:
    """The two streams of a population's spikes: the absolute step (int64, exact however
    long the run) and the neuron index (int32) of every spike, sorted by step then index."""
    return (
        Stream(f"spikes/{population}/steps", np.dtype(np.int64).str, every=None),
        Stream(f"spikes/{population}/ids", np.dtype(np.int32).str, every=None),
    )


_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(bool)
"""Row ``v``: the bits of byte ``v``, most significant first (the order of ``packbits``)."""


def _raster_events(rows: np.ndarray, is_source: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, ids)`` of the spikes in a SpikeRaster recording, sorted by step then id.

    Neuron rows are packed bits (big-endian, so the row-major bit order is the neuron order);
    source rows are one count byte per channel and a count of ``c`` gives ``c`` entries.
    Spikes are sparse: the rows are scanned 8 bytes at a time and only nonzero words are
    unpacked (unpacking every bit costs more than simulating a small network).
    """
    n_cols = rows.shape[1]
    flat = np.ascontiguousarray(rows, np.uint8).reshape(-1)
    if flat.size % 8:
        flat = np.concatenate([flat, np.zeros(-flat.size % 8, np.uint8)])
    words = np.flatnonzero(flat.view(np.uint64))
    j = np.flatnonzero(flat.reshape(-1, 8)[words])
    byte = words[j // 8] * 8 + j % 8  # indices of the nonzero bytes, in order
    values = flat[byte]
    if is_source:
        steps, cols = np.divmod(byte, n_cols)
        reps = values.astype(np.int64)
        if np.any(reps > 1):
            steps, cols = np.repeat(steps, reps), np.repeat(cols, reps)
        return steps, cols
    which, bit = np.nonzero(_BITS[values])
    return np.divmod(byte[which] * 8 + bit, n_cols * 8)


class SpikeListBuffer(NamedTuple):
    steps: jax.Array
    ids: jax.Array
    counts: jax.Array
    total: jax.Array
    """Entries produced so far (may exceed the capacity: then the run is reported as failed);
    held at :data:`INT32_MAX` rather than wrapping."""
    too_many: jax.Array
    """Number of entries whose spike count exceeded 255 (one step, one neuron); held at
    :data:`INT32_MAX` rather than wrapping."""


class SpikeList(AbstractMonitor):
    """Compact ``(step, index, count)`` entries of one population, up to ``capacity``.

    If more spikes occur, the first ``capacity`` are kept and the run raises afterwards with
    the capacity needed; use :class:`SpikeRaster` when the number is unknown.
    """

    population: str = eqx.field(static=True)
    capacity: int = eqx.field(static=True)
    chunk_size: int = eqx.field(static=True, default=64)
    name: str | None = eqx.field(static=True, default=None)
    """Addresses the recording: ``result[name]``."""

    def __init__(
        self, population: str, capacity: int, chunk_size: int = 64, *, name: str | None = None
    ):
        self.name = check_monitor_name(name, "SpikeList")
        self.population = check_name("population", population, owner="SpikeList")
        self.capacity = check_positive_int(
            "capacity", capacity, owner="SpikeList", what=" (spike entries kept, e.g. 100_000)"
        )
        self.chunk_size = check_positive_int(
            "chunk_size",
            chunk_size,
            owner="SpikeList",
            what=" (spikes stored per loop pass, e.g. 64)",
        )

    def init(self, network, n_steps, dtype):
        _population_names(network, self.population, "SpikeList")
        z = jnp.zeros((self.capacity,), jnp.int32)
        return SpikeListBuffer(
            z,
            z,
            jnp.zeros((self.capacity,), jnp.uint8),
            jnp.zeros((), jnp.int32),
            jnp.zeros((), jnp.int32),
        )

    def update(self, network, buffer, state_before, spikes, k):
        values = spikes[self.population]
        events = spike_events(values)
        n = values.shape[0]

        def body(idx, start, buf):
            # From min(total, capacity): positions at or past the capacity are dropped, and
            # the index cannot overflow however large the saturating total has grown.
            pos = jnp.minimum(buf.total, self.capacity) + start + jnp.arange(idx.shape[0])
            pos = jnp.where(idx < n, pos, self.capacity)  # padding → dropped
            cnt = values.at[idx].get(mode="fill", fill_value=0)
            return buf._replace(
                steps=buf.steps.at[pos].set(k, mode="drop"),
                ids=buf.ids.at[pos].set(idx, mode="drop"),
                counts=buf.counts.at[pos].set(jnp.clip(cnt, 0, 255).astype(jnp.uint8), mode="drop"),
                too_many=saturating_add(buf.too_many, jnp.sum(cnt > 255, dtype=jnp.int32)),
            )

        buffer = for_each_chunk(events, self.chunk_size, body, buffer)
        return buffer._replace(total=saturating_add(buffer.total, events.count))

    def overflow(self, buffer):
        return saturating_add(jnp.maximum(buffer.total - self.capacity, 0), buffer.too_many)

    def describe_overflow(self, count):
        needed = "more than 2147483647" if count >= INT32_MAX else f">= {self.capacity + count}"
        return (
            f"SpikeList {self.population!r}: {count_text(count)} spike entries (or counts "
            f"above 255) did not fit capacity {self.capacity}; rerun with capacity {needed} "
            "or record with SpikeRaster."
        )

    def resized_for(self, count):
        return f"SpikeList({self.population!r}, capacity >= {self.capacity + count})"

    def streams(self, network, recording, n_steps):
        return spike_streams(self.population)

    def rows(self, network, recording, k0):
        # Sliced on the host: slicing the device arrays would compile one op per length.
        n = min(int(np.asarray(recording.total)), self.capacity)
        reps = np.asarray(recording.counts)[:n].astype(np.int64)
        steps = np.repeat(np.asarray(recording.steps)[:n], reps).astype(np.int64) + k0
        ids = np.repeat(np.asarray(recording.ids)[:n], reps).astype(np.int32)
        return {f"spikes/{self.population}/steps": steps, f"spikes/{self.population}/ids": ids}

    def nbytes(self, network, n_steps):
        return self.capacity * 9

    def describe(self, network, n_steps):
        return (
            f"SpikeList {self.population!r}: up to {self.capacity} spikes, "
            f"{self.nbytes(network, n_steps) / 1e6:.2f} MB"
        )


class StateTrace(AbstractMonitor):
    """State variable ``variable`` of ``neurons`` (default all) in ``population``, sampled at
    the start of every ``every``-th step (times :math:`k\\,\\Delta t`, k = 0, every, ...).

    ``variable`` is a field of the neuron model's state (``"v"``, ``"w"``, ...) or, written
    ``"receptor.field"``, a field of one of the population's synaptic traces (the state of the
    receptor's kinetics: ``g`` of an :class:`ExponentialSynapse`, ``g`` and ``h`` of an
    :class:`AlphaSynapse`, ``decay`` and ``rise`` of a :class:`DualExponentialSynapse`).
    An unknown name raises an error listing the valid ones. The recording keeps the
    variable's own dtype.

    Example:
        >>> record = (bs.StateTrace("E", "v"), bs.StateTrace("E", "exc.g", neurons=[0, 1]))
        >>> result = bs.simulate(net, 100.0, key=jax.random.key(0), record=record)
        >>> times, g = result.trace("E", "exc.g")  # (samples,), (samples, 2)
    """

    population: str = eqx.field(static=True)
    variable: str = eqx.field(static=True)
    neurons: tuple[int, ...] | None = eqx.field(static=True)
    every: int = eqx.field(static=True)
    name: str | None = eqx.field(static=True, default=None)
    """Addresses the recording: ``result[name]``."""

    def __init__(
        self,
        population: str,
        variable: str,
        neurons: Sequence[int] | None = None,
        every: int = 1,
        *,
        name: str | None = None,
    ):
        self.name = check_monitor_name(name, "StateTrace")
        self.population = check_name("population", population, owner="StateTrace")
        self.variable = check_name("variable", variable, owner="StateTrace")
        self.neurons = None if neurons is None else _indices("StateTrace", "neurons", neurons)
        self.every = check_positive_int("every", every, owner="StateTrace", what=" (steps)")

    def receptor_field(self) -> tuple[str | None, str]:
        """``(receptor, field)`` for a synaptic trace ``"receptor.field"``, else
        ``(None, variable)``."""
        receptor, dot, field = self.variable.rpartition(".")
        return (receptor, field) if dot else (None, self.variable)

    def _variable(self, network, state):
        p = network.population(self.population)
        receptor, field = self.receptor_field()
        receptors = network.receptor_states(state, p.name)
        if receptor is None:
            values = network.population_state(state, p.name)
        else:
            rs = receptors.get(receptor)
            values = None if rs is None else rs.kinetics
        if field in getattr(values, "_fields", ()):
            return getattr(values, field)
        valid = list(network.population_state(state, p.name)._fields) + [
            f"{r}.{f}" for r, rs in receptors.items() for f in getattr(rs.kinetics, "_fields", ())
        ]
        raise unknown_name_error(
            f"variable of {type(p.model).__name__} population (or 'receptor.field' of a "
            "synaptic trace)",
            self.variable,
            valid,
            where=f"StateTrace {self.population!r}",
        )

    def _select(self, network, state):
        p = network.population(self.population)
        x = self._variable(network, state)
        if self.neurons is not None:
            bad = [i for i in self.neurons if not 0 <= i < p.size]
            if bad:
                raise ValueError(
                    f"StateTrace {self.population!r}: neuron index {bad[0]} out of range "
                    f"0..{p.size - 1}."
                )
            x = x[jnp.asarray(self.neurons)]
        return x

    def n_samples(self, n_steps):
        return -(-n_steps // self.every)

    def init(self, network, n_steps, dtype):
        _population_names(network, self.population, "StateTrace")
        example = _recorded_example(self._select, network, dtype)
        return jnp.zeros((self.n_samples(n_steps),) + example.shape, example.dtype)

    def update(self, network, buffer, state_before, spikes, k):
        return _sample(buffer, self._select(network, state_before), k, self.every)

    def nbytes(self, network, n_steps):
        example = _recorded_example(self._select, network, None)
        return self.n_samples(n_steps) * int(np.prod(example.shape)) * example.dtype.itemsize

    def describe(self, network, n_steps):
        return (
            f"StateTrace {self.population}.{self.variable} every {self.every} step(s): "
            f"{self.nbytes(network, n_steps) / 1e6:.2f} MB"
        )

    def streams(self, network, recording, n_steps):
        what = f"StateTrace {self.population}.{self.variable}"
        key = f"trace/{self.population}/{self.variable}"
        return (sample_stream(what, key, recording, n_steps, self.every),)

    def rows(self, network, recording, k0):
        return {f"trace/{self.population}/{self.variable}": np.asarray(recording)}


def _sample(buffer, x, k, every: int):
    """``buffer`` with ``x`` stored as sample ``k // every`` if step ``k`` is a sampled one."""
    if every == 1:
        return lax.dynamic_update_index_in_dim(buffer, x, k, 0)
    i = k // every
    old = lax.dynamic_index_in_dim(buffer, i, 0, keepdims=False)
    return lax.dynamic_update_index_in_dim(buffer, jnp.where(k % every == 0, x, old), i, 0)


def sample_stream(what: str, key: str, recording, n_steps: int, every: int) -> Stream:
    """The stream of a recording sampled every ``every`` steps; a chunk must hold a whole
    number of samples, or the samples of the next chunk would fall on other steps."""
    if n_steps % every:
        raise ValueError(
            f"run_long: {what} samples every {every} steps but a chunk is {n_steps} steps; "
            f"make `chunk` a multiple of {every} steps."
        )
    return Stream(key, np.dtype(recording.dtype).str, tuple(recording.shape[1:]), every)


def _recorded_example(select, network, dtype):
    """Shape and dtype of ``select(network, state)`` (the recorded variable's own dtype) in a
    state of floating-point precision ``dtype``: ``None``, or a dtype that is not floating
    (the first state array of a spike generator is an integer), means JAX's default."""
    dtype = dtype if dtype is not None and jnp.issubdtype(dtype, jnp.floating) else None
    return jax.eval_shape(lambda: select(network, network.init(jax.random.key(0), dtype=dtype)))


class PopulationRate(AbstractMonitor):
    """Total spike count of each population in every step (rates follow by dividing by
    ``size * dt``); read with ``result.spike_counts(population)`` or ``result.rate``."""

    populations: tuple[str, ...] | None = eqx.field(static=True, default=None)
    name: str | None = eqx.field(static=True, default=None, kw_only=True)
    """Addresses the recording: ``result[name]``."""

    def __check_init__(self):
        check_monitor_name(self.name, "PopulationRate")

    def names(self, network):
        return _population_names(network, self.populations, "PopulationRate")

    def per_step(self, network, state_before, spikes, k):
        # One kernel for all populations: members of a group are consecutive slices of its
        # spike vector, which XLA joins back into the vector (no copy), so the cost per step
        # does not grow with the number of populations recorded.
        names = self.names(network)
        arrays = [jnp.ravel(spikes[name]) for name in names]
        sums = segment_sums(jnp.concatenate(arrays), [a.size for a in arrays], dtype=jnp.float32)
        return {name: sums[i] for i, name in enumerate(names)}

    def nbytes(self, network, n_steps):
        return 4 * n_steps * len(self.names(network))

    def describe(self, network, n_steps):
        return f"PopulationRate {list(self.names(network))}: {self.nbytes(network, n_steps) / 1e6:.2f} MB"

    def streams(self, network, recording, n_steps):
        return per_step_streams(self, recording, n_steps, prefix="spike_counts")

    def rows(self, network, recording, k0):
        return dict(_keyed_leaves(recording, "spike_counts"))


class WeightTrace(AbstractMonitor):
    """Weights of a plastic projection every ``every`` steps, sampled at the start of the step
    (times :math:`k\\,\\Delta t`, k = 0, every, ...) like :class:`StateTrace`.

    ``synapses``: ``(pre, post)`` index pairs to record (a duplicate pair records the summed
    weight; a pair without a synapse records 0); ``None`` records the whole stored weight array
    (``(n_pre, n_post)`` for Dense, ``(n_pre, fan_out)`` for Sparse) — mind the memory.
    Read it with ``result.weight_trace(projection)``.
    """

    projection: str = eqx.field(static=True)
    synapses: tuple[tuple[int, int], ...] | None = eqx.field(static=True)
    every: int = eqx.field(static=True)
    name: str | None = eqx.field(static=True, default=None)
    """Addresses the recording: ``result[name]``."""

    def __init__(self, projection: str, synapses=None, every: int = 1, *, name: str | None = None):
        self.name = check_monitor_name(name, "WeightTrace")
        self.projection = check_name("projection", projection, owner="WeightTrace")
        flat = None if synapses is None else _indices("WeightTrace", "synapses", synapses)
        if flat is not None and len(flat) % 2:
            raise ValueError(
                "WeightTrace: `synapses` must be (pre, post) index pairs, shape (m, 2); got "
                f"shape {np.shape(synapses)}."
            )
        self.synapses = None if flat is None else tuple(zip(flat[::2], flat[1::2], strict=True))
        self.every = check_positive_int("every", every, owner="WeightTrace", what=" (steps)")

    def _proj(self, network):
        proj = network.projection(self.projection)
        if proj.plasticity is None:
            raise ValueError(
                f"WeightTrace {self.projection!r}: the projection has no plasticity rule, so its "
                "weights do not change; read them with network.weights(state, name)."
            )
        if self.synapses is not None:
            for i, j in self.synapses:
                if not (0 <= i < proj.synapses.n_pre and 0 <= j < proj.synapses.n_post):
                    raise ValueError(
                        f"WeightTrace {self.projection!r}: synapse ({i}, {j}) out of range "
                        f"{proj.synapses.n_pre} x {proj.synapses.n_post}."
                    )
        return proj

    def _select(self, network, state):
        proj = self._proj(network)
        w = state.plasticity[self.projection].weights
        if self.synapses is None:
            return w
        pre = jnp.asarray([i for i, _ in self.synapses], jnp.int32)
        post = jnp.asarray([j for _, j in self.synapses], jnp.int32)
        return proj.synapses.get(w, pre, post)

    def n_samples(self, n_steps):
        return -(-n_steps // self.every)

    def init(self, network, n_steps, dtype):
        example = _recorded_example(self._select, network, dtype)
        return jnp.zeros((self.n_samples(n_steps),) + example.shape, example.dtype)

    def update(self, network, buffer, state_before, spikes, k):
        return _sample(buffer, self._select(network, state_before), k, self.every)

    def nbytes(self, network, n_steps):
        example = _recorded_example(self._select, network, None)
        return self.n_samples(n_steps) * int(np.prod(example.shape)) * example.dtype.itemsize

    def describe(self, network, n_steps):
        what = "all" if self.synapses is None else f"{len(self.synapses)} synapses"
        return (
            f"WeightTrace {self.projection} ({what}) every {self.every} step(s): "
            f"{self.nbytes(network, n_steps) / 1e6:.2f} MB"
        )

    def streams(self, network, recording, n_steps):
        key = f"weights/{self.projection}"
        return (
            sample_stream(f"WeightTrace {self.projection}", key, recording, n_steps, self.every),
        )

    def rows(self, network, recording, k0):
        return {f"weights/{self.projection}": np.asarray(recording)}
