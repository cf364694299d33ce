"""Sharded vs single-device simulation: strong-scaling efficiency of :func:`brainsim.simulate_sharded`.

Runs the COBA network (:func:`brainsim.networks.coba`, in-degree 80) once with
:func:`brainsim.simulate` and with :func:`brainsim.simulate_sharded` on meshes of the requested
device counts, in one process whose JAX sees ``max(--devices)`` devices. On a CPU the devices
are simulated with ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (the script sets it
for its worker subprocess), so each "device" is a thread of the same CPU: the scaling measured
there is bounded by the number of cores and shows the cost of the per-step exchange, not what
separate GPUs would give. On a machine with several GPUs the same script measures real devices.

    python benchmarks/sharding_bench.py --neurons 4000 --duration 1000 --devices 1 2 --repeats 5

Every configuration is compiled first, then the timed runs are interleaved (single, sharded 1,
sharded 2, ..., repeated), because timing on a shared machine drifts. Printed per configuration:
minimum and median wall time per run, the speed-up over the single-device run
(``t_single / t_sharded``, from the minima) and the parallel efficiency (speed-up / devices),
plus whether the sharded spike counts equal the single-device ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

WORKER = r"""
import json, statistics, sys, time
import jax, numpy as np
import brainsim as bs
from brainsim.networks import coba

neurons, duration, repeats, capacity = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[5]
devices = [int(d) for d in sys.argv[4].split(",")]
capacity = None if capacity == "none" else int(capacity)
net = coba(n_neurons=neurons, p=80.0 / neurons, seed=1)
record = (bs.PopulationRate(),)
key = jax.random.key(0)
runs = {"single": lambda: bs.simulate(net, duration, key=key, record=record)}
build = {}
for n in devices:
    mesh = jax.make_mesh((n,), ("neurons",), devices=jax.devices()[:n])
    t = time.perf_counter()
    sharded = bs.ShardedNetwork(net, mesh, capacity=capacity)
    build[n] = time.perf_counter() - t
    runs[f"sharded{n}"] = (lambda s: lambda: bs.simulate_sharded(s, duration, key=key,
                                                                  record=record))(sharded)
counts, first = {}, {}
for name, fn in runs.items():  # compile (and check) every configuration first
    t = time.perf_counter()
    r = jax.block_until_ready(fn())
    first[name] = time.perf_counter() - t
    counts[name] = [np.asarray(r.spike_counts(p)).astype(int).tolist() for p in ("E", "I")]
times = {name: [] for name in runs}
for _ in range(repeats):
    for name, fn in runs.items():
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times[name].append(time.perf_counter() - t)
rate = float(sum(map(sum, counts["single"])) / (neurons * duration * 1e-3))
print("RESULT" + json.dumps(dict(times=times, first=first, build=build, rate=rate,
      equal={k: counts[k] == counts["single"] for k in counts},
      device=str(jax.devices()[0].device_kind), jax=jax.__version__)))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--neurons", type=int, default=4000)
    parser.add_argument("--duration", type=float, default=1000.0, help="biological time (ms)")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--capacity", default="none", help="spikes per device and step in the compacted exchange"
    )
    parser.add_argument(
        "--platform", default="cpu", help="JAX platform; 'cpu' simulates the devices"
    )
    args = parser.parse_args()
    env = dict(os.environ)
    if args.platform == "cpu":
        flag = f"--xla_force_host_platform_device_count={max(args.devices)}"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
        env["JAX_PLATFORMS"] = "cpu"
    cmd = [
        sys.executable,
        "-c",
        WORKER,
        str(args.neurons),
        str(args.duration),
        str(args.repeats),
        ",".join(map(str, args.devices)),
        str(args.capacity),
    ]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(proc.stderr[-4000:])
    res = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))[6:])
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}; device {res['device']}; jax {res['jax']}"
    )
    print(
        f"COBA {args.neurons} neurons, in-degree 80, {args.duration:g} ms, rate "
        f"{res['rate']:.1f} Hz, capacity {args.capacity}; total {time.perf_counter() - t:.0f} s"
    )
    best = min(res["times"]["single"])
    print(
        f"{'configuration':<12} {'first (s)':>9} {'min (s)':>8} {'median (s)':>10} "
        f"{'speed-up':>8} {'efficiency':>10} {'spikes equal':>12}"
    )
    for name, ts in res["times"].items():
        n = 1 if name == "single" else int(name.removeprefix("sharded"))
        speedup = best / min(ts)
        print(
            f"{name:<12} {res['first'][name]:>9.2f} {min(ts):>8.3f} {statistics.median(ts):>10.3f} "
            f"{speedup:>8.2f} {speedup / n:>10.2f} {str(res['equal'][name]):>12}"
        )


if __name__ == "__main__":
    main()
