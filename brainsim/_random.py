r"""Counter-based random bits: Threefry-2x32 with 20 rounds, written in ``jax.numpy``.

A spike source draws one uniform per channel and step. ``jax.random``'s Threefry lowering
for the CPU is a rolled loop that XLA runs apart from the surrounding arithmetic; the same
cipher written here as plain ``uint32`` arithmetic, unrolled, fuses into one elementwise loop
that XLA vectorises. Measured in one process, 7717 words per step of a 1000-step scan compiled
with brainsim's compiler options (development machine: Intel Xeon with AVX-512, 2 shared
cores, jax 0.10.2): ``jax.random.bits`` ~36 µs, this module ~7 µs. It computes exactly what
``jax.extend.random.threefry_2x32`` computes (the tests compare the bits) and, being
elementwise, it is the same under ``vmap``: a batch member gets the bits it gets alone.
(``lax.rng_bit_generator`` is faster still, but under ``vmap`` over keys its draws differ
from the per-key ones.)

The cipher maps a key of two 32-bit words and a counter of two words to two words. A stream
of values is the cipher over counters :math:`(i, s)`: :math:`i = 0, 1, \dots` the position,
:math:`s` the *stream* number, so disjoint streams come from one key without splitting it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, UInt32

# Threefry-2x32's rotation distances, in two groups of four rounds used alternately, and the
# constant of its key schedule (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
# SC 2011).
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA
# Any constant works: it only makes the cipher key differ from jax.random's.
_KEY_MASK = (0x9E3779B9, 0x7F4A7C15)


def _rotate_left(x, d: int):
    return (x << jnp.uint32(d)) | (x >> jnp.uint32(32 - d))


def threefry2x32(key: UInt32[Array, "2"], x0: UInt32[Array, "*n"], x1: UInt32[Array, "*n"]):
    r"""The Threefry-2x32 block cipher (20 rounds) of the counters ``(x0, x1)`` under ``key``.

    Five groups of four rounds (:math:`a \mathrel{+}= b;\ b = (b \lll r) \oplus a`), each
    group followed by the injection of the next key-schedule word pair and the group number;
    the schedule is ``key[0], key[1], key[0] ^ key[1] ^ 0x1BD11BDA`` in rotation.

    Arguments:
        key: two ``uint32`` key words (see :func:`key_words`).
        x0, x1: ``uint32`` counters (broadcast together).

    Returns:
        The two ``uint32`` output words, each of the counters' broadcast shape.
    """
    k = (key[0], key[1], key[0] ^ key[1] ^ jnp.uint32(_PARITY))
    a, b = x0 + k[0], x1 + k[1]
    for group in range(5):
        for r in _ROTATIONS[group % 2]:
            a = a + b
            b = _rotate_left(b, r) ^ a
        a = a + k[(group + 1) % 3]
        b = b + k[(group + 2) % 3] + jnp.uint32(group + 1)
    return a, b


def key_words(key) -> UInt32[Array, "2"]:
    """Two ``uint32`` key words for :func:`threefry2x32` from a JAX PRNG key (typed or raw).

    For a Threefry key, its own two words with a fixed mask: free, and a different cipher key
    from the one ``jax.random`` uses with ``key`` (whose counters could coincide with these
    streams' counters). For another implementation, two words drawn with ``jax.random.bits``
    (a call that costs XLA about as much to compile as the cipher itself)."""
    data = jax.random.key_data(key)
    if data.shape == (2,) and data.dtype == jnp.uint32:
        return data ^ jnp.asarray(_KEY_MASK, jnp.uint32)
    return jax.random.bits(key, (2,), jnp.uint32)


def fold_in(key, data, high=None):
    """``jax.random.fold_in(key, data)``, bitwise, for a Threefry key (typed or raw): the
    cipher of the counter ``(0, uint32(data))`` under ``key``'s words, computed by
    :func:`threefry2x32` (unrolled ``uint32`` arithmetic, which XLA fuses with what
    surrounds it) instead of ``jax.random``'s CPU lowering, a rolled loop of its own (about
    five fused kernels to compile per fold).

    ``data``: a scalar integer (may be traced), taken modulo :math:`2^{32}` as
    ``jax.random.fold_in`` takes it. ``high`` (a scalar integer, may be traced): the counter's
    other word, ``(uint32(high), uint32(data))``, so that two integers make one key with one
    cipher; ``high = 0`` is ``jax.random.fold_in``'s key. Keys of other implementations go to
    ``jax.random.fold_in``, folded once more with ``high`` where it is not 0."""
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    words = jax.random.key_data(key) if typed else key
    threefry = not typed or str(jax.random.key_impl(key)) == "threefry2x32"
    if not threefry or words.shape != (2,) or words.dtype != jnp.uint32:
        folded = jax.random.fold_in(key, data)
        if high is None:
            return folded
        return jnp.where(jnp.asarray(high) != 0, jax.random.fold_in(folded, high), folded)
    high = jnp.uint32(0) if high is None else jnp.asarray(high).astype(jnp.uint32)
    out = _folded_words(words, high, jnp.asarray(data).astype(jnp.uint32))
    return jax.random.wrap_key_data(out, impl=jax.random.key_impl(key)) if typed else out


@jax.jit
def _folded_words(words, high, data):
    """The key words of :func:`fold_in`. A ``jit`` of its own: a program that folds several
    keys traces the cipher's ~150 operations once, not once per fold (a step folds three to
    five keys; tracing them all cost COBA, which draws nothing, 0.1 s)."""
    a, b = threefry2x32(words, high, data)
    return jnp.stack([a, b])


def random_bits(key: UInt32[Array, "2"], n: int, stream=0) -> UInt32[Array, " n"]:
    """``n`` random ``uint32`` words: word ``i`` is the cipher's first output word for the
    counter ``(i, stream)``.

    ``key`` holds two key words (:func:`key_words`); ``stream`` (a ``uint32``, may be traced)
    selects one of :math:`2^{32}` disjoint streams. One cipher per word, the second output
    word unused: XLA's CPU backend fuses the cipher into one elementwise loop per output
    array, so a layout that used both words (interleaved or concatenated) computed every
    cipher twice and did not vectorise. Measured with brainsim's compiler options
    (:mod:`brainsim._compile`), 7717 words per step: ~7 µs this way, ~68 µs interleaved,
    ~36 µs with ``jax.random.bits`` (development machine)."""
    a, _ = threefry2x32(key, lax.iota(jnp.uint32, n), jnp.full((n,), stream, jnp.uint32))
    return a


def uniform(key: UInt32[Array, "2"], n: int, dtype, stream=0) -> Array:
    r"""``n`` uniform values in :math:`[0, 1)` of floating ``dtype``, on the grid of the
    dtype's resolution: :math:`j\,2^{-24}` (float32 and narrower, one 32-bit word each) or
    :math:`j\,2^{-53}` (float64, two words each). ``key``, ``stream``: as for
    :func:`random_bits`."""
    dtype = jnp.dtype(dtype)
    if dtype.itemsize <= 4:
        return unit_interval(random_bits(key, n, stream), dtype)
    # 21 high bits from one word and 32 from the other: 53 bits, exact in float64.
    a, b = threefry2x32(key, lax.iota(jnp.uint32, n), jnp.full((n,), stream, jnp.uint32))
    high = (a >> jnp.uint32(11)).astype(dtype) * 2.0**-21
    return high + b.astype(dtype) * 2.0**-53


def unit_interval(bits: UInt32[Array, "*n"], dtype) -> Array:
    r"""Values :math:`j\,2^{-24}` in :math:`[0, 1)` from the 24 high bits of ``uint32`` words."""
    return ((bits >> jnp.uint32(8)).astype(jnp.float32) * 2.0**-24).astype(dtype)
