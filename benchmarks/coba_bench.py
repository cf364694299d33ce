"""COBA benchmark: compile time, run time per biological second, synaptic events per second.

Builds the Vogels–Abbott COBA network (:func:`brainsim.networks.coba`) at each requested size
with the in-degree kept at 80 (``p = 80 / N``), compiles the simulation ahead of time and runs
it ``--repeats`` times (a different initial state each time). Each size runs in its own
subprocess so that its peak memory is its own. Results are printed and merged into a markdown
table (default ``benchmarks/results.md``): a row is replaced by a newer one for the same machine,
device, jax version, layout, size and duration.

    python benchmarks/coba_bench.py --sizes 4000 40000 --duration 1000 --layout sparse --repeats 3

Columns: ``compile`` is lowering + XLA compilation (s); ``run / bio s`` is the median wall time
per simulated second; ``rate`` the mean firing rate; ``syn. events/s`` the spikes times their
fan-out delivered per wall-clock second; ``peak RSS`` the subprocess's maximum resident memory.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = ("date", "machine", "device", "jax", "layout", "neurons", "synapses", "duration (ms)",
           "compile (s)", "run / bio s (s)", "rate (Hz)", "syn. events/s", "peak RSS (MB)",
           "command")
KEY = ("machine", "device", "jax", "layout", "neurons", "duration (ms)")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> str:
    u = platform.uname()
    return f"{cpu_name()}, {os.cpu_count()} CPUs, {u.system} {u.release} {u.machine}"


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def measure(
    n: int, duration: float, layout_name: str, repeats: int, seed: int, unroll: int = 1,
    spike_lists: bool = False,
) -> dict:
    """Run one size in this process and return its measurements."""
    import jax
    import numpy as np

    import brainsim as bs
    from brainsim._simulate import _run_jit
    from brainsim.networks import coba

    layout = {"sparse": bs.Sparse(), "dense": bs.Dense()}[layout_name]
    start = time.perf_counter()
    net = coba(n_neurons=n, p=min(1.0, 80.0 / n), seed=seed, layout=layout)
    build_s = time.perf_counter() - start
    monitors = (bs.PopulationRate(),)
    if spike_lists:  # every spike as (step, neuron) too; room for 4x the expected ~21 Hz
        monitors += tuple(
            bs.SpikeList(p.name, capacity=int(4 * 21.0 * p.size * duration * 1e-3) + 1000)
            for p in net.populations
        )
    n_steps = round(duration / net.dt)
    states = [net.init(jax.random.key(seed + r)) for r in range(repeats)]

    start = time.perf_counter()
    plan = net.plan()  # merged on the host, as simulate does
    compiled = _run_jit.lower(net, states[0], monitors, n_steps, None, unroll, plan).compile()
    compile_s = time.perf_counter() - start

    # Mean fan-out of each population, to turn spike counts into synaptic events.
    fan_out = {p.name: 0.0 for p in net.populations}
    for proj in net.projections:
        fan_out[proj.pre] += proj.connectivity.n_synapses / proj.connectivity.n_pre
    run_s, events, rates = [], [], []
    for state in states:
        start = time.perf_counter()
        result = jax.block_until_ready(compiled(net, state, monitors, n_steps, None, unroll, plan))
        run_s.append(time.perf_counter() - start)
        result.raise_if_failed()
        counts = {name: float(np.asarray(c).sum()) for name, c in result.recordings[0].items()}
        events.append(sum(counts[name] * fan_out[name] for name in counts))
        rates.append(sum(counts.values()) / (net.n_neurons * duration * 1e-3))
    run = statistics.median(run_s)
    device = jax.devices()[0]
    return {
        "neurons": net.n_neurons, "synapses": net.n_synapses, "build_s": build_s,
        "compile_s": compile_s, "run_s": run_s, "run_per_bio_s": run / (duration * 1e-3),
        "us_per_step": run / n_steps * 1e6,
        "rate_hz": statistics.mean(rates),
        "events_per_s": statistics.median(e / t for e, t in zip(events, run_s, strict=True)),
        "peak_rss_mb": peak_rss_mb(), "jax": jax.__version__,
        "device": f"{device.platform}: {device.device_kind}",
    }


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == len(COLUMNS) and cells[0] not in ("date", ""):
            if not set(cells[0]) <= set("-: "):
                rows.append(dict(zip(COLUMNS, cells, strict=True)))
    return rows


def write_table(path: Path, rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row[c] for c in COLUMNS) + " |" for row in rows]
    table = "\n".join(lines)
    path.write_text(
        "# COBA benchmark results\n\n"
        "Written by `benchmarks/coba_bench.py` (see benchmarks/README.md); newer rows replace\n"
        "older ones for the same machine, device, jax version, layout, size and duration.\n\n"
        + table + "\n"
    )
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4000], help="neuron counts")
    parser.add_argument("--duration", type=float, default=1000.0, help="biological time (ms)")
    parser.add_argument("--layout", choices=("sparse", "dense"), default="sparse")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unroll", type=int, default=1,
                        help="time steps per iteration of the compiled loop (lax.scan unroll)")
    parser.add_argument("--spike-lists", action="store_true",
                        help="also record every spike with a SpikeList per population")
    parser.add_argument("--output", type=Path, default=HERE / "results.md",
                        help="markdown table to update (default benchmarks/results.md)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.unroll < 1:
        parser.error("--unroll must be at least 1")

    if args.one:
        result = measure(args.sizes[0], args.duration, args.layout, args.repeats, args.seed,
                         args.unroll, args.spike_lists)
        print("RESULT " + json.dumps(result))
        return 0

    command = "python benchmarks/coba_bench.py " + shlex.join(argv or sys.argv[1:])
    machine = machine_description()
    print(f"machine: {machine}\ncommand: {command}", flush=True)
    new_rows, failed = [], False
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--one", "--sizes", str(n), "--duration",
               str(args.duration), "--layout", args.layout, "--repeats", str(args.repeats),
               "--seed", str(args.seed), "--unroll", str(args.unroll)]
        cmd += ["--spike-lists"] if args.spike_lists else []
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            failed = True
            print(f"N = {n}: failed (exit code {proc.returncode})\n{proc.stderr[-3000:]}",
                  file=sys.stderr)
            continue
        r = json.loads(lines[-1][len("RESULT "):])
        print(f"N = {r['neurons']}: build {r['build_s']:.1f} s, compile {r['compile_s']:.2f} s, runs "
              + ", ".join(f"{t:.3f}" for t in r["run_s"])
              + f" s ({r['us_per_step']:.2f} us/step), {r['rate_hz']:.1f} Hz, {r['events_per_s']:.3g} events/s, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
        new_rows.append({
            "date": datetime.date.today().isoformat(), "machine": machine, "device": r["device"],
            "jax": r["jax"], "layout": args.layout, "neurons": str(r["neurons"]),
            "synapses": str(r["synapses"]), "duration (ms)": f"{args.duration:g}",
            "compile (s)": f"{r['compile_s']:.2f}", "run / bio s (s)": f"{r['run_per_bio_s']:.3f}",
            "rate (Hz)": f"{r['rate_hz']:.1f}", "syn. events/s": f"{r['events_per_s']:.3g}",
            "peak RSS (MB)": f"{r['peak_rss_mb']:.0f}", "command": f"`{command}`",
        })
    if new_rows:
        new_keys = {tuple(row[k] for k in KEY) for row in new_rows}
        rows = [row for row in read_rows(args.output)
                if tuple(row[k] for k in KEY) not in new_keys] + new_rows
        print("\n" + write_table(args.output, rows))
        print(f"\nupdated {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
