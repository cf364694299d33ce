"""Song, Miller & Abbott (2000) in Brian2's setup: 1000 Poisson inputs onto one
conductance-based integrate-and-fire neuron with pair STDP.

Brian2's example (``examples/synapses/STDP.py``): tau_m = 10 ms, E_e = 0, V_t = -54, V_r = -60,
E_L = -74 mV, tau_e = 5 ms, g_max = 0.01 (in units of the leak conductance), tau_pre = tau_post
= 20 ms, dA_pre = 0.01 g_max, dA_post = -1.05 dA_pre, w ~ U(0, g_max), 15 Hz inputs, 100 s.
Here: C = 10 pF, g_L = 1 nS so a weight in nS is Brian2's dimensionless g, and the membrane is
integrated with Euler's method as in Brian2's example. Three output neurons run side by side in
one network (same initial weights): additive STDP at 15 Hz and at 30 Hz input, and
multiplicative (soft-bounded) STDP on the same 15 Hz inputs. Inputs are pre-drawn Bernoulli
trains on the step grid, at most one spike per step and input as from Brian2's
``PoissonGroup`` (a ``SpikeGenerator``; drawing 1000 Poisson counts per step with
``PoissonSource`` costs more per step on CPU). The network keeps brainsim's default timing,
Brian2's: a presynaptic spike is transmitted with the weight before its own update
(``on_pre: g_e += w; ...; w = ...``). 100 s of biological time (1e6 steps) is what Brian2's
parameters need: the additive distribution becomes bimodal slowly.

Brian2 itself (2.9.0, C++ standalone, ``benchmarks/peers/brian2_song.py``, seeds 1-6, 100 s,
in ``benchmarks/peers/reference/song_brian2.json``) gives 22.2-27.8 Hz and 41-44 % of the
weights within 10 % of a bound; the test holds brainsim's additive 15 Hz neuron to that seed
spread (rate, fraction at the bounds and every bin of the weight histogram within the range
of Brian2's seeds widened by one standard deviation of them).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

import brainsim as bs
from brainsim import plasticity as pl

N, G_MAX, DT = 1000, 0.01, 0.1


BRIAN2 = json.loads(
    (Path(__file__).resolve().parents[1] / "benchmarks/peers/reference/song_brian2.json").read_text()
)


def bernoulli_trains(n, rate_hz, duration_ms, seed):
    """Brian2's PoissonGroup on the step grid: each input spikes in a step with probability
    rate * dt, independently."""
    rng = np.random.default_rng(seed)
    p = rate_hz * DT * 1e-3
    steps, ids = [], []
    for start in range(0, int(round(duration_ms / DT)), 100_000):  # bounded memory
        k, i = np.nonzero(rng.random((100_000, n), dtype=np.float32) < p)
        steps.append(k + start)
        ids.append(i)
    steps = np.concatenate(steps)
    keep = steps < int(round(duration_ms / DT))
    return steps[keep] * DT, np.concatenate(ids)[keep]


def song_network(duration_ms, seed=0):
    lif = bs.LIF(C_m=10.0, tau_m=10.0, E_L=-74.0, V_th=-54.0, V_reset=-60.0, t_ref=0.0,
                 integrator=bs.Euler())  # fmt: skip
    receptors = {"e": bs.Receptor(bs.ExponentialSynapse(5.0), bs.ConductanceBased(0.0))}
    rng = np.random.default_rng(seed)
    a_pre = 0.01 * G_MAX

    def rule(dependence):
        return pl.PairSTDP(20.0, 20.0, A_plus=a_pre, A_minus=1.05 * a_pre,
                           weight_dependence=dependence(w_max=G_MAX))  # fmt: skip

    pops, projs = [], []
    for rate in (15, 30):
        times, ids = bernoulli_trains(N, float(rate), duration_ms, seed=[seed, rate])
        pops.append(bs.Population(f"in{rate}", N, bs.SpikeGenerator(times, ids)))
    w0 = rng.uniform(0, G_MAX, N)
    for name, source, dependence in (
        ("add15", "in15", pl.Additive),
        ("add30", "in30", pl.Additive),
        ("mult15", "in15", pl.Multiplicative),
    ):
        pops.append(bs.Population(name, 1, lif, receptors=receptors))
        edges = bs.connect.from_arrays(np.arange(N), np.zeros(N, int), n_pre=N, n_post=1, weight=w0)
        projs.append(
            bs.Projection(source, name, edges, receptor="e", layout=bs.Dense(),
                          plasticity=rule(dependence), name=name)
        )  # fmt: skip
    return bs.Network(pops, projs, dt=DT)


def run_song(duration_ms):
    net = song_network(duration_ms)
    result = bs.simulate(
        net, duration_ms, key=jax.random.key(0), record=(bs.PopulationRate(("add15", "add30", "mult15")),)
    )
    w = {name: result.weights(name)[:, 0] / G_MAX for name in ("add15", "add30", "mult15")}
    last = int(0.25 * result.n_steps)  # rate over the last quarter
    first = int(round(1000.0 / DT))  # rate over the first second (before learning)
    rate, initial, whole = {}, {}, {}
    for name in ("add15", "add30", "mult15"):
        counts = result.spike_counts(name)
        rate[name] = counts[-last:].sum() / (last * DT * 1e-3)
        initial[name] = counts[:first].sum()
        whole[name] = result.rate(name)
    return w, rate, initial, whole


def within_brian2_spread(value, samples):
    """``value`` inside the range of Brian2's seeds widened by one standard deviation."""
    samples = np.asarray(samples, float)
    sd = samples.std(ddof=1)
    return samples.min() - sd <= value <= samples.max() + sd


DURATION_MS = 100_000.0


@pytest.mark.slow
def test_song_miller_abbott():
    w, rate, initial, whole = run_song(DURATION_MS)
    hist = np.histogram(w["add15"], bins=10, range=(0, 1))[0]
    # Brian2's seed spread (same model, Brian2's order of transmission and update).
    assert within_brian2_spread(whole["add15"], [r["rate_hz"] for r in BRIAN2]), whole
    at_bounds = np.mean((w["add15"] < 0.1) | (w["add15"] > 0.9))
    assert within_brian2_spread(at_bounds, [r["within_10_percent_of_a_bound"] for r in BRIAN2])
    for b in range(10):
        assert within_brian2_spread(hist[b], [r["hist"][b] for r in BRIAN2]), (b, hist)
    # Bimodal: the two outer bins are the two largest and hold far more than the 20 % of the
    # initial uniform distribution: Brian2 gives 41.3-43.2 % after 100 s (module docstring).
    assert set(np.argsort(hist)[-2:]) == {0, 9}, hist
    assert 0.35 * N < hist[0] + hist[9] < 0.55 * N, hist
    assert min(hist[0], hist[9]) > 2 * hist[1:9].mean(), hist
    hist = np.histogram(w["mult15"], bins=10, range=(0, 1))[0]
    # Unimodal, away from the bounds: one interior peak holding most weights.
    assert hist[0] + hist[9] < 0.01 * N, hist
    assert np.max(hist) > 0.4 * N, hist
    peak = int(np.argmax(hist))
    assert np.all(np.diff(hist[: peak + 1]) >= 0) and np.all(np.diff(hist[peak:]) <= 0), hist
    # Rate normalisation: doubling the input rate multiplies the output rate by the initial ratio
    # before learning and by far less after it.
    initial_ratio = initial["add30"] / initial["add15"]
    assert initial_ratio > 2.0, initial
    assert rate["add30"] / rate["add15"] < 0.6 * initial_ratio, (rate, initial)


if __name__ == "__main__":
    import sys
    import time

    t = time.time()
    w, rate, initial, whole = run_song(float(sys.argv[1]) if len(sys.argv) > 1 else DURATION_MS)
    print(f"{time.time() - t:.1f} s", rate, initial, whole)
    for name, x in w.items():
        print(name, np.histogram(x, bins=10, range=(0, 1))[0])
