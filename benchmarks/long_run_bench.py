"""Overhead of chunked long runs: ``run_long`` (chunks, progress, spikes streamed to disk) vs
one compiled ``simulate`` scan, on the COBA benchmark network.

Both sides are timed warm (compiled beforehand) and include getting the spikes to the host:
``simulate`` then converts its SpikeRaster to spike lists (``result.spikes``), ``run_long``
writes them to files as it goes. The runs are interleaved and repeated because timing on a
shared machine is noisy; the table gives min and median wall times and the overhead of the
medians and of the minima.

    python benchmarks/long_run_bench.py --neurons 4000 --duration 1000 --chunk 100 --repeats 5
"""

from __future__ import annotations

import argparse
import io
import platform
import shutil
import statistics
import tempfile
import time

import jax
import numpy as np

import brainsim as bs
import brainsim._long_run as long_run
import brainsim._progress as progress_bar
import brainsim.networks

HOST_SECONDS = {"convert": 0.0, "write": 0.0, "progress": 0.0}


def _timed(name, fn, wait_for=None):
    def wrapper(*args, **kwargs):
        if wait_for is not None:  # time the host work, not the wait for the device
            jax.block_until_ready(args[wait_for])
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            HOST_SECONDS[name] += time.perf_counter() - t

    return wrapper


# Host-side work per chunk (it overlaps the next chunk's computation): spike extraction,
# file appends, the progress bar.
long_run._chunk_rows = _timed("convert", long_run._chunk_rows, wait_for=3)
long_run._Writer.append = _timed("write", long_run._Writer.append)
progress_bar.SimulationBar.update = _timed("progress", progress_bar.SimulationBar.update)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=4000)
    parser.add_argument("--duration", type=float, default=1000.0, help="ms of biological time")
    parser.add_argument("--chunk", type=float, default=100.0, help="ms per chunk")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    net = bs.networks.coba(n_neurons=args.neurons)
    state = net.init(jax.random.key(0))
    record = (bs.SpikeRaster(),)
    tmp = tempfile.mkdtemp(prefix="brainsim-long-run-")

    def one_scan(spikes):
        result = jax.block_until_ready(
            bs.simulate(net, args.duration, state=state, record=record)
        )
        if spikes:
            return sum(len(result.spikes(p)[0]) for p in ("E", "I"))
        return result

    def chunked(progress):
        out = f"{tmp}/run"
        shutil.rmtree(out, ignore_errors=True)
        stream = io.StringIO() if progress else False
        run = bs.run_long(
            net, args.duration, out, state=state, chunk=args.chunk, record=record,
            progress=stream,
        )
        return run.n_spikes("E") + run.n_spikes("I")

    # "one scan" times the scan alone; "one scan+spikes" adds result.spikes() on the host.
    cases = {"one scan": lambda: one_scan(False), "one scan+spikes": lambda: one_scan(True),
             "chunked": lambda: chunked(False),
             "chunked+progress": lambda: chunked(True)}
    counts = {name: fn() for name, fn in cases.items()}  # compile, and check the spikes agree
    counts["one scan"] = counts["one scan+spikes"]
    assert len(set(counts.values())) == 1, counts
    times = {name: [] for name in cases}
    cpu = {name: [] for name in cases}
    for k in HOST_SECONDS:
        HOST_SECONDS[k] = 0.0
    for _ in range(args.repeats):
        for name, fn in cases.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    shutil.rmtree(tmp, ignore_errors=True)

    base_min, base_med = min(times["one scan"]), statistics.median(times["one scan"])
    print(f"COBA {args.neurons} neurons, {args.duration:g} ms at dt = {net.dt} ms, chunk "
          f"{args.chunk:g} ms, {counts['one scan']} spikes; {platform.processor() or platform.machine()}, "
          f"jax {jax.__version__} on {jax.devices()[0].platform}; {args.repeats} repeats")
    print(f"{'case':<18} {'min s':>8} {'median s':>9} {'overhead (min)':>15} {'overhead (median)':>18}")
    for name, ts in times.items():
        lo, med = min(ts), statistics.median(ts)
        print(f"{name:<18} {lo:8.3f} {med:9.3f} {100 * (lo / base_min - 1):14.1f}% "
              f"{100 * (med / base_med - 1):17.1f}%")
    print("all times (s):", {k: np.round(v, 3).tolist() for k, v in times.items()})
    # CPU time of the process (all threads): the work done, less sensitive than wall time to
    # other processes on a shared machine.
    cpu_base = min(cpu["one scan"])
    print("CPU time (s, min): " + ", ".join(
        f"{k} {min(v):.3f} ({100 * (min(v) / cpu_base - 1):+.1f}%)" for k, v in cpu.items()))
    runs = 2 * args.repeats
    chunk_time = statistics.median(times["chunked+progress"])
    host = {k: v / runs for k, v in HOST_SECONDS.items()}
    print("host work per run (s, overlapping the next chunk): "
          + ", ".join(f"{k} {v:.4f}" for k, v in host.items())
          + f"; progress alone {100 * host['progress'] / chunk_time:.3f}% of the run")


if __name__ == "__main__":
    main()
