"""Song, Miller & Abbott (2000) in Brian2 (C++ standalone): the reference for
``tests/test_plasticity_song.py``.

Brian2's STDP example setup: 1000 Poisson inputs at 15 Hz onto one conductance-based
integrate-and-fire neuron (tau_m = 10 ms, E_e = 0 mV, V_t = -54 mV, V_r = -60 mV, E_L = -74 mV,
tau_e = 5 ms, Euler), additive pair STDP with hard bounds [0, g_max], g_max = 0.01,
tau_pre = tau_post = 20 ms, dA_pre = 0.01 g_max, dA_post = -1.05 dA_pre, initial w ~ U(0, g_max).
Prints the final histogram of w / g_max (10 bins), the fraction within 10 % of a bound, and the
output rate, as JSON. Run it with Brian2 and a C++ compiler installed
(see benchmarks/peers/README.md):

    /tmp/peers/bin/python benchmarks/peers/brian2_song.py --seed 1 --duration 100

With ``--seeds 1 2 3 4 5 --out benchmarks/peers/reference/song_brian2.json`` it runs one
simulation per seed and writes the list of results: the seed spread that
``tests/test_plasticity_song.py`` holds brainsim's rate and weight histogram to.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="+", help="several runs (overrides --seed)")
    ap.add_argument("--duration", type=float, default=100.0, help="biological time (s)")
    ap.add_argument("--out", help="also write the results (a JSON list) to this file")
    args = ap.parse_args(argv)
    results = [run(seed, args.duration) for seed in (args.seeds or [args.seed])]
    for r in results:
        print(json.dumps(r))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
            f.write("\n")
    return 0


def run(seed: int, duration: float) -> dict:
    """One Brian2 run: the final weight histogram (10 bins of w / g_max) and the rate."""

    import brian2 as b2
    from brian2 import Hz, ms, mV, second

    with tempfile.TemporaryDirectory() as build:
        b2.set_device("cpp_standalone", directory=build)
        b2.seed(seed)
        n, g_max = 1000, 0.01
        tau_m, tau_e, tau_pre, tau_post = 10 * ms, 5 * ms, 20 * ms, 20 * ms  # noqa: F841
        E_e, V_t, V_r, E_L = 0 * mV, -54 * mV, -60 * mV, -74 * mV  # noqa: F841 (used by name)
        dA_pre = 0.01 * g_max
        dA_post = -dA_pre * tau_pre / tau_post * 1.05  # noqa: F841
        inputs = b2.PoissonGroup(n, rates=15 * Hz)
        neuron = b2.NeuronGroup(
            1,
            "dv/dt = (g_e * (E_e - v) + E_L - v) / tau_m : volt\ndg_e/dt = -g_e / tau_e : 1",
            threshold="v > V_t",
            reset="v = V_r",
            method="euler",
        )
        neuron.v = E_L
        synapses = b2.Synapses(
            inputs,
            neuron,
            """w : 1
               dA_pre_trace/dt = -A_pre_trace / tau_pre : 1 (event-driven)
               dA_post_trace/dt = -A_post_trace / tau_post : 1 (event-driven)""",
            on_pre="""g_e += w
                      A_pre_trace += dA_pre
                      w = clip(w + A_post_trace, 0, g_max)""",
            on_post="""A_post_trace += dA_post
                       w = clip(w + A_pre_trace, 0, g_max)""",
        )
        synapses.connect()
        synapses.w = "rand() * g_max"
        spikes = b2.SpikeMonitor(neuron)
        b2.run(duration * second)
        w = np.asarray(synapses.w) / g_max
        hist = np.histogram(w, bins=10, range=(0, 1))[0]
        result = {
            "seed": seed,
            "duration_s": duration,
            "hist": hist.tolist(),
            "within_10_percent_of_a_bound": float(np.mean((w < 0.1) | (w > 0.9))),
            "rate_hz": spikes.num_spikes / duration,
            "brian2": b2.__version__,
        }
        b2.device.reinit()  # a standalone device runs once: reset it for the next seed
        b2.device.activate()
        return result


if __name__ == "__main__":
    raise SystemExit(main())
