"""Initial-value distributions for state variables, e.g. ``initial={"v": Uniform(-60, -50)}``.

Each initialiser is called as ``init(key, shape, dtype)`` when a network's state is created.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float


class AbstractInitializer(eqx.Module):
    @abc.abstractmethod
    def __call__(self, key, shape, dtype) -> Array:
        """Draw values of ``shape``."""


class Constant(AbstractInitializer):
    value: Float[Array, "*n"]

    def __init__(self, value: ArrayLike):
        self.value = jnp.asarray(value)

    def __call__(self, key, shape, dtype):
        return jnp.broadcast_to(self.value, shape).astype(dtype)


class Uniform(AbstractInitializer):
    """Uniform on ``[low, high)``."""

    low: Float[Array, "*n"]
    high: Float[Array, "*n"]

    def __init__(self, low: ArrayLike, high: ArrayLike):
        self.low = jnp.asarray(low)
        self.high = jnp.asarray(high)

    def __call__(self, key, shape, dtype):
        return jax.random.uniform(key, shape, dtype, self.low, self.high)


class Normal(AbstractInitializer):
    """Normal with ``mean`` and standard deviation ``std``."""

    mean: Float[Array, "*n"]
    std: Float[Array, "*n"]

    def __init__(self, mean: ArrayLike, std: ArrayLike):
        self.mean = jnp.asarray(mean)
        self.std = jnp.asarray(std)

    def __call__(self, key, shape, dtype):
        return (self.mean + self.std * jax.random.normal(key, shape, dtype)).astype(dtype)
