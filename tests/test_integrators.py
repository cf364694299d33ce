"""Convergence order of the integrators under dt halving, and exactness of exponential Euler
on linear dynamics.

Problems (smooth, nonlinear, no spikes): the AdEx membrane and adaptation near threshold, and
the Hodgkin–Huxley squid axon under a subthreshold step. The reference is an independent
classic RK4 written here on the equations themselves (not on the models' linearised form),
run with a step 20x smaller than the finest tested one, in float64. The order is the slope
of log(error) against log(dt) over three halvings (two for RK4); the fitted slope must be
within 0.2 of the theory and every local slope within 0.3 (measured: within 0.05, except
0.09 for Heun on HH and 0.04 for exponential Euler on HH at the largest step).
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brainsim as bs


def adex_field(y, I=500.0):
    v, w = y
    C, g_L, E_L, V_T, D_T, tau_w, a = 281.0, 30.0, -70.6, -50.4, 2.0, 144.0, 4.0
    dv = (-g_L * (v - E_L) + g_L * D_T * jnp.exp((v - V_T) / D_T) - w + I) / C
    dw = (a * (v - E_L) - w) / tau_w
    return (dv, dw)


def hh_field(y, I=1.5):
    v, m, h, n = y
    am = 0.1 * (v + 40) / (1 - jnp.exp(-(v + 40) / 10))
    bm = 4 * jnp.exp(-(v + 65) / 18)
    ah = 0.07 * jnp.exp(-(v + 65) / 20)
    bh = 1 / (1 + jnp.exp(-(v + 35) / 10))
    an = 0.01 * (v + 55) / (1 - jnp.exp(-(v + 55) / 10))
    bn = 0.125 * jnp.exp(-(v + 65) / 80)
    dv = I - 120 * m**3 * h * (v - 50) - 36 * n**4 * (v + 77) - 0.3 * (v + 54.387)
    return (dv, am * (1 - m) - bm * m, ah * (1 - h) - bh * h, an * (1 - n) - bn * n)


def reference(field, y0, t_end, dt):
    def rk4(y, _):
        def add(y, k, c):
            return jax.tree.map(lambda a, b: a + c * b, y, k)

        k1 = field(y)
        k2 = field(add(y, k1, dt / 2))
        k3 = field(add(y, k2, dt / 2))
        k4 = field(add(y, k3, dt))
        return jax.tree.map(
            lambda y, a, b, c, d: y + dt / 6 * (a + 2 * b + 2 * c + d), y, k1, k2, k3, k4
        ), None

    n = int(round(t_end / dt))
    return jax.jit(lambda y: jax.lax.scan(rk4, y, None, length=n)[0])(y0)


def adex_problem():
    model = bs.AdEx(I_e=500.0)
    y0 = (jnp.array([-52.0]), jnp.array([0.0]))
    return (
        model.linear_parts(bs.Drive.zeros(1, jnp.float64)),
        adex_field,
        y0,
        10.0,
        [0.2, 0.1, 0.05, 0.025],
    )


def hh_problem():
    model = bs.HodgkinHuxley(I_e=1.5)
    s = model.init(1, dtype=jnp.float64)
    y0 = (s.v, s.m, s.h, s.n)
    return (
        model.linear_parts(bs.Drive.zeros(1, jnp.float64)),
        hh_field,
        y0,
        4.0,
        [0.04, 0.02, 0.01, 0.005],
    )


@functools.cache
def cached_reference(name):
    _, field, y0, t_end, dts = {"adex_problem": adex_problem, "hh_problem": hh_problem}[name]()
    return reference(field, y0, t_end, dts[-1] / 20)


def solve(integrator, parts, y0, t_end, dts):
    """Final states for every step in ``dts`` (one compilation: dt and n are traced)."""

    @jax.jit
    def run(y, dt, n):
        return jax.lax.fori_loop(0, n, lambda i, y: integrator.step(parts, y, dt), y)

    return [run(y0, jnp.float64(dt), int(round(t_end / dt))) for dt in dts]


def error(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("problem", [adex_problem, hh_problem], ids=["adex", "hh"])
@pytest.mark.parametrize(
    "integrator, order",
    [(bs.Euler(), 1), (bs.Heun(), 2), (bs.RK4(), 4), (bs.ExponentialEuler(), 1)],
    ids=["euler", "heun", "rk4", "expeuler"],
)
def test_convergence_order(x64, problem, integrator, order):
    parts, field, y0, t_end, dts = problem()
    assert integrator.order == order
    if order == 4:
        dts = [2 * dt for dt in dts[:3]]  # errors stay above float64 round-off (~1e-12)
    ref = cached_reference(problem.__name__)
    errors = np.array([error(y, ref) for y in solve(integrator, parts, y0, t_end, dts)])
    slopes = np.diff(np.log(errors)) / np.diff(np.log(dts))
    fitted = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    assert abs(fitted - order) < 0.2, (errors, slopes)
    assert np.all(np.abs(slopes - order) < 0.3), (errors, slopes)


@pytest.mark.parametrize("dt", [0.1, 1.0, 7.0])
def test_exponential_euler_is_exact_for_linear_dynamics(x64, dt):
    # LIF with a conductance input: dV/dt = -(g_L + g)/C V + (g_L E_L + I + i)/C, solved in
    # closed form for any step; Euler would be unstable for the largest step.
    lif = bs.LIF(C_m=200.0, tau_m=20.0, E_L=-60.0, V_th=100.0, V_reset=-70.0, I_e=50.0)
    drive = bs.Drive(jnp.array([30.0 * 0.0 + 100.0]), jnp.array([30.0]))
    v0 = jnp.array([-75.0])
    v = lif.subthreshold(v0, drive, dt)
    rate = (10.0 + 30.0) / 200.0
    v_inf = (10.0 * -60.0 + 50.0 + 100.0) / 40.0
    exact = v_inf + (-75.0 - v_inf) * np.exp(-rate * dt)
    assert float(v[0]) == pytest.approx(exact, rel=1e-13)
    # the same holds for the ALIF adaptation variable over many steps
    alif = bs.ALIF(tau_a=50.0, V_th=1e3, V_reset=-70.0)
    state = alif.init(1, dtype=jnp.float64)._replace(a=jnp.array([2.0]))
    step = eqx.filter_jit(alif.step)
    for _ in range(10):
        state, _ = step(state, bs.Drive.zeros(1, jnp.float64), 0.0, dt, jax.random.key(0))
    assert float(state.a[0]) == pytest.approx(2.0 * np.exp(-10 * dt / 50.0), rel=1e-13)


def test_integrators_preserve_pytree_structure_and_dtype():
    parts = bs.AdEx(I_e=500.0).linear_parts(bs.Drive.zeros(3, jnp.float32))
    y0 = (jnp.full((3,), -60.0, jnp.float32), jnp.zeros((3,), jnp.float32))
    for integrator in (bs.Euler(), bs.Heun(), bs.RK4(), bs.ExponentialEuler()):
        y = integrator.step(parts, y0, 0.1)
        assert jax.tree.structure(y) == jax.tree.structure(y0)
        assert all(x.dtype == jnp.float32 and x.shape == (3,) for x in y)
