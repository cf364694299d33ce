"""Connectivity build benchmark: time and peak memory of the NumPy builders up to 10^8 synapses.

Each (builder, size) runs in its own subprocess so that its peak resident memory is its own.
Sizes are synapse counts; the networks keep 100 synapses per neuron on average:

* ``fixed_indegree``: ``n = N / 100`` neurons onto themselves, ``k = 100``, ``allow_self=False``;
* ``fixed_probability``: ``n = sqrt(N / 0.01)`` neurons, ``p = 0.01``, ``allow_self=False``;
* ``fixed_outdegree`` and ``fixed_total_number`` likewise (``k = 100``; ``N`` synapses).

Weights are ``connect.Normal(1.0, 0.1)`` (one float64 per synapse) with ``--weights normal``
(default) or one shared scalar with ``--weights scalar``; the delay is a scalar. Columns:
``time`` the wall time of the builder call (median over ``--repeats``), ``result`` the bytes of
the returned arrays, ``peak RSS`` the subprocess's maximum resident memory, ``over baseline`` that
peak minus the resident memory just before building (Python, NumPy and JAX imported), i.e. what
the build itself needed at its worst, to compare with ``result``.

    python benchmarks/build_bench.py --sizes 1e6 1e7 1e8 --builders fixed_indegree fixed_probability
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def build(builder: str, n_synapses: int, weights: str, seed: int):
    import numpy as np

    from brainsim import connect

    weight = connect.Normal(1.0, 0.1) if weights == "normal" else 1.0
    common = dict(weight=weight, delay=1.5, allow_self=False, seed=seed)
    if builder in ("fixed_indegree", "fixed_outdegree"):
        n = n_synapses // 100
        return getattr(connect, builder)(n, n, 100, **common)
    if builder == "fixed_probability":
        n = int(round(np.sqrt(n_synapses / 0.01)))
        return connect.fixed_probability(n, n, 0.01, **common)
    if builder == "fixed_total_number":
        n = n_synapses // 100
        return connect.fixed_total_number(n, n, n_synapses, **common)
    raise ValueError(f"unknown builder {builder!r}")


def measure(builder: str, n_synapses: int, weights: str, repeats: int) -> dict:
    import brainsim  # noqa: F401  (import cost and memory are not part of the build)

    baseline = rss_mb()
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        edges = build(builder, n_synapses, weights, seed=r)
        times.append(time.perf_counter() - start)
        result = edges.pre.nbytes + edges.post.nbytes + edges.weight.nbytes
        synapses = edges.n_synapses
        index_dtype = str(edges.pre.dtype)
        del edges
    return {
        "builder": builder,
        "requested": n_synapses,
        "synapses": synapses,
        "index dtype": index_dtype,
        "time_s": statistics.median(times),
        "time_min_s": min(times),
        "result_mb": result / 2**20,
        "peak_rss_mb": peak_rss_mb(),
        "baseline_mb": baseline,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7, 1e8])
    parser.add_argument(
        "--builders",
        nargs="+",
        default=["fixed_indegree", "fixed_probability"],
        choices=["fixed_indegree", "fixed_outdegree", "fixed_probability", "fixed_total_number"],
    )
    parser.add_argument("--weights", choices=("normal", "scalar"), default="normal")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # child: builder size
    args = parser.parse_args(argv)
    if args.one:
        row = measure(args.one[0], int(float(args.one[1])), args.weights, args.repeats)
        print(json.dumps(row))
        return 0
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    header = ("builder", "synapses", "idx", "time (s)", "result (MB)", "peak RSS (MB)",
              "over baseline (MB)")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for builder in args.builders:
        for size in args.sizes:
            cmd = [sys.executable, __file__, "--one", builder, str(size), "--weights",
                   args.weights, "--repeats", str(args.repeats)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                print(f"| {builder} | {size:.0e} | failed: {out.stderr.strip()[-300:]} |")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"| {r['builder']} | {r['synapses']:,} | {r['index dtype']} | {r['time_s']:.2f} "
                f"(min {r['time_min_s']:.2f}) | {r['result_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
                f"{r['peak_rss_mb'] - r['baseline_mb']:.0f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
