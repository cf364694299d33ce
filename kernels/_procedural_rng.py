r"""Procedural ("just-in-time") connectivity's hash: synapses regenerated, never stored.

The synapses of presynaptic neuron ``i`` are a pure function of ``(seed, i, j)`` for
``j = 0, 1, …, count_i - 1``, evaluated with 32-bit unsigned integer arithmetic only. The same
functions below run on NumPy arrays (host materialisation, :meth:`ProceduralEdges.edges`,
through :func:`procedural_synapses_numpy`) and on jnp arrays (:func:`procedural_synapses`, in
the op of :mod:`brainsim.kernels._procedural`), and ``kernels/cpu/procedural_deliver.cc``
repeats them in C++, so every implementation, chunk size, tiling and device count sees
bit-identical synapses.

**Counter-based RNG.** Threefry-2x32 with 20 rounds (Salmon et al., SC 2011; the generator
behind ``jax.random``): a keyed bijection of a 64-bit counter, here ``key = (seed, stream)``
and ``counter = (i, j)``. Stream ``ROW_STREAM`` gives the permutation keys of presynaptic
neuron ``i`` (counter ``(i, 0)``: words ``k0, k1``, and ``fmix32(k0 + φ), fmix32(k1 + φ)``);
stream ``SYNAPSE_STREAM`` gives two words per synapse ``(i, j)``: the target (with
replacement) and the weight variate.

**Targets.**

* *With replacement*: target ``= ⌊a · n / 2^32⌋`` for the first word ``a`` (Lemire's
  multiply-shift; the probabilities of the ``n`` outcomes differ by at most ``n / 2^32``
  relative).
* *Without replacement* (distinct targets): target ``j`` is ``π_i(j)`` for a keyed pseudo-random
  permutation ``π_i`` of ``range(n)``: an 8-round balanced Feistel network on ``2h`` bits
  (round function: MurmurHash3's 32-bit finaliser of ``half ⊕ round key``; ``4^h ≥ n`` and
  ``h ≥ 4``), restricted to ``range(n)`` by cycle walking (re-apply until the value is
  ``< n``; a bijection of ``range(n)``, expected ``≤ 4^h / n`` applications). Distinct
  ``j`` give distinct targets by construction, in O(1) work per synapse and with no state.
  The 256-value minimum domain and the 8 rounds are what made the first three targets of a
  row pass χ² tests of uniformity and pairwise/triple independence for ``n`` from 2 to 1000
  (4·10^5 rows); 4 rounds on small domains visibly did not.

``allow_self=False`` draws from ``range(n_post - 1)`` and skips ``i`` (``t + (t ≥ i)``).

**Weights.** ``weight_loc`` (constant weights) or ``weight_loc + weight_scale · g`` with
``g = (b >> 8) · 2^{-24}`` uniform on ``[0, 1)`` from the second word ``b`` (exact in float32).

Bit-identity covers the integers (targets, counts) and ``g``; the final multiply-adds
(``loc + scale·g``, ``ring + spike·w``) are IEEE operations that XLA may contract into fused
multiply-adds where C++ does not, so ring values agree bit for bit when those products are
exact (binary spikes and ``scale = 1, loc = 0``, or constant weights) and otherwise to an ulp.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

ROW_STREAM = 0x524F5753  # "ROWS"
SYNAPSE_STREAM = 0x53594E53  # "SYNS"
FEISTEL_ROUNDS = 8
MIN_HALF_BITS = 4
_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
_PARITY = 0x1BD11BDA
_GOLDEN = 0x9E3779B9
_U32 = np.uint32


# ------------------------------------------------------------------ generic uint32 arithmetic
# Every function below works on NumPy and on jnp uint32 arrays (wrapping arithmetic).


def _rotl(x, r: int):
    return (x << _U32(r)) | (x >> _U32(32 - r))


def threefry2x32(k0, k1, c0, c1):
    """Threefry-2x32-20 of counter ``(c0, c1)`` under key ``(k0, k1)`` (uint32, broadcast)."""
    ks = (k0, k1, k0 ^ k1 ^ _U32(_PARITY))
    x0 = c0 + ks[0]
    x1 = c1 + ks[1]
    for r in range(20):
        x0 = x0 + x1
        x1 = _rotl(x1, _ROTATIONS[r % 8]) ^ x0
        if r % 4 == 3:
            s = r // 4 + 1
            x0 = x0 + ks[s % 3]
            x1 = x1 + ks[(s + 1) % 3] + _U32(s)
    return x0, x1


def fmix32(x):
    """MurmurHash3's 32-bit finaliser (a bijection with full avalanche)."""
    x = x ^ (x >> _U32(16))
    x = x * _U32(0x85EBCA6B)
    x = x ^ (x >> _U32(13))
    x = x * _U32(0xC2B2AE35)
    return x ^ (x >> _U32(16))


def mulhi32(a, b):
    """High 32 bits of the 64-bit product ``a * b``, from 16-bit halves (no 64-bit types)."""
    lo = _U32(0xFFFF)
    a_lo, a_hi = a & lo, a >> _U32(16)
    b_lo, b_hi = b & lo, b >> _U32(16)
    cross = ((a_lo * b_lo) >> _U32(16)) + ((a_hi * b_lo) & lo) + a_lo * b_hi
    return a_hi * b_hi + ((a_hi * b_lo) >> _U32(16)) + (cross >> _U32(16))


def feistel(x, keys, half_bits: int):
    """One application of the keyed Feistel permutation of ``range(4**half_bits)``."""
    mask = _U32((1 << half_bits) - 1)
    shift = _U32(half_bits)
    left, right = x >> shift, x & mask
    for r in range(FEISTEL_ROUNDS):
        k = keys[r % 4] + _U32((r * _GOLDEN) & 0xFFFFFFFF)
        left, right = right, left ^ (fmix32(right ^ k) & mask)
    return (left << shift) | right


def row_keys(seed, rows):
    """The four Feistel round keys of presynaptic neurons ``rows``: the two Threefry words of
    counter ``(i, 0)`` and their MurmurHash3 finalisations (one Threefry call per neuron)."""
    k0, k1 = threefry2x32(seed, _U32(ROW_STREAM), rows, rows * _U32(0))
    return k0, k1, fmix32(k0 + _U32(_GOLDEN)), fmix32(k1 + _U32(_GOLDEN))


def synapse_words(seed, rows, j):
    """The two per-synapse words of synapse ``j`` of neuron ``rows``."""
    return threefry2x32(seed, _U32(SYNAPSE_STREAM), rows, j)


def unit_float(b, xp):
    """``(b >> 8) · 2^-24``: uniform on [0, 1), exact in float32."""
    return (b >> _U32(8)).astype(xp.float32) * xp.float32(2.0**-24)


def half_bits(n_range: int) -> int:
    """Half-width ``h`` of the Feistel domain ``4^h ≥ n_range`` (at least ``MIN_HALF_BITS``)."""
    return max(MIN_HALF_BITS, ((max(n_range, 1) - 1).bit_length() + 1) // 2)


class ProceduralRule(NamedTuple):
    """Static description of a procedural projection (hashable: part of the compiled program).

    The synapses it describes are :func:`procedural_synapses` (jnp) or
    :func:`procedural_synapses_numpy` (host) of it; see the module docstring for the hash.
    """

    n_pre: int
    n_post: int
    fan_out: int
    """Synapses per presynaptic neuron (or the largest count when ``counts`` is given)."""
    seed: int
    """uint32 seed of the connectivity."""
    replace: bool
    """Targets drawn with replacement (multapses possible) instead of distinct ones."""
    allow_self: bool
    """``False`` excludes ``i → i`` (needs ``n_pre == n_post``)."""

    @property
    def n_range(self) -> int:
        return self.n_post if self.allow_self else self.n_post - 1

    @property
    def half_bits(self) -> int:
        return half_bits(self.n_range)


def targets_and_variates(rule: ProceduralRule, rows, j, active, xp, walk, need_g: bool):
    """Targets (int32) and weight variates ``g`` (float32, or ``None`` unless ``need_g``) of
    synapses ``(rows, j)``.

    ``walk(j, keys, active)`` returns the cycle-walked permutation of ``j`` (a Python loop on
    NumPy, a while loop in jnp).
    """
    seed = _U32(rule.seed)
    n_range = _U32(rule.n_range)
    a = b = None
    if rule.replace or need_g:
        a, b = synapse_words(seed, rows, j)
    if rule.replace:
        x = mulhi32(a, n_range)
    else:
        keys = row_keys(seed, rows)
        x = walk(j, keys, active)
    if not rule.allow_self:
        x = x + (x >= rows).astype(x.dtype)
    return x.astype(xp.int32), (unit_float(b, xp) if need_g else None)


def procedural_synapses_numpy(
    rule: ProceduralRule, rows: np.ndarray, j: np.ndarray, active=None, need_g=True
):
    """:func:`procedural_synapses` on the host, in NumPy, bit for bit the same targets and
    ``g``; ``active=None`` walks every synapse."""
    rows = np.asarray(rows, np.uint32)
    j = np.asarray(j, np.uint32)

    def walk(j, keys, active_):
        n_range = _U32(rule.n_range)
        x = feistel(j, keys, rule.half_bits)
        while True:
            out = x >= n_range
            if active_ is not None:
                out &= active_
            if not out.any():
                return x
            x = np.where(out, feistel(x, keys, rule.half_bits), x)

    with np.errstate(over="ignore"):
        return targets_and_variates(rule, rows, j, active, np, walk, need_g)


def procedural_synapses(rule: ProceduralRule, rows, j, active, need_g=True):
    """Targets and weight variates of synapses ``(rows, j)`` of ``rule``, in jnp.

    Arguments:
        rule: the projection.
        rows, j: presynaptic neurons and synapse numbers (integer arrays, broadcast together).
        active: boolean mask (broadcast like them) of the synapses whose target is wanted; the
            cycle walk of distinct targets stops once these are in range (others: unspecified).
        need_g: also compute the weight variate ``g``, uniform on ``[0, 1)``.

    Returns ``(targets, g)``: int32 targets in ``[0, n_post)`` and float32 ``g`` (``None``
    without ``need_g``); a weight is ``loc + scale · g``.
    """
    rows = jnp.asarray(rows).astype(jnp.uint32)
    j = jnp.asarray(j).astype(jnp.uint32)

    def walk(j, keys, active_):
        n_range = _U32(rule.n_range)
        shape = jnp.broadcast_shapes(j.shape, keys[0].shape, jnp.shape(active_))
        act = jnp.broadcast_to(active_, shape)

        # The first application is folded into the loop so that the permutation, the bulk of
        # the compiled code, is traced once.
        def cond(carry):
            x, first = carry
            return first | jnp.any(act & (x >= n_range))

        def body(carry):
            x, first = carry
            again = first | (x >= n_range)
            return jnp.where(again, feistel(x, keys, rule.half_bits), x), jnp.asarray(False)

        start = jnp.broadcast_to(j, shape)  # x = j: the loop applies the first permutation
        return lax.while_loop(cond, body, (start, jnp.asarray(True)))[0]

    return targets_and_variates(rule, rows, j, active, jnp, walk, need_g)


def dense_block_rows(fan_out: int) -> int:
    """Presynaptic neurons per block when regenerating all synapses (about 2^15 synapses)."""
    return max(1, min(4096, 2**15 // max(fan_out, 1)))


def expected_walks(n_range: int) -> float:
    """Mean Feistel applications per distinct target (``4^h / n``; for documentation/tests)."""
    return 4.0 ** half_bits(n_range) / max(n_range, 1)
