r"""Adaptive-threshold leaky integrate-and-fire neuron (Bellec et al. 2018)."""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from .._errors import as_parameter
from .._integrators import AbstractIntegrator, ExponentialEuler
from .._surrogate import AbstractSurrogate, FastSigmoid
from .._timing import BRIAN2, Timing
from ._base import AbstractNeuron, Drive, check_above, default_dtype, fire_and_reset


class ALIFState(NamedTuple):
    v: Float[Array, " n"]
    """Membrane potential (mV)."""
    a: Float[Array, " n"]
    """Threshold adaptation variable (dimensionless; +1 per spike)."""
    refractory: Int[Array, " n"]
    """Steps of refractoriness left (0 = free to integrate)."""


class ALIF(AbstractNeuron):
    r"""LIF membrane with a spike-triggered adaptive threshold (Bellec et al. 2018, LSNN).

    .. math::
        C_m \frac{dV}{dt} &= -g_L (V - E_L) + I_e + i - g V, \qquad g_L = C_m/\tau_m \\
        \frac{da}{dt} &= -a / \tau_a, \qquad
        \vartheta = V_{th} + \beta\, a

    The neuron spikes when :math:`V \ge \vartheta`; then :math:`V \leftarrow V_{reset}` (held for
    ``t_ref``) and :math:`a \leftarrow a + 1`. Both equations are linear, so the default
    :class:`ExponentialEuler` integrator is exact for input held constant over a step:
    :math:`a_{n+1} = a_n e^{-\Delta t/\tau_a}`. The threshold of a step uses ``a`` at the end of
    the step (before that step's spike is added). Bellec's discrete form
    :math:`a \leftarrow \rho a + (1-\rho) z` is the same model with ``beta`` rescaled by
    :math:`1/(1-\rho)`; Bellec resets by subtracting the threshold, this model resets to
    ``V_reset`` like :class:`LIF`. With ``beta = 0`` it is exactly :class:`LIF`.

    Arguments (scalars or per-neuron arrays):
        C_m: capacitance (pF). tau_m: membrane time constant (ms; ``inf``: no leak).
        E_L: resting potential (mV). V_th: baseline threshold (mV; ``inf``: never spikes).
        V_reset: reset (mV). t_ref: refractory period (ms).
        I_e: bias current (pA). beta: threshold increase per unit of ``a`` (mV, >= 0).
        tau_a: adaptation time constant (ms).
        surrogate, detach_reset, integrator: as for :class:`LIF`.

    Example:
        >>> import brainsim as bs, jax, jax.numpy as jnp
        >>> alif = bs.ALIF(beta=2.0, tau_a=200.0, I_e=400.0)
        >>> state = alif.init(3)
        >>> drive = bs.Drive.zeros(3, jnp.float32)
        >>> state, spikes = alif.step(state, drive, 0.0, 0.1, jax.random.key(0))
    """

    C_m: Float[Array, "*n"]
    tau_m: Float[Array, "*n"]
    E_L: Float[Array, "*n"]
    V_th: Float[Array, "*n"]
    V_reset: Float[Array, "*n"]
    t_ref: Float[Array, "*n"]
    I_e: Float[Array, "*n"]
    beta: Float[Array, "*n"]
    tau_a: Float[Array, "*n"]
    surrogate: AbstractSurrogate
    integrator: AbstractIntegrator
    detach_reset: bool = eqx.field(static=True)
    timing: Timing = eqx.field(static=True, default=BRIAN2)

    def __init__(
        self,
        *,
        C_m: ArrayLike = 250.0,
        tau_m: ArrayLike = 10.0,
        E_L: ArrayLike = -70.0,
        V_th: ArrayLike = -55.0,
        V_reset: ArrayLike = -70.0,
        t_ref: ArrayLike = 2.0,
        I_e: ArrayLike = 0.0,
        beta: ArrayLike = 1.7,
        tau_a: ArrayLike = 200.0,
        surrogate: AbstractSurrogate | None = None,
        integrator: AbstractIntegrator | None = None,
        detach_reset: bool = True,
    ):
        owner = type(self).__name__
        self.C_m = as_parameter(C_m, "C_m", owner=owner, unit="pF", positive=True)
        self.tau_m = as_parameter(
            tau_m, "tau_m", owner=owner, unit="ms", positive=True, allow_inf=True
        )
        self.E_L = as_parameter(E_L, "E_L", owner=owner, unit="mV")
        self.V_th = as_parameter(V_th, "V_th", owner=owner, unit="mV", allow_inf=True)
        self.V_reset = as_parameter(V_reset, "V_reset", owner=owner, unit="mV")
        self.t_ref = as_parameter(t_ref, "t_ref", owner=owner, unit="ms", nonnegative=True)
        self.I_e = as_parameter(I_e, "I_e", owner=owner, unit="pA")
        self.beta = as_parameter(beta, "beta", owner=owner, unit="mV", nonnegative=True)
        self.tau_a = as_parameter(tau_a, "tau_a", owner=owner, unit="ms", positive=True)
        check_above(owner, "V_th", self.V_th, "V_reset", self.V_reset)
        self.surrogate = FastSigmoid() if surrogate is None else surrogate
        self.integrator = ExponentialEuler() if integrator is None else integrator
        self.detach_reset = detach_reset

    def init(self, n: int, *, dtype=None) -> ALIFState:
        dtype = default_dtype(dtype)
        return ALIFState(
            v=jnp.broadcast_to(self.E_L, (n,)).astype(dtype),
            a=jnp.zeros((n,), dtype),
            refractory=jnp.zeros((n,), jnp.int32),
        )

    def voltage(self, state: ALIFState):
        return state.v

    def threshold(self, state: ALIFState):
        """The current threshold :math:`V_{th} + \\beta a` (mV)."""
        return self.V_th + self.beta * state.a

    def step(self, state: ALIFState, drive: Drive, t, dt, key):
        dtype = state.v.dtype
        g_L = self.C_m / self.tau_m
        inv_C = 1.0 / self.C_m  # one reciprocal, not two divisions per neuron (see LIF)

        def linear_parts(y):
            v, a = y
            a_v = -(g_L + drive.conductance) * inv_C
            b_v = (g_L * self.E_L + self.I_e + drive.current) * inv_C
            a_a = -1.0 / self.tau_a
            return (
                (jnp.broadcast_to(a_v, v.shape), jnp.broadcast_to(a_a, a.shape)),
                (jnp.broadcast_to(b_v, v.shape), jnp.zeros_like(a)),
            )

        v, a = self.integrator.step(linear_parts, (state.v, state.a), dt)
        v, spikes, refractory = fire_and_reset(
            v,
            self.V_th + self.beta * a,
            state.refractory,
            V_reset=self.V_reset,
            surrogate=self.surrogate,
            detach=self.detach_reset,
            t_ref=self.t_ref,
            dt=dt,
            timing=self.timing,
        )
        a = a + spikes
        return ALIFState(v.astype(dtype), a.astype(dtype), refractory), spikes.astype(dtype)
