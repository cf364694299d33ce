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
from ._clock import MAX_INPUT_STEP, absolute_step
from ._compile import jit
from ._errors import SimulationError, check_positive, check_positive_int, is_concrete, shown
from ._faults import (
    FaultContext,
    Faults,
    StateFaults,
    check_step,
    check_traced,
    fault_message,
    population_bounds,
)
from ._monitors import AbstractMonitor
from ._network import Network, NetworkState
from ._plan import Plan, host_plan
from ._progress import Progress, SimulationBar
from ._progress import resolve as resolve_progress
from ._results import ResultAccess, check_monitor_names
from ._state_check import check_state, float_dtype
from ._step import step
from ._timing import BRIAN2, Timing


class SimulationResult(ResultAccess):
    """What :func:`simulate` returns: the final state, the recordings and the faults.

    ``recordings[i]`` belongs to ``monitors[i]`` (``result[name]`` for a monitor given
    ``name=``). Host-side helpers read by population or projection name (``spikes``,
    ``trace``, ``rate``, ``spike_counts``, ``weights``, ``weight_trace``; exporters
    ``to_pandas``, ``to_neo``, ``to_nwb``: :mod:`brainsim._results`) and convert to NumPy;
    under ``vmap`` every array has the batch axes in front.
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
    start: tuple[jax.Array, jax.Array]
    """``(step, epoch)`` of the network state the run started from (int32 arrays, batched
    under ``vmap``); :attr:`start_step` is the absolute step, exact as an integer."""
    timing: Timing = eqx.field(static=True, default=BRIAN2)
    """The network's conventions: a spike of step ``k`` is recorded at ``t_k`` or ``t_{k+1}``."""
    state_bounds: tuple = eqx.field(static=True, default=())
    """Per group of merged populations (:meth:`Network.layout`): the ``(variable,
    StateBound)`` pairs its model declares, in the order ``faults.out_of_bounds_variable``
    indexes."""
    group_names: tuple[str, ...] = eqx.field(static=True, default=())
    """The groups the state faults are indexed by (a population's name when it is alone)."""

    @property
    def duration(self) -> float:
        """Simulated time (ms)."""
        return self.n_steps * self.dt

    @property
    def start_step(self) -> np.ndarray:
        """The network's step at the start of this run (host int64; one per batch element)."""
        return absolute_step(*self.start)

    @property
    def t_start(self) -> np.ndarray:
        """Time of the run's first step (ms, float64 from the integer step: exact to the
        step however long the network has run)."""
        return self.start_step * self.dt

    def _t0(self) -> float:
        return float(np.ravel(self.t_start)[0])

    def raise_if_failed(self) -> SimulationResult:
        """Raise :class:`SimulationError` describing the first fault, if any: the population,
        variable, value, step and time of a non-finite or diverged state, or the monitor that
        overflowed, and for a batched result the batch member. Returns ``self`` otherwise."""
        context = FaultContext(self.group_names, self.state_bounds, self.monitors, self.dt)
        message = fault_message(context, self.faults, self.start_step)
        if message is not None:
            raise SimulationError(message)
        return self


def n_steps_for(duration: float, dt: float, *, owner: str = "simulate", name="duration") -> int:
    """``duration`` (ms, argument ``name`` of ``owner``) as a whole number of steps of ``dt``."""
    check_positive(name, duration, owner=owner, unit="ms")
    if np.ndim(duration) != 0:
        raise TypeError(
            f"{owner}: `{name}` must be one number (ms); got shape {np.shape(duration)}."
        )
    steps = float(duration) / dt
    n = int(round(steps))
    if n < 1 or abs(steps - n) > 1e-6 * max(1.0, steps):
        raise ValueError(
            f"{owner}: `{name}` {float(duration)} ms must be a positive whole number of steps of "
            f"dt = {dt} ms; use a multiple of dt, e.g. {max(n, 1) * dt:g} ms."
        )
    return n


def is_concrete_tree(tree) -> bool:
    """Whether no array in ``tree`` is traced (we are outside ``jit``/``vmap``/``grad``)."""
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


def check_key(owner: str, key) -> None:
    """Raise unless ``key`` is a JAX PRNG key (a typed key or a raw ``uint32[2]`` one)."""
    dtype = getattr(key, "dtype", None)
    if dtype is not None and (
        jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
        or (dtype == np.uint32 and np.shape(key)[-1:] == (2,))
    ):
        return
    raise TypeError(
        f"{owner}: `key` must be a JAX PRNG key, e.g. jax.random.key(0); got {shown(key)}."
    )


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
    start,
    timing,
    groups,
    group_states=None,
) -> SimulationResult:
    """The :class:`SimulationResult` of a finished scan: each monitor's recording (its scan
    output, or its buffer if it records into one), overflow counts and faults.

    ``populations``: the network's :class:`Population` values; ``groups``: what the state
    faults are indexed by, the plan's groups (their models declare the bounds of their
    state, reported with the faults), with their states ``group_states`` (default: by
    group name in ``state.populations``).
    """
    if group_states is None:
        group_states = [state.populations[g.name] for g in groups]
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
        start=start,
        timing=timing,
        state_bounds=tuple(
            population_bounds(g, s) for g, s in zip(groups, group_states, strict=True)
        ),
        group_names=tuple(g.name for g in groups),
    )


def _scan(network, plan, monitors: tuple, carry, n_steps: int, checkpoint, unroll: int):
    """``n_steps`` steps of the loop from ``carry = (state, buffers, faults, local)``, where
    ``local`` counts this run's steps so far: ``(carry, per-step outputs)``. A run split into
    parts that pass the carry on is the same run, step for step."""

    def body(carry, _):
        net_state, buffers, faults, local = carry
        new_state, spikes = step(plan, net_state)
        # Monitors and faults count the steps of this run (int32: a run's buffers could not
        # hold more steps); the network's own step is the (step, epoch) pair.
        buffers = tuple(
            m.update(network, b, net_state, spikes, local)
            for m, b in zip(monitors, buffers, strict=True)
        )
        outputs = tuple(m.per_step(network, net_state, spikes, local) for m in monitors)
        new_groups = [new_state.populations[g.name] for g in plan.groups]
        faults = check_step(plan.groups, new_groups, local, faults)
        return (new_state, buffers, faults, local + 1), outputs

    return checkpointed_scan(body, carry, n_steps, checkpoint, unroll)


def _start(network, plan, state, monitors, n_steps):
    """The loop's carry at the start of a run of ``n_steps`` steps from ``state``."""
    buffers = tuple(m.init(network, n_steps, float_dtype(state)) for m in monitors)
    return state, buffers, StateFaults.init(len(plan.groups)), jnp.zeros((), jnp.int32)


def _finish(network, plan, monitors, n_steps, start, carry, outputs) -> SimulationResult:
    state, buffers, faults, _ = carry
    return collect_result(
        state,
        buffers,
        outputs,
        faults,
        monitors,
        network.populations,
        dt=network.dt,
        n_steps=n_steps,
        start=start,
        timing=network.timing,
        groups=plan.groups,
    )


def _run(
    network: Network,
    state: NetworkState,
    monitors: tuple,
    n_steps: int,
    checkpoint: Checkpointing | None = None,
    unroll: int = 1,
    plan=None,
):
    if plan is None:  # traced values: merged here, once, outside the loop
        plan = network.plan()
    start = (state.step, state.epoch)
    carry = _start(network, plan, state, monitors, n_steps)
    carry, outputs = _scan(network, plan, monitors, carry, n_steps, checkpoint, unroll)
    return _finish(network, plan, monitors, n_steps, start, carry, outputs)


_run_jit = jit(_run)


def _part(fixed, carry, n_steps: int, checkpoint, unroll: int):
    network, plan, monitors = fixed
    return _scan(network, plan, monitors, carry, n_steps, checkpoint, unroll)


# The carry is donated: each part updates the monitors' buffers in place. Without it every
# part copied the whole run's buffers (a StateTrace of 3,200 neurons over 5,000 steps: 10.9 s
# instead of 0.3 s in 100 parts).
_part_jit = jit(_part, donate="all-except-first")


def _run_chunked(network, state, monitors, n_steps, checkpoint, unroll, plan, bar, chunk):
    """:func:`_run` as a host loop over parts of ``chunk`` steps of one compiled loop (a
    shorter last part compiles once more), advancing ``bar`` after each. The carry (state,
    monitor buffers, faults, step count) passes from part to part and the per-step outputs
    are concatenated, so the result is the unchunked run's, bit for bit."""
    start = (state.step, state.epoch)
    # Donated below: the caller's state is not ours to give away, and a leaf that appears
    # twice in the carry (one zeros array for two fields) cannot be donated twice.
    carry = jax.tree.map(jnp.copy, _start(network, plan, state, monitors, n_steps))
    parts = []
    for k in range(0, n_steps, chunk):
        n = min(chunk, n_steps - k)
        carry, outputs = _part_jit((network, plan, monitors), carry, n, checkpoint, unroll)
        parts.append(outputs)
        jax.block_until_ready(carry[3])  # the bar reports finished work, not dispatched work
        # The first part of each length may have compiled: not counted in the bar's speed.
        bar.update(k + n, compiled=k == 0 or n != chunk)
    outputs = jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)
    return _finish(network, plan, monitors, n_steps, start, carry, outputs)


def default_chunk(n_steps: int, updates: int = 100) -> int:
    """About ``n_steps / updates`` steps, preferring a divisor of ``n_steps`` (at most twice
    that) so that every part has the same length and the loop compiles once."""
    target = max(1, n_steps // updates)
    for d in range(target, min(n_steps, 2 * target) + 1):
        if n_steps % d == 0:
            return d
    return target


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
            f"{owner}: `network` must be a brainsim.Network; got {type(network).__name__}."
        )
    if (duration is None) == (n_steps is None):
        raise ValueError(f"{owner}: give exactly one of `duration` (ms) or `n_steps`.")
    if n_steps is None:
        n_steps = n_steps_for(duration, network.dt, owner=owner)
    n_steps = check_positive_int("n_steps", n_steps, owner=owner)
    if n_steps > MAX_INPUT_STEP:
        raise ValueError(
            f"{owner}: {n_steps} steps in one call is more than one compiled loop can count "
            f"({MAX_INPUT_STEP}, int32). Run it in parts with `state=result.state`, or with "
            "brainsim.run_long, which does that and streams the recordings to disk."
        )
    if state is not None and not isinstance(state, NetworkState):
        raise TypeError(
            f"{owner}: `state` must be a brainsim.NetworkState (e.g. result.state or "
            f"network.init(key)); got {type(state).__name__}."
        )
    if state is None:
        if key is None:
            raise ValueError(
                f"{owner}: pass `key` (e.g. jax.random.key(0)) to create the initial state, or "
                "an existing `state`."
            )
        check_key(owner, key)
        state = network.init(key)
    else:
        check_state(network, state, owner=owner)
    return network, state, checked_monitors(record, owner), int(n_steps)


def checked_monitors(record, owner: str) -> tuple[AbstractMonitor, ...]:
    """``record`` as a tuple of monitors, or a ``TypeError`` naming ``owner``'s argument."""
    if isinstance(record, AbstractMonitor):
        raise TypeError(
            f"{owner}: `record` must be a sequence of monitors; got one {type(record).__name__}. "
            "Wrap it in a tuple: record=(monitor,)."
        )
    monitors = tuple(record)
    for m in monitors:
        if not isinstance(m, AbstractMonitor):
            raise TypeError(
                f"{owner}: `record` items must be monitors (SpikeRaster, SpikeList, StateTrace, "
                f"PopulationRate, WeightTrace or a brainsim.AbstractMonitor of your own); got "
                f"{type(m).__name__}."
            )
    check_monitor_names(monitors, owner)
    return monitors


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
    partition=None,
    progress=False,
) -> SimulationResult:
    """Simulate ``network`` for ``duration`` ms (or ``n_steps`` steps) in one compiled scan.

    Arguments:
        network: the :class:`Network`, or its :class:`Plan` (``network.plan()``; built by
            ``simulate`` itself otherwise, once per call, on the host when the network's
            values are concrete).
        duration: simulated time in ms (a whole number of steps), or give ``n_steps``.
        key: PRNG key for the initial state and all randomness (required without ``state``).
        state: continue from this state (e.g. ``previous.state``) instead of a fresh one.
        record: monitors (:class:`SpikeRaster`, :class:`SpikeList`, :class:`StateTrace`,
            :class:`PopulationRate`, :class:`WeightTrace`, or your own
            :class:`AbstractMonitor`); their memory is fixed before the run.
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
        progress: ``False`` (default): one compiled loop, silent. ``True``, a text stream or
            a :class:`Progress` value: a progress bar (biological time done/total, speed
            relative to real time, steps/s, remaining time; a widget in notebooks), advanced
            by running the loop in parts (``Progress(every_ms=...)`` long; default about 100
            parts) that continue from each other's state, recordings and faults: the result
            is identical to the unchunked run's. ``None``: a bar only when ``stderr`` is a
            terminal or in a notebook. A host-side bar cannot advance inside a traced
            computation, so under ``jit``/``vmap``/``grad`` a bar is refused (``ValueError``):
            call ``simulate`` with ``progress`` outside the transformation. Each part costs
            about 2 ms on the host (COBA 4k, 500 ms on a 2-core CPU: 0.18 s in one loop,
            0.39 s in 100 parts), so the bar is for runs long enough to want one. With
            ``partition`` the parts are partitioned runs passing on the same carry.

    Returns:
        A :class:`SimulationResult`.

    Example:
        >>> result = bs.simulate(net, 1000.0, key=jax.random.key(0), record=(bs.SpikeRaster(),))
        >>> times, ids = result.spikes("E")
    """
    if key is not None and state is not None:
        raise ValueError(
            "simulate: pass `key` (a fresh run) or `state` (continue a run), not both: a state "
            "carries its own random key, so `key` would be ignored. To continue with new "
            "randomness, pass state=state._replace(key=jax.random.key(...))."
        )
    plan = None
    if isinstance(network, Plan):  # built once by the caller (network.plan(), host_plan)
        plan, network = network, network.network
    sharded = None
    if partition is not None or not isinstance(network, Network):
        from ._sharding import ShardedNetwork, partitioned

        if partition is not None or isinstance(network, ShardedNetwork):
            sharded = partitioned(network, partition)
            network = sharded.network
    network, state, monitors, n_steps = prepare(
        network, duration, n_steps=n_steps, key=key, state=state, record=record
    )
    if checkpoint is not None and not isinstance(checkpoint, Checkpointing):
        raise TypeError(
            f"simulate: `checkpoint` must be a brainsim.Checkpointing (e.g. "
            f"bs.Checkpointing(levels=2)) or None; got {type(checkpoint).__name__}."
        )
    what = " (time steps per loop iteration, e.g. 10 on a GPU)"
    check_positive_int("unroll", unroll, owner="simulate", what=what)
    shown_progress = resolve_progress(progress, "simulate")
    if shown_progress is not None:
        chunk = _progress_chunk(shown_progress, network, state, n_steps)
    if sharded is None:
        if plan is None and is_concrete_tree(network):
            plan = host_plan(network)
        if shown_progress is None:
            result = _run_jit(network, state, monitors, n_steps, checkpoint, int(unroll), plan)
        else:
            with SimulationBar(shown_progress, n_steps, network.dt, desc="simulate") as bar:
                result = _run_chunked(
                    network, state, monitors, n_steps, checkpoint, int(unroll), plan, bar, chunk
                )
    elif shown_progress is None:
        from ._sharding import run_partitioned

        result = run_partitioned(sharded, state, monitors, n_steps, checkpoint, int(unroll))
    else:
        from ._sharding import run_partitioned_in_parts

        with SimulationBar(shown_progress, n_steps, network.dt, desc="simulate") as bar:
            result = run_partitioned_in_parts(
                sharded, state, monitors, n_steps, chunk, bar, checkpoint, int(unroll)
            )
    if check:
        result = check_result(result)
    return result


def _progress_chunk(progress: Progress, network, state, n_steps: int) -> int:
    """Steps per part of a run shown with ``progress``, or the error saying why it cannot be."""
    if not is_concrete_tree((network, state)):
        raise ValueError(
            "simulate: `progress` needs concrete values, but the network or state is traced "
            "(simulate is inside jax.jit, vmap or grad), where a bar cannot advance. Pass "
            "progress=False inside the transformation, or call simulate with `progress` "
            "outside it."
        )
    if progress.every_ms is None:
        return default_chunk(n_steps)
    every = n_steps_for(progress.every_ms, network.dt, owner="simulate", name="progress.every_ms")
    return min(every, n_steps)


def check_result(result: SimulationResult) -> SimulationResult:
    """Raise on faults: directly for concrete results, from a host callback when traced
    (:func:`~brainsim._faults.check_traced`)."""
    if all(is_concrete(x) for x in jax.tree.leaves(result.faults)):
        return result.raise_if_failed()
    return check_traced(result)
