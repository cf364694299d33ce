"""Counter-based random bits (brainsim/_random.py): the cipher is JAX's Threefry-2x32 bit for
bit, a batch member draws what it draws alone, and the uniforms are uniform."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.random import threefry_2x32

from brainsim._random import fold_in, key_words, random_bits, threefry2x32, uniform


def _words(rng, n):
    return jnp.asarray(rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32))


def test_threefry_equals_jax_reference():
    """The same key words and counters give JAX's own Threefry-2x32 output, word for word
    (``threefry_2x32`` takes the counters' first words then their second words, and returns
    the outputs in the same layout). Random keys and counters, plus the extremes."""
    rng = np.random.default_rng(0)
    cipher = jax.jit(threefry2x32)
    for key in (_words(rng, 2), _words(rng, 2), jnp.zeros(2, jnp.uint32),
                jnp.full(2, 2**32 - 1, jnp.uint32)):  # fmt: skip
        x0, x1 = _words(rng, 1001), _words(rng, 1001)
        a, b = cipher(key, x0, x1)
        expected = threefry_2x32(key, jnp.concatenate([x0, x1]))
        np.testing.assert_array_equal(np.concatenate([a, b]), np.asarray(expected))


def test_random_bits_layout_and_streams():
    """Word ``i`` is the first word of the cipher of counter ``(i, stream)``; a shorter draw
    is a prefix of a longer one; streams differ."""
    key = key_words(jax.random.key(3))
    bits = np.asarray(random_bits(key, 9, stream=5))
    a, _ = threefry2x32(key, jnp.arange(9, dtype=jnp.uint32), jnp.full(9, 5, jnp.uint32))
    np.testing.assert_array_equal(bits, np.asarray(a))
    np.testing.assert_array_equal(bits, np.asarray(random_bits(key, 10, stream=5))[:9])
    other = np.asarray(random_bits(key, 9, stream=6))
    assert not np.any(bits == other)  # 9 equal 32-bit words by chance: p ~ 2e-9


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_vmap_over_keys_draws_what_each_key_draws_alone(dtype, request):
    if dtype == "float64":
        request.getfixturevalue("x64")
    keys = jax.random.split(jax.random.key(1), 4)

    def draw(key, stream):
        return uniform(key_words(key), 101, dtype, stream=stream)

    batched = jax.jit(jax.vmap(draw))(keys, jnp.arange(4, dtype=jnp.uint32))
    alone = [jax.jit(draw)(k, jnp.uint32(s)) for s, k in enumerate(keys)]
    np.testing.assert_array_equal(np.asarray(batched), np.stack(alone))


@pytest.mark.parametrize(("dtype", "bits"), [("float32", 24), ("float64", 53)])
def test_uniform_grid_range_and_moments(dtype, bits, request):
    """Values lie on the grid ``j 2^-bits`` in [0, 1); over 2e5 values the mean is within 5
    SEs of 1/2 (SE sqrt(1/12/n)) and the fraction below 1/4 within 5 binomial SEs; the lowest
    bits vary (a float64 uniform uses 53 random bits, not a float32 one widened)."""
    if dtype == "float64":
        request.getfixturevalue("x64")
    n = 200_000
    u = np.asarray(uniform(key_words(jax.random.key(2)), n, dtype))
    assert u.dtype == np.dtype(dtype)
    assert u.min() >= 0.0 and u.max() < 1.0
    j = u * 2.0**bits
    np.testing.assert_array_equal(j, np.round(j))
    assert np.mean(j % 2 == 1) > 0.45  # the last bit is random
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / n)
    assert abs(np.mean(u < 0.25) - 0.25) < 5 * np.sqrt(0.25 * 0.75 / n)


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_fold_in_equals_jax_random_fold_in(raw):
    """The unrolled fold (a step's and a group's key) gives jax.random.fold_in's keys bit for
    bit: for typed and raw Threefry keys, Python and traced data (int32, wrapped modulo
    2**32 as jax.random does), under jit and vmap; other implementations are passed on."""
    keys = [jax.random.key(0), jax.random.key(123456789), jax.random.key(2**31 + 5)]
    if raw:
        keys = [jax.random.key_data(k) for k in keys]
    data = [0, 1, 7, 1000, 2**31 - 1, np.uint32(2**32 - 1), jnp.int32(-5)]
    words = jax.random.key_data if not raw else (lambda k: k)
    ours = jax.jit(lambda k, d: words(fold_in(k, d)))
    for k in keys:
        for d in data:
            np.testing.assert_array_equal(ours(k, d), words(jax.random.fold_in(k, d)))
    batch = jax.random.split(jax.random.key(3), 5)
    step = jnp.arange(5) * 977
    np.testing.assert_array_equal(
        jax.vmap(lambda k, d: jax.random.key_data(fold_in(k, d)))(batch, step),
        jax.vmap(lambda k, d: jax.random.key_data(jax.random.fold_in(k, d)))(batch, step),
    )
    rbg = jax.random.key(4, impl="rbg")
    np.testing.assert_array_equal(jax.random.key_data(fold_in(rbg, 9)),
                                  jax.random.key_data(jax.random.fold_in(rbg, 9)))


def test_fold_in_with_high_word_and_step_keys():
    """``fold_in(key, data, high=h)`` is the cipher of the counter ``(h, data)`` (JAX's own
    Threefry on the key's words): ``h = 0`` is ``jax.random.fold_in``. A step's key is that
    of ``(epoch, step)``: ``jax.random.fold_in(key, step)`` in epoch 0, distinct keys for the
    same step in later epochs. Other implementations fold with ``data``, then ``high``."""
    from brainsim._clock import step_key

    key = jax.random.key(11)
    words = jax.random.key_data(key)
    ours = jax.jit(lambda k, d, h: jax.random.key_data(fold_in(k, d, high=h)))
    for d, h in [(0, 0), (5, 0), (5, 1), (2**30 - 1, 3), (17, 2**31 - 1)]:
        expected = threefry_2x32(words, jnp.asarray([h, d], jnp.uint32))
        np.testing.assert_array_equal(ours(key, d, h), expected)
    np.testing.assert_array_equal(ours(key, 42, 0), jax.random.key_data(jax.random.fold_in(key, 42)))
    keys = {tuple(np.asarray(jax.random.key_data(step_key(key, jnp.int32(s), jnp.int32(e)))))
            for s in (0, 1, 2) for e in (0, 1, 2)}  # fmt: skip
    assert len(keys) == 9
    rbg = jax.random.key(4, impl="rbg")
    np.testing.assert_array_equal(
        jax.random.key_data(fold_in(rbg, 9, high=2)),
        jax.random.key_data(jax.random.fold_in(jax.random.fold_in(rbg, 9), 2)),
    )
    np.testing.assert_array_equal(
        jax.random.key_data(fold_in(rbg, 9, high=0)), jax.random.key_data(jax.random.fold_in(rbg, 9))
    )
