r""":math:`\varphi_1(z) = (e^z - 1)/z`, the function behind exponential integration.

Every exponential-Euler step (the LIF membrane, the exponential synapses, the gates of
Hodgkin–Huxley) evaluates :math:`\varphi_1` once per neuron per step (with conductance input
:math:`z` changes every step, so it cannot be precomputed). This module evaluates it with one
polynomial and one division and no ``exp`` call, accurate over the whole range, where the
naive :math:`(e^z - 1)/z` loses all digits as :math:`z \to 0`. (The previous form, a Taylor
series for :math:`|z| < 0.1` selected against ``(exp(z) - 1)/z``, computed both branches for
every neuron: 5 eps of error in float32, 130 in float64, and 3 % more time per COBA 4k step.)

Method (Cody–Waite range reduction, as in libm's ``expm1``):

.. math::
    z = k \ln 2 + r, \quad k = \operatorname{round}(z / \ln 2), \quad |r| \le \tfrac{\ln 2}{2},
    \qquad e^z - 1 = 2^k (e^r - 1) + (2^k - 1), \qquad e^r - 1 = r\, p(r),

where :math:`p` is the Taylor polynomial of :math:`\varphi_1` itself (degree 6 in float32,
12 in float64: truncation below a quarter of an ulp for :math:`|r| \le \ln 2 / 2`).

* :math:`k = 0` (:math:`|z| \lesssim 0.35`, the usual regime, ``dt`` much shorter than the
  time constants): :math:`\varphi_1(z) = p(z)`, no cancellation at all.
* :math:`k \ne 0`: :math:`\varphi_1(z) = \bigl(2^k\, r\, p(r) + (2^k - 1)\bigr) / z`; both terms
  are exact or accurate to an ulp and :math:`|z| > 0.34`, so the quotient is too.

:math:`2^k` is built from its bits (exponent field ``k + bias``), so no ``exp`` or ``exp2`` is
evaluated. :math:`z` is clamped below where :math:`e^z` would leave the normal range
(there :math:`\varphi_1(z) = -1/z` to working precision, which the clamped formula gives),
and :math:`k` above at ``bias`` (the largest finite power of two): in the last
:math:`\ln 2 / 2` below the overflow of :math:`e^z` (:math:`z > 88.38` in float32,
:math:`709.09` in float64) :math:`|r|` reaches :math:`\ln 2` and the truncation error grows
to 7 eps (float32) and 160 eps (float64); beyond, the result is ``inf`` as :math:`e^z` is.
There the solution grows by :math:`10^{38}` in one step. NaN and ``+inf`` give NaN,
``-inf`` gives 0.

Measured error against ``expm1(z)/z`` in extended precision (``tests/test_phi1.py``), below
the overflow zone: 1.5 eps in float32 and 1.8 eps in float64. float16 and bfloat16 are
evaluated in float32 and rounded once.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp
from jax import lax


class _Format(NamedTuple):
    degree: int  # of the Taylor polynomial of phi1 on |r| <= ln2/2
    int_dtype: type
    mantissa_bits: int
    exponent_bias: int
    z_min: float  # e^z_min is still a normal number
    ln2_hi: float  # ln 2 = ln2_hi + ln2_lo, ln2_hi with enough trailing zero bits that
    ln2_lo: float  # k * ln2_hi is exact for every k in range (Cody–Waite)


_FORMATS = {
    jnp.dtype(jnp.float32): _Format(
        6, jnp.int32, 23, 127, -87.0, 0.693145751953125, 1.428606765330187e-06
    ),
    jnp.dtype(jnp.float64): _Format(
        12, jnp.int64, 52, 1023, -708.0, 0.6931471803691238, 1.9082149292705877e-10
    ),
}


def _taylor_phi1(r, degree: int):
    """:math:`\\sum_{n=0}^{degree} r^n / (n+1)!` in Horner form."""
    coefficients = [1.0 / math.factorial(n + 1) for n in range(degree + 1)]
    p = coefficients[-1]
    for c in reversed(coefficients[:-1]):
        p = c + r * p
    return p


def _power_of_two(k, fmt: _Format, dtype):
    """:math:`2^k` for integer-valued float ``k`` in ``[1 - bias, bias]``, from its bits."""
    exponent = k.astype(fmt.int_dtype) + fmt.exponent_bias
    return lax.bitcast_convert_type(exponent << fmt.mantissa_bits, dtype)


def phi1(z):
    r""":math:`\varphi_1(z) = (e^z - 1)/z`, with the limit 1 at ``z = 0``, elementwise.

    Accurate to a few ulp for every ``z`` (module docstring: method and measured error);
    differentiable (the range-reduction integer ``k`` is piecewise constant).
    """
    z = jnp.asarray(z)
    if not jnp.issubdtype(z.dtype, jnp.floating):
        z = z.astype(jnp.result_type(float))
    dtype = z.dtype
    fmt = _FORMATS.get(dtype)
    if fmt is None:  # float16 / bfloat16: evaluate in float32, round once
        return phi1(z.astype(jnp.float32)).astype(dtype)
    clamped = jnp.maximum(z, fmt.z_min)
    k = jnp.minimum(jnp.round(clamped * (1.0 / math.log(2.0))), fmt.exponent_bias)
    r = (clamped - k * fmt.ln2_hi) - k * fmt.ln2_lo
    p = _taylor_phi1(r, fmt.degree)
    scale = _power_of_two(k, fmt, dtype)
    reduced = k == 0
    z_safe = jnp.where(reduced, jnp.ones_like(z), z)
    return jnp.where(reduced, p, (scale * (r * p) + (scale - 1.0)) / z_safe)
