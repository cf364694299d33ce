r"""Postsynaptic kinetics: how a receptor's conductance (or current) evolves after a spike.

Each kinetics is linear, so it is advanced exactly. A step from :math:`t_k` to :math:`t_{k+1}`:

1. ``arrive(state, w)`` adds the weights of spikes arriving at :math:`t_k`;
2. ``mean(state, dt)`` is the exact average of the trace over :math:`[t_k, t_{k+1}]`, which
   the neuron sees as constant input for the step (so the delivered charge is exact, not
   first-order in ``dt``);
3. ``decay(state, dt)`` advances the trace to :math:`t_{k+1}`.

Weights are peak values: a single weight ``w`` produces a trace whose maximum is ``w`` (nS for
conductance-based, pA for current-based receptors). :class:`PulseSynapse` is the discrete-time
exception: its trace lasts exactly one step, whatever ``dt``.
"""

from __future__ import annotations

import abc
from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._errors import as_parameter, is_concrete
from .._phi1 import phi1


def _like(x, ref):
    """``x`` in the dtype of the state array ``ref`` (parameters may have a wider dtype)."""
    return x.astype(ref.dtype)


class AbstractKinetics(eqx.Module):
    r"""Linear synaptic kinetics advanced exactly.

    A step from :math:`t_k` to :math:`t_{k+1}`: ``arrive(state, w)`` adds the weights of the
    spikes arriving at :math:`t_k` (peak units: nS or pA), ``mean(state, dt)`` is the exact
    average of the trace over the step (what the neuron sees, so the delivered charge is
    exact), ``decay(state, dt)`` advances the trace to :math:`t_{k+1}`. The state is a
    NamedTuple of ``(n,)`` arrays that keeps its dtype (parameters may be wider).
    """

    @abc.abstractmethod
    def init(self, n: int, dtype):
        """Zero trace for ``n`` postsynaptic neurons."""

    @abc.abstractmethod
    def arrive(self, state, weight):
        """Add arriving spike weights (peak units) at the start of the step."""

    @abc.abstractmethod
    def mean(self, state, dt):
        """Average of the trace over the coming step."""

    @abc.abstractmethod
    def decay(self, state, dt):
        """The state one step later, without new input."""

    @abc.abstractmethod
    def value(self, state):
        """The trace at the current time."""


class ExponentialState(NamedTuple):
    g: Float[Array, " n"]


class ExponentialSynapse(AbstractKinetics):
    r"""Single exponential: :math:`\dot g = -g/\tau`, :math:`g \mathrel{+}= w` per spike.

    Step average: :math:`\bar g = g\, \varphi_1(-\Delta t/\tau)` with :math:`\varphi_1(z) = (e^z-1)/z`.
    """

    tau: Float[Array, "*n"]

    def __init__(self, tau: ArrayLike = 5.0):
        self.tau = as_parameter(tau, "tau", owner="ExponentialSynapse", unit="ms", positive=True)

    def init(self, n, dtype):
        return ExponentialState(jnp.zeros((n,), dtype))

    def arrive(self, state, weight):
        return ExponentialState(_like(state.g + weight, state.g))

    def mean(self, state, dt):
        return _like(state.g * phi1(-dt / self.tau), state.g)

    def decay(self, state, dt):
        return ExponentialState(_like(state.g * jnp.exp(-dt / self.tau), state.g))

    def value(self, state):
        return state.g


class AlphaState(NamedTuple):
    g: Float[Array, " n"]
    h: Float[Array, " n"]
    """Rate of rise (trace units per ms)."""


class AlphaSynapse(AbstractKinetics):
    r"""Alpha function :math:`g(t) = w\, (t/\tau)\, e^{1 - t/\tau}` (peak ``w`` at :math:`t=\tau`).

    As a linear system: :math:`\dot g = -g/\tau + h`, :math:`\dot h = -h/\tau`, a spike adds
    :math:`e\,w/\tau` to :math:`h`. Exact step: :math:`h \leftarrow h e^{-x}`,
    :math:`g \leftarrow (g + h\Delta t) e^{-x}` with :math:`x = \Delta t/\tau`.
    """

    tau: Float[Array, "*n"]

    def __init__(self, tau: ArrayLike = 2.0):
        self.tau = as_parameter(tau, "tau", owner="AlphaSynapse", unit="ms", positive=True)

    def init(self, n, dtype):
        z = jnp.zeros((n,), dtype)
        return AlphaState(z, z)

    def arrive(self, state, weight):
        return AlphaState(state.g, _like(state.h + weight * (jnp.e / self.tau), state.h))

    def mean(self, state, dt):
        x = dt / self.tau
        # (1/dt) ∫_0^dt (g + h s) e^{-s/τ} ds
        i0 = phi1(-x)  # (1 - e^{-x}) / x
        i1 = self.tau * (-jnp.expm1(-x) - x * jnp.exp(-x)) / x  # (τ/x)(1 - e^{-x}(1+x))
        return _like(state.g * i0 + state.h * i1, state.g)

    def decay(self, state, dt):
        e = jnp.exp(-dt / self.tau)
        return AlphaState(_like((state.g + state.h * dt) * e, state.g), _like(state.h * e, state.h))

    def value(self, state):
        return state.g


class DualExponentialState(NamedTuple):
    decay: Float[Array, " n"]
    rise: Float[Array, " n"]


class DualExponentialSynapse(AbstractKinetics):
    r"""Difference of exponentials :math:`g(t) = w\,\eta\,(e^{-t/\tau_d} - e^{-t/\tau_r})`.

    :math:`\eta` normalises the peak to ``w``; the peak is at
    :math:`t_p = \frac{\tau_d \tau_r}{\tau_d - \tau_r}\ln(\tau_d/\tau_r)`.
    Requires ``tau_decay > tau_rise`` (use :class:`AlphaSynapse` for equal constants).
    """

    tau_rise: Float[Array, "*n"]
    tau_decay: Float[Array, "*n"]

    def __init__(self, tau_rise: ArrayLike = 1.0, tau_decay: ArrayLike = 5.0):
        owner = "DualExponentialSynapse"
        self.tau_rise = as_parameter(tau_rise, "tau_rise", owner=owner, unit="ms", positive=True)
        self.tau_decay = as_parameter(tau_decay, "tau_decay", owner=owner, unit="ms", positive=True)
        if is_concrete(self.tau_rise) and is_concrete(self.tau_decay):
            import numpy as np

            if np.any(np.asarray(self.tau_decay) <= np.asarray(self.tau_rise)):
                raise ValueError(
                    "DualExponentialSynapse: `tau_decay` must be larger than `tau_rise`; got "
                    f"tau_rise={tau_rise}, tau_decay={tau_decay}. Use AlphaSynapse for equal "
                    "time constants."
                )

    def peak_factor(self):
        td, tr = self.tau_decay, self.tau_rise
        t_peak = td * tr / (td - tr) * jnp.log(td / tr)
        return 1.0 / (jnp.exp(-t_peak / td) - jnp.exp(-t_peak / tr))

    def init(self, n, dtype):
        z = jnp.zeros((n,), dtype)
        return DualExponentialState(z, z)

    def arrive(self, state, weight):
        w = weight * self.peak_factor()
        return DualExponentialState(
            _like(state.decay + w, state.decay), _like(state.rise + w, state.rise)
        )

    def mean(self, state, dt):
        mean = state.decay * phi1(-dt / self.tau_decay) - state.rise * phi1(-dt / self.tau_rise)
        return _like(mean, state.decay)

    def decay(self, state, dt):
        return DualExponentialState(
            _like(state.decay * jnp.exp(-dt / self.tau_decay), state.decay),
            _like(state.rise * jnp.exp(-dt / self.tau_rise), state.rise),
        )

    def value(self, state):
        return state.decay - state.rise


class PulseState(NamedTuple):
    g: Float[Array, " n"]
    """Sum of the weights that arrived at the start of the current step."""


class PulseSynapse(AbstractKinetics):
    r"""A spike injects its weight for exactly one step: the discrete-time synapse of snnTorch
    and Spyx (and of NIR graphs whose synapses are plain weights).

    The trace of step :math:`k` (from :math:`t_k` to :math:`t_{k+1}`) is the sum of the
    weights arriving at :math:`t_k`, held over the step and gone after it:

    .. math::
        \bar g_k = \sum_i w_i\, s_{i,\,k - L}, \qquad L = d/\Delta t + 1,

    with :math:`s_{i,j}` the spikes of presynaptic neuron :math:`i` in step :math:`j` and
    :math:`d` the synaptic delay (ms; the lag :math:`L` of :mod:`brainsim._timing`: a zero delay
    acts in the next step). Through :class:`~brainsim.CurrentBased` a weight ``w`` (pA) is a
    current ``w`` for one step, a charge :math:`w\,\Delta t` (fC): unlike the other kinetics
    the effect of a spike scales with the step, as in the discrete-time models it reproduces.
    A recurrent layer :math:`I_k = z_{k-1} W` is a zero-delay projection onto this receptor.

    Example:
        >>> rec = {"syn": bs.Receptor(bs.PulseSynapse(), bs.CurrentBased())}
    """

    def init(self, n, dtype):
        return PulseState(jnp.zeros((n,), dtype))

    def arrive(self, state, weight):
        return PulseState(_like(state.g + weight, state.g))

    def mean(self, state, dt):
        return state.g

    def decay(self, state, dt):
        return PulseState(jnp.zeros_like(state.g))

    def value(self, state):
        return state.g
