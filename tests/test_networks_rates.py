"""Benchmark networks against the published reference runs (REFERENCES.md, "Standard networks").

These are population-level validations of the whole simulator (neurons, synapses,
propagation, delays, initial conditions): 4,000 neurons, 1 s of biological time, 3 seeds each.
Bands are derived from the reference numbers and their known uncertainty, not from our output;
see each test. Rates of these balanced networks respond weakly to parameter errors (measured:
+10 % excitatory weight raises the CUBA rate by ~7 %, the COBA rate by ~3 %), so these tests
catch gross errors (units, signs, timing conventions, lost spikes); the exactness of the
components is tested in the unit tests.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import isi_cvs

import brainsim as bs
from brainsim.networks import coba, cuba

pytestmark = pytest.mark.slow

SEEDS = (0, 1, 2)
DURATION = 1000.0  # ms


def _run(builder, seed):
    net = builder(seed=seed)
    res = bs.simulate(net, DURATION, key=jax.random.key(seed), record=(bs.SpikeRaster(),))
    out = {}
    for pop in ("E", "I"):
        times, ids = res.spikes(pop)
        size = net.population(pop).size
        per_neuron = np.bincount(ids, minlength=size) / (DURATION * 1e-3)
        out[pop] = dict(rate=res.rate(pop), per_neuron=per_neuron, times=times, ids=ids,
                        size=size)
    n = out["E"]["size"] + out["I"]["size"]
    out["all"] = (out["E"]["rate"] * out["E"]["size"] + out["I"]["rate"] * out["I"]["size"]) / n
    return out


@pytest.fixture(scope="module")
def coba_runs():
    return [_run(coba, s) for s in SEEDS]


@pytest.fixture(scope="module")
def cuba_runs():
    return [_run(cuba, s) for s in SEEDS]


def _same_rate_within_sampling_error(run):
    # E and I neurons have identical parameters and statistically identical inputs (both get
    # p = 0.02 connections from E and from I with the same weights), so their mean rates can
    # only differ by sampling: 5 standard errors of the difference of the two means (the shared
    # network activity makes the true difference smaller still).
    e, i = run["E"]["per_neuron"], run["I"]["per_neuron"]
    se = np.sqrt(e.var(ddof=1) / e.size + i.var(ddof=1) / i.size)
    assert abs(e.mean() - i.mean()) < 5 * se, (e.mean(), i.mean(), se)


def test_coba_rates_match_brian2(coba_runs):
    # Reference: Brian2 (C++ standalone, Euler, dt = 0.1 ms, seed 42) gives 21.6 Hz for this
    # network with the 20 mV drive. That is one seed with forward Euler, while we integrate
    # exactly; seed-to-seed variation of a 4,000-neuron balanced network and the O(dt/tau)
    # Euler error (0.5-2 % per time constant) each move the rate by a few percent, and the
    # driftless variants reported in the literature span 18.5-21 Hz. We therefore require the
    # mean over 3 seeds within ±10 % of 21.6 Hz and every seed within ±20 %.
    rates = np.array([r["all"] for r in coba_runs])
    assert 0.9 * 21.6 <= rates.mean() <= 1.1 * 21.6, rates
    assert np.all((rates >= 0.8 * 21.6) & (rates <= 1.2 * 21.6)), rates
    for run in coba_runs:
        _same_rate_within_sampling_error(run)
        # Asynchronous activity: most neurons fire (the benchmark is not a few bursting cells).
        assert np.mean(run["E"]["per_neuron"] > 0) > 0.5


def test_cuba_rates_and_irregularity_match_brian2(cuba_runs):
    # Reference: Brian2's CUBA example gives 5.5-5.7 Hz over 3 seeds, i.e. a seed-to-seed SD of
    # about 0.1 Hz. Our 3-seed mean must lie within 5 standard errors of that mean
    # (5.6 ± 5 * 0.1/sqrt(3) ≈ 5.6 ± 0.3 Hz); each seed within 5.6 ± 5 * 0.1 ≈ [5.1, 6.1] Hz.
    rates = np.array([r["all"] for r in cuba_runs])
    assert 5.3 <= rates.mean() <= 5.9, rates
    assert np.all((rates >= 5.1) & (rates <= 6.1)), rates
    # ISI CV ≈ 0.54 in Brian2 (approximate value). Per-neuron CVs from the ~5 ISIs a neuron
    # has in 1 s are biased low and estimator-dependent, so we allow ±0.1: this still separates
    # the asynchronous-irregular regime from regular firing (CV < 0.3) and from Poisson-like
    # firing (CV ≈ 1).
    cvs = []
    for run in cuba_runs:
        _same_rate_within_sampling_error(run)
        both = [isi_cvs(run[p]["times"], run[p]["ids"]) for p in ("E", "I")]
        cv = np.concatenate(both)
        assert cv.size > 1000  # most neurons contribute
        cvs.append(cv.mean())
    assert all(0.44 <= c <= 0.64 for c in cvs), cvs
