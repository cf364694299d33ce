r"""Receptor outputs: how a synaptic trace becomes membrane input (a :class:`Drive`).

Each output maps the step-averaged trace :math:`\bar g` and the membrane potential :math:`V`
(mV, at the start of the step) to a contribution :math:`(i, g)` with input current
:math:`i - gV`.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._errors import as_parameter
from .._neurons._base import Drive


class AbstractOutput(eqx.Module):
    """How a receptor's step-averaged trace acts on the membrane: a :class:`Drive` (current
    ``i`` and conductance ``g``, :math:`I = i - gV`) for each postsynaptic neuron."""

    @abc.abstractmethod
    def drive(self, trace, v) -> Drive:
        """Membrane input from the step-averaged trace ``trace`` at potential ``v``."""


class CurrentBased(AbstractOutput):
    r"""The trace is a current (pA): :math:`I = \bar g`."""

    def drive(self, trace, v):
        return Drive(trace, jnp.zeros_like(trace))


class ConductanceBased(AbstractOutput):
    r"""The trace is a conductance (nS) with reversal potential ``E_rev`` (mV): :math:`I = \bar g (E - V)`."""

    E_rev: Float[Array, "*n"]

    def __init__(self, E_rev: ArrayLike = 0.0):
        self.E_rev = as_parameter(E_rev, "E_rev", owner="ConductanceBased", unit="mV")

    def drive(self, trace, v):
        return Drive(trace * self.E_rev, trace)


class NMDA(AbstractOutput):
    r"""Conductance with a voltage-dependent Mg²⁺ block (Jahr & Stevens 1990).

    .. math:: I = \bar g\, B(V)\, (E - V), \qquad B(V) = \frac{1}{1 + [\mathrm{Mg}]/\beta\; e^{-\alpha V}}

    with ``mg`` in mM, ``alpha`` = 0.062 /mV and ``beta`` = 3.57 mM. The block is evaluated at
    the potential at the start of the step and held for the step (semi-implicit: the
    :math:`(E - V)` factor stays exact).
    """

    E_rev: Float[Array, "*n"]
    mg: Float[Array, "*n"]
    alpha: Float[Array, "*n"]
    beta: Float[Array, "*n"]

    def __init__(
        self,
        E_rev: ArrayLike = 0.0,
        mg: ArrayLike = 1.0,
        alpha: ArrayLike = 0.062,
        beta: ArrayLike = 3.57,
    ):
        self.E_rev = as_parameter(E_rev, "E_rev", owner="NMDA", unit="mV")
        self.mg = as_parameter(mg, "mg", owner="NMDA", unit="mM", nonnegative=True)
        self.alpha = as_parameter(alpha, "alpha", owner="NMDA", unit="1/mV")
        self.beta = as_parameter(beta, "beta", owner="NMDA", unit="mM", positive=True)

    def block(self, v):
        """Fraction of unblocked channels :math:`B(V)`."""
        return 1.0 / (1.0 + self.mg / self.beta * jnp.exp(-self.alpha * v))

    def drive(self, trace, v):
        g = trace * self.block(v)
        return Drive(g * self.E_rev, g)
