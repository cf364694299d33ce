"""Native CPU kernels, registered with XLA through JAX's foreign-function interface.

The C++ sources in ``kernels/cpu/`` are compiled when brainsim is installed (``setup.py``,
:mod:`brainsim.kernels._build`) into ``libbrainsim_cpu.so`` beside this file. Here it is loaded
with ``ctypes`` and its handlers registered as XLA custom calls, so they run inside compiled
programs like any other op (no Python callback). Nothing is compiled at run time.

The pure-jnp reference runs instead, and :func:`status` says why, when

* ``BRAINSIM_DISABLE_NATIVE=1`` is set (silently: it was asked for);
* the library was not built (no C++ compiler when brainsim was installed), was built against
  another jaxlib than the one installed (the FFI types differ between versions), or, in an
  editable install, from sources that have changed since. Then one
  :class:`~brainsim.BrainsimWarning` says so, how much slower the run is, and how to fix it:
  reinstall brainsim with a C++ compiler present (``pip install -e .`` in a checkout).

The library is part of the installed package, as trusted as its Python files, so it is loaded
without further checks.
"""

from __future__ import annotations

import ctypes
import functools
import os
import warnings
from pathlib import Path

import jax
import jaxlib

from . import _build
from ._warnings import BrainsimWarning

_TARGETS = {
    "brainsim_ell_deliver": "BrainsimEllDeliver",
    "brainsim_csr_deliver": "BrainsimCsrDeliver",
    "brainsim_procedural_deliver": "BrainsimProceduralDeliver",
    "brainsim_active_indices": "BrainsimActiveIndices",
    "brainsim_stdp_update": "BrainsimStdpUpdate",
    "brainsim_ring_clear": "BrainsimRingClear",
    "brainsim_sum": "BrainsimSum",
}

# Measured with benchmarks/coba_bench.py --sizes 4000 40000 --repeats 3, native and with
# BRAINSIM_DISABLE_NATIVE=1, two rounds each on a loaded machine; ratios of the better medians
# (4k: 0.542 / 0.184 s, 40k: 2.987 / 2.221 s).
_SLOWDOWN = (
    "a simulation then runs about 3x as long at 4,000 neurons and 1.3x at 40,000 (COBA "
    "network, measured 2026-12-05 on a shared 2-core Intel Xeon, jax 0.10.2)"
)

_REINSTALL = (
    "To use the native kernels, reinstall brainsim with a C++ compiler present (g++ or "
    "clang++; CXX names another), against the installed jaxlib: `pip install --no-build-isolation "
    "--force-reinstall --no-deps .` from its source folder (needs setuptools), or `pip install "
    "-e .` in a checkout. BRAINSIM_DISABLE_NATIVE=1 uses the reference without this warning."
)


def library_path() -> Path:
    """Where the install put the native library (it may be absent)."""
    return Path(__file__).resolve().parent / _build.LIBRARY


def _text(lib: ctypes.CDLL, symbol: str) -> str:
    function = getattr(lib, symbol)
    function.restype = ctypes.c_char_p
    return function().decode()


def _unusable(lib: ctypes.CDLL) -> str | None:
    """Why the loaded (not yet registered) library must not be used, or ``None``."""
    built_for = _text(lib, "BrainsimJaxlibVersion")
    if built_for != jaxlib.__version__:
        return f"the native library was built for jaxlib {built_for}, not the installed {jaxlib.__version__}"
    sources = _build.SOURCE_DIR  # present in an editable install only
    if sources.is_dir() and _text(lib, "BrainsimSourceHash") != _build.source_hash(sources):
        return f"the native library is older than the sources in {_build.SOURCE_DIR}"
    return None


def _reference(reason: str) -> tuple[bool, str]:
    warnings.warn(
        f"brainsim uses its jnp reference kernels on CPU, because {reason}; {_SLOWDOWN}. "
        f"{_REINSTALL}",
        BrainsimWarning,
        stacklevel=5,
    )
    return False, f"jnp reference: {reason}"


@functools.cache
def _load() -> tuple[bool, str]:
    if os.environ.get("BRAINSIM_DISABLE_NATIVE") == "1":
        return False, "jnp reference: disabled by BRAINSIM_DISABLE_NATIVE=1"
    path = library_path()
    if not path.exists():
        return _reference(
            f"the native library {path.name} was not built when brainsim was installed "
            "(was there no C++ compiler?)"
        )
    try:
        # Loading runs no kernel code: only the two build-info strings are read before the
        # handlers are registered.
        lib = ctypes.CDLL(str(path))
        problem = _unusable(lib)
        if problem is not None:
            return _reference(problem)
        for target, symbol in _TARGETS.items():
            jax.ffi.register_ffi_target(
                target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu"
            )
    except (OSError, AttributeError) as e:
        return _reference(f"the native library {path} could not be loaded ({e})")
    return True, f"native CPU (jaxlib {jaxlib.__version__})"


def available() -> bool:
    """True if the native CPU kernels are loaded and registered."""
    return _load()[0]


def status() -> str:
    """Which CPU kernels run: ``"native CPU (jaxlib X)"`` or ``"jnp reference: <why>"``."""
    return _load()[1]
