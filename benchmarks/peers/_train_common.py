"""What every training-step worker in this folder shares: the SHD-shaped model, the synthetic
data, the command line and the protocol :mod:`benchmarks.train_bench` speaks with the workers.

Standard library and NumPy only: the workers run in different Python environments (brainsim
in its own, Spyx and snnTorch in the peers' environment).

The model (the same in every library, each written the way that library's documentation
writes it): 700 input channels → dense weights (no bias) → 128 LIF neurons (membrane decay
``beta = exp(-dt / tau_m)`` per step, threshold 1, fast-sigmoid / SuperSpike surrogate of
slope 25) → dense weights (with bias) → 20 leaky non-spiking readout neurons (decay
``exp(-dt / tau_out)``); loss = softmax cross-entropy of the readout's maximum over time;
Adam (learning rate 1e-3) on the two weight matrices and the bias. T = 100 steps, batch 64.
Inputs are random spikes (Bernoulli, ``--density`` per channel and step), labels uniform.

Protocol. With ``--serve`` a worker builds the model, compiles and warms up, prints
``READY {json}``, then answers each ``run K`` line with ``RESULT {json}`` holding the wall
and process CPU times of K training steps (``step_s``, ``cpu_s``) until ``quit``. Without ``--serve`` it times
``--steps`` steps and prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys

from _common import machine  # the peers folder is on sys.path (each script puts it there)

N_IN, N_HIDDEN, N_OUT = 700, 128, 20
T_STEPS, BATCH = 100, 64
DT = 1.0  # ms per step
TAU_M = 20.0  # ms
TAU_OUT = 20.0  # ms
THRESHOLD = 1.0
SURROGATE_SLOPE = 25.0
LEARNING_RATE = 1e-3
# SHD bins: 700 channels, ~1 s per sample; at T = 100 (10-ms bins) a few percent of the
# (channel, bin) pairs hold a spike. The dense matrix products every library uses cost the
# same at any density; the value only sets the activity of the network.
DENSITY = 0.05
INPUT_GAIN = 5.0  # input weights ~ N(0, (gain / sqrt(700))^2): the hidden layer fires


def beta(tau: float) -> float:
    return math.exp(-DT / tau)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--density", type=float, default=DENSITY, help="input spike probability per channel and step")
    p.add_argument("--batch", type=int, default=BATCH)
    p.add_argument("--steps", type=int, default=20, help="timed steps (without --serve)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps after compilation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads (0: the library's default; JAX workers get it through "
                   "XLA_FLAGS from train_bench.py)")
    p.add_argument("--serve", action="store_true", help="answer `run K` lines on stdin (train_bench.py)")
    return p


def data(seed: int, batch: int, density: float):
    """``(inputs (batch, T, 700) float32 0/1, labels (batch,) int32)``, batch-major."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = (rng.random((batch, T_STEPS, N_IN)) < density).astype(np.float32)
    labels = rng.integers(0, N_OUT, batch).astype(np.int32)
    return x, labels


def serve_or_repeat(args, info: dict, run_steps) -> int:
    """``run_steps(k)`` performs ``k`` training steps and returns ``(wall times, last loss,
    CPU times)`` (seconds per step)."""
    info = {**info, "batch": args.batch, "density": args.density, "machine": machine(),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}
    if args.serve:
        print("READY " + json.dumps(info), flush=True)
        for line in sys.stdin:
            words = line.split()
            if not words or words[0] == "quit":
                break
            if words[0] != "run":
                print("ERROR unknown command " + json.dumps(line.strip()), flush=True)
                continue
            k = int(words[1]) if len(words) > 1 else 1
            times, loss, cpu = run_steps(k)
            print("RESULT " + json.dumps({"step_s": times, "cpu_s": cpu, "loss": loss}), flush=True)
        return 0
    times, loss, cpu = run_steps(args.steps)
    print(json.dumps({**info, "step_s": times, "cpu_s": cpu, "min_s": min(times),
                      "median_s": statistics.median(times), "loss": loss}, indent=1))
    return 0
