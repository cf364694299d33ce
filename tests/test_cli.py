"""`brainsim run`: outputs, their consistency with the library, and clean failures."""

import contextlib
import errno
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from brainsim import analysis, kernels, networks
from brainsim._config import load_config
from brainsim.cli import main

ROOT = Path(__file__).resolve().parents[1]
COBA = ROOT / "configs" / "coba.toml"

SMALL = """\
[simulation]
duration_ms = 30.0
dt_ms = 0.1
seed = 4

[populations.E]
size = 60
model = "LIF"
params = { C_m = 200.0, tau_m = 20.0, E_L = -60.0, V_th = -50.0, V_reset = -60.0, I_e = 260.0 }
initial = { v = { uniform = [-60.0, -50.0] } }
receptors.exc = { kinetics = { type = "ExponentialSynapse", tau = 5.0 }, output = "CurrentBased" }

[populations.I]
size = 15
model = "LIF"
params = { C_m = 200.0, tau_m = 20.0, E_L = -60.0, V_th = -50.0, V_reset = -60.0 }
receptors.exc = { kinetics = { type = "ExponentialSynapse", tau = 5.0 }, output = "CurrentBased" }

[[projections]]
pre = "E"
post = "I"
receptor = "exc"
connect = { type = "fixed_probability", p = 0.3, weight = 40.0, delay = 1.0 }
"""

SUMMARY_KEYS = {
    "config", "description", "seed", "duration_ms", "dt_ms", "n_steps", "n_neurons",
    "n_synapses", "populations", "projections", "n_spikes", "rates_hz", "rate_hz_network",
    "cv_isi", "cv_isi_network", "recording", "build_s", "startup_s", "init_s", "lower_s",
    "xla_compile_s", "compile_s", "run_s", "write_s", "simulated_over_wall", "brainsim_version",
    "kernels", "machine", "files",
}


def run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def read(out: Path):
    summary = json.loads((out / "summary.json").read_text())
    with np.load(out / "spikes.npz") as f:
        spikes = {k: f[k] for k in f.files}
    return summary, spikes


@pytest.fixture(scope="module")
def coba_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("coba")
    code = main(["run", str(COBA), "--duration", "50", "--out", str(out)])
    return code, out


def test_run_coba_writes_consistent_outputs(coba_run, capsys):
    code, out = coba_run
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"spikes.npz", "summary.json", "raster.png"}
    assert (out / "raster.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary, spikes = read(out)
    assert SUMMARY_KEYS <= set(summary)
    assert summary["config"] == str(COBA) and summary["seed"] == 0
    assert (summary["duration_ms"], summary["dt_ms"], summary["n_steps"]) == (50.0, 0.1, 500)
    assert summary["n_neurons"] == 4000
    assert summary["n_synapses"] == networks.coba(seed=0).n_synapses
    assert {"platform", "jax_backend", "cpu_count", "jax_version"} <= set(summary["machine"])
    assert summary["kernels"] == kernels.native_cpu_status()  # "native CPU (jaxlib ...)" here
    assert summary["compile_s"] > 0 and summary["run_s"] > 0
    assert summary["simulated_over_wall"] == pytest.approx(0.05 / summary["run_s"])
    assert summary["recording"]["bytes"] == 500 * 4000 // 8  # one bit per neuron and step

    names = list(spikes["population_names"])
    offsets = spikes["population_offsets"]
    assert names == ["E", "I"] and offsets.tolist() == [0, 3200, 4000]
    times, ids = spikes["times_ms"], spikes["ids"]
    assert np.all(np.diff(times) >= 0)
    assert times.min() >= 0 and times.max() < 50.0
    for i, name in enumerate(names):
        mine = (ids >= offsets[i]) & (ids < offsets[i + 1])
        size = offsets[i + 1] - offsets[i]
        assert summary["n_spikes"][name] == mine.sum() > 0
        assert summary["rates_hz"][name] == pytest.approx(mine.sum() / size / 0.05)
        assert summary["cv_isi"][name] == pytest.approx(
            analysis.isi_cv(times[mine], ids[mine] - offsets[i], int(size)))
    assert summary["cv_isi_network"] == pytest.approx(analysis.isi_cv(times, ids, 4000))


def test_default_config_is_coba(coba_run, tmp_path, capsys):
    # No CONFIG argument runs the embedded copy of configs/coba.toml: the very same spikes.
    code, out = run(["run", "--duration", "50", "--out", str(tmp_path)], capsys)[0], tmp_path
    assert code == 0
    summary, spikes = read(out)
    assert summary["config"] == "<default>"
    _, reference = read(coba_run[1])
    np.testing.assert_array_equal(spikes["times_ms"], reference["times_ms"])
    np.testing.assert_array_equal(spikes["ids"], reference["ids"])


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """``brainsim run small.toml``: (folder, config, exit code, stdout, stderr)."""
    folder = tmp_path_factory.mktemp("small")
    config = folder / "small.toml"
    config.write_text(SMALL)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["run", str(config), "--out", str(folder / "o")])
    return folder, config, code, stdout.getvalue(), stderr.getvalue()


def test_printed_summary(small_run):
    folder, config, code, stdout, stderr = small_run
    assert code == 0 and stderr == ""
    summary, spikes = read(folder / "o")
    assert "75 neurons (E 60, I 15)" in stdout
    assert f"{summary['n_synapses']:,} synapses in 1 projections" in stdout
    assert "SpikeRaster ['E', 'I']" in stdout
    for name in ("E", "I"):
        line = next(row for row in stdout.splitlines() if row.split()[:1] == [name])
        assert f"{summary['rates_hz'][name]:.2f}" in line
    for word in ("compile", "run", "simulated/wall", "spikes.npz"):
        assert word in stdout
    assert f"kernels:   {summary['kernels']}\n" in stdout

    # The CLI's spikes are exactly those of the library's simulate() on the same config.
    result = load_config(config).simulate()
    times, ids = [], []
    for offset, name in zip(spikes["population_offsets"], ("E", "I"), strict=False):
        t, i = result.spikes(name)
        times.append(t)
        ids.append(i + offset)
    times, ids = np.concatenate(times), np.concatenate(ids)
    order = np.lexsort((ids, times))
    assert times.size > 0
    np.testing.assert_array_equal(spikes["times_ms"], times[order])
    np.testing.assert_array_equal(spikes["ids"], ids[order])


def test_seed_and_traces(small_run, tmp_path, capsys):
    config = tmp_path / "small.toml"
    config.write_text(SMALL + '\n[record]\nspikes = ["E"]\n'
                      'traces = [ { population = "I", variable = "v", every = 5 } ]\n')
    assert run(["run", str(config), "--seed", "5", "--out", str(tmp_path)], capsys)[0] == 0
    a, spikes_a = read(small_run[0] / "o")
    b, spikes_b = read(tmp_path)
    assert (a["seed"], b["seed"]) == (4, 5)
    # p = 0.3 over 900 pairs: the two seeds' synapse counts differ for all practical purposes.
    assert a["n_synapses"] != b["n_synapses"]
    assert spikes_b["recorded"].tolist() == [True, False]
    assert spikes_b["ids"].size > 0 and np.all(spikes_b["ids"] < 60)
    # I is not in the raster, but its rate is still counted; its ISI CV is not available.
    assert b["n_spikes"]["I"] >= 0 and b["cv_isi"]["I"] is None
    with np.load(tmp_path / "traces.npz") as f:
        assert f["I.v.values"].shape == (60, 15)  # 300 steps sampled every 5
        np.testing.assert_allclose(f["I.v.times_ms"], np.arange(60) * 0.5, atol=1e-9)
        assert f["I.v.neurons"].tolist() == list(range(15))
    assert (tmp_path / "traces.png").read_bytes()[:4] == b"\x89PNG"


def test_failed_simulation_exits_1(tmp_path, capsys):
    # Forward Euler with dt = 10 tau_m is unstable; with an infinite threshold nothing resets
    # the membrane, which overflows to inf and then NaN.
    config = tmp_path / "unstable.toml"
    old = "tau_m = 20.0, E_L = -60.0, V_th = -50.0, V_reset = -60.0, I_e = 260.0"
    new = ('tau_m = 0.01, E_L = -60.0, V_th = inf, V_reset = -60.0, I_e = 260.0, '
           'integrator = "Euler"')
    assert old in SMALL
    config.write_text(SMALL.replace(old, new))
    code, stdout, stderr = run(["run", str(config), "--out", str(tmp_path)], capsys)
    assert code == 1
    assert "error: the simulation failed: Non-finite state" in stderr
    assert "population 'E'" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize(("args", "message"), [
    (["run", "missing.toml"], "missing.toml: no such config file"),
    (["run", "--duration", "-5"], "argument --duration: must be a positive number of ms"),
    (["run", "--duration", "abc"], "argument --duration: expected a duration in ms"),
    (["run", "--duration", "nan"], "argument --duration: must be a positive number of ms"),
    (["run", "--duration", "0.05"], "duration (--duration): expected a positive whole number"),
    (["run", "--seed", "-1"], "argument --seed: must be >= 0"),
    (["run", "--seed", "x"], "argument --seed: expected an integer >= 0"),
    (["run", "--seed", str(2**64)], "argument --seed: must be at most 4294967295 (JAX's random "
                                    "keys take seeds below 2**32, or 2**63 with jax_enable_x64); "
                                    f"got {2**64}"),
    (["run", "--seed", str(2**32)], "argument --seed: must be at most 4294967295"),
    (["run", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["walk"], "invalid choice: 'walk'"),
    ([], "the following arguments are required: COMMAND"),
])
def test_invalid_input_exits_2_without_traceback(args, message, tmp_path, capsys):
    code, stdout, stderr = run([*args, "--out", str(tmp_path)] if args[:1] == ["run"] else args,
                               capsys)
    assert code == 2
    assert message in stderr, stderr
    assert "Traceback" not in stderr


def test_config_error_names_key_path(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text(SMALL.replace("tau_m = 20.0, E_L", "tau_mm = 20.0, E_L", 1))
    code, _, stderr = run(["run", str(config), "--out", str(tmp_path)], capsys)
    assert code == 2
    assert (f"brainsim run: error: {config}: populations.E.params.tau_mm: unknown argument "
            "'tau_mm' of LIF. Did you mean 'tau_m'?") in stderr


def test_output_folder_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, stderr = run(["run", "--out", str(blocker), "--duration", "1"], capsys)
    assert code == 2 and "cannot create the output folder" in stderr


def test_help(capsys):
    code, stdout, _ = run(["--help"], capsys)
    assert code == 0 and "run" in stdout and "usage: brainsim" in stdout
    code, stdout, _ = run(["run", "--help"], capsys)
    assert code == 0
    for word in ("CONFIG.toml", "--out DIR", "--seed N", "--duration MS", "default"):
        assert word in stdout


def test_module_and_console_script(tmp_path):
    # A real process: exit status 2 and a one-line message, no traceback.
    proc = subprocess.run([sys.executable, "-m", "brainsim", "run", str(tmp_path / "no.toml")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    missing = tmp_path / "no.toml"
    assert proc.stderr.strip() == f"brainsim run: error: {missing}: no such config file."
    script = shutil.which("brainsim", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the `brainsim` console script is not installed next to this Python")
    proc = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "usage: brainsim" in proc.stdout


# ------------------------------------------------------------------------------ preflight


@pytest.fixture
def nothing_compiles(monkeypatch):
    """Make initialising the state or compiling the run fail the test: refusals must come
    before either."""
    import brainsim._compile
    import brainsim._simulate

    def compiled(*args, **kwargs):
        raise AssertionError("the CLI initialised or compiled before refusing")

    monkeypatch.setattr(brainsim._compile, "jit", compiled)
    monkeypatch.setattr(brainsim._simulate, "_run_jit", compiled)


def refused(argv, capsys):
    """Run ``argv``; return its one-line error message (exit status 2, no traceback)."""
    code, stdout, stderr = run(argv, capsys)
    assert code == 2, stderr
    assert "Traceback" not in stderr and len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("brainsim run: error: ")
    return stderr.strip()


def test_seed_in_the_config_is_range_checked(tmp_path, capsys):
    config = tmp_path / "seed.toml"
    config.write_text(SMALL.replace("seed = 4", f"seed = {2**32}"))
    assert (f"{config}: simulation.seed: expected a seed from 0 to 4294967295 (JAX's random keys "
            f"take seeds below 2**32, or 2**63 with jax_enable_x64); got {2**32}."
            ) in refused(["run", str(config), "--out", str(tmp_path)], capsys)


def test_recordings_beyond_memory_are_refused_before_compiling(tmp_path, capsys,
                                                              nothing_compiles):
    # COBA for 1e9 ms: 1e10 steps, a 5 TB spike raster.
    message = refused(["run", "--duration", "1e9", "--out", str(tmp_path / "o")], capsys)
    assert re.fullmatch(
        r"brainsim run: error: the run needs about [\d.]+ TB of memory \(5\.0 TB of recordings "
        r"for 10,000,000,000 steps, [\d.]+ TB to list the spikes of the largest population, "
        r"[\d.]+ kB of state\) but [\d.]+ [kMGT]?B is available; shorten --duration, record "
        r"fewer spikes \(\[record\] spikes = \[...\] or false\), or run it from Python with "
        r"brainsim.run_long, which streams the recordings to disk.", message), message


# E -> I with p = 0.3 between two populations of 10^9 neurons: 3e17 synapses expected.
HUGE = SMALL.replace("size = 60", "size = 1_000_000_000").replace("size = 15", "size = 1_000_000_000")


@pytest.mark.parametrize("config", [HUGE, '[simulation]\nduration_ms = 1.0\ndt_ms = 0.1\n'
                                          '[network]\nbuilder = "coba"\nn_neurons = 10_000_000\n'],
                         ids=["populations", "builder"])
def test_network_beyond_memory_is_refused_before_building(config, tmp_path, capsys,
                                                          monkeypatch, nothing_compiles):
    import brainsim._config

    def build(*args, **kwargs):
        raise AssertionError("the CLI started building the network")

    monkeypatch.setattr(brainsim._config, "build_config", build)
    path = tmp_path / "huge.toml"
    path.write_text(config)
    message = refused(["run", str(path), "--out", str(tmp_path)], capsys)
    assert re.fullmatch(
        rf"brainsim run: error: {re.escape(str(path))}: building this network needs about "
        r"[\d.]+ TB of memory \([\d,]+ neurons, about [\d,]+ synapses\) but [\d.]+ [kMGT]?B is "
        r"available; make it smaller \(population sizes, connection probabilities or degrees, "
        r"a builder's n_neurons or scale\).", message), message


def test_unwritable_output_folder_is_refused_before_compiling(tmp_path, capsys,
                                                             nothing_compiles):
    if os.geteuid() == 0:  # root writes through permissions: use a file system that refuses
        folder = Path("/sys/kernel")
        try:
            tempfile.TemporaryFile(dir=folder).close()
            pytest.skip("root can write to /sys/kernel here")
        except OSError:
            pass
    else:
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o500)
    message = refused(["run", "--duration", "1", "--out", str(folder)], capsys)
    assert message == (
        f"brainsim run: error: cannot write to the output folder --out {str(folder)!r} "
        "(Permission denied); choose a folder you can write to.")


def test_full_disk_is_refused_before_compiling(tmp_path, capsys, monkeypatch, nothing_compiles):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 0, 999))
    message = refused(["run", "--duration", "20", "--out", str(tmp_path)], capsys)
    # 200 steps of a 4000-neuron raster (100 kB) and 1 MB for plots and the summary.
    assert message == (
        f"brainsim run: error: the output folder --out {str(tmp_path)!r} has 999 B free but the "
        "results need about 1.1 MB (the recordings and plots); free some space, choose another "
        "folder, or shorten --duration.")
    assert list(tmp_path.iterdir()) == []  # the probe file is gone


def test_disk_full_while_writing_exits_1_without_traceback(small_run, tmp_path, capsys,
                                                           monkeypatch):
    import brainsim.cli

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(brainsim.cli.np, "savez_compressed", no_space)
    code, _, stderr = run(["run", str(small_run[1]), "--out", str(tmp_path)], capsys)
    assert code == 1 and "Traceback" not in stderr
    assert stderr.strip() == (
        f"brainsim run: error: the run finished but writing its results to --out "
        f"{str(tmp_path)!r} failed (No space left on device); free some space or choose another "
        "folder and run again.")


def test_refusal_in_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "brainsim", "run", "--duration", "1e9", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("brainsim run: error: the run needs about ")
    assert len(proc.stderr.splitlines()) == 1
