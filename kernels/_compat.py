"""Every difference between the JAX lines brainsim's Pallas kernels support, in one place.

Supported: jax 0.10.x (dev and CI machines, Python 3.11) and jax 0.11.x (GPU machine, Python
3.12). Checked by reading the installed sources of jax 0.10.2 and 0.11.2 and running this
package's tests under both (interpret mode and lowering, no accelerator).

What differs between 0.10 and 0.11, and what the kernels do about it:

* GPU backend choice. 0.10: ``pallas_call`` without ``compiler_params`` lowers to Mosaic GPU
  (unless ``jax_pallas_use_mosaic_gpu`` is off); Triton is chosen by passing
  ``pltriton.CompilerParams``. 0.11: ``pallas_call`` on GPU lowers only to Triton (Mosaic GPU
  only through ``plgpu.kernel``). Passing :func:`triton_params` selects Triton on both.
* Deprecation. 0.11 emits ``DeprecationWarning("The Pallas Triton backend is deprecated ...")``
  (id ``jax-pallas-triton``) every time a Triton kernel is lowered; 0.12 removes Triton from
  ``pallas_call``. :func:`triton_params` is the one spot to replace when moving the GPU
  kernels to Mosaic GPU (``plgpu.kernel``), which has no vector gather/scatter and no
  scattered atomics, so the atomic kernel would become the owner-block one.
* Lowering without a GPU. 0.10 lowers Triton kernels for compute capability 9.0 when no GPU
  is present; 0.11 asks for the target instead ("No supported GPU devices found, please
  specify an abstract GPU device") and reads it from an abstract mesh's ``AbstractDevice``.
  :func:`gpu_lowering_target` does that on 0.11 and nothing on 0.10.
* ``pltriton.CUSTOM_CALL_TARGET_NAME`` exists from 0.11; 0.10 has the same string unexported
  (:data:`TRITON_CUSTOM_CALL`).
* Discharge rules (interpret mode) take ``(in_avals, out_avals, ...)`` in 0.10 and a context
  object in 0.11; the behaviour the kernels rely on is identical: Triton ``atomic_add`` is
  discharged as ``ref.at[idx].set(ref[idx] + val)`` (duplicate indices in one call lose all
  but one contribution, jax#24117) and rejects ``mask=``; out-of-range gathers clamp.
* Unchanged in both: ``pl.pallas_call``/``BlockSpec``/``program_id``/``when``/``cdiv``,
  ``pltriton.atomic_add``, ``pltpu.CompilerParams``, ``pltpu.PrefetchScalarGridSpec``,
  ``pltpu.InterpretParams``, ``pltpu.GridDimensionSemantics`` (``pltpu.PARALLEL`` etc.),
  ``jax.export.DisabledSafetyCheck``, ``jax.custom_batching.custom_vmap``.
"""

from __future__ import annotations

import contextlib

import jax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton

JAX_VERSION = tuple(int(p) for p in jax.__version__.split(".")[:2])

TRITON_CUSTOM_CALL = getattr(pltriton, "CUSTOM_CALL_TARGET_NAME", "__gpu$xla.gpu.triton")
"""Custom-call target of a lowered Triton kernel (for export checks)."""

TPU_CUSTOM_CALL = "tpu_custom_call"
"""Custom-call target of a lowered Mosaic TPU kernel."""

atomic_add = pltriton.atomic_add
pallas_call = pl.pallas_call
BlockSpec = pl.BlockSpec
PrefetchScalarGridSpec = pltpu.PrefetchScalarGridSpec


def triton_params(num_warps: int | None = None, num_stages: int | None = None):
    """Compiler parameters that select the Triton backend for a GPU ``pallas_call``."""
    return pltriton.CompilerParams(num_warps=num_warps, num_stages=num_stages)


def tpu_params(*semantics: str):
    """Mosaic TPU compiler parameters; ``semantics`` per grid axis: "parallel"/"arbitrary"."""
    return pltpu.CompilerParams(dimension_semantics=tuple(semantics))


def tpu_interpret():
    """The ``interpret=`` value that runs a TPU kernel on CPU with TPU semantics."""
    return pltpu.InterpretParams()


def export_disabled_checks(platform: str):
    """Safety checks to disable when exporting a Pallas kernel for ``platform``.

    Triton kernels are serialised as Triton IR without a compatibility guarantee, so
    ``jax.export`` refuses them unless told otherwise; Mosaic TPU kernels are accepted.
    """
    if platform == "cuda":
        return [jax.export.DisabledSafetyCheck.custom_call(TRITON_CUSTOM_CALL)]
    return []


@contextlib.contextmanager
def gpu_lowering_target(device_kind: str = "NVIDIA H100"):
    """Lower GPU kernels for ``device_kind`` on a machine without that GPU (export checks).

    jax 0.11 reads the target from an abstract mesh; jax 0.10 assumes compute capability 9.0
    (an H100) by itself, so nothing is needed there.
    """
    if JAX_VERSION < (0, 11):
        yield
        return
    device = jax.sharding.AbstractDevice(device_kind=device_kind, num_cores=None, platform="gpu")
    mesh = jax.sharding.AbstractMesh(
        (1,), ("_",), (jax.sharding.AxisType.Auto,), abstract_device=device
    )
    with jax.sharding.use_abstract_mesh(mesh):
        yield
