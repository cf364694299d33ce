r"""Integrators are values: pass one to a model, never a ``method="..."`` string.

Every model writes its continuous dynamics in *linearised* form

.. math:: \dot y = a(y)\, y + b(y)

elementwise over a PyTree of state arrays (``a`` and ``b`` may depend on ``y``; synaptic
input is held constant over one step). This one description serves every integrator:

* :class:`Euler` — :math:`y + \Delta t\, f(y)`, order 1.
* :class:`Heun` (RK2) and :class:`RK4` — explicit Runge–Kutta on :math:`f(y) = a y + b`, order 2 and 4.
* :class:`ExponentialEuler` — :math:`y + \Delta t\, \varphi_1(a \Delta t)\, f(y)` with
  :math:`\varphi_1(z) = (e^z - 1)/z` (:mod:`brainsim._phi1`), i.e. :math:`y_{n+1} = e^{a\Delta t} y + (e^{a\Delta t}-1)\, b/a`.
  It is *exact* whenever ``a`` and ``b`` are constant over the step (LIF and exponential
  synapses with frozen input), and unconditionally stable for the stiff linear part of
  Hodgkin–Huxley gates (Brian2's ``exponential_euler``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax

from ._phi1 import phi1

LinearParts = Callable[[object], tuple[object, object]]


def _vector_field(linear_parts: LinearParts):
    def f(y):
        a, b = linear_parts(y)
        return jax.tree.map(lambda ai, yi, bi: ai * yi + bi, a, y, b)

    return f


def _axpy(y, dt, *terms):
    """``y + dt * sum(c_i * k_i)`` over PyTrees; ``terms`` are (coefficient, pytree) pairs."""

    def combine(yi, *ks):
        acc = yi
        for (c, _), ki in zip(terms, ks, strict=True):
            acc = acc + (dt * c) * ki
        return acc

    return jax.tree.map(combine, y, *[k for _, k in terms])


class AbstractIntegrator(eqx.Module):
    """Advances ``dy/dt = a(y) y + b(y)`` by one step of length ``dt`` (ms)."""

    order: ClassVar[int]

    @abc.abstractmethod
    def step(self, linear_parts: LinearParts, y, dt):
        """Return ``y(t + dt)``; ``linear_parts(y)`` gives the PyTrees ``(a, b)``."""


class Euler(AbstractIntegrator):
    """Forward Euler, first order."""

    order: ClassVar[int] = 1

    def step(self, linear_parts, y, dt):
        return _axpy(y, dt, (1.0, _vector_field(linear_parts)(y)))


class Heun(AbstractIntegrator):
    """Heun's method (explicit trapezoid, RK2), second order."""

    order: ClassVar[int] = 2

    def step(self, linear_parts, y, dt):
        f = _vector_field(linear_parts)
        k1 = f(y)
        k2 = f(_axpy(y, dt, (1.0, k1)))
        return _axpy(y, dt, (0.5, k1), (0.5, k2))


RK2 = Heun


class RK4(AbstractIntegrator):
    """Classic fourth-order Runge–Kutta."""

    order: ClassVar[int] = 4

    def step(self, linear_parts, y, dt):
        f = _vector_field(linear_parts)
        k1 = f(y)
        k2 = f(_axpy(y, dt, (0.5, k1)))
        k3 = f(_axpy(y, dt, (0.5, k2)))
        k4 = f(_axpy(y, dt, (1.0, k3)))
        return _axpy(y, dt, (1 / 6, k1), (1 / 3, k2), (1 / 3, k3), (1 / 6, k4))


class ExponentialEuler(AbstractIntegrator):
    """Exponential Euler; exact for linear dynamics with inputs constant over the step."""

    order: ClassVar[int] = 1

    def step(self, linear_parts, y, dt):
        a, b = linear_parts(y)
        return jax.tree.map(lambda ai, yi, bi: yi + dt * phi1(ai * dt) * (ai * yi + bi), a, y, b)


Exact = ExponentialEuler
"""Alias used by linear models: exponential integration is their exact solution."""
