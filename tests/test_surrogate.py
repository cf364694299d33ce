"""Surrogate spike functions: Heaviside forward, the documented derivative backward."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from brainsim import surrogate as sg


def _formulas():
    """(surrogate, derivative formula, a primitive whose derivative the formula is, integral
    of the formula over the real line) for non-default scales."""
    b = 2.5
    return {
        "FastSigmoid": (sg.FastSigmoid(b), lambda x: 1 / (1 + b * np.abs(x)) ** 2,
                        lambda x: x / (1 + b * np.abs(x)), 2 / b),
        "Sigmoid": (sg.Sigmoid(b), lambda x: b * np.exp(-b * x) / (1 + np.exp(-b * x)) ** 2,
                    lambda x: 1 / (1 + np.exp(-b * x)), 1.0),
        "Arctan": (sg.Arctan(b), lambda x: (b / 2) / (1 + (math.pi * b * x / 2) ** 2),
                   lambda x: np.arctan(math.pi * b * x / 2) / math.pi, 1.0),
        "Triangle": (sg.Triangle(b, 0.3), lambda x: 0.3 * np.maximum(0, 1 - np.abs(b * x)),
                     lambda x: 0.3 * (np.clip(b * x, -1, 1)
                                      - np.sign(x) * np.clip(b * x, -1, 1) ** 2 / 2) / b,
                     0.3 / b),
        "Exponential": (sg.Exponential(b), lambda x: 0.5 * b * np.exp(-b * np.abs(x)),
                        lambda x: 0.5 * np.sign(x) * (1 - np.exp(-b * np.abs(x))), 1.0),
        "Rectangular": (sg.Rectangular(b), lambda x: np.where(np.abs(x) < 0.5 / b, b, 0.0),
                        lambda x: np.clip(b * x, -0.5, 0.5), 1.0),
    }


NAMES = list(_formulas())
# Points avoiding the kinks of Triangle/Rectangular (|x| = 1/b, 1/(2b)) and x = 0 for |x|.
X = np.concatenate([np.linspace(-3.0, -0.01, 157), np.linspace(0.013, 3.0, 151)])


@pytest.mark.parametrize("name", NAMES)
def test_forward_is_exactly_heaviside(name):
    s = _formulas()[name][0]
    x = jnp.array([-1e3, -1.0, -1e-6, -1e-30, 0.0, 1e-30, 1e-6, 1.0, 1e3], jnp.float32)
    np.testing.assert_array_equal(s(x), [0, 0, 0, 0, 1, 1, 1, 1, 1])
    assert s(x).dtype == jnp.float32
    # Under jit too.
    np.testing.assert_array_equal(jax.jit(lambda v: s(v))(x), s(x))


@pytest.mark.parametrize("name", NAMES)
def test_grad_is_the_documented_derivative(name):
    s, formula, _, _ = _formulas()[name]
    g = jax.vmap(jax.grad(lambda x: s(x)))(jnp.asarray(X, jnp.float32))
    np.testing.assert_allclose(g, formula(X), rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(s.derivative(jnp.asarray(X)), formula(X), rtol=2e-6, atol=1e-6)
    # The chain rule applies to the argument (v - V_th) scale.
    g2 = jax.grad(lambda x: jnp.sum(s(3.0 * x)))(jnp.asarray(X / 3, jnp.float32))
    np.testing.assert_allclose(g2, 3 * formula(X), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_derivative_is_derivative_of_its_primitive(name, x64):
    # Central differences of the closed-form primitive (error O(h^2) ≈ 1e-10 relative away from
    # kinks) against derivative() itself.
    s, _, primitive, _ = _formulas()[name]
    h = 1e-5
    fd = (primitive(X + h) - primitive(X - h)) / (2 * h)
    np.testing.assert_allclose(np.asarray(s.derivative(jnp.asarray(X))), fd, rtol=1e-7,
                               atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_derivative_integral(name, x64):
    # The area under the surrogate (trapezoid on a fine grid). FastSigmoid and Arctan decay like
    # 1/x^2: add their exact tails beyond ±L.
    s, _, _, area = _formulas()[name]
    L, b = 200.0, 2.5
    x = np.linspace(-L, L, 4_000_001)
    y = np.asarray(s.derivative(jnp.asarray(x)))
    total = np.trapezoid(y, x)
    tails = {"FastSigmoid": 2 / (b * (1 + b * L)),
             "Arctan": 2 / math.pi * (math.pi / 2 - math.atan(math.pi * b * L / 2))}
    total += tails.get(name, 0.0)
    # Trapezoid error at the kinks of the piecewise-linear/constant shapes is O(step) = 1e-4.
    np.testing.assert_allclose(total, area, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_surrogate_scale_receives_no_gradient_and_is_validated(name):
    s = _formulas()[name][0]
    g = jax.grad(lambda m: jnp.sum(m(jnp.asarray(X, jnp.float32))))(s)
    for leaf in jax.tree.leaves(g):
        np.testing.assert_array_equal(leaf, 0.0)
    with pytest.raises(ValueError, match="`scale`"):
        type(s)(scale=0.0)
