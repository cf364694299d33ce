"""Compilation settings shared by every compiled brainsim driver.

XLA's CPU backend splits element-wise loops of a few thousand elements across threads
(its "parallel task assigner"). For one simulation step of a network the work per loop is a
few microseconds and the thread hand-off costs more than the work: measured on a 2-core
machine, a 3,200-neuron LIF step took 16 µs with the pass and 4 µs without, and 32,000
neurons 67 µs vs 37 µs. brainsim therefore compiles its loops with that pass disabled. The
option names a CPU pass only, so it has no effect on GPU or TPU.
"""

from __future__ import annotations

import equinox as eqx

COMPILER_OPTIONS = {"xla_disable_hlo_passes": "cpu-parallel-task-assigner"}


def jit(fn=None, **jit_kwargs):
    """``equinox.filter_jit`` with brainsim's compiler options; use it to wrap your own
    functions around :func:`~brainsim.simulate` (e.g. a ``vmap`` over parameters)."""
    options = {**COMPILER_OPTIONS, **jit_kwargs.pop("compiler_options", {})}
    if fn is None:
        return lambda f: eqx.filter_jit(f, compiler_options=options, **jit_kwargs)
    return eqx.filter_jit(fn, compiler_options=options, **jit_kwargs)
