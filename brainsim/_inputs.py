r"""External inputs: injected currents and spike sources.

Currents are evaluated for each step and held over it. With Brian2's conventions (the
default) a current switching at :math:`T` acts from the first step starting at or after
:math:`T` (:math:`t \ge T`, as a Brian2 ``TimedArray``); with NEST's
(:meth:`~brainsim.Timing.nest`) one step later (:math:`t > T`, NEST's
``step_current_generator`` connected with the shortest delay). Spike sources are populations
without membrane dynamics; their spikes are recorded like every other spike (:math:`t_k` for
step ``k`` in Brian2's conventions, :math:`t_{k+1}` in NEST's), so a :class:`SpikeGenerator`
spike at :math:`\tau` is emitted by step :math:`\tau/\Delta t` (Brian2) or
:math:`\tau/\Delta t - 1` (NEST) and recorded at :math:`\tau` either way.
"""

from __future__ import annotations

import abc
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, Float, Int

from ._clock import check_schedule_steps
from ._errors import (
    as_parameter,
    check_finite,
    check_nonnegative,
    check_positive,
    check_that,
    integer_array,
)
from ._neurons._base import AbstractSpikeSource, default_dtype
from ._random import key_words, uniform
from ._timing import BRIAN2, Timing, follow_timing, with_static_field
from .kernels import cpu_loop_or_single


def _whole_steps(value_ms: float, dt: float, *, owner: str, name: str) -> int:
    """``value_ms / dt`` as an integer, or a ValueError naming ``name``."""
    steps = value_ms / dt
    if abs(steps - round(steps)) > 1e-6 * max(1.0, abs(steps)):
        raise ValueError(
            f"{owner}: `{name}` = {value_ms} ms is not a whole number of simulation steps "
            f"(dt = {dt} ms). Use a multiple of dt."
        )
    return int(round(steps))


class AbstractCurrent(eqx.Module):
    """An injected current (pA): a scalar or one value per neuron for each step.

    ``current(step, dt, key)`` is evaluated with the integer step index ``step`` (time
    ``step * dt``), so switch times stay exact however long the run (a float32 time cannot
    resolve single steps beyond 2**24 of them).
    """

    @abc.abstractmethod
    def current(self, step, dt, key) -> Float[Array, "*n"]:
        """The current during step ``step`` (time ``step * dt`` ms)."""

    def discretize(self, dt: float) -> AbstractCurrent:
        """Precompute what depends on the step (called once when a network is built)."""
        return self

    def with_timing(self, timing: Timing) -> AbstractCurrent:
        """This current following the conventions ``timing`` (a :class:`~brainsim.Timing`; a
        :class:`~brainsim.Network` passes its own to its populations' currents). Currents with
        a schedule keep them in a static ``timing`` field; others are unchanged."""
        return follow_timing(self, timing)

    def check_size(self, n: int, owner: str) -> None:
        return None


class ConstantCurrent(AbstractCurrent):
    """A constant current ``amplitude`` (pA; scalar or per neuron)."""

    amplitude: Float[Array, "*n"]

    def __init__(self, amplitude: ArrayLike):
        self.amplitude = as_parameter(amplitude, "amplitude", owner="ConstantCurrent", unit="pA")

    def current(self, step, dt, key):
        return self.amplitude

    def check_size(self, n, owner):
        from ._errors import check_per_neuron

        check_per_neuron("amplitude", self.amplitude, n, owner=owner)


class StepCurrent(AbstractCurrent):
    r"""Piecewise-constant current (NEST ``step_current_generator``).

    ``amplitudes[i]`` (pA) flows from ``times[i]`` (ms) until ``times[i+1]``; zero before
    ``times[0]``. ``amplitudes`` has shape ``(m,)`` or ``(m, n)`` for per-neuron values. A
    switch applies from the first step starting at or after its time (Brian2's conventions,
    :math:`t \ge T`), or one step later in a network with NEST's (:math:`t > T`; NEST delivers
    a device's current with its connection delay, at least one step).
    """

    times: np.ndarray
    """Switch times (ms), kept in float64 on the host so they map to exact steps."""
    amplitudes: Float[Array, "m *n"]
    switch_steps: Int[Array, " m"] | None
    timing: Timing = eqx.field(static=True, default=BRIAN2)

    def __init__(self, times: ArrayLike, amplitudes: ArrayLike, *, _switch_steps=None):
        t = check_finite("times", times, owner="StepCurrent", unit="ms")
        t = np.asarray(times if t is None else t, dtype=float)
        a = as_parameter(amplitudes, "amplitudes", owner="StepCurrent", unit="pA")
        if t.ndim != 1 or t.size == 0:
            raise ValueError(
                f"StepCurrent: `times` must be a non-empty 1-D array; got shape {t.shape}."
            )
        if a.shape[:1] != t.shape:
            raise ValueError(
                f"StepCurrent: `amplitudes` needs one entry per time ({t.size}); got shape {a.shape}."
            )
        if np.any(np.diff(t) <= 0):
            i = int(np.argmax(np.diff(t) <= 0)) + 1
            raise ValueError(
                f"StepCurrent: `times` must be strictly increasing; got {t[i]} ms after "
                f"{t[i - 1]} ms. Sort the times (with their amplitudes) and drop repeats."
            )
        self.times = t
        self.amplitudes = a
        self.switch_steps = _switch_steps

    def _switch_steps(self, dt):
        """The first step each amplitude acts in."""
        steps = np.ceil(self.times / dt - 1e-6) + self.timing.stamp_steps
        check_schedule_steps(steps, owner="StepCurrent", what="a switch", dt=dt)
        return jnp.asarray(steps.astype(np.int32))

    def discretize(self, dt):
        built = StepCurrent(self.times, self.amplitudes, _switch_steps=self._switch_steps(dt))
        return with_static_field(built, "timing", self.timing)

    def current(self, step, dt, key):
        switch = self.switch_steps
        if switch is None:  # used on its own, outside a network
            switch = self._switch_steps(dt)
        i = jnp.searchsorted(switch, step, side="right") - 1
        value = self.amplitudes[jnp.maximum(i, 0)]
        return jnp.where(i >= 0, value, jnp.zeros_like(value))

    def check_size(self, n, owner):
        if self.amplitudes.ndim == 2 and self.amplitudes.shape[1] != n:
            raise ValueError(
                f"{owner}: StepCurrent amplitudes have {self.amplitudes.shape[1]} columns for a "
                f"population of {n}."
            )


class TimedArray(AbstractCurrent):
    """Values sampled every ``dt`` ms from ``t_start``: row ``floor((t - t_start)/dt)``.

    ``values`` has shape ``(T,)`` (same for every neuron) or ``(T, n)``. Outside
    ``[t_start, t_start + T dt)`` the value is zero. Used as an injected current (pA) or as a
    time-varying rate of a :class:`PoissonSource` (Hz, then also >= 0); values are finite. In a
    network, ``dt`` and ``t_start`` must be whole multiples of the simulation step so rows are
    selected by exact integer arithmetic on the step index. As an injected current in a network
    with NEST's conventions every row acts one step later (like :class:`StepCurrent`); as a
    rate it is the rate of the step that emits the spikes under both conventions.
    """

    values: Float[Array, "T *n"]
    dt: float = eqx.field(static=True)
    t_start: float = eqx.field(static=True)
    timing: Timing = eqx.field(static=True, default=BRIAN2)

    def __init__(self, values: ArrayLike, dt: float, t_start: float = 0.0):
        check_positive("dt", dt, owner="TimedArray", unit="ms")
        check_finite("t_start", t_start, owner="TimedArray", unit="ms")
        v = as_parameter(values, "values", owner="TimedArray")
        if v.ndim not in (1, 2) or v.shape[0] == 0:
            raise ValueError(f"TimedArray: `values` must have shape (T,) or (T, n); got {v.shape}.")
        self.values = v
        self.dt = float(dt)
        self.t_start = float(t_start)

    def __call__(self, t):
        """The value at time ``t`` (ms), for use outside a simulation."""
        i = jnp.floor((t - self.t_start) / self.dt + 1e-6).astype(jnp.int32)
        return self._row(i)

    def _row(self, i):
        inside = (i >= 0) & (i < self.values.shape[0])
        row = self.values[jnp.clip(i, 0, self.values.shape[0] - 1)]
        return jnp.where(inside, row, jnp.zeros_like(row))

    def discretize(self, dt):
        _whole_steps(self.dt, dt, owner="TimedArray", name="dt")
        start = _whole_steps(self.t_start, dt, owner="TimedArray", name="t_start")
        check_schedule_steps([start], owner="TimedArray", what="`t_start`", dt=dt)
        return self

    def at_step(self, step, dt):
        """The row in force during simulation step ``step`` (exact integer arithmetic)."""
        ratio = _whole_steps(self.dt, dt, owner="TimedArray", name="dt")
        start = _whole_steps(self.t_start, dt, owner="TimedArray", name="t_start")
        shifted = step - start
        return self._row(jnp.where(shifted >= 0, shifted // ratio, -1))

    def current(self, step, dt, key):
        return self.at_step(step - self.timing.stamp_steps, dt)

    def check_size(self, n, owner):
        if self.values.ndim == 2 and self.values.shape[1] != n:
            raise ValueError(
                f"{owner}: TimedArray has {self.values.shape[1]} columns for a population of {n}."
            )


class PoissonState(NamedTuple):
    counts: Float[Array, " n"]
    """Spike counts emitted in the last step."""


SMALL_MEAN = 10.0
"""Largest Poisson mean drawn by one inversion (:func:`poisson_counts`); a larger mean is drawn
as a sum of parts of at most this mean."""
INVERSION_TERMS = 64
"""Terms of the inversion off the CPU: the cumulative sum saturates (float64) by ~47 terms for
every mean up to :data:`SMALL_MEAN`, so the fixed loop gives what the stopping loop gives."""
INVERSION_UNROLL = 8
"""Terms per iteration of that fixed loop (its 64 terms in 8 iterations)."""


def poisson_counts(
    key, lam: Array, *, fixed_terms: bool | None = None, single_part: bool = False
) -> Array:
    r"""Independent Poisson counts with means ``lam`` (one per element, finite and >= 0), as
    floating-point values of ``lam``'s dtype (float32 or float64).

    Each count is drawn by inversion of one uniform :math:`u`:
    :math:`k = \min\{k : u < \sum_{m \le k} e^{-\lambda}\lambda^m/m!\}`, in one vectorised
    loop over :math:`k`. The sum stops where adding the next term no longer changes it in
    floating point (the remaining probability is below the float resolution): a ``u`` above
    the saturated sum (probability < 1e-7 in float32) gets the count reached there, never a
    runaway count. A mean above :data:`SMALL_MEAN` is split into
    :math:`m = \lceil \lambda / 10 \rceil` equal parts, each drawn the same way, and the
    counts are summed (a sum of independent Poisson counts is Poisson with the summed mean):
    one algorithm, compiled once, serves every mean; its cost grows with the largest mean
    (the loop over :math:`k` runs to the largest count drawn, the loop over parts to the
    largest :math:`m`), which suits spike sources, whose means per step are small.

    The uniforms come from :mod:`brainsim._random` (Threefry-2x32 over counters: 24 random
    bits per uniform in float32, 53 in float64), part :math:`j` from stream :math:`j`, so an
    element's count depends only on ``key``, its position and its own mean: under ``vmap`` a
    batch member draws what it draws alone.

    Measured in a 1000-step scan compiled with brainsim's compiler options (development
    machine: Intel Xeon with AVX-512, 2 shared cores, jax 0.10.2), per step against the
    previous sampler (``jax.random`` uniforms, an event sampler for means up to 0.125 and
    ``jax.random.poisson`` above 10, all compiled into every program): the 7717 channels of
    Potjans–Diesmann 0.1's background (means 0.12–0.23) 53 µs instead of 109, ~7 of them the
    uniforms; 1000 channels with mean 2: 15 µs instead of 33, mean 40: 116 instead of 174;
    1000 channels at 15 Hz with dt = 0.1 ms: 10 µs instead of 5 (there the event sampler,
    which touched only the channels that fire, was faster). Compilation of that scan: ~0.5 s
    of CPU time instead of ~1.9.

    On a CPU the loops stop after the largest count drawn (1-2 iterations for spike sources)
    and after the largest number of parts. Elsewhere each part runs a fixed
    :data:`INVERSION_TERMS` (extra iterations change nothing) and only the parts after the
    first are in a loop: on a GPU, XLA evaluates a data-dependent loop's predicate on the
    host, a device round trip per iteration. ``fixed_terms`` forces one form (``None``: chosen
    by platform at lowering); both draw the same counts.

    ``single_part=True``: the caller knows every mean is at most :data:`SMALL_MEAN` (a
    :class:`PoissonSource` specialised by the plan, :meth:`PoissonSource.specialised`), so
    there is no loop over parts (the same counts, one loop less to compile and run); a mean
    above it nevertheless gives a NaN count, which the run reports as a non-finite state.
    """
    lam = jnp.asarray(lam)
    dtype = lam.dtype if jnp.issubdtype(lam.dtype, jnp.floating) else jnp.result_type(float)
    lam = lam.astype(dtype)
    if lam.size == 0:
        return lam
    flat = lam.ravel()
    parts = jnp.ceil(flat / SMALL_MEAN)  # 0 for a zero mean: nothing is drawn
    mean = flat / jnp.maximum(parts, 1)
    first_term = jnp.exp(-mean)
    n_parts = jnp.max(parts).astype(jnp.int32)
    words = key_words(key)

    def part(j, stopping: bool):
        u = uniform(words, flat.size, dtype, stream=j)

        def advance(s):
            """The next term where ``u`` is past the sum and the term still changes it.
            ``s`` stacks count, term, sum and that condition (one array: XLA compiles one
            kernel for the loop body instead of one per output, ~15 ms each)."""
            k, term, cdf = s[0], s[1], s[2]
            nxt = term * mean / (k + 1)
            go = (u >= cdf) & (cdf + nxt > cdf)
            return jnp.stack([k + go, jnp.where(go, nxt, term), jnp.where(go, cdf + nxt, cdf),
                              go.astype(dtype)])  # fmt: skip

        start = jnp.stack([jnp.zeros_like(mean), first_term, first_term, jnp.ones_like(mean)])
        if stopping:  # two terms per iteration: half the loop's overhead (-10 % at PD 0.1)
            s = lax.while_loop(lambda s: jnp.max(s[3]) > 0, lambda s: advance(advance(s)), start)
        else:
            # A loop with a static trip count (no predicate for the host to read), unrolled
            # by INVERSION_UNROLL: all 64 terms unrolled took XLA's CPU compiler ~11 s.
            s = lax.fori_loop(
                0, INVERSION_TERMS, lambda _, s: advance(s), start, unroll=INVERSION_UNROLL
            )
        return jnp.where(j < parts, s[0], 0)

    def loop(total):  # every part in one loop: one copy of the inversion in the program
        if single_part:  # the one part of every mean: no loop over parts
            return total + part(0, True)
        return lax.fori_loop(0, n_parts, lambda j, t: t + part(j, True), total)

    def single(total):  # no data-dependent loop while every mean is at most SMALL_MEAN
        total = total + part(0, False)
        if single_part:
            return total
        return lax.fori_loop(1, n_parts, lambda j, t: t + part(j, False), total)

    counts = cpu_loop_or_single(jnp.zeros_like(flat), loop, single, force_single=fixed_terms)
    if single_part:
        counts = jnp.where(flat > SMALL_MEAN, jnp.nan, counts)
    return counts.reshape(lam.shape)


class PoissonSource(AbstractSpikeSource):
    r"""Independent Poisson spike trains with rate ``rate`` (Hz, finite and >= 0; scalar, per
    channel, or a :class:`TimedArray` for rates that vary in time).

    Each step emits a Poisson-distributed *count* with mean :math:`\lambda = r\,\Delta t`
    (so high rates are never clipped to one spike per step); the count is the spike's value
    and multiplies the synaptic weight. Counts are exact Poisson draws for every rate, by
    :func:`poisson_counts`: one counter-based uniform per channel and step (Threefry-2x32),
    inverted through the Poisson CDF; a mean above 10 is drawn as a sum of parts of at most
    10. A channel's counts depend only on the step's key and its own rate, so a member of a
    ``vmap`` batch emits what it emits alone. Cost per step (development machine, 2 shared
    CPU cores, jax 0.10.2): ~53 µs for the 7717 channels of Potjans–Diesmann 0.1 (means
    0.12–0.23), ~10 µs for 1000 channels at 15 Hz with dt = 0.1 ms.
    """

    rate: Float[Array, "*n"] | TimedArray
    single_part: bool = eqx.field(static=True, default=False)
    """Set by :meth:`specialised` only: every mean per step is at most :data:`SMALL_MEAN`."""

    def __init__(self, rate: ArrayLike | TimedArray):
        if isinstance(rate, TimedArray):
            check_nonnegative("rate.values", rate.values, owner="PoissonSource", unit="Hz")
        else:
            rate = as_parameter(rate, "rate", owner="PoissonSource", unit="Hz", nonnegative=True)
        self.rate = rate

    def init(self, n, *, dtype=None):
        return PoissonState(jnp.zeros((n,), default_dtype(dtype)))

    def discretize(self, n, dt):
        if isinstance(self.rate, TimedArray):
            self.rate.discretize(dt)
        return self

    def step(self, state, step, dt, key):
        rate = self.rate.at_step(step, dt) if isinstance(self.rate, TimedArray) else self.rate
        lam = jnp.asarray(rate, state.counts.dtype) * (dt * 1e-3)
        counts = poisson_counts(
            key, jnp.broadcast_to(lam, state.counts.shape), single_part=self.single_part
        )
        return PoissonState(counts), counts.astype(state.counts.dtype)

    def specialised(self, dt):
        """This source knowing that every mean count per step is at most :data:`SMALL_MEAN`
        (so :func:`poisson_counts` needs no loop over parts), when its rates say so; else
        itself. Called by the plan with the run's concrete rates (``dt`` in ms); the counts
        are the same either way."""
        rates = self.rate.values if isinstance(self.rate, TimedArray) else self.rate
        rates = np.asarray(rates)
        if rates.size == 0 or float(np.max(rates)) * dt * 1e-3 > SMALL_MEAN:
            return self
        return with_static_field(self, "single_part", True)  # a static fact, not a parameter

    def check_size(self, n):
        rate = self.rate.values[0] if isinstance(self.rate, TimedArray) else self.rate
        if np.ndim(rate) != 0 and np.shape(rate) != (n,):
            raise ValueError(
                f"PoissonSource: `rate` must be a scalar or have shape ({n},); got {np.shape(rate)}."
            )


class SpikeGeneratorState(NamedTuple):
    cursor: Int[Array, ""]
    """Index of the next event not yet emitted."""
    counts: Float[Array, " n"]
    """Spikes emitted in the last step."""


class SpikeGenerator(AbstractSpikeSource):
    """Emits spikes at explicit times: channel ``indices[j]`` fires at ``times[j]`` (ms).

    A spike at time ``τ`` is emitted by step ``round(τ / dt)`` (Brian2's conventions) or
    ``round(τ / dt) - 1`` (NEST's, which record a spike at the end of the step that emits it),
    and recorded at ``τ`` either way; times must lie on the step grid unless
    ``round_times=True``. Under NEST's conventions the earliest spike time is ``dt``, as in
    NEST. Repeated (time, index) pairs emit a spike of value 2, 3, … so nothing is merged away.
    """

    times: np.ndarray
    indices: np.ndarray
    round_times: bool = eqx.field(static=True)
    steps: Int[Array, " m"] | None
    channels: Int[Array, " m"] | None
    per_step: int = eqx.field(static=True)
    timing: Timing = eqx.field(static=True, default=BRIAN2)

    def __init__(
        self, times: ArrayLike, indices: ArrayLike, *, round_times: bool = False, _built=None
    ):
        check_that("times", times, lambda t: t >= 0, "be >= 0", owner="SpikeGenerator", unit="ms",
                   fix="Spikes happen from the start of a run on: pass times >= 0.")  # fmt: skip
        t = np.asarray(times, dtype=float).ravel()
        i = integer_array("indices", indices, owner="SpikeGenerator").ravel()
        if t.shape != i.shape:
            raise ValueError(
                f"SpikeGenerator: `times` and `indices` must have the same length; got {t.size} "
                f"and {i.size}."
            )
        self.times = t
        self.indices = i.astype(np.int64)
        self.round_times = round_times
        steps, channels, per_step = _built if _built is not None else (None, None, 0)
        self.steps = steps
        self.channels = channels
        self.per_step = per_step

    def discretize(self, n, dt):
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= n):
            bad = self.indices[(self.indices < 0) | (self.indices >= n)][0]
            raise ValueError(
                f"SpikeGenerator: index {bad} is out of range for a population of {n} "
                f"(valid 0..{n - 1})."
            )
        steps = np.rint(self.times / dt)
        if not self.round_times:
            off = np.abs(self.times / dt - steps) > 1e-6 * np.maximum(1.0, self.times / dt)
            if np.any(off):
                raise ValueError(
                    f"SpikeGenerator: spike time {self.times[off][0]} ms is not on the step grid "
                    f"(dt = {dt} ms). Use multiples of dt or round_times=True."
                )
        steps = steps - self.timing.stamp_steps
        check_schedule_steps(steps, owner="SpikeGenerator", what="a spike", dt=dt)
        if np.any(steps < 0):
            raise ValueError(
                f"SpikeGenerator: spike time {self.times[steps < 0][0]} ms cannot be emitted "
                "with NEST's conventions, which record a spike at the end of the step that "
                f"emits it: the earliest spike time is dt = {dt} ms. Use times >= dt (as NEST "
                "requires) or Timing.brian2()."
            )
        order = np.lexsort((self.indices, steps))
        steps = steps[order].astype(np.int64)
        per_step = int(np.bincount(steps).max()) if steps.size else 1
        built = (
            jnp.asarray(steps, jnp.int32),
            jnp.asarray(self.indices[order], jnp.int32),
            per_step,
        )
        new = SpikeGenerator(self.times, self.indices, round_times=self.round_times, _built=built)
        return with_static_field(new, "timing", self.timing)

    def init(self, n, *, dtype=None):
        return SpikeGeneratorState(jnp.zeros((), jnp.int32), jnp.zeros((n,), default_dtype(dtype)))

    def step(self, state, step, dt, key):
        if self.steps is None:
            raise RuntimeError("SpikeGenerator must be built into a Network before stepping.")
        n = state.counts.shape[0]
        m = self.steps.shape[0]
        slots = state.cursor + jnp.arange(self.per_step)
        # `<=` rather than `==`: an event can never block the ones behind it.
        due = (slots < m) & (self.steps.at[slots].get(mode="fill", fill_value=2**30) <= step)
        channel = jnp.where(due, self.channels.at[slots].get(mode="fill", fill_value=n), n)
        counts = jnp.zeros((n,), state.counts.dtype).at[channel].add(1.0, mode="drop")
        cursor = state.cursor + jnp.sum(due, dtype=jnp.int32)
        return SpikeGeneratorState(cursor, counts), counts


class SpikeArrayState(NamedTuple):
    counts: Float[Array, " n"]
    """Spikes emitted in the last step."""


class SpikeArray(AbstractSpikeSource):
    """Emits given spikes step by step: row ``k`` of ``spikes`` is emitted in step ``k``.

    For spike-encoded data sets (one array per sample, ``(T, n)``, values 0/1 or counts):
    ``spikes`` is an array leaf, so a batch of samples is a ``vmap`` over networks that differ
    only in this array (no recompilation), and a gradient with respect to the input spikes is
    defined. After the last row the source is silent. Unlike :class:`SpikeGenerator` it needs
    no host-side preprocessing, so it can be built inside ``jit``/``vmap``.

    Arguments:
        spikes: ``(T, n)`` spike values per simulation step (row ``k`` at time ``k * dt``;
            finite and >= 0).
        t_start: time (ms, a whole number of steps) at which row 0 is emitted.

    Example:
        >>> net = bs.Network([bs.Population("in", 64, bs.SpikeArray(x)), ...], ..., dt=1.0)
        >>> batched = jax.vmap(lambda x: run(eqx.tree_at(lambda n: n.populations[0].model.spikes, net, x)))
    """

    spikes: Float[Array, "T n"]
    t_start: float = eqx.field(static=True, default=0.0)
    start_step: int = eqx.field(static=True, default=0)

    def __init__(self, spikes: ArrayLike, t_start: float = 0.0, *, _start_step: int = 0):
        s = as_parameter(spikes, "spikes", owner="SpikeArray", nonnegative=True)
        check_finite("t_start", t_start, owner="SpikeArray", unit="ms")
        if s.ndim != 2 or s.shape[0] == 0:
            raise ValueError(
                f"SpikeArray: `spikes` must have shape (T, n) (one row per step); got {s.shape}."
            )
        self.spikes = s
        self.t_start = float(t_start)
        self.start_step = int(_start_step)

    def discretize(self, n, dt):
        start = _whole_steps(self.t_start, dt, owner="SpikeArray", name="t_start")
        check_schedule_steps([start], owner="SpikeArray", what="`t_start`", dt=dt)
        return SpikeArray(self.spikes, self.t_start, _start_step=start)

    def check_size(self, n):
        if self.spikes.shape[1] != n:
            raise ValueError(
                f"SpikeArray: `spikes` has {self.spikes.shape[1]} columns for a population of {n}."
            )

    def init(self, n, *, dtype=None):
        return SpikeArrayState(jnp.zeros((n,), default_dtype(dtype)))

    def step(self, state, step, dt, key):
        i = step - self.start_step
        inside = (i >= 0) & (i < self.spikes.shape[0])
        row = _row_at(self.spikes, jnp.clip(i, 0, self.spikes.shape[0] - 1))
        counts = jnp.where(inside, row, jnp.zeros_like(row)).astype(state.counts.dtype)
        return SpikeArrayState(counts), counts


def _row_at(x, i):
    """Row ``i`` of ``x`` (a dynamic index that stays a slice, not a gather)."""
    return jax.lax.dynamic_index_in_dim(x, i, 0, keepdims=False)
