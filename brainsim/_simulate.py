r"""The simulation driver: one ``lax.scan`` over steps, with declarative recording.

:func:`simulate` compiles once per network *structure* (population sizes, delays, monitors,
number of steps) and reuses the executable when only values change (weights, drives, time
constants, seeds), so sweeps and ``vmap`` batches do not recompile.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._checkpoint_scan import Checkpointing, checkpointed_scan
from ._compile import jit
from ._errors import SimulationError, is_concrete
from ._faults import (
    FaultContext,
    Faults,
    StateFaults,
    check_step,
    check_traced,
    fault_message,
    population_bounds,
)
from ._monitors import (
    AbstractMonitor,
    PopulationRate,
    SpikeList,
    SpikeRaster,
    StateTrace,
    WeightTrace,
)
from ._network import Network, NetworkState
from ._state_check import check_state, float_dtype


class SimulationResult(eqx.Module):
    """What :func:`simulate` returns: the final state, the recordings and the faults.

    ``recordings[i]`` belongs to ``monitors[i]``. Host-side helpers (``spikes``, ``trace``,
    ``rate``) convert to NumPy; under ``vmap`` every array has the batch axes in front.
    """

    state: NetworkState
    recordings: tuple
    faults: Faults
    monitors: tuple[AbstractMonitor, ...] = eqx.field(static=True)
    population_names: tuple[str, ...] = eqx.field(static=True)
    population_sizes: tuple[int, ...] = eqx.field(static=True)
    population_is_source: tuple[bool, ...] = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    n_steps: int = eqx.field(static=True)
    t_start: jax.Array
    state_bounds: tuple = eqx.field(static=True, default=())
    """Per population: the ``(variable, StateBound)`` pairs its model declares, in the order
    ``faults.out_of_bounds_variable`` indexes."""

    @property
    def duration(self) -> float:
        """Simulated time (ms)."""
        return self.n_steps * self.dt

    def raise_if_failed(self) -> SimulationResult:
        """Raise :class:`SimulationError` describing the first fault, if any: the population,
        variable, value, step and time of a non-finite or diverged state, or the monitor that
        overflowed, and for a batched result the batch member. Returns ``self`` otherwise."""
        context = FaultContext(self.population_names, self.state_bounds, self.monitors, self.dt)
        message = fault_message(context, self.faults)
        if message is not None:
            raise SimulationError(message)
        return self

    # -------------------------------------------------------------- host-side conversions

    def _find(self, kind, predicate):
        for m, r in zip(self.monitors, self.recordings, strict=True):
            if isinstance(m, kind) and predicate(m):
                return m, r
        return None

    def spikes(self, population: str) -> tuple[np.ndarray, np.ndarray]:
        """``(times_ms, ids)`` of every spike of ``population`` (one entry per spike; a source
        channel emitting 2 spikes in a step appears twice). Needs a SpikeRaster or SpikeList."""
        if population not in self.population_names:
            from ._errors import unknown_name_error

            raise unknown_name_error("population", population, self.population_names)
        found = self._find(
            SpikeRaster, lambda m: m.populations is None or population in m.populations
        )
        t0 = float(np.asarray(self.t_start).ravel()[0])
        if found is not None:
            rows = np.asarray(found[1][population])
            if rows.ndim != 2:
                raise ValueError("spikes(): select one batch element first with result.batch(i).")
            i = self.population_names.index(population)
            # Sources are stored as one count byte per channel, neurons as packed bits.
            counts = (
                rows
                if self.population_is_source[i]
                else np.unpackbits(rows, axis=1, count=self.population_sizes[i])
            )
            steps, ids = np.nonzero(counts)
            reps = counts[steps, ids].astype(np.int64)
            steps, ids = np.repeat(steps, reps), np.repeat(ids, reps)
            return t0 + steps * self.dt, ids
        found = self._find(SpikeList, lambda m: m.population == population)
        if found is not None:
            buf = found[1]
            total = int(np.asarray(buf.total))
            n = min(total, found[0].capacity)
            reps = np.asarray(buf.counts[:n]).astype(np.int64)
            steps = np.repeat(np.asarray(buf.steps[:n]), reps)
            ids = np.repeat(np.asarray(buf.ids[:n]), reps)
            return t0 + steps * self.dt, ids
        raise ValueError(
            f"No spike recording of population {population!r}: pass record=(SpikeRaster(),) "
            "or SpikeList(...) to simulate."
        )

    def trace(self, population: str, variable: str) -> tuple[np.ndarray, np.ndarray]:
        """``(times_ms, values)`` of a :class:`StateTrace`; values are ``(samples, neurons)``."""
        found = self._find(
            StateTrace, lambda m: m.population == population and m.variable == variable
        )
        if found is None:
            raise ValueError(f"No StateTrace({population!r}, {variable!r}) was recorded.")
        m, values = found
        values = np.asarray(values)
        t0 = float(np.asarray(self.t_start).ravel()[0])
        times = t0 + np.arange(values.shape[-2]) * m.every * self.dt
        return times, values

    def spike_counts(self, population: str) -> np.ndarray:
        """Number of spikes of ``population`` in every step (from any spike monitor)."""
        found = self._find(
            PopulationRate, lambda m: m.populations is None or population in m.populations
        )
        if found is not None:
            return np.asarray(found[1][population])
        times, _ = self.spikes(population)
        t0 = float(np.asarray(self.t_start).ravel()[0])
        steps = np.rint((times - t0) / self.dt).astype(np.int64)
        return np.bincount(steps, minlength=self.n_steps).astype(np.float32)

    def rate(self, population: str) -> float:
        """Mean firing rate of ``population`` over the run (Hz)."""
        size = self.population_sizes[self.population_names.index(population)]
        return float(self.spike_counts(population).sum() / (size * self.duration * 1e-3))

    def weights(self, projection: str):
        """Final weights of a plastic projection, in its storage (Dense: ``(n_pre, n_post)``;
        Sparse: ``(n_pre, fan_out)`` aligned with ``connectivity.targets``); use
        ``network.weights(result.state, name)`` for the dense matrix of any layout."""
        plastic = self.state.plasticity
        if projection not in plastic:
            from ._errors import unknown_name_error

            raise unknown_name_error("plastic projection", projection, list(plastic))
        return np.asarray(plastic[projection].weights)

    def weight_trace(self, projection: str) -> tuple[np.ndarray, np.ndarray]:
        """``(times_ms, weights[samples, ...])`` of a :class:`WeightTrace`."""
        found = self._find(WeightTrace, lambda m: m.projection == projection)
        if found is None:
            raise ValueError(f"No WeightTrace({projection!r}) was recorded.")
        m, values = found
        values = np.asarray(values)
        t0 = float(np.asarray(self.t_start).ravel()[0])
        return t0 + np.arange(values.shape[0]) * m.every * self.dt, values

    def batch(self, index) -> SimulationResult:
        """One element of a batched (``vmap``-ed) result."""
        return jax.tree.map(lambda x: x[index], self)


def n_steps_for(duration: float, dt: float) -> int:
    steps = duration / dt
    n = int(round(steps))
    if n < 1 or abs(steps - n) > 1e-6 * max(1.0, steps):
        raise ValueError(
            f"`duration` {duration} ms must be a positive whole number of steps of dt = {dt} ms."
        )
    return n


def collect_result(
    state,
    buffers,
    outputs,
    state_faults: StateFaults,
    monitors,
    populations,
    *,
    dt,
    n_steps,
    t_start,
) -> SimulationResult:
    """The :class:`SimulationResult` of a finished scan: each monitor's recording (its scan
    output, or its buffer if it records into one), overflow counts and faults.

    ``populations``: the network's :class:`Population` values (their models declare the
    bounds of their state, reported with the faults).
    """
    recordings = tuple(b if o is None else o for b, o in zip(buffers, outputs, strict=True))
    overflow = (
        jnp.stack(
            [
                jnp.asarray(0 if m.overflow(b) is None else m.overflow(b), jnp.int32)
                for m, b in zip(monitors, buffers, strict=True)
            ]
        )
        if monitors
        else jnp.zeros((0,), jnp.int32)
    )
    return SimulationResult(
        state=state,
        recordings=recordings,
        faults=Faults(
            state_faults.first_nonfinite_step,
            overflow,
            state_faults.first_out_of_bounds_step,
            state_faults.out_of_bounds_variable,
            state_faults.out_of_bounds_value,
        ),
        monitors=monitors,
        population_names=tuple(p.name for p in populations),
        population_sizes=tuple(p.size for p in populations),
        population_is_source=tuple(p.is_source for p in populations),
        dt=dt,
        n_steps=n_steps,
        t_start=t_start,
        state_bounds=tuple(population_bounds(p, state.populations[p.name]) for p in populations),
    )


def _run(
    network: Network,
    state: NetworkState,
    monitors: tuple,
    n_steps: int,
    checkpoint: Checkpointing | None = None,
    unroll: int = 1,
):
    buffers = tuple(m.init(network, n_steps, float_dtype(state)) for m in monitors)
    faults = StateFaults.init(len(network.populations))
    t_start = state.step.astype(jnp.result_type(float)) * network.dt
    k_start = state.step

    def body(carry, _):
        net_state, buffers, faults = carry
        k = net_state.step
        new_state, spikes = network.step(net_state)
        # Step index within this run, in integers: t_start is a float (float32 by default)
        # and stops representing whole steps exactly beyond 2**24 steps (28 min at 0.1 ms).
        local = k - k_start
        buffers = tuple(
            m.update(network, b, net_state, spikes, local)
            for m, b in zip(monitors, buffers, strict=True)
        )
        outputs = tuple(m.per_step(network, net_state, spikes, local) for m in monitors)
        new_pops = [new_state.populations[p.name] for p in network.populations]
        faults = check_step(network.populations, new_pops, k, faults)
        return (new_state, buffers, faults), outputs

    (state, buffers, faults), outputs = checkpointed_scan(
        body, (state, buffers, faults), n_steps, checkpoint, unroll
    )
    return collect_result(
        state,
        buffers,
        outputs,
        faults,
        monitors,
        network.populations,
        dt=network.dt,
        n_steps=n_steps,
        t_start=t_start,
    )


_run_jit = jit(_run)


def prepare(
    network: Network,
    duration: float | None = None,
    *,
    n_steps: int | None = None,
    key=None,
    state: NetworkState | None = None,
    record: Sequence[AbstractMonitor] = (),
    owner: str = "simulate",
):
    """Validate arguments and return ``(network, state, monitors, n_steps)`` for :func:`simulate`
    (and the drivers built on it, named by ``owner`` in errors about the state)."""
    if not isinstance(network, Network):
        raise TypeError(
            f"simulate: `network` must be a brainsim.Network; got {type(network).__name__}."
        )
    if (duration is None) == (n_steps is None):
        raise ValueError("simulate: give exactly one of `duration` (ms) or `n_steps`.")
    if n_steps is None:
        n_steps = n_steps_for(float(duration), network.dt)
    if not (isinstance(n_steps, int | np.integer) and n_steps >= 1):
        raise ValueError(f"simulate: `n_steps` must be a positive integer; got {n_steps!r}.")
    if state is None:
        if key is None:
            raise ValueError(
                "simulate: pass `key` (e.g. jax.random.key(0)) to create the initial state, or "
                "an existing `state`."
            )
        state = network.init(key)
    else:
        check_state(network, state, owner=owner)
    monitors = tuple(record)
    for m in monitors:
        if not isinstance(m, AbstractMonitor):
            raise TypeError(
                f"simulate: `record` items must be monitors (SpikeRaster, SpikeList, StateTrace, "
                f"PopulationRate); got {type(m).__name__}."
            )
    return network, state, monitors, int(n_steps)


def simulate(
    network: Network,
    duration: float | None = None,
    *,
    n_steps: int | None = None,
    key=None,
    state: NetworkState | None = None,
    record: Sequence[AbstractMonitor] = (),
    check: bool = True,
    checkpoint: Checkpointing | None = None,
    unroll: int = 1,
) -> SimulationResult:
    """Simulate ``network`` for ``duration`` ms (or ``n_steps`` steps) in one compiled scan.

    Arguments:
        network: the :class:`Network`.
        duration: simulated time in ms (a whole number of steps), or give ``n_steps``.
        key: PRNG key for the initial state and all randomness (required without ``state``).
        state: continue from this state (e.g. ``previous.state``) instead of a fresh one.
        record: monitors (:class:`SpikeRaster`, :class:`SpikeList`, :class:`StateTrace`,
            :class:`PopulationRate`); their memory is fixed before the run.
        check: raise :class:`SimulationError` after the run on a run-time fault: non-finite
            state, a state variable outside the range its model allows
            (:meth:`AbstractNeuron.state_bounds`: a diverged integration), or a full recording
            buffer. The message names the population, variable, value, step and time, or the
            monitor, and for a batched run the batch member (``result.faults`` holds the
            details). Under an outer ``jit``/``vmap`` the same check runs inside the program
            (a host callback on the fault arrays, attached to ``result.state.step``), and its
            error discards the whole result. To keep the result, pass ``check=False`` inside
            the transformation and call ``result.raise_if_failed()`` outside it::

                run = bs.jit(jax.vmap(lambda i_e: bs.simulate(with_drive(i_e), 100.0,
                                                              key=key, check=False)))
                result = run(drives)       # every member's recordings and faults
                result.raise_if_failed()   # names the first failed member, if any
        checkpoint: a :class:`Checkpointing` value to bound the memory of reverse-mode
            gradients through long runs (nested ``jax.checkpoint`` around the scan); values
            and gradients are unchanged. ``None`` (default): plain scan.
        unroll: time steps per iteration of the compiled loop (``lax.scan``'s ``unroll``);
            results are identical. On a GPU each loop iteration costs a fixed host-side
            overhead, so unrolling pays for small networks: COBA 4k went from 100 to 60 µs per
            step with ``unroll=10`` on an H100 (BENCHMARKS.md). Compile time grows about in
            proportion; on a CPU it rarely helps.

    Returns:
        A :class:`SimulationResult`.

    Example:
        >>> result = bs.simulate(net, 1000.0, key=jax.random.key(0), record=(bs.SpikeRaster(),))
        >>> times, ids = result.spikes("E")
    """
    network, state, monitors, n_steps = prepare(
        network, duration, n_steps=n_steps, key=key, state=state, record=record
    )
    if checkpoint is not None and not isinstance(checkpoint, Checkpointing):
        raise TypeError(
            f"simulate: `checkpoint` must be a brainsim.Checkpointing (e.g. "
            f"bs.Checkpointing(levels=2)) or None; got {type(checkpoint).__name__}."
        )
    if isinstance(unroll, bool) or not isinstance(unroll, int | np.integer) or unroll < 1:
        raise ValueError(
            f"simulate: `unroll` must be a positive integer (time steps per loop iteration, "
            f"e.g. 10 on a GPU); got {unroll!r}."
        )
    result = _run_jit(network, state, monitors, n_steps, checkpoint, int(unroll))
    if check:
        result = check_result(result)
    return result


def check_result(result: SimulationResult) -> SimulationResult:
    """Raise on faults: directly for concrete results, from a host callback when traced
    (:func:`~brainsim._faults.check_traced`)."""
    if all(is_concrete(x) for x in jax.tree.leaves(result.faults)):
        return result.raise_if_failed()
    return check_traced(result)
