"""Long runs: chunked runs equal one simulate call, the files hold every spike, a crashed run
resumed from its checkpoint writes exactly the files of an uninterrupted one, one compiled
chunk is reused, and the progress bar reaches the end."""

from __future__ import annotations

import io
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.monitoring
import numpy as np
import pytest

import brainsim as bs
import brainsim._long_run as long_run
from brainsim import connect

DT = 0.1
DURATION = 50.0  # ms = 500 steps
CHUNK = 12.0  # ms = 120 steps: 4 chunks and a 20-step remainder
RECORD = (bs.SpikeRaster(populations=("P",)), bs.SpikeList("N", 2000), bs.PopulationRate(),
          bs.StateTrace("N", "v", neurons=[0, 3], every=4))


def network(n=16):
    """Poisson channels onto a recurrent LIF population, multi-step delays (spikes in flight
    at every chunk boundary)."""
    lif = bs.LIF(C_m=250.0, tau_m=10.0, E_L=-70.0, V_th=-55.0, V_reset=-70.0, t_ref=2.0,
                 I_e=np.linspace(300.0, 420.0, n))
    rec = {"e": bs.Receptor(bs.ExponentialSynapse(2.0), bs.CurrentBased())}
    pops = [bs.Population("P", 6, bs.PoissonSource(400.0)),
            bs.Population("N", n, lif, receptors=rec, initial={"v": bs.init.Uniform(-70.0, -55.0)})]
    projs = [
        bs.Projection("P", "N", connect.fixed_probability(6, n, 0.5, weight=60.0, delay=1.3,
                                                          seed=1), receptor="e"),
        bs.Projection("N", "N", connect.fixed_probability(n, n, 0.3, weight=-30.0, delay=0.7,
                                                          allow_self=False, seed=2), receptor="e"),
    ]
    return bs.Network(pops, projs, dt=DT)


KEY = jax.random.key(7)


@pytest.fixture(scope="module")
def reference():
    net = network()
    return net, bs.simulate(net, DURATION, key=KEY, record=RECORD)


@pytest.fixture(scope="module")
def uninterrupted(reference, tmp_path_factory):
    net, _ = reference
    out = tmp_path_factory.mktemp("whole")
    run = bs.run_long(net, DURATION, out, key=KEY, chunk=CHUNK, record=RECORD,
                      checkpoint_every=2 * CHUNK, progress=False)
    return out, run


def _same_steps(t_a, t_b):
    return np.array_equal(np.rint(np.asarray(t_a) / DT), np.rint(np.asarray(t_b) / DT))


def test_chunked_run_equals_one_simulate_call(reference, uninterrupted):
    _, ref = reference
    _, run = uninterrupted
    assert run.n_steps == 500 and len(run.index) == 5
    for pop in ("P", "N"):
        t_ref, i_ref = ref.spikes(pop)
        t_run, i_run = run.spikes(pop)
        assert len(t_ref) > 30  # both populations are active: the comparison means something
        assert _same_steps(t_ref, t_run) and np.array_equal(i_ref, i_run)
        assert np.array_equal(ref.spike_counts(pop), run.spike_counts(pop))
        assert run.rate(pop) == pytest.approx(ref.rate(pop), rel=1e-6)
    times, values = run.trace("N", "v")
    ref_times, ref_values = ref.trace("N", "v")
    assert np.array_equal(values, ref_values) and np.allclose(times, ref_times)
    # The final state, PRNG key and ring buffers included, is the same bit for bit.
    same = jax.tree.map(
        lambda a, b: np.asarray(a).tobytes() == np.asarray(b).tobytes(),
        jax.tree.map(lambda x: jax.random.key_data(x) if x.dtype == KEY.dtype else x, run.state),
        jax.tree.map(lambda x: jax.random.key_data(x) if x.dtype == KEY.dtype else x, ref.state),
    )
    assert all(jax.tree.leaves(same))


def test_streamed_files_hold_all_spikes(reference, uninterrupted):
    _, ref = reference
    out, run = uninterrupted
    stored = bs.load_run(out)
    assert stored.duration == pytest.approx(DURATION)
    for pop in ("P", "N"):
        n = len(ref.spikes(pop)[0])
        steps_file, ids_file = (out / stored.meta["streams"][i]["file"]
                                for i in stored._spike_streams(pop))
        # 8-byte step (absolute, exact past 2**31 steps) and 4-byte id per spike, nothing else.
        assert steps_file.stat().st_size == 8 * n
        assert ids_file.stat().st_size == 4 * n
        assert stored.n_spikes(pop) == n
        parts = list(stored.iter_spikes(pop))
        assert len(parts) == 5
        t, ids = stored.spikes(pop)
        assert _same_steps(np.concatenate([p[0] for p in parts]), t)
        assert np.array_equal(np.concatenate([p[1] for p in parts]), ids)
        # A time window [10, 30) ms is the matching slice.
        tw, iw = stored.spikes(pop, t_start=10.0, t_stop=30.0)
        mask = (np.rint(t / DT) >= 100) & (np.rint(t / DT) < 300)
        assert _same_steps(tw, t[mask]) and np.array_equal(iw, ids[mask])


def crash_in_chunk(monkeypatch, chunk: int, run) -> None:
    """Call ``run()`` (a run_long) and kill it, as a crash would, when it is about to write
    chunk ``chunk`` (counted from 1): the chunks before it are written, later ones not."""
    real_append = long_run._Writer.append
    calls = []

    def append_then_die(self, end_step, rows):
        calls.append(end_step)
        if len(calls) == chunk:
            raise KeyboardInterrupt("killed")
        real_append(self, end_step, rows)

    monkeypatch.setattr(long_run._Writer, "append", append_then_die)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.undo()


def assert_same_files(a: Path, b: Path) -> None:
    """The folders ``a`` and ``b`` hold the same stream files, byte for byte."""
    names = sorted(p.name for p in a.iterdir() if p.suffix == ".bin")
    assert names == sorted(p.name for p in b.iterdir() if p.suffix == ".bin")
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_crash_and_resume_writes_the_uninterrupted_files(reference, uninterrupted, tmp_path,
                                                         monkeypatch):
    net, _ = reference
    whole_dir, _ = uninterrupted
    out = tmp_path / "crashed"
    # Killed in chunk 4: chunks 1-3 written, checkpoint after chunk 2.
    crash_in_chunk(monkeypatch, 4, lambda: bs.run_long(
        net, DURATION, out, key=KEY, chunk=CHUNK, record=RECORD, checkpoint_every=2 * CHUNK,
        progress=False))
    crashed = bs.load_run(out)
    assert crashed.n_steps == 360  # the completed chunks are readable
    assert crashed.load_checkpoint(net).metadata["step"] == 240

    # Resume: no key needed; the files are cut back to the checkpoint (step 240) and continued.
    run = bs.run_long(net, DURATION, out, chunk=CHUNK, record=RECORD, checkpoint_every=2 * CHUNK,
                      progress=False)
    assert run.n_steps == 500
    assert_same_files(out, whole_dir)


def test_extending_and_refusing_runs(reference, uninterrupted, tmp_path):
    net, ref = reference
    whole_dir, _ = uninterrupted
    with pytest.raises(FileExistsError, match="resume=True"):
        bs.run_long(net, DURATION, whole_dir, key=KEY, chunk=CHUNK, record=RECORD, resume=False,
                    progress=False)
    with pytest.raises(ValueError, match="`record`"):
        bs.run_long(net, DURATION, whole_dir, chunk=CHUNK, record=(bs.SpikeRaster(),),
                    progress=False)
    with pytest.raises(ValueError, match="beyond `duration`"):
        bs.run_long(net, DURATION / 2, whole_dir, chunk=CHUNK, record=RECORD, progress=False)
    with pytest.raises(ValueError, match="multiple of 4 steps"):
        bs.run_long(net, DURATION, tmp_path / "x", key=KEY, chunk=0.3, record=RECORD)
    # A finished run asked for its own duration again does nothing and returns the same data.
    again = bs.run_long(net, DURATION, whole_dir, chunk=CHUNK, record=RECORD, progress=False)
    assert _same_steps(again.spikes("N")[0], ref.spikes("N")[0])


def _count_compilations(fn):
    events = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            events.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        fn()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return len(events)


def test_one_compiled_chunk_is_reused(reference, uninterrupted, tmp_path):
    """With the chunk compiled once (by the fixture), a run of 8 more chunks, with progress
    and checkpoints, compiles nothing."""
    net, _ = reference
    state = uninterrupted[1].state
    n = _count_compilations(lambda: bs.run_long(
        net, 8 * CHUNK, tmp_path / "r", state=state, chunk=CHUNK, record=RECORD,
        checkpoint_every=3 * CHUNK, progress=io.StringIO()))
    assert n == 0


def test_progress_output(reference, uninterrupted, tmp_path, capsys):
    net, _ = reference
    state = uninterrupted[1].state
    stream = io.StringIO()
    bs.run_long(net, 2 * CHUNK, tmp_path / "a", state=state, chunk=CHUNK, record=RECORD,
                progress=stream)
    # The shared progress bar (brainsim._progress, tqdm): redrawn in place, its last drawing
    # at the end of the run shows every step and the whole biological time.
    last = stream.getvalue().rstrip("\n").split("\r")[-1]
    assert last.startswith("run_long: 100%") and "240/240" in last, last
    assert "t = 0.024/0.024 s" in last and "x real time" in last, last
    bs.run_long(net, 2 * CHUNK, tmp_path / "b", state=state, chunk=CHUNK, record=RECORD,
                progress=False)
    # The default (None) shows a bar only on a terminal or in a notebook: not here.
    bs.run_long(net, 2 * CHUNK, tmp_path / "c", state=state, chunk=CHUNK, record=RECORD)
    assert capsys.readouterr().err == ""


def test_recordings_are_exact_beyond_2_to_24_steps(reference):
    """Past 2**24 steps (28 min at 0.1 ms) a float32 time no longer holds whole steps; the
    recordings index steps in integers, so a SpikeList's steps still agree with the per-step
    counts of PopulationRate."""
    net, ref = reference
    state = ref.state._replace(step=jax.numpy.asarray(2**25 + 3, jax.numpy.int32))
    result = bs.simulate(net, CHUNK, state=state, record=RECORD)  # the compiled chunk
    spike_list = result.recordings[1]
    n = int(spike_list.total)
    assert n > 0
    steps = np.repeat(np.asarray(spike_list.steps)[:n], np.asarray(spike_list.counts)[:n])
    counts = np.bincount(steps, minlength=120)
    assert counts.size == 120
    assert np.array_equal(counts, np.asarray(result.recordings[2]["N"]))
    assert result.recordings[3].shape == (30, 2)


# ------------------------------------------------------------------------------ the folder

PAUSED_RUN = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
import brainsim as bs
import brainsim._long_run as long_run
from test_long_run import CHUNK, DURATION, KEY, RECORD, network

out, started = Path(sys.argv[1]), Path(sys.argv[2])
real_append = long_run._Writer.append

def append_then_wait(self, end_step, rows):  # a long run, caught writing its first chunk
    real_append(self, end_step, rows)
    started.write_text("")
    time.sleep(600)

long_run._Writer.append = append_then_wait
bs.run_long(network(), DURATION, out, key=KEY, chunk=CHUNK, record=RECORD,
            checkpoint_every=CHUNK, progress=False)
"""


def _python(script, *args, **kwargs):
    code = script.format(tests=str(Path(__file__).parent))
    return [sys.executable, "-c", code, *map(str, args)], kwargs


def test_a_second_process_cannot_write_a_folder_in_use(uninterrupted, tmp_path):
    """Two real processes on one folder: the second is refused at once with the holder's pid
    and host and changes nothing; once the first is killed (no clean-up at all), the folder
    resumes to exactly the files of an uninterrupted run."""
    whole_dir, _ = uninterrupted
    out, started = tmp_path / "shared", tmp_path / "started"
    first = subprocess.Popen(_python(PAUSED_RUN, out, started)[0], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not started.exists():
            assert first.poll() is None, first.stderr.read().decode()
            assert time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.1)
        before = {p.name: p.read_bytes() for p in out.iterdir()}

        second = subprocess.run(
            [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[2]);"
             "import brainsim as bs; from test_long_run import *;"
             "bs.run_long(network(), DURATION, sys.argv[1], key=KEY, chunk=CHUNK, record=RECORD,"
             " progress=False)", str(out), str(Path(__file__).parent)],
            capture_output=True, text=True, timeout=240)
        assert second.returncode != 0
        message = second.stderr.strip().splitlines()[-1]
        assert message == (
            f"RuntimeError: run_long: the folder {str(out)!r} is in use by another run (pid "
            f"{first.pid} on host {socket.gethostname()}); two runs writing one folder would "
            f"corrupt it. Wait for that run to end (its lock on {str(out / 'run.lock')!r} is "
            "released when its process exits) or use another folder.")
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    finally:
        first.kill()  # SIGKILL: the first run gets no chance to release anything itself
        first.wait()
    run = bs.run_long(network(), DURATION, out, key=KEY, chunk=CHUNK, record=RECORD,
                      checkpoint_every=CHUNK, progress=False)
    assert run.n_steps == 500
    for name in (p.name for p in whole_dir.iterdir() if p.suffix == ".bin"):
        assert (out / name).read_bytes() == (whole_dir / name).read_bytes(), name


def test_the_lock_is_held_within_one_process_too(uninterrupted, tmp_path, monkeypatch):
    net = network()
    calls = []
    real_append = long_run._Writer.append

    def append_and_start_another(self, end_step, rows):
        real_append(self, end_step, rows)
        if not calls:
            calls.append(end_step)
            with pytest.raises(RuntimeError, match=r"is in use by another run \(pid \d+ on"):
                bs.run_long(net, DURATION, tmp_path, key=KEY, chunk=CHUNK, record=RECORD,
                            progress=False)

    monkeypatch.setattr(long_run._Writer, "append", append_and_start_another)
    run = bs.run_long(net, DURATION, tmp_path, key=KEY, chunk=CHUNK, record=RECORD,
                      progress=False)
    assert calls and run.n_steps == 500


def _spike_list_capacity(record, capacity):
    return tuple(bs.SpikeList(m.population, capacity) if isinstance(m, bs.SpikeList) else m
                 for m in record)


def test_overflow_advice_can_be_followed(reference, uninterrupted, tmp_path):
    """A SpikeList too small for a chunk stops the run with advice; following it literally (a
    larger capacity, the same folder) finishes the run, resuming from the last checkpoint, and
    the folder then holds exactly the files of an uninterrupted run."""
    net, ref = reference
    whole_dir, _ = uninterrupted
    capacity, messages = 1, []
    for _ in range(5):
        try:
            run = bs.run_long(net, DURATION, tmp_path, key=KEY, chunk=CHUNK,
                              record=_spike_list_capacity(RECORD, capacity),
                              checkpoint_every=CHUNK, progress=False)
            break
        except bs.SimulationError as e:
            messages.append(str(e))
            capacity = int(re.search(r"SpikeList\('N', capacity >= (\d+)\)", str(e)).group(1))
    # Chunks hold 3, 12, 11, 10 and 1 spikes of N: the first call stops in chunk 0, before
    # any checkpoint, the second in chunk 1, after the checkpoint of chunk 0.
    assert len(messages) == 2 and capacity == 12
    assert messages[0].endswith(
        "To go on, call run_long again with the same arguments and out_dir but "
        "SpikeList('N', capacity >= 3) in `record` (its buffer holds one chunk, 120 steps): "
        "the run starts again from t = 0 (there is no checkpoint yet; `checkpoint_every` "
        "makes runs resumable).")
    assert "rerun with capacity >= 12" in messages[1]
    assert messages[1].endswith(
        "SpikeList('N', capacity >= 12) in `record` (its buffer holds one chunk, 120 steps): "
        "the run resumes from the last checkpoint (t = 12 ms), keeping the chunks before it.")
    assert run.n_steps == 500
    assert _same_steps(run.spikes("N")[0], ref.spikes("N")[0])
    for name in (p.name for p in whole_dir.iterdir() if p.suffix == ".bin"):
        assert (tmp_path / name).read_bytes() == (whole_dir / name).read_bytes(), name


def test_resume_names_what_differs(reference, uninterrupted, tmp_path):
    net, _ = reference
    whole_dir, _ = uninterrupted
    with pytest.raises(ValueError, match=re.escape(
            "would not continue: [record[1] spikes/N/steps <i8(), record[1] spikes/N/ids <i4(), "
            "record[2] spike_counts/N <f4(), record[2] spike_counts/P <f4(), record[3] "
            "trace/N/v <f4(2,)] in the folder, [record[0] spikes/N/steps <i8(), record[0] "
            "spikes/N/ids <i4()] in this call. Resume with a `record` that writes the same "
            "streams (a SpikeList's capacity may change) or use another folder.")):
        bs.run_long(net, DURATION, whole_dir, chunk=CHUNK, record=(bs.SpikeRaster(),),
                    progress=False)
    swapped = (RECORD[1], RECORD[0], *RECORD[2:])  # the same recordings in other files
    with pytest.raises(ValueError, match="the same recordings in other files"):
        bs.run_long(net, DURATION, whole_dir, chunk=CHUNK, record=swapped, progress=False)
    out = tmp_path / "no_checkpoint"
    bs.run_long(net, CHUNK, out, key=KEY, chunk=CHUNK, record=RECORD, progress=False)
    with pytest.raises(ValueError, match=r"population_sizes = \[6, 16\], but this call has "
                                         r"\[6, 17\]; resume with the same network"):
        bs.run_long(network(n=17), CHUNK, out, key=KEY, chunk=CHUNK, record=RECORD,
                    progress=False)


@pytest.mark.parametrize("name", ["/etc/passwd", "../secret.bin", "link"])
def test_load_run_reads_only_inside_the_folder(uninterrupted, tmp_path, name):
    whole_dir, _ = uninterrupted
    out = tmp_path / "run"
    shutil.copytree(whole_dir, out)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x01" * 4096)
    meta = json.loads((out / "run.json").read_text())
    if name == "link":
        (out / "link").symlink_to(secret)
    meta["streams"][0]["file"] = name
    (out / "run.json").write_text(json.dumps(meta))
    problem = ("a link to" if name == "link" else "a run's files are plain names inside its "
               "folder")
    with pytest.raises(bs.CheckpointError, match=re.escape(
            f"run folder {str(out)!r}: run.json names the file {name!r}")) as e:
        bs.load_run(out)
    assert problem in str(e.value) and "Nothing was read" in str(e.value)


def test_a_planted_link_is_never_written_through(reference, uninterrupted, tmp_path):
    net, _ = reference
    whole_dir, _ = uninterrupted
    out = tmp_path / "run"
    shutil.copytree(whole_dir, out)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious" * 512)
    rates = next(s["file"] for s in bs.load_run(out).meta["streams"]
                 if s["key"] == "spike_counts/P")
    (out / rates).unlink()
    (out / rates).symlink_to(victim)
    with pytest.raises(bs.CheckpointError, match=f"the file '{rates}', a link to"):
        bs.run_long(net, DURATION, out, chunk=CHUNK, record=RECORD, progress=False)
    assert victim.read_bytes() == b"precious" * 512


def test_damaged_run_files_are_refused_clearly(reference, uninterrupted, tmp_path):
    net, _ = reference
    whole_dir, _ = uninterrupted
    out = tmp_path / "run"
    shutil.copytree(whole_dir, out)
    meta = json.loads((out / "run.json").read_text())
    meta["streams"][0]["dtype"] = "|O"  # object arrays: never from a run folder
    (out / "run.json").write_text(json.dumps(meta))
    with pytest.raises(bs.CheckpointError, match="run.json' is corrupted: `streams` must list"):
        bs.load_run(out)
    # A checkpoint that run_long did not write (no file lengths) cannot resume the run.
    shutil.rmtree(out)
    shutil.copytree(whole_dir, out)
    bs.save_checkpoint(out / "checkpoint.npz", net, uninterrupted[1].state)
    with pytest.raises(bs.CheckpointError, match="does not record the lengths of the run's files"):
        bs.run_long(net, DURATION, out, chunk=CHUNK, record=RECORD, progress=False)
