"""``kernels.fast_sum``: equal to ``jnp.sum`` in every implementation, under jit, vmap and
differentiation, and on CPU free of the windowed reductions it exists to avoid."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brainsim.kernels import Implementation

from brainsim import kernels

native_only = pytest.mark.skipif(
    not kernels.native_cpu_available(), reason=f"native kernels: {kernels.native_cpu_status()}"
)
IMPLEMENTATIONS = [
    Implementation.REFERENCE,
    pytest.param(Implementation.NATIVE_CPU, marks=native_only),
    Implementation.AUTO,
]
# Around the kernel's block of 16 partial sums (a tail only, one block, blocks and a tail),
# and sizes that XLA's own reduction splits into windows of 32.
SIZES = [0, 1, 15, 16, 17, 33, 800, 3199, 3200, 9001]


def _sum(impl, **kw):
    return jax.jit(lambda x: kernels.fast_sum(x, implementation=impl, **kw))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda i: i.value)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_equals_the_exact_sum(impl, n, dtype, request):
    if dtype == "float64":
        request.getfixturevalue("x64")
    x = jax.random.normal(jax.random.key(n), (n,), dtype)
    got = _sum(impl)(x)
    assert got.dtype == x.dtype and got.shape == ()
    # Sums of the same values in different orders: within the rounding of n additions of
    # values of magnitude ~1 of the sum NumPy computes in float64.
    eps = float(jnp.finfo(dtype).eps)
    np.testing.assert_allclose(got, np.sum(np.asarray(x, np.float64)), rtol=0, atol=4 * n * eps)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda i: i.value)
@pytest.mark.parametrize("n", [800, 3001, 6000])
def test_spike_counts_are_exact(impl, n):
    """0/1 values (spike vectors) sum to the exact count, as float32."""
    spikes = jax.random.bernoulli(jax.random.key(1), 0.3, (n,))
    count = int(np.sum(np.asarray(spikes)))
    got = _sum(impl, dtype=jnp.float32)(spikes)
    assert got.dtype == jnp.float32 and float(got) == count
    assert float(_sum(impl)(spikes.astype(jnp.float32))) == count


def test_integers_and_booleans_are_summed_as_jnp_sum_does():
    spikes = jax.random.bernoulli(jax.random.key(1), 0.3, (3001,))
    count = int(np.sum(np.asarray(spikes)))
    assert int(_sum(Implementation.AUTO)(spikes)) == count
    ints = spikes.astype(jnp.int32) * 300
    assert int(_sum(Implementation.AUTO)(ints)) == 300 * count


def test_any_shape_is_summed_whole():
    x = jnp.arange(3 * 700, dtype=jnp.float32).reshape(3, 700)
    assert float(_sum(Implementation.AUTO)(x)) == float(np.arange(2100).sum())


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda i: i.value)
@pytest.mark.parametrize("n", [17, 3001])
@pytest.mark.parametrize("position", ["first", "block", "tail"])
@pytest.mark.parametrize("bad, expected", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_nan_and_inf_propagate_from_any_position(impl, n, position, bad, expected):
    x = np.ones(n, np.float32)
    x[{"first": 0, "block": 7, "tail": n - 1}[position]] = bad
    assert repr(float(_sum(impl)(jnp.asarray(x)))) == expected


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda i: i.value)
def test_opposite_infinities_give_nan(impl):
    x = np.zeros(3001, np.float32)
    x[5], x[2999] = np.inf, -np.inf
    assert np.isnan(float(_sum(impl)(jnp.asarray(x))))


@native_only
def test_cpu_path_is_one_kernel_call_without_windowed_reductions():
    """The reason for the op: XLA's CPU reduce of 3200 values compiles to windowed reductions
    (scalar kernels); the native sum is one call, also for a whole vmapped batch."""
    x = jnp.ones((4, 3200), jnp.float32)
    assert "reduce-window(" in jax.jit(jnp.sum).lower(x[0]).compile().as_text()
    hlo = jax.jit(jax.vmap(kernels.fast_sum)).lower(x).compile().as_text()
    assert "reduce-window(" not in hlo
    calls = [line for line in hlo.split("\n") if "brainsim_sum" in line and "custom-call(" in line]
    assert len(calls) == 1, calls


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda i: i.value)
def test_vmap_grad_and_jvp(impl):
    x = jax.random.normal(jax.random.key(2), (5, 3001))

    def f(v):
        return kernels.fast_sum(v, implementation=impl)

    exact = np.asarray(x, np.float64).sum(axis=1)
    np.testing.assert_allclose(jax.jit(jax.vmap(f))(x), exact, rtol=0, atol=1e-3)
    np.testing.assert_allclose(
        jax.jit(jax.vmap(jax.vmap(f)))(x.reshape(5, 1, 3001)),
        exact.reshape(5, 1),
        rtol=0,
        atol=1e-3,
    )
    # The gradient of a weighted sum through it, and of the sum itself.
    w = jnp.linspace(-1.0, 1.0, 3001)
    np.testing.assert_allclose(jax.grad(lambda v: f(w * v))(x[0]), w, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.vmap(jax.grad(f)))(x), np.ones((5, 3001)))
    t = jax.random.normal(jax.random.key(3), (3001,))
    value, tangent = jax.jvp(f, (x[0],), (t,))
    np.testing.assert_allclose(value, exact[0], rtol=0, atol=1e-3)
    np.testing.assert_allclose(tangent, np.asarray(t, np.float64).sum(), rtol=0, atol=1e-3)


@pytest.mark.parametrize("enable_x64", [False, True])
@pytest.mark.parametrize("n", [10, 3001])
@pytest.mark.parametrize("in_dtype", ["bool", "int8", "int32", "float16", "float32"])
@pytest.mark.parametrize("dtype", [None, "int32", "float32"])
def test_result_dtype_is_jnp_sums(enable_x64, n, in_dtype, dtype, request):
    """A loop carry that adds the sum must keep its type: the result dtype is ``jnp.sum``'s,
    with and without x64."""
    if enable_x64:
        request.getfixturevalue("x64")
    x = jnp.ones((n,), in_dtype)
    got = jax.jit(lambda x: kernels.fast_sum(x, dtype=dtype))(x)
    want = jnp.sum(x, dtype=dtype)
    assert got.dtype == want.dtype
    assert float(got) == float(want)


def test_bad_implementation_and_dtype_are_named():
    with pytest.raises(ValueError, match="fast_sum: `implementation` must be one of AUTO"):
        kernels.fast_sum(jnp.ones(3), implementation=Implementation.PALLAS_TRITON)
    with pytest.raises(
        ValueError, match="fast_sum: the native kernel sums float32 and float64; got int32"
    ):
        kernels.fast_sum(jnp.ones(3, jnp.int32), implementation=Implementation.NATIVE_CPU)


SEGMENTS = [(1,), (0, 5, 0), (15, 16, 17), (800, 3200), (3200, 800, 2500, 3, 1, 0, 9001)]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda i: i.value)
@pytest.mark.parametrize("sizes", SEGMENTS, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_segment_sums_equal_the_sums_of_the_slices(impl, sizes, dtype, request):
    """Each segment's sum is the exact sum of its slice (to the rounding of its additions);
    spike vectors give exact counts; vmap of a batch is one call with every row's sums."""
    if dtype == "float64":
        request.getfixturevalue("x64")
    n = sum(sizes)
    x = jax.random.normal(jax.random.key(n), (n,), dtype)
    got = jax.jit(lambda v: kernels.segment_sums(v, sizes, implementation=impl))(x)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    exact = [np.asarray(x, np.float64)[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    eps = float(jnp.finfo(dtype).eps)
    assert got.shape == (len(sizes),) and got.dtype == x.dtype
    np.testing.assert_allclose(got, exact, rtol=0, atol=4 * max(n, 1) * eps)
    spikes = jax.random.bernoulli(jax.random.key(1), 0.3, (4, n))
    counts = np.stack([[row[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
                       for row in np.asarray(spikes, np.int64)])  # fmt: skip
    batched = jax.jit(jax.vmap(
        lambda v: kernels.segment_sums(v, sizes, dtype=jnp.float32, implementation=impl)
    ))(spikes)  # fmt: skip
    np.testing.assert_array_equal(batched, counts)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda i: i.value)
def test_segment_sums_gradient_is_the_segment_indicator(impl):
    """d sums[s] / dx is 1 on segment s and 0 elsewhere; a weighted combination of the sums
    has the weights, segment by segment, as its gradient (reverse and forward mode)."""
    sizes = (7, 0, 40, 13)
    x = jax.random.normal(jax.random.key(5), (60,))
    c = jnp.asarray([2.0, -1.0, 0.5, 3.0])
    grad = jax.grad(lambda v: jnp.dot(c, kernels.segment_sums(v, sizes, implementation=impl)))(x)
    np.testing.assert_array_equal(grad, np.repeat(np.asarray(c), sizes))
    t = jax.random.normal(jax.random.key(6), (60,))
    _, tangent = jax.jvp(lambda v: kernels.segment_sums(v, sizes, implementation=impl), (x,), (t,))
    np.testing.assert_allclose(tangent, [t[:7].sum(), 0.0, t[7:47].sum(), t[47:].sum()], atol=1e-5)


@native_only
def test_segment_sums_are_one_kernel_call():
    """Eight populations' counts: one native call, not eight (nor windowed reductions)."""
    sizes = (2068, 583, 2192, 548, 485, 106, 1440, 295)
    x = jnp.ones((sum(sizes),), jnp.float32)
    hlo = jax.jit(lambda v: kernels.segment_sums(v, sizes)).lower(x).compile().as_text()
    calls = [line for line in hlo.split("\n") if "brainsim_sum" in line and "custom-call(" in line]
    assert len(calls) == 1 and "reduce-window(" not in hlo, calls


def test_segment_sums_bad_input_is_named():
    with pytest.raises(ValueError, match=r"segment_sums: `sizes` must be .* adding up to x.size = 5; got \(2, 2\)"):
        kernels.segment_sums(jnp.ones(5), (2, 2))
    with pytest.raises(ValueError, match=r"segment_sums: `sizes` .* got \(6, -1\)"):
        kernels.segment_sums(jnp.ones(5), (6, -1))
    with pytest.raises(ValueError, match="segment_sums: `x` must be one-dimensional; got shape"):
        kernels.segment_sums(jnp.ones((2, 3)), (6,))
