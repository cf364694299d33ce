"""phi1(z) = (e^z - 1)/z, the function of every exponential-Euler step (brainsim._phi1).

The reference is numpy's expm1 in extended precision (x86 long double: 64-bit mantissa), so
it is exact to well below a float64 ulp. Bounds are in units of the dtype's eps (2^-23 for
float32, 2^-52 for float64); measured: 1.5 eps in float32 and 1.8 eps in float64 over the
ranges below (the previous series-plus-exp form: 5.3 and 130 eps).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from brainsim._phi1 import phi1


def reference(z):
    z = np.asarray(z, np.longdouble)
    safe = np.where(z == 0, 1, z)
    return np.where(z == 0, 1, np.expm1(safe) / safe)


def sample(dtype):
    finfo = np.finfo(dtype)
    top = 88.3 if dtype == np.float32 else 709.0
    parts = [
        np.linspace(-100.0, top, 200_001),
        np.linspace(-1.0, 1.0, 100_001),
        np.linspace(-1e-3, 1e-3, 2_001),
        # near the branch points k = 0 / k = +-1 and k = +-1 / +-2 (z = +-ln2/2, +-3 ln2/2)
        np.linspace(0.34, 0.36, 2_001),
        np.linspace(-0.36, -0.34, 2_001),
        np.linspace(1.03, 1.05, 2_001),
        np.linspace(-1.05, -1.03, 2_001),
        -np.logspace(np.log10(finfo.tiny) + 1, 2, 3_000),
        np.logspace(np.log10(finfo.tiny) + 1, 1.9, 3_000),
        [0.0, -0.0],
    ]
    if dtype == np.float64:
        parts.append(np.linspace(-800.0, -100.0, 100_001))
    return np.concatenate([np.asarray(p, np.float64) for p in parts]).astype(dtype)


@pytest.mark.parametrize("dtype, bound_eps", [(np.float32, 2.0), (np.float64, 2.5)])
def test_phi1_is_accurate_to_a_few_ulp_over_the_whole_range(x64, dtype, bound_eps):
    z = sample(dtype)
    got = np.asarray(jax.jit(phi1)(jnp.asarray(z)))
    assert got.dtype == dtype
    expected = reference(z)
    # Results below the smallest normal number are flushed to zero on the CPU.
    normal = expected > np.finfo(dtype).tiny
    error = np.abs(got[normal].astype(np.longdouble) - expected[normal]) / expected[normal]
    worst = int(np.argmax(error))
    assert error[worst] < bound_eps * np.finfo(dtype).eps, (
        f"{float(error[worst]) / np.finfo(dtype).eps:.2f} eps at z = {z[normal][worst]!r}"
    )


def test_phi1_has_no_cancellation_near_zero():
    # The naive (e^z - 1)/z has no correct digit at |z| < eps: phi1 is 1 + z/2 there.
    z = jnp.array([1e-30, -1e-30, 1e-8, -1e-8, 0.0], jnp.float32)
    np.testing.assert_array_equal(np.asarray(phi1(z)), np.ones(5, np.float32))
    z = jnp.array([1e-4, -1e-4], jnp.float32)
    np.testing.assert_allclose(np.asarray(phi1(z)), 1 + np.array([1e-4, -1e-4]) / 2, rtol=1e-7)


def test_phi1_limits_and_special_values():
    z = jnp.array([-jnp.inf, -1e38, -200.0, jnp.nan, 88.0, 89.0], jnp.float32)
    got = np.asarray(phi1(z))
    assert got[0] == 0.0
    assert got[1] == pytest.approx(1e-38, rel=1e-6) or got[1] == 0.0  # -1/z, or flushed
    assert got[2] == pytest.approx(1 / 200.0, rel=1e-7)  # e^z is below float32's range: -1/z
    assert np.isnan(got[3])
    assert got[4] == pytest.approx(float(np.expm1(np.float64(88.0)) / 88.0), rel=2e-7)
    assert got[5] == np.inf  # e^89 overflows float32


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_phi1_half_precision_is_computed_in_float32_and_keeps_the_dtype(dtype):
    z = jnp.array([-3.0, -0.2, 0.0, 0.5], dtype)
    got = phi1(z)
    assert got.dtype == dtype
    expected = reference(np.asarray(z.astype(jnp.float32)))
    np.testing.assert_allclose(
        np.asarray(got, np.float64), expected.astype(np.float64), rtol=float(jnp.finfo(dtype).eps)
    )


def test_phi1_of_integers_and_python_scalars_is_floating():
    assert phi1(2).dtype == jnp.result_type(float)
    assert float(phi1(2)) == pytest.approx(float(np.expm1(2.0) / 2.0), rel=1e-6)
    assert float(phi1(-0.5)) == pytest.approx(float(np.expm1(-0.5) / -0.5), rel=1e-6)


def test_phi1_gradient_is_the_derivative_everywhere(x64):
    # d/dz (e^z - 1)/z = (z e^z - e^z + 1) / z^2, with the limit 1/2 at 0; checked on both
    # sides of every branch point of the range reduction.
    z = np.array(
        [
            -60.0,
            -3.0,
            -1.0401,
            -1.0397,
            -0.3466,
            -0.3465,
            -1e-3,
            0.0,
            1e-3,
            0.3465,
            0.3466,
            1.0397,
            1.0401,
            2.0,
            30.0,
        ]
    )
    got = np.asarray(jax.vmap(jax.grad(phi1))(jnp.asarray(z)))
    zl = z.astype(np.longdouble)
    safe = np.where(zl == 0, 1, zl)
    exact = np.where(zl == 0, 0.5, (zl * np.exp(zl) - np.expm1(zl)) / safe**2)
    # Near 0 the closed form itself cancels in long double; 1e-9 is still far below any
    # integrator's need.
    np.testing.assert_allclose(got, exact.astype(np.float64), rtol=1e-9)


def test_phi1_is_continuous_across_the_branch_points():
    # Adjacent float32 values on either side of k = 0 / k = +-1 differ by about an ulp.
    for edge in (np.log(2.0) / 2, -np.log(2.0) / 2, 1.5 * np.log(2.0), -1.5 * np.log(2.0)):
        z = np.float32(edge) + np.arange(-8, 9, dtype=np.float32) * np.spacing(np.float32(edge))
        got = np.asarray(phi1(jnp.asarray(z)), np.float64)
        steps = np.abs(np.diff(got)) / got[:-1]
        assert steps.max() < 4 * np.finfo(np.float32).eps, (edge, steps)
