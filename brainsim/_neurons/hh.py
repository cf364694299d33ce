r"""Conductance-based Hodgkin–Huxley neurons: the classic squid axon and Traub & Miles' cortical
variant (Brian2's COBAHH benchmark).

Both have sodium (:math:`m^3 h`), delayed-rectifier potassium (:math:`n^4`) and leak currents;
there is no reset. A spike is an upward crossing of ``V_spike`` during a step, ignored while the
neuron is refractory (``t_ref`` ms after the previous spike), so noise around the crossing
cannot count one action potential twice.

The default integrator is :class:`ExponentialEuler` (Brian2's ``exponential_euler``): every
equation is linear in its own variable (the gates :math:`\dot x = \alpha_x (1-x) - \beta_x x`,
the membrane :math:`C\dot V = -g_{tot} V + \sum g E`) with the other variables frozen over the
step, so the stiff gate dynamics are integrated without instability. It is first order.

Rate functions of the form :math:`x/(e^{x} - 1)` are evaluated through a helper that is exact
and differentiable at the removable singularity :math:`x = 0`.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from .._errors import as_parameter
from .._integrators import AbstractIntegrator, ExponentialEuler
from .._surrogate import AbstractSurrogate, FastSigmoid
from .._timing import BRIAN2, Timing
from ._base import AbstractNeuron, Drive, StateBound, default_dtype, next_refractory

_EXP_CAP = 50.0  # e^50 ≈ 5e21: far beyond any physiological rate, still finite in float32


def x_over_expm1(x):
    r""":math:`x / (e^x - 1)`, equal to 1 at :math:`x = 0` (value and gradient are finite
    everywhere; for :math:`x > 50` the result, below 1e-20, is returned for :math:`x = 50`)."""
    small = jnp.abs(x) < 1e-4
    xs = jnp.minimum(jnp.where(small, jnp.ones_like(x), x), _EXP_CAP)
    return jnp.where(small, 1.0 - 0.5 * x + x * x / 12.0, xs / jnp.expm1(xs))


def _exp(x):
    """``exp`` with the argument capped so that extreme voltages give huge but finite rates."""
    return jnp.exp(jnp.minimum(x, _EXP_CAP))


class HHState(NamedTuple):
    v: Float[Array, " n"]
    """Membrane potential (mV)."""
    m: Float[Array, " n"]
    """Sodium activation."""
    h: Float[Array, " n"]
    """Sodium inactivation."""
    n: Float[Array, " n"]
    """Potassium activation."""
    refractory: Int[Array, " n"]
    """Steps left during which a threshold crossing is not counted as a spike."""


def _steady(rates):
    alpha, beta = rates
    return alpha / (alpha + beta)


def hh_init(model, v0, n, dtype) -> HHState:
    """Resting state: ``v0`` with every gate at its steady state there."""
    dtype = default_dtype(dtype)
    v = jnp.broadcast_to(v0, (n,)).astype(dtype)
    m_rates, h_rates, n_rates = model.rates(v)
    return HHState(
        v=v,
        m=_steady(m_rates).astype(dtype),
        h=_steady(h_rates).astype(dtype),
        n=_steady(n_rates).astype(dtype),
        refractory=jnp.zeros((n,), jnp.int32),
    )


HH_BOUNDS = {
    "v": StateBound(-1e3, 1e3, "mV"),
    **dict.fromkeys(("m", "h", "n"), StateBound(-0.01, 1.01)),
}
"""A membrane beyond ±1 V (the ionic currents alone keep it between E_K and E_Na), or a gate
(a fraction of open channels) outside [0, 1] by more than an integrator's rounding: the
integration has diverged."""


def hh_linear_parts(model, drive: Drive):
    """``(v, m, h, n) -> (a, b)`` with :math:`dy/dt = a y + b` elementwise."""

    def parts(y):
        v, m, h, n = y
        g_na = model.g_Na * m**3 * h
        g_k = model.g_K * n**4
        a_v = -(g_na + g_k + model.g_L + drive.conductance) / model.C_m
        b_v = (
            g_na * model.E_Na + g_k * model.E_K + model.g_L * model.E_L + model.I_e + drive.current
        ) / model.C_m
        (alpha_m, beta_m), (alpha_h, beta_h), (alpha_n, beta_n) = model.rates(v)
        a = (a_v, -(alpha_m + beta_m), -(alpha_h + beta_h), -(alpha_n + beta_n))
        b = (b_v, alpha_m, alpha_h, alpha_n)
        return (
            tuple(jnp.broadcast_to(x, v.shape) for x in a),
            tuple(jnp.broadcast_to(x, v.shape) for x in b),
        )

    return parts


def hh_step(model, state: HHState, drive: Drive, dt):
    """Integrate one step and detect upward crossings of ``V_spike`` outside refractoriness."""
    dtype = state.v.dtype
    y = (state.v, state.m, state.h, state.n)
    v, m, h, n = model.integrator.step(hh_linear_parts(model, drive), y, dt)
    free = (state.refractory <= 0) & (state.v < model.V_spike)
    spikes = model.surrogate(v - model.V_spike) * free
    refractory = next_refractory(state.refractory, spikes, model.t_ref, dt, model.timing)
    new = HHState(
        v.astype(dtype),
        m.astype(dtype),
        h.astype(dtype),
        n.astype(dtype),
        refractory.astype(jnp.int32),
    )
    return new, spikes.astype(dtype)


class HodgkinHuxley(AbstractNeuron):
    r"""The Hodgkin–Huxley (1952) squid giant axon, in the modern convention (rest at -65 mV).

    .. math::
        C_m \frac{dV}{dt} &= -\bar g_{Na} m^3 h (V - E_{Na}) - \bar g_K n^4 (V - E_K)
            - g_L (V - E_L) + I_e + i - g V \\
        \frac{dx}{dt} &= \alpha_x(V)(1 - x) - \beta_x(V)\, x, \qquad x \in \{m, h, n\}

    with (V in mV, rates in 1/ms)

    .. math::
        \alpha_m &= \frac{0.1 (V+40)}{1 - e^{-(V+40)/10}}, & \beta_m &= 4 e^{-(V+65)/18}, \\
        \alpha_h &= 0.07 e^{-(V+65)/20}, & \beta_h &= \frac{1}{1 + e^{-(V+35)/10}}, \\
        \alpha_n &= \frac{0.01 (V+55)}{1 - e^{-(V+55)/10}}, & \beta_n &= 0.125 e^{-(V+65)/80}.

    **Units.** The defaults are per unit area: ``C_m`` in μF/cm², conductances in mS/cm²,
    currents (``I_e`` and the synaptic :class:`Drive`) in μA/cm², which makes
    :math:`dV/dt` come out in mV/ms. Any consistent set works because only the ratios
    :math:`g/C_m` and :math:`I/C_m` enter (e.g. multiply ``C_m`` and the conductances by a
    membrane area to use pF, nS and pA).

    The gates start at their steady state for ``V_init``. Thresholds for a 200 ms current step
    from rest (high-accuracy reference, checked in the tests): one spike from 2.24 μA/cm²,
    sustained repetitive firing (≈ 55 Hz, type II onset) from 6.25 μA/cm²; with the default
    integrator at ``dt`` = 0.01 ms both come out within 0.01 μA/cm².

    Arguments (scalars or per-neuron arrays):
        C_m (μF/cm²), g_Na, g_K, g_L (mS/cm²), E_Na, E_K, E_L (mV), V_init (mV),
        V_spike: spike detection level (mV), t_ref: window after a spike in which crossings
        are not counted (ms), I_e: bias current (μA/cm²), surrogate: spike function,
        integrator: default :class:`ExponentialEuler`.

    Example:
        >>> import brainsim as bs, jax, jax.numpy as jnp
        >>> hh = bs.HodgkinHuxley(I_e=10.0)
        >>> drive = bs.Drive.zeros(2, jnp.float32)
        >>> state, spikes = hh.step(hh.init(2), drive, 0.0, 0.01, jax.random.key(0))
    """

    C_m: Float[Array, "*n"]
    g_Na: Float[Array, "*n"]
    g_K: Float[Array, "*n"]
    g_L: Float[Array, "*n"]
    E_Na: Float[Array, "*n"]
    E_K: Float[Array, "*n"]
    E_L: Float[Array, "*n"]
    V_init: Float[Array, "*n"]
    V_spike: Float[Array, "*n"]
    t_ref: Float[Array, "*n"]
    I_e: Float[Array, "*n"]
    surrogate: AbstractSurrogate
    integrator: AbstractIntegrator
    timing: Timing = eqx.field(static=True, default=BRIAN2)

    def __init__(
        self,
        *,
        C_m: ArrayLike = 1.0,
        g_Na: ArrayLike = 120.0,
        g_K: ArrayLike = 36.0,
        g_L: ArrayLike = 0.3,
        E_Na: ArrayLike = 50.0,
        E_K: ArrayLike = -77.0,
        E_L: ArrayLike = -54.387,
        V_init: ArrayLike = -65.0,
        V_spike: ArrayLike = 0.0,
        t_ref: ArrayLike = 2.0,
        I_e: ArrayLike = 0.0,
        surrogate: AbstractSurrogate | None = None,
        integrator: AbstractIntegrator | None = None,
    ):
        owner = type(self).__name__
        C, g = "uF/cm^2", "mS/cm^2"
        self.C_m = as_parameter(C_m, "C_m", owner=owner, unit=C, positive=True)
        self.g_Na = as_parameter(g_Na, "g_Na", owner=owner, unit=g, nonnegative=True)
        self.g_K = as_parameter(g_K, "g_K", owner=owner, unit=g, nonnegative=True)
        self.g_L = as_parameter(g_L, "g_L", owner=owner, unit=g, nonnegative=True)
        self.E_Na = as_parameter(E_Na, "E_Na", owner=owner, unit="mV")
        self.E_K = as_parameter(E_K, "E_K", owner=owner, unit="mV")
        self.E_L = as_parameter(E_L, "E_L", owner=owner, unit="mV")
        self.V_init = as_parameter(V_init, "V_init", owner=owner, unit="mV")
        self.V_spike = as_parameter(V_spike, "V_spike", owner=owner, unit="mV")
        self.t_ref = as_parameter(t_ref, "t_ref", owner=owner, unit="ms", nonnegative=True)
        self.I_e = as_parameter(I_e, "I_e", owner=owner, unit="uA/cm^2")
        self.surrogate = FastSigmoid() if surrogate is None else surrogate
        self.integrator = ExponentialEuler() if integrator is None else integrator

    @staticmethod
    def rates(v):
        """``((α_m, β_m), (α_h, β_h), (α_n, β_n))`` in 1/ms at potential ``v`` (mV)."""
        alpha_m = x_over_expm1(-(v + 40.0) / 10.0)
        beta_m = 4.0 * _exp(-(v + 65.0) / 18.0)
        alpha_h = 0.07 * _exp(-(v + 65.0) / 20.0)
        beta_h = 1.0 / (1.0 + _exp(-(v + 35.0) / 10.0))
        alpha_n = 0.1 * x_over_expm1(-(v + 55.0) / 10.0)
        beta_n = 0.125 * _exp(-(v + 65.0) / 80.0)
        return (alpha_m, beta_m), (alpha_h, beta_h), (alpha_n, beta_n)

    def init(self, n: int, *, dtype=None) -> HHState:
        return hh_init(self, self.V_init, n, dtype)

    def voltage(self, state: HHState):
        return state.v

    def state_bounds(self):
        return dict(HH_BOUNDS)

    def linear_parts(self, drive: Drive):
        """``(v, m, h, n) -> (a, b)`` with :math:`dy/dt = a y + b` elementwise."""
        return hh_linear_parts(self, drive)

    def step(self, state: HHState, drive: Drive, t, dt, key):
        return hh_step(self, state, drive, dt)


class TraubMiles(AbstractNeuron):
    r"""Traub & Miles (1991) Hodgkin–Huxley-type cortical neuron, as in Brian2's COBAHH example
    (Brette et al. 2007, benchmark 3), in pF, nS, mV, pA for a 20 000 μm² membrane.

    .. math::
        C_m \frac{dV}{dt} = -g_L (V - E_L) - \bar g_{Na} m^3 h (V - E_{Na})
            - \bar g_K n^4 (V - E_K) + I_e + i - g V

    with :math:`u = V - V_T` (mV) and rates in 1/ms:

    .. math::
        \alpha_m &= \frac{0.32 (13 - u)}{e^{(13 - u)/4} - 1}, &
        \beta_m &= \frac{0.28 (u - 40)}{e^{(u - 40)/5} - 1}, \\
        \alpha_h &= 0.128\, e^{(17 - u)/18}, & \beta_h &= \frac{4}{1 + e^{(40 - u)/5}}, \\
        \alpha_n &= \frac{0.032 (15 - u)}{e^{(15 - u)/5} - 1}, & \beta_n &= 0.5\, e^{(10 - u)/40}.

    A spike is an upward crossing of ``V_spike`` (-20 mV) outside the 3 ms refractory window;
    there is no reset. (Brian2 tests ``v > -20 mV`` whenever the neuron is not refractory, which
    differs only if ``V`` stays above -20 mV for longer than ``t_ref``.) The state starts at
    ``V = E_L`` with the gates at their steady state there (Brian2's example starts them at 0).

    Arguments (scalars or per-neuron arrays):
        C_m (pF), g_L, g_Na, g_K (nS), E_L, E_Na, E_K (mV), V_T: voltage offset of the rate
        functions (mV), V_spike (mV), t_ref (ms), I_e (pA), surrogate, integrator (default
        :class:`ExponentialEuler`).

    Example:
        >>> import brainsim as bs, jax, jax.numpy as jnp
        >>> tm = bs.TraubMiles(I_e=500.0)
        >>> drive = bs.Drive.zeros(2, jnp.float32)
        >>> state, spikes = tm.step(tm.init(2), drive, 0.0, 0.1, jax.random.key(0))
    """

    C_m: Float[Array, "*n"]
    g_L: Float[Array, "*n"]
    g_Na: Float[Array, "*n"]
    g_K: Float[Array, "*n"]
    E_L: Float[Array, "*n"]
    E_Na: Float[Array, "*n"]
    E_K: Float[Array, "*n"]
    V_T: Float[Array, "*n"]
    V_spike: Float[Array, "*n"]
    t_ref: Float[Array, "*n"]
    I_e: Float[Array, "*n"]
    surrogate: AbstractSurrogate
    integrator: AbstractIntegrator
    timing: Timing = eqx.field(static=True, default=BRIAN2)

    def __init__(
        self,
        *,
        C_m: ArrayLike = 200.0,
        g_L: ArrayLike = 10.0,
        g_Na: ArrayLike = 20000.0,
        g_K: ArrayLike = 6000.0,
        E_L: ArrayLike = -60.0,
        E_Na: ArrayLike = 50.0,
        E_K: ArrayLike = -90.0,
        V_T: ArrayLike = -63.0,
        V_spike: ArrayLike = -20.0,
        t_ref: ArrayLike = 3.0,
        I_e: ArrayLike = 0.0,
        surrogate: AbstractSurrogate | None = None,
        integrator: AbstractIntegrator | None = None,
    ):
        owner = type(self).__name__
        self.C_m = as_parameter(C_m, "C_m", owner=owner, unit="pF", positive=True)
        self.g_L = as_parameter(g_L, "g_L", owner=owner, unit="nS", nonnegative=True)
        self.g_Na = as_parameter(g_Na, "g_Na", owner=owner, unit="nS", nonnegative=True)
        self.g_K = as_parameter(g_K, "g_K", owner=owner, unit="nS", nonnegative=True)
        self.E_L = as_parameter(E_L, "E_L", owner=owner, unit="mV")
        self.E_Na = as_parameter(E_Na, "E_Na", owner=owner, unit="mV")
        self.E_K = as_parameter(E_K, "E_K", owner=owner, unit="mV")
        self.V_T = as_parameter(V_T, "V_T", owner=owner, unit="mV")
        self.V_spike = as_parameter(V_spike, "V_spike", owner=owner, unit="mV")
        self.t_ref = as_parameter(t_ref, "t_ref", owner=owner, unit="ms", nonnegative=True)
        self.I_e = as_parameter(I_e, "I_e", owner=owner, unit="pA")
        self.surrogate = FastSigmoid() if surrogate is None else surrogate
        self.integrator = ExponentialEuler() if integrator is None else integrator

    def rates(self, v):
        """``((α_m, β_m), (α_h, β_h), (α_n, β_n))`` in 1/ms at potential ``v`` (mV)."""
        u = v - self.V_T
        alpha_m = 0.32 * 4.0 * x_over_expm1((13.0 - u) / 4.0)
        beta_m = 0.28 * 5.0 * x_over_expm1((u - 40.0) / 5.0)
        alpha_h = 0.128 * _exp((17.0 - u) / 18.0)
        beta_h = 4.0 / (1.0 + _exp((40.0 - u) / 5.0))
        alpha_n = 0.032 * 5.0 * x_over_expm1((15.0 - u) / 5.0)
        beta_n = 0.5 * _exp((10.0 - u) / 40.0)
        return (alpha_m, beta_m), (alpha_h, beta_h), (alpha_n, beta_n)

    def init(self, n: int, *, dtype=None) -> HHState:
        return hh_init(self, self.E_L, n, dtype)

    def voltage(self, state: HHState):
        return state.v

    def state_bounds(self):
        return dict(HH_BOUNDS)

    def linear_parts(self, drive: Drive):
        """``(v, m, h, n) -> (a, b)`` with :math:`dy/dt = a y + b` elementwise."""
        return hh_linear_parts(self, drive)

    def step(self, state: HHState, drive: Drive, t, dt, key):
        return hh_step(self, state, drive, dt)
