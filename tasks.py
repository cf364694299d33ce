#!/usr/bin/env python3
"""Project tasks with nothing but the standard library: set up ``.venv`` and run or test.

Usage (from anywhere; paths are relative to this file's folder):

    python3 tasks.py run [ARGS...]   set up, then `brainsim run ARGS...` (default COBA network)
    python3 tasks.py test [ARGS...]  set up with the test extra, then `pytest ARGS...`, `ruff check`
                                     and `lint-imports` (the import contracts in pyproject.toml)
    python3 tasks.py setup [--test]  only set up
    python3 tasks.py check-wheel     build a wheel, install it in a fresh venv, and check that
                                     its native kernels load and a small network runs

Set-up creates ``.venv`` with ``python3 -m venv`` and installs the package in editable mode
(``pip install -e .`` or ``-e .[test]``), which compiles the native CPU kernels (``setup.py``).
It writes a stamp keyed by a hash of ``pyproject.toml``, ``setup.py``, the kernel sources, the
extras and the interpreter, so a second call is a no-op until one of them changes. It never prompts. Environment: ``BRAINSIM_VENV`` overrides the venv folder.
"""

import sys

# Checked before anything newer is used, in syntax that any Python 3.6+ can parse.
if sys.version_info < (3, 11):  # noqa: UP036
    sys.stderr.write(
        "tasks.py: brainsim needs Python >= 3.11; this is Python %d.%d (%s).\n"  # noqa: UP031
        "Run it with a newer interpreter, e.g. `python3.11 tasks.py test`.\n"
        % (sys.version_info[0], sys.version_info[1], sys.executable)
    )
    sys.exit(2)

import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("BRAINSIM_VENV", ROOT / ".venv")).resolve()
STAMP = VENV / ".brainsim-setup"
WINDOWS = os.name == "nt"


def say(message: str) -> None:
    print(f"[tasks] {message}", flush=True)


def venv_bin(name: str) -> Path:
    if WINDOWS:
        return VENV / "Scripts" / (name + ".exe")
    return VENV / "bin" / name


def run(cmd: list[str], *, cwd: Path = ROOT, **kwargs) -> int:
    say("$ " + shlex.join(str(c) for c in cmd) + ("" if cwd == ROOT else f"  (in {cwd})"))
    env = dict(os.environ, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.update(kwargs.pop("env", {}))
    return subprocess.call([str(c) for c in cmd], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                           **kwargs)


def check(cmd: list[str]) -> None:
    code = run(cmd)
    if code != 0:
        say(f"failed (exit code {code}): {shlex.join(str(c) for c in cmd)}")
        sys.exit(code)


def build_inputs() -> list[Path]:
    """What the install reads to build the package, native kernels included."""
    kernels = sorted((ROOT / "kernels" / "cpu").glob("*.cc")) + sorted(
        (ROOT / "kernels" / "cpu").glob("*.h"))
    return [ROOT / "pyproject.toml", ROOT / "setup.py", ROOT / "kernels" / "_build.py", *kernels]


def setup_key(extras: str) -> str:
    digest = hashlib.sha256()
    for path in build_inputs():
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(f"\0{extras}\0{sys.version}\0{VENV}".encode())
    return digest.hexdigest()


def setup(test: bool) -> Path:
    """Create ``.venv`` if needed, install the package (and the test extra), return its python."""
    python = venv_bin("python")
    extras = "test" if test else ""
    # The test set-up includes everything the plain one installs, so either stamp will do for run.
    wanted = {setup_key("test")} | ({setup_key("")} if not test else set())
    if python.exists() and STAMP.exists() and STAMP.read_text().strip() in wanted:
        say(f"set-up up to date ({VENV}); "
            "delete the folder to rebuild it")
        return python
    started = time.perf_counter()
    if VENV.exists() and not python.exists():
        say(f"{VENV} exists but has no Python; recreating it")
        shutil.rmtree(VENV)
    if not python.exists():
        say(f"creating virtual environment {VENV} with {sys.executable}")
        code = run([sys.executable, "-m", "venv", VENV])
        if code != 0 or not python.exists():
            say("could not create the virtual environment. On Debian/Ubuntu install the venv "
                "module first: `apt-get install python3-venv` (or the python3.X-venv package "
                "matching your interpreter).")
            sys.exit(code or 1)
    STAMP.unlink(missing_ok=True)
    target = f".[{extras}]" if extras else "."
    check([python, "-m", "pip", "install", "--no-input", "-e", target])
    STAMP.write_text(setup_key(extras) + "\n")
    say(f"set-up done in {time.perf_counter() - started:.0f} s")
    return python


def task_run(args: list[str]) -> int:
    setup(test=False)
    return run([venv_bin("brainsim"), "run", *args])


def lint_imports() -> int:
    """``lint-imports`` with the contracts of ``pyproject.toml``, on a staged copy of the sources.

    import-linter reads a package from its folder tree, and kernels/ becomes brainsim.kernels
    only through the install's package-dir mapping. So the check runs on a copy in which
    kernels/ is brainsim/kernels/ (the layout of an installed wheel), from the copy's folder,
    which lint-imports puts first on the path.
    """
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    with tempfile.TemporaryDirectory(prefix="brainsim-imports-") as stage:
        package = Path(stage) / "brainsim"
        shutil.copytree(ROOT / "brainsim", package, ignore=skip)
        shutil.copytree(ROOT / "kernels", package / "kernels", ignore=skip)
        return run([venv_bin("lint-imports"), "--no-cache", ROOT / "pyproject.toml"],
                   cwd=Path(stage))


def task_test(args: list[str]) -> int:
    python = setup(test=True)
    started = time.perf_counter()
    tests = run([python, "-m", "pytest", *args])
    lint = run([python, "-m", "ruff", "check", "."])
    imports = lint_imports()
    say(f"pytest exit code {tests}, ruff exit code {lint}, lint-imports exit code {imports} "
        f"({time.perf_counter() - started:.0f} s)")
    return tests or lint or imports


WHEEL_CHECK = """
import brainsim as bs, jax
from brainsim import kernels
assert kernels.native_cpu_available(), kernels.native_cpu_status()
assert "site-packages" in bs.__file__, bs.__file__
net = bs.networks.coba(n_neurons=400)
result = bs.simulate(net, 50.0, key=jax.random.key(0), record=(bs.PopulationRate(),))
print(f"wheel check: brainsim {bs.__version__} from {bs.__file__}; kernels: "
      f"{kernels.auto_implementation('cpu')}; {float(result.recordings[0]['E'].sum()):.0f} "
      "spikes of E in a 400-neuron COBA network, 50 ms")
"""


def task_check_wheel() -> int:
    """Build a wheel (`pip wheel .`), install it in a fresh venv, and check that it runs with
    the native kernels it carries: they are compiled by the build, not at run time."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="brainsim-wheel-") as tmp:
        tmp = Path(tmp)
        dist, venv = tmp / "dist", tmp / "venv"
        # The venv's pip builds the wheel too: python3 alone may come without pip.
        check([sys.executable, "-m", "venv", venv])
        python = venv / ("Scripts/python.exe" if WINDOWS else "bin/python")
        check([python, "-m", "pip", "wheel", "--no-input", "--no-deps", "-w", dist, ROOT])
        (wheel,) = dist.glob("brainsim-*.whl")
        libraries = [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".so")]
        say(f"{wheel.name}: {', '.join(libraries) or 'no native library'}")
        if "brainsim/kernels/libbrainsim_cpu.so" not in libraries:
            say("the wheel carries no native library (see the build output above)")
            return 1
        check([python, "-m", "pip", "install", "--no-input", wheel])
        # From the temporary folder, so that the checkout's brainsim/ is not the one imported.
        code = run([python, "-c", WHEEL_CHECK], cwd=tmp)
    say(f"wheel check exit code {code} ({time.perf_counter() - started:.0f} s)")
    return code


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0 if argv else 2
    task, rest = argv[0], argv[1:]
    if task == "run":
        return task_run(rest)
    if task == "test":
        return task_test(rest)
    if task == "check-wheel":
        return task_check_wheel()
    if task == "setup":
        setup(test="--test" in rest)
        return 0
    sys.stderr.write(f"tasks.py: unknown task {task!r}; use run, test, setup or check-wheel.\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
