"""Compilation settings shared by every compiled brainsim driver.

XLA's CPU backend splits element-wise loops of a few thousand elements across threads
(its "parallel task assigner"). For one simulation step of a network the work per loop is a
few microseconds and the thread hand-off costs more than the work: measured on a 2-core
machine, a 3,200-neuron LIF step took 16 µs with the pass and 4 µs without, and 32,000
neurons 67 µs vs 37 µs. brainsim therefore compiles its loops with that pass disabled. The
option names a CPU pass only, so it has no effect on GPU or TPU.

The second option switches XLA's CPU copy insertion to its region analysis. A simulation step
reads each state array (a conductance, a ring buffer) in one fused loop and writes its new
value in place in another; with the default analysis XLA cannot order the two and copies every
such array at the start of each loop iteration (12 copies per step of the COBA network, 8–13 %
of the time at 4,000–40,000 neurons). With region analysis it orders the reads before the
write and the loop body has no copies (``tests/test_simulate.py`` checks this). The option
exists in jaxlib 0.10 and 0.11 and, like the first, affects the CPU backend only.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax

COMPILER_OPTIONS = {
    "xla_disable_hlo_passes": "cpu-parallel-task-assigner",
    "xla_cpu_copy_insertion_use_region_analysis": True,
}


def jit(fn=None, **jit_kwargs):
    """``equinox.filter_jit`` with brainsim's compiler options.

    Use it to wrap your own functions around :func:`~brainsim.simulate` (e.g. a ``vmap`` over
    parameters). JAX accepts compiler options only on the outermost ``jit``; when the wrapped
    function is called inside another transformation (``grad``, ``jit``, ...) it runs as a
    plain nested ``filter_jit`` and the outer compilation's options apply.
    """
    if fn is None:
        return functools.partial(jit, **jit_kwargs)
    options = {**COMPILER_OPTIONS, **jit_kwargs.pop("compiler_options", {})}
    compiled = eqx.filter_jit(fn, compiler_options=options, **jit_kwargs)
    nested = eqx.filter_jit(fn, **jit_kwargs)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _inside_transformation(args, kwargs):
            return nested(*args, **kwargs)
        try:
            return compiled(*args, **kwargs)
        except ValueError as e:  # an outer jit with nothing traced among the arguments
            if "compiler_options" not in str(e):
                raise
            return nested(*args, **kwargs)

    wrapper.lower = compiled.lower
    return wrapper


def _inside_transformation(args, kwargs) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((args, kwargs)))
