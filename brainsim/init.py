"""Initial-value distributions for state variables, e.g. ``initial={"v": Uniform(-60, -50)}``.

Each initialiser is called as ``init(key, shape, dtype)`` when a network's state is created.
"""

from __future__ import annotations

import abc
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._errors import as_parameter, is_concrete


class AbstractInitializer(eqx.Module):
    """An initial-value distribution: ``init(key, shape, dtype)`` draws an array of
    ``shape``.

    ``prefix_stable`` (a class attribute, default ``False``): a subclass sets it when its
    draw of ``shape`` is the first rows of its draw of any longer ``shape`` with the same key
    (element-wise maps of ``jax.random`` draws, whose values depend on the element's index and
    not on the shape). A network then draws the populations that share such a distribution
    in one batched call (one program to compile instead of one per population), with the
    values of separate calls, bit for bit.
    """

    prefix_stable = False

    @abc.abstractmethod
    def __call__(self, key, shape, dtype) -> Array:
        """Draw values of ``shape``."""


class Constant(AbstractInitializer):
    value: Float[Array, "*n"]
    prefix_stable = True

    def __init__(self, value: ArrayLike):
        self.value = as_parameter(value, "value", owner="init.Constant")

    def __call__(self, key, shape, dtype):
        return jnp.broadcast_to(self.value, shape).astype(dtype)


class Uniform(AbstractInitializer):
    """Uniform on ``[low, high)`` (finite, ``high >= low``)."""

    low: Float[Array, "*n"]
    high: Float[Array, "*n"]
    prefix_stable = True

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
    prefix_stable = True

    def __init__(self, mean: ArrayLike, std: ArrayLike):
        self.mean = as_parameter(mean, "mean", owner="init.Normal")
        self.std = as_parameter(std, "std", owner="init.Normal", nonnegative=True)

    def __call__(self, key, shape, dtype):
        return (self.mean + self.std * jax.random.normal(key, shape, dtype)).astype(dtype)


class InitialDraw(NamedTuple):
    """One ``initial`` distribution of a network to draw: ``dist(key, shape, dtype)``."""

    population: str
    variable: str
    dist: AbstractInitializer
    key: Array
    shape: tuple[int, ...]
    dtype: object


def initial_values(draws: list[InitialDraw]) -> list[Array]:
    """``[d.dist(d.key, d.shape, d.dtype) for d in draws]``, with the draws that share a
    prefix-stable distribution type (:attr:`AbstractInitializer.prefix_stable`), structure and
    dtype made in one ``vmap``-ed call over the longest shape, each then cut to its own rows:
    one program for XLA to compile instead of one per population (Potjans–Diesmann's eight
    normal draws of ``v`` took 0.9 s of compilation), the same values bit for bit."""
    values: list = [None] * len(draws)
    batches: dict = {}
    for i, d in enumerate(draws):
        batches.setdefault(_batch_key(d), []).append(i)
    for key, members in batches.items():
        if key is None or len(members) == 1:
            for i in members:
                d = draws[i]
                values[i] = d.dist(d.key, d.shape, d.dtype)
            continue
        for i, value in zip(members, _batched([draws[i] for i in members]), strict=True):
            values[i] = value
    return values


def _batch_key(d: InitialDraw):
    """What draws must share to be drawn together, or ``None`` when this one cannot be."""
    if not type(d.dist).prefix_stable or len(d.shape) == 0:
        return ("alone", id(d))
    leaves, treedef = jax.tree.flatten(d.dist)
    for leaf in leaves:
        shape = np.shape(leaf)
        # A parameter per row (padded with its last row), or one broadcast along the rows.
        if len(shape) > len(d.shape) or (len(shape) == len(d.shape) and shape[0] not in (1, d.shape[0])):
            return ("alone", id(d))
    return (type(d.dist), treedef, np.dtype(d.dtype), tuple(d.shape[1:]))


def _batched(draws: list[InitialDraw]) -> list[Array]:
    rows = max(d.shape[0] for d in draws)
    rest = tuple(draws[0].shape[1:])
    ndim = 1 + len(rest)

    def padded(leaf, n):
        leaf = jnp.asarray(leaf)
        if leaf.ndim == ndim and leaf.shape[0] == n and n != rows:
            return jnp.concatenate([leaf, jnp.repeat(leaf[-1:], rows - n, axis=0)])
        return leaf

    dists = [jax.tree.map(lambda x, n=d.shape[0]: padded(x, n), d.dist) for d in draws]
    columns = list(zip(*(jax.tree.leaves(x) for x in dists), strict=True))
    shapes = [jnp.broadcast_shapes(*(jnp.shape(x) for x in c)) for c in columns]
    stacked = jax.tree.unflatten(
        jax.tree.structure(dists[0]),
        [jnp.stack([jnp.broadcast_to(x, s) for x in c]) for c, s in zip(columns, shapes, strict=True)],
    )
    keys = jnp.stack([d.key for d in draws])
    dtype = draws[0].dtype
    out = jax.vmap(lambda k, dist: dist(k, (rows, *rest), dtype))(keys, stacked)
    return [out[b, : d.shape[0]] for b, d in enumerate(draws)]
