"""Structure and compile cost of the simulation loop: COBA 4k against Potjans–Diesmann 0.1.

The architecture issue's target: the operations in one time step grow with the number of
distinct model and receptor types, never with the number of populations or projections. The
two networks have the same types (LIF, exponential synapses; COBA conductance-based with two
receptors, PD current-based with one) but COBA has 2 populations and 4 projections while PD at
``scale = k_scale = 0.1`` has 8 (+ 8 Poisson sources) and 63. In ONE process, for each
network, this script

* compiles ``simulate`` ahead of time (``_aot.compile_simulation``: trace, lower and XLA
  compile, timed apart) after a small warm-up compilation that absorbs JAX's one-time start-up,
  ``--compile-rounds`` times (default 3), alternating between the networks, and reports each
  network's fastest round (its stages, and the total of every round);
* reads the optimised HLO (``compiled.as_text()``), finds the simulation loop (the ``while``
  with the largest body) and counts in its body, following nested loops,
  conditionals (every branch) and calls but not entering fusions: ``instructions`` (all),
  ``ops`` (all but parameter, constant, get-tuple-element, tuple and bitcast, which cost
  nothing at run time), ``fusion`` and ``custom-call`` instructions, the instructions inside
  the fusions' computations, and nested loops; and ``top-level ops``, the ops of the body
  computation itself (each runs once per step: on a CPU one thunk, on a GPU about one kernel
  launch; a nested loop or conditional counts as one);
* optionally runs the compiled loop (``--repeats``, default 1) for the time per step.

It prints the table with the ratio PD / COBA, appends it to ``--output`` (default
``benchmarks/structure_results.md``, a history: machine, date, jax and commit in every row)
and writes everything, per-opcode counts included, to ``--json``.

    python benchmarks/structure_bench.py --json /tmp/structure.json

The counts are deterministic for a given jax/XLA version and device; the times depend on the
machine's load (on a shared machine only the counts are reliable).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import re
import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _aot import append_rows, compile_simulation, compiler_options, git_revision  # noqa: E402
from coba_bench import machine_description  # noqa: E402

# Opcodes that generate no code of their own (tuple plumbing, views, literals).
FREE = frozenset({"parameter", "constant", "get-tuple-element", "tuple", "bitcast"})
# Where control flow continues into other computations (their instructions run as the loop's
# own ops); fusions, reductions' `to_apply` and the like are part of one op and not entered.
_CALLED = {
    "while": re.compile(r"\b(?:body|condition)=%?([\w.\-]+)"),
    "call": re.compile(r"\b(?:to_apply|calls)=%?([\w.\-]+)"),
    "conditional": re.compile(
        r"\b(?:true_computation|false_computation)=%?([\w.\-]+)|branch_computations=\{([^}]*)\}"
    ),
}
_FUSED = re.compile(r"\bcalls=%?([\w.\-]+)")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([^\s(]+)\s*(\(.*)?\{\s*$")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT\s+)?%?([^\s=]+)\s*=\s*(.*)$")
_OPCODE = re.compile(r"\s*([a-z][a-z0-9\-_]*)\(")


def _opcode(rhs: str) -> str | None:
    """The opcode of an instruction's right-hand side ``SHAPE opcode(operands), attrs``."""
    i, depth = 0, 0
    # Skip the shape: a tuple up to its closing parenthesis, an array up to the first space.
    while i < len(rhs):
        depth += (rhs[i] == "(") - (rhs[i] == ")")
        i += 1
        if depth == 0 and (rhs[0] == "(" or i == len(rhs) or rhs[i].isspace()):
            break
    m = _OPCODE.match(rhs, i)
    return m.group(1) if m else None


def parse_hlo(text: str) -> tuple[dict[str, list[tuple[str, str]]], str | None]:
    """Computations of an HLO module's text: ``{name: [(opcode, line), ...]}`` and the entry's
    name. Accepts the formats of jax 0.10 and 0.11 (with or without ``%`` sigils, trailing
    stack-frame tables)."""
    computations: dict[str, list[tuple[str, str]]] = {}
    entry, current = None, None
    for line in text.splitlines():
        if current is None:
            m = _HEADER.match(line)
            if m and not line.startswith(("HloModule", " ")):
                current = computations.setdefault(m.group(2), [])
                entry = m.group(2) if m.group(1) else entry
            continue
        if line.startswith("}"):
            current = None
            continue
        m = _INSTRUCTION.match(line)
        if m:
            op = _opcode(m.group(2))
            if op is not None:
                current.append((op, line))
    return computations, entry


def _called(op: str, line: str) -> list[str]:
    pattern = _CALLED.get(op)
    if pattern is None:
        return []
    names = []
    for m in pattern.finditer(line):
        for group in m.groups():
            if group:
                names += [n.strip().lstrip("%") for n in group.split(",") if n.strip()]
    return names


def count_ops(computations, root: str) -> dict:
    """Counts over ``root`` and the computations its control flow runs (see module doc)."""
    opcodes: collections.Counter = collections.Counter()
    fused = nested_loops = 0
    seen, todo = set(), [root]
    while todo:
        name = todo.pop()
        if name in seen or name not in computations:
            continue
        seen.add(name)
        for op, line in computations[name]:
            opcodes[op] += 1
            if op == "fusion":
                m = _FUSED.search(line)
                fused += len(computations.get(m.group(1), ())) if m else 0
            nested_loops += op == "while"
            todo += _called(op, line)
    return {
        "instructions": sum(opcodes.values()),
        "ops": sum(n for op, n in opcodes.items() if op not in FREE),
        "fusions": opcodes["fusion"],
        "custom_calls": opcodes["custom-call"],
        "fused_instructions": fused,
        "nested_loops": nested_loops,
        "conditionals": opcodes["conditional"],
        "copies": opcodes["copy"],
        "opcodes": dict(opcodes.most_common()),
    }


def loop_body_counts(text: str) -> dict:
    """Counts in the body of the simulation loop: the ``while`` whose body holds the most
    instructions (the time loop holds every other loop of the step; it is looked for in the
    whole module, as a GPU compiler may move it into a command-buffer computation)."""
    computations, entry = parse_hlo(text)
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text; has the text format changed?")
    bodies = {
        m.group(1)
        for instructions in computations.values()
        for op, line in instructions
        if op == "while" and (m := re.search(r"\bbody=%?([\w.\-]+)", line))
    }
    if not bodies:
        raise ValueError("no while loop in the HLO module; was the loop unrolled away?")
    counts, body = max(((count_ops(computations, b), b) for b in bodies),
                       key=lambda x: x[0]["instructions"])  # fmt: skip
    # The body's own ops, without what nested loops and conditionals' branches hold: every
    # one of them runs once per step, while a branch runs only when selected.
    top = sum(op not in FREE for op, _ in computations[body])
    module = sum(len(c) for c in computations.values())
    return {
        **counts,
        "top_level_ops": top,
        "body": body,
        "module_loops": len(bodies),
        "module_instructions": module,
    }


def networks(seed: int, background: str = "poisson") -> dict:
    """Builders of the two networks (brainsim's own) and the monitors each run records;
    ``background`` is Potjans–Diesmann's ("poisson", the default, or "dc")."""
    import brainsim as bs
    from brainsim.networks import PD14_POPULATIONS, coba, potjans_diesmann

    pd = "PD 0.1" if background == "poisson" else f"PD 0.1 ({background})"
    return {
        "COBA 4k": (lambda: coba(n_neurons=4000, p=0.02, seed=seed), (bs.PopulationRate(),)),
        pd: (
            lambda: potjans_diesmann(scale=0.1, k_scale=0.1, seed=seed, background=background),
            (bs.PopulationRate(PD14_POPULATIONS),),
        ),
    }


def measure(name, build, record, duration, repeats, seed) -> tuple[dict, str]:
    """Build, compile, count and run one network; returns the results and the HLO text."""
    import jax

    start = time.perf_counter()
    net = build()
    build_s = time.perf_counter() - start
    n_steps = round(duration / net.dt)
    state = jax.block_until_ready(net.init(jax.random.key(seed)))
    run = compile_simulation(net, state, n_steps, record)
    text = run.hlo_text()
    counts = loop_body_counts(text)
    times = []
    for r in range(repeats):
        state = jax.block_until_ready(net.init(jax.random.key(seed + 1 + r)))
        start = time.perf_counter()
        run(net, state).raise_if_failed()
        times.append(time.perf_counter() - start)
    return {
        "network": name,
        "neurons": net.n_neurons,
        "synapses": net.n_synapses,
        "populations": len(net.populations),
        "projections": len(net.projections),
        "build_s": build_s,
        "trace_s": run.trace_s,
        "lower_s": run.lower_s,
        "compile_s": run.compile_s,
        "run_s": times,
        "us_per_step": min(times) / n_steps * 1e6 if times else None,
        **counts,
    }, text


COLUMNS = [
    "date", "machine", "jax", "commit", "network", "populations", "projections",
    "trace (s)", "lower (s)", "XLA compile (s)", "compile total (s)", "compile rounds (s)",
    "body instructions", "body ops", "top-level ops", "fusions",
    "custom calls", "fused instr.", "nested loops", "µs / step (min)", "command",
]  # fmt: skip
RATIO_KEYS = [
    ("trace (s)", "trace_s"), ("lower (s)", "lower_s"), ("XLA compile (s)", "compile_s"),
    ("compile total (s)", "compile_total_s"),
    ("body instructions", "instructions"), ("body ops", "ops"), ("top-level ops", "top_level_ops"),
    ("fusions", "fusions"),
    ("custom calls", "custom_calls"), ("fused instr.", "fused_instructions"),
    ("nested loops", "nested_loops"), ("µs / step (min)", "us_per_step"),
    ("populations", "populations"), ("projections", "projections"),
]  # fmt: skip


def _cell(x) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"
    return str(x)


def rows(results: list[dict], context: dict) -> list[dict]:
    out = []
    for r in results:
        row = {**context, "network": f"{r['network']} ({r['neurons']} n., {r['synapses']} syn.)"}
        row.update({col: _cell(r[key]) for col, key in RATIO_KEYS})
        row["compile rounds (s)"] = ", ".join(f"{t:.2f}" for t in r["compile_totals_s"])
        out.append(row)
    a, b = results
    ratio = {**context, "network": f"ratio {b['network']} / {a['network']}"}
    for col, key in RATIO_KEYS:
        ok = a[key] not in (None, 0) and b[key] is not None
        ratio[col] = f"{b[key] / a[key]:.2f}" if ok else "—"
    return out + [ratio]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=float, default=1000.0, help="biological time of the compiled loop (ms)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="timed runs of each compiled loop (0: compile and count only)",
    )
    parser.add_argument(
        "--compile-rounds",
        type=int,
        default=3,
        help="compilations of each network, alternating; the fastest is reported",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pd-background",
        choices=("poisson", "dc"),
        default="poisson",
        help="Potjans-Diesmann's background input (dc: without the Poisson sampler)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=HERE / "structure_results.md",
        help="markdown table to append to",
    )
    parser.add_argument("--json", type=Path, default=None, help="write all results here")
    parser.add_argument(
        "--hlo-dir",
        type=Path,
        default=None,
        help="also save each network's optimised HLO text here",
    )
    args = parser.parse_args(argv)  # fmt: skip
    if args.repeats < 0:
        parser.error("--repeats must be 0 or more")
    if args.compile_rounds < 1:
        parser.error("--compile-rounds must be 1 or more")
    if args.duration <= 0:
        parser.error("--duration must be positive (ms)")

    import jax

    import brainsim as bs
    from brainsim.networks import coba

    command = "python benchmarks/structure_bench.py " + shlex.join(argv or sys.argv[1:])
    machine = machine_description()
    print(f"machine: {machine}\ncommand: {command}", flush=True)
    # Warm-up: JAX's and XLA's one-time start-up would otherwise be charged to the first network.
    tiny = coba(n_neurons=100, p=0.1, seed=args.seed)
    compile_simulation(tiny, tiny.init(jax.random.key(0)), 10, (bs.PopulationRate(),))

    # Compile rounds alternate between the networks (a slow spell of the machine hits both);
    # each network keeps its fastest round, as a ratio of minimum run times would.
    builders = networks(args.seed, args.pd_background)
    rounds: dict[str, list] = {name: [] for name in builders}
    for k in range(args.compile_rounds):
        for name, (build, record) in builders.items():
            repeats = args.repeats if k == args.compile_rounds - 1 else 0
            r, text = measure(name, build, record, args.duration, repeats, args.seed)
            r["compile_total_s"] = r["trace_s"] + r["lower_s"] + r["compile_s"]
            rounds[name].append((r, text))
            print(f"  round {k}: {name} compile {r['compile_total_s']:.3f} s", flush=True)
    results = []
    for name, measured in rounds.items():
        r, text = min(measured, key=lambda m: m[0]["compile_total_s"])
        r = {**r, "run_s": measured[-1][0]["run_s"], "us_per_step": measured[-1][0]["us_per_step"],
             "compile_totals_s": [m[0]["compile_total_s"] for m in measured]}  # fmt: skip
        results.append(r)
        print(
            f"{name}: build {r['build_s']:.1f} s, trace {r['trace_s']:.2f} s, lower {r['lower_s']:.2f} s, XLA "
            f"{r['compile_s']:.2f} s; loop body: {r['instructions']} instructions, {r['ops']} "
            f"ops ({r['top_level_ops']} top-level), {r['fusions']} fusions, {r['custom_calls']} custom calls, "
            f"{r['fused_instructions']} fused instructions, {r['nested_loops']} nested loops"
            + (f"; {r['us_per_step']:.1f} µs/step" if r["us_per_step"] else ""),
            flush=True,
        )
        if args.hlo_dir is not None:
            args.hlo_dir.mkdir(parents=True, exist_ok=True)
            (args.hlo_dir / f"{name.replace(' ', '_')}.hlo.txt").write_text(text)
    device = jax.devices()[0]
    context = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{machine}; {device.platform}: {device.device_kind}",
        "jax": jax.__version__,
        "commit": git_revision(),
        "command": f"`{command}`",
    }
    table = append_rows(
        args.output,
        "Structure and compile cost of the simulation loop",
        "Appended by `benchmarks/structure_bench.py` (see its docstring); one block of three "
        "rows per run. Counts are of the optimised HLO of the loop body; times depend on load.",
        COLUMNS,
        rows(results, context),
    )
    print("\n" + table + f"\nappended to {args.output}")
    if args.json is not None:
        payload = {**context, "compiler_options": compiler_options(), "results": results}
        args.json.write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
