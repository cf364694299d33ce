"""Native CPU kernels, registered with XLA through JAX's foreign-function interface.

The C++ sources in ``kernels/cpu/`` are compiled on first use against the headers of the
installed ``jaxlib`` (``jax.ffi.include_dir()``), cached per source and jaxlib version, and
registered as XLA custom calls, so they run inside compiled programs like any other op (no
Python callback). If no C++ compiler is available the pure-jnp reference is used instead and
:func:`available` reports why.

Environment: ``CXX`` chooses the compiler; ``BRAINSIM_CACHE_DIR`` the cache directory
(default ``~/.cache/brainsim``; the four newest builds are kept there); ``BRAINSIM_DISABLE_NATIVE=1``
turns native kernels off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jaxlib

_SOURCES = ("ell_deliver.cc", "csr_deliver.cc", "procedural_deliver.cc", "active_indices.cc",
            "stdp_update.cc", "ring_clear.cc", "sum.cc")
_HEADERS = ("spike_scan.h", "parallel.h", "ring_row.h")
_TARGETS = {
    "brainsim_ell_deliver": "BrainsimEllDeliver",
    "brainsim_csr_deliver": "BrainsimCsrDeliver",
    "brainsim_procedural_deliver": "BrainsimProceduralDeliver",
    "brainsim_active_indices": "BrainsimActiveIndices",
    "brainsim_stdp_update": "BrainsimStdpUpdate",
    "brainsim_ring_clear": "BrainsimRingClear",
    "brainsim_sum": "BrainsimSum",
}


def _source_dir() -> Path:
    return Path(__file__).resolve().parent / "cpu"


def _cache_dir() -> Path:
    root = os.environ.get("BRAINSIM_CACHE_DIR") or Path.home() / ".cache" / "brainsim"
    return Path(root) / "kernels"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def _library_path(compiler: str) -> Path:
    digest = hashlib.sha256()
    for src in _SOURCES + _HEADERS:
        digest.update((_source_dir() / src).read_bytes())
    digest.update(jaxlib.__version__.encode())
    digest.update(compiler.encode())
    return _cache_dir() / f"libbrainsim_cpu_{digest.hexdigest()[:16]}.so"


def _build(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Compile to a temporary name and rename: concurrent processes never load a partial file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    cmd = [
        compiler,
        "-O3",
        "-std=c++17",
        "-shared",
        "-fPIC",
        "-w",
        f"-I{jax.ffi.include_dir()}",
        *[str(_source_dir() / s) for s in _SOURCES],
        "-o",
        tmp,
    ]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
        os.replace(tmp, target)
        _prune(target.parent, keep=target)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        Path(tmp).unlink(missing_ok=True)
        detail = getattr(e, "stderr", "") or str(e)
        raise RuntimeError(f"compiling brainsim's CPU kernels failed: {detail[-2000:]}") from e


_KEEP_BUILDS = 4


def _prune(directory: Path, keep: Path) -> None:
    """Delete all but the ``_KEEP_BUILDS`` newest kernel libraries in ``directory``.

    Each change of the sources, of jaxlib or of the compiler builds a new library; without
    pruning they would pile up. A few are kept so that environments sharing the cache (two
    jaxlib versions, two checkouts) do not rebuild each other's; deleting a library another
    process has loaded is harmless on POSIX systems (its mapping stays valid).
    """
    builds = []
    for path in directory.glob("libbrainsim_cpu_*.so"):
        try:
            builds.append((path.stat().st_mtime, path))
        except OSError:  # removed meanwhile by another process
            continue
    for _, old in sorted(builds)[:-_KEEP_BUILDS]:
        if old != keep:
            try:
                old.unlink()
            except OSError:  # gone already, or in use where that forbids deletion
                pass


@functools.cache
def _load() -> tuple[bool, str]:
    if os.environ.get("BRAINSIM_DISABLE_NATIVE") == "1":
        return False, "disabled by BRAINSIM_DISABLE_NATIVE=1"
    compiler = _compiler()
    if compiler is None:
        return False, "no C++ compiler found (set CXX)"
    path = _library_path(compiler)
    try:
        if not path.exists():
            _build(compiler, path)
        lib = ctypes.cdll.LoadLibrary(str(path))
        for target, symbol in _TARGETS.items():
            jax.ffi.register_ffi_target(
                target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu"
            )
    except (RuntimeError, OSError) as e:
        return False, str(e)
    return True, str(path)


def available() -> bool:
    """True if the native CPU kernels are compiled and registered."""
    return _load()[0]


def status() -> str:
    """The library path, or why native CPU kernels are unavailable."""
    return _load()[1]
