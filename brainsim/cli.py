"""The ``brainsim`` command line.

``brainsim run [CONFIG.toml] [--out DIR] [--seed N] [--duration MS]``

``brainsim run`` loads a config (default: the embedded COBA benchmark, ``configs/coba.toml``),
compiles and runs it, prints a summary and writes to ``--out`` (default ``./out``):

* ``spikes.npz`` — ``times_ms`` (float), ``ids`` (int, global: population ``p`` holds ids
  ``population_offsets[p] <= id < population_offsets[p + 1]``), ``population_names``,
  ``population_offsets``, ``population_sizes``, ``recorded`` (whether each population's spikes
  were recorded), ``dt_ms``, ``duration_ms``; spikes sorted by time then id;
* ``summary.json`` — sizes, rates (Hz), ISI CV, timings, the timing conventions (``timing``:
  ``"Brian2"`` or ``"NEST"``, :class:`brainsim.Timing`), seed, the kernels that ran
  (``kernels``: ``"native CPU (jaxlib X)"`` or ``"jnp reference: <why>"``), versions and
  machine (and ``plastic_weights``: synapse count, mean, min and max of each plastic
  projection's final weights);
* ``raster.png`` — the spike raster of the network's populations in network order from the top
  (spike sources left out unless nothing else spiked) above their population rates (Hz, bins
  of about 1/100 of the run); and ``traces.npz``/``traces.png`` (one panel per trace, a legend
  naming the neurons, units) when the config records state traces;
* ``weights.npz`` and ``weights.png`` when a projection has ``plasticity``: for each plastic
  projection ``NAME``, its final weights as a synapse list ``NAME.pre``, ``NAME.post``,
  ``NAME.weight`` (a dense layout lists every pair of its connectivity) and, when ``[record]
  weights`` traces it, ``NAME.trace.times_ms``, ``NAME.trace.values`` (samples first) and
  ``NAME.trace.synapses`` (the recorded ``[pre, post]`` pairs; absent when the whole stored
  array is recorded); ``projections`` lists the names. ``weights.png`` overlays the histograms of
  each plastic projection's weights before (the network's initial weights) and after the run.

Compilation is timed apart from the run with ahead-of-time lowering, and the run is timed to
completion (``block_until_ready``), so ``run_s`` is simulation only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from ._preflight import fmt_bytes

EXIT_INVALID = 2
"""Exit code for invalid input (arguments, config), as argparse uses."""
EXIT_FAILED = 1
"""Exit code for a simulation that ran but failed (e.g. non-finite state)."""


def _positive_ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration in ms; got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of ms; got {text!r}")
    return value


def _seed(text: str) -> int:
    from ._config import SEED_RANGE, max_seed

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0; got {value}")
    if value > max_seed():
        raise argparse.ArgumentTypeError(
            f"must be at most {max_seed()} ({SEED_RANGE}); got {value}"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(
        prog="brainsim",
        description="brainsim: differentiable spiking-network simulation in JAX.",
    )
    parser.add_argument("--version", action="version", version=f"brainsim {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = commands.add_parser(
        "run",
        help="simulate a network described by a TOML config",
        description="Simulate a network described by a TOML config, print a summary and "
        "write spikes.npz, summary.json and raster.png.",
        epilog="Without CONFIG the embedded default runs: the 4000-neuron COBA benchmark "
        "(configs/coba.toml).",
    )
    run.add_argument(
        "config",
        nargs="?",
        metavar="CONFIG.toml",
        help="experiment config (default: the embedded COBA benchmark)",
    )
    run.add_argument(
        "--out",
        default="out",
        metavar="DIR",
        help="output folder, created if needed (default: ./out)",
    )
    run.add_argument(
        "--seed",
        type=_seed,
        metavar="N",
        help="seed for connectivity and simulation (overrides [simulation] seed)",
    )
    run.add_argument(
        "--duration",
        type=_positive_ms,
        metavar="MS",
        help="simulated time in ms (overrides [simulation] duration_ms)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``brainsim`` command; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error (already printed)
        return int(e.code or 0)
    if args.command == "run":
        return _run(args)
    return EXIT_INVALID  # unreachable: argparse requires a known command


def _error(message: str, code: int) -> int:
    print(f"brainsim run: error: {message}", file=sys.stderr)
    return code


def _run(args) -> int:
    import jax

    from ._config import ConfigError, build_config, parse_toml, read_config_text
    from ._preflight import PreflightError, check_config_size

    t = time.perf_counter()
    jax.devices()  # start the backend here so that its start-up is not counted as build time
    startup_s = time.perf_counter() - t
    t = time.perf_counter()
    try:
        text, source = read_config_text(args.config)
        data = parse_toml(text, source)
        check_config_size(data, source)  # before building: a huge network never starts
        experiment = build_config(data, source=source, seed=args.seed, duration_ms=args.duration)
    except (ConfigError, PreflightError) as e:
        return _error(str(e), EXIT_INVALID)
    except MemoryError:
        return _error(
            f"{source}: the network does not fit in memory; make it smaller (population "
            "sizes, connection probabilities or degrees, a builder's n_neurons or scale).",
            EXIT_INVALID,
        )
    build_s = time.perf_counter() - t
    out = Path(args.out)

    from ._compile import jit
    from ._errors import SimulationError
    from ._monitors import PopulationRate, SpikeRaster
    from ._plan import host_plan
    from ._simulate import _run_jit, prepare

    network = experiment.network
    names = [p.name for p in network.populations]
    record = list(experiment.record)
    rasters = [m for m in record if isinstance(m, SpikeRaster)]
    spiking = {n for m in rasters for n in m.names(network)}
    unrecorded = tuple(n for n in names if n not in spiking)
    if unrecorded:  # rates are always reported: count spikes of the other populations
        record.append(PopulationRate(unrecorded))
    try:
        _check_resources(experiment, record, spiking, out)
    except PreflightError as e:
        return _error(str(e), EXIT_INVALID)

    t = time.perf_counter()
    # One compiled call instead of dozens of eager ones (same values, bit for bit).
    state = jax.block_until_ready(jit(lambda net, k: net.init(k))(network, experiment.key()))
    args_ = prepare(network, experiment.duration_ms, state=state, record=record)
    init_s = time.perf_counter() - t
    t = time.perf_counter()
    # As simulate does: the plan merged on the host with NumPy and passed in (merged inside
    # the traced program it compiled several times longer: 3.8 s instead of 0.5 s of XLA for
    # Potjans-Diesmann 0.1), its time counted with the lowering.
    args_ = (*args_, None, 1, host_plan(network))
    lowered = _run_jit.lower(*args_)
    lower_s = time.perf_counter() - t
    t = time.perf_counter()
    compiled = lowered.compile()
    xla_s = time.perf_counter() - t
    t = time.perf_counter()
    result = compiled(*args_)
    jax.block_until_ready(result)
    run_s = time.perf_counter() - t
    try:
        result.raise_if_failed()
    except SimulationError as e:
        return _error(f"the simulation failed: {e}", EXIT_FAILED)

    monitors = result.monitors
    spikes = _spike_arrays(result, result.population_names, spiking)
    summary = _summary(
        experiment,
        result,
        spiking,
        spikes,
        monitors,
        dict(
            build_s=build_s,
            startup_s=startup_s,
            init_s=init_s,
            lower_s=lower_s,
            xla_compile_s=xla_s,
            compile_s=lower_s + xla_s,
            run_s=run_s,
        ),
    )
    t = time.perf_counter()
    try:
        files = _write(out, experiment, result, spiking, spikes, summary)
        summary["write_s"] = time.perf_counter() - t  # spikes.npz and plots, matplotlib too
        summary["files"] = [str(f) for f in files]
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    except OSError as e:
        return _error(
            f"the run finished but writing its results to --out {str(out)!r} failed "
            f"({e.strerror or e}); free some space or choose another folder and run again.",
            EXIT_FAILED,
        )
    print(_report(summary))
    return 0


def _check_resources(experiment, record, spiking, out: Path) -> None:
    """Before the state is allocated or anything compiled: the state, recordings and spike
    lists fit in memory, and the output folder is writable with room for the results."""
    import jax

    from ._preflight import check_output_folder, check_run_memory

    network, n_steps = experiment.network, experiment.n_steps
    state = jax.eval_shape(network.init, experiment.key())
    state_bytes = sum(
        x.size * x.dtype.itemsize
        for x in jax.tree.leaves(state)
        if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
    )
    check_run_memory(network, record, n_steps, state_bytes, spiking)
    check_output_folder(out, sum(m.nbytes(network, n_steps) for m in record))


# ----------------------------------------------------------------------------- results


def _spike_arrays(result, names, spiking):
    offsets = np.concatenate([[0], np.cumsum(result.population_sizes)]).astype(np.int64)
    times, ids = [], []
    for i, name in enumerate(names):
        if name in spiking:
            t, n = result.spikes(name)
            times.append(t)
            ids.append(n + offsets[i])
    times = np.concatenate(times) if times else np.zeros(0)
    ids = np.concatenate(ids).astype(np.int64) if ids else np.zeros(0, np.int64)
    order = np.lexsort((ids, times))
    return times[order], ids[order], offsets


def _nan_to_none(x):
    return None if x is None or not math.isfinite(x) else float(x)


def _machine():
    import platform

    import jax

    devices = jax.devices()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax_version": jax.__version__,
        "jax_backend": jax.default_backend(),
        "devices": [getattr(d, "device_kind", str(d)) for d in devices],
    }


def _kernels() -> str:
    """Which kernels ran: ``"native CPU (jaxlib X)"``, ``"jnp reference: <why>"``, Pallas."""
    import jax

    from . import kernels

    return kernels.auto_implementation(jax.default_backend())


def _summary(experiment, result, spiking, spikes, monitors, timings):
    from . import analysis
    from ._version import __version__

    network = experiment.network
    neurons = [p for p in network.populations if not p.is_source]
    times, ids, offsets = spikes
    rates, cvs, counts = {}, {}, {}
    for i, p in enumerate(network.populations):
        counts[p.name] = int(result.spike_counts(p.name).sum())
        rates[p.name] = counts[p.name] / (p.size * result.duration * 1e-3)
        if p.name in spiking:
            sel = (ids >= offsets[i]) & (ids < offsets[i + 1])
            cvs[p.name] = _nan_to_none(analysis.isi_cv(times[sel], ids[sel] - offsets[i], p.size))
        else:
            cvs[p.name] = None
    n_neurons = sum(p.size for p in neurons)
    network_rate = (
        sum(counts[p.name] for p in neurons) / (n_neurons * result.duration * 1e-3)
        if n_neurons
        else None
    )
    network_cv = None
    if neurons and all(p.name in spiking for p in neurons):
        index = {p.name: i for i, p in enumerate(network.populations)}
        keep = np.zeros(ids.shape, bool)
        for p in neurons:
            keep |= (ids >= offsets[index[p.name]]) & (ids < offsets[index[p.name] + 1])
        network_cv = _nan_to_none(analysis.isi_cv(times[keep], ids[keep], int(offsets[-1])))
    duration_s = result.duration * 1e-3
    return {
        "config": experiment.source,
        "description": experiment.description,
        "seed": experiment.seed,
        "duration_ms": result.duration,
        "dt_ms": result.dt,
        "timing": network.timing.describe(),
        "n_steps": result.n_steps,
        "n_neurons": network.n_neurons,
        "n_synapses": network.n_synapses,
        "populations": {
            p.name: {"size": p.size, "model": type(p.model).__name__, "source": p.is_source}
            for p in network.populations
        },
        "projections": {p.name: p.connectivity.n_synapses for p in network.projections},
        "plastic_weights": _weight_summary(network, result),
        "n_spikes": counts,
        "rates_hz": rates,
        "rate_hz_network": network_rate,
        "cv_isi": cvs,
        "cv_isi_network": network_cv,
        "recording": {
            "monitors": [m.describe(network, result.n_steps) for m in monitors],
            "bytes": int(sum(m.nbytes(network, result.n_steps) for m in monitors)),
        },
        **{k: float(v) for k, v in timings.items()},
        "simulated_over_wall": duration_s / timings["run_s"],
        "brainsim_version": __version__,
        "kernels": _kernels(),
        "machine": _machine(),
    }


def _weight_summary(network, result) -> dict:
    """Final weights of each plastic projection: synapse count, mean, min and max."""
    stats = {}
    for proj in network.projections:
        if proj.plasticity is None:
            continue
        w = _final_synapses(proj, result.state.plasticity[proj.name].weights)[2]
        stats[proj.name] = {
            "n_synapses": int(w.size),
            "mean": float(w.mean()) if w.size else None,
            "min": float(w.min()) if w.size else None,
            "max": float(w.max()) if w.size else None,
        }
    return stats


def _write(out: Path, experiment, result, spiking, spikes, summary) -> list[Path]:
    from ._monitors import StateTrace

    names = list(result.population_names)
    times, ids, offsets = spikes
    files = [out / "spikes.npz", out / "summary.json"]
    np.savez_compressed(
        files[0],
        times_ms=times,
        ids=ids,
        population_names=np.array(names),
        population_offsets=offsets,
        population_sizes=np.array(result.population_sizes),
        recorded=np.array([n in spiking for n in names]),
        dt_ms=result.dt,
        duration_ms=result.duration,
    )
    from matplotlib.figure import Figure  # no pyplot: works headless, leaves no global state

    from . import plotting

    sources = dict(zip(names, result.population_is_source, strict=True))
    # Spike sources are the inputs, not the network's activity: drawn only when nothing else
    # spiked, in network order (anatomical for Potjans-Diesmann: L2/3 on top).
    shown = [n for n in names if n in spiking and not sources[n]] or [
        n for n in names if n in spiking
    ]
    if shown:
        fig = Figure(figsize=(10, 6), layout="constrained")
        ax, _ = plotting.raster(
            result, shown, rate_panel=True, bin_ms=_rate_bin_ms(result), ax=fig.add_subplot()
        )
        ax.set_title(_title(experiment, summary, shown), fontsize="medium")
        fig.savefig(out / "raster.png", dpi=120)
        files.append(out / "raster.png")
    traces = [m for m in result.monitors if isinstance(m, StateTrace)]
    if traces:
        arrays = {}
        fig = Figure(figsize=(10, 2.5 * len(traces)), layout="constrained")
        axes = fig.subplots(len(traces), 1, squeeze=False)[:, 0]
        for m, ax in zip(traces, axes, strict=True):
            t, values = result.trace(m.population, m.variable)
            key = f"{m.population}.{m.variable}"
            size = result.population_sizes[names.index(m.population)]
            recorded = list(range(size)) if m.neurons is None else list(m.neurons)
            arrays[f"{key}.times_ms"] = t
            arrays[f"{key}.values"] = values
            arrays[f"{key}.neurons"] = np.asarray(recorded, np.int64)
            # At most 10 lines per panel stay readable; traces.npz has them all.
            plotting.voltage_traces(
                result,
                m.population,
                m.variable,
                recorded[:10],
                ax=ax,
                lw=0.8,
                unit=_TRACE_UNITS.get(m.variable),
            )
            ax.set_title(
                f"{m.population}: {m.variable} of {min(10, len(recorded))} of {len(recorded)} recorded neurons"
            )
        np.savez_compressed(out / "traces.npz", **arrays)
        fig.savefig(out / "traces.png", dpi=120)
        files += [out / "traces.npz", out / "traces.png"]
    plastic = [p for p in experiment.network.projections if p.plasticity is not None]
    if plastic:
        files += _write_weights(out, plastic, result, experiment)
    return files


def _final_synapses(proj, stored):
    """``(pre, post, weight)`` of every synapse of a plastic projection from its stored weights
    (in the projection's storage: Dense, ELL or CSR)."""
    pre, post, valid = proj.synapses.pairs()
    return pre[valid], post[valid], np.asarray(stored)[valid]


def _write_weights(out: Path, plastic, result, experiment) -> list[Path]:
    from matplotlib.figure import Figure

    from . import plotting
    from ._monitors import WeightTrace

    arrays: dict[str, np.ndarray] = {"projections": np.array([p.name for p in plastic])}
    fig = Figure(figsize=(6, 2.5 * len(plastic)), layout="constrained")
    axes = fig.subplots(len(plastic), 1, squeeze=False)[:, 0]
    for proj, ax in zip(plastic, axes, strict=True):
        pre, post, weight = _final_synapses(proj, result.state.plasticity[proj.name].weights)
        arrays[f"{proj.name}.pre"] = pre.astype(np.int64)
        arrays[f"{proj.name}.post"] = post.astype(np.int64)
        arrays[f"{proj.name}.weight"] = weight
        initial = _final_synapses(proj, proj.connectivity.weights)[2]
        plotting.weights(
            initial,
            weight,
            ax=ax,
            unit=_weight_unit(experiment.network, proj),
            title=f"{proj.name}: weights before and after {result.duration:g} ms",
        )
    for m in result.monitors:
        if isinstance(m, WeightTrace):
            times, values = result.weight_trace(m.projection)
            arrays[f"{m.projection}.trace.times_ms"] = times
            arrays[f"{m.projection}.trace.values"] = values
            if m.synapses is not None:
                arrays[f"{m.projection}.trace.synapses"] = np.asarray(m.synapses, np.int64)
    np.savez_compressed(out / "weights.npz", **arrays)
    fig.savefig(out / "weights.png", dpi=120)
    return [out / "weights.npz", out / "weights.png"]


def _title(experiment, summary, shown) -> str:
    """The config, seed and mean rate of each drawn population, in lines that fit the figure
    (broken between populations, never inside one)."""
    source = "default config" if experiment.source == "<default>" else Path(experiment.source).name
    lines = [f"{source}, seed {experiment.seed}:"]
    for n in shown:
        entry = f"{n} {summary['rates_hz'][n]:.1f} Hz"
        if len(lines[-1]) + len(entry) > 110:
            lines.append(entry)
        else:
            lines[-1] += f" {entry}" if lines[-1].endswith(":") else f", {entry}"
    return "\n".join(lines)


def _rate_bin_ms(result) -> float:
    """A rate-panel bin of about 1/100 of the run, a whole number of steps, at least 1 step."""
    steps = max(1, round(result.duration / 100.0 / result.dt))
    return steps * result.dt


# Units of the state variables a config may trace (brainsim's units: mV, pA, nS, ms).
_TRACE_UNITS = {"v": "mV", "w": "pA", "I_syn": "pA", "g": "nS"}


def _weight_unit(network, proj) -> str | None:
    """nS onto a conductance-based receptor, pA onto a current-based one."""
    from ._synapses.outputs import ConductanceBased, CurrentBased

    output = network.population(proj.post).receptors[proj.receptor].output
    return {ConductanceBased: "nS", CurrentBased: "pA"}.get(type(output))


def _report(s: dict) -> str:
    pops = s["populations"]
    neurons = [n for n, p in pops.items() if not p["source"]]
    sources = [n for n, p in pops.items() if p["source"]]
    source = "embedded default (configs/coba.toml)" if s["config"] == "<default>" else s["config"]
    lines = [f"brainsim {s['brainsim_version']} | {source} | seed {s['seed']}"]
    if s["description"]:
        lines.append(f"  {s['description']}")
    sizes = ", ".join(f"{n} {pops[n]['size']}" for n in neurons)
    net = f"network:   {s['n_neurons']:,} neurons ({sizes})"
    if sources:
        net += f" + {sum(pops[n]['size'] for n in sources):,} source channels"
    lines.append(f"{net}, {s['n_synapses']:,} synapses in {len(s['projections'])} projections")
    lines.append(
        f"run:       {s['duration_ms']:g} ms in {s['n_steps']:,} steps of "
        f"{s['dt_ms']:g} ms ({s['timing']} timing) on {s['machine']['jax_backend']} "
        f"({s['machine']['cpu_count']} CPUs)"
    )
    lines.append(f"kernels:   {s['kernels']}")
    lines.append(
        f"recorded:  {'; '.join(s['recording']['monitors'])} "
        f"(total {fmt_bytes(s['recording']['bytes'])})"
    )
    width = max(len(n) for n in [*pops, "network"])
    lines.append(
        f"  {'population':<{max(width, 10)}}  {'size':>7}  {'rate (Hz)':>9}  {'ISI CV':>6}"
    )

    def row(name, size, rate, cv):
        cv_text = "n/a" if cv is None else f"{cv:.2f}"
        rate_text = "n/a" if rate is None else f"{rate:.2f}"
        return f"  {name:<{max(width, 10)}}  {size:>7,}  {rate_text:>9}  {cv_text:>6}"

    for n in pops:
        lines.append(row(n, pops[n]["size"], s["rates_hz"][n], s["cv_isi"][n]))
    if len(neurons) > 1:
        lines.append(row("network", s["n_neurons"], s["rate_hz_network"], s["cv_isi_network"]))
    if any(v is None for v in s["cv_isi"].values()):
        lines.append("  (ISI CV n/a: spikes not recorded, or no neuron with >= 3 spikes)")
    for i, (name, w) in enumerate(s["plastic_weights"].items()):
        if w["n_synapses"]:
            lines.append(
                f"{'weights:' if i == 0 else '':<11}{name}: {w['n_synapses']:,} plastic synapses, "
                f"final mean {w['mean']:.4g} (min {w['min']:.4g}, max {w['max']:.4g})"
            )
    lines.append(
        f"time:      JAX start-up {s['startup_s']:.2f} s | build {s['build_s']:.2f} s | "
        f"state init {s['init_s']:.2f} s"
    )
    lines.append(
        f"           compile {s['compile_s']:.2f} s (trace+lower {s['lower_s']:.2f} s, "
        f"XLA {s['xla_compile_s']:.2f} s) | run {s['run_s']:.2f} s"
    )
    lines.append(
        f"speed:     simulated/wall = {s['simulated_over_wall']:.2f} "
        f"({'faster' if s['simulated_over_wall'] >= 1 else 'slower'} than real time)"
    )
    lines.append(f"wrote:     {', '.join(s['files'])} ({s['write_s']:.1f} s)")
    return "\n".join(lines)
