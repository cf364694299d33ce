r"""Bijections between an unconstrained optimisation space and a parameter's natural range.

An optimiser moves a free variable :math:`u \in \mathbb{R}`; the model sees
:math:`x = f(u)` in natural units. Bounds hold by construction and, unlike clipping, the
derivative :math:`f'(u)` is never zero, so a parameter pushed against a bound can still come
back (hard clipping gives zero gradients at the bounds).

* :class:`Identity` — :math:`x = u`.
* :class:`Positive` — :math:`x = \ell + s\,\mathrm{softplus}(u)` on :math:`(\ell, \infty)`.
* :class:`Interval` — :math:`x = a + (b - a)\,\sigma(u)` on :math:`(a, b)`.

Every bijection is a value with ``forward(u) -> x`` and ``inverse(x) -> u``; initial values
are always given in natural units (the model's own values) and mapped with ``inverse``.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._errors import is_concrete


class AbstractBijection(eqx.Module):
    """``forward`` maps free values to natural units, ``inverse`` maps back (exactly)."""

    @abc.abstractmethod
    def forward(self, u: Float[Array, "..."]) -> Float[Array, "..."]:
        """Natural value :math:`x = f(u)`."""

    @abc.abstractmethod
    def inverse(self, x: Float[Array, "..."]) -> Float[Array, "..."]:
        """Free value :math:`u = f^{-1}(x)`."""

    def fitted_to(self, x, name: str = "parameter") -> AbstractBijection:
        """This bijection with any data-dependent setting taken from the initial value ``x``
        (natural units); raises ``ValueError`` naming ``name`` if ``x`` is out of range."""
        return self


class Identity(AbstractBijection):
    """No constraint: :math:`x = u`."""

    def forward(self, u):
        return u

    def inverse(self, x):
        return x


def _softplus_inverse(y):
    # log(e^y - 1) = y + log(1 - e^{-y}): no overflow for large y, exact near 0.
    return y + jnp.log(-jnp.expm1(-y))


class Positive(AbstractBijection):
    r"""Values above ``lower`` (default 0): :math:`x = \ell + s\,\mathrm{softplus}(u)`.

    ``scale`` :math:`s` sets the natural size of a unit step in :math:`u`. Left as ``None`` it
    is taken from the initial value (:math:`s = x_0 - \ell`, elementwise), so an optimiser
    such as Adam, whose steps in :math:`u` have a fixed size, changes every parameter by a
    similar *relative* amount whatever its units (a time constant of 20 ms and a conductance
    of 0.3 nS move alike). :math:`dx/du = s\,\sigma(u) > 0` everywhere.
    """

    lower: Float[Array, "..."]
    scale: Float[Array, "..."] | None

    def __init__(self, lower: ArrayLike = 0.0, scale: ArrayLike | None = None):
        self.lower = jnp.asarray(lower, dtype=jnp.result_type(float))
        if scale is not None:
            s = np.asarray(scale) if is_concrete(scale) else None
            if s is not None and not np.all(s > 0):
                raise ValueError(f"Positive: `scale` must be > 0; got {scale!r}.")
            scale = jnp.asarray(scale, dtype=jnp.result_type(float))
        self.scale = scale

    def _scale(self):
        return 1.0 if self.scale is None else self.scale

    def forward(self, u):
        return self.lower + self._scale() * jax.nn.softplus(u)

    def inverse(self, x):
        return _softplus_inverse((x - self.lower) / self._scale())

    def fitted_to(self, x, name="parameter"):
        if is_concrete(x) and is_concrete(self.lower):
            xv, lo = np.asarray(x), np.asarray(self.lower)
            if not np.all(xv > lo):
                bad = np.broadcast_to(xv, np.broadcast_shapes(xv.shape, lo.shape))
                bad = bad[~(bad > lo)].ravel()[0]
                raise ValueError(
                    f"Positive: initial value of `{name}` is {bad!r}, not above the lower bound "
                    f"{float(np.max(lo))!r}. Start inside the range or lower the bound."
                )
        if self.scale is not None:
            return self
        return Positive(self.lower, jnp.asarray(x, self.lower.dtype) - self.lower)


class Interval(AbstractBijection):
    r"""Values in the open interval ``(low, high)``: :math:`x = a + (b - a)\,\sigma(u)`.

    :math:`dx/du = (b - a)\,\sigma(u)(1 - \sigma(u)) > 0` for every finite :math:`u`, so the
    gradient shrinks near a bound but never becomes zero as it does under clipping.
    """

    low: Float[Array, "..."]
    high: Float[Array, "..."]

    def __init__(self, low: ArrayLike, high: ArrayLike):
        if is_concrete(low) and is_concrete(high) and not np.all(np.asarray(high) > np.asarray(low)):
            raise ValueError(f"Interval: `high` ({high!r}) must be above `low` ({low!r}).")
        self.low = jnp.asarray(low, dtype=jnp.result_type(float))
        self.high = jnp.asarray(high, dtype=jnp.result_type(float))

    def forward(self, u):
        return self.low + (self.high - self.low) * jax.nn.sigmoid(u)

    def inverse(self, x):
        p = (x - self.low) / (self.high - self.low)
        # logit(p) = log(p) - log1p(-p): accurate at both ends.
        return jnp.log(p) - jnp.log1p(-p)

    def fitted_to(self, x, name="parameter"):
        if is_concrete(x) and is_concrete(self.low) and is_concrete(self.high):
            xv = np.asarray(x)
            inside = (xv > np.asarray(self.low)) & (xv < np.asarray(self.high))
            if not np.all(inside):
                bad = np.broadcast_to(xv, inside.shape)[~inside].ravel()[0]
                raise ValueError(
                    f"Interval: initial value of `{name}` is {bad!r}, outside "
                    f"({float(np.min(self.low))!r}, {float(np.max(self.high))!r}). Start inside "
                    "the open interval or widen it."
                )
        return self
