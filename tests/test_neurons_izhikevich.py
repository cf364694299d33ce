"""Izhikevich (2003) presets reproduce the firing patterns of the paper's Fig. 2.

Protocol as in the paper: from rest, a step of dc current ``I = 10`` (Izhikevich units,
``C_m = 1``) at t = 20 ms; forward Euler (the model's documented default) with dt = 0.1 ms.
Criteria are measurable properties of the spike trains, with margins read from the measured
values (given in each test) so that a change of pattern, not a rounding change, fails them.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brainsim as bs

DT = 0.1
ONSET = 20.0


def run(model, current, dt=DT, state=None):
    """Membrane trace and spike times (ms) of one neuron driven by ``current`` (per step)."""
    current = jnp.asarray(current, jnp.float32)[:, None]
    state = model.init(1) if state is None else state

    @jax.jit
    def go(state, current):
        def body(s, i):
            s, spikes = model.step(s, bs.Drive(i, jnp.zeros_like(i)), 0.0, dt, jax.random.key(0))
            return s, (s.v, spikes)

        return jax.lax.scan(body, state, current)

    state, (v, spikes) = go(state, current)
    return np.asarray(v[:, 0]), np.nonzero(np.asarray(spikes[:, 0]))[0] * dt, state


def step_response(name, amplitude=10.0, duration=320.0):
    n = int(round(duration / DT))
    current = np.zeros(n)
    current[int(round(ONSET / DT)) :] = amplitude
    _, times, _ = run(bs.Izhikevich.preset(name), current)
    return times - ONSET


def late_rate(times, start=220.0, stop=300.0):
    return np.sum((times >= start) & (times < stop)) / (stop - start) * 1e3


def test_regular_spiking_adapts():
    # Measured: ISIs 21.6, 45.2, 45.1, ... ms (steady 22 Hz).
    t = step_response("RS")
    isi = np.diff(t)
    assert isi[1] / isi[0] > 1.8  # the period roughly doubles after the first spike
    assert np.all(isi > 10.0)  # no bursts
    assert 10.0 <= late_rate(t) <= 30.0


def test_fast_spiking_is_fast_and_periodic():
    # Measured: ISIs 4.2, 5.8, 7.2, 7.6, 7.6, ... ms (steady 130 Hz). The short initial
    # transient is u relaxing with 1/a = 10 ms; afterwards the train is strictly periodic.
    fs = step_response("FS")
    rs = step_response("RS")
    isi = np.diff(fs)
    assert late_rate(fs) >= 100.0
    assert late_rate(fs) >= 4 * late_rate(rs)
    settled = isi[fs[1:] > 40.0]
    assert np.std(settled) / np.mean(settled) < 0.02
    assert isi[-1] / isi[0] < 2.0  # RS slows by more than 2x


def test_intrinsically_bursting_burst_then_tonic():
    # Measured: ISIs 2.5, 4.2 | 39.5, 31.6, 31.6, ... ms.
    t = step_response("IB")
    isi = np.diff(t)
    assert np.all(isi[:2] < 6.0)  # initial burst of three spikes
    assert np.all(isi[2:] > 25.0)  # then regular spiking, no more bursts
    assert np.std(isi[3:]) / np.mean(isi[3:]) < 0.05


def test_chattering_repeated_bursts():
    # Measured: bursts of 4-7 spikes (ISIs 1.6-5 ms) separated by 46-48 ms.
    t = step_response("CH")
    isi = np.diff(t)
    short, long = isi[isi < 8.0], isi[isi > 30.0]
    assert len(long) >= 4 and len(short) >= 3 * len(long)
    assert not np.any((isi >= 8.0) & (isi <= 30.0))  # bimodal: nothing in between
    assert long.min() > 5 * short.max()
    # every inter-burst interval is followed by an intra-burst one: bursts repeat
    after_long = np.nonzero(isi > 30.0)[0] + 1
    after_long = after_long[after_long < len(isi)]
    assert np.all(isi[after_long] < 8.0)


def test_low_threshold_spiking_fast_onset_then_gradual_adaptation():
    # Measured: ISIs 3.1, 3.8, 4.8, 6.8, 10.5, 13.4, 13.7, ... ms.
    t = step_response("LTS")
    isi = np.diff(t)
    assert isi[0] < 5.0  # high-frequency onset
    assert isi[-1] > 3 * isi[0]  # strong adaptation
    assert np.all(np.diff(isi[:6]) > 0)  # progressive slowing...
    assert np.max(isi[1:] / isi[:-1]) < 2.0  # ...without IB's abrupt pause after a burst


def test_thalamocortical_rebound_burst():
    # Hyperpolarise with I = -10 for 150 ms, then release to I = 0 (paper Fig. 2, TC lower
    # trace). Measured: silent during the hyperpolarisation (V ≈ -76 mV), rebound spikes at
    # 8.1, 15.5, 25.8 ms after release, then silence.
    n = int(round(400.0 / DT))
    current = np.zeros(n)
    current[int(50 / DT) : int(200 / DT)] = -10.0
    _, t, _ = run(bs.Izhikevich.preset("TC"), current)
    assert np.all(t > 200.0)
    rebound = t[t < 240.0]
    assert len(rebound) >= 2 and np.diff(rebound)[0] < 10.0
    # without the hyperpolarisation the cell simply rests
    _, t_rest, _ = run(bs.Izhikevich.preset("TC"), np.zeros(n))
    assert len(t_rest) == 0


def test_thalamocortical_tonic_when_depolarised():
    # Small depolarising step from rest: tonic spiking (measured steady ISI 50 ms at I = 1).
    n = int(round(400.0 / DT))
    current = np.zeros(n)
    current[int(50 / DT) :] = 1.0
    _, t, _ = run(bs.Izhikevich.preset("TC"), current)
    isi = np.diff(t)
    assert len(t) >= 5
    assert np.all(isi > 10.0)  # no burst from rest
    assert np.std(isi[2:]) / np.mean(isi[2:]) < 0.05


def _rest_and_eigenvalues(a, b):
    """Rest of v' = 0.04v^2 + 5v + 140 - u, u' = a(bv - u) at I = 0, and the eigenvalues of
    the Jacobian there."""
    v = np.roots([0.04, 5.0 - b, 140.0]).real.min()  # the lower root is the stable node/focus
    jac = np.array([[0.08 * v + 5.0, -1.0], [a * b, -a]])
    return v, np.linalg.eigvals(jac)


def test_resonator_rings_at_its_linear_frequency():
    # RZ has complex eigenvalues at rest: a small pulse causes a damped subthreshold
    # oscillation whose period must be 2π/Im(λ) (40.8 ms). RS (real eigenvalues) does not ring.
    a, b, _, _ = bs.Izhikevich.PRESETS["RZ"]
    v_rest, lam = _rest_and_eigenvalues(a, b)
    assert np.all(np.abs(lam.imag) > 0)
    period = 2 * np.pi / np.abs(lam.imag[0])
    model = bs.Izhikevich.preset("RZ", V_init=v_rest)
    n = int(round(300.0 / DT))
    current = np.zeros(n)
    current[int(10 / DT) : int(11 / DT)] = 1.0
    v, t, _ = run(model, current)
    assert len(t) == 0  # subthreshold
    x = v[int(11 / DT) :] - v_rest
    crossings = np.nonzero(np.diff(np.sign(x)) != 0)[0] * DT
    half_periods = np.diff(crossings)[1:5]
    # Euler with dt = 0.1 ms and the finite amplitude shift the period by < 1 % (measured
    # 20.3-20.4 ms half periods); 3 % separates it clearly from any other mechanism.
    np.testing.assert_allclose(2 * half_periods, period, rtol=0.03)

    a, b, _, _ = bs.Izhikevich.PRESETS["RS"]
    assert np.all(_rest_and_eigenvalues(a, b)[1].imag == 0)


def test_reset_and_recovery_jump():
    model = bs.Izhikevich.preset("CH", V_init=29.9)
    state = model.init(1)
    state, spikes = model.step(state, bs.Drive.zeros(1, jnp.float32), 0.0, DT, jax.random.key(0))
    assert float(spikes[0]) == 1.0
    assert float(state.v[0]) == pytest.approx(-50.0)
    u_free = 0.2 * 29.9 + DT * 0.02 * (0.2 * 29.9 - 0.2 * 29.9)
    assert float(state.u[0]) == pytest.approx(u_free + 2.0, rel=1e-6)


def test_capacitance_scales_input():
    # C_m = 100 with 1000 pA must equal C_m = 1 with I = 10 (inputs are divided by C_m).
    n = int(round(100.0 / DT))
    v1, t1, _ = run(bs.Izhikevich.preset("RS"), np.full(n, 10.0))
    v2, t2, _ = run(bs.Izhikevich.preset("RS", C_m=100.0), np.full(n, 1000.0))
    np.testing.assert_allclose(v1, v2, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(t1, t2)


def test_preset_errors():
    with pytest.raises(KeyError, match="Did you mean 'RS'"):
        bs.Izhikevich.preset("RSS")
    with pytest.raises(ValueError, match="`a` must be positive"):
        bs.Izhikevich(a=0.0)
    with pytest.raises(ValueError, match="`V_peak`"):
        bs.Izhikevich(c=40.0)
