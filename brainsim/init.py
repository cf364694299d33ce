"""Initial-value distributions for state variables, e.g. ``initial={"v": Uniform(-60, -50)}``.

Each initialiser is called as ``init(key, shape, dtype)`` when a network's state is created.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._errors import as_parameter, is_concrete


class AbstractInitializer(eqx.Module):
    @abc.abstractmethod
    def __call__(self, key, shape, dtype) -> Array:
        """Draw values of ``shape``."""


class Constant(AbstractInitializer):
    value: Float[Array, "*n"]

    def __init__(self, value: ArrayLike):
        self.value = as_parameter(value, "value", owner="init.Constant")

    def __call__(self, key, shape, dtype):
        return jnp.broadcast_to(self.value, shape).astype(dtype)


class Uniform(AbstractInitializer):
    """Uniform on ``[low, high)`` (finite, ``high >= low``)."""

    low: Float[Array, "*n"]
    high: Float[Array, "*n"]

    def __init__(self, low: ArrayLike, high: ArrayLike):
        self.low = as_parameter(low, "low", owner="init.Uniform")
        self.high = as_parameter(high, "high", owner="init.Uniform")
        if is_concrete(self.low) and is_concrete(self.high):
            if np.any(np.asarray(self.high) < np.asarray(self.low)):
                raise ValueError(
                    f"init.Uniform: `high` ({high}) must be >= `low` ({low}). Swap them."
                )

    def __call__(self, key, shape, dtype):
        return jax.random.uniform(key, shape, dtype, self.low, self.high)


class Normal(AbstractInitializer):
    """Normal with ``mean`` and standard deviation ``std`` (>= 0)."""

    mean: Float[Array, "*n"]
    std: Float[Array, "*n"]

    def __init__(self, mean: ArrayLike, std: ArrayLike):
        self.mean = as_parameter(mean, "mean", owner="init.Normal")
        self.std = as_parameter(std, "std", owner="init.Normal", nonnegative=True)

    def __call__(self, key, shape, dtype):
        return (self.mean + self.std * jax.random.normal(key, shape, dtype)).astype(dtype)
