r"""Leaky integrate-and-fire neuron with an absolute refractory period."""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from .._errors import as_parameter
from .._integrators import AbstractIntegrator, ExponentialEuler
from .._surrogate import AbstractSurrogate, FastSigmoid
from .._timing import BRIAN2, Timing
from ._base import (
    AbstractNeuron,
    Drive,
    check_above,
    check_reset,
    default_dtype,
    fire_and_reset,
)


class LIFState(NamedTuple):
    v: Float[Array, " n"]
    """Membrane potential (mV)."""
    refractory: Int[Array, " n"]
    """Steps of refractoriness left (0 = free to integrate)."""


class LIF(AbstractNeuron):
    r"""Leaky integrate-and-fire neuron (NEST ``iaf_psc_*`` / ``iaf_cond_*`` membrane).

    .. math::
        C_m \frac{dV}{dt} = -g_L (V - E_L) + I_e + i - g V, \qquad g_L = C_m / \tau_m

    where :math:`i - gV` is the synaptic :class:`Drive`. When :math:`V \ge V_{th}` the neuron
    spikes, :math:`V \leftarrow V_{reset}`, and :math:`V` is held there for ``t_ref`` ms
    (``reset="subtract"``: :math:`V \leftarrow V - (V_{th} - V_{reset})`, keeping the
    overshoot, the default of snnTorch and Spyx).
    With the default :class:`ExponentialEuler` integrator the subthreshold update is the exact
    solution for input held constant over the step:
    :math:`V_{n+1} = V_\infty + (V_n - V_\infty) e^{-\Delta t (g_L + g)/C_m}`.

    Arguments (scalars or per-neuron arrays):
        C_m: membrane capacitance (pF). tau_m: membrane time constant (ms; ``inf``: no leak,
        a perfect integrator).
        E_L: resting potential (mV). V_th: threshold (mV; ``inf``: never spikes).
        V_reset: reset potential (mV).
        t_ref: refractory period (ms), rounded to whole steps. I_e: constant bias current (pA).
        surrogate: spike function (default :class:`FastSigmoid` with scale 1/mV).
        reset: ``"value"`` (default; NEST, Brian2 and NIR: :math:`V \leftarrow V_{reset}`) or
            ``"subtract"`` (:math:`V \leftarrow V - (V_{th} - V_{reset})`; with
            :math:`V_{reset} = 0` snnTorch's and Spyx's default reset by the threshold).
        detach_reset: if True (default, as in snnTorch) the reset carries no gradient;
            with False the gradient also flows through the reset, which can explode in
            recurrent networks (the factor (V - V_reset) σ' multiplies it at every spike).
        integrator: default exact exponential integration.

    Example:
        >>> import brainsim as bs, jax, jax.numpy as jnp
        >>> lif = bs.LIF(tau_m=20.0, C_m=200.0, E_L=-60.0, V_th=-50.0, V_reset=-60.0, I_e=250.0)
        >>> state = lif.init(2)
        >>> drive = bs.Drive.zeros(2, jnp.float32)
        >>> state, spikes = lif.step(state, drive, 0.0, 0.1, jax.random.key(0))
    """

    C_m: Float[Array, "*n"]
    tau_m: Float[Array, "*n"]
    E_L: Float[Array, "*n"]
    V_th: Float[Array, "*n"]
    V_reset: Float[Array, "*n"]
    t_ref: Float[Array, "*n"]
    I_e: Float[Array, "*n"]
    surrogate: AbstractSurrogate
    integrator: AbstractIntegrator
    detach_reset: bool = eqx.field(static=True)
    reset: str = eqx.field(static=True, default="value")
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
        surrogate: AbstractSurrogate | None = None,
        integrator: AbstractIntegrator | None = None,
        detach_reset: bool = True,
        reset: str = "value",
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
        check_above(owner, "V_th", self.V_th, "V_reset", self.V_reset)
        self.surrogate = FastSigmoid() if surrogate is None else surrogate
        self.integrator = ExponentialEuler() if integrator is None else integrator
        self.detach_reset = detach_reset
        self.reset = check_reset(reset, owner)

    def init(self, n: int, *, dtype=None) -> LIFState:
        dtype = default_dtype(dtype)
        return LIFState(
            v=jnp.broadcast_to(self.E_L, (n,)).astype(dtype),
            refractory=jnp.zeros((n,), jnp.int32),
        )

    def voltage(self, state: LIFState):
        return state.v

    def subthreshold(self, v, drive: Drive, dt):
        """Integrate the membrane over one step without threshold or refractoriness."""
        g_L = self.C_m / self.tau_m
        # One reciprocal instead of two divisions per neuron and step: a vector division
        # costs several multiplications, and this runs for every neuron in every step.
        inv_C = 1.0 / self.C_m

        def linear_parts(v):
            a = -(g_L + drive.conductance) * inv_C
            b = (g_L * self.E_L + self.I_e + drive.current) * inv_C
            return jnp.broadcast_to(a, v.shape), jnp.broadcast_to(b, v.shape)

        return self.integrator.step(linear_parts, v, dt)

    def step(self, state: LIFState, drive: Drive, t, dt, key):
        dtype = state.v.dtype
        v = self.subthreshold(state.v, drive, dt)
        v, spikes, refractory = fire_and_reset(
            v,
            self.V_th,
            state.refractory,
            V_reset=self.V_reset,
            surrogate=self.surrogate,
            detach=self.detach_reset,
            t_ref=self.t_ref,
            dt=dt,
            timing=self.timing,
            reset=self.reset,
        )
        return LIFState(v.astype(dtype), refractory), spikes.astype(dtype)
