"""Side-by-side COBA timings: brainsim and every installed peer, interleaved run by run.

For each network size, one worker per simulator (``benchmarks/peers/*_coba.py``) builds and
compiles the same Vogels–Abbott COBA model (in-degree 80, 1 s of biological time by default)
and waits; then the timed runs go round robin — brainsim (exact), brainsim (Euler), Brian2,
BrainPy, brainsim (exact), ... — ``--repeats`` rounds, so that every simulator sees the same
machine load (this VM has up to 50 % CPU steal). The table reports, per simulator, the min and
median wall time per biological second, the mean rate (sanity check: about 21 Hz for all) and
the ratios brainsim / peer of the mins and of the medians measured in this invocation.

Peers run in their own Python environment (``--peer-python``, default ``$BRAINSIM_PEERS_PYTHON``
or ``/tmp/peers/bin/python``; see benchmarks/peers/README.md); a peer that is not installed
there (or Brian2 without a C++ compiler) is skipped with a note.

    python benchmarks/compare.py --sizes 4000 40000 --duration 1000 --repeats 7 \
        --output benchmarks/compare_latest.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"

# (label, script, extra arguments, needs the peer environment, import to check)
SIMULATORS = {
    "brainsim-exact": (
        "brainsim (exact)",
        "brainsim_coba.py",
        ["--integrator", "exact"],
        False,
        "brainsim",
    ),
    "brainsim-euler": (
        "brainsim (Euler)",
        "brainsim_coba.py",
        ["--integrator", "euler"],
        False,
        "brainsim",
    ),
    "brian2": ("Brian2 C++ standalone", "brian2_coba.py", [], True, "brian2"),
    "brainpy": ("BrainPy CPU", "brainpy_coba.py", [], True, "brainpy"),
}
BRAINSIM = ("brainsim-exact", "brainsim-euler")
ONE_STEP_MS = 0.1  # the workers' dt (peers/_common.py) and the COBA benchmark's delay


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_times() -> list[int] | None:
    """Aggregate jiffies from /proc/stat (user nice system idle iowait irq softirq steal)."""
    try:
        return [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    except (OSError, ValueError):
        return None


def steal_percent(before, after) -> float | None:
    if before is None or after is None:
        return None
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta)
    return 100.0 * delta[7] / total if total else None


def default_peer_python() -> str:
    env = os.environ.get("BRAINSIM_PEERS_PYTHON")
    if env:
        return env
    return "/tmp/peers/bin/python" if Path("/tmp/peers/bin/python").exists() else sys.executable


def availability(key: str, python: str) -> str | None:
    """None when the simulator can run, else why not."""
    module = SIMULATORS[key][4]
    if not Path(python).exists() and not shutil.which(python):
        return f"no Python at {python}"
    proc = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"`import {module}` failed in {python}: {last}"
    if key == "brian2" and not (shutil.which("g++") or shutil.which("c++")):
        return "no C++ compiler (g++/c++) for Brian2's standalone mode"
    return None


class Worker:
    """One simulator in ``--serve`` mode: built and compiled, answering ``run``."""

    def __init__(self, key, python, n, args):
        label, script, extra, _, _ = SIMULATORS[key]
        self.key, self.label = key, label
        self.cmd = [
            python,
            str(PEERS / script),
            "--neurons",
            str(n),
            "--duration",
            str(args.duration),
            "--threads",
            str(args.threads),
            "--seed",
            str(args.seed),
            "--delay",
            str(args.delay),
            "--serve",
            *extra,
        ]
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            self.cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            cwd=HERE.parent,
        )
        self.info = self._expect("READY ")
        self.runs: list[dict] = []

    def _expect(self, prefix: str) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                self.stderr.seek(0)
                raise RuntimeError(
                    f"{self.label} stopped (exit code {self.proc.returncode}):\n"
                    + self.stderr.read()[-3000:]
                )
            if line.startswith(prefix):
                return json.loads(line[len(prefix) :])

    def run(self) -> dict:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        result = self._expect("RESULT ")
        self.runs.append(result)
        return result

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.stderr.close()


def summary(worker: Worker, duration_ms: float) -> dict:
    sec = duration_ms * 1e-3
    t = [r["run_s"] / sec for r in worker.runs]
    cpu_key = "run_s_brian2" if worker.key == "brian2" else "cpu_s"
    cpu = [r[cpu_key] / sec for r in worker.runs if cpu_key in r]
    return {
        "label": worker.label,
        "key": worker.key,
        "info": worker.info,
        "runs": worker.runs,
        "min": min(t),
        "median": statistics.median(t),
        "cpu_median": statistics.median(cpu) if cpu else None,
        "rate": statistics.mean(r["rate_hz"] for r in worker.runs),
        "synapses": worker.runs[0].get("synapses"),
    }


def measure_size(n: int, keys: list[str], python_of: dict, args) -> tuple[list[dict], dict]:
    workers, notes = [], {}
    try:
        for key in keys:  # one at a time: compilation does not overlap anything timed
            print(f"  N = {n}: building {SIMULATORS[key][0]} ...", flush=True)
            try:
                workers.append(Worker(key, python_of[key], n, args))
                print(f"    setup {workers[-1].info['setup_s']:.1f} s", flush=True)
            except RuntimeError as e:
                notes[key] = str(e).splitlines()[0]
                print(f"    failed: {e}", file=sys.stderr, flush=True)
        before, load0 = cpu_times(), os.getloadavg()
        for r in range(args.repeats):
            cells = []
            for w in workers:
                res = w.run()
                cells.append(f"{w.key} {res['run_s']:.3f}s {res['rate_hz']:.1f}Hz")
            print(f"    round {r + 1}: " + ", ".join(cells), flush=True)
        after, load1 = cpu_times(), os.getloadavg()
    finally:
        for w in workers:
            w.close()
    env = {
        "steal_percent": steal_percent(before, after),
        "load_before": load0[0],
        "load_after": load1[0],
    }
    return [summary(w, args.duration) for w in workers], {"notes": notes, **env}


def fmt(x, digits=3):
    return "–" if x is None else f"{x:.{digits}f}"


def markdown(results: dict, args, command: str, machine: str, skipped: dict) -> str:
    out = [
        f"Machine: {machine}. Date: {datetime.date.today().isoformat()}. Command: `{command}`. "
        f"Synaptic delay: {args.delay:g} ms to the first effect"
        + (" (one step, the COBA benchmark)." if abs(args.delay - ONE_STEP_MS) < 1e-9 else "."),
        "",
        "Wall time per biological second (s) over the interleaved runs; `cpu/bio s` is the "
        "median process CPU time per biological second (for Brian2, the run time Brian2 itself "
        "reports, measured with `std::clock()`).",
        "",
        "| N | synapses | simulator | integrator | setup (s) | min (s) | median (s) | cpu/bio s "
        "(median) | rate (Hz) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, (rows, _) in results.items():
        for s in rows:
            out.append(
                f"| {n} | {s['synapses']} | {s['label']} | {s['info'].get('integrator', '')} | "
                f"{s['info']['setup_s']:.1f} | {s['min']:.3f} | {s['median']:.3f} | "
                f"{fmt(s['cpu_median'])} | {s['rate']:.1f} |"
            )
    ratios = [
        "",
        "Ratios brainsim / peer (below 1: brainsim faster), from the same invocation; "
        "`load` is the 1-minute load average before / after the timed rounds and `steal` the "
        "hypervisor's share of CPU time during them (/proc/stat):",
        "",
        "| N | brainsim | peer | ratio of mins | ratio of medians | ratio of CPU medians "
        "| load | steal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, (rows, env) in results.items():
        by_key = {s["key"]: s for s in rows}
        for b in BRAINSIM:
            for peer in ("brian2", "brainpy"):
                if b in by_key and peer in by_key:
                    x, y = by_key[b], by_key[peer]
                    cpu = (
                        x["cpu_median"] / y["cpu_median"]
                        if x["cpu_median"] and y["cpu_median"]
                        else None
                    )
                    ratios.append(
                        f"| {n} | {x['label']} | {y['label']} | {x['min'] / y['min']:.2f} | "
                        f"{x['median'] / y['median']:.2f} | {fmt(cpu, 2)} | "
                        f"{env['load_before']:.1f} / {env['load_after']:.1f} | "
                        f"{fmt(env['steal_percent'], 1)} % |"
                    )
    if len(ratios) > 5:  # header lines plus at least one pair measured together
        out += ratios
    notes = dict(skipped)
    for n, (_, env) in results.items():
        notes.update({f"{k} (N = {n})": v for k, v in env["notes"].items()})
    if notes:
        out += [""] + [f"- {SIMULATORS.get(k, (k,))[0]} skipped: {v}" for k, v in notes.items()]
    versions = {}
    for rows, _ in results.values():
        for s in rows:
            i = s["info"]
            versions[s["info"]["simulator"]] = ", ".join(
                f"{k} {i[k]}" for k in ("version", "jax", "brainevent", "mode") if i.get(k)
            )
    out += [""] + [f"- {k}: {v}" for k, v in versions.items()]
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4000, 40000])
    parser.add_argument("--duration", type=float, default=1000.0, help="biological time (ms)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--delay",
        type=float,
        default=ONE_STEP_MS,
        help="synaptic delay (ms) to the first effect; default one step, as the COBA benchmark; "
        "BrainPy's script supports only that",
    )
    parser.add_argument(
        "--simulators", nargs="+", choices=list(SIMULATORS), default=list(SIMULATORS)
    )
    parser.add_argument(
        "--peer-python",
        default=default_peer_python(),
        help="Python with brian2/brainpy installed (default %(default)s)",
    )
    parser.add_argument("--output", type=Path, help="write the markdown tables here")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    command = "python benchmarks/compare.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    u = platform.uname()
    machine = f"{cpu_name()}, {os.cpu_count()} CPUs, {u.system} {u.release}"
    print(f"machine: {machine}\ncommand: {command}", flush=True)
    python_of, keys, skipped = {}, [], {}
    for key in args.simulators:
        python = args.peer_python if SIMULATORS[key][3] else sys.executable
        why = availability(key, python)
        if key == "brainpy" and abs(args.delay - ONE_STEP_MS) > 1e-9:
            why = "brainpy_coba.py models one-step delays only"
        if why:
            skipped[key] = why
            print(f"skipping {SIMULATORS[key][0]}: {why}", flush=True)
        else:
            python_of[key] = python
            keys.append(key)
    results = {}
    for n in args.sizes:
        results[n] = measure_size(n, keys, python_of, args)
    table = markdown(results, args, command, machine, skipped)
    print("\n" + table)
    if args.output:
        args.output.write_text(table + "\n")
    if args.json:
        args.json.write_text(json.dumps({str(n): r for n, r in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
