r"""Spike-timing-dependent plasticity with exponential traces (pair, triplet, symmetric,
reward-modulated, Diehl & Cook power law).

**Same-step ordering** (every rule here, Brian2's convention for Song et al. 2000):

1. all traces decay exactly over the step, :math:`x \leftarrow x\,e^{-\Delta t/\tau}`;
2. every presynaptic spike *depresses* its synapses with the postsynaptic trace as it is
   before this step's postsynaptic spikes, then bumps the presynaptic traces;
3. every postsynaptic spike *potentiates* the synapses onto it with the presynaptic trace,
   which already contains this step's presynaptic spikes, then bumps the postsynaptic traces.

So a pre and a post spike in the same step count as pre-before-post (:math:`\Delta t = 0`
gives :math:`+A_+`), and the pair window is exact at multiples of ``dt``:
:math:`\Delta w = A_+ e^{-\Delta t/\tau_+}` for :math:`\Delta t = t_{post} - t_{pre} \ge 0`
and :math:`-A_- e^{\Delta t/\tau_-}` for :math:`\Delta t < 0`. Traces are bumped by the spike
count (all-to-all pairing) or set to 1 (nearest-neighbour pairing, ``nearest=True``).
Plasticity sees spikes at their emission step: transmission delays do not shift the window.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from .._errors import as_parameter
from ._base import AbstractPlasticity, AbstractWeightDependence, Additive, bump, gather


def _decay(trace, dt, tau):
    return trace * jnp.exp(-dt / tau).astype(trace.dtype)


class PairTraces(NamedTuple):
    pre: Array
    """``(n_pre,)`` presynaptic trace :math:`x` (time constant :math:`\\tau_+`)."""
    post: Array
    """``(n_post,)`` postsynaptic trace :math:`y` (time constant :math:`\\tau_-`)."""


def _pair_traces(synapses, weights):
    dtype = weights.dtype
    return PairTraces(jnp.zeros((synapses.n_pre,), dtype), jnp.zeros((synapses.n_post,), dtype))


class PairSTDP(AbstractPlasticity):
    r"""Trace-based pair STDP (Song, Miller & Abbott 2000; Morrison et al. 2008).

    .. math::
        \text{pre spike: } w \leftarrow w - A_-\,f_-(w)\,y_j,\qquad
        \text{post spike: } w \leftarrow w + A_+\,f_+(w)\,x_i,

    with traces :math:`x` (:math:`\tau_+`) and :math:`y` (:math:`\tau_-`) and the ordering in
    the module docstring; the weight dependence :math:`f_\pm` and the bounds come from
    ``weight_dependence`` (:class:`Additive`, :class:`Multiplicative`, :class:`Gutig`).

    Arguments:
        tau_plus, tau_minus: trace time constants (ms).
        A_plus, A_minus: potentiation / depression amplitudes (weight units, both >= 0).
        weight_dependence: default :class:`Additive` with bounds ``[0, 1]``.
        nearest: nearest-neighbour pairing (traces reset to 1) instead of all-to-all.

    Example:
        >>> rule = PairSTDP(20.0, 20.0, A_plus=1e-4, A_minus=1.05e-4,
        ...                 weight_dependence=Additive(w_max=0.01))
    """

    tau_plus: Array
    tau_minus: Array
    A_plus: Array
    A_minus: Array
    weight_dependence: AbstractWeightDependence
    nearest: bool = eqx.field(static=True)

    def __init__(
        self,
        tau_plus: ArrayLike = 20.0,
        tau_minus: ArrayLike = 20.0,
        *,
        A_plus: ArrayLike = 0.01,
        A_minus: ArrayLike = 0.0105,
        weight_dependence: AbstractWeightDependence | None = None,
        nearest: bool = False,
    ):
        owner = "PairSTDP"
        self.tau_plus = as_parameter(tau_plus, "tau_plus", owner=owner, unit="ms", positive=True)
        self.tau_minus = as_parameter(tau_minus, "tau_minus", owner=owner, unit="ms", positive=True)
        self.A_plus = as_parameter(A_plus, "A_plus", owner=owner, nonnegative=True)
        self.A_minus = as_parameter(A_minus, "A_minus", owner=owner, nonnegative=True)
        self.weight_dependence = Additive() if weight_dependence is None else weight_dependence
        self.nearest = bool(nearest)

    def init(self, synapses, weights) -> PairTraces:
        return _pair_traces(synapses, weights)

    def update(self, state, weights, pre_spikes, post_spikes, dt, *, synapses, modulator=None):
        wd = self.weight_dependence
        x = _decay(state.pre, dt, self.tau_plus)
        y = _decay(state.post, dt, self.tau_minus)

        weights = synapses.trace_update_pre(
            weights, pre_spikes, self.A_minus, y, wd, potentiate=False
        )
        x = bump(x, pre_spikes, self.nearest)
        weights = synapses.trace_update_post(
            weights, post_spikes, self.A_plus, x, wd, potentiate=True
        )
        y = bump(y, post_spikes, self.nearest)
        return weights, PairTraces(x, y)


class SymmetricSTDP(AbstractPlasticity):
    r"""Symmetric (Hebbian coincidence) STDP: both orders potentiate,
    :math:`\Delta w = A\,f_+(w)\,e^{-|\Delta t|/\tau}` (as in hippocampal CA3, Mishra et al.
    2016), optionally with a constant depression ``A_pre_offset`` per presynaptic spike that
    keeps uncorrelated inputs from growing (``A`` and ``A_pre_offset`` are >= 0). Same
    ordering as :class:`PairSTDP` (a same-step pair counts once)."""

    tau: Array
    A: Array
    A_pre_offset: Array
    weight_dependence: AbstractWeightDependence
    nearest: bool = eqx.field(static=True)

    def __init__(
        self,
        tau: ArrayLike = 20.0,
        *,
        A: ArrayLike = 0.01,
        A_pre_offset: ArrayLike = 0.0,
        weight_dependence: AbstractWeightDependence | None = None,
        nearest: bool = False,
    ):
        owner = "SymmetricSTDP"
        self.tau = as_parameter(tau, "tau", owner=owner, unit="ms", positive=True)
        self.A = as_parameter(A, "A", owner=owner, nonnegative=True)
        self.A_pre_offset = as_parameter(
            A_pre_offset, "A_pre_offset", owner=owner, nonnegative=True
        )
        self.weight_dependence = Additive() if weight_dependence is None else weight_dependence
        self.nearest = bool(nearest)

    def init(self, synapses, weights) -> PairTraces:
        return _pair_traces(synapses, weights)

    def update(self, state, weights, pre_spikes, post_spikes, dt, *, synapses, modulator=None):
        wd = self.weight_dependence
        x = _decay(state.pre, dt, self.tau)
        y = _decay(state.post, dt, self.tau)

        def on_pre(w, i, j, valid):
            up = self.A * wd.potentiation(w) * gather(y, j)
            return wd.clip(w + up - self.A_pre_offset * wd.depression(w))

        weights = synapses.on_pre(weights, pre_spikes, on_pre)
        x = bump(x, pre_spikes, self.nearest)

        weights = synapses.trace_update_post(weights, post_spikes, self.A, x, wd, potentiate=True)
        y = bump(y, post_spikes, self.nearest)
        return weights, PairTraces(x, y)


class TripletTraces(NamedTuple):
    r1: Array
    """Fast presynaptic trace (:math:`\\tau_+`)."""
    r2: Array
    """Slow presynaptic trace (:math:`\\tau_x`)."""
    o1: Array
    """Fast postsynaptic trace (:math:`\\tau_-`)."""
    o2: Array
    """Slow postsynaptic trace (:math:`\\tau_y`)."""


class TripletSTDP(AbstractPlasticity):
    r"""Triplet STDP (Pfister & Gerstner 2006).

    .. math::
        \text{pre: } w \leftarrow w - f_-(w)\,o_1\,[A_2^- + A_3^-\,r_2(t-\epsilon)],\qquad
        \text{post: } w \leftarrow w + f_+(w)\,r_1\,[A_2^+ + A_3^+\,o_2(t-\epsilon)]

    :math:`r_2(t-\epsilon)`, :math:`o_2(t-\epsilon)` are read before the spike's own bump (the
    ordering of the module docstring). Parameter sets of the paper's Table 4:
    :meth:`visual_cortex` and :meth:`hippocampal` (``nearest=False``: all-to-all,
    ``nearest=True``: nearest-spike). The default weight dependence is unbounded additive,
    as in the paper. The four amplitudes are >= 0 (the sign is in the equations).
    """

    tau_plus: Array
    tau_minus: Array
    tau_x: Array
    tau_y: Array
    A2_plus: Array
    A3_plus: Array
    A2_minus: Array
    A3_minus: Array
    weight_dependence: AbstractWeightDependence
    nearest: bool = eqx.field(static=True)

    def __init__(
        self,
        *,
        tau_plus: ArrayLike = 16.8,
        tau_minus: ArrayLike = 33.7,
        tau_x: ArrayLike = 101.0,
        tau_y: ArrayLike = 125.0,
        A2_plus: ArrayLike = 5e-10,
        A3_plus: ArrayLike = 6.2e-3,
        A2_minus: ArrayLike = 7e-3,
        A3_minus: ArrayLike = 2.3e-4,
        weight_dependence: AbstractWeightDependence | None = None,
        nearest: bool = False,
    ):
        owner = "TripletSTDP"
        self.tau_plus = as_parameter(tau_plus, "tau_plus", owner=owner, unit="ms", positive=True)
        self.tau_minus = as_parameter(tau_minus, "tau_minus", owner=owner, unit="ms", positive=True)
        self.tau_x = as_parameter(tau_x, "tau_x", owner=owner, unit="ms", positive=True)
        self.tau_y = as_parameter(tau_y, "tau_y", owner=owner, unit="ms", positive=True)
        self.A2_plus = as_parameter(A2_plus, "A2_plus", owner=owner, nonnegative=True)
        self.A3_plus = as_parameter(A3_plus, "A3_plus", owner=owner, nonnegative=True)
        self.A2_minus = as_parameter(A2_minus, "A2_minus", owner=owner, nonnegative=True)
        self.A3_minus = as_parameter(A3_minus, "A3_minus", owner=owner, nonnegative=True)
        self.weight_dependence = (
            Additive(w_max=jnp.inf, w_min=-jnp.inf)
            if weight_dependence is None
            else weight_dependence
        )
        self.nearest = bool(nearest)

    @classmethod
    def visual_cortex(cls, *, nearest: bool = False, **kwargs) -> TripletSTDP:
        """Pfister & Gerstner (2006) Table 4, visual cortex data (Sjöström et al. 2001)."""
        if nearest:
            p = dict(tau_x=714.0, tau_y=40.0, A2_plus=8.8e-11, A3_plus=5.3e-2,
                     A2_minus=6.6e-3, A3_minus=3.1e-3)  # fmt: skip
        else:
            p = dict(tau_x=101.0, tau_y=125.0, A2_plus=5e-10, A3_plus=6.2e-3,
                     A2_minus=7e-3, A3_minus=2.3e-4)  # fmt: skip
        return cls(tau_plus=16.8, tau_minus=33.7, nearest=nearest, **(p | kwargs))

    @classmethod
    def hippocampal(cls, *, nearest: bool = False, **kwargs) -> TripletSTDP:
        """Pfister & Gerstner (2006) Table 4, hippocampal culture data (Wang et al. 2005)."""
        if nearest:
            p = dict(tau_x=575.0, tau_y=47.0, A2_plus=4.6e-3, A3_plus=9.1e-3,
                     A2_minus=3e-3, A3_minus=7.5e-9)  # fmt: skip
        else:
            p = dict(tau_x=946.0, tau_y=27.0, A2_plus=6.1e-3, A3_plus=6.7e-3,
                     A2_minus=1.6e-3, A3_minus=1.4e-3)  # fmt: skip
        return cls(tau_plus=16.8, tau_minus=33.7, nearest=nearest, **(p | kwargs))

    def init(self, synapses, weights) -> TripletTraces:
        dtype = weights.dtype
        pre = jnp.zeros((synapses.n_pre,), dtype)
        post = jnp.zeros((synapses.n_post,), dtype)
        return TripletTraces(pre, pre, post, post)

    def update(self, state, weights, pre_spikes, post_spikes, dt, *, synapses, modulator=None):
        wd = self.weight_dependence
        r1 = _decay(state.r1, dt, self.tau_plus)
        r2 = _decay(state.r2, dt, self.tau_x)
        o1 = _decay(state.o1, dt, self.tau_minus)
        o2 = _decay(state.o2, dt, self.tau_y)

        # pre spike i: w -= f_-(w) o1_j (A2- + A3- r2_i); post spike j: w += f_+(w) r1_i (A2+ +
        # A3+ o2_j), r2 and o2 read before the spike's own bump.
        depression = self.A2_minus + self.A3_minus * r2
        weights = synapses.trace_update_pre(
            weights, pre_spikes, depression, o1, wd, potentiate=False
        )
        r1, r2 = bump(r1, pre_spikes, self.nearest), bump(r2, pre_spikes, self.nearest)
        potentiation = self.A2_plus + self.A3_plus * o2
        weights = synapses.trace_update_post(
            weights, post_spikes, potentiation, r1, wd, potentiate=True
        )
        o1, o2 = bump(o1, post_spikes, self.nearest), bump(o2, post_spikes, self.nearest)
        return weights, TripletTraces(r1, r2, o1, o2)


class EligibilityState(NamedTuple):
    pre: Array
    post: Array
    eligibility: Array
    """Per-synapse eligibility trace :math:`c` (same storage as the weights)."""


class RewardModulatedSTDP(AbstractPlasticity):
    r"""Reward-modulated STDP with a synaptic eligibility trace (Izhikevich 2007; Frémaux &
    Gerstner 2016).

    Pair-STDP events (ordering as :class:`PairSTDP`) change an eligibility trace instead of
    the weight; the weight follows the trace only while the modulator :math:`M(t)` (e.g.
    dopamine above baseline, reward minus expected reward) is non-zero:

    .. math::
        \frac{dc}{dt} = -\frac{c}{\tau_c} + \text{STDP}(t),\qquad
        \frac{dw}{dt} = \eta\,M(t)\,c

    (per step: :math:`c \leftarrow c\,e^{-\Delta t/\tau_c}` + STDP events, then
    :math:`w \leftarrow \mathrm{clip}(w + \eta M c\,\Delta t)`). ``modulator`` is passed per
    step (scalar or one value per postsynaptic neuron); ``None`` means 0. The eligibility
    decay and the weight change touch every synapse each step (cost proportional to the
    synapses, unlike the event-driven pair rule). ``A_plus``, ``A_minus`` and ``eta`` are
    >= 0 (the modulator's sign sets the direction). In a :class:`~brainsim.Network` the
    projection needs ``modulator=``: without one the rule never learns.
    """

    needs_modulator: ClassVar[bool] = True

    tau_plus: Array
    tau_minus: Array
    A_plus: Array
    A_minus: Array
    tau_c: Array
    eta: Array
    weight_dependence: AbstractWeightDependence
    nearest: bool = eqx.field(static=True)

    def __init__(
        self,
        tau_plus: ArrayLike = 20.0,
        tau_minus: ArrayLike = 20.0,
        *,
        A_plus: ArrayLike = 1.0,
        A_minus: ArrayLike = 1.5,
        tau_c: ArrayLike = 1000.0,
        eta: ArrayLike = 1e-3,
        weight_dependence: AbstractWeightDependence | None = None,
        nearest: bool = False,
    ):
        owner = "RewardModulatedSTDP"
        self.tau_plus = as_parameter(tau_plus, "tau_plus", owner=owner, unit="ms", positive=True)
        self.tau_minus = as_parameter(tau_minus, "tau_minus", owner=owner, unit="ms", positive=True)
        self.A_plus = as_parameter(A_plus, "A_plus", owner=owner, nonnegative=True)
        self.A_minus = as_parameter(A_minus, "A_minus", owner=owner, nonnegative=True)
        self.tau_c = as_parameter(tau_c, "tau_c", owner=owner, unit="ms", positive=True)
        self.eta = as_parameter(eta, "eta", owner=owner, nonnegative=True)
        self.weight_dependence = Additive() if weight_dependence is None else weight_dependence
        self.nearest = bool(nearest)

    def init(self, synapses, weights) -> EligibilityState:
        t = _pair_traces(synapses, weights)
        return EligibilityState(t.pre, t.post, synapses.zeros(weights.dtype))

    def update(self, state, weights, pre_spikes, post_spikes, dt, *, synapses, modulator=None):
        wd = self.weight_dependence
        x = _decay(state.pre, dt, self.tau_plus)
        y = _decay(state.post, dt, self.tau_minus)
        c = state.eligibility * jnp.exp(-dt / self.tau_c).astype(state.eligibility.dtype)
        c = synapses.on_pre(c, pre_spikes, lambda e, i, j, v: e - self.A_minus * gather(y, j))
        x = bump(x, pre_spikes, self.nearest)
        c = synapses.on_post(c, post_spikes, lambda e, i, j, v: e + self.A_plus * gather(x, i))
        y = bump(y, post_spikes, self.nearest)
        if modulator is not None:
            m = jnp.asarray(modulator, weights.dtype)
            m_post = jnp.broadcast_to(m, (synapses.n_post,))

            def learn(w, i, j, valid):
                return wd.clip(w + self.eta * gather(m_post, j) * c * dt)

            weights = synapses.map(weights, learn)
        return weights, EligibilityState(x, y, c)


class PowerLawSTDP(AbstractPlasticity):
    r"""Diehl & Cook (2015) power-law rule, applied on postsynaptic spikes:

    .. math:: \Delta w = \eta\,(x_{pre} - x_{tar})\,(w_{max} - w)^{\mu}

    with the presynaptic trace :math:`x_{pre}` (:math:`\tau_{pre}`, reset to 1 when
    ``nearest``), target ``x_tar`` = 0.4 and ``mu`` = 0.2 as in REFERENCES; optionally a
    presynaptic depression :math:`\eta_{pre}\,y_{post}` per presynaptic spike. Weights are
    clipped to ``[0, w_max]`` (``w_max`` > 0; ``eta``, ``eta_pre`` and ``mu`` >= 0).
    """

    tau_pre: Array
    tau_post: Array
    eta: Array
    eta_pre: Array
    x_tar: Array
    mu: Array
    w_max: Array
    nearest: bool = eqx.field(static=True)

    def __init__(
        self,
        *,
        tau_pre: ArrayLike = 20.0,
        tau_post: ArrayLike = 20.0,
        eta: ArrayLike = 0.01,
        eta_pre: ArrayLike = 0.0,
        x_tar: ArrayLike = 0.4,
        mu: ArrayLike = 0.2,
        w_max: ArrayLike = 1.0,
        nearest: bool = False,
    ):
        owner = "PowerLawSTDP"
        self.tau_pre = as_parameter(tau_pre, "tau_pre", owner=owner, unit="ms", positive=True)
        self.tau_post = as_parameter(tau_post, "tau_post", owner=owner, unit="ms", positive=True)
        self.eta = as_parameter(eta, "eta", owner=owner, nonnegative=True)
        self.eta_pre = as_parameter(eta_pre, "eta_pre", owner=owner, nonnegative=True)
        self.x_tar = as_parameter(x_tar, "x_tar", owner=owner)
        self.mu = as_parameter(mu, "mu", owner=owner, nonnegative=True)
        self.w_max = as_parameter(w_max, "w_max", owner=owner, positive=True)
        self.nearest = bool(nearest)

    def init(self, synapses, weights) -> PairTraces:
        return _pair_traces(synapses, weights)

    def update(self, state, weights, pre_spikes, post_spikes, dt, *, synapses, modulator=None):
        x = _decay(state.pre, dt, self.tau_pre)
        y = _decay(state.post, dt, self.tau_post)

        def depress(w, i, j, valid):
            return jnp.clip(w - self.eta_pre * gather(y, j), 0, self.w_max)

        weights = synapses.on_pre(weights, pre_spikes, depress)
        x = bump(x, pre_spikes, self.nearest)

        def potentiate(w, i, j, valid):
            room = jnp.clip(self.w_max - w, 0, None) ** self.mu
            return jnp.clip(w + self.eta * (gather(x, i) - self.x_tar) * room, 0, self.w_max)

        weights = synapses.on_post(weights, post_spikes, potentiate)
        y = bump(y, post_spikes, self.nearest)
        return weights, PairTraces(x, y)
