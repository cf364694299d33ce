"""Surrogate-gradient training step of the SHD-shaped network: brainsim vs Spyx and snnTorch.

The model, data and optimiser are defined once in ``benchmarks/peers/_train_common.py``
(700 inputs → 128 LIF → 20 leaky readout, T = 100, batch 64, Adam, random input spikes);
``benchmarks/peers/{brainsim,spyx,snntorch}_train.py`` write it in each library. Every worker
is started in its own process (brainsim in this Python, the peers in ``--peer-python``),
compiles and warms up, then the timed rounds go round robin — brainsim, Spyx, snnTorch,
brainsim, ... — each worker timing ``--steps`` consecutive training steps per round, so that
all see the same machine load. The table gives per library the min and median wall time and
process CPU time (all threads) of one training step over all timed steps, and the ratios
brainsim / peer.

``--threads 1`` runs every library on one thread (JAX workers get
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``, PyTorch
``torch.set_num_threads(1)``): on a loaded machine this measures the work per step with far
less noise than multi-threaded wall time, whose every parallel section waits for the slowest
thread.

    python benchmarks/train_bench.py --rounds 10 --steps 5 --output /tmp/train.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
sys.path.insert(0, str(HERE))
from compare import cpu_name, cpu_times, default_peer_python, steal_percent  # noqa: E402

# key: (label, script, extra arguments, runs in the peer environment, module to import)
WORKERS = {
    "brainsim": ("brainsim (fit.fit, SpikingRNN)", "brainsim_train.py", [], False, "brainsim"),
    "spyx": ("Spyx (nnx.jit)", "spyx_train.py", [], True, "spyx"),
    "spyx-functional": ("Spyx (jax.jit on nnx.split)", "spyx_train.py", ["--functional"], True, "spyx"),
    "snntorch": ("snnTorch (CPU torch)", "snntorch_train.py", [], True, "snntorch"),
}


def availability(module: str, python: str) -> str | None:
    proc = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"`import {module}` failed in {python}: {last}"
    return None


class Worker:
    def __init__(self, key: str, python: str, args):
        label, script, extra, _, _ = WORKERS[key]
        self.key, self.label = key, label
        cmd = [python, str(PEERS / script), "--serve", "--density", str(args.density),
               "--batch", str(args.batch), "--seed", str(args.seed),
               "--threads", str(args.threads), *extra]
        env = dict(os.environ)
        if args.threads == 1:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                                " intra_op_parallelism_threads=1").strip()
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, cwd=HERE.parent, env=env)
        self.info = self._expect("READY ")
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.losses: list[float] = []

    def _expect(self, prefix: str) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                self.stderr.seek(0)
                raise RuntimeError(f"{self.label} stopped (exit code {self.proc.returncode}):\n"
                                   + self.stderr.read()[-3000:])
            if line.startswith(prefix):
                return json.loads(line[len(prefix):])

    def run(self, steps: int) -> list[float]:
        self.proc.stdin.write(f"run {steps}\n")
        self.proc.stdin.flush()
        result = self._expect("RESULT ")
        self.times += result["step_s"]
        self.cpu += result["cpu_s"]
        self.losses.append(result["loss"])
        return result["step_s"]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.stderr.close()


def markdown(workers, env, notes, command, machine) -> str:
    out = [
        f"Machine: {machine}. Date: {datetime.date.today().isoformat()}. Command: `{command}`.",
        f"Load (1-min average) before / after the timed rounds: {env['load'][0]:.1f} / "
        f"{env['load'][1]:.1f}; hypervisor steal during them: {env['steal']}.",
        "",
        "| library | mode | jax / torch | setup (s) | timed steps | wall min (ms) | wall median (ms) "
        "| CPU min (ms) | CPU median (ms) | last loss |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in workers:
        i = w.info
        out.append(f"| {w.label} {i.get('version', '')} | {i.get('mode', '')} | "
                   f"{i.get('jax', i.get('torch', ''))} | {i['setup_s']:.1f} | {len(w.times)} | "
                   f"{1e3 * min(w.times):.1f} | {1e3 * statistics.median(w.times):.1f} | "
                   f"{1e3 * min(w.cpu):.1f} | {1e3 * statistics.median(w.cpu):.1f} | "
                   f"{w.losses[-1]:.3f} |")
    by = {w.key: w for w in workers}
    if "brainsim" in by and len(by) > 1:
        out += ["", "| ratio brainsim / peer | wall, of mins | wall, of medians | CPU, of mins "
                "| CPU, of medians |", "|---|---|---|---|---|"]
        b = by["brainsim"]
        for w in workers:
            if w.key != "brainsim":
                out.append(f"| {w.label} | {min(b.times) / min(w.times):.2f} | "
                           f"{statistics.median(b.times) / statistics.median(w.times):.2f} | "
                           f"{min(b.cpu) / min(w.cpu):.2f} | "
                           f"{statistics.median(b.cpu) / statistics.median(w.cpu):.2f} |")
    out += [""] + [f"- {WORKERS[k][0]} skipped: {v}" for k, v in notes.items()]
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per worker and round")
    parser.add_argument("--torch-steps", type=int, default=1,
                        help="timed steps per round for snnTorch (about 1-2 s each)")
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, choices=(0, 1),
                        help="1: every library on one thread; 0: each library's default")
    parser.add_argument("--workers", nargs="+", choices=list(WORKERS), default=list(WORKERS))
    parser.add_argument("--peer-python", default=default_peer_python())
    parser.add_argument("--output", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    command = "python benchmarks/train_bench.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    u = platform.uname()
    machine = f"{cpu_name()}, {os.cpu_count()} CPUs, {u.system} {u.release}"
    print(f"machine: {machine}\ncommand: {command}", flush=True)

    workers, notes = [], {}
    try:
        for key in args.workers:  # one at a time: compilation overlaps nothing timed
            python = args.peer_python if WORKERS[key][3] else sys.executable
            why = availability(WORKERS[key][4], python)
            if why:
                notes[key] = why
                print(f"skipping {key}: {why}", flush=True)
                continue
            print(f"building {WORKERS[key][0]} ...", flush=True)
            try:
                workers.append(Worker(key, python, args))
                print(f"  setup {workers[-1].info['setup_s']:.1f} s", flush=True)
            except RuntimeError as e:
                notes[key] = str(e).strip().splitlines()[-1]
                print(f"  failed: {e}", file=sys.stderr, flush=True)
        before, load0 = cpu_times(), os.getloadavg()[0]
        for r in range(args.rounds):
            cells = []
            for w in workers:
                t = w.run(args.torch_steps if w.key == "snntorch" else args.steps)
                cells.append(f"{w.key} {1e3 * min(t):.1f} ms")
            print(f"  round {r + 1}: " + ", ".join(cells), flush=True)
        after, load1 = cpu_times(), os.getloadavg()[0]
    finally:
        for w in workers:
            w.close()
    steal = steal_percent(before, after)
    env = {"load": (load0, load1), "steal": "–" if steal is None else f"{steal:.1f} %"}
    table = markdown(workers, env, notes, command, machine)
    print("\n" + table)
    if args.output:
        args.output.write_text(table + "\n")
    if args.json:
        args.json.write_text(json.dumps({w.key: {"info": w.info, "step_s": w.times,
                                                 "losses": w.losses} for w in workers}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
