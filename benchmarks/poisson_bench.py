"""Per-step cost of ``PoissonSource`` against a ``SpikeGenerator`` emitting the same trains.

Each variant is a network of one source population (``--channels`` channels, ``--rate`` Hz,
``dt`` = 0.1 ms) simulated for ``--steps`` steps in one compiled scan; the variants run
interleaved in one process (``--repeats`` rounds) and the table gives the min and median time
per step:

* ``generator`` — a ``SpikeGenerator`` replaying the spikes the Poisson source drew (no random
  numbers: the floor);
* ``poisson`` — ``PoissonSource(rate)`` (``poisson_counts``: one counter-based uniform per
  channel, inverted);
* ``poisson per-channel rates`` — ``PoissonSource`` with one rate per channel (all equal);
* ``jax.random.poisson`` — the same source drawing its counts with ``jax.random.poisson``
  (a reference: JAX's own sampler).

    python benchmarks/poisson_bench.py --channels 1000 --rate 15 --steps 20000 --repeats 5
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from _per_step import per_step_times, report

import brainsim as bs
from brainsim._inputs import PoissonState

DT = 0.1


class _JaxPoisson(bs.PoissonSource):
    """PoissonSource drawing with ``jax.random.poisson`` (benchmark-only variant)."""

    def step(self, state, step, dt, key):
        lam = jnp.broadcast_to(
            jnp.asarray(self.rate, state.counts.dtype) * (dt * 1e-3), state.counts.shape
        )
        counts = jax.random.poisson(key, lam).astype(state.counts.dtype)
        return PoissonState(counts), counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=15.0, help="Hz")
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n, key = args.channels, jax.random.key(0)

    def network(source):
        return bs.Network([bs.Population("P", n, source)], dt=DT)

    drawn = bs.simulate(
        network(bs.PoissonSource(args.rate)),
        n_steps=args.steps,
        key=key,
        record=(bs.SpikeRaster(),),
    )
    steps, ids = np.nonzero(np.asarray(drawn.recordings[0]["P"]))
    reps = np.asarray(drawn.recordings[0]["P"])[steps, ids].astype(int)
    generator = bs.SpikeGenerator(
        np.repeat(steps, reps) * DT, np.repeat(ids, reps), round_times=True
    )
    variants = {
        "generator": network(generator),
        "poisson": network(bs.PoissonSource(args.rate)),
        "poisson per-channel rates": network(bs.PoissonSource(np.full(n, args.rate))),
        "jax.random.poisson": network(_JaxPoisson(args.rate)),
    }
    times = per_step_times(variants, args.steps, args.repeats, key)
    print(
        f"{n} channels at {args.rate:g} Hz, dt = {DT} ms, {args.steps} steps, "
        f"{len(steps)} spikes; device {jax.devices()[0].device_kind}"
    )
    report(times, floor="generator")


if __name__ == "__main__":
    main()
