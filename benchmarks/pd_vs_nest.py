"""Potjans–Diesmann microcircuit: brainsim against NEST on one core, interleaved run by run.

brainsim builds :func:`brainsim.networks.potjans_diesmann` (default ``scale = k_scale = 0.1``,
Poisson background) and compiles its simulation ahead of time (``_aot.compile_simulation``;
build, trace + lower and XLA compile reported apart, none of them in the run times). The
model's numbers — sizes, synapse counts, mean weights and delays, DC, background, the cells'
parameters and initial-V distributions, read from the built network and
:func:`~brainsim.networks.potjans_diesmann_parameters` — go to a JSON file from which
``benchmarks/peers/nest_potjans_diesmann.py`` builds the same model in NEST (``iaf_psc_exp``,
single-threaded) in its own environment (``--peer-python``). Then ``--repeats`` rounds: one
brainsim run (from a new initial state), one NEST run (continuing its network), each of
``--duration`` ms, so both see the same machine load.

    python benchmarks/pd_vs_nest.py --peer-python /work/peers/nest/bin/python --repeats 2

Reported: both simulators' set-up times, every run's wall time, the ratio brainsim / NEST of
the minimum and of the median run times (below 1: brainsim faster) and of the median process
CPU times (less sensitive to a loaded machine: both run on one thread), and each population's
rate after ``--transient`` ms (mean over the runs) for both, with their relative difference.
The rows are appended to ``--output`` (default ``benchmarks/pd_vs_nest_results.md``) with the
machine, date, jax and NEST versions and the commit; ``--json`` writes everything.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _aot import append_rows, compile_simulation, git_revision  # noqa: E402
from coba_bench import machine_description  # noqa: E402

NEST_SCRIPT = HERE / "peers" / "nest_potjans_diesmann.py"
# The shapes of potjans_diesmann's distributions (brainsim/networks.py): weights normal with
# SD 0.1 |w|, delays normal with SD 0.5 d, redrawn below dt; fixed total numbers with
# autapses and multapses.
WEIGHT_REL_SD = 0.1
DELAY_REL_SD = 0.5


def model_parameters(net, scale: float, k_scale: float, background: str) -> dict:
    """The numbers the NEST script builds its model from, taken from brainsim's."""
    from brainsim.networks import PD14_POPULATIONS, potjans_diesmann_parameters

    derived = potjans_diesmann_parameters(scale=scale, k_scale=k_scale, background=background)
    pops = [net.population(name) for name in PD14_POPULATIONS]
    cell = pops[0].model
    taus = {float(p.receptors["syn"].kinetics.tau) for p in pops}
    fields = ("C_m", "tau_m", "E_L", "V_th", "V_reset", "t_ref")
    if len(taus) != 1 or any(float(getattr(p.model, k)) != float(getattr(cell, k))
                             for p in pops for k in fields):  # fmt: skip
        raise SystemExit("pd_vs_nest: the populations' cells differ; update the NEST script")
    return {
        "populations": list(PD14_POPULATIONS),
        "sizes": [p.size for p in pops],
        "dt": float(net.dt),
        "neuron": {**{k: float(getattr(cell, k)) for k in fields}, "tau_syn": taus.pop()},
        "I_e": [float(p.model.I_e) for p in pops],
        "v0_mean": [float(p.initial["v"].mean) for p in pops],
        "v0_std": [float(p.initial["v"].std) for p in pops],
        "n_synapses": derived.n_synapses.tolist(),
        "weights": derived.weights.tolist(),
        "weight_rel_sd": WEIGHT_REL_SD,
        "delays": derived.delays.tolist(),
        "delay_rel_sd": DELAY_REL_SD,
        "background": background,
        "bg_rates": derived.bg_rates.tolist(),
        "w_ext": float(derived.w_ext),
    }


class NestWorker:
    """The NEST script in ``--serve`` mode in the peer environment."""

    def __init__(self, python: str, params: Path, args):
        cmd = [python, str(NEST_SCRIPT), "--params", str(params), "--serve",
               "--duration", str(args.duration), "--transient", str(args.transient),
               "--seed", str(args.seed), "--threads", "1"]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYNEST_QUIET": "1"}
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.info = self._answer("READY ")

    def _answer(self, prefix: str) -> dict:
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return json.loads(line[len(prefix) :])
        raise SystemExit(f"pd_vs_nest: the NEST worker stopped (exit code {self.proc.wait()})")

    def run(self) -> dict:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self._answer("RESULT ")

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait()


def brainsim_side(args):
    """Build and compile brainsim's model; returns ``(network, compiled run, info)``."""
    import jax

    import brainsim as bs
    from brainsim import networks as nets

    start = time.perf_counter()
    net = nets.potjans_diesmann(
        scale=args.scale, k_scale=args.k_scale, background=args.background, seed=args.seed
    )
    build_s = time.perf_counter() - start
    n_steps = round(args.duration / net.dt)
    state = jax.block_until_ready(net.init(jax.random.key(args.seed)))
    run = compile_simulation(net, state, n_steps, (bs.PopulationRate(nets.PD14_POPULATIONS),))
    info = {
        "simulator": "brainsim",
        "version": bs.__version__,
        "jax": jax.__version__,
        "neurons": net.n_neurons,
        "synapses": net.n_synapses,
        "build_s": build_s,
        "trace_lower_s": run.trace_s + run.lower_s,
        "compile_s": run.compile_s,
    }
    return net, run, info


def brainsim_run(net, run, r: int, args) -> dict:
    import jax
    import numpy as np

    state = jax.block_until_ready(net.init(jax.random.key(args.seed + 1 + r)))
    cpu0, start = time.process_time(), time.perf_counter()
    result = run(net, state)
    run_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu0
    result.raise_if_failed()
    skip = round(args.transient / net.dt)
    window_s = (args.duration - args.transient) * 1e-3
    rates = {
        name: float(np.asarray(counts)[skip:].sum()) / (net.population(name).size * window_s)
        for name, counts in result.recordings[0].items()
    }
    return {"run_s": run_s, "cpu_s": cpu_s, "rates": rates}


def summary(runs: list[dict]) -> dict:
    times = [r["run_s"] for r in runs]
    names = runs[0]["rates"]
    return {
        "run_s": times,
        "cpu_s": [r["cpu_s"] for r in runs],  # process CPU time: above run_s if multithreaded
        "min_s": min(times),
        "median_s": statistics.median(times),
        "rates": {k: statistics.mean(r["rates"][k] for r in runs) for k in names},
    }


COLUMNS = [
    "date", "machine", "jax", "NEST", "commit", "model", "duration (ms)", "repeats",
    "brainsim build / trace+lower / compile (s)", "NEST build / prepare (s)",
    "brainsim runs (s)", "NEST runs (s)", "ratio of mins", "ratio of medians",
    "ratio of CPU medians",
    "rates brainsim (Hz)", "rates NEST (Hz)", "largest rate difference", "load", "command",
]  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--peer-python",
        default=os.environ.get("BRAINSIM_NEST_PYTHON"),
        help="python of the environment with NEST (or $BRAINSIM_NEST_PYTHON)",
    )
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--k-scale", type=float, default=0.1)
    parser.add_argument("--background", choices=("poisson", "dc"), default="poisson")
    parser.add_argument("--duration", type=float, default=1000.0, help="ms per run")
    parser.add_argument(
        "--transient",
        type=float,
        default=200.0,
        help="ms at the start of each run left out of the rates",
    )
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=HERE / "pd_vs_nest_results.md")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)  # fmt: skip
    if args.peer_python is None:
        parser.error("give --peer-python (the python of NEST's environment, see peers/README)")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if not 0 <= args.transient < args.duration:
        parser.error("--transient must lie in [0, --duration)")

    command = "python benchmarks/pd_vs_nest.py " + shlex.join(argv or sys.argv[1:])
    machine = machine_description()
    print(f"machine: {machine}\ncommand: {command}", flush=True)
    load_before = os.getloadavg()[0]
    net, run, b_info = brainsim_side(args)
    print(f"brainsim: build {b_info['build_s']:.1f} s, trace+lower {b_info['trace_lower_s']:.1f}"
          f" s, compile {b_info['compile_s']:.1f} s", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        params = Path(tmp) / "pd_params.json"
        model = model_parameters(net, args.scale, args.k_scale, args.background)
        params.write_text(json.dumps(model))
        nest = NestWorker(args.peer_python, params, args)
        try:
            print(f"NEST {nest.info['version']}: build {nest.info['build_s']:.1f} s, prepare "
                  f"{nest.info['prepare_s']:.1f} s", flush=True)  # fmt: skip
            b_runs, n_runs = [], []
            for r in range(args.repeats):
                b_runs.append(brainsim_run(net, run, r, args))
                n_runs.append(nest.run())
                print(f"round {r}: brainsim {b_runs[-1]['run_s']:.2f} s, NEST "
                      f"{n_runs[-1]['run_s']:.2f} s", flush=True)  # fmt: skip
        finally:
            nest.close()
    load_after = os.getloadavg()[0]
    b, n = summary(b_runs), summary(n_runs)
    diff = {k: b["rates"][k] / n["rates"][k] - 1 if n["rates"][k] else None for k in n["rates"]}
    worst = max((k for k in diff if diff[k] is not None), key=lambda k: abs(diff[k]))
    for k in model["populations"]:
        print(f"  {k:5s} brainsim {b['rates'][k]:6.2f} Hz   NEST {n['rates'][k]:6.2f} Hz")
    ratio_min, ratio_median = b["min_s"] / n["min_s"], b["median_s"] / n["median_s"]
    ratio_cpu = statistics.median(b["cpu_s"]) / statistics.median(n["cpu_s"])
    print(f"ratio brainsim / NEST: {ratio_min:.2f} (mins), {ratio_median:.2f} (medians), "
          f"{ratio_cpu:.2f} (CPU-time medians)")  # fmt: skip

    import jax

    fmt = ", ".join
    row = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine,
        "jax": jax.__version__,
        "NEST": nest.info["version"],
        "commit": git_revision(),
        "model": f"PD scale {args.scale:g}, k_scale {args.k_scale:g}, {args.background} "
        f"({b_info['neurons']} n., {b_info['synapses']} syn.)",
        "duration (ms)": f"{args.duration:g}",
        "repeats": args.repeats,
        "brainsim build / trace+lower / compile (s)": f"{b_info['build_s']:.1f} / "
        f"{b_info['trace_lower_s']:.1f} / {b_info['compile_s']:.1f}",
        "NEST build / prepare (s)": f"{nest.info['build_s']:.1f} / {nest.info['prepare_s']:.1f}",
        "brainsim runs (s)": fmt(f"{t:.2f}" for t in b["run_s"]),
        "NEST runs (s)": fmt(f"{t:.2f}" for t in n["run_s"]),
        "ratio of mins": f"{ratio_min:.2f}",
        "ratio of medians": f"{ratio_median:.2f}",
        "ratio of CPU medians": f"{ratio_cpu:.2f}",
        "rates brainsim (Hz)": fmt(f"{b['rates'][k]:.2f}" for k in model["populations"]),
        "rates NEST (Hz)": fmt(f"{n['rates'][k]:.2f}" for k in model["populations"]),
        "largest rate difference": f"{worst} {100 * diff[worst]:+.0f} %",
        "load": f"{load_before:.1f} / {load_after:.1f}",
        "command": f"`{command}`",
    }
    intro = ("Appended by `benchmarks/pd_vs_nest.py` (see its docstring). Rates: populations "
             "in the order L23E, L23I, L4E, L4I, L5E, L5I, L6E, L6I; load: 1-minute load "
             "average before / after.")  # fmt: skip
    table = append_rows(args.output, "Potjans–Diesmann: brainsim against NEST", intro,
                        COLUMNS, [row])  # fmt: skip
    print("\n" + table + f"appended to {args.output}")
    if args.json is not None:
        payload = {**row, "brainsim": {**b_info, **b}, "nest": {**nest.info, **n},
                   "rate_difference": diff, "model": model}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
