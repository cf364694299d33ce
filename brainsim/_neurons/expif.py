r"""Exponential and quadratic integrate-and-fire neurons (one-variable spiking models)."""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from .._errors import as_parameter
from .._integrators import AbstractIntegrator, ExponentialEuler
from .._surrogate import AbstractSurrogate, FastSigmoid
from .._timing import BRIAN2, Timing
from ._base import MEMBRANE_FLOOR, AbstractNeuron, Drive, check_above, default_dtype, fire_and_reset
from .adex import exponential_current


class SpikingState(NamedTuple):
    v: Float[Array, " n"]
    """Membrane potential (mV)."""
    refractory: Int[Array, " n"]
    """Steps of refractoriness left (0 = free to integrate)."""


def _fire(model, state, v_new, dt):
    """Threshold / reset / refractoriness of the one-variable models."""
    v, spikes, refractory = fire_and_reset(
        v_new,
        model.V_peak,
        state.refractory,
        V_reset=model.V_reset,
        surrogate=model.surrogate,
        detach=model.detach_reset,
        t_ref=model.t_ref,
        dt=dt,
        timing=model.timing,
    )
    return SpikingState(v.astype(state.v.dtype), refractory), spikes.astype(state.v.dtype)


class ExpIF(AbstractNeuron):
    r"""Exponential integrate-and-fire neuron (Fourcaud-Trocmé et al. 2003).

    .. math::
        C_m \frac{dV}{dt} = -g_L (V - E_L) + g_L \Delta_T\, e^{(V - V_T)/\Delta_T} + I_e + i - g V

    When :math:`V \ge V_{peak}` the neuron spikes, :math:`V \leftarrow V_{reset}` and is held
    there for ``t_ref`` ms. It is :class:`AdEx` without adaptation (``a = b = 0``) and uses the
    same defaults (NEST ``aeif_cond_exp``) and the same clipping of the exponent at ``V_peak``.
    The rheobase of a constant current is :math:`I_{rh} = g_L (V_T - E_L - \Delta_T)`.
    Default integrator :class:`ExponentialEuler` (leak exact, exponential term frozen over the
    step; first order).

    Arguments (scalars or per-neuron arrays):
        C_m (pF), g_L (nS), E_L (mV), V_T (mV), Delta_T (mV, > 0), V_reset (mV),
        V_peak (mV), t_ref (ms), I_e (pA); surrogate, detach_reset, integrator as for
        :class:`LIF`.

    Example:
        >>> import brainsim as bs, jax, jax.numpy as jnp
        >>> eif = bs.ExpIF(I_e=700.0)
        >>> drive = bs.Drive.zeros(2, jnp.float32)
        >>> state, spikes = eif.step(eif.init(2), drive, 0.0, 0.1, jax.random.key(0))
    """

    C_m: Float[Array, "*n"]
    g_L: Float[Array, "*n"]
    E_L: Float[Array, "*n"]
    V_T: Float[Array, "*n"]
    Delta_T: Float[Array, "*n"]
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
        self.V_reset = as_parameter(V_reset, "V_reset", owner=owner, unit="mV")
        self.V_peak = as_parameter(V_peak, "V_peak", owner=owner, unit="mV")
        self.t_ref = as_parameter(t_ref, "t_ref", owner=owner, unit="ms", nonnegative=True)
        self.I_e = as_parameter(I_e, "I_e", owner=owner, unit="pA")
        check_above(owner, "V_peak", self.V_peak, "V_reset", self.V_reset)
        check_above(owner, "V_peak", self.V_peak, "V_T", self.V_T)
        self.surrogate = FastSigmoid() if surrogate is None else surrogate
        self.integrator = ExponentialEuler() if integrator is None else integrator
        self.detach_reset = detach_reset

    def init(self, n: int, *, dtype=None) -> SpikingState:
        dtype = default_dtype(dtype)
        return SpikingState(
            v=jnp.broadcast_to(self.E_L, (n,)).astype(dtype),
            refractory=jnp.zeros((n,), jnp.int32),
        )

    def voltage(self, state: SpikingState):
        return state.v

    def state_bounds(self):
        return {"v": MEMBRANE_FLOOR}

    def linear_parts(self, drive: Drive):
        """``v -> (a, b)`` with :math:`dv/dt = a v + b`."""

        def parts(v):
            spike_current = exponential_current(v, self.g_L, self.Delta_T, self.V_T, self.V_peak)
            a = -(self.g_L + drive.conductance) / self.C_m
            b = (self.g_L * self.E_L + spike_current + self.I_e + drive.current) / self.C_m
            return jnp.broadcast_to(a, v.shape), jnp.broadcast_to(b, v.shape)

        return parts

    def step(self, state: SpikingState, drive: Drive, t, dt, key):
        v_start = jnp.where(state.refractory > 0, self.V_reset, state.v)
        return _fire(self, state, self.integrator.step(self.linear_parts(drive), v_start, dt), dt)


class QIF(AbstractNeuron):
    r"""Quadratic integrate-and-fire neuron (Ermentrout & Kopell's theta neuron in voltage form;
    the form of Izhikevich 2007, *Dynamical Systems in Neuroscience*, without recovery variable).

    .. math::
        C_m \frac{dV}{dt} = k (V - E_L)(V - V_c) + I_e + i - g V

    :math:`E_L` is the stable rest and :math:`V_c > E_L` the unstable critical potential. When
    :math:`V \ge V_{peak}` the neuron spikes, :math:`V \leftarrow V_{reset}` (held ``t_ref`` ms).
    For a constant current :math:`I` above the rheobase :math:`I_{rh} = k (V_c - E_L)^2/4`, with
    :math:`V_m = (E_L + V_c)/2` and :math:`D = I/k - (V_c - E_L)^2/4`, the interspike interval
    (``t_ref = 0``) is

    .. math::
        T = \frac{C_m}{k\sqrt{D}}\left[\arctan\frac{V_{peak} - V_m}{\sqrt D}
            - \arctan\frac{V_{reset} - V_m}{\sqrt D}\right].

    Defaults (Izhikevich 2007's regular-spiking pyramidal cell): ``C_m`` = 100 pF,
    ``k`` = 0.7 nS/mV, ``E_L`` = -60 mV, ``V_c`` = -40 mV, ``V_peak`` = 35 mV,
    ``V_reset`` = -60 mV (rheobase 70 pA). Default integrator :class:`ExponentialEuler` with the
    linear part :math:`k (V - V_c)/C_m - g/C_m` (the exact rate at rest), first order.

    Arguments (scalars or per-neuron arrays):
        C_m (pF), k (nS/mV, > 0), E_L (mV), V_c (mV, > E_L), V_reset (mV), V_peak (mV),
        t_ref (ms), I_e (pA); surrogate, detach_reset, integrator as for :class:`LIF`.

    Example:
        >>> import brainsim as bs, jax, jax.numpy as jnp
        >>> qif = bs.QIF(I_e=100.0)
        >>> drive = bs.Drive.zeros(2, jnp.float32)
        >>> state, spikes = qif.step(qif.init(2), drive, 0.0, 0.1, jax.random.key(0))
    """

    C_m: Float[Array, "*n"]
    k: Float[Array, "*n"]
    E_L: Float[Array, "*n"]
    V_c: Float[Array, "*n"]
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
        C_m: ArrayLike = 100.0,
        k: ArrayLike = 0.7,
        E_L: ArrayLike = -60.0,
        V_c: ArrayLike = -40.0,
        V_reset: ArrayLike = -60.0,
        V_peak: ArrayLike = 35.0,
        t_ref: ArrayLike = 0.0,
        I_e: ArrayLike = 0.0,
        surrogate: AbstractSurrogate | None = None,
        integrator: AbstractIntegrator | None = None,
        detach_reset: bool = True,
    ):
        owner = type(self).__name__
        self.C_m = as_parameter(C_m, "C_m", owner=owner, unit="pF", positive=True)
        self.k = as_parameter(k, "k", owner=owner, unit="nS/mV", positive=True)
        self.E_L = as_parameter(E_L, "E_L", owner=owner, unit="mV")
        self.V_c = as_parameter(V_c, "V_c", owner=owner, unit="mV")
        self.V_reset = as_parameter(V_reset, "V_reset", owner=owner, unit="mV")
        self.V_peak = as_parameter(V_peak, "V_peak", owner=owner, unit="mV")
        self.t_ref = as_parameter(t_ref, "t_ref", owner=owner, unit="ms", nonnegative=True)
        self.I_e = as_parameter(I_e, "I_e", owner=owner, unit="pA")
        check_above(owner, "V_c", self.V_c, "E_L", self.E_L)
        check_above(owner, "V_peak", self.V_peak, "V_c", self.V_c)
        check_above(owner, "V_peak", self.V_peak, "V_reset", self.V_reset)
        self.surrogate = FastSigmoid() if surrogate is None else surrogate
        self.integrator = ExponentialEuler() if integrator is None else integrator
        self.detach_reset = detach_reset

    def init(self, n: int, *, dtype=None) -> SpikingState:
        dtype = default_dtype(dtype)
        return SpikingState(
            v=jnp.broadcast_to(self.E_L, (n,)).astype(dtype),
            refractory=jnp.zeros((n,), jnp.int32),
        )

    def voltage(self, state: SpikingState):
        return state.v

    def state_bounds(self):
        return {"v": MEMBRANE_FLOOR}

    def linear_parts(self, drive: Drive):
        """``v -> (a, b)`` with :math:`dv/dt = a v + b`."""

        def parts(v):
            # k (V - E_L)(V - V_c) = [k (V - V_c)] V - k E_L (V - V_c)
            a = (self.k * (v - self.V_c) - drive.conductance) / self.C_m
            b = (-self.k * self.E_L * (v - self.V_c) + self.I_e + drive.current) / self.C_m
            return jnp.broadcast_to(a, v.shape), jnp.broadcast_to(b, v.shape)

        return parts

    def step(self, state: SpikingState, drive: Drive, t, dt, key):
        v_start = jnp.where(state.refractory > 0, self.V_reset, state.v)
        return _fire(self, state, self.integrator.step(self.linear_parts(drive), v_start, dt), dt)
