r"""Run-time faults: checked in every step, carried through the loop, reported after it.

Three kinds, each found without slowing the step down:

* **Non-finite state** — a NaN or ±inf in a population's floating-point state. Tested on the
  sum of each array, which NaN and inf propagate to: one reduction per array and step.
  ``all(isfinite(x))`` needs an element-wise pass before its reduction; in a COBA 4k step
  that check cost 24 % of the step, the sum 7 % (in-process A/B on the development machine),
  and :func:`~brainsim.kernels.fast_sum`, which avoids XLA's scalar windowed reductions on
  CPU, less again. The sum also overflows, and flags the population, when values come within a
  factor ``n`` of the largest float (about 3e38 / n in float32), a state as broken as an
  infinite one.
* **State out of bounds** — a diverging integration can stay finite (an Euler-integrated
  Hodgkin–Huxley membrane at 2.7e7 mV, an AdEx adaptation current of 1e7 pA). Each neuron
  model declares the range of its variables (:meth:`AbstractNeuron.state_bounds`); for those
  variables the step's one reduction is the sum of an indicator, 0 inside the range, 1 outside
  it, ``inf`` where the value is not finite, so it finds both faults at the cost of the plain
  sum (NaN fails every comparison). Only in the step where a population first leaves its
  range, a ``lax.cond`` finds which variable, and the value (its predicate is made
  batch-independent with ``unvmap_any``, so under ``vmap`` it stays a branch taken once
  instead of a select computed every step).
* **Recording overflow** — items a monitor could not store (:meth:`AbstractMonitor.overflow`).

The report (:func:`fault_message`) names the population, variable, value, step and time, the
monitor, and for batched (``vmap``-ed) results the batch member; the same text comes from
``result.raise_if_failed()`` on a concrete result and from the check that runs inside a
``jit``/``vmap`` (:func:`check_traced`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from equinox.internal import unvmap_any
from jax import lax

from ._clock import absolute_step
from ._errors import SimulationError, unknown_name_error
from ._monitors import INT32_MAX
from ._neurons._base import AbstractNeuron, StateBound
from .kernels import fast_sum


class Faults(eqx.Module):
    """Run-time faults carried through the loop and checked after it (under ``vmap`` every
    array has the batch axes in front)."""

    first_nonfinite_step: jax.Array
    """Per population (network order): the first step of the run (0 = its first step) whose
    state was NaN/inf, or -1; the network's step is ``result.start_step`` plus it."""
    recording_overflow: jax.Array
    """Per monitor: items that did not fit its buffer (0 if none; int32, held at its maximum,
    2147483647, rather than wrapping)."""
    first_out_of_bounds_step: jax.Array
    """Per population: the first step of the run in which a state variable left the range its
    model declares (:meth:`AbstractNeuron.state_bounds`), or -1."""
    out_of_bounds_variable: jax.Array
    """Per population: which variable then (an index into ``result.state_bounds[p]``), or -1."""
    out_of_bounds_value: jax.Array
    """Per population: the value seen then (the one farthest outside the range)."""


class StateFaults(NamedTuple):
    """The per-population fields of :class:`Faults`, carried through the loop."""

    first_nonfinite_step: jax.Array
    first_out_of_bounds_step: jax.Array
    out_of_bounds_variable: jax.Array
    out_of_bounds_value: jax.Array

    @classmethod
    def init(cls, n_populations: int) -> StateFaults:
        never = jnp.full((n_populations,), -1, jnp.int32)
        return cls(never, never, never, jnp.zeros((n_populations,), jnp.result_type(float)))


def population_bounds(population, pstate) -> tuple[tuple[str, StateBound], ...]:
    """The validated ``state_bounds()`` of a population's model, as ``(variable, bound)``."""
    model = population.model
    if not isinstance(model, AbstractNeuron):
        return ()
    bounds = tuple(model.state_bounds().items())
    owner = f"{type(model).__name__}.state_bounds() (population {population.name!r})"
    fields = getattr(pstate, "_fields", ())
    for name, bound in bounds:
        if name not in fields:
            raise unknown_name_error("state variable", name, fields, where=owner)
        if not isinstance(bound, StateBound) or not bound.lower < bound.upper:
            raise ValueError(
                f"{owner}: the bound of {name!r} must be a brainsim StateBound(lower, upper, "
                f"unit) with lower < upper; got {bound!r}."
            )
        if not jnp.issubdtype(getattr(pstate, name).dtype, jnp.floating):
            raise ValueError(
                f"{owner}: {name!r} is not a floating-point variable "
                f"({getattr(pstate, name).dtype}); declare bounds for floating-point ones only."
            )
    return bounds


def _limits(bound: StateBound, dtype):
    """The bound as finite numbers of ``dtype``, so that ±inf values fall outside it."""
    big = float(jnp.finfo(dtype).max)
    return max(bound.lower, -big), min(bound.upper, big)


def _outside_count(x, bound: StateBound, valid):
    """0 if every value of ``x`` is inside ``bound``, a positive count if some finite ones are
    outside, ``inf`` if one is NaN or ±inf: one element-wise pass and one native sum."""
    lo, hi = _limits(bound, x.dtype)
    inside = (x >= lo) & (x <= hi)
    if valid is not None:
        inside = inside | ~valid
    one = jnp.where(jnp.isfinite(x), 1.0, jnp.inf).astype(x.dtype)
    return fast_sum(jnp.where(inside, jnp.zeros((), x.dtype), one))


def _first_outside(pstate, bounds, valid):
    """``(variable index, value)`` of the first bounded variable with a finite value outside
    its bound, the value farthest outside; ``(-1, 0)`` if none (only run in the rare step where
    a population first leaves its range)."""
    found, values = [], []
    for name, bound in bounds:
        x = getattr(pstate, name)
        lo, hi = _limits(bound, x.dtype)
        out = jnp.isfinite(x) & ((x < lo) | (x > hi))
        if valid is not None:
            out = out & valid
        distance = jnp.where(out, jnp.maximum(lo - x, x - hi), -1.0)
        found.append(jnp.any(out))
        values.append(x.ravel()[jnp.argmax(distance.ravel())])
    found = jnp.stack(found)
    which = jnp.where(jnp.any(found), jnp.argmax(found), -1).astype(jnp.int32)
    value = jnp.stack([v.astype(jnp.result_type(float)) for v in values])[jnp.maximum(which, 0)]
    return which, value


def check_step(populations, states, k, faults: StateFaults, valid=None) -> StateFaults:
    """Record the faults of step ``k``'s new ``states`` (one per population, network order).

    ``valid``: optional per-population masks of the entries that are real neurons (the padding
    of a sharded population is not checked).
    """
    states = [jax.tree.map(lax.stop_gradient, s) for s in states]  # bookkeeping, no gradient
    valid = valid or {}
    nonfinite, outside, bounded = [], [], []
    for p, pstate in zip(populations, states, strict=True):
        bounds = population_bounds(p, pstate)
        mask = valid.get(p.name)
        ranged = [getattr(pstate, name) for name, _ in bounds]
        plain = [
            x
            for x in jax.tree.leaves(pstate)
            if jnp.issubdtype(x.dtype, jnp.inexact) and not any(x is y for y in ranged)
        ]
        sums = [fast_sum(x if mask is None else _masked(x, mask)) for x in plain]
        counts = [_outside_count(getattr(pstate, n), b, mask) for n, b in bounds]
        both = sums + counts
        nonfinite.append(
            jnp.logical_not(jnp.all(jnp.isfinite(jnp.stack(both)))) if both else jnp.bool_(False)
        )
        outside.append(
            jnp.any(jnp.stack([jnp.isfinite(c) & (c > 0) for c in counts]))
            if counts
            else jnp.bool_(False)
        )
        bounded.append(bounds)
    first_nf = faults.first_nonfinite_step
    first_nf = jnp.where((first_nf < 0) & jnp.stack(nonfinite), k, first_nf)
    faults = faults._replace(first_nonfinite_step=first_nf)
    if not any(bounded):
        return faults
    newly = (faults.first_out_of_bounds_step < 0) & jnp.stack(outside)

    def record(faults):
        step, var, value = faults[1:]
        for i, (pstate, bounds) in enumerate(zip(states, bounded, strict=True)):
            if not bounds:
                continue
            which, seen = _first_outside(pstate, bounds, valid.get(populations[i].name))
            step = step.at[i].set(jnp.where(newly[i], k, step[i]))
            var = var.at[i].set(jnp.where(newly[i], which, var[i]))
            value = value.at[i].set(jnp.where(newly[i], seen, value[i]))
        return faults._replace(
            first_out_of_bounds_step=step, out_of_bounds_variable=var, out_of_bounds_value=value
        )

    return lax.cond(unvmap_any(jnp.any(newly)), record, lambda f: f, faults)


def _masked(x, mask):
    return jnp.where(mask.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.zeros((), x.dtype))


def combine_devices(faults: StateFaults, axis: str) -> StateFaults:
    """One :class:`StateFaults` from those each device of a ``shard_map`` recorded for its
    neurons: the earliest step anywhere, with the variable and value of the lowest-numbered
    device that saw it (one collective per field, after the run)."""
    never = INT32_MAX

    def earliest(step):
        return lax.pmin(jnp.where(step < 0, never, step), axis)

    first_nf = earliest(faults.first_nonfinite_step)
    first_oob = earliest(faults.first_out_of_bounds_step)
    device = lax.axis_index(axis)
    saw = (faults.first_out_of_bounds_step == first_oob) & (first_oob != never)
    chosen = device == lax.pmin(jnp.where(saw, device, never), axis)
    var = lax.psum(jnp.where(chosen, faults.out_of_bounds_variable, 0), axis)
    value = lax.psum(jnp.where(chosen, faults.out_of_bounds_value, 0), axis)
    return StateFaults(
        jnp.where(first_nf == never, -1, first_nf),
        jnp.where(first_oob == never, -1, first_oob),
        jnp.where(first_oob == never, -1, var),
        value,
    )


# ------------------------------------------------------------------------------ reporting


class FaultContext(NamedTuple):
    """What a fault report needs besides the fault arrays: static, so that the check inside a
    ``jit`` can format it on the host."""

    population_names: tuple[str, ...]
    """Names of what the state faults index: the groups of merged populations."""
    state_bounds: tuple[tuple[tuple[str, StateBound], ...], ...]
    monitors: tuple
    dt: float


def _range_text(bound: StateBound) -> str:
    unit = f" {bound.unit}" if bound.unit else ""
    if math.isinf(bound.upper):
        return f">= {bound.lower:g}{unit}"
    if math.isinf(bound.lower):
        return f"<= {bound.upper:g}{unit}"
    return f"[{bound.lower:g}, {bound.upper:g}]{unit}"


def _member_text(index: tuple) -> str:
    return str(index[0]) if len(index) == 1 else str(index)


def fault_message(context: FaultContext, faults: Faults, start_steps=0) -> str | None:
    """The report of the earliest fault (by step; recording overflows after state faults), or
    ``None`` if there is none. ``faults`` may be batched: the report then names the batch
    member and how many members failed. ``start_steps``: the network's step at the start of
    the run (host integers, one per batch member or one for all), which the run's own step
    counts of the faults are added to."""
    f = {name: np.asarray(getattr(faults, name)) for name in Faults.__dataclass_fields__}
    batch = f["first_nonfinite_step"].shape[:-1]
    starts = np.broadcast_to(np.asarray(start_steps, np.int64), batch)
    found = []  # (sort key, member, text given " in batch member ..." or "")
    for member in np.ndindex(batch):
        start = int(starts[member])
        for i, name in enumerate(context.population_names):
            step = int(f["first_out_of_bounds_step"][member][i])
            if step >= 0:
                var = int(f["out_of_bounds_variable"][member][i])
                value = float(f["out_of_bounds_value"][member][i])
                bound = context.state_bounds[i][var]
                text = _out_of_bounds_text(name, *bound, value, start + step)
                found.append(((0, step, 0, i), member, text))
            step = int(f["first_nonfinite_step"][member][i])
            if step >= 0:
                found.append(((0, step, 1, i), member, _nonfinite_text(name, start + step)))
        for j, monitor in enumerate(context.monitors):
            count = int(f["recording_overflow"][member][j])
            if count > 0:
                found.append(((1, 0, 0, j), member, _overflow_text(monitor, count)))
    if not found:
        return None
    _, member, text = min(found, key=lambda x: x[0])  # the first member on ties
    if not batch:
        return text("", context.dt)
    failed = sorted({m for _, m, _ in found})
    listed = ", ".join(map(_member_text, failed[:8])) + (", ..." if len(failed) > 8 else "")
    return text(f" in batch member {_member_text(member)}", context.dt) + (
        f" ({len(failed)} of {math.prod(batch)} batch members failed: {listed}.)"
    )


def _out_of_bounds_text(population, variable, bound, value, step):
    unit = f" {bound.unit}" if bound.unit else ""
    return lambda where, dt: (
        f"Numerical instability in population {population!r}: state variable {variable!r} "
        f"reached {value:.6g}{unit} at step {step} (t = {step * dt:g} ms){where}, outside the "
        f"range its model allows ({_range_text(bound)}): the integration diverged or the "
        "inputs are far out of scale (the values stay finite but mean nothing). Use a smaller "
        "dt, another integrator (e.g. ExponentialEuler or RK4 instead of Euler), or check the "
        "parameters and inputs."
    )


def _nonfinite_text(population, step):
    return lambda where, dt: (
        "Non-finite state (NaN, inf or overflowing values) first appeared in population "
        f"{population!r} at step {step} (t = {step * dt:g} ms){where}. Reduce dt, check "
        "parameters and inputs, or use a more stable integrator."
    )


def _overflow_text(monitor, count):
    return lambda where, dt: (
        (f"{where[1:].capitalize()}: " if where else "") + monitor.describe_overflow(count)
    )


TRACED_HINT = (
    " (Raised by simulate(check=True) inside jit/vmap, which discards the result. To keep "
    "it, call simulate(..., check=False) inside the transformation and "
    "result.raise_if_failed() on the returned result outside it.)"
)

_RAISED: list[str] = []
"""Reports raised from inside compiled code, so :func:`brainsim.jit` can re-raise them as a
plain :class:`SimulationError` (JAX wraps a callback's exception in its runtime error)."""


def check_traced(result):
    """The fault check inside a transformation: a host callback receives the concrete fault
    arrays (the whole batch under ``vmap``) and raises :class:`SimulationError` with the same
    report as ``raise_if_failed``. It is attached to ``result.state.step`` (the check runs
    when that is used, as with ``equinox.error_if``).

    Not ``equinox.branched_error_if``: its messages are fixed strings chosen by an index, and
    under ``vmap`` the largest index over the batch wins, so it can name neither the step nor
    the value nor the batch member (and picked the wrong kind of fault when one member failed).
    """
    context = FaultContext(result.group_names, result.state_bounds, result.monitors, result.dt)

    def host(step, faults, start_step, start_epoch):
        message = fault_message(context, faults, absolute_step(start_step, start_epoch))
        if message is not None:
            message += TRACED_HINT
            _RAISED.append(message)
            del _RAISED[:-8]
            raise SimulationError(message)
        return step

    step = result.state.step
    faults = jax.tree.map(lax.stop_gradient, result.faults)
    try:  # runs right here under an eager vmap (no jit): give the plain error there too
        checked = jax.pure_callback(
            host,
            jax.ShapeDtypeStruct(step.shape, step.dtype),
            step,
            faults,
            *result.start,
            vmap_method="broadcast_all",
        )
    except jax.errors.JaxRuntimeError as e:
        error = reraised(e)
        if error is None:
            raise
        raise error from None
    return eqx.tree_at(lambda r: r.state.step, result, checked)


def reraised(error: BaseException) -> SimulationError | None:
    """The :class:`SimulationError` behind a JAX runtime error raised by :func:`check_traced`,
    or ``None``."""
    text = str(error)
    for message in reversed(_RAISED):
        if message in text:
            _RAISED.remove(message)
            return SimulationError(message)
    return None
