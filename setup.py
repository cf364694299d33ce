"""Build step of brainsim: the native CPU kernels, compiled when the package is installed.

Everything else is declared in ``pyproject.toml``. ``pip install .``, ``pip install -e .`` and
``pip wheel .`` run ``build_ext``, which compiles ``kernels/cpu/*.cc`` into
``brainsim/kernels/libbrainsim_cpu.so`` (:mod:`kernels._build`) against the jaxlib of the build
environment. If that fails (no C++ compiler, say) the install still succeeds and says so;
brainsim then runs its jnp reference kernels and warns once when it first needs them.
"""

import importlib.util
import os
import sys
import time
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_NAME = "brainsim.kernels.libbrainsim_cpu"


def _build_module():
    """kernels/_build.py, loaded by its path: brainsim itself is not importable yet."""
    path = Path(__file__).resolve().parent / "kernels" / "_build.py"
    spec = importlib.util.spec_from_file_location("_brainsim_kernels_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildNativeKernels(build_ext):
    """``build_ext`` for the one native library: a plain shared library (no Python module in
    it), compiled by :func:`kernels._build.build`, whose failure is reported, not raised."""

    def get_ext_filename(self, fullname):
        # Called with the full dotted name and with its last part alone.
        *package, name = fullname.split(".")
        if name == _NAME.rpartition(".")[2]:
            return os.path.join(*package, name + ".so")
        return super().get_ext_filename(fullname)

    def build_extension(self, ext):
        build = _build_module()
        target = Path(self.get_ext_fullpath(ext.name))
        target.unlink(missing_ok=True)  # a failed build must not ship an older library
        started = time.perf_counter()
        try:
            import jax  # a build requirement (pyproject.toml), pinned like the runtime one
            import jaxlib

            cxx = build.build(
                target, include_dir=jax.ffi.include_dir(), jaxlib_version=jaxlib.__version__
            )
        except (build.BuildError, ImportError) as e:  # ImportError: no jax (--no-build-isolation)
            print(
                f"brainsim: WARNING: the native CPU kernels were not built: {e}\n"
                "brainsim will run its jnp reference kernels instead (slower; it warns when "
                "it first uses them). To build them, install a C++ compiler (g++ or clang++, "
                "or set CXX) and reinstall brainsim.",
                file=sys.stderr,
                flush=True,
            )
            return
        print(
            f"brainsim: built the native CPU kernels with {cxx} against jaxlib "
            f"{jaxlib.__version__} in {time.perf_counter() - started:.1f} s: {target}",
            flush=True,
        )


setup(
    # optional: an install without the library is valid (setuptools then copies nothing back
    # into the source tree for an editable install). `sources` are listed for the sdist; the
    # headers ride in MANIFEST.in.
    ext_modules=[
        Extension(
            _NAME,
            sources=sorted(str(p.as_posix()) for p in Path("kernels/cpu").glob("*.cc")),
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildNativeKernels},
)
