"""Which implementation of an op runs where: the one place that decides.

:class:`Implementation` names the implementations; :func:`select` applies its rules (documented
in :mod:`brainsim.kernels._ell`, whose own dispatch follows the same table):

* ``REFERENCE`` / ``NATIVE_CPU``: that implementation, on any platform / on CPU.
* ``PALLAS_TRITON`` / ``PALLAS_PORTABLE`` (CUDA), ``PALLAS_TPU`` (TPU): compiled on their own
  platform, Pallas interpret mode when lowered for a CPU, an error on any other platform.
* ``AUTO``: CPU → native kernel if it compiled, else the reference; CUDA → ``PALLAS_TRITON``;
  TPU → ``PALLAS_TPU`` when the op supports the dtype (float32), else the reference; any other
  platform → the reference.

The choice is made by ``lax.platform_dependent`` at lowering time, so one traced program serves
every backend. :func:`native_or_reference` is the same table for ops with only a reference and
a native CPU kernel. Batching is :mod:`brainsim.kernels._batching`.
"""

from __future__ import annotations

import enum

from jax import lax

from . import _cpu


class Implementation(enum.Enum):
    """An implementation of a kernel op (module docstring); a static choice, part of the
    compiled program."""

    AUTO = "auto"
    REFERENCE = "reference"
    NATIVE_CPU = "native_cpu"
    PALLAS_TRITON = "pallas_triton"
    PALLAS_PORTABLE = "pallas_portable"
    PALLAS_TPU = "pallas_tpu"

PALLAS_PLATFORM = {
    Implementation.PALLAS_TRITON: "cuda",
    Implementation.PALLAS_PORTABLE: "cuda",
    Implementation.PALLAS_TPU: "tpu",
}


def select(impl: Implementation, args, *, reference, native, pallas, tpu_supported: bool):
    """Run ``args`` through the implementation ``impl`` names (module docstring).

    ``reference(*args)``, ``native(*args)``: the jnp and native paths; ``pallas(which,
    interpret)`` returns the function running Pallas kernel ``which``; ``tpu_supported``: whether
    AUTO may use the TPU kernel for these arguments.
    """
    if impl in (Implementation.REFERENCE, Implementation.NATIVE_CPU):
        return native_or_reference(impl, args, reference=reference, native=native)
    if impl in PALLAS_PLATFORM:
        return lax.platform_dependent(
            *args, cpu=pallas(impl, True), **{PALLAS_PLATFORM[impl]: pallas(impl, False)}
        )
    tpu = pallas(Implementation.PALLAS_TPU, False) if tpu_supported else reference
    return lax.platform_dependent(
        *args,
        cpu=native if _cpu.available() else reference,
        cuda=pallas(Implementation.PALLAS_TRITON, False),
        tpu=tpu,
        default=reference,
    )


def auto_implementation(platform: str) -> str:
    """What ``AUTO`` runs on ``platform`` (``"cpu"``, ``"cuda"``, ...), in words: on CPU
    ``"native CPU (jaxlib X)"`` or ``"jnp reference: <why>"`` (:func:`brainsim.kernels._cpu.status`),
    on a GPU or TPU the Pallas kernels. Ops whose arguments a TPU kernel does not support, and
    plasticity rules without a kernel, use the reference on every platform."""
    if platform == "cpu":
        return _cpu.status()
    if platform in ("cuda", "gpu"):
        return "Pallas (Triton)"
    if platform == "tpu":
        return "Pallas (TPU)"
    return f"jnp reference: no kernels for platform {platform!r}"


NATIVE_OR_REFERENCE = (Implementation.AUTO, Implementation.REFERENCE, Implementation.NATIVE_CPU)
"""The implementations of an op that has only a jnp reference and a native CPU kernel."""


def native_or_reference_implementation(op: str, implementation) -> Implementation:
    """``implementation`` as an :class:`Implementation` of such an op, or a ``ValueError``
    naming the op ``op`` and the implementations it has."""
    impl = Implementation(implementation)
    if impl not in NATIVE_OR_REFERENCE:
        names = ", ".join(i.name for i in NATIVE_OR_REFERENCE)
        raise ValueError(f"{op}: `implementation` must be one of {names}; got {impl.name}.")
    return impl


def native_or_reference(impl: Implementation, args, *, reference, native):
    """Dispatch of an op with only a jnp reference and a native CPU kernel: ``REFERENCE``,
    ``NATIVE_CPU`` (an error when the kernels did not compile), or ``AUTO`` (the native kernel
    on CPU when it compiled, the reference on every other platform)."""
    if impl is Implementation.REFERENCE:
        return reference(*args)
    if impl is Implementation.NATIVE_CPU:
        if not _cpu.available():
            raise RuntimeError(f"native CPU kernels unavailable: {_cpu.status()}")
        return native(*args)
    if impl is not Implementation.AUTO:
        raise ValueError(
            f"no {impl.name} implementation of this op; use AUTO, REFERENCE or NATIVE_CPU."
        )
    return lax.platform_dependent(
        *args, cpu=native if _cpu.available() else reference, default=reference
    )
