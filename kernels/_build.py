"""Compiling the native CPU kernels: run by ``setup.py`` when brainsim is installed.

The C++ sources in ``kernels/cpu/`` become one shared library, ``libbrainsim_cpu.so`` beside
this file, compiled against the XLA FFI headers of the jaxlib present at build time
(``jax.ffi.include_dir()``). Each source is compiled in its own process, all at once, then
linked. The library reports what it was built from (``build_info.cc``): the jaxlib version,
since the FFI types it was compiled with must be the ones of the jaxlib that loads it, and a
hash of the sources, so that a library left beside edited sources (an editable install) is
recognised as stale. :mod:`brainsim.kernels._cpu` checks both before registering anything.

Standard library only, and no relative imports: ``setup.py`` loads this file by its path before
brainsim is installed. Environment: ``CXX`` names the compiler (default: the first of ``c++``,
``g++``, ``clang++`` found), ``CXXFLAGS`` adds flags (e.g. ``-march=native`` for a build used
only on this machine).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

LIBRARY = "libbrainsim_cpu.so"
SOURCE_DIR = Path(__file__).resolve().parent / "cpu"
_FLAGS = ("-O3", "-std=c++17", "-fPIC", "-w")
_TIMEOUT_S = 900


class BuildError(RuntimeError):
    """The kernels could not be compiled; the message says why."""


def source_hash(folder: Path = SOURCE_DIR) -> str:
    """SHA-256 (first 16 hex digits) of the names and contents of ``folder``'s sources."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.cc")) + sorted(folder.glob("*.h")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def compiler() -> str | None:
    """The C++ compiler to use: ``CXX`` if set (even if it does not exist: then the build fails
    and says so), else the first of ``c++``, ``g++``, ``clang++`` on the ``PATH``."""
    if os.environ.get("CXX"):
        return os.environ["CXX"]
    return next((c for c in ("c++", "g++", "clang++") if shutil.which(c)), None)


def _run(cmd: list[str]) -> None:
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=_TIMEOUT_S)
    except FileNotFoundError as e:
        raise BuildError(f"the compiler {cmd[0]!r} was not found") from e
    except subprocess.CalledProcessError as e:
        raise BuildError(f"`{shlex.join(cmd)}` failed:\n{(e.stderr or '')[-3000:]}") from e
    except subprocess.TimeoutExpired as e:
        raise BuildError(f"`{shlex.join(cmd)}` took more than {_TIMEOUT_S} s") from e


def build(target: Path, *, include_dir: str, jaxlib_version: str, jobs: int | None = None) -> str:
    """Compile ``kernels/cpu/*.cc`` into the shared library ``target``; return the compiler.

    ``include_dir``: the jaxlib headers (``jax.ffi.include_dir()``); ``jaxlib_version``: that
    jaxlib's version, recorded in the library; ``jobs``: sources compiled at once (default: the
    number of CPUs). An existing ``target`` is deleted first, so a failed build leaves none.
    Raises :class:`BuildError` if no compiler is found or a step fails.
    """
    target = Path(target)
    target.unlink(missing_ok=True)
    cxx = compiler()
    if cxx is None:
        raise BuildError("no C++ compiler found (none of c++, g++, clang++ is on the PATH; set CXX)")
    flags = [*shlex.split(cxx), *_FLAGS, *shlex.split(os.environ.get("CXXFLAGS", ""))]
    defines = [
        f'-DBRAINSIM_JAXLIB_VERSION="{jaxlib_version}"',
        f'-DBRAINSIM_SOURCE_HASH="{source_hash()}"',
    ]
    sources = sorted(SOURCE_DIR.glob("*.cc"))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="brainsim-build-") as tmp:
        objects = [Path(tmp) / (s.stem + ".o") for s in sources]
        jobs = max(1, min(jobs or os.cpu_count() or 1, len(sources)))
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            compiles = [
                pool.submit(_run, [*flags, *defines, f"-I{include_dir}", "-c", str(s), "-o", str(o)])
                for s, o in zip(sources, objects, strict=True)
            ]
            for done in compiles:
                done.result()  # the first failure, in source order
        # Linked under a temporary name and renamed: a process never sees a partial library.
        partial = target.with_name(target.name + ".partial")
        try:
            _run([*flags, "-shared", *map(str, objects), "-o", str(partial)])
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return cxx
