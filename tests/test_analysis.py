"""Spike statistics against hand-computed values and known distributions."""

import numpy as np
import pytest

from brainsim import analysis


def test_firing_rates_by_hand():
    times = [1.0, 5.0, 7.0, 2.0, 400.0]
    ids = [0, 0, 0, 2, 2]
    # 3 spikes in 500 ms = 6 Hz, none, 2 spikes = 4 Hz.
    np.testing.assert_allclose(analysis.firing_rates(times, ids, 3, 500.0), [6.0, 0.0, 4.0])


def test_isi_cv_by_hand():
    # Neuron 0: ISIs 1 and 3 -> mean 2, population std 1 -> CV 0.5.
    # Neuron 1: ISIs 2, 2, 2 -> CV 0. Neuron 2: two spikes only -> excluded (min_spikes=3).
    times = [0.0, 1.0, 4.0, 10.0, 12.0, 14.0, 16.0, 3.0, 9.0]
    ids = [0, 0, 0, 1, 1, 1, 1, 2, 2]
    per = analysis.isi_cv_per_neuron(times, ids, 4)
    np.testing.assert_allclose(per[:2], [0.5, 0.0], atol=1e-15)
    assert np.isnan(per[2]) and np.isnan(per[3])
    assert analysis.isi_cv(times, ids, 4) == pytest.approx(0.25)
    # With min_spikes=2 neuron 2 (one ISI, CV 0) counts too.
    assert analysis.isi_cv(times, ids, 4, min_spikes=2) == pytest.approx(0.5 / 3)


def test_isi_cv_is_independent_of_spike_order():
    rng = np.random.default_rng(0)
    times = rng.uniform(0, 1000, 500)
    ids = rng.integers(0, 10, 500)
    perm = rng.permutation(500)
    a = analysis.isi_cv_per_neuron(times, ids, 10)
    b = analysis.isi_cv_per_neuron(times[perm], ids[perm], 10)
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_regular_train_has_cv_zero_on_a_step_grid():
    # Spike times k * dt carry rounding error; the two-pass variance keeps CV at ~1e-13.
    dt = 0.1
    times = np.arange(0, 100000, 73) * dt
    cv = analysis.isi_cv(times, np.zeros(times.size, np.int64), 1)
    assert cv < 1e-9


def test_poisson_train_has_cv_one():
    # Exponential ISIs have CV 1; with 20,000 intervals per neuron the estimator's standard
    # error is about 1/sqrt(20000) ≈ 0.007, so 0.03 is > 4 standard errors.
    rng = np.random.default_rng(1)
    times, ids = [], []
    for i in range(3):
        t = np.cumsum(rng.exponential(50.0, 20001))
        times.append(t)
        ids.append(np.full(t.size, i))
    cv = analysis.isi_cv(np.concatenate(times), np.concatenate(ids), 3)
    assert cv == pytest.approx(1.0, abs=0.03)


def test_isi_cv_of_silent_population_is_nan():
    assert np.isnan(analysis.isi_cv([], np.zeros(0, np.int64), 5))
    assert np.isnan(analysis.isi_cv([1.0, 2.0], [0, 0], 5))  # only 2 spikes < min_spikes


def test_population_rate_by_hand():
    # 2 neurons, dt 0.5 ms, 10 ms in bins of 4 ms: [0, 4), [4, 8), [8, 10) (a shorter bin).
    times = [0.0, 1.5, 3.5, 4.0, 9.5]
    t, rate = analysis.population_rate(times, 2, 10.0, 0.5, 4.0)
    np.testing.assert_allclose(t, [0.0, 4.0, 8.0])
    # 3 spikes / (2 neurons x 4 ms) = 375 Hz; 1 / (2 x 4 ms) = 125 Hz; 1 / (2 x 2 ms) = 250 Hz.
    np.testing.assert_allclose(rate, [375.0, 125.0, 250.0])


def test_population_rate_conserves_spikes_and_offsets():
    rng = np.random.default_rng(2)
    dt = 0.1
    steps = rng.integers(0, 1000, 300)
    t0 = 50.0
    t, rate = analysis.population_rate(t0 + steps * dt, 7, 100.0, dt, 2.5, t_start=t0)
    assert t[0] == t0 and t.size == 40
    # Integral of the rate x neurons gives back the spike count.
    assert np.sum(rate * 7 * 2.5e-3) == pytest.approx(300)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: analysis.firing_rates([1.0], [3], 3, 10.0), "out of range"),
    (lambda: analysis.firing_rates([1.0, 2.0], [0], 3, 10.0), "same length"),
    (lambda: analysis.firing_rates([1.0], [0.0], 3, 10.0), "must be integers"),
    (lambda: analysis.firing_rates([1.0], [0], 3, 0.0), "positive"),
    (lambda: analysis.isi_cv([1.0], [0], 0), "positive integer"),
    (lambda: analysis.isi_cv([1.0], [0], 1, min_spikes=1), "min_spikes"),
    (lambda: analysis.population_rate([1.0], 1, 10.0, 0.1, 0.25), "multiple of dt"),
    (lambda: analysis.population_rate([10.0], 1, 10.0, 0.1, 1.0), "must lie in"),
])
def test_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
