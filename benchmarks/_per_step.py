"""Shared by the small A/B benchmarks: interleaved per-step timing of ``simulate``."""

from __future__ import annotations

import time

import jax
import numpy as np

import brainsim as bs


def per_step_times(variants: dict, n_steps: int, repeats: int, key) -> dict[str, list[float]]:
    """µs per step of ``bs.simulate(net, n_steps=n_steps, key=key)`` for each network in
    ``variants``, compiled first, then timed in ``repeats`` interleaved rounds."""
    for net in variants.values():
        bs.simulate(net, n_steps=n_steps, key=key)  # compiles; raises if the run fails
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, net in variants.items():
            start = time.perf_counter()
            jax.block_until_ready(bs.simulate(net, n_steps=n_steps, key=key).state.step)
            times[name].append((time.perf_counter() - start) / n_steps * 1e6)
    return times


def report(times: dict[str, list[float]], floor: str | None = None) -> None:
    """Print min and median per variant (and the ratio of the min to ``floor``'s)."""
    base = min(times[floor]) if floor else None
    for name, t in times.items():
        ratio = f"   {min(t) / base:5.1f} x {floor}" if base else ""
        print(f"  {name:26s} min {min(t):7.2f} us/step   median {np.median(t):7.2f}{ratio}")
