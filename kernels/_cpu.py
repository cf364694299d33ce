"""Native CPU kernels, registered with XLA through JAX's foreign-function interface.

The C++ sources in ``kernels/cpu/`` are compiled on first use against the headers of the
installed ``jaxlib`` (``jax.ffi.include_dir()``), cached per source, jaxlib version, compiler
and flags, and registered as XLA custom calls, so they run inside compiled programs like any
other op (no Python callback). If no C++ compiler is available the pure-jnp reference is used
instead and :func:`available` reports why.

Environment: ``CXX`` chooses the compiler; ``BRAINSIM_CACHE_DIR`` the cache directory
(default ``~/.cache/brainsim``; the four newest builds are kept in its ``kernels`` folder);
``BRAINSIM_DISABLE_NATIVE=1`` turns native kernels off.

A cached library is code that runs in this process, so it is loaded only if no other user can
have put it there: the ``kernels`` folder must belong to the current user and not be writable
by group or others (brainsim creates it with mode 0700), the folders above it must belong to
the user or root and be writable by others only with the sticky bit (as ``/tmp``), and the
library must be a regular file of the user, not writable by group or others, whose SHA-256
equals the one recorded in ``<library>.sha256`` when brainsim built it (builds and loads hold
a lock on ``kernels/.lock``, so the two always match). Otherwise nothing is loaded from there:
a library that fails a check is rebuilt, an unsafe folder is replaced by a private temporary
one, and one :class:`~brainsim.BrainsimWarning` says what was wrong and what was done; if the
build fails, the reference kernels run.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import warnings
from pathlib import Path

import jax
import jaxlib

from ._warnings import BrainsimWarning

_SOURCES = ("ell_deliver.cc", "csr_deliver.cc", "procedural_deliver.cc", "active_indices.cc",
            "stdp_update.cc", "ring_clear.cc", "sum.cc")
_HEADERS = ("spike_scan.h", "parallel.h", "ring_row.h")
_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-w")
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


def _library_path(compiler: str, directory: Path | None = None) -> Path:
    digest = hashlib.sha256()
    for src in _SOURCES + _HEADERS:
        digest.update((_source_dir() / src).read_bytes())
    digest.update(jaxlib.__version__.encode())
    digest.update(compiler.encode())
    digest.update("\0".join(_FLAGS).encode())
    name = f"libbrainsim_cpu_{digest.hexdigest()[:16]}.so"
    return (_cache_dir() if directory is None else directory) / name


def _hash_path(library: Path) -> Path:
    """The sidecar holding the SHA-256 of ``library`` as built."""
    return library.with_name(library.name + ".sha256")


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _build(compiler: str, target: Path) -> None:
    # Compile to a temporary name and rename: concurrent processes never load a partial file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    cmd = [
        compiler,
        *_FLAGS,
        f"-I{jax.ffi.include_dir()}",
        *[str(_source_dir() / s) for s in _SOURCES],
        "-o",
        tmp,
    ]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
        os.chmod(tmp, 0o700)  # the linker's mode follows the umask, which may be 0
        os.replace(tmp, target)
        _write_hash(target)
        _prune(target.parent, keep=target)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        Path(tmp).unlink(missing_ok=True)
        detail = getattr(e, "stderr", "") or str(e)
        raise RuntimeError(f"compiling brainsim's CPU kernels failed: {detail[-2000:]}") from e


def _write_hash(library: Path) -> None:
    """Record the SHA-256 of ``library`` next to it (written atomically, like the library)."""
    fd, tmp = tempfile.mkstemp(suffix=".sha256", dir=library.parent)
    with os.fdopen(fd, "w") as f:
        f.write(_sha256(library) + "\n")
    os.replace(tmp, _hash_path(library))


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
            for path in (old, _hash_path(old)):
                try:
                    path.unlink()
                except OSError:  # gone already, or in use where that forbids deletion
                    pass


# ------------------------------------------------------------------------------ checks


def _mode(st: os.stat_result) -> str:
    return f"mode {stat.filemode(st.st_mode)}"


def _folder_problem(directory: Path) -> str | None:
    """Why another user could change what ``directory`` holds, or ``None``."""
    if not hasattr(os, "getuid"):  # Windows: access is governed by ACLs, not checked here
        return None
    uid = os.getuid()
    st = os.stat(directory)
    if st.st_uid != uid:
        return f"belongs to user id {st.st_uid}, not to you (user id {uid})"
    if st.st_mode & 0o022:
        return f"is writable by other users ({_mode(st)})"
    # Whoever can write a folder above it can replace the folder itself.
    for parent in sorted({*directory.absolute().parents, *directory.resolve().parents}):
        st = os.stat(parent)
        if st.st_uid not in (uid, 0):
            return f"lies in {parent}, which belongs to user id {st.st_uid}"
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            return f"lies in {parent}, which other users can write to ({_mode(st)})"
    return None


def _file_problem(path: Path, name: str) -> str | None:
    """Why the file ``path`` (called ``name`` in the message) may not be what brainsim wrote,
    or ``None``."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        return f"{name} is not a regular file ({_mode(st)})"
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"{name} belongs to user id {st.st_uid}, not to you (user id {os.getuid()})"
    if hasattr(os, "getuid") and st.st_mode & 0o022:
        return f"{name} is writable by other users ({_mode(st)})"
    return None


def _library_problem(library: Path) -> str | None:
    """Why the cached ``library`` must not be loaded, or ``None``."""
    recorded = _hash_path(library)
    problem = _file_problem(library, "it")
    if problem is None and not os.path.lexists(recorded):
        problem = f"no SHA-256 was recorded for it ({recorded.name} is missing)"
    problem = problem or _file_problem(recorded, recorded.name)
    if problem is not None:
        return problem
    expected, actual = recorded.read_text().strip(), _sha256(library)
    if actual != expected:
        return (
            f"its SHA-256 {actual[:16]}... differs from {expected[:16]}..., the one recorded "
            "when brainsim built it"
        )
    return None


@contextlib.contextmanager
def _locked(directory: Path):
    """An exclusive lock on ``directory`` (POSIX; elsewhere builds may race as before)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(directory / ".lock", flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _warn(message: str) -> None:
    warnings.warn(f"brainsim native CPU kernels: {message}", BrainsimWarning, stacklevel=4)


# ------------------------------------------------------------------------------ loading


def _register(path: Path) -> tuple[bool, str]:
    try:
        lib = ctypes.cdll.LoadLibrary(str(path))
        for target, symbol in _TARGETS.items():
            jax.ffi.register_ffi_target(
                target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu"
            )
    except (OSError, AttributeError) as e:
        return False, str(e)
    return True, str(path)


def _load_from_cache(compiler: str, directory: Path) -> tuple[bool, str]:
    """Load the library of ``directory`` (a folder only this user can change), building it
    when it is missing and rebuilding it when it fails a check."""
    with _locked(directory):
        path = _library_path(compiler, directory)
        problem = _library_problem(path) if os.path.lexists(path) else None
        if problem is not None:
            path.unlink()
        if not os.path.lexists(path):
            try:
                _build(compiler, path)
            except RuntimeError as e:
                if problem is not None:
                    _warn(
                        f"did not load {path}: {problem}. Rebuilding it failed, so the "
                        f"reference (jnp) kernels run: {e}"
                    )
                return False, str(e)
            if problem is not None:
                _warn(f"did not load {path}: {problem}. Deleted it and rebuilt it.")
        return _register(path)


def _load_private(compiler: str, reason: str) -> tuple[bool, str]:
    """Build into a fresh private folder for this process only (deleted once loaded)."""
    fix = (
        "Make that folder yours and writable by you alone (chmod 700), or point "
        "BRAINSIM_CACHE_DIR at such a folder."
    )
    directory = Path(tempfile.mkdtemp(prefix="brainsim-kernels-"))
    try:
        path = _library_path(compiler, directory)
        try:
            _build(compiler, path)
        except RuntimeError as e:
            _warn(
                f"{reason}, so it was not used; building the kernels in a private folder "
                f"failed, so the reference (jnp) kernels run. {fix} {e}"
            )
            return False, f"{reason}; {e}"
        _warn(
            f"{reason}, so it was not used; the kernels were built in a private temporary "
            f"folder for this process instead. {fix}"
        )
        return _register(path)
    finally:
        shutil.rmtree(directory, ignore_errors=True)  # a loaded library stays mapped


@functools.cache
def _load() -> tuple[bool, str]:
    if os.environ.get("BRAINSIM_DISABLE_NATIVE") == "1":
        return False, "disabled by BRAINSIM_DISABLE_NATIVE=1"
    compiler = _compiler()
    if compiler is None:
        return False, "no C++ compiler found (set CXX)"
    directory = _cache_dir()
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        problem = _folder_problem(directory)
    except OSError as e:
        problem = f"cannot be used ({e})"
    try:
        if problem is not None:
            return _load_private(compiler, f"the kernel cache {directory} {problem}")
        return _load_from_cache(compiler, directory)
    except OSError as e:
        return False, str(e)


def available() -> bool:
    """True if the native CPU kernels are compiled and registered."""
    return _load()[0]


def status() -> str:
    """The library path, or why native CPU kernels are unavailable."""
    return _load()[1]
