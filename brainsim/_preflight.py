"""What ``brainsim run`` checks before it builds, compiles or runs anything.

That the network and its recordings fit in memory and that the output folder takes the
results. The sizes are estimates, not measurements: they catch the run that cannot work (a
config asking for 10^17 synapses, a duration whose recordings need terabytes, a read-only or
full output folder) with one clear message, instead of an out-of-memory kill, or a traceback
after the whole run. Each check raises :class:`PreflightError` saying what is needed, what is
there and what to change.
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from pathlib import Path

BYTES_PER_SYNAPSE = 32
"""Peak memory per synapse while a projection is built: the synapse list (indices, weights,
delays) and its layout side by side (33 B measured on COBA 8k)."""
BYTES_PER_NEURON = 64
"""Memory per neuron of a built network: parameters and state (24 B for a LIF with two
receptors; more for larger models)."""
OUTPUT_OVERHEAD = 1_000_000
"""Bytes the output folder needs beyond the recordings: plots and ``summary.json``."""


class PreflightError(ValueError):
    """A run that cannot work as asked; the message says why and what to change."""


def fmt_bytes(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def available_memory() -> int | None:
    """Bytes this process can still allocate: ``MemAvailable`` (Linux) or the free physical
    memory, capped by the cgroup's limit (containers); ``None`` where unknown."""
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            pass
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            free = int(Path(limit).read_text()) - int(Path(usage).read_text())
        except (OSError, ValueError):  # no such cgroup, or no limit ("max")
            continue
        available = free if available is None else min(available, free)
        break
    return available


# ------------------------------------------------------------------------------ the network


def check_config_size(data: dict, source: str) -> None:
    """Refuse a config whose network cannot be built in the available memory, judged from
    the parsed TOML (population sizes and the expected synapse count of each projection)
    before anything is built."""
    size = config_size(data)
    available = available_memory()
    if size is None or available is None:
        return
    n_neurons, n_synapses = size
    need = n_neurons * BYTES_PER_NEURON + n_synapses * BYTES_PER_SYNAPSE
    if need > available:
        raise PreflightError(
            f"{source}: building this network needs about {fmt_bytes(need)} of memory "
            f"({n_neurons:,} neurons, about {n_synapses:,.0f} synapses) but {fmt_bytes(available)} "
            "is available; make it smaller (population sizes, connection probabilities or "
            "degrees, a builder's n_neurons or scale)."
        )


def config_size(data: dict) -> tuple[int, float] | None:
    """Neurons and expected synapses of a parsed config without building it; ``None`` when
    the config is not well formed (building it will say what is wrong)."""
    try:
        if "network" in data:
            return _builder_size(data["network"])
        sizes = {name: int(spec["size"]) for name, spec in data["populations"].items()}
        synapses = sum(
            _expected_synapses(p["connect"], sizes[p["pre"]], sizes[p["post"]])
            for p in data.get("projections", [])
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return sum(sizes.values()), float(synapses)


def _expected_synapses(connect: dict, n_pre: int, n_post: int) -> float:
    """The mean synapse count of a ``connect`` table of the config (0 for an unknown type)."""
    kind = connect["type"]
    if kind == "fixed_probability":
        return float(connect["p"]) * n_pre * n_post
    if kind == "all_to_all":
        return n_pre * n_post
    if kind == "one_to_one":
        return n_pre
    if kind in ("fixed_indegree", "fixed_outdegree"):
        return int(connect["k"]) * (n_post if kind == "fixed_indegree" else n_pre)
    if kind == "fixed_total_number":
        return int(connect["n_synapses"])
    if kind == "from_arrays":
        return len(connect["pre"])
    return 0.0


def _builder_size(spec: dict) -> tuple[int, float] | None:
    """Neurons and synapses of a ``[network]`` builder of :mod:`brainsim.networks`."""
    from . import networks

    name = spec["builder"]
    if name not in ("coba", "cuba", "cobahh", "potjans_diesmann"):
        return None
    parameters = inspect.signature(getattr(networks, name)).parameters
    args = {**{k: p.default for k, p in parameters.items()}, **spec}
    if name == "potjans_diesmann":
        params = networks.potjans_diesmann_parameters(scale=args["scale"], k_scale=args["k_scale"])
        return int(params.sizes.sum()), float(params.n_synapses.sum())
    n = int(args["n_neurons"])
    return n, float(args["p"]) * n * n


# ------------------------------------------------------------------------------ the run


def check_run_memory(network, monitors, n_steps: int, state_bytes: int, listed) -> None:
    """Refuse a run whose recordings, state and spike lists (``listed``: the populations
    whose spikes are listed from a raster, a byte per neuron and step at a time) cannot fit
    in the available memory."""
    available = available_memory()
    if available is None:
        return
    recordings = sum(m.nbytes(network, n_steps) for m in monitors)
    unpacked = max((n_steps * network.population(n).size for n in listed), default=0)
    need = recordings + unpacked + state_bytes
    if need > available:
        raise PreflightError(
            f"the run needs about {fmt_bytes(need)} of memory ({fmt_bytes(recordings)} of "
            f"recordings for {n_steps:,} steps, {fmt_bytes(unpacked)} to list the spikes of "
            f"the largest population, {fmt_bytes(state_bytes)} of state) but "
            f"{fmt_bytes(available)} is available; shorten --duration, record fewer spikes "
            "([record] spikes = [...] or false), or run it from Python with brainsim.run_long, "
            "which streams the recordings to disk."
        )


def check_output_folder(out: Path, need: int) -> None:
    """Create ``out``, write a probe file in it, and check it has ``need`` bytes free (plus
    :data:`OUTPUT_OVERHEAD`)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PreflightError(f"cannot create the output folder --out {str(out)!r}: {e}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".brainsim-probe-", dir=out)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(b"brainsim")
        finally:
            os.unlink(probe)
    except OSError as e:
        raise PreflightError(
            f"cannot write to the output folder --out {str(out)!r} ({e.strerror or e}); "
            "choose a folder you can write to."
        ) from None
    need += OUTPUT_OVERHEAD
    free = shutil.disk_usage(out).free
    if need > free:
        raise PreflightError(
            f"the output folder --out {str(out)!r} has {fmt_bytes(free)} free but the results "
            f"need about {fmt_bytes(need)} (the recordings and plots); free some space, choose "
            "another folder, or shorten --duration."
        )
