"""Peak memory and time of the gradient of a long simulation: plain BPTT vs checkpointing.

The network: 1,000 LIF neurons (drive spread over 380-480 pA; about 40 Hz), recurrent
current-based exponential synapses with connection probability 0.02 (about 20,000
synapses, ``Sparse`` layout, one-step delay), dt = 0.1 ms. The loss is the mean population
spike count per step (``PopulationRate``, which keeps surrogate gradients), so nothing of
size O(T × neurons) is recorded; the gradient is taken with respect to all synaptic
weights and every neuron's time constant. Each configuration — number of steps × method
(``plain`` = ``simulate(..., checkpoint=None)``, ``L2``/``L3`` = ``Checkpointing(levels=2/3)``)
— runs in its own subprocess, which reports

* ``peak RSS``: the process's peak resident memory after the gradient (``ru_maxrss``),
  i.e. Python + JAX + compilation + the run, and ``run Δ``: its growth during the run
  (peak after minus peak before the first gradient call; compilation happens before);
* XLA's own accounting of the compiled gradient's temporary buffers (``temp``);
* the wall time of the compiled gradient (min over ``--repeats`` calls).

Plain BPTT above ``--plain-max-run`` steps is only compiled (XLA's temporary-memory figure
says what it would need) and not run, so as not to exhaust the machine.

    python benchmarks/memory_bench.py --steps 1000 10000 100000 --methods plain L2 L3
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compare import cpu_name  # noqa: E402

METHODS = {"plain": None, "L2": 2, "L3": 3, "L4": 4}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def network(n: int = 1000, p: float = 0.02, seed: int = 0):
    import numpy as np

    import brainsim as bs
    from brainsim import connect

    lif = bs.LIF(C_m=250.0, tau_m=10.0, E_L=-70.0, V_th=-55.0, V_reset=-70.0, t_ref=2.0,
                 I_e=np.linspace(380.0, 480.0, n), surrogate=bs.surrogate.FastSigmoid(5.0))
    receptor = {"syn": bs.Receptor(bs.ExponentialSynapse(5.0), bs.CurrentBased())}
    edges = connect.fixed_probability(n, n, p, weight=lambda r, k: r.normal(0.0, 1.0, k),
                                      delay=0.0, allow_self=False, seed=seed)
    pops = [bs.Population("N", n, lif, receptors=receptor,
                          initial={"v": bs.init.Uniform(-70.0, -56.0)})]
    return bs.Network(pops, [bs.Projection("N", "N", edges, receptor="syn", layout=bs.Sparse())],
                      dt=0.1)


def worker(n_steps: int, method: str, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    import brainsim as bs
    from brainsim import fit

    net = network()
    levels = METHODS[method]
    checkpoint = None if levels is None else bs.Checkpointing(levels=levels)
    tr = fit.Trainable(net, lambda m: (m.projections[0].connectivity.weights,
                                       m.populations[0].model.tau_m))

    def loss(params):
        r = bs.simulate(tr.build(params), n_steps=n_steps, key=jax.random.key(1),
                        record=(bs.PopulationRate(),), checkpoint=checkpoint, check=False)
        return jnp.mean(r.recordings[0]["N"])

    params = tr.init()
    t0 = time.perf_counter()
    compiled = jax.jit(jax.value_and_grad(loss)).lower(params).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    temp = getattr(mem, "temp_size_in_bytes", None)
    before = peak_rss_mb()
    times, value, grads = [], float("nan"), (jnp.full((), jnp.nan),)
    for _ in range(repeats):
        t0 = time.perf_counter()
        value, grads = jax.block_until_ready(compiled(params))
        times.append(time.perf_counter() - t0)
    after = peak_rss_mb()
    return {
        "n_steps": n_steps, "method": method, "compile_s": compile_s, "run_s": times,
        "peak_rss_mb": after, "rss_before_run_mb": before, "xla_temp_mb": None if temp is None else temp / 2**20,
        "loss": float(value), "rate_hz": float(value) / (net.populations[0].size * 0.1e-3),
        "grad_norm": float(jnp.linalg.norm(grads[0])), "jax": jax.__version__,
    }


def run_config(n_steps: int, method: str, repeats: int, timeout: float) -> dict:
    """One configuration in a fresh subprocess (``repeats`` = 0: compile only)."""
    cmd = [sys.executable, __file__, "--worker", str(n_steps), method, "--repeats", str(repeats)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent)
    except subprocess.TimeoutExpired:
        return {"n_steps": n_steps, "method": method, "error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    last = (proc.stderr.strip().splitlines() or ["?"])[-1]
    return {"n_steps": n_steps, "method": method, "error": f"exit {proc.returncode}: {last}"}


def markdown(rows, command, machine) -> str:
    out = [
        f"Machine: {machine}. Date: {datetime.date.today().isoformat()}. Command: `{command}`.",
        "",
        "| steps | method | peak RSS (MB) | run Δ RSS (MB) | XLA temp (MB) | compile (s) | gradient (s, min) | rate (Hz) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['n_steps']} | {r['method']} | {r['error']} | | | | | |")
            continue
        if not r["run_s"]:
            out.append(f"| {r['n_steps']} | {r['method']} | not run | | {r['xla_temp_mb']:.1f} | "
                       f"{r['compile_s']:.1f} | | |")
            continue
        out.append(
            f"| {r['n_steps']} | {r['method']} | {r['peak_rss_mb']:.0f} | "
            f"{r['peak_rss_mb'] - r['rss_before_run_mb']:.0f} | "
            f"{'–' if r['xla_temp_mb'] is None else format(r['xla_temp_mb'], '.1f')} | "
            f"{r['compile_s']:.1f} | {min(r['run_s']):.2f} | {r['rate_hz']:.1f} |"
        )
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 3000, 10000, 30000, 100000])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=["plain", "L2", "L3"])
    parser.add_argument("--repeats", type=int, default=1, help="timed gradient calls per configuration")
    parser.add_argument("--plain-max-run", type=int, default=10000,
                        help="plain BPTT with more steps is compiled only")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per configuration")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", nargs=2, metavar=("STEPS", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(int(args.worker[0]), args.worker[1], args.repeats)), flush=True)
        return 0
    command = "python benchmarks/memory_bench.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    u = platform.uname()
    machine = f"{cpu_name()}, {os.cpu_count()} CPUs, {u.system} {u.release}"
    print(f"machine: {machine}\ncommand: {command}", flush=True)
    rows = []
    for n in args.steps:
        for m in args.methods:
            repeats = 0 if (m == "plain" and n > args.plain_max_run) else args.repeats
            r = run_config(n, m, repeats, args.timeout)
            rows.append(r)
            print(json.dumps(r), flush=True)
    table = markdown(rows, command, machine)
    print("\n" + table)
    if args.output:
        args.output.write_text(table + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
