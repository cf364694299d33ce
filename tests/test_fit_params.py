"""brainsim.fit building blocks: bijections, Trainable, losses (closed forms), the fit driver
(determinism, early stopping, batched = separate fits) and the SpikeArray input."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import brainsim as bs
from brainsim import fit

# ------------------------------------------------------------------------------- bijections


@pytest.mark.parametrize(
    "bijection, x",
    [
        (fit.Identity(), np.array([-3.0, 0.0, 7.5])),
        (fit.Positive(), np.array([1e-3, 0.3, 20.0, 4e3])),
        (fit.Positive(lower=-70.0, scale=5.0), np.array([-69.9, -60.0, 10.0])),
        (fit.Interval(-65.0, -40.0), np.array([-64.99, -52.0, -40.01])),
    ],
    ids=["identity", "positive", "positive-lower", "interval"],
)
def test_bijection_inverse_is_exact(bijection, x, x64):
    # float64: forward(inverse(x)) == x to a few ulps of the range (no cancellation anywhere).
    x = jnp.asarray(x)
    b = bijection.fitted_to(x[1])
    back = b.forward(b.inverse(x))
    np.testing.assert_allclose(back, x, rtol=1e-12, atol=1e-12 * float(jnp.max(jnp.abs(x))))


def test_bijection_gradients_never_vanish_where_clipping_would(x64):
    # A loss pulling a parameter below its bound: clipping gives a zero gradient once the
    # value sits at the bound; the bijections keep a nonzero gradient with the right sign,
    # however far the free variable has gone, and the value stays inside the range.
    for b, lo in ((fit.Positive(scale=1.0), 0.0), (fit.Interval(-65.0, -40.0), -65.0)):
        for u in (-5.0, -15.0, -30.0):
            x, g = jax.value_and_grad(b.forward)(jnp.float64(u))
            assert float(x) > lo
            loss_grad = jax.grad(lambda u, b=b, lo=lo: (b.forward(u) - (lo - 10.0)) ** 2)(
                jnp.float64(u)
            )
            assert float(g) > 0 and float(loss_grad) > 0
    clipped = jax.grad(lambda x: (jnp.clip(x, 0.0, None) + 10.0) ** 2)(jnp.float64(-1.0))
    assert float(clipped) == 0.0  # what the bijections avoid


def test_positive_scale_comes_from_the_initial_value():
    b = fit.Positive().fitted_to(jnp.asarray([20.0, 0.3]))
    np.testing.assert_allclose(b.scale, [20.0, 0.3])
    # Equal steps in u are equal relative steps of the natural value.
    x0 = b.forward(b.inverse(jnp.asarray([20.0, 0.3])))
    x1 = b.forward(b.inverse(jnp.asarray([20.0, 0.3])) + 0.01)
    np.testing.assert_allclose(x1 / x0, (x1 / x0)[0], rtol=1e-5)


def test_bijection_errors_name_the_parameter():
    with pytest.raises(ValueError, match=r"where\(model\)\[1\].*outside"):
        fit.Trainable(bs.LIF(), lambda m: (m.tau_m, m.V_th),
                      (fit.Positive(), fit.Interval(-50.0, -40.0)))
    with pytest.raises(ValueError, match="not above the lower bound"):
        fit.Trainable(bs.LIF(), lambda m: m.E_L, fit.Positive())
    with pytest.raises(ValueError, match="`high`"):
        fit.Interval(1.0, 0.0)


# -------------------------------------------------------------------------------- Trainable


def test_trainable_builds_the_model_with_natural_values_and_freezes_the_rest():
    lif = bs.LIF(tau_m=15.0, V_th=-50.0)
    tr = fit.Trainable(lif, lambda m: (m.tau_m, m.V_th), (fit.Positive(), fit.Interval(-60, -40)))
    u = tr.init()
    assert isinstance(u, tuple) and len(u) == 2
    np.testing.assert_allclose(tr.values(u), (15.0, -50.0), rtol=1e-6)
    built = tr.build((u[0] + 0.5, u[1]))
    assert float(built.tau_m) > 15.0 and float(built.V_th) == pytest.approx(-50.0, rel=1e-6)
    assert float(built.C_m) == float(lif.C_m)
    # Gradients reach only the free parameters; the model's other leaves are constants.
    g = jax.grad(lambda u: tr.build(u).tau_m * tr.build(u).C_m)(u)
    assert float(g[0]) > 0 and float(g[1]) == 0.0
    single = fit.Trainable(lif, lambda m: m.tau_m)
    assert not isinstance(single.init(), tuple)


def test_trainable_errors_name_the_argument():
    with pytest.raises(TypeError, match="`where`"):
        fit.Trainable(bs.LIF(), "tau_m")
    with pytest.raises(TypeError, match="position 0"):
        fit.Trainable(bs.LIF(), lambda m: m.detach_reset)
    with pytest.raises(ValueError, match="`bijections` has 1 entries"):
        fit.Trainable(bs.LIF(), lambda m: (m.tau_m, m.C_m), [fit.Positive()])


# ---------------------------------------------------------------------------------- losses


def _train(T, n, at):
    s = np.zeros((T, n))
    for k, i in at:
        s[k, i] = 1.0
    return jnp.asarray(s)


@pytest.mark.parametrize("dt", [0.1, 1.0])
def test_van_rossum_matches_closed_forms(dt, x64):
    # Exact for spikes on the grid: one spike vs none -> 1/2; single spikes Δ apart ->
    # 1 - exp(-Δ/τ); identical trains -> 0 (with a finite gradient).
    T, tau = 400, 7.0
    a = _train(T, 3, [(20, 0), (20, 1), (50, 2)])
    b = _train(T, 3, [(20, 0), (70, 2)])
    d2 = fit.van_rossum_distance(a, b, tau=tau, dt=dt, squared=True)
    np.testing.assert_allclose(d2[0], 0.0, atol=1e-15)
    np.testing.assert_allclose(d2[1], 0.5, rtol=1e-12)
    np.testing.assert_allclose(d2[2], 1.0 - np.exp(-20 * dt / tau), rtol=1e-12)
    g = jax.grad(lambda x: jnp.sum(fit.van_rossum_distance(x, a, tau=tau, dt=dt)))(a)
    assert np.all(np.isfinite(g))


def test_spike_times_are_exact_and_pull_spikes_toward_targets(x64):
    s = _train(100, 2, [(10, 0), (30, 0), (55, 1)])
    times = fit.spike_times(s, 0.5, 3)
    np.testing.assert_allclose(times, [[5.0, 27.5], [15.0, 50.0], [50.0, 50.0]])
    # Neuron 1 fires at 27.5 ms. A later target makes the loss grow with the spike values
    # up to the spike (less or later firing helps); an earlier target makes it fall with the
    # values of earlier steps (an earlier spike helps).
    def grad(target):
        return jax.grad(lambda x: fit.spike_time_loss(x, jnp.asarray([[5.0, target]]), dt=0.5,
                                                      tau=1.0))(s)[:, 1]

    later, earlier = grad(28.0), grad(27.0)
    assert np.all(later[:56] > 0) and np.all(later[56:] == 0)
    assert np.all(earlier[:56] < 0)
    assert float(fit.spike_time_loss(s, jnp.asarray([[5.0, 27.5]]), dt=0.5)) == 0.0
    with pytest.raises(ValueError, match="target_times"):
        fit.spike_time_loss(s, jnp.zeros((2, 3)), dt=0.5)


def test_rate_regularizer_bounds():
    # Rates (Hz) from 1 s at dt = 1 ms: neuron 0 at 2 Hz, neuron 1 at 30 Hz.
    s = _train(1000, 2, [(k, 0) for k in (100, 600)] + [(k, 1) for k in range(0, 990, 33)])
    rates = fit.firing_rates(s, 1.0)
    np.testing.assert_allclose(rates, [2.0, 30.0])
    low = fit.rate_regularizer(s, 1.0, lower=5.0)
    np.testing.assert_allclose(low, (5.0 - 2.0) ** 2 / 2)  # only neuron 0 is below
    high = fit.rate_regularizer(s, 1.0, upper=10.0, upper_strength=2.0)
    np.testing.assert_allclose(high, 2.0 * (16.0 - 10.0) ** 2)  # population mean 16 Hz
    assert float(fit.rate_regularizer(s, 1.0, lower=1.0, upper=20.0)) == 0.0


def test_classification_losses_and_accuracy():
    T = 5
    spikes = jnp.zeros((2, T, 3)).at[0, :, 2].set(1.0).at[1, :2, 0].set(1.0)
    labels = jnp.asarray([2, 0])
    ce = fit.rate_cross_entropy(spikes, labels)
    expected = np.mean([-np.log(np.exp(5) / (2 + np.exp(5))), -np.log(np.exp(2) / (2 + np.exp(2)))])
    np.testing.assert_allclose(ce, expected, rtol=1e-6)
    assert float(fit.accuracy(fit.spike_counts(spikes), labels)) == 1.0
    v = jnp.zeros((2, T, 3)).at[0, 3, 1].set(4.0)
    assert float(fit.membrane_cross_entropy(v, jnp.asarray([1, 0]))) < float(
        fit.membrane_cross_entropy(v, jnp.asarray([0, 0]))
    )
    with pytest.raises(TypeError, match="`labels`"):
        fit.rate_cross_entropy(spikes, jnp.asarray([2.0, 0.0]))


# ---------------------------------------------------------------------------------- driver


def _quadratic(u, batch, key):
    target = jnp.asarray([1.0, -2.0]) if batch is None else batch
    return jnp.sum((u - target) ** 2)


def test_fit_converges_is_deterministic_and_records_history():
    kw = dict(steps=150, progress=False)
    r1 = fit.fit(_quadratic, jnp.zeros(2), optax.adam(0.1), **kw)
    r2 = fit.fit(_quadratic, jnp.zeros(2), optax.adam(0.1), **kw)
    np.testing.assert_allclose(r1.params, [1.0, -2.0], atol=1e-2)
    np.testing.assert_array_equal(r1.loss, r2.loss)
    assert r1.history["loss"].shape == (150,) and np.all(np.diff(r1.history["time"]) >= 0)
    assert float(r1.best_loss) == pytest.approx(r1.loss.min())


def test_fit_minibatches_follow_the_seed():
    data = jnp.arange(12.0)

    def loss(u, batch, key):
        return jnp.mean((u - batch) ** 2) + 0.0 * jax.random.uniform(key)

    runs = [fit.fit(loss, jnp.zeros(()), optax.sgd(0.1), steps=9, data=data, batch_size=4,
                    seed=s, progress=False) for s in (3, 3, 4)]
    np.testing.assert_array_equal(runs[0].loss, runs[1].loss)
    assert not np.array_equal(runs[0].loss, runs[2].loss)
    with pytest.raises(ValueError, match="`batch_size`"):
        fit.fit(loss, jnp.zeros(()), optax.sgd(0.1), steps=1, data=data, batch_size=13)


def test_early_stopping_patience_and_target():
    r = fit.fit(_quadratic, jnp.zeros(2), optax.adam(0.1), steps=1000, progress=False,
                early_stopping=fit.EarlyStopping(target=1e-2))
    assert r.stopped_early and r.steps < 1000 and r.loss[-1] <= 1e-2
    # A constant loss never improves: stop after `patience` steps without improvement.
    r = fit.fit(lambda u, b, k: jnp.sum(u * 0.0), jnp.zeros(2), optax.adam(0.1), steps=100,
                progress=False, early_stopping=fit.EarlyStopping(patience=5))
    assert r.stopped_early and r.steps == 6


def test_batched_fit_equals_separate_fits():
    targets = jnp.asarray([[1.0, 2.0], [-3.0, 0.5], [0.0, 0.0]])
    batched = fit.fit(_quadratic, jnp.zeros((3, 2)), optax.adam(0.05), steps=40, data=targets,
                      batched=True, progress=False)
    assert batched.loss.shape == (40, 3)
    for i in range(3):
        one = fit.fit(lambda u, b, k, i=i: _quadratic(u, targets[i], k), jnp.zeros(2),
                      optax.adam(0.05), steps=40, progress=False)
        np.testing.assert_allclose(batched.last_params[i], one.last_params, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(batched.loss[:, i], one.loss, rtol=1e-6)


def test_fit_reports_non_finite_loss_and_bad_arguments():
    with pytest.raises(FloatingPointError, match="step 1"):
        fit.fit(lambda u, b, k: jnp.log(u - 1.0).sum(), jnp.zeros(2), optax.adam(0.1),
                steps=3, progress=False)
    with pytest.raises(TypeError, match="`optimizer`"):
        fit.fit(_quadratic, jnp.zeros(2), "adam", steps=3)
    with pytest.raises(ValueError, match="`steps`"):
        fit.fit(_quadratic, jnp.zeros(2), optax.adam(0.1), steps=0)


def test_progress_bar_in_a_log(capsys):
    # Default (None): no bar when stderr is not a terminal; True: the shared tqdm bar,
    # ending at the last step with the loss.
    fit.fit(_quadratic, jnp.zeros(2), optax.adam(0.1), steps=10, log_every=5)
    assert capsys.readouterr().err == ""
    fit.fit(_quadratic, jnp.zeros(2), optax.adam(0.1), steps=10, progress=True)
    last = capsys.readouterr().err.rstrip("\n").split("\r")[-1]
    assert last.startswith("fit: 100%") and "10/10" in last and "best" in last, last


# ------------------------------------------------------------------------------ SpikeArray


def test_spike_array_emits_rows_and_batches_without_recompiling():
    T, n = 30, 4
    rng = np.random.default_rng(0)
    x = (rng.random((3, T, n)) < 0.3).astype(np.float32)
    lif = bs.LIF(tau_m=10.0, V_th=1e6)  # never spikes: watch the input only
    rec = {"e": bs.Receptor(bs.ExponentialSynapse(2.0), bs.CurrentBased())}
    net = bs.Network([bs.Population("in", n, bs.SpikeArray(x[0], t_start=0.5)),
                      bs.Population("N", 2, lif, receptors=rec)],
                     [bs.Projection("in", "N", bs.connect.all_to_all(n, 2, weight=50.0),
                                    receptor="e", layout=bs.Dense())], dt=0.5)
    traces = []

    def run(spikes):
        traces.append(1)
        m = eqx.tree_at(lambda m: m.populations[0].model.spikes, net, spikes)
        return bs.simulate(m, n_steps=T + 5, key=jax.random.key(0),
                           record=(fit.SpikeTrain("in"),)).recordings[0]

    out = bs.jit(jax.vmap(run))(jnp.asarray(x))
    assert len(traces) == 1
    # Row k is emitted in step k + 1 (t_start = 0.5 ms = one step), silent afterwards.
    np.testing.assert_array_equal(out[:, 1:T + 1], x)
    assert float(jnp.abs(out[:, 0]).sum() + jnp.abs(out[:, T + 1:]).sum()) == 0.0
    with pytest.raises(ValueError, match="columns"):
        bs.Network([bs.Population("in", 5, bs.SpikeArray(x[0]))], dt=0.5)


def test_fit_reports_a_non_finite_gradient_under_a_finite_loss():
    # sqrt has an infinite derivative at 0 while the loss there is finite: the optimizer
    # would write inf/nan into the parameters without the check.
    with pytest.raises(FloatingPointError, match="gradient became non-finite at step 1"):
        fit.fit(lambda u, b, k: jnp.sqrt(u).sum(), jnp.zeros(2), optax.adam(0.1),
                steps=3, progress=False)
