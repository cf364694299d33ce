"""The native kernel cache loads only what brainsim built for this user.

A planted library is a shared object whose constructor writes a marker file: the constructor
runs as soon as the library is loaded, so an absent marker proves the planted code never ran.
Each case runs in a fresh process (the library is loaded once per process) with its own
``BRAINSIM_CACHE_DIR``. Most cases name a compiler that always fails (``false``): what is
checked is that nothing was loaded from the cache and the warning says why; one case rebuilds
with the real compiler.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
from brainsim.kernels import _cpu

CXX = _cpu._compiler()
FAILING_CXX = shutil.which("false")
pytestmark = pytest.mark.skipif(
    CXX is None or FAILING_CXX is None or os.name != "posix",
    reason="needs a C++ compiler, `false` and POSIX file permissions",
)

PLANTED = r"""
#include <cstdio>
__attribute__((constructor)) static void planted() {
    std::FILE* f = std::fopen(MARKER, "w");
    if (f) { std::fputs("the planted library ran", f); std::fclose(f); }
}
"""

LOAD = """
import json, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    from brainsim import kernels
    ok = kernels.native_cpu_available()
print(json.dumps([ok, kernels.native_cpu_status(),
                  [str(w.message) for w in caught if w.category.__name__ == "BrainsimWarning"]]))
"""


def plant(path, marker):
    """Compile the planted library to ``path`` (mode 0700, like a genuine build)."""
    source = path.parent / "planted.cc"
    source.write_text(PLANTED)
    subprocess.run(
        [CXX, "-shared", "-fPIC", f'-DMARKER="{marker}"', str(source), "-o", str(path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    source.unlink()
    os.chmod(path, 0o700)


def record_hash(library, digest=None):
    """Write the sidecar brainsim's build writes: the library's SHA-256 (or ``digest``)."""
    sidecar = _cpu._hash_path(library)
    sidecar.write_text((digest or hashlib.sha256(library.read_bytes()).hexdigest()) + "\n")
    os.chmod(sidecar, 0o600)


def load(cache, compiler):
    """``(available, status, warnings)`` of a fresh process using ``cache`` and ``compiler``."""
    env = {**os.environ, "BRAINSIM_CACHE_DIR": str(cache), "CXX": compiler}
    env.pop("BRAINSIM_DISABLE_NATIVE", None)
    proc = subprocess.run(
        [sys.executable, "-c", LOAD], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def tamper(case, cache, library, elsewhere):
    """Make the planted ``library`` fail exactly one check (``"control"``: none)."""
    if case == "no recorded hash":
        return
    if case == "symlink":
        library.rename(elsewhere)
        library.symlink_to(elsewhere)
        record_hash(elsewhere)
        os.replace(_cpu._hash_path(elsewhere), _cpu._hash_path(library))
        return
    record_hash(library, "0" * 64 if case == "wrong hash" else None)
    if case == "group-writable library":
        os.chmod(library, 0o770)
    elif case == "world-writable folder":
        os.chmod(library.parent, 0o777)
    elif case == "writable parent folder":
        os.chmod(cache, 0o777)
    elif case == "folder of another user":
        os.chown(library.parent, 65534, 65534)
    elif case == "library of another user":
        os.chown(library, 65534, 65534)


CASES = {
    "wrong hash": "its SHA-256 ",
    "no recorded hash": ".sha256 is missing",
    "group-writable library": "it is writable by other users (mode -rwxrwx---)",
    "symlink": "it is not a regular file (mode l",
    "library of another user": "it belongs to user id 65534, not to you",
    "world-writable folder": "is writable by other users (mode drwxrwxrwx)",
    "writable parent folder": "which other users can write to",
    "folder of another user": "belongs to user id 65534",
}


@pytest.mark.parametrize("case", list(CASES))
def test_planted_library_is_not_loaded(case, tmp_path):
    if "another user" in case and os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    cache = tmp_path / "cache"
    (cache / "kernels").mkdir(parents=True, mode=0o700)
    library = _cpu._library_path(FAILING_CXX, cache / "kernels")
    marker = tmp_path / "marker"
    plant(library, marker)
    tamper(case, cache, library, tmp_path / "elsewhere.so")

    ok, status, warnings = load(cache, FAILING_CXX)
    assert not marker.exists(), "the planted library was loaded"
    assert not ok  # `false` builds nothing: the reference kernels run
    assert len(warnings) == 1, warnings
    assert CASES[case] in warnings[0]
    assert "reference (jnp) kernels run" in warnings[0]
    if "folder" in case:
        assert f"the kernel cache {cache / 'kernels'} " in warnings[0]
        assert "BRAINSIM_CACHE_DIR" in warnings[0]  # how to fix it
    else:
        assert f"did not load {library}: " in warnings[0]
        assert not os.path.lexists(library)  # deleted, never to be tried again


def test_control_an_intact_library_is_loaded(tmp_path):
    """The marker works: a library that passes every check is loaded and its constructor
    runs (the planted one has none of brainsim's symbols, so registration then fails)."""
    cache = tmp_path / "cache"
    (cache / "kernels").mkdir(parents=True, mode=0o700)
    library = _cpu._library_path(FAILING_CXX, cache / "kernels")
    marker = tmp_path / "marker"
    plant(library, marker)
    record_hash(library)
    ok, status, warnings = load(cache, FAILING_CXX)
    assert marker.read_text() == "the planted library ran"
    assert not ok and "BrainsimEllDeliver" in status and warnings == []


def test_tampered_library_is_rebuilt_and_loaded(tmp_path):
    """With a working compiler, the planted library is replaced by a genuine build, whose
    recorded SHA-256 is its own, in a folder only this user can write."""
    cache = tmp_path / "cache"
    (cache / "kernels").mkdir(parents=True, mode=0o700)
    library = _cpu._library_path(CXX, cache / "kernels")
    marker = tmp_path / "marker"
    plant(library, marker)
    record_hash(library, "0" * 64)

    ok, status, warnings = load(cache, CXX)
    assert not marker.exists()
    assert ok and status == str(library)
    assert len(warnings) == 1 and warnings[0].endswith("Deleted it and rebuilt it.")
    recorded = _cpu._hash_path(library).read_text().strip()
    assert recorded == hashlib.sha256(library.read_bytes()).hexdigest()
    assert library.stat().st_mode & 0o077 == 0
    # The next process loads the build without a word.
    assert load(cache, CXX) == [True, str(library), []]


def test_new_cache_folder_is_private(tmp_path):
    cache = tmp_path / "fresh"
    ok, _, warnings = load(cache, FAILING_CXX)
    assert not ok and warnings == []  # nothing to distrust: the build just failed
    assert (cache / "kernels").stat().st_mode & 0o777 == 0o700
