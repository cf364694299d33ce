"""COBA network in brainsim (``brainsim.networks.coba``), the worker ``compare.py`` pairs with
the peers; it speaks the same command line and protocol as ``brian2_coba.py`` and
``brainpy_coba.py``.

    python benchmarks/peers/brainsim_coba.py --neurons 4000 --duration 1000 --integrator exact

``--integrator exact`` is brainsim's default (exponential integration of the LIF membrane);
``euler`` swaps the LIF's integrator for :class:`brainsim.Euler`, the method of Brian2's
benchmark (the synaptic traces stay exact in both). The simulation is compiled ahead of time
(``setup_s`` = network build + lowering + XLA compilation, as ``coba_bench.py``), recording a
``PopulationRate``; each timed run starts from a new initial state (same connectivity) and
``run_s`` is its wall time until the result is ready; ``cpu_s`` is the process CPU time over
the same interval (all threads). brainsim has no thread setting: XLA runs the loop on one
thread (brainsim compiles with the CPU parallel-task assigner disabled); ``--threads`` is
accepted for symmetry and recorded only.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as c  # noqa: E402


def build(n: int, seed: int, integrator: str, layout: str = "sparse", delay: float = c.DT):
    import equinox as eqx

    import brainsim as bs
    from brainsim.networks import coba

    net = coba(
        n_neurons=n,
        p=c.probability(n),
        seed=seed,
        # --delay counts to the first effect; brainsim's delays, like Brian2's, one step less.
        delay=(c.delay_steps(delay) - 1) * c.DT,
        layout={"sparse": bs.Sparse(), "dense": bs.Dense()}[layout],
    )
    if integrator == "euler":
        net = eqx.tree_at(
            lambda m: [p.model.integrator for p in m.populations],
            net,
            [bs.Euler() for _ in net.populations],
        )
    elif integrator != "exact":
        raise ValueError(f"unknown integrator {integrator!r}")
    return net


def main(argv=None) -> int:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument("--integrator", choices=("exact", "euler"), default="exact")
    p.add_argument("--layout", choices=("sparse", "dense"), default="sparse")
    args = p.parse_args(argv)

    import jax
    import numpy as np

    import brainsim as bs
    from brainsim._simulate import _run_jit

    start = time.perf_counter()
    net = build(args.neurons, args.seed, args.integrator, args.layout, args.delay)
    n_steps = int(round(args.duration / net.dt))
    monitors = (bs.PopulationRate(),)
    state0 = net.init(jax.random.key(args.seed))
    plan = net.plan()  # merged on the host, as simulate does
    compiled = _run_jit.lower(net, state0, monitors, n_steps, None, 1, plan).compile()
    setup_s = time.perf_counter() - start
    sizes = {pop.name: pop.size for pop in net.populations}

    def run_once(r: int) -> dict:
        state = jax.block_until_ready(net.init(jax.random.key(args.seed + 1 + r)))
        cpu0, start = time.process_time(), time.perf_counter()
        result = jax.block_until_ready(compiled(net, state, monitors, n_steps, None, 1, plan))
        run_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu0
        result.raise_if_failed()
        counts = {k: float(np.asarray(v).sum()) for k, v in result.recordings[0].items()}
        assert sizes["E"] == c.n_exc(args.neurons)
        return {
            "run_s": run_s,
            "cpu_s": cpu_s,
            "synapses": int(net.n_synapses),
            **c.rates(counts["E"], counts["I"], args.neurons, args.duration),
        }

    info = {
        "simulator": "brainsim",
        "version": bs.__version__ if hasattr(bs, "__version__") else "",
        "jax": jax.__version__,
        "mode": f"{args.layout}, {jax.devices()[0].platform}",
        "integrator": args.integrator,
        "delay_ms": c.delay_steps(args.delay) * c.DT,
        "setup_s": setup_s,
    }
    return c.serve_or_repeat(args, info, run_once)


if __name__ == "__main__":
    sys.exit(main())
