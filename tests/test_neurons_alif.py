"""ALIF: the adaptive threshold on an exact LIF membrane."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brainsim as bs

DT = 0.1
PARAMS = dict(C_m=200.0, tau_m=20.0, E_L=-60.0, V_th=-50.0, V_reset=-60.0, t_ref=2.0)


def run(model, current, n_steps, state=None):
    current = jnp.broadcast_to(jnp.asarray(current, jnp.float32), (n_steps, np.size(current)))
    state = model.init(current.shape[1]) if state is None else state

    @jax.jit
    def go(state, current):
        def body(s, i):
            s, spikes = model.step(s, bs.Drive(i, jnp.zeros_like(i)), 0.0, DT, jax.random.key(0))
            return s, (s, spikes)

        return jax.lax.scan(body, state, current)

    state, (trace, spikes) = go(state, current)
    return trace, np.asarray(spikes), state


def test_beta_zero_is_lif():
    currents = [150.0, 300.0, 600.0]
    alif_trace, s_alif, _ = run(bs.ALIF(beta=0.0, **PARAMS), currents, 3000)
    lif_trace, s_lif, _ = run(bs.LIF(**PARAMS), currents, 3000)
    np.testing.assert_array_equal(s_alif, s_lif)
    # the resets are written differently (exact vs v - (v - V_reset)); rounding only
    np.testing.assert_allclose(alif_trace.v, lif_trace.v, atol=1e-4)


def test_adaptation_variable_decays_exactly():
    model = bs.ALIF(tau_a=150.0, **PARAMS)
    state = model.init(1)._replace(a=jnp.array([1.0]))
    trace, spikes, _ = run(model, [0.0], 2000, state=state)
    t = np.arange(1, 2001) * DT
    assert spikes.sum() == 0
    # exponential Euler is exact for this linear equation: float32 rounding only
    np.testing.assert_allclose(trace.a[:, 0], np.exp(-t / 150.0), rtol=2e-5)


def test_each_spike_adds_one_and_raises_the_threshold():
    model = bs.ALIF(beta=3.0, tau_a=500.0, **PARAMS)
    trace, spikes, _ = run(model, [400.0], 3000)
    steps = np.nonzero(spikes[:, 0])[0]
    a = np.asarray(trace.a[:, 0])
    jumps = a[steps] - a[steps - 1] * np.exp(-DT / 500.0)
    np.testing.assert_allclose(jumps, 1.0, rtol=1e-4)
    # the membrane crossed the adapted threshold, not the baseline one, at every spike
    v_before = np.asarray(trace.v[steps - 1, 0])
    assert np.all(v_before < -50.0 + 3.0 * a[steps - 1])


def test_adaptation_lowers_rate_and_lengthens_isis():
    currents = [400.0]
    _, s_lif, _ = run(bs.ALIF(beta=0.0, **PARAMS), currents, 10000)
    _, s_alif, _ = run(bs.ALIF(beta=2.0, tau_a=200.0, **PARAMS), currents, 10000)
    assert s_alif.sum() < 0.7 * s_lif.sum()
    isi = np.diff(np.nonzero(s_alif[:, 0])[0]) * DT
    assert isi[-1] > 1.5 * isi[0]
    # LIF's ISI is the closed form t_ref + τ ln((V_inf - V_reset)/(V_inf - V_th))
    v_inf = -60.0 + 400.0 / 10.0
    isi_lif = np.diff(np.nonzero(s_lif[:, 0])[0]) * DT
    expected = 2.0 + 20.0 * np.log((v_inf + 60.0) / (v_inf + 50.0))
    assert isi_lif[1:].mean() == pytest.approx(expected, abs=DT)


def test_validation():
    with pytest.raises(ValueError, match="`beta` must be >= 0"):
        bs.ALIF(beta=-1.0)
    with pytest.raises(ValueError, match="`tau_a` must be positive"):
        bs.ALIF(tau_a=0.0)
    with pytest.raises(ValueError, match="`V_th`"):
        bs.ALIF(V_th=-80.0, V_reset=-70.0)
