r"""Spike functions: a Heaviside step forward, a smooth surrogate derivative backward.

The forward value is :math:`S(x) = H(x)` (1 where :math:`x \ge 0`, else 0), where ``x`` is the
distance of the membrane potential above threshold in mV. Its true derivative is zero almost
everywhere, which would stop gradients; each surrogate replaces it by a bump :math:`\sigma'(x)`
whose width is set by ``scale`` (in 1/mV: larger means narrower). Forward values never change
with the surrogate, only gradients do (Zenke & Vogels 2021: the scale matters more than the shape).
"""

from __future__ import annotations

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._errors import as_parameter


@jax.custom_jvp
def _heaviside_with_surrogate(x, surrogate):
    return jnp.where(x >= 0, jnp.ones_like(x), jnp.zeros_like(x))


@_heaviside_with_surrogate.defjvp
def _heaviside_jvp(primals, tangents):
    x, surrogate = primals
    x_dot, _ = tangents  # the step does not depend on the surrogate's scale
    y = _heaviside_with_surrogate(x, surrogate)
    return y, surrogate.derivative(x).astype(x.dtype) * x_dot


class AbstractSurrogate(eqx.Module):
    """A Heaviside spike function with a surrogate derivative.

    Calling ``surrogate(x)`` returns ``H(x)`` in the dtype of ``x``; ``jax.grad`` sees
    ``surrogate.derivative(x)`` instead of the Dirac delta.
    """

    @abc.abstractmethod
    def derivative(self, x: Float[Array, "..."]) -> Float[Array, "..."]:
        """The surrogate :math:`\\sigma'(x)` used in place of dH/dx."""

    def __call__(self, x: Float[Array, "..."]) -> Float[Array, "..."]:
        return _heaviside_with_surrogate(x, self)


class FastSigmoid(AbstractSurrogate):
    r"""SuperSpike / fast sigmoid: :math:`\sigma'(x) = 1 / (1 + \beta |x|)^2`, with :math:`\beta` = ``scale``."""

    scale: Float[Array, ""]

    def __init__(self, scale: ArrayLike = 1.0):
        self.scale = as_parameter(scale, "scale", owner="FastSigmoid", unit="1/mV", positive=True)

    def derivative(self, x):
        return 1.0 / (1.0 + self.scale * jnp.abs(x)) ** 2


class Sigmoid(AbstractSurrogate):
    r"""Logistic: :math:`\sigma'(x) = \alpha\, s(\alpha x)(1 - s(\alpha x))`, :math:`\alpha` = ``scale``."""

    scale: Float[Array, ""]

    def __init__(self, scale: ArrayLike = 4.0):
        self.scale = as_parameter(scale, "scale", owner="Sigmoid", unit="1/mV", positive=True)

    def derivative(self, x):
        # s(z) s(-z) rather than s (1 - s): no cancellation in the tails.
        z = self.scale * x
        return self.scale * jax.nn.sigmoid(z) * jax.nn.sigmoid(-z)


class Arctan(AbstractSurrogate):
    r"""Arctangent: :math:`\sigma'(x) = (\alpha/2) / (1 + (\pi \alpha x / 2)^2)`, :math:`\alpha` = ``scale``."""

    scale: Float[Array, ""]

    def __init__(self, scale: ArrayLike = 2.0):
        self.scale = as_parameter(scale, "scale", owner="Arctan", unit="1/mV", positive=True)

    def derivative(self, x):
        return (self.scale / 2.0) / (1.0 + (math.pi * self.scale * x / 2.0) ** 2)


class Triangle(AbstractSurrogate):
    r"""Triangle: :math:`\sigma'(x) = \gamma \max(0, 1 - |\beta x|)`, :math:`\beta` = ``scale``, :math:`\gamma` = ``height``."""

    scale: Float[Array, ""]
    height: Float[Array, ""]

    def __init__(self, scale: ArrayLike = 1.0, height: ArrayLike = 0.3):
        self.scale = as_parameter(scale, "scale", owner="Triangle", unit="1/mV", positive=True)
        self.height = as_parameter(height, "height", owner="Triangle", positive=True)

    def derivative(self, x):
        return self.height * jnp.maximum(0.0, 1.0 - jnp.abs(self.scale * x))


class Exponential(AbstractSurrogate):
    r"""Exponential: :math:`\sigma'(x) = (\beta/2) e^{-\beta |x|}`, :math:`\beta` = ``scale`` (integrates to 1)."""

    scale: Float[Array, ""]

    def __init__(self, scale: ArrayLike = 1.0):
        self.scale = as_parameter(
            scale, "scale", owner="surrogate.Exponential", unit="1/mV", positive=True
        )

    def derivative(self, x):
        return 0.5 * self.scale * jnp.exp(-self.scale * jnp.abs(x))


class Rectangular(AbstractSurrogate):
    r"""Box: :math:`\sigma'(x) = \beta` for :math:`|x| < 1/(2\beta)`, else 0 (integrates to 1)."""

    scale: Float[Array, ""]

    def __init__(self, scale: ArrayLike = 1.0):
        self.scale = as_parameter(scale, "scale", owner="Rectangular", unit="1/mV", positive=True)

    def derivative(self, x):
        return jnp.where(jnp.abs(x) < 0.5 / self.scale, self.scale, 0.0)
