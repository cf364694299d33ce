r"""The neuron interface and the synaptic drive a neuron receives.

Units throughout brainsim: ms, mV, pF, nS, pA (so pA/pF = mV/ms and nS·mV = pA). Any other
consistent set works too (μF/cm², mS/cm², μA/cm² for Hodgkin–Huxley), because the models only
use ratios.
"""

from __future__ import annotations

import abc
from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._timing import follow_timing


class Drive(NamedTuple):
    r"""Synaptic and injected input to a population during one step, linear in the voltage.

    The membrane receives the current :math:`I(V) = i - g\,V` (pA) where ``i`` is in pA and
    ``g`` in nS. A current-based synapse adds to ``i``; a conductance with reversal potential
    :math:`E` adds :math:`g E` to ``i`` and :math:`g` to ``g``. Keeping the voltage dependence
    explicit lets linear models integrate conductance input exactly over the step.
    """

    current: Float[Array, " n"]
    conductance: Float[Array, " n"]

    @classmethod
    def zeros(cls, n: int, dtype) -> Drive:
        z = jnp.zeros((n,), dtype)
        return cls(z, z)

    def total_current(self, v):
        """The input current (pA) at membrane potential ``v`` (mV)."""
        return self.current - self.conductance * v


class StateBound(NamedTuple):
    """The range of a state variable outside which its integration has certainly failed.

    A state can diverge to huge but finite values (an explicit integrator with too large a
    step), which the NaN/inf check does not see; :func:`~brainsim.simulate` reports a variable
    that leaves its bound as a run-time fault (``result.faults.first_out_of_bounds_step``).
    Bounds are far outside the physiological range, so that only a broken integration crosses
    them; ``±inf`` leaves a side unchecked.
    """

    lower: float
    upper: float
    unit: str = ""


MEMBRANE_FLOOR = StateBound(-1e3, float("inf"), "mV")
"""``V >= -1 V``: NEST's bound for the membrane of its ``aeif_*`` models (it raises
``NumericalInstability`` below -1e3 mV). Upward, a spiking model's membrane is reset after a
spike, so only a diverging integration runs it away downward."""


class AbstractNeuron(eqx.Module):
    """A neuron model: frozen parameters (scalars or per-neuron arrays) and pure functions.

    ``init(n)`` returns the resting state of ``n`` neurons as a NamedTuple of arrays;
    ``step(state, drive, t, dt, key)`` advances it by ``dt`` ms and returns ``(state, spikes)``
    with ``spikes`` a float array (1.0 where the neuron fired during the step) that carries a
    surrogate gradient. ``key`` is a JAX PRNG key for this population and this step (a
    :class:`~brainsim.Network` derives it from the run's key, the step and the population, so
    every step draws afresh and a rerun with the same key draws the same); deterministic models
    ignore it, stochastic ones (noise currents, escape noise) draw from it with ``jax.random``.
    In a partitioned run it is a typed key whose draws of shape ``(n, ...)`` are the device's
    rows of the single-device draws (:mod:`brainsim._block_random` lists what matches).
    ``voltage(state)`` is the membrane potential (mV) that conductance synapses see.

    :mod:`brainsim.extend` holds the building blocks for writing one (threshold, reset and
    refractoriness that follow the network's :class:`~brainsim.Timing`, parameter checks,
    dtype helpers).
    """

    @abc.abstractmethod
    def init(self, n: int, *, dtype=None):
        """Resting state of ``n`` neurons."""

    @abc.abstractmethod
    def step(self, state, drive: Drive, t, dt, key):
        """Advance one step of ``dt`` ms from time ``t`` (ms) with the synaptic and injected
        input ``drive``; ``key`` is this step's PRNG key (ignored by deterministic models).
        Return ``(new_state, spikes)``."""

    @abc.abstractmethod
    def voltage(self, state) -> Float[Array, " n"]:
        """Membrane potential (mV)."""

    def check_size(self, n: int) -> None:
        """Raise if a per-neuron parameter does not fit a population of ``n`` neurons."""
        from .._errors import check_per_neuron

        for name, value in _array_fields(self):
            check_per_neuron(name, value, n, owner=type(self).__name__)

    def with_timing(self, timing) -> AbstractNeuron:
        """This model following the conventions ``timing`` (a :class:`~brainsim.Timing`; a
        :class:`~brainsim.Network` passes its own). Models whose step depends on them (the
        refractory clamp) keep them in a static ``timing`` field; others are unchanged."""
        return follow_timing(self, timing)

    def state_bounds(self) -> dict[str, StateBound]:
        """Bounds of state variables (by field name of the state) beyond which the run has
        diverged, checked after every step (:class:`StateBound`). The default, ``{}``, checks
        every floating-point variable only for NaN and inf; a model with an approximate
        integrator should declare the variables that blow up when it fails."""
        return {}


class AbstractSpikeSource(eqx.Module):
    """A population without membrane dynamics that emits spikes (Poisson, generators).

    ``init(n)`` returns the source's state; ``step(state, step, dt, key)`` returns
    ``(state, spikes)`` for the integer step index ``step`` (time ``step * dt``). Sources
    receive no synaptic input.
    """

    @abc.abstractmethod
    def init(self, n: int, *, dtype=None):
        """Initial state of a source of ``n`` channels."""

    @abc.abstractmethod
    def step(self, state, step, dt, key):
        """Advance step ``step``; return ``(new_state, spikes)``."""

    def discretize(self, n: int, dt: float) -> AbstractSpikeSource:
        """Precompute anything that depends on the step (called once when a network is built)."""
        return self

    def check_size(self, n: int) -> None:
        return None

    def with_timing(self, timing) -> AbstractSpikeSource:
        """This source following the conventions ``timing`` (:meth:`AbstractNeuron.with_timing`)."""
        return follow_timing(self, timing)


def _array_fields(module):
    import dataclasses

    for f in dataclasses.fields(module):
        value = getattr(module, f.name)
        if hasattr(value, "shape") and not f.metadata.get("static", False):
            yield f.name, value


def default_dtype(dtype):
    """The float dtype for state arrays: the given one, else JAX's default float."""
    return jnp.dtype(dtype) if dtype is not None else jnp.zeros(()).dtype


def check_above(owner: str, upper: str, upper_value, lower: str, lower_value) -> None:
    """Raise if a concrete ``upper_value`` is not above ``lower_value`` everywhere (mV)."""
    import numpy as np

    from .._errors import is_concrete

    if is_concrete(upper_value) and is_concrete(lower_value):
        hi, lo = np.broadcast_arrays(np.asarray(upper_value), np.asarray(lower_value))
        if np.any(hi <= lo):
            i = np.argmax((hi <= lo).ravel())
            raise ValueError(
                f"{owner}: `{upper}` ({hi.ravel()[i]} mV) must be above `{lower}` "
                f"({lo.ravel()[i]} mV). Raise `{upper}` or lower `{lower}`."
            )


def reset_membrane(v, spikes, V_reset, detach: bool):
    """``v`` set to ``V_reset`` where ``spikes`` is 1, written so the surrogate gradient flows.

    The form ``v (1 - s) + V_reset s`` is exact in floating point even after a large overshoot
    (exponential and quadratic models overshoot the peak by orders of magnitude in one step;
    ``v - (v - V_reset) s`` cancels catastrophically there: 1e10 - (1e10 + 70.6) = -128 in
    float32). With ``detach`` the reset carries no gradient (often neutral or better for
    training, Zenke & Vogels 2021).
    """
    import jax

    gate = jax.lax.stop_gradient(spikes) if detach else spikes
    return v * (1.0 - gate) + V_reset * gate


RESETS = ("value", "subtract")
"""The resets of :func:`fire_and_reset`: to ``V_reset``, or by subtracting the threshold."""


def subtract_threshold(v, spikes, threshold, V_reset, detach: bool):
    r"""``v`` lowered by :math:`V_{th} - V_{reset}` where ``spikes`` is 1 (the "subtract" reset
    of snnTorch and Spyx, :math:`v \leftarrow v - V_{th}` for :math:`V_{reset} = 0`): the
    overshoot above the threshold is kept. ``detach`` as in :func:`reset_membrane`."""
    import jax

    gate = jax.lax.stop_gradient(spikes) if detach else spikes
    return v - gate * (threshold - V_reset)


def check_reset(reset, owner: str) -> str:
    """``reset`` if it is one of :data:`RESETS`, else a ``ValueError`` naming the choices."""
    if reset not in RESETS:
        raise ValueError(
            f"{owner}: `reset` must be 'value' (V <- V_reset) or 'subtract' (V <- V - "
            f"(V_th - V_reset), snnTorch's and Spyx's default); got {reset!r}."
        )
    return reset


def fire_and_reset(
    v, threshold, refractory, *, V_reset, surrogate, detach, t_ref, dt, timing, reset="value"
):
    r"""Threshold, reset and absolute refractoriness shared by the integrate-and-fire models.

    ``v`` is the membrane after integrating the step. Neurons still refractory (counter > 0)
    are held at ``V_reset`` and cannot spike; a neuron with ``v >= threshold`` spikes, is reset
    (``reset="value"``: to ``V_reset``; ``"subtract"``: by :math:`V_{th} - V_{reset}`,
    :func:`subtract_threshold`) and is held for the next ``timing.refractory_hold(t_ref, dt)`` steps:
    :math:`t_{ref}/\Delta t - 1` with Brian2's conventions (so the shortest interval between
    spikes is :math:`t_{ref}`), :math:`t_{ref}/\Delta t` with NEST's (:class:`~brainsim.Timing`).

    Returns ``(v, spikes, refractory)``.
    """
    import jax.numpy as jnp

    held = refractory > 0
    v = jnp.where(held, V_reset, v)
    spikes = surrogate(v - threshold) * jnp.logical_not(held)
    if reset == "subtract":
        v = subtract_threshold(v, spikes, threshold, V_reset, detach)
    else:
        v = reset_membrane(v, spikes, V_reset, detach)
    refractory = next_refractory(refractory, spikes, t_ref, dt, timing)
    return v, spikes, refractory


def next_refractory(refractory, spikes, t_ref, dt, timing):
    """The refractory counter after a step: the hold of :class:`~brainsim.Timing` where the
    neuron spiked, else one step less (never below 0)."""
    hold = timing.refractory_hold(t_ref, dt)
    return jnp.where(spikes > 0, hold, jnp.maximum(refractory - 1, 0)).astype(jnp.int32)
