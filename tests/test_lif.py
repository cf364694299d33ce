"""LIF neuron against closed forms: subthreshold trajectory, effective time constant under a
conductance, the f–I curve with refractoriness on the step grid, and parameter validation."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brainsim as bs

# iaf_psc_exp-like parameters: g_L = C/tau = 25 nS, rheobase g_L (V_th - E_L) = 375 pA.
C, TAU, E_L, V_TH, V_RESET, T_REF = 250.0, 10.0, -70.0, -55.0, -70.0, 2.0
R = TAU / C  # membrane resistance (GΩ = mV/pA)
RHEOBASE = (V_TH - E_L) / R


def _trace_network(I_e, v0, dt, **lif):
    params = dict(C_m=C, tau_m=TAU, E_L=E_L, V_th=V_TH, V_reset=V_RESET, t_ref=T_REF, I_e=I_e)
    params.update(lif)
    pop = bs.Population("N", len(I_e), bs.LIF(**params),
                        initial={"v": bs.init.Constant(np.asarray(v0))})
    return bs.Network([pop], dt=dt)


def _subthreshold_error(dt=0.1, n_steps=300):
    I_e = np.array([0.0, 50.0, 200.0, 370.0])  # all below the 375 pA rheobase
    v0 = np.array([-80.0, -62.0, -70.0, -56.0])
    net = _trace_network(I_e, v0, dt)
    res = bs.simulate(net, n_steps=n_steps, key=jax.random.key(0),
                      record=(bs.StateTrace("N", "v"),))
    t, v = res.trace("N", "v")
    v_inf = E_L + R * I_e
    exact = v_inf + (v0 - v_inf) * np.exp(-t[:, None] / TAU)
    assert v.shape == (n_steps, 4)
    assert np.all(v < V_TH)
    return np.max(np.abs(v - exact))


def test_subthreshold_trajectory_is_exact_float64(x64):
    # Exponential integration of a linear ODE with constant input is the exact solution, so
    # the only error is float64 rounding: ~1e-16 relative per step on |V| ~ 70 mV, damped by
    # e^{-dt/tau} each step (bound 70 * 1e-16 * tau/dt ≈ 1e-12 mV).
    assert _subthreshold_error() < 1e-10


def test_subthreshold_trajectory_float32():
    # float32: each step rounds V (|V| ≤ 80 mV) to ~80 * 6e-8 ≈ 5e-6 mV, a few such roundings
    # per step; errors are damped by e^{-dt/tau} per step, so the accumulated error stays below
    # ~(3 * 5e-6) / (1 - e^{-0.01}) ≈ 1.5e-3 mV even if all roundings align.
    assert _subthreshold_error() < 1.5e-3


def test_conductance_drive_has_effective_time_constant(x64):
    # With a constant conductance g to reversal E the membrane relaxes to
    # V_inf = (g_L E_L + I_e + g E) / (g_L + g) with tau_eff = C / (g_L + g).
    g = jnp.array([0.0, 10.0, 50.0, 200.0])  # nS
    E = jnp.array([0.0, 0.0, -80.0, 0.0])  # mV
    I_e = 100.0
    lif = bs.LIF(C_m=C, tau_m=TAU, E_L=E_L, V_th=1e6, V_reset=V_RESET, t_ref=T_REF, I_e=I_e)
    dt, n_steps = 0.05, 400
    drive = bs.Drive(g * E, g)
    state = lif.init(4)

    def body(s, _):
        s, spikes = lif.step(s, drive, 0.0, dt, jax.random.key(0))
        return s, s.v

    _, v = jax.lax.scan(body, state, None, length=n_steps)
    g_L = C / TAU
    t = dt * np.arange(1, n_steps + 1)[:, None]
    v_inf = (g_L * E_L + I_e + np.asarray(g * E)) / (g_L + np.asarray(g))
    tau_eff = C / (g_L + np.asarray(g))
    exact = v_inf + (E_L - v_inf) * np.exp(-t / tau_eff)
    np.testing.assert_allclose(np.asarray(v), exact, rtol=0, atol=1e-10)


def _analytic_time_to_threshold(I):
    return TAU * np.log((R * I + E_L - V_RESET) / (R * I + E_L - V_TH))


def test_f_I_curve_matches_analytic_rate_on_step_grid(x64):
    # From V_reset the membrane reaches V_th after
    # T = tau ln((RI + E_L - V_reset) / (RI + E_L - V_th)).
    # On the grid (Brian2's timing) the neuron is held for t_ref/dt - 1 whole steps after the
    # spike step, integrates from the step starting t_ref after the spike's recorded time, and
    # spikes in the first step whose end-point voltage is >= V_th, recorded at that step's
    # start: ISI = t_ref + (ceil(T/dt) - 1) dt, hence t_ref + T - dt < ISI <= t_ref + T, and
    # the rate is 1/ISI.
    dt = 0.1
    currents = np.array([380.0, 400.0, 450.0, 600.0, 800.0, 1200.0, 2000.0, 5000.0])
    T = _analytic_time_to_threshold(currents)
    frac = T / dt - np.floor(T / dt)
    assert np.all((frac > 1e-6) & (frac < 1 - 1e-6)), "ambiguous crossing chosen"
    net = _trace_network(currents, np.full(currents.shape, V_RESET), dt)
    res = bs.simulate(net, 500.0, key=jax.random.key(0), record=(bs.SpikeRaster(),))
    times, ids = res.spikes("N")
    ref_steps = round(T_REF / dt)
    for i in range(currents.size):
        steps = np.rint(times[ids == i] / dt).astype(int)
        assert steps.size >= 3
        n_cross = int(math.ceil(T[i] / dt))
        # From V_reset at t = 0 the first crossing ends step n_cross - 1 (spikes are stamped at
        # the start of their step).
        assert steps[0] == n_cross - 1
        isi = np.diff(steps) * dt
        expected = (ref_steps + n_cross - 1) * dt
        np.testing.assert_allclose(isi, expected, rtol=0, atol=1e-9)
        analytic = T_REF + T[i]
        assert analytic - dt < isi[0] <= analytic
        # Rate on the grid vs the analytic rate: relative difference below dt / ISI.
        rate, rate_analytic = 1e3 / isi[0], 1e3 / analytic
        assert 0 <= (rate - rate_analytic) / rate < dt / analytic


def test_below_rheobase_never_spikes():
    net = _trace_network(np.array([0.0, 0.99 * RHEOBASE]), np.array([V_RESET, V_RESET]), 0.1)
    res = bs.simulate(net, 300.0, key=jax.random.key(0), record=(bs.SpikeRaster(),))
    assert res.spikes("N")[0].size == 0


def test_refractory_period_holds_v_at_reset_exactly():
    # After a spike in step k (recorded at t_k, Brian2's timing) the neuron sits at V_reset at
    # t_{k+1} and is held for t_ref/dt - 1 = 19 more steps, so V(t_{k+1}) ... V(t_{k+20}) ==
    # V_reset bit for bit and the counter reads 19, 18, ..., 1, 0; integration resumes in step
    # k + 20, which starts t_ref after the spike's recorded time (as in Brian2).
    dt = 0.1
    net = _trace_network(np.array([3000.0]), np.array([V_RESET]), dt)
    res = bs.simulate(net, 60.0, key=jax.random.key(0),
                      record=(bs.SpikeRaster(), bs.StateTrace("N", "v"),
                              bs.StateTrace("N", "refractory")))
    steps = np.rint(res.spikes("N")[0] / dt).astype(int)
    _, v = res.trace("N", "v")
    _, refr = res.trace("N", "refractory")
    v, refr = v[:, 0], refr[:, 0]
    n_ref = round(T_REF / dt) - 1
    assert steps.size >= 3
    for k in steps[:-1]:
        held = v[k + 1: k + n_ref + 2]
        assert np.all(held == np.float32(V_RESET))
        assert v[k + n_ref + 2] > V_RESET
        np.testing.assert_array_equal(refr[k + 1: k + n_ref + 2], np.arange(n_ref, -1, -1))


@pytest.mark.parametrize("I_e", [0.97 * RHEOBASE, 1.02 * RHEOBASE, 1.1 * RHEOBASE])
def test_surrogate_gradient_of_spike_count_wrt_current_is_positive(I_e):
    net = _trace_network(np.array([0.0]), np.array([V_RESET]), 0.1)

    def count(I):
        n = eqx.tree_at(lambda m: m.populations[0].model.I_e, net, I)
        res = bs.simulate(n, 200.0, key=jax.random.key(0), record=(bs.PopulationRate(),))
        return jnp.sum(res.recordings[0]["N"])

    value, grad = bs.jit(jax.value_and_grad(count))(jnp.asarray(I_e, jnp.float32))
    # Forward: the count of the analytic f-I relation (0 below rheobase).
    if I_e < RHEOBASE:
        assert value == 0
    else:
        T = _analytic_time_to_threshold(I_e)
        n_cross = math.ceil(T / 0.1)
        first = n_cross - 1
        expected = 1 + (2000 - 1 - first) // (20 + n_cross)
        assert value == expected
    assert np.isfinite(grad) and grad > 0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(tau_m=0.0), "tau_m"),
        (dict(tau_m=-5.0), "tau_m"),
        (dict(tau_m=np.array([10.0, -1.0])), "tau_m"),
        (dict(C_m=0.0), "C_m"),
        (dict(C_m=-250.0), "C_m"),
        (dict(t_ref=-1.0), "t_ref"),
        (dict(V_th=-70.0, V_reset=-70.0), "V_th"),
        (dict(V_th=-75.0, V_reset=-70.0), "V_th"),
    ],
)
def test_invalid_parameters_raise_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        bs.LIF(**kwargs)


def test_per_neuron_parameters_must_match_population_size():
    lif = bs.LIF(I_e=np.zeros(5))
    with pytest.raises(ValueError, match=r"`I_e`.*\(3,\)"):
        bs.Population("N", 3, lif)


def _perfect_integrator_run(reset, n_steps, current, **extra):
    """A non-leaky LIF (C_m = 1, dt = 1: V grows by ``current`` per step) driven for
    ``n_steps``: its spike train."""
    lif = bs.LIF(C_m=1.0, tau_m=math.inf, E_L=-0.5, V_th=1.0, V_reset=-0.5, t_ref=0.0,
                 integrator=bs.Euler(), reset=reset, **extra)  # fmt: skip
    state = lif.init(len(current))
    drive = bs.Drive(jnp.asarray(current), jnp.zeros(len(current)))
    spikes = []
    for _ in range(n_steps):
        state, s = lif.step(state, drive, 0.0, 1.0, jax.random.key(0))
        spikes.append(np.asarray(s))
    return np.stack(spikes), state


def test_subtractive_reset_keeps_the_overshoot():
    """Reset by subtraction: V drops by V_th - V_reset = 1.5 at a spike, so a perfect
    integrator driven by x per step spikes floor(k x / 1.5) times in its first k steps (rate
    x / 1.5 exactly); reset to V_reset loses the overshoot: one spike every ceil(1.5 / x)
    steps. x are binary fractions, so the floating-point sums are exact."""
    x = np.array([0.375, 0.625, 1.25])
    n = 96
    spikes, state = _perfect_integrator_run("subtract", n, x)
    expected = np.floor(np.outer(np.arange(1, n + 1), x) / 1.5)
    np.testing.assert_array_equal(spikes.cumsum(axis=0), expected)
    np.testing.assert_allclose(state.v, -0.5 + n * x - 1.5 * spikes.sum(axis=0))
    spikes, _ = _perfect_integrator_run("value", n, x)
    np.testing.assert_array_equal(spikes.sum(axis=0), n // np.ceil(1.5 / x))
    # At most one spike per step: a faster drive spikes every step and the rest accumulates.
    spikes, state = _perfect_integrator_run("subtract", n, np.array([2.0]))
    assert spikes.sum() == n and float(state.v[0]) == -0.5 + n * 0.5


def test_subtractive_reset_gradient_and_bad_value():
    """With ``detach_reset=False`` the reset's gradient is -(V_th - V_reset) times the
    surrogate's; detached it is none. An unknown reset is named."""

    def v_after(v0, detach):
        lif = bs.LIF(C_m=1.0, tau_m=math.inf, E_L=0.0, V_th=1.0, V_reset=-0.5, t_ref=0.0,
                     integrator=bs.Euler(), reset="subtract", detach_reset=detach)  # fmt: skip
        state = lif.init(1)._replace(v=jnp.atleast_1d(v0))
        new, _ = lif.step(state, bs.Drive.zeros(1, jnp.float32), 0.0, 1.0, jax.random.key(0))
        return new.v[0]

    v0 = 1.2  # above threshold: spikes and is lowered by 1.5
    assert float(v_after(v0, True)) == pytest.approx(-0.3)
    surrogate = jax.grad(lambda v: bs.surrogate.FastSigmoid()(v - 1.0))(v0)
    assert float(jax.grad(v_after)(v0, True)) == pytest.approx(1.0)
    assert float(jax.grad(v_after)(v0, False)) == pytest.approx(1.0 - 1.5 * float(surrogate))
    with pytest.raises(ValueError, match="LIF: `reset` must be 'value'.*got 'zero'"):
        bs.LIF(reset="zero")
