"""Cost of STDP inside a simulation: the COBA network with plastic E->E synapses versus the
same network without plasticity.

Builds :func:`brainsim.networks.coba` (sparse ELL layout; in-degree 80, ``p = 80 / N``, as in
``coba_bench.py``, or ``--p``), makes the E->E projection plastic (trace-based pair STDP, additive,
event-driven updates of the rows of spiking presynaptic and the columns of spiking
postsynaptic neurons) and times both networks on the same run, interleaved, ``--repeats``
times after a compile-and-warm-up run each. Prints min and median wall time per run and
the ratio plastic / static (the target is <= 2).

``--ablation`` adds three rules that split the cost: ``keep`` (per-synapse weights in the
state, no change), ``depress`` (only the rows of spiking presynaptic neurons) and
``potentiate`` (only the columns of spiking postsynaptic neurons).

    python benchmarks/stdp_bench.py --n-neurons 40000 --duration 200 --repeats 3 [--ablation]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import brainsim as bs
from brainsim import plasticity as pl
from brainsim.networks import coba
from brainsim.plasticity._base import AbstractPlasticity


class KeepWeights(AbstractPlasticity):
    """Per-synapse weights carried in the state, never changed (the cost of plastic storage)."""

    def init(self, synapses, weights):
        return ()

    def update(self, state, weights, pre_spikes, post_spikes, dt, *, synapses, modulator=None):
        return weights, state


class DepressOnly(AbstractPlasticity):
    """Only the presynaptic half of pair STDP: rows of the spiking presynaptic neurons."""

    def init(self, synapses, weights):
        return jnp.zeros(synapses.n_post, weights.dtype)

    def update(self, y, weights, pre_spikes, post_spikes, dt, *, synapses, modulator=None):
        wd = pl.Additive(w_max=12.0)
        w = synapses.trace_update_pre(weights, pre_spikes, 0.0105, y, wd, potentiate=False)
        return w, y * 0.995 + post_spikes


class PotentiateOnly(AbstractPlasticity):
    """Only the postsynaptic half of pair STDP: columns of the spiking postsynaptic neurons."""

    def init(self, synapses, weights):
        return jnp.zeros(synapses.n_pre, weights.dtype)

    def update(self, x, weights, pre_spikes, post_spikes, dt, *, synapses, modulator=None):
        wd = pl.Additive(w_max=12.0)
        w = synapses.trace_update_post(weights, post_spikes, 0.01, x, wd, potentiate=True)
        return w, x * 0.995 + pre_spikes


def plastic_copy(net: bs.Network, projection: str, rule) -> bs.Network:
    """``net`` with ``rule`` on ``projection`` (its built connectivity is reused)."""
    projs = [
        bs.Projection(p.pre, p.post, p.connectivity, receptor=p.receptor, layout=p.layout,
                      stp=p.stp, name=p.name, plasticity=rule if p.name == projection else None)
        for p in net.projections
    ]  # fmt: skip
    return bs.Network(net.populations, projs, dt=net.dt)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-neurons", type=int, default=40000)
    ap.add_argument("--p", type=float, default=None, help="connection probability (80/N)")
    ap.add_argument("--duration", type=float, default=200.0, help="ms per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ablation", action="store_true",
                    help="also time the keep / depress / potentiate rules (module docstring)")
    ap.add_argument("--capacity", type=int, default=None,
                    help="active neurons per update iteration (default ceil(n / 400), 16..128)")
    args = ap.parse_args(argv)
    p = args.p if args.p is not None else 80.0 / args.n_neurons
    t = time.perf_counter()
    static = coba(n_neurons=args.n_neurons, p=p, layout=bs.Sparse())
    rule = pl.PairSTDP(20.0, 20.0, A_plus=0.01, A_minus=0.0105,
                       weight_dependence=pl.Additive(w_max=12.0))  # fmt: skip
    plastic = plastic_copy(static, "E->E:exc", rule)
    if args.capacity is not None:
        i = [p.name for p in plastic.projections].index("E->E:exc")
        old = plastic.projections[i].synapses
        syn = pl.EllSynapses(old.targets, old.n_post, capacity=args.capacity,
                             post_slots=old.post_slots)  # fmt: skip
        plastic = eqx.tree_at(lambda n: n.projections[i].synapses, plastic, syn)
    print(f"build {time.perf_counter() - t:.1f} s, {static.n_synapses} synapses, "
          f"E->E fan-out {plastic.projection('E->E:exc').connectivity.fan_out}, "
          f"fan-in {plastic.projection('E->E:exc').synapses.post_slots.shape[1]}")  # fmt: skip
    nets = {"static": static, "stdp": plastic}
    if args.ablation:
        for name, part in (("keep", KeepWeights()), ("depress", DepressOnly()),
                           ("potentiate", PotentiateOnly())):  # fmt: skip
            nets[name] = plastic_copy(static, "E->E:exc", part)
    times = {k: [] for k in nets}
    rates = {}
    for k, net in nets.items():  # compile + warm up
        t = time.perf_counter()
        r = bs.simulate(net, args.duration, key=jax.random.key(0), record=(bs.PopulationRate(),))
        jax.block_until_ready(r)
        print(f"{k}: first run (compile) {time.perf_counter() - t:.1f} s, rate E {r.rate('E'):.1f} Hz")
    for i in range(args.repeats):
        for k, net in nets.items():
            t = time.perf_counter()
            r = bs.simulate(net, args.duration, key=jax.random.key(i + 1), record=(bs.PopulationRate(),))
            jax.block_until_ready(r)
            times[k].append(time.perf_counter() - t)
            rates[k] = r.rate("E")
    for k in nets:
        print(f"{k}: min {min(times[k]):.3f} s, median {statistics.median(times[k]):.3f} s "
              f"per {args.duration:g} ms, rate E {rates[k]:.1f} Hz, "
              f"ratio of minima to static {min(times[k]) / min(times['static']):.2f}")  # fmt: skip
    ratio_min = min(times["stdp"]) / min(times["static"])
    ratio_med = statistics.median(times["stdp"]) / statistics.median(times["static"])
    # Each repeat runs the networks back to back: the ratio within a repeat cancels the slow
    # drifts of a shared machine's speed, which the minima and medians of separate series do not.
    paired = [p / s for p, s in zip(times["stdp"], times["static"], strict=True)]
    print(f"paired ratios stdp/static per repeat: {' '.join(f'{r:.2f}' for r in paired)}; "
          f"median {statistics.median(paired):.2f}")
    print(f"ratio stdp/static: min {ratio_min:.2f}, median {ratio_med:.2f}  "
          f"({datetime.date.today()}, {platform.processor() or platform.machine()}, "
          f"{jax.devices()[0].platform}, jax {jax.__version__}, N={args.n_neurons}, p={p:g})")
    return np.asarray([ratio_min, ratio_med, statistics.median(paired)])


if __name__ == "__main__":
    main()
