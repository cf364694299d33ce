"""Initial-value distributions for state variables, e.g. ``initial={"v": Uniform(-60, -50)}``.

Each initialiser is called as ``init(key, shape, dtype)`` when a network's state is created.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._errors import as_parameter


class AbstractInitializer(eqx.Module):
    @abc.abstractmethod
    def __call__(self, key, shape, dtype) -> Array:
        """Draw values of ``shape``."""


class Constant(AbstractInitializer):
    value: Float[Array, "*n"]

    def __init__(self, value: ArrayLike):
        self.value = as_parameter(value)

    def __call__(self, key, shape, dtype):
        return jnp.broadcast_to(self.value, shape).astype(dtype)


class Uniform(AbstractInitializer):
    """Uniform on ``[low, high)``."""

    low: Float[Array, "*n"]
    high: Float[Array, "*n"]

    def __init__(self, low: ArrayLike, high: ArrayLike):
        self.low = as_parameter(low)
        self.high = as_parameter(high)

    def __call__(self, key, shape, dtype):
        return jax.random.uniform(key, shape, dtype, self.low, self.high)


class Normal(AbstractInitializer):
    """Normal with ``mean`` and standard deviation ``std``."""

    mean: Float[Array, "*n"]
    std: Float[Array, "*n"]

    def __init__(self, mean: ArrayLike, std: ArrayLike):
        self.mean = as_parameter(mean)
        self.std = as_parameter(std)

    def __call__(self, key, shape, dtype):
        return (self.mean + self.std * jax.random.normal(key, shape, dtype)).astype(dtype)
