"""Micro-benchmark of ``brainsim.kernels.ell_deliver`` against a dense matrix–vector product.

For each network size ``n`` (``n_pre = n_post = n``), connection probability ``p`` (a fixed
fan-out of ``K = round(p n)`` random targets per presynaptic neuron, per-synapse float32
weights, a one-step delay into a 2-row ring) and fraction ``f`` of presynaptic neurons spiking
per step (exactly ``round(f n)`` per step, drawn from a pool of 32 random spike vectors), one
compiled ``lax.scan`` of ``steps`` delivery steps runs with brainsim's compiler options
(:data:`brainsim._compile.COMPILER_OPTIONS`), for

* ``native`` — ``Implementation.NATIVE_CPU`` (the C++ XLA FFI kernel, CPU only),
* ``triton`` / ``portable`` — ``Implementation.PALLAS_TRITON`` (atomic scatter) and
  ``PALLAS_PORTABLE`` (owner blocks, no atomics), the Pallas GPU kernels (GPU only),
* ``reference`` — ``Implementation.REFERENCE`` (event-driven jnp, chunks of 8 spikes),
* ``dense`` — ``ring_row + spikes @ W`` with an ``n × n`` float32 matrix (what brainsim's
  ``Dense`` layout does; its cost depends on neither ``p`` nor ``f``, so it runs once per
  ``n``, and only up to ``--dense-max-n`` and while the matrix fits in half the free
  memory).

Implementations are timed interleaved (``--repeats`` rounds); the table gives the min and
median time per delivery call (one step), synaptic events (spikes × K) per second of the min,
and the effective memory bandwidth of the min: bytes of the table rows read (target index and
weight, 8 bytes per synapse of a spiking neuron) plus ring entries updated (read and written,
8 bytes per event) plus the spike vector scanned (4 bytes per presynaptic neuron), per second.
For ``dense`` the bytes are the whole matrix (4 n² per step) and the events are the same
useful events as the sparse rows. ``% of copy`` divides that bandwidth by the device's own
copy bandwidth, measured at the start of the run (a 1 GiB ``x + 1``, bytes read plus written).
By default the CPU runs ``native`` and ``reference``, a GPU ``triton`` and ``portable``
(``--implementations`` to choose; the reference is slow on a GPU, see
``default_implementations``). Each call's ``steps`` is chosen so that it delivers about
``--events`` synaptic events (between 10 and 2000 steps).

    python benchmarks/kernel_bench.py --sizes 4000 40000 --output /tmp/kernel.md
    python benchmarks/kernel_bench.py --sizes 400000 --probabilities 0.0002 0.0025 \
        --rates 0.001 0.01 0.1 --dense-max-n 0      # on a GPU
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from brainsim.kernels import Implementation, ell_deliver, native_cpu_available
from jax import lax

from brainsim._compile import COMPILER_OPTIONS

POOL = 32  # distinct spike vectors cycled through the scan
RING_ROWS = 2
IMPLEMENTATIONS = {
    "native": Implementation.NATIVE_CPU,
    "triton": Implementation.PALLAS_TRITON,
    "portable": Implementation.PALLAS_PORTABLE,
    "reference": Implementation.REFERENCE,
}


def default_implementations() -> list[str]:
    if jax.default_backend() == "gpu":
        # Not the reference: off the CPU it reads every synapse in every step (one chunk of
        # all neurons, so that no loop needs the host), a dense cost, not an event-driven one.
        return ["triton", "portable"]
    return (["native"] if native_cpu_available() else []) + ["reference"]


def copy_bandwidth(n_bytes: int = 2**30, repeats: int = 10) -> float:
    """The default device's copy bandwidth (bytes read + written per second) of ``x + 1`` over
    ``n_bytes`` of float32: the ceiling a memory-bound kernel is measured against."""
    x = jnp.zeros((n_bytes // 4,), jnp.float32) + 1.0
    add = jax.jit(lambda x: x + 1.0)
    jax.block_until_ready(add(x))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(add(x))
        times.append(time.perf_counter() - start)
    return 2.0 * n_bytes / statistics.median(times)


def spike_pool(rng, n: int, n_spk: int) -> np.ndarray:
    pool = np.zeros((POOL, n), np.float32)
    for j in range(POOL):
        pool[j, rng.choice(n, n_spk, replace=False)] = 1.0
    return pool


def sparse_program(impl: Implementation, n: int, steps: int):
    def run(ring, pool, targets, weights):
        def body(ring, k):
            spikes = lax.dynamic_index_in_dim(pool, k % POOL, keepdims=False)
            ring = ell_deliver(
                ring,
                k,
                spikes,
                targets,
                weights,
                n_post=n,
                homogeneous_delay=1,
                implementation=impl,
            )
            return ring, None

        ring, _ = lax.scan(body, ring, jnp.arange(steps, dtype=jnp.int32))
        return ring

    return jax.jit(run, compiler_options=COMPILER_OPTIONS)


def dense_program(n: int, steps: int):
    def run(ring, pool, w):
        def body(ring, k):
            spikes = lax.dynamic_index_in_dim(pool, k % POOL, keepdims=False)
            row = ((k + 1) % RING_ROWS) * n
            current = lax.dynamic_slice(ring, (row,), (n,))
            ring = lax.dynamic_update_slice(ring, current + spikes @ w, (row,))
            return ring, None

        ring, _ = lax.scan(body, ring, jnp.arange(steps, dtype=jnp.int32))
        return ring

    return jax.jit(run, compiler_options=COMPILER_OPTIONS)


def time_calls(compiled, args, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        out.append(time.perf_counter() - start)
    return out


def interleaved(programs: dict, repeats: int) -> dict[str, list[float]]:
    times = {k: [] for k in programs}
    for _ in range(repeats):
        for k, (compiled, args) in programs.items():
            times[k] += time_calls(compiled, args, 1)
    return times


def steps_for(events_per_step: float, budget: float) -> int:
    return int(min(2000, max(10, budget / max(events_per_step, 1.0))))


def row(n, p, k, f, n_spk, impl, steps, ts):
    per_call = min(ts) / steps
    events = n_spk * k
    if impl == "dense":
        bytes_ = 4.0 * n * n
    else:
        bytes_ = n_spk * k * 8.0 + events * 8.0 + n * 4.0
    return {
        "n": n,
        "p": p,
        "K": k,
        "f": f,
        "impl": impl,
        "steps": steps,
        "per_call_us": per_call * 1e6,
        "median_us": statistics.median(ts) / steps * 1e6,
        "events_per_s": events / per_call,
        "gb_per_s": bytes_ / per_call / 1e9,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4000, 40000])
    parser.add_argument(
        "--probabilities", type=float, nargs="+", default=[0.001, 0.003, 0.01, 0.03, 0.1]
    )
    parser.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=[0.001, 0.01, 0.1],
        help="fraction of presynaptic neurons spiking per step",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--events",
        type=float,
        default=2e8,
        help="synaptic events per timed call (sets the scan length)",
    )
    parser.add_argument("--dense-max-n", type=int, default=40000)
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument(
        "--implementations", nargs="+", choices=sorted(IMPLEMENTATIONS),
        help="sparse implementations to time (default: native and reference on a CPU; triton, "
        "portable and reference on a GPU)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="write the markdown table here")
    args = parser.parse_args(argv)
    names = args.implementations or default_implementations()
    if args.no_reference:
        names = [n for n in names if n != "reference"]
    if "native" in names and not native_cpu_available():
        print("native CPU kernel unavailable: not timed", file=sys.stderr)
        names.remove("native")
    device = jax.devices()[0]
    copy_gbs = copy_bandwidth() / 1e9
    print(f"device {device.platform}: {device.device_kind}; copy bandwidth {copy_gbs:.0f} GB/s",
          flush=True)

    command = "python benchmarks/kernel_bench.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    rng = np.random.default_rng(args.seed)
    rows = []
    for n in args.sizes:
        if n <= args.dense_max_n and 4.0 * n * n < 0.5 * available_bytes():
            # Dense: independent of p and f; time it with 1 % firing and 10 steps at most
            # (a 40,000² matrix is 6.4 GB and one product reads all of it).
            steps = 10 if n > 10000 else 200
            # Values do not change a dense product's cost: fill the matrix in its own compiled
            # call (one 4 n² buffer; random draws would need several, 24 GB at n = 40,000)
            # and pass it as an argument, so the product cannot be constant-folded.
            w = jax.jit(functools.partial(jnp.full, (n, n), 0.5, jnp.float32))()
            pool = jnp.asarray(spike_pool(rng, n, max(1, round(0.01 * n))))
            ring = jnp.zeros((RING_ROWS * n,), jnp.float32)
            compiled = dense_program(n, steps).lower(ring, pool, w).compile()
            ts = time_calls(compiled, (ring, pool, w), args.repeats + 1)[1:]
            dense_row = row(n, 0.02, 0, 0.01, 0, "dense", steps, ts)
            dense_row["per_call_s"] = min(ts) / steps
            print(
                f"n={n} dense: {dense_row['per_call_us']:.0f} us/step, "
                f"{dense_row['gb_per_s']:.1f} GB/s",
                flush=True,
            )
            rows.append(dense_row)
            del w, compiled
        else:
            dense_row = None
        for p in args.probabilities:
            k = max(1, round(p * n))
            targets = jnp.asarray(rng.integers(0, n, size=(n, k), dtype=np.int32))
            weights = jnp.asarray(rng.normal(size=(n, k)).astype(np.float32))
            for f in args.rates:
                n_spk = max(1, round(f * n))
                steps = steps_for(n_spk * k, args.events)
                pool = jnp.asarray(spike_pool(rng, n, n_spk))
                ring = jnp.zeros((RING_ROWS * n,), jnp.float32)
                impls = {name: IMPLEMENTATIONS[name] for name in names}
                programs = {}
                for name, impl in impls.items():
                    compiled = (
                        sparse_program(impl, n, steps).lower(ring, pool, targets, weights).compile()
                    )
                    call_args = (ring, pool, targets, weights)
                    jax.block_until_ready(compiled(*call_args))  # warm-up
                    programs[name] = (compiled, call_args)
                times = interleaved(programs, args.repeats)
                for name, ts in times.items():
                    r = row(n, p, k, f, n_spk, name, steps, ts)
                    if dense_row is not None:
                        r["vs_dense"] = dense_row["per_call_s"] / (min(ts) / steps)
                    rows.append(r)
                    print(
                        f"n={n} p={p} K={k} f={f}: {name} {r['per_call_us']:.1f} us/step, "
                        f"{r['events_per_s']:.3g} ev/s, {r['gb_per_s']:.2f} GB/s, "
                        f"x{r.get('vs_dense', float('nan')):.1f} vs dense",
                        flush=True,
                    )
    u = platform.uname()
    header = (
        f"Machine: {cpu_name()}, {os.cpu_count()} CPUs, {u.system} {u.release}; "
        f"device {device.platform}: {device.device_kind}, copy bandwidth {copy_gbs:.0f} GB/s; "
        f"jax {jax.__version__}. Date: {datetime.date.today().isoformat()}. "
        f"Command: `{command}`."
    )
    lines = [
        header,
        "",
        "| n | p | K | spiking / step | impl | steps | min µs / call | median µs / call | "
        "syn. events/s | GB/s | % of copy | speed-up vs dense |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["impl"] == "dense":
            lines.append(
                f"| {r['n']} | – | – | – | dense | {r['steps']} | "
                f"{r['per_call_us']:.0f} | {r['median_us']:.0f} | – | "
                f"{r['gb_per_s']:.2f} | {100 * r['gb_per_s'] / copy_gbs:.1f} | 1 |"
            )
        else:
            vs = f"{r['vs_dense']:.0f}" if "vs_dense" in r else "–"
            lines.append(
                f"| {r['n']} | {r['p']:g} | {r['K']} | {r['f'] * 100:g} % "
                f"({round(r['f'] * r['n'])}) | {r['impl']} | {r['steps']} | "
                f"{r['per_call_us']:.1f} | {r['median_us']:.1f} | "
                f"{r['events_per_s']:.3g} | {r['gb_per_s']:.2f} | "
                f"{100 * r['gb_per_s'] / copy_gbs:.1f} | {vs} |"
            )
    table = "\n".join(lines)
    print("\n" + table)
    if args.output:
        args.output.write_text(table + "\n")
    return 0


def available_bytes() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return float("inf")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
