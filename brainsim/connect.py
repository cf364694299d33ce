"""Connectivity builders: who connects to whom, with which weight and delay.

Builders run on the host with NumPy (vectorised, no Python loop over synapses) and return an
:class:`EdgeList`. A :class:`~brainsim.Projection` turns it into a storage layout
(:class:`~brainsim.Sparse` or :class:`~brainsim.Dense`) when the network is built, which is
also when delays (ms) become whole steps of the network's ``dt``.

Weights and delays may be a scalar (homogeneous), an array with one value per edge, or a
callable ``f(rng, size) -> array`` drawing per-edge values from a NumPy generator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

ValueSpec = float | np.ndarray | Callable[[np.random.Generator, int], np.ndarray]


@dataclasses.dataclass(frozen=True)
class EdgeList:
    """Synapses as parallel arrays; ``weight`` and ``delay`` (ms) are scalars or per edge.

    ``delay=None`` means the shortest possible delay: one simulation step.
    """

    pre: np.ndarray
    post: np.ndarray
    weight: np.ndarray
    delay: np.ndarray | None
    n_pre: int
    n_post: int

    def __post_init__(self):
        pre = np.asarray(self.pre)
        post = np.asarray(self.post)
        if pre.shape != post.shape or pre.ndim != 1:
            raise ValueError(
                f"EdgeList: `pre` and `post` must be 1-D arrays of equal length; got shapes "
                f"{pre.shape} and {post.shape}."
            )
        for name, idx, bound in (("pre", pre, self.n_pre), ("post", post, self.n_post)):
            if idx.size and (idx.min() < 0 or idx.max() >= bound):
                bad = idx[(idx < 0) | (idx >= bound)][0]
                raise ValueError(
                    f"EdgeList: `{name}` index {bad} is out of range for a population of "
                    f"{bound} neurons (valid 0..{bound - 1})."
                )
        for name in ("weight", "delay"):
            value = getattr(self, name)
            if value is None:
                continue
            arr = np.asarray(value)
            if arr.ndim not in (0, 1) or (arr.ndim == 1 and arr.shape[0] != pre.shape[0]):
                raise ValueError(
                    f"EdgeList: `{name}` must be a scalar or have one value per edge "
                    f"({pre.shape[0]}); got shape {arr.shape}."
                )
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"EdgeList: `{name}` contains non-finite values.")
        if self.delay is not None and np.any(np.asarray(self.delay) < 0):
            raise ValueError("EdgeList: `delay` must be >= 0 ms.")
        object.__setattr__(self, "pre", pre.astype(np.int64))
        object.__setattr__(self, "post", post.astype(np.int64))

    @property
    def n_synapses(self) -> int:
        return int(self.pre.shape[0])

    def weights_per_edge(self) -> np.ndarray:
        return np.broadcast_to(np.asarray(self.weight, dtype=float), self.pre.shape)


def _values(spec, rng: np.random.Generator, size: int, name: str):
    if spec is None:
        return None
    if callable(spec):
        out = np.asarray(spec(rng, size), dtype=float)
        if out.shape != (size,):
            raise ValueError(
                f"`{name}` initialiser returned shape {out.shape}; expected ({size},)."
            )
        return out
    arr = np.asarray(spec, dtype=float)
    if arr.ndim == 0:
        return arr
    if arr.shape != (size,):
        raise ValueError(
            f"`{name}` must be a scalar, a callable or an array of length {size} (one per "
            f"edge); got shape {arr.shape}."
        )
    return arr


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _check_size(name, n):
    if not (isinstance(n, int | np.integer) and n > 0):
        raise ValueError(f"`{name}` must be a positive integer; got {n!r}.")


def from_arrays(
    pre,
    post,
    *,
    n_pre: int,
    n_post: int,
    weight: ValueSpec = 1.0,
    delay: ValueSpec | None = None,
    seed=0,
) -> EdgeList:
    """Synapses from explicit index arrays (duplicates allowed: they add up)."""
    _check_size("n_pre", n_pre)
    _check_size("n_post", n_post)
    pre = np.asarray(pre)
    rng = _rng(seed)
    return EdgeList(
        pre,
        np.asarray(post),
        _values(weight, rng, pre.size, "weight"),
        _values(delay, rng, pre.size, "delay"),
        int(n_pre),
        int(n_post),
    )


def all_to_all(
    n_pre: int,
    n_post: int,
    *,
    weight: ValueSpec = 1.0,
    delay: ValueSpec | None = None,
    allow_self: bool = True,
    seed=0,
) -> EdgeList:
    """Every presynaptic neuron to every postsynaptic one (``allow_self=False`` drops i→i)."""
    _check_size("n_pre", n_pre)
    _check_size("n_post", n_post)
    pre, post = np.divmod(np.arange(n_pre * n_post, dtype=np.int64), n_post)
    if not allow_self:
        keep = pre != post
        pre, post = pre[keep], post[keep]
    rng = _rng(seed)
    return EdgeList(
        pre,
        post,
        _values(weight, rng, pre.size, "weight"),
        _values(delay, rng, pre.size, "delay"),
        n_pre,
        n_post,
    )


def one_to_one(
    n: int, *, weight: ValueSpec = 1.0, delay: ValueSpec | None = None, seed=0
) -> EdgeList:
    """Neuron ``i`` to neuron ``i``."""
    _check_size("n", n)
    idx = np.arange(n, dtype=np.int64)
    rng = _rng(seed)
    return EdgeList(
        idx, idx, _values(weight, rng, n, "weight"), _values(delay, rng, n, "delay"), n, n
    )


def _bernoulli_positions(rng: np.random.Generator, total: int, p: float) -> np.ndarray:
    """Sorted positions in ``range(total)`` each kept independently with probability ``p``.

    Geometric skipping: gaps between kept positions are Geometric(p), so the cost is
    proportional to the number of synapses, not to ``total``.
    """
    if p <= 0 or total == 0:
        return np.zeros(0, np.int64)
    if p >= 1:
        return np.arange(total, dtype=np.int64)
    chunks = []
    last = -1
    expected = total * p
    batch = int(expected + 6 * np.sqrt(expected) + 16)
    while True:
        gaps = rng.geometric(p, size=batch).astype(np.int64)
        pos = last + np.cumsum(gaps)
        if pos[-1] >= total:
            chunks.append(pos[pos < total])
            break
        chunks.append(pos)
        last = int(pos[-1])
    return np.concatenate(chunks)


def fixed_probability(
    n_pre: int,
    n_post: int,
    p: float,
    *,
    weight: ValueSpec = 1.0,
    delay: ValueSpec | None = None,
    allow_self: bool = True,
    seed=0,
) -> EdgeList:
    """Each pair connected independently with probability ``p`` (Brian2 ``connect(p=...)``).

    ``allow_self=False`` excludes ``i → i`` (for a projection from a population onto itself).
    ``seed`` is an integer or a ``numpy.random.Generator``.
    """
    _check_size("n_pre", n_pre)
    _check_size("n_post", n_post)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"fixed_probability: `p` must lie in [0, 1]; got {p}.")
    rng = _rng(seed)
    if allow_self:
        pre, post = np.divmod(_bernoulli_positions(rng, n_pre * n_post, p), n_post)
    else:
        if n_pre != n_post:
            raise ValueError(
                "fixed_probability: `allow_self=False` needs n_pre == n_post (a population "
                f"onto itself); got n_pre={n_pre}, n_post={n_post}."
            )
        # Choose among the n-1 other neurons, then skip over i itself.
        pre, post = np.divmod(_bernoulli_positions(rng, n_pre * (n_post - 1), p), n_post - 1)
        post = post + (post >= pre)
    return EdgeList(
        pre,
        post,
        _values(weight, rng, pre.size, "weight"),
        _values(delay, rng, pre.size, "delay"),
        n_pre,
        n_post,
    )
