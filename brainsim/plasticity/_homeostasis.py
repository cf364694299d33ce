r"""Homeostasis: synaptic scaling, weight normalisation and adaptive / intrinsic thresholds.

* :class:`SynapticScaling` (van Rossum, Bi & Turrigiano 2000) and :class:`Normalization`
  (Diehl & Cook's input-column normalisation) are plasticity rules on a projection's weights;
  they compose with STDP through :func:`~brainsim.plasticity.chain`.
* :class:`AdaptiveThreshold` is a neuron wrapper: a per-neuron threshold offset
  :math:`\theta` added to the wrapped model's ``V_th`` (Diehl & Cook's adaptive threshold, and
  with ``target_rate`` the intrinsic plasticity of SORN). It is a model, not a projection rule,
  because it acts on neurons whatever their inputs.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from .._errors import as_parameter
from .._neurons._base import AbstractNeuron, Drive
from ._base import AbstractPlasticity, gather, weight_bounds


class RateSensor(NamedTuple):
    rate: Array
    """``(n_post,)`` low-pass filtered firing rate (Hz)."""


class SynapticScaling(AbstractPlasticity):
    r"""Multiplicative synaptic scaling toward a target rate (van Rossum, Bi & Turrigiano 2000).

    .. math::
        \tau_a \frac{da_j}{dt} = -a_j + \tau_a \sum_k \delta(t - t_j^k)\ [\text{Hz}],\qquad
        \frac{dw_{ij}}{dt} = \beta\, w_{ij}\,(a_{goal} - a_j)

    :math:`a_j` estimates neuron ``j``'s rate over :math:`\tau_a` (≫ the STDP window). Per
    step: :math:`a \leftarrow a e^{-\Delta t/\tau_a} + 1000 s/\tau_a`, then
    :math:`w \leftarrow \mathrm{clip}(w\,(1 + \beta\,\Delta t\,(a_{goal} - a)), w_{min}, w_{max})`
    on every synapse.

    Arguments:
        target_rate: :math:`a_{goal}` (Hz, >= 0).
        tau: sensor time constant :math:`\tau_a` (ms).
        beta: scaling rate (1 / (Hz ms), >= 0).
        w_min, w_max: bounds (``-inf`` / ``inf``: unbounded, the default for ``w_max``).
        initial_rate: the sensor's initial value (Hz; default ``target_rate``, no transient).
    """

    target_rate: Array
    tau: Array
    beta: Array
    w_min: Array
    w_max: Array
    initial_rate: Array

    def __init__(
        self,
        target_rate: ArrayLike,
        *,
        tau: ArrayLike = 1000.0,
        beta: ArrayLike = 1e-5,
        w_min: ArrayLike = 0.0,
        w_max: ArrayLike = jnp.inf,
        initial_rate: ArrayLike | None = None,
    ):
        owner = "SynapticScaling"
        self.target_rate = as_parameter(
            target_rate, "target_rate", owner=owner, unit="Hz", nonnegative=True
        )
        self.tau = as_parameter(tau, "tau", owner=owner, unit="ms", positive=True)
        self.beta = as_parameter(beta, "beta", owner=owner, unit="1/(Hz ms)", nonnegative=True)
        self.w_max, self.w_min = weight_bounds(owner, w_max, w_min, allow_inf=True)
        initial_rate = target_rate if initial_rate is None else initial_rate
        self.initial_rate = as_parameter(
            initial_rate, "initial_rate", owner=owner, unit="Hz", nonnegative=True
        )

    def init(self, synapses, weights) -> RateSensor:
        return RateSensor(jnp.broadcast_to(self.initial_rate, (synapses.n_post,)).astype(weights.dtype))

    def update(self, state, weights, pre_spikes, post_spikes, dt, *, synapses, modulator=None):
        decay = jnp.exp(-dt / self.tau)
        rate = state.rate * decay + post_spikes.astype(state.rate.dtype) * (1000.0 / self.tau)
        factor = 1 + self.beta * dt * (self.target_rate - rate)

        def scale(w, i, j, valid):
            return jnp.clip(w * gather(factor, j), self.w_min, self.w_max)

        return synapses.map(weights, scale), RateSensor(rate.astype(state.rate.dtype))


class Normalization(AbstractPlasticity):
    r"""Scale the weights onto each postsynaptic neuron so they sum to ``total``
    (Diehl & Cook 2015: :math:`\sum_i w_{ij} = 78` for each output neuron, between examples).

    By default it acts only at boundaries (:func:`brainsim.plasticity.at_boundary`, or
    ``rule.boundary``); ``per_step=True`` also renormalises after every step. A neuron with no
    input weight (sum 0) is left unchanged.
    """

    total: Array
    per_step: bool = eqx.field(static=True)

    def __init__(self, total: ArrayLike, *, per_step: bool = False):
        self.total = as_parameter(total, "total", owner="Normalization", positive=True)
        self.per_step = bool(per_step)

    def init(self, synapses, weights):
        return ()

    def _normalise(self, weights, synapses):
        sums = synapses.post_sum(weights)
        factor = jnp.where(sums != 0, self.total / jnp.where(sums != 0, sums, 1), 1)
        return synapses.map(weights, lambda w, i, j, valid: w * gather(factor, j))

    def update(self, state, weights, pre_spikes, post_spikes, dt, *, synapses, modulator=None):
        return (self._normalise(weights, synapses) if self.per_step else weights), state

    def boundary(self, state, weights, *, synapses):
        return self._normalise(weights, synapses), state


_STATE_TYPES: dict[type, type] = {}


def _with_theta(state_type: type) -> type:
    """The wrapped model's state NamedTuple with one more field, ``theta``."""
    if state_type not in _STATE_TYPES:
        fields = [(f, Array) for f in state_type._fields] + [("theta", Array)]
        _STATE_TYPES[state_type] = NamedTuple(f"{state_type.__name__}Theta", fields)
    return _STATE_TYPES[state_type]


class AdaptiveThreshold(AbstractNeuron):
    r"""Any model with a threshold ``V_th``, with a per-neuron adaptive offset :math:`\theta`.

    .. math::
        V_{th,\text{eff}} = V_{th} + \theta,\qquad
        \theta \leftarrow \theta\,e^{-\Delta t/\tau_\theta} + \theta_+\,(s - r^{*}\,\Delta t)

    with :math:`s` the neuron's spike in the step and :math:`r^{*}` ``target_rate`` (in 1/ms).

    * Diehl & Cook (2015): ``theta_plus=0.05`` mV, ``tau_theta=1e7`` ms, ``target_rate=0``:
      every spike raises the threshold, which relaxes very slowly.
    * Intrinsic plasticity (SORN, Lazar et al. 2009): ``tau_theta=inf`` and a ``target_rate``:
      :math:`\theta` integrates the rate error, so the neuron settles at the target rate.

    The state is the wrapped model's state with a field ``theta`` (mV) appended, so
    ``StateTrace(pop, "theta")`` records it and ``initial={"theta": ...}`` sets it.
    """

    model: AbstractNeuron
    theta_plus: Array
    tau_theta: Array
    target_rate: Array

    def __init__(
        self,
        model: AbstractNeuron,
        *,
        theta_plus: ArrayLike = 0.05,
        tau_theta: ArrayLike = 1e7,
        target_rate: ArrayLike = 0.0,
    ):
        if not isinstance(model, AbstractNeuron) or not hasattr(model, "V_th"):
            raise TypeError(
                "AdaptiveThreshold: `model` must be a neuron model with a threshold `V_th` "
                f"(e.g. brainsim.LIF(...)); got {type(model).__name__}."
            )
        owner = "AdaptiveThreshold"
        self.model = model
        self.theta_plus = as_parameter(theta_plus, "theta_plus", owner=owner, unit="mV")
        self.tau_theta = as_parameter(
            tau_theta, "tau_theta", owner=owner, unit="ms", positive=True, allow_inf=True
        )
        self.target_rate = as_parameter(
            target_rate, "target_rate", owner=owner, unit="Hz", nonnegative=True
        )

    def check_size(self, n: int) -> None:
        self.model.check_size(n)
        super().check_size(n)

    def init(self, n: int, *, dtype=None):
        inner = self.model.init(n, dtype=dtype)
        v = self.model.voltage(inner)
        return _with_theta(type(inner))(*inner, jnp.zeros((n,), v.dtype))

    def voltage(self, state):
        return self.model.voltage(self._inner(state))

    def _inner(self, state):
        inner_type = next(k for k, v in _STATE_TYPES.items() if v is type(state))
        return inner_type(*tuple(state)[:-1])

    def step(self, state, drive: Drive, t, dt, key):
        theta = state.theta
        model = eqx.tree_at(lambda m: m.V_th, self.model, self.model.V_th + theta)
        inner, spikes = model.step(self._inner(state), drive, t, dt, key)
        s = spikes.astype(theta.dtype)
        decay = jnp.exp(-dt / self.tau_theta)
        theta = theta * decay + self.theta_plus * (s - self.target_rate * 1e-3 * dt)
        return type(state)(*inner, theta.astype(state.theta.dtype)), spikes
