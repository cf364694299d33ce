r"""Izhikevich's simple model (Izhikevich 2003) with the published cortical/thalamic presets."""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from .._errors import as_parameter, unknown_name_error
from .._integrators import AbstractIntegrator, Euler
from .._surrogate import AbstractSurrogate, FastSigmoid
from .._timing import BRIAN2, Timing
from ._base import MEMBRANE_FLOOR, AbstractNeuron, Drive, check_above, default_dtype, fire_and_reset


class IzhikevichState(NamedTuple):
    v: Float[Array, " n"]
    """Membrane potential (mV)."""
    u: Float[Array, " n"]
    """Recovery variable (mV/ms, Izhikevich's units)."""
    refractory: Int[Array, " n"]
    """Steps of refractoriness left (0 = free to integrate)."""


class Izhikevich(AbstractNeuron):
    r"""Izhikevich's simple spiking model (IEEE Trans. Neural Netw. 14:1569, 2003).

    .. math::
        \frac{dv}{dt} &= 0.04 v^2 + 5 v + 140 - u + I, \qquad I = \frac{I_e + i - g v}{C_m} \\
        \frac{du}{dt} &= a (b v - u)

    with :math:`v` in mV and :math:`t` in ms. When :math:`v \ge V_{peak}` (30 mV) the neuron
    spikes, :math:`v \leftarrow c`, :math:`u \leftarrow u + d`. The input current is divided by
    ``C_m``, whose default 1.0 makes inputs dimensionless "Izhikevich units" (the paper's
    ``I = 10``); with pA inputs pass a capacitance in pF (the equation then reads
    :math:`dv/dt` in mV/ms).

    **Integration.** The default integrator is forward :class:`Euler` (as in Izhikevich's own
    MATLAB code); use ``dt`` <= 0.25 ms (the figures of the 2003/2004 papers used 0.25 ms, the
    network code 0.5 ms in two half steps of ``v``). The tests use Euler with 0.1 ms. Other
    integrators may be passed; the linearised form used is
    :math:`\dot v = (0.04 v + 5 - g/C_m)\, v + (140 - u + (I_e + i)/C_m)`.

    **Presets** (2003 paper, Fig. 2): ``Izhikevich.preset("RS")`` etc., or the ``PRESETS`` dict
    of ``(a, b, c, d)``: RS regular spiking (0.02, 0.2, -65, 8), IB intrinsically bursting
    (0.02, 0.2, -55, 4), CH chattering (0.02, 0.2, -50, 2), FS fast spiking (0.1, 0.2, -65, 2),
    LTS low-threshold spiking (0.02, 0.25, -65, 2), TC thalamo-cortical (0.02, 0.25, -65, 0.05),
    RZ resonator (0.1, 0.26, -65, 2).

    The state starts at ``v = V_init`` (default -65 mV) and :math:`u = b\,v`.

    Arguments (scalars or per-neuron arrays):
        a: recovery rate (1/ms). b: sensitivity of ``u`` to ``v`` (1/ms). c: reset (mV).
        d: jump of ``u`` per spike (mV/ms).
        V_peak: spike cut-off (mV). V_init: initial ``v`` (mV). C_m: input scale (default 1.0).
        I_e: bias (input units). t_ref: refractory period (ms; default 0, the model has none).
        surrogate, detach_reset, integrator: as for :class:`LIF`; ``detach_reset`` also
            detaches the jump ``u += d`` (gradients still reach ``d``).

    Example:
        >>> import brainsim as bs, jax, jax.numpy as jnp
        >>> rs = bs.Izhikevich.preset("RS", I_e=10.0)
        >>> drive = bs.Drive.zeros(2, jnp.float32)
        >>> state, spikes = rs.step(rs.init(2), drive, 0.0, 0.1, jax.random.key(0))
    """

    PRESETS: ClassVar[dict[str, tuple[float, float, float, float]]] = {
        "RS": (0.02, 0.2, -65.0, 8.0),
        "IB": (0.02, 0.2, -55.0, 4.0),
        "CH": (0.02, 0.2, -50.0, 2.0),
        "FS": (0.1, 0.2, -65.0, 2.0),
        "LTS": (0.02, 0.25, -65.0, 2.0),
        "TC": (0.02, 0.25, -65.0, 0.05),
        "RZ": (0.1, 0.26, -65.0, 2.0),
    }

    a: Float[Array, "*n"]
    b: Float[Array, "*n"]
    c: Float[Array, "*n"]
    d: Float[Array, "*n"]
    V_peak: Float[Array, "*n"]
    V_init: Float[Array, "*n"]
    C_m: Float[Array, "*n"]
    I_e: Float[Array, "*n"]
    t_ref: Float[Array, "*n"]
    surrogate: AbstractSurrogate
    integrator: AbstractIntegrator
    detach_reset: bool = eqx.field(static=True)
    timing: Timing = eqx.field(static=True, default=BRIAN2)

    def __init__(
        self,
        *,
        a: ArrayLike = 0.02,
        b: ArrayLike = 0.2,
        c: ArrayLike = -65.0,
        d: ArrayLike = 8.0,
        V_peak: ArrayLike = 30.0,
        V_init: ArrayLike = -65.0,
        C_m: ArrayLike = 1.0,
        I_e: ArrayLike = 0.0,
        t_ref: ArrayLike = 0.0,
        surrogate: AbstractSurrogate | None = None,
        integrator: AbstractIntegrator | None = None,
        detach_reset: bool = True,
    ):
        owner = type(self).__name__
        self.a = as_parameter(a, "a", owner=owner, unit="1/ms", positive=True)
        self.b = as_parameter(b, "b", owner=owner, unit="1/ms")
        self.c = as_parameter(c, "c", owner=owner, unit="mV")
        self.d = as_parameter(d, "d", owner=owner, unit="mV/ms")
        self.V_peak = as_parameter(V_peak, "V_peak", owner=owner, unit="mV")
        self.V_init = as_parameter(V_init, "V_init", owner=owner, unit="mV")
        self.C_m = as_parameter(C_m, "C_m", owner=owner, positive=True)
        self.I_e = as_parameter(I_e, "I_e", owner=owner)
        self.t_ref = as_parameter(t_ref, "t_ref", owner=owner, unit="ms", nonnegative=True)
        check_above(owner, "V_peak", self.V_peak, "c", self.c)
        self.surrogate = FastSigmoid() if surrogate is None else surrogate
        self.integrator = Euler() if integrator is None else integrator
        self.detach_reset = detach_reset

    @classmethod
    def preset(cls, name: str, **kwargs) -> Izhikevich:
        """A model with the published ``(a, b, c, d)`` of ``name`` (RS, IB, CH, FS, LTS, TC, RZ);
        other keyword arguments are passed to the constructor."""
        if name not in cls.PRESETS:
            raise unknown_name_error("Izhikevich preset", name, cls.PRESETS, where="Izhikevich")
        a, b, c, d = cls.PRESETS[name]
        return cls(**{"a": a, "b": b, "c": c, "d": d, **kwargs})

    def init(self, n: int, *, dtype=None) -> IzhikevichState:
        dtype = default_dtype(dtype)
        v = jnp.broadcast_to(self.V_init, (n,))
        return IzhikevichState(
            v=v.astype(dtype),
            u=jnp.broadcast_to(self.b * v, (n,)).astype(dtype),
            refractory=jnp.zeros((n,), jnp.int32),
        )

    def voltage(self, state: IzhikevichState):
        return state.v

    def state_bounds(self):
        return {"v": MEMBRANE_FLOOR}

    def linear_parts(self, drive: Drive):
        """``(v, u) -> (a, b)`` with :math:`d(v, u)/dt = a (v, u) + b`."""

        def parts(y):
            v, u = y
            a_v = 0.04 * v + 5.0 - drive.conductance / self.C_m
            b_v = 140.0 - u + (self.I_e + drive.current) / self.C_m
            a_u = -self.a
            b_u = self.a * self.b * v
            return (
                (jnp.broadcast_to(a_v, v.shape), jnp.broadcast_to(a_u, u.shape)),
                (jnp.broadcast_to(b_v, v.shape), jnp.broadcast_to(b_u, u.shape)),
            )

        return parts

    def step(self, state: IzhikevichState, drive: Drive, t, dt, key):
        dtype = state.v.dtype
        held = state.refractory > 0
        v_start = jnp.where(held, self.c, state.v)
        v, u = self.integrator.step(self.linear_parts(drive), (v_start, state.u), dt)
        v, spikes, refractory = fire_and_reset(
            v,
            self.V_peak,
            state.refractory,
            V_reset=self.c,
            surrogate=self.surrogate,
            detach=self.detach_reset,
            t_ref=self.t_ref,
            dt=dt,
            timing=self.timing,
        )
        # The jump is part of the reset, so it is detached with it (see AdEx).
        u = u + self.d * (jax.lax.stop_gradient(spikes) if self.detach_reset else spikes)
        return IzhikevichState(v.astype(dtype), u.astype(dtype), refractory), spikes.astype(dtype)
