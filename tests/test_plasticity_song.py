"""Song, Miller & Abbott (2000) in Brian2's setup: 1000 Poisson inputs onto one
conductance-based integrate-and-fire neuron with pair STDP.

Brian2's example (``examples/synapses/STDP.py``): tau_m = 10 ms, E_e = 0, V_t = -54, V_r = -60,
E_L = -74 mV, tau_e = 5 ms, g_max = 0.01 (in units of the leak conductance), tau_pre = tau_post
= 20 ms, dA_pre = 0.01 g_max, dA_post = -1.05 dA_pre, w ~ U(0, g_max), 15 Hz inputs, 100 s.
Here: C = 10 pF, g_L = 1 nS so a weight in nS is Brian2's dimensionless g. Three output
neurons run side by side in one network (same initial weights): additive STDP at 15 Hz and at
30 Hz input, and multiplicative (soft-bounded) STDP on the same 15 Hz inputs. Inputs are
pre-drawn Poisson trains (a ``SpikeGenerator``; drawing 1000 Poisson counts per step with
``PoissonSource`` costs ~100x more per step on CPU). 100 s of biological time (1e6 steps) is
what Brian2's parameters need: the additive distribution becomes bimodal slowly. Brian2 itself
(2.9.0, C++ standalone, ``benchmarks/peers/brian2_song.py``, run here on 2026-11-22) ends with
43.2 % and 41.3 % of the weights within 10 % of a bound after 100 s (seeds 1, 2) and 53.8 %
after 300 s (seed 3);
brainsim gives 45 % after 100 s and 51 % after 300 s. So "most weights at the bounds" holds
from a few hundred seconds on, in both simulators; the test runs 100 s and checks the shape and
Brian2's fraction.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import brainsim as bs
from brainsim import plasticity as pl

N, G_MAX, DT = 1000, 0.01, 0.1


def poisson_trains(n, rate_hz, duration_ms, seed):
    rng = np.random.default_rng(seed)
    steps = int(round(duration_ms / DT))
    # Per channel, exponential inter-spike intervals, then snapped to the step grid.
    per = rng.poisson(rate_hz * duration_ms * 1e-3, n)
    ids = np.repeat(np.arange(n), per)
    k = rng.integers(0, steps, ids.size)
    order = np.argsort(k, kind="stable")
    return k[order] * DT, ids[order]


def song_network(duration_ms, seed=0):
    lif = bs.LIF(C_m=10.0, tau_m=10.0, E_L=-74.0, V_th=-54.0, V_reset=-60.0, t_ref=0.0)
    receptors = {"e": bs.Receptor(bs.ExponentialSynapse(5.0), bs.ConductanceBased(0.0))}
    rng = np.random.default_rng(seed)
    a_pre = 0.01 * G_MAX

    def rule(dependence):
        return pl.PairSTDP(20.0, 20.0, A_plus=a_pre, A_minus=1.05 * a_pre,
                           weight_dependence=dependence(w_max=G_MAX))  # fmt: skip

    pops, projs = [], []
    for rate in (15, 30):
        times, ids = poisson_trains(N, float(rate), duration_ms, seed=[seed, rate])
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
    rate, initial = {}, {}
    for name in ("add15", "add30", "mult15"):
        counts = result.spike_counts(name)
        rate[name] = counts[-last:].sum() / (last * DT * 1e-3)
        initial[name] = counts[:first].sum()
    return w, rate, initial


DURATION_MS = 100_000.0


@pytest.mark.slow
def test_song_miller_abbott():
    w, rate, initial = run_song(DURATION_MS)
    hist = np.histogram(w["add15"], bins=10, range=(0, 1))[0]
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
    w, rate, initial = run_song(float(sys.argv[1]) if len(sys.argv) > 1 else DURATION_MS)
    print(f"{time.time() - t:.1f} s", rate, initial)
    for name, x in w.items():
        print(name, np.histogram(x, bins=10, range=(0, 1))[0])
