r"""Procedural ("just-in-time") connectivity: synapses regenerated from a hash, never stored.

The synapses of presynaptic neuron ``i`` are a pure function of ``(seed, i, j)`` for
``j = 0, 1, …, count_i - 1``, evaluated with 32-bit unsigned integer arithmetic only. The same
functions below run on NumPy arrays (host materialisation, :meth:`ProceduralEdges.edges`) and on
jnp arrays (the reference op), and ``kernels/cpu/procedural_deliver.cc`` repeats them in C++,
so every implementation, chunk size, tiling and device count sees bit-identical synapses.

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

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import _batching, _compact, _dispatch, _reference
from ._ell import Implementation
from ._ring import checked_after, clear_first, clear_tangent

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


class Rule(NamedTuple):
    """Static description of a procedural projection (hashable: part of the compiled program)."""

    n_pre: int
    n_post: int
    fan_out: int
    """Synapses per presynaptic neuron (or the largest count when ``counts`` is given)."""
    seed: int
    replace: bool
    allow_self: bool

    @property
    def n_range(self) -> int:
        return self.n_post if self.allow_self else self.n_post - 1

    @property
    def half_bits(self) -> int:
        return half_bits(self.n_range)


def _targets_and_variates(rule: Rule, rows, j, active, xp, walk, need_g: bool):
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


def numpy_synapses(rule: Rule, rows: np.ndarray, j: np.ndarray, active=None, need_g=True):
    """Host (NumPy) targets and ``g`` of synapses ``(rows, j)`` (broadcast uint32 arrays)."""
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
        return _targets_and_variates(rule, rows, j, active, np, walk, need_g)


def jnp_synapses(rule: Rule, rows, j, active, need_g=True):
    """jnp targets and ``g`` of synapses ``(rows, j)``; ``active`` masks the cycle walk."""
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

    return _targets_and_variates(rule, rows, j, active, jnp, walk, need_g)


# ------------------------------------------------------------------------------- the op


def procedural_deliver(
    ring,
    cursor,
    spikes,
    weight_loc,
    weight_scale=None,
    counts=None,
    *,
    n_post: int,
    fan_out: int,
    seed: int,
    replace: bool = False,
    allow_self: bool = True,
    delay: int = 1,
    chunk_size: int = 8,
    capacity: int | None = None,
    implementation: Implementation = Implementation.AUTO,
    clear_row: bool = False,
    after=(),
):
    r"""Deliver ``spikes`` through a procedural projection into a ring buffer.

    For every presynaptic neuron ``i`` with ``spikes[i] != 0`` and ``j < count_i`` (``fan_out``,
    or ``counts[i]``), add ``spikes[i] * w_ij`` to ``ring[(cursor + delay) mod D, t_ij]``
    where ``t_ij`` and ``w_ij`` are regenerated from ``(seed, i, j)`` (module docstring).

    Arguments:
        ring: ``(D * n_post,)`` future input of the postsynaptic receptor.
        cursor: the current step (int).
        spikes: ``(n_pre,)`` spike values (0 = no spike).
        weight_loc: scalar; the weight of every synapse, or the low end of uniform weights.
        weight_scale: ``None`` (constant weights) or a scalar: ``w = loc + scale · U[0, 1)``.
        counts: ``None`` (every neuron has ``fan_out`` synapses) or ``(n_pre,)`` int32 counts
            ``≤ fan_out`` (fixed-probability connectivity).
        n_post: postsynaptic population size.
        fan_out: synapses per neuron, or the largest count.
        seed: uint32 seed of the connectivity.
        replace: draw targets with replacement (multapses possible) instead of distinct ones.
        allow_self: ``False`` excludes ``i → i`` (``n_pre == n_post``).
        delay: homogeneous delay in steps (>= 1).
        chunk_size: spikes per iteration of the jnp reference (never limits delivery).
        capacity: programs of the Triton atomic kernel's one launch, spikes per window of the
            owner-block and TPU kernels (``None``: about ``n_pre / 16``,
            :mod:`brainsim.kernels._compact`); any number of spikes is delivered.
        implementation: :class:`Implementation`: the reference, the native CPU kernel, or the
            Pallas kernels of :mod:`brainsim.kernels._pallas_procedural` (Triton atomic scatter
            regenerating synapses in the kernel, owner block, TPU); ``AUTO`` picks per platform
            (:mod:`brainsim.kernels._dispatch`).
        clear_row, after: zero row ``cursor mod D`` first, once ``after`` is computed, as in
            :func:`~brainsim.kernels.ell_deliver` (the native kernel clears it itself).
    """
    after = checked_after("procedural_deliver", clear_row, after)
    n_pre = spikes.shape[-1]
    rule = Rule(int(n_pre), int(n_post), int(fan_out), int(seed), bool(replace), bool(allow_self))
    _check_rule(rule, delay, chunk_size)
    if ring.shape[0] % n_post:
        raise ValueError(
            f"procedural_deliver: ring length {ring.shape[0]} is not a multiple of "
            f"n_post = {n_post}."
        )
    capacity = _compact.check_capacity(capacity, max(int(n_pre), 1), owner="procedural_deliver")
    static = _Static(
        rule, int(delay), int(chunk_size), Implementation(implementation), capacity, bool(clear_row)
    )
    loc = jnp.asarray(weight_loc)
    scale = None if weight_scale is None else jnp.asarray(weight_scale)
    counts = None if counts is None else jnp.asarray(counts, jnp.int32)
    return _deliver(static, ring, spikes, loc, scale, jnp.asarray(cursor, jnp.int32), counts, after)


def _check_rule(rule: Rule, delay: int, chunk_size: int) -> None:
    if delay < 1:
        raise ValueError(f"procedural_deliver: `delay` must be >= 1 step; got {delay}.")
    if chunk_size < 1:
        raise ValueError(f"procedural_deliver: `chunk_size` must be >= 1; got {chunk_size}.")
    if not 0 <= rule.seed < 2**32:
        raise ValueError(f"procedural_deliver: `seed` must lie in [0, 2**32); got {rule.seed}.")
    if rule.n_range < 1 and rule.fan_out > 0:
        raise ValueError("procedural_deliver: no possible target (n_post = 1 without self).")
    if not rule.replace and rule.fan_out > rule.n_range:
        raise ValueError(
            f"procedural_deliver: `fan_out` = {rule.fan_out} distinct targets exceed the "
            f"{rule.n_range} possible ones; use replace=True or a smaller fan-out."
        )
    if not rule.allow_self and rule.n_pre != rule.n_post:
        raise ValueError(
            "procedural_deliver: `allow_self=False` needs n_pre == n_post; got "
            f"{rule.n_pre} and {rule.n_post}."
        )


class _Static(NamedTuple):
    rule: Rule
    delay: int
    chunk: int
    impl: Implementation
    capacity: int
    clear: bool


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def _deliver(static, ring, spikes, loc, scale, cursor, counts, after):
    args = (ring, cursor, spikes, loc, scale, counts, *after)

    def without_after(args):
        return clear_first(args, 6, clear=static.clear, n_post=static.rule.n_post)

    def reference(*args):
        return _reference.procedural_deliver(
            *without_after(args), rule=static.rule, delay=static.delay, chunk_size=static.chunk
        )

    def native(*args):
        kernel = partial(_native, rule=static.rule, delay=static.delay, clear=static.clear)
        return _batching.run_in_place(kernel, *args)

    def pallas(which, interpret):
        def run(*args):
            return _pallas_jit(
                which,
                interpret,
                *without_after(args),
                rule=static.rule,
                delay=static.delay,
                capacity=static.capacity,
            )

        return run

    return _dispatch.select(
        static.impl,
        args,
        reference=reference,
        native=native,
        pallas=pallas,
        tpu_supported=ring.dtype == jnp.float32,
    )


@_deliver.defjvp
def _deliver_jvp(static, primals, tangents):
    ring, spikes, loc, scale, cursor, counts, after = primals
    ring_dot, spikes_dot, loc_dot, scale_dot, *_ = tangents
    out = _deliver(static, *primals)
    if static.clear:  # the cleared row carries no tangent either
        ring_dot = clear_tangent(ring_dot, cursor, static.rule.n_post)
    # Regenerate every synapse (not only those of neurons that spiked): silent neurons still
    # pass their surrogate gradient. The expression is linear in the tangents, so JAX
    # transposes it for reverse mode.
    # One pass regenerates the synapses for both terms of the product rule.
    terms = [(spikes_dot, loc, scale), (spikes, loc_dot, scale_dot)]
    out_dot = _reference.procedural_deliver_dense(
        ring_dot, cursor, terms, counts, rule=static.rule, delay=static.delay
    )
    return out, out_dot


def _native(ring, cursor, spikes, loc, scale, counts, *after, rule: Rule, delay: int, clear: bool):
    dtype = ring.dtype
    call = jax.ffi.ffi_call(
        "brainsim_procedural_deliver",
        jax.ShapeDtypeStruct(ring.shape, dtype),
        vmap_method="expand_dims",
        # The kernel adds into the ring in place (batched like the output, see `native`).
        input_output_aliases={5: 0},
    )
    return call(
        spikes.astype(dtype),
        jnp.zeros((1,), jnp.int32) if counts is None else counts.astype(jnp.int32),
        jnp.reshape(loc, (1,)).astype(dtype),
        jnp.zeros((1,), dtype) if scale is None else jnp.reshape(scale, (1,)).astype(dtype),
        jnp.reshape(cursor, (1,)).astype(jnp.int32),
        ring,
        *after,
        n_pre=np.int64(rule.n_pre),
        n_post=np.int64(rule.n_post),
        fan_out=np.int64(rule.fan_out),
        n_range=np.int64(rule.n_range),
        half_bits=np.int64(rule.half_bits),
        seed=np.int64(rule.seed),
        replace=np.int64(rule.replace),
        allow_self=np.int64(rule.allow_self),
        random_weight=np.int64(scale is not None),
        has_counts=np.int64(counts is not None),
        delay=np.int64(delay),
        ring_len=np.int64(ring.shape[0]),
        clear_row=np.int64(clear),
    )


def dense_block_rows(fan_out: int) -> int:
    """Presynaptic neurons per block when regenerating all synapses (about 2^15 synapses)."""
    return max(1, min(4096, 2**15 // max(fan_out, 1)))


def expected_walks(n_range: int) -> float:
    """Mean Feistel applications per distinct target (``4^h / n``; for documentation/tests)."""
    return 4.0 ** half_bits(n_range) / max(n_range, 1)


def _pallas(impl, interpret, *args, rule: Rule, delay: int, capacity: int):
    """Run a batched Pallas kernel on unbatched arguments (``vmap`` folds into its batch)."""
    from . import _pallas_procedural  # imported here: it imports this module

    kernel = {
        Implementation.PALLAS_TRITON: _pallas_procedural.deliver_atomic,
        Implementation.PALLAS_PORTABLE: _pallas_procedural.deliver_owner,
        Implementation.PALLAS_TPU: _pallas_procedural.deliver_tpu,
    }[impl]
    call = partial(kernel, rule=rule, delay=delay, capacity=capacity, interpret=interpret)
    return _batching.run_batched(call, *args)


# AUTO traces every platform's branch: a jitted entry point reuses the traced kernels.
_pallas_jit = jax.jit(_pallas, static_argnums=(0, 1), static_argnames=("rule", "delay", "capacity"))
