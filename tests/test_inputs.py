"""External inputs: injected currents switch at the right step, Poisson sources have Poisson
statistics, spike generators emit exactly the given events."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brainsim as bs


def _applied_current(currents, n, dt, n_steps):
    """The current (pA) each neuron received in steps 0 .. n_steps-1, read back from a
    'counter' membrane: C = 1 pF, no leak to speak of (tau_m = 1e9 ms), so
    V_{k+1} - V_k = I_k dt / C."""
    counter = bs.LIF(C_m=1.0, tau_m=1e9, E_L=0.0, V_th=1e9, V_reset=0.0, t_ref=0.0)
    net = bs.Network([bs.Population("N", n, counter, currents=currents)], dt=dt)
    res = bs.simulate(net, n_steps=n_steps + 1, key=jax.random.key(0),
                      record=(bs.StateTrace("N", "v"),))
    _, v = res.trace("N", "v")
    return np.diff(v.astype(np.float64), axis=0) / dt


# A counter voltage stays below ~1e3 mV here; float32 spacing there is 6e-5 mV, i.e. an error of
# 6e-5/dt pA ≤ 6e-3 pA in the recovered current, far below the amplitude differences (≥ 25 pA).
CURRENT_ATOL = 0.05


@pytest.mark.parametrize(
    "dt, switch_times",
    [(0.1, [1.3, 2.7, 4.0]), (0.01, [0.27, 0.4, 0.53]), (0.025, [0.1, 0.35, 0.6])],
)
def test_step_current_switches_at_the_right_step(dt, switch_times):
    amplitudes = np.array([100.0, -50.0, 25.0])
    n_steps = int(round(switch_times[-1] / dt)) + 10
    got = _applied_current([bs.StepCurrent(switch_times, amplitudes)], 1, dt, n_steps)[:, 0]
    k = np.arange(n_steps)
    switch_steps = np.rint(np.asarray(switch_times) / dt).astype(int)
    idx = np.searchsorted(switch_steps, k, side="right") - 1
    expected = np.where(idx >= 0, amplitudes[np.maximum(idx, 0)], 0.0)
    wrong = np.flatnonzero(np.abs(got - expected) > CURRENT_ATOL)
    assert wrong.size == 0, (wrong[:5], got[wrong[:5]], expected[wrong[:5]])


def test_step_current_per_neuron_amplitudes():
    amps = np.array([[10.0, 20.0], [-30.0, 40.0]])
    got = _applied_current([bs.StepCurrent([0.5, 1.0], amps)], 2, 0.1, 15)
    expected = np.zeros((15, 2))
    expected[5:10] = amps[0]
    expected[10:] = amps[1]
    np.testing.assert_allclose(got, expected, atol=CURRENT_ATOL)
    with pytest.raises(ValueError, match="2 columns for a population of 3"):
        bs.Population("N", 3, bs.LIF(), currents=[bs.StepCurrent([0.5, 1.0], amps)])


def test_step_current_validation():
    with pytest.raises(ValueError, match="strictly increasing"):
        bs.StepCurrent([1.0, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="one entry per time"):
        bs.StepCurrent([1.0, 2.0], [1.0])


@pytest.mark.parametrize("dt", [0.1, 0.01])
def test_timed_array_row_k_in_step_k(dt):
    # Sampled at the network's own dt, row k must be applied in step k; zero afterwards.
    T = 150
    values = np.arange(1.0, T + 1.0)  # row k carries k + 1 pA
    got = _applied_current([bs.TimedArray(values, dt=dt)], 1, dt, T + 20)[:, 0]
    expected = np.concatenate([values, np.zeros(20)])
    wrong = np.flatnonzero(np.abs(got - expected) > CURRENT_ATOL)
    assert wrong.size == 0, (wrong[:5], got[wrong[:5]], expected[wrong[:5]])


def test_timed_array_coarse_sampling_offset_and_per_neuron():
    # Rows every 0.5 ms from t_start = 1.0 ms; network dt = 0.1 ms: step k gets row
    # floor((k dt - 1.0) / 0.5) while inside [1.0, 1.0 + 3 * 0.5), zero outside.
    values = np.array([[10.0, -10.0], [20.0, -20.0], [30.0, -30.0]])
    got = _applied_current([bs.TimedArray(values, dt=0.5, t_start=1.0)], 2, 0.1, 40)
    expected = np.zeros((40, 2))
    for k in range(40):
        row = (k - 10) // 5
        if 0 <= row < 3 and k >= 10:
            expected[k] = values[row]
    np.testing.assert_allclose(got, expected, atol=CURRENT_ATOL)
    ta = bs.TimedArray(values, dt=0.5, t_start=1.0)
    np.testing.assert_array_equal(ta(jnp.asarray(0.99)), [0.0, 0.0])
    np.testing.assert_array_equal(ta(jnp.asarray(2.49)), values[2])
    np.testing.assert_array_equal(ta(jnp.asarray(2.5)), [0.0, 0.0])


def test_constant_current_shape_check():
    with pytest.raises(ValueError, match=r"`amplitude`.*\(3,\)"):
        bs.Population("N", 3, bs.LIF(), currents=[bs.ConstantCurrent(np.ones(4))])


# ------------------------------------------------------------------------------- Poisson


# All Poisson runs share one shape (1000 channels, 1000 steps of 0.1 ms) so they share one
# compilation; rates are array leaves and do not retrace.
N_CH, N_STEPS, DT_P = 1000, 1000, 0.1


def _source_counts(rate, seed=0):
    net = bs.Network([bs.Population("P", N_CH, bs.PoissonSource(rate))], dt=DT_P)
    res = bs.simulate(net, n_steps=N_STEPS, key=jax.random.key(seed), record=(bs.SpikeRaster(),))
    return np.asarray(res.recordings[0]["P"]).astype(np.int64), res


def test_poisson_source_mean_rate_and_fano_factor():
    rate = 100.0
    counts, res = _source_counts(rate)
    duration = N_STEPS * DT_P
    lam = rate * duration * 1e-3  # 10 spikes expected per channel
    per_channel = counts.sum(axis=0)
    # Mean over the channels: SD sqrt(lam / n); 5 sigma.
    assert abs(per_channel.mean() - lam) < 5 * np.sqrt(lam / N_CH)
    np.testing.assert_allclose(res.rate("P"), per_channel.mean() / (duration * 1e-3), rtol=1e-6)
    # Fano factor of counts in 10 ms windows (lam_w = 1, 10 windows x 1000 channels): the sample
    # variance of n Poisson(lam) counts has SD ≈ sqrt((lam + 2 lam^2) / n).
    windows = counts.reshape(10, 100, N_CH).sum(axis=1).ravel()
    lam_w = lam / 10
    fano_sd = np.sqrt((lam_w + 2 * lam_w**2) / windows.size) / lam_w
    assert abs(windows.var(ddof=1) / windows.mean() - 1.0) < 5 * fano_sd


def test_poisson_source_emits_poisson_counts_per_step():
    # At 3 kHz and dt = 0.1 ms the count per step is Poisson(0.3), not a clipped Bernoulli:
    # P(2) = 3.3 %, P(3) = 0.33 %. Each frequency within 5 binomial SDs over 1e6 samples.
    counts, _ = _source_counts(3000.0)
    lam = 0.3
    for c in range(4):
        p = np.exp(-lam) * lam**c / np.prod(np.arange(1, c + 1))
        freq = np.mean(counts == c)
        assert abs(freq - p) < 5 * np.sqrt(p * (1 - p) / counts.size), (c, freq, p)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("lam", [0.0, 0.0015, 0.7, 9.5, 40.0, 250.0])
def test_poisson_counts_distribution(lam, dtype, request):
    """The sampler inverts the CDF for means up to SMALL_MEAN and sums ceil(lam / SMALL_MEAN)
    parts for larger ones (40: 4 parts, 250: 25): both give the Poisson pmf (chi-square over
    the bins with >= 20 expected counts, p > 1e-3) with mean and variance within 5 standard
    errors, in float32 and float64; a zero mean gives zero."""
    from scipy import stats

    from brainsim._inputs import poisson_counts

    if dtype == "float64":
        request.getfixturevalue("x64")
    n = 200_000
    x = poisson_counts(jax.random.key(7), jnp.full((n,), lam, dtype))
    assert x.dtype == jnp.dtype(dtype)
    x = np.asarray(x)
    assert np.all(x == np.round(x)) and np.all(x >= 0)
    if lam == 0:
        assert not x.any()
        return
    assert abs(x.mean() - lam) < 5 * np.sqrt(lam / n)
    assert abs(x.var() - lam) < 5 * lam * np.sqrt(2.0 / n) + 5 * np.sqrt(lam / n)
    ks = np.arange(int(lam + 10 * np.sqrt(lam) + 10))
    expected = stats.poisson.pmf(ks, lam) * n
    observed = np.bincount(x.astype(int), minlength=ks.size)[: ks.size]
    keep = expected >= 20
    if keep.sum() >= 2:
        e = expected[keep] * observed[keep].sum() / expected[keep].sum()
        assert stats.chisquare(observed[keep], e).pvalue > 1e-3


def test_poisson_counts_per_element_means():
    """Different means in one call (tiny, moderate, several parts, zero): every element's
    mean count over 4000 keys within 5 SEs (sqrt(lam / 4000)); zero means never fire."""
    from brainsim._inputs import poisson_counts

    lam = jnp.asarray(np.r_[np.geomspace(1e-3, 60.0, 40), 0.0], jnp.float32)
    keys = jax.random.split(jax.random.key(4), 4000)
    x = np.asarray(jax.jit(jax.vmap(lambda k: poisson_counts(k, lam)))(keys))
    lam = np.asarray(lam)
    assert not x[:, lam == 0].any()
    z = (x.mean(axis=0) - lam)[lam > 0] / np.sqrt(lam[lam > 0] / x.shape[0])
    assert np.all(np.abs(z) < 5), np.abs(z).max()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_poisson_inversion_off_the_cpu_draws_the_same_counts(dtype, request):
    """The fixed-length inversion (what a GPU or TPU runs: no loop whose trip count needs the
    host, except over the parts of means above SMALL_MEAN) draws exactly the counts of the
    CPU's stopping loops, for means up to 4 SMALL_MEAN: past the saturation of the cumulative
    sum both leave the count unchanged, and both draw part j from stream j."""
    from brainsim._inputs import SMALL_MEAN, poisson_counts

    if dtype == "float64":
        request.getfixturevalue("x64")
    lam = jnp.asarray(np.geomspace(1e-4, 4 * SMALL_MEAN, 50_000), dtype)
    key = jax.random.key(11)
    stopping = poisson_counts(key, lam, fixed_terms=False)
    fixed = poisson_counts(key, lam, fixed_terms=True)
    assert stopping.dtype == fixed.dtype == jnp.dtype(dtype)
    assert float(stopping.max()) >= 50  # large counts are drawn at the top means
    np.testing.assert_array_equal(np.asarray(fixed), np.asarray(stopping))


def test_poisson_counts_batch_member_draws_what_it_draws_alone():
    """Under vmap over keys and means (the loops run to the batch's largest count and number
    of parts) each member's counts equal its counts drawn alone; an element's count does not
    depend on the other elements' means."""
    from brainsim._inputs import poisson_counts

    keys = jax.random.split(jax.random.key(9), 3)
    lam = jnp.asarray([[0.01] * 8, [0.5] * 8, [25.0] * 8], jnp.float32)
    batched = jax.jit(jax.vmap(poisson_counts))(keys, lam)
    for i in range(3):
        np.testing.assert_array_equal(np.asarray(batched[i]), poisson_counts(keys[i], lam[i]))
    mixed = lam[0].at[3].set(25.0)  # one element needs 3 parts: the others are unchanged
    alone = np.asarray(poisson_counts(keys[0], mixed))
    np.testing.assert_array_equal(np.delete(alone, 3), np.delete(np.asarray(batched[0]), 3))


def test_poisson_source_time_varying_rate():
    rates = np.array([10.0, 100.0, 0.0, 40.0])  # Hz, 20 ms each, then 20 ms past the end
    counts, _ = _source_counts(bs.TimedArray(rates, dt=20.0))
    per_window = counts.reshape(5, 200, N_CH).sum(axis=(1, 2))
    expected = np.concatenate([rates, [0.0]]) * N_CH * 0.02
    for got, exp in zip(per_window, expected, strict=True):
        if exp == 0:
            assert got == 0
        else:
            assert abs(got - exp) < 5 * np.sqrt(exp)


def test_poisson_source_rejects_negative_rate():
    with pytest.raises(ValueError, match="`rate`"):
        bs.PoissonSource(-1.0)


# ------------------------------------------------------------------------- spike generator


def _generator_run(times, indices, n, n_steps, dt=0.1, **kw):
    net = bs.Network([bs.Population("G", n, bs.SpikeGenerator(times, indices, **kw))], dt=dt)
    return bs.simulate(net, n_steps=n_steps, key=jax.random.key(0),
                       record=(bs.SpikeRaster(), bs.SpikeList("G", 64)))


def test_spike_generator_emits_exactly_the_given_events():
    # Unsorted input with a pair repeated three times and one repeated twice.
    times = np.array([3.0, 0.5, 0.0, 0.5, 1.2, 0.5, 0.5, 3.0, 9.9])
    indices = np.array([3, 1, 0, 1, 0, 2, 1, 3, 4])
    res = _generator_run(times, indices, 5, 100)
    raster = np.asarray(res.recordings[0]["G"])
    expected = np.zeros((100, 5), np.uint8)
    np.add.at(expected, (np.rint(times / 0.1).astype(int), indices), 1)
    np.testing.assert_array_equal(raster, expected)
    assert raster[5, 1] == 3 and raster[30, 3] == 2
    want = sorted(zip(np.rint(times / 0.1).astype(int).tolist(), indices.tolist(), strict=True))
    for t, ids in (res.spikes("G"),):
        got = sorted(zip(np.rint(t / 0.1).astype(int).tolist(), ids.tolist(), strict=True))
        assert got == want


def test_spike_generator_round_times():
    with pytest.raises(ValueError, match=r"0\.26 ms.*dt = 0\.1 ms"):
        _generator_run([0.26], [0], 1, 10)
    res = _generator_run([0.26, 0.34], [0, 0], 1, 10, round_times=True)
    np.testing.assert_array_equal(np.asarray(res.recordings[0]["G"])[:, 0],
                                  [0, 0, 0, 2, 0, 0, 0, 0, 0, 0])


@pytest.mark.parametrize("bad", [3, -1])
def test_spike_generator_rejects_out_of_range_index(bad):
    with pytest.raises(ValueError, match=f"index {bad} is out of range"):
        bs.Network([bs.Population("G", 3, bs.SpikeGenerator([1.0], [bad]))], dt=0.1)


def test_spike_generator_argument_checks():
    with pytest.raises(ValueError, match="same length"):
        bs.SpikeGenerator([1.0, 2.0], [0])
    with pytest.raises(ValueError, match=">= 0"):
        bs.SpikeGenerator([-1.0], [0])
    with pytest.raises(TypeError, match="integers"):
        bs.SpikeGenerator([1.0], [0.5])


def test_spike_generator_late_in_a_long_run():
    # A long run at dt = 0.01 ms (e.g. 170 s of a Hodgkin–Huxley network) passes 2^24 steps.
    # Events are still on the grid and must be emitted in their own step.
    dt, k0 = 0.01, 2**24
    n = 6
    steps = k0 + 1 + np.arange(n)
    net = bs.Network([bs.Population("G", n, bs.SpikeGenerator(steps * dt, np.arange(n)))],
                     dt=dt)
    state = net.init(jax.random.key(0))._replace(step=jnp.asarray(k0, jnp.int32))
    res = bs.simulate(net, n_steps=n + 3, state=state, record=(bs.SpikeRaster(),))
    raster = np.asarray(res.recordings[0]["G"])
    expected = np.zeros((n + 3, n), np.uint8)
    expected[1 + np.arange(n), np.arange(n)] = 1
    np.testing.assert_array_equal(raster, expected)


@pytest.mark.parametrize("fixed_terms", [False, True], ids=["cpu-loop", "fixed"])
def test_poisson_counts_single_part_draws_the_same_counts(fixed_terms):
    """Without the loop over parts (every mean at most SMALL_MEAN, as the plan tells a
    specialised source) the counts are the general sampler's, bit for bit, zero means
    included; a mean above SMALL_MEAN gives NaN instead of a wrong count."""
    from brainsim._inputs import SMALL_MEAN, poisson_counts

    lam = jnp.asarray(np.concatenate([[0.0], np.geomspace(1e-4, SMALL_MEAN, 20_000)]), jnp.float32)
    key = jax.random.key(4)
    general = poisson_counts(key, lam, fixed_terms=fixed_terms)
    single = poisson_counts(key, lam, fixed_terms=fixed_terms, single_part=True)
    np.testing.assert_array_equal(np.asarray(single), np.asarray(general))
    over = poisson_counts(key, jnp.asarray([0.5, 2 * SMALL_MEAN]), single_part=True)
    assert np.isfinite(over[0]) and np.isnan(over[1])


def test_poisson_source_is_specialised_by_the_plan_with_concrete_rates_only():
    """The plan marks a Poisson group single-part when its run's rates allow it (means per
    step at most SMALL_MEAN), not when they do not, and not when the rates are traced; the
    spikes are the same either way, and under vmap over the rate."""
    from brainsim._inputs import SMALL_MEAN

    lif = bs.LIF(C_m=250.0, tau_m=10.0, E_L=-70.0, V_th=-55.0, V_reset=-70.0)
    exc = bs.Receptor(bs.ExponentialSynapse(tau=5.0), bs.CurrentBased())

    def net(rate, dt=0.1):
        return bs.Network(
            [bs.Population("in", 20, bs.PoissonSource(rate)),
             bs.Population("E", 5, lif, receptors={"exc": exc})],
            [bs.Projection("in", "E", bs.connect.all_to_all(20, 5, weight=40.0), receptor="exc")],
            dt=dt,
        )  # fmt: skip

    def source_model(plan):
        return next(g.model for g in plan.groups if g.is_source)

    assert source_model(net(800.0).plan()).single_part
    # 200 kHz at dt = 0.1 ms: mean 20 per step, two parts.
    assert not source_model(net(SMALL_MEAN * 2e4).plan()).single_part
    assert not source_model(net(bs.TimedArray(np.array([5.0, 2e5]), dt=1.0)).plan()).single_part
    flags = []  # a traced rate: nothing is known, the source stays general
    jax.make_jaxpr(lambda r: flags.append(source_model(net(r).plan()).single_part))(800.0)
    assert flags == [False]

    key = jax.random.key(2)
    rates = jnp.asarray([200.0, 800.0])
    single = [bs.simulate(net(float(r)), 30.0, key=key, record=(bs.SpikeRaster(),))
              for r in rates]  # fmt: skip
    batched = jax.vmap(lambda r: bs.simulate(net(r), 30.0, key=key, record=(bs.SpikeRaster(),),
                                             check=False))(rates)  # fmt: skip
    for i, one in enumerate(single):
        for pop in ("in", "E"):
            t, ids = one.spikes(pop)
            tb, ib = batched.batch(i).spikes(pop)
            np.testing.assert_array_equal(t, tb)
            np.testing.assert_array_equal(ids, ib)
    assert len(single[1].spikes("E")[0]) > 0
