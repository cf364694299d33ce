r"""Plasticity rules as pure values: ``init`` / ``update`` pairs, composable with :func:`chain`.

A rule is a frozen module of parameters. Its state (traces, eligibility, rate sensors) is a
separate value::

    state = rule.init(synapses, weights)
    weights, state = rule.update(state, weights, pre_spikes, post_spikes, dt,
                                 synapses=synapses, modulator=None)

``synapses`` (:class:`DenseSynapses`, :class:`EllSynapses` or :class:`CsrSynapses`) says how the
weights are stored;
``pre_spikes`` / ``post_spikes`` are this step's spikes (non-zero = spike; the value of a
spike-source count adds to all-to-all traces), ``dt`` the step in ms and ``modulator`` an
optional neuromodulator signal for this step (scalar or one value per postsynaptic neuron).
Inside a :class:`~brainsim.Network` the projection's rule runs every step after the neurons
have spiked and, with Brian2's conventions (the default), after their spikes are delivered: a
spike is transmitted with the weight before its own update, as Brian2's ``on_pre: g += w; ...;
w = ...``. ``Timing(transmit_after_update=True)`` (the default of ``Timing.nest()``, as NEST's
``stdp_synapse``) updates first (:mod:`brainsim._timing`, :mod:`brainsim._network`).

Slow rules may also act between runs (after an example or an epoch):
``weights, state = rule.boundary(state, weights, synapses=synapses)``; for a whole network use
:func:`brainsim.plasticity.at_boundary`.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .._errors import as_parameter, is_concrete
from ..kernels import TraceDependence, dependence_factor
from ._synapses import AbstractSynapses


class AbstractPlasticity(eqx.Module):
    """A long-term plasticity or homeostatic rule acting on one projection's weights."""

    needs_modulator: ClassVar[bool] = False
    """True for rules that learn only from the ``modulator`` signal (a network refuses them on
    a projection without ``modulator=``)."""

    @abc.abstractmethod
    def init(self, synapses: AbstractSynapses, weights: Array):
        """The rule's initial state (traces at zero)."""

    @abc.abstractmethod
    def update(
        self,
        state,
        weights: Array,
        pre_spikes: Array,
        post_spikes: Array,
        dt: float,
        *,
        synapses: AbstractSynapses,
        modulator: ArrayLike | None = None,
    ) -> tuple[Array, object]:
        """One step: return ``(new_weights, new_state)``."""

    def boundary(self, state, weights: Array, *, synapses: AbstractSynapses):
        """Between runs (example or epoch boundary): return ``(weights, state)``. Default:
        nothing happens."""
        return weights, state


class Chain(AbstractPlasticity):
    """Rules applied one after another on the same weights (like ``optax.chain``); the state
    is the tuple of the rules' states."""

    rules: tuple[AbstractPlasticity, ...]

    def __init__(self, *rules: AbstractPlasticity):
        for r in rules:
            if not isinstance(r, AbstractPlasticity):
                raise TypeError(
                    f"chain: every rule must be a brainsim.plasticity rule; got {type(r).__name__}."
                )
        self.rules = tuple(rules)

    def init(self, synapses, weights):
        return tuple(r.init(synapses, weights) for r in self.rules)

    def update(self, state, weights, pre_spikes, post_spikes, dt, *, synapses, modulator=None):
        new = []
        for r, s in zip(self.rules, state, strict=True):
            weights, s = r.update(
                s, weights, pre_spikes, post_spikes, dt, synapses=synapses, modulator=modulator
            )
            new.append(s)
        return weights, tuple(new)

    def boundary(self, state, weights, *, synapses):
        new = []
        for r, s in zip(self.rules, state, strict=True):
            weights, s = r.boundary(s, weights, synapses=synapses)
            new.append(s)
        return weights, tuple(new)


def chain(*rules: AbstractPlasticity) -> Chain:
    """Compose rules: ``chain(PairSTDP(...), SynapticScaling(...))`` applies STDP, then scaling,
    every step (and both rules' ``boundary`` between runs)."""
    return Chain(*rules)


# ------------------------------------------------------------------------ weight dependence


class AbstractWeightDependence(eqx.Module):
    r"""How the size of a potentiation / depression depends on the weight, and its bounds.

    A rule potentiates by :math:`A_+ f_+(w)\,x` and depresses by :math:`A_- f_-(w)\,y`, then
    clips to ``[w_min, w_max]`` (hard bounds; a no-op for soft-bounded dependences).
    """

    w_min: Array
    w_max: Array

    @abc.abstractmethod
    def potentiation(self, w) -> Array:
        """:math:`f_+(w)`."""

    @abc.abstractmethod
    def depression(self, w) -> Array:
        """:math:`f_-(w)`."""

    def clip(self, w):
        return jnp.clip(w, self.w_min, self.w_max)

    def trace_form(self, potentiate: bool) -> TraceDependence | None:
        """This dependence as the STDP kernels evaluate it (``f_+`` if ``potentiate`` else
        ``f_-``), or ``None`` if they cannot (then rules update through a generic block
        function; subclasses defining new ``f`` return ``None``)."""
        return None

    def _set_bounds(self, w_max, w_min, *, allow_inf: bool = False):
        self.w_max, self.w_min = weight_bounds(
            type(self).__name__, w_max, w_min, allow_inf=allow_inf
        )


def weight_bounds(owner: str, w_max, w_min, *, allow_inf: bool = False):
    """``(w_max, w_min)`` as checked parameters (real; finite unless ``allow_inf``) with
    ``w_max > w_min``."""
    hi = as_parameter(w_max, "w_max", owner=owner, allow_inf=allow_inf)
    lo = as_parameter(w_min, "w_min", owner=owner, allow_inf=allow_inf)
    if is_concrete(hi) and is_concrete(lo) and not np.all(np.asarray(hi) > np.asarray(lo)):
        raise ValueError(
            f"{owner}: `w_max` must exceed w_min (the weight bounds); "
            f"got w_max = {w_max}, w_min = {w_min}. Raise w_max or lower w_min."
        )
    return hi, lo


class Additive(AbstractWeightDependence):
    """Additive STDP with hard bounds: :math:`f_\\pm = 1`, weights clipped to
    ``[w_min, w_max]`` (Song, Miller & Abbott 2000; drives weights to a bimodal distribution).
    Unbounded rules (Pfister & Gerstner) use ``w_min=-inf, w_max=inf`` (infinite bounds are
    allowed here only: the soft-bounded dependences scale by the finite range)."""

    def __init__(self, w_max: ArrayLike = 1.0, w_min: ArrayLike = 0.0):
        self._set_bounds(w_max, w_min, allow_inf=True)

    def trace_form(self, potentiate):
        return TraceDependence("additive", self.w_min, self.w_max, jnp.zeros(()))

    def potentiation(self, w):
        return dependence_factor(w, self.trace_form(True), True)

    def depression(self, w):
        return dependence_factor(w, self.trace_form(False), False)


class Multiplicative(AbstractWeightDependence):
    r"""Multiplicative (soft-bounded) STDP: :math:`f_+ = 1 - \hat w`, :math:`f_- = \hat w` with
    :math:`\hat w = (w - w_{min})/(w_{max} - w_{min})` (van Rossum et al. 2000; unimodal)."""

    def __init__(self, w_max: ArrayLike = 1.0, w_min: ArrayLike = 0.0):
        self._set_bounds(w_max, w_min)

    def trace_form(self, potentiate):
        return TraceDependence("multiplicative", self.w_min, self.w_max, jnp.ones(()))

    def potentiation(self, w):
        return dependence_factor(w, self.trace_form(True), True)

    def depression(self, w):
        return dependence_factor(w, self.trace_form(False), False)


class Gutig(AbstractWeightDependence):
    r"""Gütig et al. (2003) power-law dependence :math:`f_+ = (1 - \hat w)^{\mu_+}`,
    :math:`f_- = \hat w^{\mu_-}`: ``mu = 0`` is additive, ``mu = 1`` multiplicative,
    ``mu_plus=0, mu_minus=1`` van Rossum's mixed rule (both >= 0; ``mu_minus`` defaults to
    ``mu_plus``). Hard, finite bounds ``[w_min, w_max]``."""

    mu_plus: Array
    mu_minus: Array

    def __init__(
        self,
        mu_plus: ArrayLike,
        mu_minus: ArrayLike | None = None,
        *,
        w_max: ArrayLike = 1.0,
        w_min: ArrayLike = 0.0,
    ):
        self.mu_plus = as_parameter(mu_plus, "mu_plus", owner="Gutig", nonnegative=True)
        mu_minus = mu_plus if mu_minus is None else mu_minus
        self.mu_minus = as_parameter(mu_minus, "mu_minus", owner="Gutig", nonnegative=True)
        self._set_bounds(w_max, w_min)

    def trace_form(self, potentiate):
        mu = self.mu_plus if potentiate else self.mu_minus
        return TraceDependence("power", self.w_min, self.w_max, mu)

    def potentiation(self, w):
        return dependence_factor(w, self.trace_form(True), True)

    def depression(self, w):
        return dependence_factor(w, self.trace_form(False), False)


def gather(trace, index):
    """``trace[index]`` with 0 for padding indices (``index >= len(trace)``)."""
    return trace.at[index].get(mode="fill", fill_value=0)


def bump(trace, spikes, nearest: bool):
    """Trace after this step's spikes: ``+= count`` (all-to-all) or ``= 1`` (nearest)."""
    spikes = spikes.astype(trace.dtype)
    if nearest:
        return jnp.where(spikes != 0, jnp.ones_like(trace), trace)
    return trace + spikes
