"""Potjans–Diesmann microcircuit benchmark: build, compile, real-time factor, rates.

Builds :func:`brainsim.networks.potjans_diesmann` for each requested ``(scale, k_scale)``,
compiles the simulation ahead of time, runs it ``--repeats`` times (a different initial state
each time) and reports the **real-time factor** (wall time / biological time; below 1 is faster
than real time), the build and compile times, the synaptic events delivered per wall-clock
second and the rate of every population after a ``--transient`` (ms) next to the NEST
reference rates. Each configuration runs in its own subprocess so that its peak memory is its
own.

    python benchmarks/microcircuit_bench.py --scales 0.1 --k-scales 0.1 1.0 --duration 1000

On a GPU machine, the full model: ``--scales 1.0 --k-scales 1.0`` (about 3e8 synapses; the
host needs tens of GB to build them). ``--json`` writes all measurements to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from coba_bench import machine_description, peak_rss_mb  # noqa: E402


def measure(scale, k_scale, background, duration, transient, repeats, seed) -> dict:
    """Run one configuration in this process and return its measurements."""
    import jax
    import numpy as np

    import brainsim as bs
    from brainsim import networks as nets
    from brainsim._simulate import _run_jit

    start = time.perf_counter()
    net = nets.potjans_diesmann(scale=scale, k_scale=k_scale, background=background, seed=seed)
    build_s = time.perf_counter() - start
    pops = nets.PD14_POPULATIONS
    monitors = (bs.PopulationRate(pops),)
    n_steps = round(duration / net.dt)
    skip = round(transient / net.dt)
    states = [net.init(jax.random.key(seed + r)) for r in range(repeats)]

    start = time.perf_counter()
    plan = net.plan()  # merged on the host, as simulate does
    compiled = _run_jit.lower(net, states[0], monitors, n_steps, None, 1, plan).compile()
    compile_s = time.perf_counter() - start

    fan_out = dict.fromkeys((p.name for p in net.populations), 0.0)
    for proj in net.projections:
        fan_out[proj.pre] += proj.connectivity.n_synapses / proj.connectivity.n_pre
    run_s, events, rates = [], [], []
    for state in states:
        start = time.perf_counter()
        result = jax.block_until_ready(compiled(net, state, monitors, n_steps, None, 1, plan))
        run_s.append(time.perf_counter() - start)
        result.raise_if_failed()
        counts = {k: np.asarray(v, dtype=float) for k, v in result.recordings[0].items()}
        events.append(sum(counts[k].sum() * fan_out[k] for k in counts))
        late = (duration - transient) * 1e-3
        rates.append([counts[p][skip:].sum() / (net.population(p).size * late) for p in pops])
    run = statistics.median(run_s)
    device = jax.devices()[0]
    return {
        "scale": scale,
        "k_scale": k_scale,
        "background": background,
        "neurons": net.n_neurons,
        "synapses": net.n_synapses,
        "projections": len(net.projections),
        "build_s": build_s,
        "compile_s": compile_s,
        "run_s": run_s,
        "rtf": run / (duration * 1e-3),
        "rtf_min": min(run_s) / (duration * 1e-3),
        "events_per_s": statistics.median(e / t for e, t in zip(events, run_s, strict=True)),
        "rates": dict(zip(pops, np.mean(rates, axis=0).tolist(), strict=True)),
        "reference_rates": dict(zip(pops, nets.PD14_RATES, strict=True)),
        "peak_rss_mb": peak_rss_mb(),
        "jax": jax.__version__,
        "device": f"{device.platform}: {device.device_kind}",
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[0.1])
    parser.add_argument("--k-scales", type=float, nargs="+", default=[0.1])
    parser.add_argument("--background", choices=("poisson", "dc"), default="poisson")
    parser.add_argument("--duration", type=float, default=1000.0, help="biological time (ms)")
    parser.add_argument("--transient", type=float, default=200.0, help="ms left out of rates")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per configuration")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if not 0 <= args.transient < args.duration:
        parser.error("--transient must lie in [0, duration)")

    if args.one:
        r = measure(
            args.scales[0],
            args.k_scales[0],
            args.background,
            args.duration,
            args.transient,
            args.repeats,
            args.seed,
        )
        print("RESULT " + json.dumps(r))
        return 0

    command = "python benchmarks/microcircuit_bench.py " + shlex.join(argv or sys.argv[1:])
    print(f"machine: {machine_description()}\ncommand: {command}", flush=True)
    if hasattr(os, "getloadavg"):
        print(f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
    results, failed = [], False
    for scale in args.scales:
        for k in args.k_scales:
            cmd = [
                sys.executable, __file__, "--one", "--scales", str(scale), "--k-scales", str(k),
                "--background", args.background, "--duration", str(args.duration),
                "--transient", str(args.transient), "--repeats", str(args.repeats),
                "--seed", str(args.seed),
            ]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                failed = True
                print(
                    f"scale {scale}, k_scale {k}: failed (exit code {proc.returncode})\n"
                    f"{proc.stderr[-3000:]}",
                    file=sys.stderr,
                )
                continue
            r = json.loads(lines[-1][len("RESULT ") :])
            results.append(r)
            rates = ", ".join(
                f"{p} {r['rates'][p]:.2f} ({r['reference_rates'][p]:.2f})" for p in r["rates"]
            )
            print(
                f"scale {scale} k_scale {k} ({r['background']}): {r['neurons']} neurons, "
                f"{r['synapses']:.3g} synapses; build {r['build_s']:.1f} s, compile "
                f"{r['compile_s']:.1f} s, runs "
                + ", ".join(f"{t:.2f}" for t in r["run_s"])
                + f" s for {args.duration:g} ms -> real-time factor {r['rtf']:.2f} (min "
                f"{r['rtf_min']:.2f}); {r['events_per_s']:.3g} syn. events/s; peak RSS "
                f"{r['peak_rss_mb']:.0f} MB\n  rates Hz (NEST ref.): {rates}",
                flush=True,
            )
    if hasattr(os, "getloadavg"):
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.json is not None:
        args.json.write_text(
            json.dumps({"machine": machine_description(), "command": command, "results": results})
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
