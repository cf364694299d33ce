"""The native CPU library (``setup.py``, ``brainsim.kernels._build``, ``_cpu``): built at
install time, loaded only when it matches, else the reference with one warning.

Which library a process loads is decided once per process, so each case that changes the
decision runs in a fresh interpreter, patching one input of the check (the installed jaxlib's
version, the library's path, the sources beside it) before brainsim first looks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import jaxlib
import numpy as np
import pytest
from brainsim.kernels import _build, _cpu

from brainsim import kernels

ROOT = Path(__file__).resolve().parent.parent
needs_library = pytest.mark.skipif(
    _build.compiler() is None, reason="no C++ compiler here, so the install built no library"
)

# Runs PATCH, then a native op through AUTO and NATIVE_CPU, and reports what happened.
PROBE = """
import json, warnings
warnings.simplefilter("always")
import jax.numpy as jnp
from brainsim import kernels
from brainsim.kernels import _build, _cpu
{patch}
with warnings.catch_warnings(record=True) as caught:
    first = kernels.native_cpu_available()
    total = float(kernels.fast_sum(jnp.arange(10.0)))  # AUTO: runs whichever is loaded
    again = kernels.native_cpu_available()
try:
    kernels.fast_sum(jnp.arange(3.0), implementation=kernels.Implementation.NATIVE_CPU)
    forced = "ran"
except RuntimeError as e:
    forced = str(e)
print(json.dumps(dict(
    available=[first, again], status=kernels.native_cpu_status(), total=total, forced=forced,
    warnings=[str(w.message) for w in caught if w.category.__name__ == "BrainsimWarning"])))
"""


def probe(patch: str = "", **env) -> dict:
    environ = {k: v for k, v in os.environ.items() if k != "BRAINSIM_DISABLE_NATIVE"}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(patch=patch)],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def assert_reference_with_one_warning(report: dict, reason: str) -> None:
    assert report["available"] == [False, False]
    assert report["status"].startswith(f"jnp reference: {reason}")
    assert report["total"] == 45.0  # the reference gives the right answer
    assert report["forced"].startswith("native CPU kernels unavailable: jnp reference")
    (warning,) = report["warnings"]  # one, though asked twice and used once
    assert reason in warning
    assert "measured" in warning and "x as long" in warning  # how much slower
    assert "reinstall brainsim with a C++ compiler" in warning  # the fix


@needs_library
def test_installed_library_is_loaded_and_matches():
    library = _cpu.library_path()
    assert library.is_file()
    assert kernels.native_cpu_available(), kernels.native_cpu_status()
    assert kernels.native_cpu_status() == f"native CPU (jaxlib {jaxlib.__version__})"
    assert kernels.auto_implementation("cpu") == kernels.native_cpu_status()
    # It reports what it was built from, and that is this jaxlib and these sources.
    import ctypes

    lib = ctypes.CDLL(str(library))
    assert _cpu._text(lib, "BrainsimJaxlibVersion") == jaxlib.__version__
    assert _cpu._text(lib, "BrainsimSourceHash") == _build.source_hash()
    # and its kernels run: native against reference.
    x = jax.random.normal(jax.random.key(0), (3, 1000))
    native = kernels.fast_sum(x, implementation=kernels.Implementation.NATIVE_CPU)
    reference = kernels.fast_sum(x, implementation=kernels.Implementation.REFERENCE)
    np.testing.assert_allclose(native, reference, rtol=1e-5)


@needs_library
def test_library_of_another_jaxlib_is_not_used():
    report = probe("import jaxlib; jaxlib.__version__ = '0.0.1'")
    assert_reference_with_one_warning(
        report, f"the native library was built for jaxlib {jaxlib.__version__}, not the installed 0.0.1"
    )


@needs_library
def test_library_older_than_its_sources_is_not_used(tmp_path):
    edited = tmp_path / "cpu"
    shutil.copytree(_build.SOURCE_DIR, edited)
    with open(edited / "sum.cc", "a") as f:
        f.write("// edited after the install\n")
    report = probe(f"from pathlib import Path; _build.SOURCE_DIR = Path({str(edited)!r})")
    assert_reference_with_one_warning(
        report, f"the native library is older than the sources in {edited}"
    )


def test_missing_library_warns_once_and_uses_reference(tmp_path):
    missing = tmp_path / _build.LIBRARY
    report = probe(f"from pathlib import Path; _cpu.library_path = lambda: Path({str(missing)!r})")
    assert_reference_with_one_warning(
        report, f"the native library {_build.LIBRARY} was not built when brainsim was installed"
    )


def test_disabled_by_environment_uses_reference_silently():
    report = probe(BRAINSIM_DISABLE_NATIVE="1")
    assert report["available"] == [False, False]
    assert report["status"] == "jnp reference: disabled by BRAINSIM_DISABLE_NATIVE=1"
    assert report["total"] == 45.0
    assert report["warnings"] == []


def test_auto_implementation_names_the_platform_kernels():
    assert kernels.auto_implementation("cpu") == kernels.native_cpu_status()
    assert kernels.auto_implementation("gpu") == "Pallas (Triton)"
    assert kernels.auto_implementation("tpu") == "Pallas (TPU)"
    assert kernels.auto_implementation("metal").startswith("jnp reference: ")


# ------------------------------------------------------------------------------ build step


def test_build_without_compiler_fails_clearly_and_leaves_no_library(tmp_path, monkeypatch):
    target = tmp_path / _build.LIBRARY
    target.write_bytes(b"an older build")  # deleted first: a failed build leaves none
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-c++"))
    with pytest.raises(_build.BuildError, match="no-such-c\\+\\+' was not found"):
        _build.build(target, include_dir=jax.ffi.include_dir(), jaxlib_version="0")
    assert not target.exists()


@pytest.mark.skipif(shutil.which("false") is None, reason="needs `false`")
def test_build_with_failing_compiler_reports_the_command(tmp_path, monkeypatch):
    target = tmp_path / _build.LIBRARY
    monkeypatch.setenv("CXX", shutil.which("false"))
    with pytest.raises(_build.BuildError, match="failed") as error:
        _build.build(target, include_dir=jax.ffi.include_dir(), jaxlib_version="0")
    assert "-I" + jax.ffi.include_dir() in str(error.value)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_wheel_builds_without_compiler(tmp_path):
    """``pip wheel`` with a compiler that does not exist succeeds, says why the kernels were
    not built, and the wheel has the package but no library."""
    pytest.importorskip("setuptools", minversion="68")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "MANIFEST.in"):
        shutil.copy(ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "*.so", "*.partial")
    for folder in ("brainsim", "kernels"):
        shutil.copytree(ROOT / folder, source / folder, ignore=skip)
    env = {**os.environ, "CXX": str(tmp_path / "no-such-c++"), "PIP_NO_INPUT": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-v",
         "-w", str(tmp_path / "dist"), str(source)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "the native CPU kernels were not built" in proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("brainsim-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "brainsim/kernels/_cpu.py" in names
    assert not any(n.endswith(".so") for n in names)
