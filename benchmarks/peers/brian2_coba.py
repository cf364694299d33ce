"""COBA network in Brian2's C++ standalone mode, timed without code generation or compilation.

The model is brainsim.networks.coba written as Brian2's own COBA benchmark writes it
(conductances in units of g_L, Euler integration, ``connect(p=...)`` with self-connections
allowed, ``v`` uniform in [V_reset, V_th], a constant 20 mV drive). Run it in an environment
with Brian2 and a C++ compiler (see benchmarks/peers/README.md):

    /tmp/peers/bin/python benchmarks/peers/brian2_coba.py --neurons 4000 --duration 1000

Timing. The C++ project is generated and compiled once (``setup_s``). Each timed run executes
the compiled binary with a new initial ``v`` (passed as a run argument, so connectivity stays
the same); ``run_s`` is the wall-clock time of the network's run loop alone, read from a
``std::chrono::steady_clock`` pair inserted around it (it excludes the binary's start-up,
synapse creation and result writing). ``run_s_brian2`` is the figure Brian2 itself reports
(``device._last_run_time``): without OpenMP Brian2 measures it with ``std::clock()``, i.e. the
process's CPU time, which on a VM with CPU steal can be lower than the wall time.
``--threads 1`` builds without OpenMP (Brian2's default); more threads use OpenMP.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as c  # noqa: E402


def main(argv=None) -> int:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument(
        "--build-dir",
        default=None,
        help="C++ project folder (default: a temporary folder, removed at exit)",
    )
    args = p.parse_args(argv)

    import brian2 as b2
    from brian2 import ms, mV

    build_dir = args.build_dir or tempfile.mkdtemp(prefix="brian2_coba_")
    try:
        return _bench(args, b2, mV, ms, build_dir)
    finally:
        if args.build_dir is None:
            shutil.rmtree(build_dir, ignore_errors=True)


def _bench(args, b2, mV, ms, build_dir) -> int:
    b2.set_device("cpp_standalone", directory=build_dir, build_on_run=False)
    b2.prefs.devices.cpp_standalone.openmp_threads = args.threads if args.threads > 1 else 0
    b2.prefs.codegen.cpp.headers += ["<chrono>"]
    b2.seed(args.seed)
    b2.defaultclock.dt = c.DT * ms

    n = args.neurons
    ne = c.n_exc(n)
    namespace = {
        "tau_m": c.TAU_M * ms,
        "tau_e": c.TAU_E * ms,
        "tau_i": c.TAU_I * ms,
        "E_L": c.E_L * mV,
        "V_th": c.V_TH * mV,
        "V_reset": c.V_RESET * mV,
        "E_exc": c.E_EXC * mV,
        "E_inh": c.E_INH * mV,
        "I_drive": c.DRIVE * mV,
        "we": c.W_EXC,
        "wi": c.W_INH,
    }
    eqs = """
    dv/dt = (ge * (E_exc - v) + gi * (E_inh - v) - (v - E_L) + I_drive) / tau_m : volt (unless refractory)
    dge/dt = -ge / tau_e : 1
    dgi/dt = -gi / tau_i : 1
    """
    group = b2.NeuronGroup(
        n,
        eqs,
        threshold="v > V_th",
        reset="v = V_reset",
        refractory=c.T_REF * ms,
        method="euler",
        namespace=namespace,
    )
    # Brian2's delay (and brainsim's) counts from the step after the spike (zero = acts in the
    # next step); --delay counts the whole way to the first effect.
    steps = c.delay_steps(args.delay)
    delay = {"delay": (steps - 1) * c.DT * ms} if steps > 1 else {}
    exc = b2.Synapses(group[:ne], group, on_pre="ge += we", namespace=namespace, **delay)
    exc.connect(p=c.probability(n))
    inh = b2.Synapses(group[ne:], group, on_pre="gi += wi", namespace=namespace, **delay)
    inh.connect(p=c.probability(n))
    group.v = "V_reset + rand() * (V_th - V_reset)"
    group.ge = 0
    group.gi = 0
    spikes = b2.SpikeMonitor(group, record=False)  # spike counts only

    b2.device.insert_code(
        "before_network_run",
        "std::chrono::steady_clock::time_point _bench_start = std::chrono::steady_clock::now();",
    )
    b2.device.insert_code(
        "after_network_run",
        '{ std::ofstream _bench_out((brian::results_dir + "bench_wall.txt").c_str());'
        " _bench_out.precision(9); _bench_out << std::chrono::duration<double>("
        "std::chrono::steady_clock::now() - _bench_start).count() << std::endl; }",
    )
    b2.run(args.duration * ms)

    start = time.perf_counter()
    b2.device.build(directory=build_dir, compile=True, run=False, with_output=False)
    setup_s = time.perf_counter() - start

    rng = np.random.default_rng(args.seed)

    def run_once(r: int) -> dict:
        v0 = (c.V_RESET + rng.random(n) * (c.V_TH - c.V_RESET)) * mV
        start = time.perf_counter()
        b2.device.run(with_output=False, run_args={group.v: v0})
        process_s = time.perf_counter() - start
        with open(os.path.join(b2.device.results_dir, "bench_wall.txt")) as f:
            wall = float(f.read().split()[0])
        counts = np.asarray(spikes.count[:], dtype=float)
        return {
            "run_s": wall,
            "run_s_brian2": float(b2.device._last_run_time),
            "process_s": process_s,
            "synapses": int(len(exc) + len(inh)),
            **c.rates(counts[:ne].sum(), counts[ne:].sum(), n, args.duration),
        }

    info = {
        "simulator": "brian2",
        "version": b2.__version__,
        "mode": "cpp_standalone",
        "integrator": "euler",
        "delay_ms": c.delay_steps(args.delay) * c.DT,
        "setup_s": setup_s,
    }
    return c.serve_or_repeat(args, info, run_once)


if __name__ == "__main__":
    sys.exit(main())
