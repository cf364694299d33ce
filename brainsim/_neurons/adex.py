r"""Adaptive exponential integrate-and-fire neuron (Brette & Gerstner 2005)."""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from .._errors import as_parameter
from .._integrators import AbstractIntegrator, ExponentialEuler
from .._surrogate import AbstractSurrogate, FastSigmoid
from .._timing import BRIAN2, Timing
from ._base import (
    MEMBRANE_FLOOR,
    AbstractNeuron,
    Drive,
    StateBound,
    check_above,
    default_dtype,
    fire_and_reset,
)


def exponential_current(v, g_L, Delta_T, V_T, V_peak):
    r""":math:`g_L \Delta_T \exp((V - V_T)/\Delta_T)` (pA) with the exponent clipped at ``V_peak``.

    Beyond ``V_peak`` the neuron spikes anyway; clipping keeps one step's overshoot (and its
    gradient) finite in float32 instead of overflowing to ``inf``.
    """
    x = jnp.minimum(v, V_peak) - V_T
    return g_L * Delta_T * jnp.exp(x / Delta_T)


class AdExState(NamedTuple):
    v: Float[Array, " n"]
    """Membrane potential (mV)."""
    w: Float[Array, " n"]
    """Adaptation current (pA)."""
    refractory: Int[Array, " n"]
    """Steps of refractoriness left (0 = free to integrate)."""


class AdEx(AbstractNeuron):
    r"""Adaptive exponential integrate-and-fire (Brette & Gerstner 2005; NEST ``aeif_cond_*``).

    .. math::
        C_m \frac{dV}{dt} &= -g_L (V - E_L) + g_L \Delta_T\, e^{(V - V_T)/\Delta_T}
            - w + I_e + i - g V \\
        \tau_w \frac{dw}{dt} &= a (V - E_L) - w

    When :math:`V \ge V_{peak}` the neuron spikes, :math:`V \leftarrow V_{reset}` and
    :math:`w \leftarrow w + b`; during ``t_ref`` ms :math:`V` is held at ``V_reset`` while
    :math:`w` keeps evolving (NEST's convention). The exponent is clipped at ``V_peak`` so a
    step that overshoots the peak stays finite.

    The default :class:`ExponentialEuler` (Brian2's ``exponential_euler``) treats the leak and
    synaptic conductance exactly and the spike-generating exponential and ``w`` as constant
    over the step; it is first order. Use ``dt`` <= 0.1 ms for spike timing within a fraction of
    a millisecond.

    Defaults are NEST's ``aeif_cond_exp`` (tonic spiking with adaptation under a step current).

    Arguments (scalars or per-neuron arrays):
        C_m: capacitance (pF). g_L: leak conductance (nS). E_L: leak reversal (mV).
        V_T: threshold slope factor's midpoint (mV). Delta_T: slope factor (mV, > 0).
        tau_w: adaptation time constant (ms). a: subthreshold adaptation (nS).
        b: spike-triggered adaptation (pA). V_reset: reset (mV). V_peak: spike cut-off (mV).
        t_ref: refractory period (ms). I_e: bias current (pA).
        surrogate, detach_reset, integrator: as for :class:`LIF`; ``detach_reset`` also
            detaches the spike-triggered jump ``w += b`` (gradients still reach ``b``).

    Example:
        >>> import brainsim as bs, jax, jax.numpy as jnp
        >>> adex = bs.AdEx(I_e=800.0)
        >>> state = adex.init(2)
        >>> drive = bs.Drive.zeros(2, jnp.float32)
        >>> state, spikes = adex.step(state, drive, 0.0, 0.1, jax.random.key(0))
    """

    C_m: Float[Array, "*n"]
    g_L: Float[Array, "*n"]
    E_L: Float[Array, "*n"]
    V_T: Float[Array, "*n"]
    Delta_T: Float[Array, "*n"]
    tau_w: Float[Array, "*n"]
    a: Float[Array, "*n"]
    b: Float[Array, "*n"]
    V_reset: Float[Array, "*n"]
    V_peak: Float[Array, "*n"]
    t_ref: Float[Array, "*n"]
    I_e: Float[Array, "*n"]
    surrogate: AbstractSurrogate
    integrator: AbstractIntegrator
    detach_reset: bool = eqx.field(static=True)
    timing: Timing = eqx.field(static=True, default=BRIAN2)

    def __init__(
        self,
        *,
        C_m: ArrayLike = 281.0,
        g_L: ArrayLike = 30.0,
        E_L: ArrayLike = -70.6,
        V_T: ArrayLike = -50.4,
        Delta_T: ArrayLike = 2.0,
        tau_w: ArrayLike = 144.0,
        a: ArrayLike = 4.0,
        b: ArrayLike = 80.5,
        V_reset: ArrayLike = -70.6,
        V_peak: ArrayLike = 0.0,
        t_ref: ArrayLike = 0.0,
        I_e: ArrayLike = 0.0,
        surrogate: AbstractSurrogate | None = None,
        integrator: AbstractIntegrator | None = None,
        detach_reset: bool = True,
    ):
        owner = type(self).__name__
        self.C_m = as_parameter(C_m, "C_m", owner=owner, unit="pF", positive=True)
        self.g_L = as_parameter(g_L, "g_L", owner=owner, unit="nS", positive=True)
        self.E_L = as_parameter(E_L, "E_L", owner=owner, unit="mV")
        self.V_T = as_parameter(V_T, "V_T", owner=owner, unit="mV")
        self.Delta_T = as_parameter(Delta_T, "Delta_T", owner=owner, unit="mV", positive=True)
        self.tau_w = as_parameter(tau_w, "tau_w", owner=owner, unit="ms", positive=True)
        self.a = as_parameter(a, "a", owner=owner, unit="nS")
        self.b = as_parameter(b, "b", owner=owner, unit="pA")
        self.V_reset = as_parameter(V_reset, "V_reset", owner=owner, unit="mV")
        self.V_peak = as_parameter(V_peak, "V_peak", owner=owner, unit="mV")
        self.t_ref = as_parameter(t_ref, "t_ref", owner=owner, unit="ms", nonnegative=True)
        self.I_e = as_parameter(I_e, "I_e", owner=owner, unit="pA")
        check_above(owner, "V_peak", self.V_peak, "V_reset", self.V_reset)
        check_above(owner, "V_peak", self.V_peak, "V_T", self.V_T)
        self.surrogate = FastSigmoid() if surrogate is None else surrogate
        self.integrator = ExponentialEuler() if integrator is None else integrator
        self.detach_reset = detach_reset

    def init(self, n: int, *, dtype=None) -> AdExState:
        dtype = default_dtype(dtype)
        return AdExState(
            v=jnp.broadcast_to(self.E_L, (n,)).astype(dtype),
            w=jnp.zeros((n,), dtype),
            refractory=jnp.zeros((n,), jnp.int32),
        )

    def voltage(self, state: AdExState):
        return state.v

    def state_bounds(self):
        # NEST's aeif_* models: NumericalInstability below -1e3 mV or beyond |w| = 1e6 pA.
        return {"v": MEMBRANE_FLOOR, "w": StateBound(-1e6, 1e6, "pA")}

    def linear_parts(self, drive: Drive):
        """``(v, w) -> (a, b)`` with :math:`d(v, w)/dt = a (v, w) + b` (for integrators)."""

        def parts(y):
            v, w = y
            spike_current = exponential_current(v, self.g_L, self.Delta_T, self.V_T, self.V_peak)
            a_v = -(self.g_L + drive.conductance) / self.C_m
            b_v = (self.g_L * self.E_L + spike_current - w + self.I_e + drive.current) / self.C_m
            a_w = -1.0 / self.tau_w
            b_w = self.a * (v - self.E_L) / self.tau_w
            return (
                (jnp.broadcast_to(a_v, v.shape), jnp.broadcast_to(a_w, w.shape)),
                (jnp.broadcast_to(b_v, v.shape), jnp.broadcast_to(b_w, w.shape)),
            )

        return parts

    def step(self, state: AdExState, drive: Drive, t, dt, key):
        dtype = state.v.dtype
        held = state.refractory > 0
        v_start = jnp.where(held, self.V_reset, state.v)
        v, w = self.integrator.step(self.linear_parts(drive), (v_start, state.w), dt)
        v, spikes, refractory = fire_and_reset(
            v,
            self.V_peak,
            state.refractory,
            V_reset=self.V_reset,
            surrogate=self.surrogate,
            detach=self.detach_reset,
            t_ref=self.t_ref,
            dt=dt,
            timing=self.timing,
        )
        # The jump is part of the reset: detached with it, else its surrogate gradient
        # b σ'(V - V_peak) ∂V/∂θ (large on the exponential upswing) multiplies at every spike.
        w = w + self.b * (jax.lax.stop_gradient(spikes) if self.detach_reset else spikes)
        return AdExState(v.astype(dtype), w.astype(dtype), refractory), spikes.astype(dtype)
