"""COBA network in BrainPy on its CPU path (event-driven CSR), timed after JIT warm-up.

The model is brainsim.networks.coba written in BrainPy's own idiom (its E/I network examples):
``bp.dyn.LifRefLTC`` neurons (exponential Euler, BrainPy's default), two
``bp.dyn.HalfProjAlignPostMg`` projections, each an event-driven CSR matrix
(``bp.dnn.EventCSRLinear``, brainevent's kernels) into an exponential synapse
(``bp.dyn.Expon``) with a conductance output (``bp.dyn.COBA``); conductances in units of g_L,
a constant 20 mV drive, connection probability ``80 / N`` with self-connections allowed, and
the spikes of step k delivered in step k + 1 (as in brainsim). Run it in an environment with
BrainPy (see benchmarks/peers/README.md):

    /tmp/peers/bin/python benchmarks/peers/brainpy_coba.py --neurons 4000 --duration 1000

Timing: the whole run is one ``bm.jit`` function around ``bm.for_loop``; it is called once to
compile (``setup_s`` includes building the network and that first call), then each timed run
resets the state (new random initial ``V``) and calls it again; ``run_s`` is the wall time of
that call until the result is ready (``cpu_s``: process CPU time, all threads).
``--threads`` > 1 turns on brainevent's parallel Numba kernels with that many threads (XLA's
own thread pool is left as it is).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as c  # noqa: E402

ONE_STEP_ONLY = (
    "brainpy_coba.py models the one-step delay of the COBA benchmark only (its projections "
    "read the previous step's spikes); --delay is not supported"
)


def main(argv=None) -> int:
    args = c.parser(__doc__.split("\n\n")[0]).parse_args(argv)
    if c.delay_steps(args.delay) != 1:
        raise SystemExit(ONE_STEP_ONLY)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    import brainevent
    import brainpy as bp
    import brainpy.math as bm
    import jax
    import numpy as np

    if args.threads > 1:
        brainevent.config.set_numba_parallel(True, num_threads=args.threads)
    else:
        brainevent.config.set_numba_parallel(False)
    bm.set_platform("cpu")
    bm.set_dt(c.DT)
    bm.random.seed(args.seed)

    n = args.neurons
    ne = c.n_exc(n)
    p = c.probability(n)

    class COBA(bp.DynSysGroup):
        def __init__(self):
            super().__init__()
            self.neurons = bp.dyn.LifRefLTC(
                n,
                V_rest=c.E_L,
                V_reset=c.V_RESET,
                V_th=c.V_TH,
                tau=c.TAU_M,
                tau_ref=c.T_REF,
                V_initializer=bp.init.Uniform(c.V_RESET, c.V_TH),
            )
            self.exc = bp.dyn.HalfProjAlignPostMg(
                comm=bp.dnn.EventCSRLinear(
                    bp.conn.FixedProb(p, pre=ne, post=n, seed=args.seed), c.W_EXC
                ),
                syn=bp.dyn.Expon.desc(n, tau=c.TAU_E),
                out=bp.dyn.COBA.desc(E=c.E_EXC),
                post=self.neurons,
            )
            self.inh = bp.dyn.HalfProjAlignPostMg(
                comm=bp.dnn.EventCSRLinear(
                    bp.conn.FixedProb(p, pre=n - ne, post=n, seed=args.seed + 1), c.W_INH
                ),
                syn=bp.dyn.Expon.desc(n, tau=c.TAU_I),
                out=bp.dyn.COBA.desc(E=c.E_INH),
                post=self.neurons,
            )

        def update(self, drive):
            previous = self.neurons.spike.value  # spikes of the last step arrive now
            self.exc(previous[:ne])
            self.inh(previous[ne:])
            spikes = self.neurons(drive)
            return bm.sum(spikes[:ne]), bm.sum(spikes[ne:])

    start = time.perf_counter()
    net = COBA()
    n_steps = int(round(args.duration / c.DT))
    synapses = int(net.exc.comm.indices.size + net.inh.comm.indices.size)

    @bm.jit
    def run(indices):
        return bm.for_loop(lambda i: net.step_run(i, c.DRIVE), indices)

    indices = np.arange(n_steps)
    jax.block_until_ready(run(indices))
    setup_s = time.perf_counter() - start

    def run_once(r: int) -> dict:
        bm.random.seed(args.seed + 1 + r)
        net.reset()  # new initial V, empty synapses, no refractoriness
        cpu0, start = time.process_time(), time.perf_counter()
        count_e, count_i = jax.block_until_ready(run(indices))
        run_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu0
        return {
            "run_s": run_s,
            "cpu_s": cpu_s,
            "synapses": synapses,
            **c.rates(float(np.sum(count_e)), float(np.sum(count_i)), n, args.duration),
        }

    info = {
        "simulator": "brainpy",
        "version": bp.__version__,
        "jax": jax.__version__,
        "brainevent": brainevent.__version__,
        "mode": "cpu, EventCSRLinear",
        "integrator": "exp_auto",
        "setup_s": setup_s,
    }
    return c.serve_or_repeat(args, info, run_once)


if __name__ == "__main__":
    sys.exit(main())
