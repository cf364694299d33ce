"""Per-step cost of the run-time fault check with state bounds (``brainsim/_faults.py``).

COBAHH 4k (``brainsim.networks.cobahh``: Traub–Miles neurons, whose model bounds ``v`` and the
three gates) simulated in one process, interleaved, with the bounds as declared and with the
same model declaring none (then every floating-point state array gets only the plain
non-finite sum, the check before bounds existed). Both programs make the same number of
native sums per step; the bounded one adds an element-wise indicator per variable and a
``lax.cond`` whose branch runs only in the step a population first leaves its range.

    python benchmarks/fault_check_bench.py --steps 2000 --repeats 7
"""

from __future__ import annotations

import argparse

import equinox as eqx
import jax
from _per_step import per_step_times, report

import brainsim as bs
from brainsim._neurons.hh import TraubMiles


class _Unbounded(TraubMiles):
    """Traub–Miles declaring no bounds (a benchmark-only variant)."""

    def state_bounds(self):
        return {}


def _with_model_class(net, cls):
    for i, p in enumerate(net.populations):
        model = cls.__new__(cls)
        for field in p.model.__dataclass_fields__:
            object.__setattr__(model, field, getattr(p.model, field))
        net = eqx.tree_at(lambda n, i=i: n.populations[i].model, net, model)
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    net = bs.networks.cobahh()
    variants = {"bounds": net, "finite only": _with_model_class(net, _Unbounded)}
    key = jax.random.key(0)
    times = per_step_times(variants, args.steps, args.repeats, key)
    print(f"COBAHH 4k, {args.steps} steps, device {jax.devices()[0].device_kind}")
    report(times)


if __name__ == "__main__":
    main()
