"""Ahead-of-time compilation of a brainsim simulation, timed stage by stage.

Shared by ``structure_bench.py`` and ``pd_vs_nest.py``. The loop is compiled through the
public :func:`brainsim.simulate` (``check=False``) inside one ``jax.jit`` whose arguments are
the array leaves of ``(network.plan(), state)``, as ``simulate`` itself does outside a
transformation (the plan, the network merged into groups, built on the host); the static rest
is closed over. JAX's stages are timed apart:

* ``trace_s``: building the plan (host) and ``jax.jit(f).trace(...)`` (Python tracing of the
  whole simulate call to a jaxpr),
* ``lower_s``: ``traced.lower()`` (jaxpr to StableHLO),
* ``compile_s``: ``lowered.compile()`` (XLA optimisation and code generation).

``jax.clear_caches()`` runs first, so a repeated compilation in one process is timed in full
(brainsim's inner ``jit`` would otherwise reuse its cached trace).
"""

from __future__ import annotations

import dataclasses
import gc
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def compiler_options() -> dict:
    """brainsim's XLA options (the ones :func:`brainsim.jit` compiles with), or ``{}`` if the
    library no longer keeps them in ``brainsim._compile`` (reported with the results)."""
    try:
        from brainsim._compile import COMPILER_OPTIONS
    except ImportError:
        return {}
    return dict(COMPILER_OPTIONS)


@dataclasses.dataclass
class CompiledRun:
    """A compiled simulation of ``n_steps`` steps and how long each stage took (s)."""

    compiled: object
    static: object
    plan: object
    n_steps: int
    trace_s: float
    lower_s: float
    compile_s: float

    def __call__(self, network, state):
        """Run from ``state``; returns the :class:`~brainsim.SimulationResult` when ready."""
        import equinox as eqx
        import jax

        dyn, _ = eqx.partition((self.plan, state), eqx.is_array)
        return jax.block_until_ready(self.compiled(dyn))

    def hlo_text(self) -> str:
        """The optimised HLO module (``Compiled.as_text()``; the executable's module text
        where a jax version returns nothing there)."""
        text = self.compiled.as_text()
        if not text:
            modules = self.compiled.runtime_executable().hlo_modules()
            text = "\n".join(m.to_string() for m in modules)
        return text


def compile_simulation(network, state, n_steps: int, record) -> CompiledRun:
    """Trace, lower and compile ``simulate(network, n_steps=n_steps, state=state,
    record=record)``; the result runs from any state of the same network."""
    import equinox as eqx
    import jax

    import brainsim as bs

    record = tuple(record)
    jax.clear_caches()
    # Garbage left by building the network is collected before the clock starts, not by a
    # collection that happens to fall inside one stage (~0.1 s at random for either network).
    gc.collect()
    start = time.perf_counter()
    # As simulate does outside a transformation: the plan merged on the host (its time is
    # part of trace_s), then the loop traced with the plan's arrays as arguments.
    plan = network.plan()
    dyn, static = eqx.partition((plan, state), eqx.is_array)

    def run(dyn):
        p, s = eqx.combine(dyn, static)
        result = bs.simulate(p, n_steps=n_steps, state=s, record=record, check=False)
        return result

    fn = jax.jit(run, compiler_options=compiler_options() or None)
    traced = fn.trace(dyn)
    traced_at = time.perf_counter()
    lowered = traced.lower()
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    done = time.perf_counter()
    return CompiledRun(
        compiled,
        static,
        plan,
        n_steps,
        traced_at - start,
        lowered_at - traced_at,
        done - lowered_at,
    )


def git_revision() -> str:
    """The checkout being measured: its short commit (``+dirty`` with uncommitted changes to
    tracked files) and the last commit that changed the library (``brainsim/``, ``kernels/``),
    which identifies the measured code across branches that differ only elsewhere."""

    def git(*args):
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    try:
        head = git("describe", "--always", "--dirty=+dirty", "--abbrev=10")
        library = git("log", "-1", "--format=%h", "--abbrev=10", "--", "brainsim", "kernels")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "brainsim", "kernels")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} (library {library}{'+dirty' if dirty else ''})"


def append_rows(path: Path, title: str, intro: str, columns: list[str], rows: list[dict]) -> str:
    """Append ``rows`` to the markdown table in ``path`` (created with ``title`` and ``intro``
    if missing); earlier rows are kept, so a baseline and later runs stay side by side."""
    header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    lines = "".join("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |\n" for r in rows)
    if not path.exists():
        path.write_text(f"# {title}\n\n{intro}\n")
    text = path.read_text()
    with path.open("a") as f:
        if header not in text:
            f.write("\n" + header)  # new columns: a new table below the old one
        f.write(lines)
    return header + lines
