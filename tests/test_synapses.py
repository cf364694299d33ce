"""Synaptic kinetics, outputs and short-term plasticity against closed forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import generator_network, quiet_lif, receptor_history

import brainsim as bs
from brainsim import connect

W = 3.0  # peak weight of the test PSCs


def _closed_forms():
    tau, tau_a, tr, td = 5.0, 2.0, 1.0, 6.0
    t_peak_dual = td * tr / (td - tr) * np.log(td / tr)
    eta = 1.0 / (np.exp(-t_peak_dual / td) - np.exp(-t_peak_dual / tr))
    return {
        "exponential": (bs.ExponentialSynapse(tau), lambda t: W * np.exp(-t / tau), 0.0),
        "alpha": (bs.AlphaSynapse(tau_a), lambda t: W * (t / tau_a) * np.exp(1 - t / tau_a),
                  tau_a),
        "dual": (bs.DualExponentialSynapse(tr, td),
                 lambda t: W * eta * (np.exp(-t / td) - np.exp(-t / tr)), t_peak_dual),
    }


def _kinetics_run(kin, dt, n_steps):
    """Arrive one weight W at t = 0, then return the trace value and the step mean at every
    t_m = m dt, m = 0 .. n_steps-1."""
    state = kin.arrive(kin.init(1, jnp.result_type(float)), W)

    def body(s, _):
        return kin.decay(s, dt), (kin.value(s), kin.mean(s, dt))

    _, (values, means) = jax.lax.scan(body, state, None, length=n_steps)
    return np.asarray(values)[:, 0], np.asarray(means)[:, 0]


@pytest.mark.parametrize("name", ["exponential", "alpha", "dual"])
def test_psc_trace_is_exact_at_every_step(name, x64):
    # Linear kinetics advanced with their exact propagator: only float64 rounding remains.
    kin, exact, _ = _closed_forms()[name]
    dt, n = 0.1, 400
    values, _ = _kinetics_run(kin, dt, n)
    np.testing.assert_allclose(values, exact(dt * np.arange(n)), rtol=0, atol=1e-12 * W)


@pytest.mark.parametrize("name", ["exponential", "alpha", "dual"])
def test_psc_peak_is_the_weight_at_the_peak_time(name, x64):
    kin, _, t_peak = _closed_forms()[name]
    # Put the analytic peak on the grid: dt = t_peak / 50 (any dt for the exponential).
    dt = t_peak / 50 if t_peak > 0 else 0.1
    values, _ = _kinetics_run(kin, dt, 400)
    assert np.argmax(values) == round(t_peak / dt)
    np.testing.assert_allclose(values.max(), W, rtol=1e-12)


def _quadrature_means(exact, dt, n_steps, n_nodes=16):
    nodes, weights = np.polynomial.legendre.leggauss(n_nodes)
    starts = dt * np.arange(n_steps)[:, None]
    s = starts + 0.5 * dt * (nodes[None, :] + 1.0)
    return 0.5 * np.sum(weights[None, :] * exact(s), axis=1)


@pytest.mark.parametrize("name", ["exponential", "alpha", "dual"])
@pytest.mark.parametrize("dt", [0.01, 0.1, 0.5])
def test_psc_step_mean_is_exact_interval_average(name, dt, x64):
    # 16-point Gauss–Legendre integrates these smooth exponentials over one step to ~1e-15.
    kin, exact, _ = _closed_forms()[name]
    n = int(round(30.0 / dt))
    _, means = _kinetics_run(kin, dt, n)
    np.testing.assert_allclose(means, _quadrature_means(exact, dt, n), rtol=0, atol=1e-11 * W)


@pytest.mark.parametrize("name", ["exponential", "alpha", "dual"])
@pytest.mark.parametrize("dt", [0.01, 0.1])
def test_psc_trace_and_step_mean_float32(name, dt):
    # The trace and the delivered charge per step must stay accurate in float32 too: error below
    # 1e-4 of the peak (float32 eps is 1.2e-7; allow a thousand-fold for 3000 rounded decay
    # steps and for the cancellation in (1 - e^{-x}(1 + x)) at small x = dt/tau).
    kin, exact, _ = _closed_forms()[name]
    n = int(round(30.0 / dt))
    values, means = _kinetics_run(kin, dt, n)
    np.testing.assert_allclose(values, exact(dt * np.arange(n)), rtol=0, atol=1e-4 * W)
    np.testing.assert_allclose(means, _quadrature_means(exact, dt, n), rtol=0, atol=1e-4 * W)


# ---------------------------------------------------------------------------------- PSP


def _psp_error(dt, tau_s=2.0, t_end=40.0, w=200.0):
    # One spike at t = 0 through a 1 ms delay: as in Brian2, it acts from the step after the
    # delay, so the current w e^{-(t - onset)/tau_s} starts at onset = 1 ms + dt.
    delay = 1.0
    edges = connect.from_arrays([0], [0], n_pre=1, n_post=1, weight=w, delay=delay)
    net = generator_network([0.0], [0], 1, 1, edges, kinetics=bs.ExponentialSynapse(tau_s),
                            output=bs.CurrentBased(), dt=dt)
    res = bs.simulate(net, t_end, key=jax.random.key(0), record=(bs.StateTrace("post", "v"),))
    t, v = res.trace("post", "v")
    lif = net.population("post").model
    C, tau_m, E_L = float(lif.C_m), float(lif.tau_m), float(lif.E_L)
    s = np.maximum(t - (delay + dt), 0.0)
    amplitude = w / C * tau_m * tau_s / (tau_m - tau_s)
    exact = E_L + amplitude * (np.exp(-s / tau_m) - np.exp(-s / tau_s))
    # Compare on the coarsest grid (every 0.1 ms) so every dt is measured at the same times.
    stride = int(round(0.1 / dt))
    return np.max(np.abs(v[::stride, 0] - exact[::stride])), np.max(exact) - E_L


def test_psp_matches_closed_form_with_second_order_convergence(x64):
    # The neuron sees the exact step-average of the PSC, held over the step: the charge per
    # step is exact and the local error is ∫(K - K̄)(I - Ī) = O(dt^3), so the PSP converges at
    # order 2. Measured orders between 1.8 and 2.2 confirm it (order 1 would mean the step
    # mean is not used; order > 2.5 would be suspicious of an exact coupled solve).
    dts = [0.1, 0.05, 0.025]
    errors, peaks = zip(*(_psp_error(dt) for dt in dts), strict=True)
    assert 0.5 < peaks[0] < 2.0  # a PSP of about 1 mV, far from threshold
    assert errors[0] < 1e-3 * peaks[0]
    orders = np.log2(np.asarray(errors[:-1]) / np.asarray(errors[1:]))
    assert np.all((orders > 1.8) & (orders < 2.2)), orders


def test_pulse_synapse_trace_is_the_weight_for_one_step(x64):
    # Arrived at t_0: the trace and the step mean are W during step 0, zero afterwards,
    # whatever dt (the charge W dt scales with the step, as in discrete-time models).
    for dt in (0.1, 1.0):
        values, means = _kinetics_run(bs.PulseSynapse(), dt, 5)
        np.testing.assert_array_equal(values, [W, 0, 0, 0, 0])
        np.testing.assert_array_equal(means, [W, 0, 0, 0, 0])


@pytest.mark.parametrize("layout", [bs.Sparse(), bs.Dense()], ids=["sparse", "dense"])
def test_pulse_synapse_current_acts_in_the_step_after_its_lag(layout, x64):
    # Spikes of steps 3 and 5 over delays 0 and 0.3 ms (dt 0.1): the postsynaptic current is
    # w in steps 4 (3 + 0 + 1) and 9 (5 + 3 + 1) only, the spike's lag in brainsim's timing
    # table. The membrane is compared with the exact LIF update for that piecewise-constant
    # current, step by step.
    dt, n_steps, w = 0.1, 14, (40.0, -25.0)
    edges = connect.from_arrays([0, 1], [0, 0], n_pre=2, n_post=1, weight=np.asarray(w),
                                delay=np.asarray([0.0, 0.3]))
    net = generator_network([0.3, 0.5], [0, 1], 2, 1, edges, kinetics=bs.PulseSynapse(),
                            layout=layout, dt=dt)
    res = bs.simulate(net, n_steps=n_steps, key=jax.random.key(0),
                      record=(bs.StateTrace("post", "v"),))
    _, v = res.trace("post", "v")
    current = np.zeros(n_steps)
    current[4], current[9] = w
    lif = net.population("post").model
    C, tau, E_L = float(lif.C_m), float(lif.tau_m), float(lif.E_L)
    decay = np.exp(-dt / tau)
    exact = [E_L]
    for i in current[:-1]:
        exact.append(E_L + i * tau / C + (exact[-1] - E_L - i * tau / C) * decay)
    np.testing.assert_allclose(v[:, 0], exact, rtol=0, atol=1e-12)


# -------------------------------------------------------------------------------- outputs


def test_current_and_conductance_outputs():
    trace = jnp.array([0.0, 1.5, 4.0])
    v = jnp.array([-70.0, -50.0, 10.0])
    cur = bs.CurrentBased().drive(trace, v)
    np.testing.assert_array_equal(cur.total_current(v), trace)
    np.testing.assert_array_equal(cur.conductance, 0.0)
    for E in (0.0, -80.0):
        d = bs.ConductanceBased(E).drive(trace, v)
        np.testing.assert_allclose(d.total_current(v), trace * (E - v), rtol=1e-6)
        np.testing.assert_array_equal(d.conductance, trace)


def test_nmda_block_formula_and_monotonicity(x64):
    nmda = bs.NMDA(E_rev=0.0, mg=1.0)
    v = jnp.linspace(-120.0, 60.0, 1001)
    b = np.asarray(nmda.block(v))
    expected = 1.0 / (1.0 + 1.0 / 3.57 * np.exp(-0.062 * np.asarray(v)))
    np.testing.assert_allclose(b, expected, rtol=1e-14)
    assert np.all(np.diff(b) > 0) and np.all((b > 0) & (b < 1))
    # Jahr & Stevens: half block where e^{-0.062 V} = 3.57 / [Mg], i.e. V = ln([Mg]/3.57)/0.062.
    np.testing.assert_allclose(nmda.block(np.log(1.0 / 3.57) / 0.062), 0.5, rtol=1e-12)
    # More magnesium blocks more; no magnesium, no block.
    assert np.all(np.asarray(bs.NMDA(mg=2.0).block(v)) < b)
    np.testing.assert_allclose(bs.NMDA(mg=0.0).block(v), 1.0)
    g = jnp.full(v.shape, 2.0)
    d = nmda.drive(g, v)
    np.testing.assert_allclose(d.total_current(v), 2.0 * b * (0.0 - np.asarray(v)), rtol=1e-10,
                               atol=1e-10)


def test_conductance_receptor_in_network_drives_toward_reversal(x64):
    # A large, slow conductance to E_rev = 0 mV holds V near its steady state
    # (g_L E_L + g E) / (g_L + g); with the trace nearly constant over 1 ms the voltage must be
    # within the closed-form relaxation of that target.
    w, tau = 100.0, 1e6  # nS; effectively constant
    edges = connect.from_arrays([0], [0], n_pre=1, n_post=1, weight=w)
    lif = quiet_lif(C_m=250.0, tau_m=10.0, E_L=-70.0)
    net = generator_network([0.0], [0], 1, 1, edges, kinetics=bs.ExponentialSynapse(tau),
                            output=bs.ConductanceBased(0.0), neuron=lif, dt=0.1)
    res = bs.simulate(net, 20.0, key=jax.random.key(0), record=(bs.StateTrace("post", "v"),))
    t, v = res.trace("post", "v")
    g_L = 25.0
    v_inf = (g_L * -70.0 + w * 0.0) / (g_L + w)
    s = np.maximum(t - 0.1, 0.0)  # the conductance arrives at step 1 (one-step delay)
    exact = v_inf + (-70.0 - v_inf) * np.exp(-s * (g_L + w) / 250.0)
    # The trace decays by a factor e^{-t/tau} ≈ 1 - 2e-5 over 20 ms: error ≲ 2e-5 * 56 mV.
    np.testing.assert_allclose(v[:, 0], exact, atol=2e-3)


# ----------------------------------------------------------------------- short-term plasticity


def _tm_train(stp, interval_steps, n_spikes, dt):
    n_steps = interval_steps * n_spikes
    spikes = (jnp.arange(n_steps) % interval_steps == 0).astype(jnp.result_type(float))

    def body(s, x):
        return stp.step(s, x[None], dt)

    _, efficacy = jax.lax.scan(body, stp.init(1, jnp.result_type(float)), spikes)
    return np.asarray(efficacy)[::interval_steps, 0]


def _tm_reference(U, tau_rec, tau_fac, interval, n_spikes):
    """NEST tsodyks2 recursion written out event by event."""
    u, x, out = 0.0, 1.0, []
    for i in range(n_spikes):
        if i:
            u *= np.exp(-interval / tau_fac)
            x = 1.0 + (x - 1.0) * np.exp(-interval / tau_rec)
        u = u + U * (1.0 - u)
        r = u * x
        x -= r
        out.append(r)
    return np.asarray(out)


@pytest.mark.parametrize(
    "U, tau_rec, tau_fac, kind",
    [(0.5, 800.0, 1e-3, "depressing"), (0.1, 100.0, 1000.0, "facilitating")],
)
def test_tsodyks_markram_regular_train(U, tau_rec, tau_fac, kind, x64):
    stp = bs.TsodyksMarkram(U=U, tau_rec=tau_rec, tau_fac=tau_fac)
    dt, interval_steps, n_spikes = 0.1, 500, 200  # 50 ms intervals (20 Hz)
    eff = _tm_train(stp, interval_steps, n_spikes, dt)
    interval = interval_steps * dt
    # First spike: u = U, x = 1.
    np.testing.assert_allclose(eff[0], U, rtol=1e-14)
    np.testing.assert_allclose(eff, _tm_reference(U, tau_rec, tau_fac, interval, n_spikes),
                               rtol=1e-10)
    # The train converges geometrically (factor <= (1-U) e^{-h/tau_fac} ≈ 0.86 per spike here,
    # 0.86^200 ≈ 1e-13) to the closed-form steady state.
    np.testing.assert_allclose(eff[-1], stp.steady_state_efficacy(interval), rtol=1e-9)
    if kind == "depressing":
        assert np.all(np.diff(eff[:10]) < 0) and eff[-1] < 0.2 * U
    else:
        assert eff[1] > eff[0]


def test_tsodyks_markram_scales_delivered_weight_in_network():
    # Regular train at 50 Hz through a projection with depression: the receptor jump at every
    # arrival equals w times the spike's efficacy.
    U, tau_rec, dt, n_spk, w = 0.4, 200.0, 0.1, 8, 10.0
    times = 20.0 * np.arange(n_spk)
    edges = connect.from_arrays([0], [0], n_pre=1, n_post=1, weight=w)
    stp = bs.TsodyksMarkram(U=U, tau_rec=tau_rec, tau_fac=1e-3)
    net = generator_network(times, np.zeros(n_spk, int), 1, 1, edges, stp=stp, dt=dt,
                            kinetics=bs.ExponentialSynapse(1e9))  # no decay: a step counter
    g, _ = receptor_history(net, 1500, "post", "r")
    jumps = np.diff(np.concatenate([[0.0], g[:, 0]]))
    arrival = (np.rint(times / dt) + 1).astype(int)  # one-step delay
    expected = w * _tm_reference(U, tau_rec, 1e-3, 20.0, n_spk)
    # float32: x relaxes by one rounded multiply-add per step (200 steps between spikes, relative
    # rounding 6e-8 each), so efficacies drift by up to ~200 * 6e-8 ≈ 1.2e-5 per interval.
    np.testing.assert_allclose(jumps[arrival], expected, rtol=1e-4)
    mask = np.ones(jumps.size, bool)
    mask[arrival] = False
    np.testing.assert_allclose(jumps[mask], 0.0, atol=1e-5)


@pytest.mark.parametrize(
    "cls, kwargs, name",
    [
        (bs.ExponentialSynapse, dict(tau=0.0), "tau"),
        (bs.AlphaSynapse, dict(tau=-1.0), "tau"),
        (bs.DualExponentialSynapse, dict(tau_rise=0.0), "tau_rise"),
        (bs.DualExponentialSynapse, dict(tau_rise=5.0, tau_decay=5.0), "tau_decay"),
        (bs.TsodyksMarkram, dict(U=0.0), "U"),
        (bs.TsodyksMarkram, dict(U=1.5), "U"),
        (bs.TsodyksMarkram, dict(tau_rec=0.0), "tau_rec"),
    ],
)
def test_invalid_synapse_parameters(cls, kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        cls(**kwargs)
