"""Compilation settings shared by every compiled brainsim driver.

XLA's CPU backend splits element-wise loops of a few thousand elements across threads
(its "parallel task assigner"). For one simulation step of a network the work per loop is a
few microseconds and the thread hand-off costs more than the work: measured on a 2-core
machine, a 3,200-neuron LIF step took 16 µs with the pass and 4 µs without, and 32,000
neurons 67 µs vs 37 µs. brainsim therefore compiles its loops with that pass disabled. The
option names a CPU pass only, so it has no effect on GPU or TPU.

XLA's CPU code generator also prefers 256-bit vectors by default, even on CPUs with AVX-512
(older ones lowered their clock for 512-bit instructions). brainsim asks for 512: the
element-wise neuron updates then run on twice as many values per instruction. Measured on
the development machine (a 2-vCPU Xeon with AVX-512, one core, interleaved runs): the COBA
step with the exact LIF 5 % faster at 4,000 neurons and 12 % at 40,000, with `Euler()`
unchanged, spike counts identical. On CPUs without AVX-512 the preference has no effect; it is
a CPU option, ignored by GPU and TPU compilers.

XLA's CPU copy insertion has a "region analysis" mode
(``xla_cpu_copy_insertion_use_region_analysis``) that removes the per-step copies of the state
arrays a simulation loop reads in one fused loop and rewrites in place in another. It is
deliberately not used: with it, jaxlib 0.10.2 computed a different voltage trace for a single
Hodgkin–Huxley neuron (a miscompile), which
``tests/test_simulate.py::test_brainsim_compiler_options_do_not_change_results`` would catch.
The network step avoids those copies instead by ordering its updates with data dependencies
(``brainsim._step._update_group`` and :mod:`brainsim.kernels._ring`), which XLA's default copy
insertion understands; ``tests/test_ring_clear.py`` checks that the loop holds no such copy.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax

COMPILER_OPTIONS = {
    "xla_disable_hlo_passes": "cpu-parallel-task-assigner",
    "xla_cpu_prefer_vector_width": 512,
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
        except jax.errors.JaxRuntimeError as e:
            # A fault check of simulate() raised inside the program: JAX wraps the
            # SimulationError in its runtime error; give the user the SimulationError.
            from ._faults import reraised

            error = reraised(e)
            if error is None:
                raise
            raise error from None

    wrapper.lower = compiled.lower
    return wrapper


def _inside_transformation(args, kwargs) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((args, kwargs)))
