r"""Connectivity builders: who connects to whom, with which weight and delay.

Builders run on the host with NumPy (vectorised, in blocks, with no Python loop over synapses or
neurons) and return an :class:`EdgeList` (int32 indices whenever the populations have fewer than
:math:`2^{31}` neurons). A :class:`~brainsim.Projection` turns it into a storage layout
(:class:`~brainsim.Sparse`, :class:`~brainsim.CSR` or :class:`~brainsim.Dense`) when the network
is built, which is also when delays (ms) become whole steps of the network's ``dt``.

Weights and delays may be a scalar (homogeneous), an array with one value per edge, or a
callable ``f(rng, size) -> array`` drawing per-edge values from a NumPy generator, such as the
initialisers here: :class:`Constant`, :class:`Uniform`, :class:`Normal`, :class:`LogNormal`,
:class:`Clipped`::

    edges = connect.fixed_indegree(
        4000, 4000, 80, allow_self=False,
        weight=connect.LogNormal(0.5, 0.25),
        delay=connect.Clipped(connect.Normal(1.5, 0.75), low=0.1),
        seed=1,
    )

Builders: :func:`all_to_all`, :func:`one_to_one`, :func:`from_arrays`,
:func:`fixed_probability` (each pair independently), :func:`fixed_indegree` and
:func:`fixed_outdegree` (exactly ``k`` partners per neuron), :func:`fixed_total_number`
(exactly ``n_synapses`` synapses), :func:`distance_dependent` (probability a function of the
distance between positions, e.g. on :func:`grid_positions` or :func:`ring_positions`).

**Multapses** (several synapses between one pair): never created by the random builders unless
``allow_multapses=True`` (then the partners are drawn with replacement, like NEST's default);
:func:`from_arrays` keeps the duplicates it is given. Duplicates add up in every layout.
**Autapses** (``i → i`` in a projection of a population onto itself) are excluded by
``allow_self=False``.

Procedural connectivity (:func:`procedural_fixed_outdegree`, :func:`procedural_fixed_probability`)
stores no synapses at all: it returns a :class:`ProceduralEdges` rule whose synapses the
:class:`~brainsim.Procedural` layout regenerates every step from ``(seed, neuron, index)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from . import kernels
from ._errors import (
    check_positive_int,
    check_that,
    first_bad,
    integer_array,
    real_array,
    shown,
)

ValueSpec = float | np.ndarray | Callable[[np.random.Generator, int], np.ndarray]

_INT32_MAX = int(np.iinfo(np.int32).max)
# Elements per vectorised block: bounds the builders' temporaries (tens of MB) independently of
# the size of the result.
_BLOCK = 2**20


def _index_dtype(*sizes: int):
    return np.int32 if max(sizes) <= _INT32_MAX else np.int64


@dataclasses.dataclass(frozen=True)
class EdgeList:
    """Synapses as parallel arrays; ``weight`` and ``delay`` (ms) are scalars or per edge.

    ``pre``/``post`` are stored as int32 when both populations have fewer than 2**31 neurons
    (int64 otherwise). ``delay=None`` means the shortest possible delay: one simulation step.
    """

    pre: np.ndarray
    post: np.ndarray
    weight: np.ndarray
    delay: np.ndarray | None
    n_pre: int
    n_post: int

    def __post_init__(self):
        owner = "EdgeList"
        _check_sizes(owner, self.n_pre, self.n_post)
        pre = integer_array("pre", self.pre, owner=owner)
        post = integer_array("post", self.post, owner=owner)
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
            if value is None and name == "delay":
                continue
            arr = real_array(name, value, owner=owner)
            if arr.ndim not in (0, 1) or (arr.ndim == 1 and arr.shape[0] != pre.shape[0]):
                raise ValueError(
                    f"EdgeList: `{name}` must be a scalar or have one value per edge "
                    f"({pre.shape[0]}); got shape {arr.shape}."
                )
            finite = np.isfinite(arr)
            if not np.all(finite):
                raise ValueError(
                    f"EdgeList: `{name}` contains non-finite values; got "
                    f"{first_bad(arr, finite)}. Pass finite values."
                )
        if self.delay is not None:
            check_that("delay", self.delay, lambda d: d >= 0, "be >= 0", owner=owner, unit="ms",
                       fix="Delays are transmission times: pass values >= 0.")  # fmt: skip
        dtype = _index_dtype(self.n_pre, self.n_post)
        object.__setattr__(self, "pre", pre.astype(dtype, copy=False))
        object.__setattr__(self, "post", post.astype(dtype, copy=False))

    @property
    def n_synapses(self) -> int:
        return int(self.pre.shape[0])

    def weights_per_edge(self) -> np.ndarray:
        return np.broadcast_to(np.asarray(self.weight, dtype=float), self.pre.shape)


# -------------------------------------------------------------------------- initialisers


def _check_number(owner, name, value, *, low=-math.inf, low_open=False, allow_inf=False):
    """A scalar argument: a real number (not a boolean), finite unless ``allow_inf``, and
    ``>= low`` (``> low`` with ``low_open``)."""
    if np.ndim(real_array(name, value, owner=owner)) != 0:
        raise TypeError(
            f"{owner}: `{name}` must be a single number; got an array of shape "
            f"{np.shape(value)}. Pass one float (per-edge values go to `weight`/`delay`)."
        )
    bound = f"> {low:g}" if low_open else f">= {low:g}"
    check_that(name, value, (lambda a: a > low) if low_open else (lambda a: a >= low),
               f"be {bound}", owner=owner, fix=f"Pass a value {bound}.",
               allow_inf=allow_inf)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Constant:
    """The same ``value`` for every synapse (stored once, not per synapse)."""

    value: float

    def __post_init__(self):
        _check_number("Constant", "value", self.value)

    def __call__(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return np.full(size, float(self.value))


@dataclasses.dataclass(frozen=True)
class Uniform:
    """Uniform on ``[low, high)``."""

    low: float
    high: float

    def __post_init__(self):
        _check_number("Uniform", "low", self.low)
        _check_number("Uniform", "high", self.high)
        if self.high < self.low:
            raise ValueError(f"Uniform: `high` ({self.high}) must be >= `low` ({self.low}).")

    def __call__(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, size)


@dataclasses.dataclass(frozen=True)
class Normal:
    """Normal with mean ``mean`` and standard deviation ``std`` (wrap in :class:`Clipped` to
    bound it, e.g. to keep delays positive or weights of one sign)."""

    mean: float
    std: float

    def __post_init__(self):
        _check_number("Normal", "mean", self.mean)
        _check_number("Normal", "std", self.std, low=0.0)

    def __call__(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.normal(self.mean, self.std, size)


@dataclasses.dataclass(frozen=True)
class LogNormal:
    r"""Log-normal weights with the given ``mean`` and ``std`` *of the weights themselves*.

    The underlying normal has :math:`\sigma^2 = \ln(1 + s^2/m^2)` and
    :math:`\mu = \ln m - \sigma^2/2`, so ``E[w] = mean`` and ``SD[w] = std`` (NumPy's
    ``lognormal(mu, sigma)`` takes the parameters of the logarithm instead).
    """

    mean: float
    std: float

    def __post_init__(self):
        _check_number("LogNormal", "mean", self.mean, low=0.0, low_open=True)
        _check_number("LogNormal", "std", self.std, low=0.0)

    @property
    def log_params(self) -> tuple[float, float]:
        """``(mu, sigma)`` of the logarithm of the weights."""
        var = math.log1p((self.std / self.mean) ** 2)
        return math.log(self.mean) - var / 2, math.sqrt(var)

    def __call__(self, rng: np.random.Generator, size: int) -> np.ndarray:
        mu, sigma = self.log_params
        return rng.lognormal(mu, sigma, size)


@dataclasses.dataclass(frozen=True)
class Clipped:
    """Values of ``initialiser`` bounded to ``[low, high]``.

    ``redraw=False`` (default) clips: out-of-range values become the bound (probability mass
    piles up there; NEST's ``*_clipped_to_boundary``). ``redraw=True`` redraws them until they
    fall inside (a truncated distribution; NEST's ``*_clipped``); it raises if fewer than one
    draw in 10^4 is accepted.
    """

    initialiser: Callable[[np.random.Generator, int], np.ndarray]
    low: float = -math.inf
    high: float = math.inf
    redraw: bool = False

    def __post_init__(self):
        if not callable(self.initialiser):
            raise TypeError(
                "Clipped: `initialiser` must be callable (rng, size) -> array, e.g. "
                f"connect.Normal(1.0, 0.5); got {type(self.initialiser).__name__}."
            )
        for name in ("low", "high"):  # infinite: unbounded on that side
            _check_number("Clipped", name, getattr(self, name), allow_inf=True)
        if self.low == math.inf or self.high == -math.inf:
            raise ValueError(
                f"Clipped: `low` = {self.low}, `high` = {self.high} clip every value to "
                "infinity; pass finite bounds (-inf for `low` or inf for `high`: unbounded)."
            )
        if self.high < self.low:
            raise ValueError(f"Clipped: `high` ({self.high}) must be >= `low` ({self.low}).")

    def __call__(self, rng: np.random.Generator, size: int) -> np.ndarray:
        values = np.asarray(self.initialiser(rng, size), dtype=float)
        if not self.redraw:
            return np.clip(values, self.low, self.high)
        bad = np.flatnonzero((values < self.low) | (values > self.high))
        drawn = 0
        while bad.size:
            drawn += bad.size
            if drawn > 10_000 * max(size, 1):
                raise ValueError(
                    f"Clipped: fewer than 1 in 10^4 draws of {self.initialiser!r} fall in "
                    f"[{self.low}, {self.high}]; widen the bounds or use redraw=False."
                )
            new = np.asarray(self.initialiser(rng, bad.size), dtype=float)
            values[bad] = new
            bad = bad[(new < self.low) | (new > self.high)]
        return values


def _values(owner, spec, rng: np.random.Generator, size: int, name: str):
    if spec is None and name == "delay":
        return None
    if isinstance(spec, Constant):
        return np.asarray(float(spec.value))
    if callable(spec):
        out = np.asarray(spec(rng, size), dtype=float)
        if out.shape != (size,):
            raise ValueError(
                f"{owner}: `{name}` initialiser returned shape {out.shape}; expected ({size},)."
            )
        return out
    arr = real_array(name, spec, owner=owner).astype(float)
    if arr.ndim == 0:
        return arr
    if arr.shape != (size,):
        raise ValueError(
            f"{owner}: `{name}` must be a scalar, a callable or an array of length {size} (one "
            f"per edge); got shape {arr.shape}."
        )
    return arr


def _rng(owner, seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    try:
        if seed is not None and np.asarray(seed).dtype.kind == "b":
            raise TypeError("a boolean is not a seed")
        return np.random.default_rng(seed)
    except (TypeError, ValueError):
        raise TypeError(
            f"{owner}: `seed` must be an integer >= 0 (or a sequence of them), a "
            f"numpy.random.Generator or None (fresh entropy); got {shown(seed)}."
        ) from None


def _check_sizes(owner, n_pre, n_post):
    check_positive_int("n_pre", n_pre, owner=owner)
    check_positive_int("n_post", n_post, owner=owner)


def _check_count(owner, name, n):
    if isinstance(n, bool) or not (isinstance(n, int | np.integer) and n >= 0):
        raise ValueError(f"{owner}: `{name}` must be a non-negative integer; got {n!r}.")


def _check_self(owner, allow_self, n_pre, n_post):
    if not allow_self and n_pre != n_post:
        raise ValueError(
            f"{owner}: `allow_self=False` needs n_pre == n_post (a population onto itself); "
            f"got n_pre={n_pre}, n_post={n_post}."
        )


def _edges(owner, pre, post, weight, delay, rng, n_pre, n_post) -> EdgeList:
    return EdgeList(
        pre,
        post,
        _values(owner, weight, rng, pre.size, "weight"),
        _values(owner, delay, rng, pre.size, "delay"),
        int(n_pre),
        int(n_post),
    )


# ----------------------------------------------------------------------- simple builders


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
    """Synapses from explicit integer index arrays (duplicates allowed: they add up)."""
    owner = "from_arrays"
    _check_sizes(owner, n_pre, n_post)
    pre = integer_array("pre", pre, owner=owner)
    post = integer_array("post", post, owner=owner)
    return _edges(owner, pre, post, weight, delay, _rng(owner, seed), n_pre, n_post)


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
    _check_sizes("all_to_all", n_pre, n_post)
    pre, post = np.divmod(np.arange(n_pre * n_post, dtype=np.int64), n_post)
    if not allow_self:
        keep = pre != post
        pre, post = pre[keep], post[keep]
    return _edges("all_to_all", pre, post, weight, delay, _rng("all_to_all", seed), n_pre, n_post)


def one_to_one(
    n: int, *, weight: ValueSpec = 1.0, delay: ValueSpec | None = None, seed=0
) -> EdgeList:
    """Neuron ``i`` to neuron ``i``."""
    check_positive_int("n", n, owner="one_to_one")
    idx = np.arange(n, dtype=_index_dtype(n))
    return _edges("one_to_one", idx, idx, weight, delay, _rng("one_to_one", seed), n, n)


# ---------------------------------------------------------------- Bernoulli (p per pair)


class _Growing:
    """Preallocated int32/int64 pair buffers filled block by block, grown only if needed."""

    def __init__(self, capacity: int, dtype):
        self.pre = np.empty(capacity, dtype)
        self.post = np.empty(capacity, dtype)
        self.size = 0

    def add(self, pre, post):
        end = self.size + pre.size
        if end > self.pre.size:
            capacity = max(end, int(self.pre.size * 1.25) + 1)
            self.pre = np.resize(self.pre, capacity)
            self.post = np.resize(self.post, capacity)
        self.pre[self.size : end] = pre
        self.post[self.size : end] = post
        self.size = end

    def result(self):
        # Shrink in place (no second copy of a result that may be gigabytes).
        for name in ("pre", "post"):
            arr = getattr(self, name)
            if arr.size != self.size:
                if arr.flags.owndata:
                    arr.resize(self.size, refcheck=False)
                else:
                    setattr(self, name, arr[: self.size].copy())
        return self.pre, self.post


def _split_pairs(pos, n_cols, skip_diagonal, dtype):
    """Flat positions in an ``n_rows × n_cols`` table to ``(row, col)``; ``skip_diagonal``
    maps column ``c >= row`` to ``c + 1`` (the table then omits ``i → i``)."""
    row = pos // n_cols
    col = pos - row * n_cols
    if skip_diagonal:
        col += col >= row
    return row.astype(dtype), col.astype(dtype)


def _bernoulli_pairs(rng, n_rows, n_cols, p, skip_diagonal, dtype):
    """Pairs of an ``n_rows × n_cols`` table each kept independently with probability ``p``,
    in row-major order.

    Geometric skipping: gaps between kept positions are Geometric(p), so the cost is
    proportional to the number of synapses, not of pairs. Gaps are drawn in batches of the
    expected count plus six standard deviations, consumed in blocks of ``_BLOCK``; a batch is
    always drawn to its end so the generator's state afterwards (which draws weights and
    delays) does not depend on the block size.
    """
    total = n_rows * n_cols
    if p <= 0 or total == 0:
        return np.zeros(0, dtype), np.zeros(0, dtype)
    if p >= 1:
        out = _Growing(total, dtype)
        for start in range(0, total, _BLOCK):
            pos = np.arange(start, min(start + _BLOCK, total), dtype=np.int64)
            out.add(*_split_pairs(pos, n_cols, skip_diagonal, dtype))
        return out.result()
    expected = total * p
    batch = int(expected + 6 * np.sqrt(expected) + 16)
    out = _Growing(batch, dtype)
    last, done = -1, False
    while not done:
        for start in range(0, batch, _BLOCK):
            gaps = rng.geometric(p, size=min(_BLOCK, batch - start))
            if done:
                continue
            pos = last + np.cumsum(gaps)
            if pos[-1] >= total:
                pos = pos[pos < total]
                done = True
            if pos.size:
                last = int(pos[-1])
                out.add(*_split_pairs(pos, n_cols, skip_diagonal, dtype))
    return out.result()


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
    ``seed`` is an integer or a ``numpy.random.Generator``. Cost: proportional to the number of
    synapses (geometric skipping over pairs), memory: the result plus blocks of 2^20 values.
    """
    owner = "fixed_probability"
    _check_sizes(owner, n_pre, n_post)
    _check_probability(owner, "p", p)
    _check_self(owner, allow_self, n_pre, n_post)
    rng = _rng(owner, seed)
    n_cols = n_post if allow_self else n_post - 1
    pre, post = _bernoulli_pairs(
        rng, n_pre, n_cols, p, not allow_self, _index_dtype(n_pre, n_post)
    )
    return _edges(owner, pre, post, weight, delay, rng, n_pre, n_post)


# ------------------------------------------------------------- exact degrees and totals


def _distinct_rows(rng, n_rows, n_range, k, dtype):
    """``(n_rows, k)`` draws from ``range(n_range)``, distinct within each row, sorted.

    Each row is drawn with replacement, then the later copy of every duplicate is redrawn
    (rows without duplicates are left alone) until none remains. The procedure treats all
    values alike, so its result is invariant under relabelling the values, and a distribution
    of k-subsets with that symmetry is uniform: every k-subset is equally likely, as in
    sampling without replacement. Needs ``2k <= n_range`` (otherwise see the caller).
    """
    d = rng.integers(0, n_range, size=(n_rows, k), dtype=dtype)
    d.sort(axis=1)
    rows = np.arange(n_rows)
    while rows.size and k > 1:
        sub = d[rows]
        dup = np.zeros(sub.shape, bool)
        np.equal(sub[:, 1:], sub[:, :-1], out=dup[:, 1:])
        has = dup.any(axis=1)
        rows, sub, dup = rows[has], sub[has], dup[has]
        if not rows.size:
            break
        sub[dup] = rng.integers(0, n_range, size=int(dup.sum()), dtype=dtype)
        sub.sort(axis=1)
        d[rows] = sub
    return d


def _sample_partners(rng, n_rows, n_range, k, skip_self, multapses, dtype):
    """``(n_rows * k,)`` partner indices, ``k`` per row in row order, vectorised in blocks.

    Without multapses the ``k`` partners of a row are a uniformly random k-subset of
    ``range(n_range)``: drawn directly when ``2k <= n_range``, else as the complement of a
    uniformly random ``(n_range - k)``-subset (the duplicate redraws would become slow).
    ``skip_self`` maps partner ``c >= row`` to ``c + 1`` (``n_range`` then omits the row).
    """
    out = np.empty(n_rows * k, dtype)
    if k == 0:
        return out
    complement = not multapses and 2 * k > n_range
    per_row = n_range if complement else k
    block_rows = max(1, _BLOCK // per_row)
    for r0 in range(0, n_rows, block_rows):
        r1 = min(r0 + block_rows, n_rows)
        b = r1 - r0
        if multapses:
            d = rng.integers(0, n_range, size=(b, k), dtype=dtype)
        elif not complement:
            d = _distinct_rows(rng, b, n_range, k, dtype)
        else:
            keep = np.ones((b, n_range), bool)
            if n_range > k:
                drop = _distinct_rows(rng, b, n_range, n_range - k, dtype)
                keep[np.arange(b)[:, None], drop] = False
            d = np.nonzero(keep)[1].astype(dtype).reshape(b, k)
        if skip_self:
            d += d >= np.arange(r0, r1, dtype=dtype)[:, None]
        out[r0 * k : r1 * k] = d.ravel()
    return out


def _degree_args(owner, n_pre, n_post, k, allow_self, allow_multapses):
    _check_sizes(owner, n_pre, n_post)
    _check_count(owner, "k", k)
    _check_self(owner, allow_self, n_pre, n_post)
    n_range = (n_pre if owner == "fixed_indegree" else n_post) - (0 if allow_self else 1)
    if not allow_multapses and k > n_range:
        raise ValueError(
            f"{owner}: `k` = {k} distinct partners exceed the {n_range} possible ones; use a "
            "smaller k or allow_multapses=True."
        )
    if k > 0 and n_range < 1:
        raise ValueError(f"{owner}: `k` = {k} but there is no possible partner.")
    return n_range


def _fixed_degree(owner, n_pre, n_post, k, weight, delay, allow_self, allow_multapses, seed):
    """``k`` partners for every neuron on one side: the postsynaptic side for
    ``fixed_indegree`` (partners are presynaptic), the presynaptic one for
    ``fixed_outdegree``; edges grouped by the neuron that owns the degree."""
    n_range = _degree_args(owner, n_pre, n_post, k, allow_self, allow_multapses)
    rng = _rng(owner, seed)
    dtype = _index_dtype(n_pre, n_post)
    n_owners = n_post if owner == "fixed_indegree" else n_pre
    partners = _sample_partners(rng, n_owners, n_range, k, not allow_self, allow_multapses, dtype)
    owners = np.repeat(np.arange(n_owners, dtype=dtype), k)
    pre, post = (partners, owners) if owner == "fixed_indegree" else (owners, partners)
    return _edges(owner, pre, post, weight, delay, rng, n_pre, n_post)


def fixed_indegree(
    n_pre: int,
    n_post: int,
    k: int,
    *,
    weight: ValueSpec = 1.0,
    delay: ValueSpec | None = None,
    allow_self: bool = True,
    allow_multapses: bool = False,
    seed=0,
) -> EdgeList:
    """Every postsynaptic neuron receives exactly ``k`` synapses (NEST ``fixed_indegree``).

    Without multapses (default) the ``k`` presynaptic partners of each neuron are distinct and
    a uniformly random k-subset (sampling without replacement per neuron; needs
    ``k <= n_pre``, or ``n_pre - 1`` with ``allow_self=False``). ``allow_multapses=True``
    draws them independently with replacement. Edges come grouped by postsynaptic neuron.
    """
    return _fixed_degree("fixed_indegree", n_pre, n_post, k, weight, delay, allow_self,
                         allow_multapses, seed)  # fmt: skip


def fixed_outdegree(
    n_pre: int,
    n_post: int,
    k: int,
    *,
    weight: ValueSpec = 1.0,
    delay: ValueSpec | None = None,
    allow_self: bool = True,
    allow_multapses: bool = False,
    seed=0,
) -> EdgeList:
    """Every presynaptic neuron makes exactly ``k`` synapses (NEST ``fixed_outdegree``).

    Multapses and ``allow_self`` as in :func:`fixed_indegree`, with the roles of the
    populations swapped. Edges come sorted by presynaptic neuron (as CSR stores them).
    """
    return _fixed_degree("fixed_outdegree", n_pre, n_post, k, weight, delay, allow_self,
                         allow_multapses, seed)  # fmt: skip


def fixed_total_number(
    n_pre: int,
    n_post: int,
    n_synapses: int,
    *,
    weight: ValueSpec = 1.0,
    delay: ValueSpec | None = None,
    allow_self: bool = True,
    allow_multapses: bool = False,
    seed=0,
) -> EdgeList:
    """Exactly ``n_synapses`` synapses, uniformly over the pairs (NEST ``fixed_total_number``).

    Without multapses (default) the synapses are a uniformly random subset of the ``n_pre ×
    n_post`` pairs (minus ``i → i`` with ``allow_self=False``): pairs are first kept
    independently with a probability a few standard deviations above ``n_synapses / pairs``
    (geometric skipping, cost proportional to the synapses), then a uniformly random subset
    of the surplus is dropped; given its size a Bernoulli set is a uniform subset, and so is
    a uniform subset of it. With ``allow_multapses=True`` each synapse picks its pair
    independently. Edges come in row-major (presynaptic) order without multapses.
    """
    owner = "fixed_total_number"
    _check_sizes(owner, n_pre, n_post)
    _check_count(owner, "n_synapses", n_synapses)
    _check_self(owner, allow_self, n_pre, n_post)
    n_cols = n_post if allow_self else n_post - 1
    n_pairs = n_pre * n_cols
    if not allow_multapses and n_synapses > n_pairs:
        raise ValueError(
            f"{owner}: `n_synapses` = {n_synapses} exceeds the {n_pairs} distinct pairs; use "
            "fewer synapses or allow_multapses=True."
        )
    if n_synapses > 0 and n_pairs == 0:
        raise ValueError(f"{owner}: `n_synapses` = {n_synapses} but there is no possible pair.")
    rng = _rng(owner, seed)
    dtype = _index_dtype(n_pre, n_post)
    if allow_multapses:
        out = _Growing(n_synapses, dtype)
        for start in range(0, n_synapses, _BLOCK):
            size = min(_BLOCK, n_synapses - start)
            pos = rng.integers(0, n_pairs, size=size, dtype=np.int64)
            out.add(*_split_pairs(pos, n_cols, not allow_self, dtype))
        pre, post = out.result()
    else:
        p = min(1.0, (n_synapses + 6 * math.sqrt(n_synapses) + 16) / n_pairs)
        while True:
            pre, post = _bernoulli_pairs(rng, n_pre, n_cols, p, not allow_self, dtype)
            if pre.size >= n_synapses:
                break
        surplus = pre.size - n_synapses
        if surplus:
            keep = np.ones(pre.size, bool)
            keep[rng.choice(pre.size, size=surplus, replace=False)] = False
            _compact_in_place((pre, post), keep)
    return _edges(owner, pre, post, weight, delay, rng, n_pre, n_post)


def _compact_in_place(arrays, keep):
    """``a = a[keep]`` for each array, block by block in place (no second full-size copy)."""
    written = 0
    for start in range(0, keep.size, _BLOCK):
        k = keep[start : start + _BLOCK]
        n = int(np.count_nonzero(k))
        for a in arrays:
            a[written : written + n] = a[start : start + _BLOCK][k]
        written += n
    for a in arrays:
        a.resize(written, refcheck=False)


# ------------------------------------------------------------------- distance-dependent


@dataclasses.dataclass(frozen=True)
class Gaussian:
    r"""Connection probability :math:`p(d) = p_0 \exp(-d^2 / 2\sigma^2)`."""

    p0: float
    sigma: float

    def __post_init__(self):
        _check_probability("Gaussian", "p0", self.p0)
        _check_number("Gaussian", "sigma", self.sigma, low=0.0, low_open=True)

    def __call__(self, d: np.ndarray) -> np.ndarray:
        return self.p0 * np.exp(-(d * d) / (2.0 * self.sigma**2))


@dataclasses.dataclass(frozen=True)
class Exponential:
    r"""Connection probability :math:`p(d) = p_0 \exp(-d / \lambda)` (``length`` = λ)."""

    p0: float
    length: float

    def __post_init__(self):
        _check_probability("Exponential", "p0", self.p0)
        _check_number("Exponential", "length", self.length, low=0.0, low_open=True)

    def __call__(self, d: np.ndarray) -> np.ndarray:
        return self.p0 * np.exp(-d / self.length)


def _check_probability(owner, name, p):
    _check_number(owner, name, p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(
            f"{owner}: `{name}` must lie in [0, 1]; got {p!r}. Pass a probability, e.g. 0.1."
        )


def grid_positions(rows: int, cols: int, spacing: float = 1.0) -> np.ndarray:
    """``(rows * cols, 2)`` positions ``(x, y) = (c, r) * spacing`` of neuron ``r * cols + c``.

    With periodic boundaries the matching ``box`` is ``(cols * spacing, rows * spacing)``.
    """
    check_positive_int("rows", rows, owner="grid_positions")
    check_positive_int("cols", cols, owner="grid_positions")
    _check_number("grid_positions", "spacing", spacing, low=0.0, low_open=True)
    r, c = np.divmod(np.arange(rows * cols), cols)
    return np.stack([c * float(spacing), r * float(spacing)], axis=1)


def ring_positions(n: int, circumference: float | None = None) -> np.ndarray:
    """``(n, 1)`` positions of ``n`` neurons evenly spaced on a ring (default spacing 1).

    Use ``box=circumference`` for distances along the ring.
    """
    check_positive_int("n", n, owner="ring_positions")
    length = n if circumference is None else circumference
    _check_number("ring_positions", "circumference", length, low=0.0, low_open=True)
    length = float(length)
    return (np.arange(n) * (length / n))[:, None]


def _positions(name, value):
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(
            f"distance_dependent: `{name}` must be a non-empty array of finite positions, "
            f"shape (n,) or (n, dims); got shape {np.shape(value)}."
        )
    return arr


def distance_dependent(
    pre_positions,
    post_positions,
    profile: Callable[[np.ndarray], np.ndarray],
    *,
    box=None,
    weight: ValueSpec = 1.0,
    delay: ValueSpec | None = None,
    allow_self: bool = True,
    seed=0,
) -> EdgeList:
    """Each pair ``(i, j)`` connected independently with probability ``profile(d_ij)``.

    Arguments:
        pre_positions, post_positions: ``(n, dims)`` (or ``(n,)``) coordinates, e.g. from
            :func:`grid_positions` or :func:`ring_positions`.
        profile: :class:`Gaussian` ``(p0, sigma)``, :class:`Exponential` ``(p0, length)``, or
            any vectorised ``d -> p`` with values in [0, 1].
        box: ``None`` (open boundaries) or the period per dimension (a number for all, or one
            per dimension): distances are then the shortest across the periodic boundary
            (a torus for a grid, the distance along the ring for a ring).
        allow_self: ``False`` excludes ``i → i`` (needs equally many pre and post neurons).

    Cost: one uniform draw per pair, in blocks of about 2^20 pairs (memory: a block plus the
    result); ``n_pre × n_post = 10^8`` pairs take a few seconds.
    """
    owner = "distance_dependent"
    pre_pos = _positions("pre_positions", pre_positions)
    post_pos = _positions("post_positions", post_positions)
    if pre_pos.shape[1] != post_pos.shape[1]:
        raise ValueError(
            f"{owner}: `pre_positions` have {pre_pos.shape[1]} dimensions but "
            f"`post_positions` have {post_pos.shape[1]}."
        )
    if not callable(profile):
        raise TypeError(
            f"{owner}: `profile` must be callable d -> p, e.g. connect.Gaussian(p0=0.5, "
            f"sigma=2.0); got {type(profile).__name__}."
        )
    n_pre, n_post = pre_pos.shape[0], post_pos.shape[0]
    _check_self(owner, allow_self, n_pre, n_post)
    period = None
    if box is not None:
        period = np.broadcast_to(np.asarray(box, dtype=float), (pre_pos.shape[1],)).copy()
        if not np.all(np.isfinite(period) & (period > 0)):
            raise ValueError(f"{owner}: `box` must hold positive periods; got {box!r}.")
    rng = _rng(owner, seed)
    dtype = _index_dtype(n_pre, n_post)
    block_rows = max(1, _BLOCK // n_post)
    pres, posts = [], []
    cols = np.arange(n_post, dtype=dtype)
    for r0 in range(0, n_pre, block_rows):
        r1 = min(r0 + block_rows, n_pre)
        sq = np.zeros((r1 - r0, n_post))
        for dim in range(pre_pos.shape[1]):
            dx = np.abs(pre_pos[r0:r1, dim, None] - post_pos[None, :, dim])
            if period is not None:
                dx = np.remainder(dx, period[dim])
                dx = np.minimum(dx, period[dim] - dx)
            sq += dx * dx
        p = np.asarray(profile(np.sqrt(sq)), dtype=float)
        if p.shape != sq.shape or not np.all((p >= 0) & (p <= 1)):
            raise ValueError(f"{owner}: `profile` must return probabilities in [0, 1].")
        keep = rng.random(sq.shape) < p
        if not allow_self:
            keep[np.arange(r1 - r0), np.arange(r0, r1)] = False
        rows, c = np.nonzero(keep)
        pres.append((rows + r0).astype(dtype))
        posts.append(cols[c])
    pre, post = np.concatenate(pres), np.concatenate(posts)
    return _edges(owner, pre, post, weight, delay, rng, n_pre, n_post)


# ---------------------------------------------------------------------------- procedural


@dataclasses.dataclass(frozen=True, eq=False)
class ProceduralEdges:
    r"""A connectivity *rule* whose synapses are regenerated on demand, never stored.

    The targets (and random weights) of presynaptic neuron ``i`` are a pure function of
    ``(seed, i, j)`` for ``j < count_i`` (see :class:`brainsim.kernels.ProceduralRule`): the same on
    every device count, chunk size and kernel. Build one with
    :func:`procedural_fixed_outdegree` or :func:`procedural_fixed_probability` and pass it to a
    :class:`~brainsim.Projection` (default layout :class:`~brainsim.Procedural`; any other layout
    materialises it with :meth:`edges`).

    Weights are ``weight_loc`` (constant) or ``weight_loc + weight_scale · U[0, 1)``; the delay
    is homogeneous (ms, ``None`` = one step).
    """

    n_pre: int
    n_post: int
    fan_out: int
    """Synapses per presynaptic neuron, or the largest of ``counts``."""
    counts: np.ndarray | None
    """``None`` (every neuron has ``fan_out``) or int32 synapses per presynaptic neuron."""
    replace: bool
    allow_self: bool
    weight_loc: float
    weight_scale: float | None
    delay: float | None
    seed: int

    @property
    def n_synapses(self) -> int:
        if self.counts is None:
            return self.n_pre * self.fan_out
        return int(self.counts.sum(dtype=np.int64))

    @property
    def rule(self):
        return kernels.ProceduralRule(
            self.n_pre, self.n_post, self.fan_out, self.seed, self.replace, self.allow_self
        )

    def synapses(self, rows: np.ndarray):
        """Targets ``(len(rows), fan_out)``, weights of the same shape and a validity mask
        (``j < count``) of presynaptic neurons ``rows``, regenerated on the host."""
        rows = np.asarray(rows, np.int64)
        j = np.arange(self.fan_out)[None, :]
        count = self.fan_out if self.counts is None else self.counts[rows][:, None]
        valid = np.broadcast_to(j < count, (rows.size, self.fan_out))
        targets, g = kernels.procedural_synapses_numpy(
            self.rule, rows[:, None], j, valid, need_g=self.weight_scale is not None
        )
        if self.weight_scale is None:
            weights = np.full(targets.shape, float(self.weight_loc))
        else:
            weights = self.weight_loc + self.weight_scale * g.astype(float)
        return targets, weights, valid

    def edges(self, *, block_rows: int | None = None) -> EdgeList:
        """Materialise every synapse as an :class:`EdgeList` (for inspection, tests, or another
        layout); rows are regenerated in blocks of ``block_rows`` neurons (the result does not
        depend on it)."""
        if block_rows is None:
            block_rows = max(1, _BLOCK // max(self.fan_out, 1))
        dtype = _index_dtype(self.n_pre, self.n_post)
        pres, posts, ws = [], [], []
        for r0 in range(0, self.n_pre, block_rows):
            rows = np.arange(r0, min(r0 + block_rows, self.n_pre))
            targets, weights, valid = self.synapses(rows)
            pres.append(np.broadcast_to(rows[:, None], valid.shape)[valid].astype(dtype))
            posts.append(targets[valid].astype(dtype))
            ws.append(weights[valid])
        weight = np.concatenate(ws) if self.weight_scale is not None else self.weight_loc
        return EdgeList(
            np.concatenate(pres),
            np.concatenate(posts),
            np.asarray(weight, dtype=float),
            None if self.delay is None else np.asarray(float(self.delay)),
            self.n_pre,
            self.n_post,
        )

    def to_dense(self) -> np.ndarray:
        """Summed weight matrix ``(n_pre, n_post)`` (duplicates added)."""
        e = self.edges()
        dense = np.zeros((self.n_pre, self.n_post))
        np.add.at(dense, (e.pre, e.post), e.weights_per_edge())
        return dense


def _procedural_weight(owner, weight):
    if isinstance(weight, Constant):
        return float(weight.value), None
    if isinstance(weight, Uniform):
        return float(weight.low), float(weight.high - weight.low)
    if isinstance(weight, int | float | np.integer | np.floating) and not isinstance(weight, bool):
        _check_number(owner, "weight", weight)
        return float(weight), None
    raise TypeError(
        f"{owner}: procedural connectivity regenerates weights from its hash, so `weight` must "
        "be a number, connect.Constant(...) or connect.Uniform(low, high); got "
        f"{weight!r}. Use a stored layout (connect.fixed_outdegree + CSR/Sparse) for other "
        "distributions."
    )


def _procedural_delay(owner, delay):
    if delay is None:
        return None
    if isinstance(delay, Constant):
        delay = delay.value
    if isinstance(delay, int | float | np.integer | np.floating) and not isinstance(delay, bool):
        _check_number(owner, "delay", delay, low=0.0)
        return float(delay)
    raise TypeError(
        f"{owner}: procedural connectivity has one homogeneous delay: `delay` must be a "
        f"number (ms) or None; got {delay!r}."
    )


def _procedural_seed(owner, seed):
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise ValueError(
            f"{owner}: `seed` must be an integer in [0, 2**32) (the synapses are regenerated "
            f"from it); got {seed!r}."
        )
    return int(seed)


def procedural_fixed_outdegree(
    n_pre: int,
    n_post: int,
    k: int,
    *,
    weight=1.0,
    delay: float | None = None,
    allow_self: bool = True,
    replace: bool = False,
    seed: int = 0,
) -> ProceduralEdges:
    """Every presynaptic neuron makes exactly ``k`` synapses, regenerated every step.

    ``replace=False`` (default): the ``k`` targets are distinct (a pseudo-random permutation
    of the possible targets, cut after ``k``). ``replace=True``: drawn independently, so
    multapses are possible (and ``k`` may exceed ``n_post``). ``weight`` is a number or
    :class:`Uniform`; ``delay`` one number (ms). ``seed`` is an integer in ``[0, 2**32)``.

    Example::

        conn = connect.procedural_fixed_outdegree(10_000, 10_000, 100, weight=0.5, seed=7)
        Projection("exc", "exc", conn, receptor="e")   # layout Procedural(): nothing stored
    """
    owner = "procedural_fixed_outdegree"
    _check_sizes(owner, n_pre, n_post)
    _check_count(owner, "k", k)
    _check_self(owner, allow_self, n_pre, n_post)
    n_range = n_post if allow_self else n_post - 1
    if not replace and k > n_range:
        raise ValueError(
            f"{owner}: `k` = {k} distinct targets exceed the {n_range} possible ones; use a "
            "smaller k or replace=True."
        )
    if k > 0 and n_range < 1:
        raise ValueError(f"{owner}: `k` = {k} but there is no possible target.")
    loc, scale = _procedural_weight(owner, weight)
    return ProceduralEdges(
        int(n_pre),
        int(n_post),
        int(k),
        None,
        bool(replace),
        bool(allow_self),
        loc,
        scale,
        _procedural_delay(owner, delay),
        _procedural_seed(owner, seed),
    )


_COUNT_STREAM = 0x434E5453  # "CNTS": the host generator of fixed-probability counts


def procedural_fixed_probability(
    n_pre: int,
    n_post: int,
    p: float,
    *,
    weight=1.0,
    delay: float | None = None,
    allow_self: bool = True,
    seed: int = 0,
) -> ProceduralEdges:
    """Each pair connected independently with probability ``p``, regenerated every step.

    Realised as: the number of synapses of presynaptic neuron ``i`` is drawn once, at build,
    from Binomial(``n_post``, ``p``) (``n_post - 1`` without self) and kept (one int32 per
    neuron, the only stored state); its targets are the first ``count_i`` values of a
    pseudo-random permutation of the possible targets, regenerated from ``(seed, i, j)``.
    A Binomial count with a uniformly random subset of that size is exactly the law of
    independent per-pair Bernoulli draws, so no pair is connected twice, and the work per
    spike is proportional to its synapses (not to ``n_post``).
    """
    owner = "procedural_fixed_probability"
    _check_sizes(owner, n_pre, n_post)
    _check_probability(owner, "p", p)
    _check_self(owner, allow_self, n_pre, n_post)
    seed = _procedural_seed(owner, seed)
    n_range = n_post if allow_self else n_post - 1
    rng = np.random.default_rng([seed, _COUNT_STREAM])
    counts = rng.binomial(n_range, p, size=n_pre).astype(np.int32)
    loc, scale = _procedural_weight(owner, weight)
    return ProceduralEdges(
        int(n_pre),
        int(n_post),
        int(counts.max(initial=0)),
        counts,
        False,
        bool(allow_self),
        loc,
        scale,
        _procedural_delay(owner, delay),
        seed,
    )
