"""Exponential and quadratic integrate-and-fire: rheobase and interspike intervals against
closed forms (QIF) and quadrature (ExpIF)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brainsim as bs


def run(model, current, dt, state=None):
    current = jnp.asarray(current, jnp.float32)
    state = model.init(current.shape[1]) if state is None else state

    @jax.jit
    def go(state, current):
        def body(s, i):
            s, spikes = model.step(s, bs.Drive(i, jnp.zeros_like(i)), 0.0, dt, jax.random.key(0))
            return s, (s.v, spikes)

        return jax.lax.scan(body, state, current)

    state, (v, spikes) = go(state, current)
    return np.asarray(v), np.asarray(spikes), state


def steady_isi(spikes, dt):
    """Mean of the last ISIs of each column (the first interval starts from rest)."""
    out = []
    for j in range(spikes.shape[1]):
        t = np.nonzero(spikes[:, j])[0] * dt
        out.append(np.mean(np.diff(t)[1:]))
    return np.array(out)


def qif_period(current, C=100.0, k=0.7, E_L=-60.0, V_c=-40.0, V_reset=-60.0, V_peak=35.0):
    D = current / k - (V_c - E_L) ** 2 / 4
    s = np.sqrt(D)
    V_m = 0.5 * (E_L + V_c)
    return C / (k * s) * (np.arctan((V_peak - V_m) / s) - np.arctan((V_reset - V_m) / s))


def test_qif_interspike_interval_closed_form():
    dt = 0.01
    currents = np.array([100.0, 200.0, 400.0])
    _, spikes, _ = run(bs.QIF(), np.broadcast_to(currents, (int(300 / dt), 3)), dt)
    # First-order integrator, spikes detected on the grid: error ≲ a few dt per interval;
    # measured relative errors < 0.3 %; 1 % tolerance.
    np.testing.assert_allclose(steady_isi(spikes, dt), qif_period(currents), rtol=0.01)


def test_qif_rheobase():
    # I_rh = k (V_c - E_L)^2 / 4 = 70 pA: just below, the neuron settles at the stable root;
    # just above, it fires with the long period of the bottleneck (≈ 250 ms at 72 pA).
    dt = 0.1
    v, spikes, _ = run(bs.QIF(), np.broadcast_to([69.0, 72.0], (int(1500 / dt), 2)), dt)
    assert spikes[:, 0].sum() == 0
    root = -50.0 - np.sqrt(100.0 - 69.0 / 0.7)  # lower root of k(V+60)(V+40) + I = 0
    # In float32 the approach stalls once dt·dV/dt < half an ulp of V (1.9e-6 mV), i.e.
    # |V - root| < 1.9e-5 / (dt·|λ|) ≈ 1e-3 mV with λ = -0.017/ms near the fold.
    assert v[-1, 0] == pytest.approx(root, abs=5e-3)
    assert spikes[:, 1].sum() >= 3
    np.testing.assert_allclose(steady_isi(spikes[:, 1:], dt), qif_period(72.0), rtol=0.02)


def eif_period(
    current, C=281.0, g_L=30.0, E_L=-70.6, V_T=-50.4, D_T=2.0, V_reset=-70.6, V_peak=0.0
):
    """T = ∫ C dV / F(V) from V_reset to V_peak, by composite Simpson on a fine grid."""
    v = np.linspace(V_reset, V_peak, 400001)
    F = -g_L * (v - E_L) + g_L * D_T * np.exp((v - V_T) / D_T) + current
    y = C / F
    h = v[1] - v[0]
    return h / 3 * (y[0] + y[-1] + 4 * y[1:-1:2].sum() + 2 * y[2:-1:2].sum())


def test_expif_interspike_interval_quadrature():
    dt = 0.01
    currents = np.array([700.0, 1000.0, 2000.0])
    _, spikes, _ = run(bs.ExpIF(), np.broadcast_to(currents, (int(300 / dt), 3)), dt)
    expected = np.array([eif_period(i) for i in currents])
    # measured relative errors < 0.2 % at dt = 0.01 ms (first order)
    np.testing.assert_allclose(steady_isi(spikes, dt), expected, rtol=0.01)


def test_expif_rheobase():
    i_rh = 30.0 * (-50.4 + 70.6 - 2.0)  # g_L (V_T - E_L - Δ_T) = 546 pA
    dt = 0.1
    _, spikes, _ = run(
        bs.ExpIF(), np.broadcast_to([0.99 * i_rh, 1.01 * i_rh], (int(1000 / dt), 2)), dt
    )
    assert spikes[:, 0].sum() == 0
    assert spikes[:, 1].sum() >= 3


def test_expif_is_adex_without_adaptation():
    dt = 0.1
    current = np.broadcast_to([600.0, 900.0], (3000, 2))
    v1, s1, _ = run(bs.ExpIF(), current, dt)
    v2, s2, _ = run(bs.AdEx(a=0.0, b=0.0), current, dt)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_allclose(v1, v2, rtol=0, atol=1e-4)


def test_large_overshoot_resets_exactly():
    for model in (bs.ExpIF(), bs.QIF()):
        state = model.init(1)._replace(v=jnp.asarray([model.V_peak - 0.1]))
        state, spikes = model.step(state, bs.Drive(jnp.array([1e7]), jnp.zeros(1)), 0.0, 1.0, jax.random.key(0))
        assert float(spikes[0]) == 1.0
        assert float(state.v[0]) == float(model.V_reset)


def test_validation():
    with pytest.raises(ValueError, match="`V_c`"):
        bs.QIF(V_c=-70.0)
    with pytest.raises(ValueError, match="`k` must be positive"):
        bs.QIF(k=0.0)
    with pytest.raises(ValueError, match="`Delta_T` must be positive"):
        bs.ExpIF(Delta_T=-1.0)
