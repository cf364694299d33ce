"""What every COBA benchmark worker in this folder shares: the model's constants, the command
line, and the protocol :mod:`benchmarks.compare` speaks with the workers.

The workers run in different Python environments (Brian2 and BrainPy live in their own virtual
environment, brainsim in its own), so this module depends on the standard library only.

Protocol. Without ``--serve`` a worker builds its model once, times ``--repeats`` runs and
prints one JSON object (the setup, every run, min and median). With ``--serve`` it builds the
model, prints ``READY {json}`` and then answers each ``run`` line on standard input with
``RESULT {json}`` (one timed run) until ``quit`` or end of input; ``compare.py`` uses this to
interleave simulators run by run while each keeps its compiled program.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys

# The Vogels–Abbott COBA network as in brainsim.networks.coba (units: ms, mV; conductances in
# units of the leak conductance g_L = 10 nS, so we = 6 nS -> 0.6 and wi = 67 nS -> 6.7; the
# drive of 200 pA is 20 mV x g_L).
TAU_M = 20.0  # ms
TAU_E = 5.0  # ms
TAU_I = 10.0  # ms
E_L = -60.0  # mV
V_RESET = -60.0  # mV
V_TH = -50.0  # mV
E_EXC = 0.0  # mV
E_INH = -80.0  # mV
T_REF = 5.0  # ms
DRIVE = 20.0  # mV (200 pA / 10 nS)
W_EXC = 0.6  # g_L
W_INH = 6.7  # g_L
DT = 0.1  # ms
IN_DEGREE = 80.0


def n_exc(n: int) -> int:
    return int(round(0.8 * n))


def probability(n: int) -> float:
    """Connection probability keeping the in-degree at 80 (0.02 at 4000 neurons)."""
    return min(1.0, IN_DEGREE / n)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--neurons", type=int, default=4000, help="network size (80 %% E, 20 %% I)")
    p.add_argument("--duration", type=float, default=1000.0, help="biological time (ms)")
    p.add_argument("--threads", type=int, default=1, help="worker threads of the simulator")
    p.add_argument("--seed", type=int, default=0, help="connectivity and initial-state seed")
    p.add_argument("--repeats", type=int, default=3, help="timed runs (without --serve)")
    p.add_argument(
        "--delay",
        type=float,
        default=DT,
        help="ms from a spike to its first effect on the membrane (the workers pass this minus "
        "one step as Brian2's and brainsim's synaptic delay); the default, one step, is a zero "
        "delay (spikes act in the next step)",
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="answer `run` lines on stdin with one timed run each (compare.py)",
    )
    return p


def rates(count_e: float, count_i: float, n: int, duration_ms: float) -> dict:
    ne = n_exc(n)
    sec = duration_ms * 1e-3
    return {
        "rate_hz": (count_e + count_i) / (n * sec),
        "rate_e_hz": count_e / (ne * sec),
        "rate_i_hz": count_i / ((n - ne) * sec),
        "spikes": count_e + count_i,
    }


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} CPUs"


def serve_or_repeat(args, info: dict, run_once) -> int:
    """Drive a worker: ``info`` describes the built model (``setup_s`` etc.); ``run_once(r)``
    performs timed run number ``r`` and returns a dict with at least ``run_s``."""
    info = {
        **info,
        "neurons": args.neurons,
        "duration_ms": args.duration,
        "threads": args.threads,
        "seed": args.seed,
        "machine": machine(),
    }
    if args.serve:
        print("READY " + json.dumps(info), flush=True)
        r = 0
        for line in sys.stdin:
            command = line.strip()
            if command == "quit":
                break
            if command != "run":
                print("ERROR unknown command " + json.dumps(command), flush=True)
                continue
            print("RESULT " + json.dumps(run_once(r)), flush=True)
            r += 1
        return 0
    runs = [run_once(r) for r in range(args.repeats)]
    times = [x["run_s"] for x in runs]
    sec = args.duration * 1e-3
    print(
        json.dumps(
            {
                **info,
                "runs": runs,
                "run_s_min": min(times),
                "run_s_median": statistics.median(times),
                "run_per_bio_s_min": min(times) / sec,
                "run_per_bio_s_median": statistics.median(times) / sec,
                "rate_hz_mean": statistics.mean(x["rate_hz"] for x in runs),
            },
            indent=1,
        )
    )
    return 0


def delay_steps(delay_ms: float) -> int:
    """The delay as a whole number of steps (>= 1); an error for anything else."""
    steps = round(delay_ms / DT)
    if steps < 1 or abs(steps * DT - delay_ms) > 1e-9:
        raise SystemExit(f"--delay must be a whole number (>= 1) of {DT} ms steps; got {delay_ms}")
    return steps
