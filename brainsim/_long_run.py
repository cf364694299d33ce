r"""Long runs: compiled chunks, a progress bar, recordings streamed to disk, checkpoints.

:func:`run_long` advances a network in chunks of ``chunk`` ms with one compiled
:func:`~brainsim.simulate` scan, reused for every chunk (a shorter last chunk compiles once
more). While chunk ``c + 1`` runs, a worker thread appends the recordings of chunk ``c``
to files in ``out_dir``, writes checkpoints and advances the progress bar, so memory holds at
most two chunks of recordings whatever the duration. A run resumed from its last
checkpoint produces exactly the spikes of an uninterrupted one.

**Folder layout** (format version 3), read by :func:`load_run`:

* ``run.json`` — format and versions, ``dt``, the timing's ``spike_stamp_steps``, population
  names and sizes, the chunk length, the monitors, and the streams: one append-only raw
  little-endian array file per quantity a monitor records (:meth:`AbstractMonitor.streams`:
  e.g. ``spikes/<p>/steps`` int64 absolute network steps, exact however long the run, and
  ``spikes/<p>/ids`` int32 neuron indices per spike, ``spike_counts/<p>`` float32 spikes per
  step, ``trace/<p>/<variable>`` samples × neurons), each with the monitor it belongs to, its
  key, dtype, row shape and sampling interval;
* ``index.bin`` — int64 rows ``[end_step, rows of stream 0, rows of stream 1, ...]``, one per
  completed chunk: the data a reader may use (bytes past the last row, written by a run that
  crashed, are ignored);
* ``checkpoint.npz`` — the last :func:`~brainsim.save_checkpoint` (atomic) with the stream
  lengths and index rows at its step; on resume the files are cut back to those lengths;
* ``run.lock`` — locked (``flock``) by the process writing the folder, with its pid and host:
  a second run on the folder is refused at once. The operating system releases the lock when
  the process ends, however it ends, so a crashed run never leaves the folder locked.

Every file a reader opens is a plain name inside the folder: a ``run.json`` naming an absolute
path, a ``..`` component or a link leading out of the folder is refused.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import numpy as np

from ._checkpoint import Checkpoint, CheckpointError, atomic_write, fsync_dir, load_checkpoint
from ._checkpoint import save_checkpoint as _save_checkpoint
from ._clock import absolute_step
from ._errors import SimulationError, check_positive, unknown_name_error
from ._monitors import AbstractMonitor, SpikeRaster, StateTrace, Stream
from ._network import Network, NetworkState
from ._plan import host_plan
from ._progress import SimulationBar
from ._progress import resolve as resolve_progress
from ._results import TraceRecord, monitor_name, per_option
from ._simulate import _run, _run_jit, checked_monitors, n_steps_for, prepare
from ._version import __version__

RUN_FORMAT = "brainsim-run"
RUN_FORMAT_VERSION = 3
"""Version 2: spike steps are int64 (absolute network steps, exact past 2**31 steps).
Version 3: every monitor's streams are its own, declared by the monitor (keyed, one set of
files per monitor in ``record``), so any monitor streams."""
_RUN_JSON = "run.json"
_INDEX = "index.bin"
_CHECKPOINT = "checkpoint.npz"
_LOCK = "run.lock"


# ------------------------------------------------------------------------------ streams


def _plan_streams(network: Network, state, monitors: tuple, chunk_steps: int) -> dict:
    """The files of the run: every monitor's :meth:`~AbstractMonitor.streams` for a chunk of
    ``chunk_steps`` steps, each with its file name and the monitor it belongs to."""
    shapes = jax.eval_shape(lambda: _run(network, state, monitors, chunk_steps)).recordings
    streams = []
    for i, (m, shape) in enumerate(zip(monitors, shapes, strict=True)):
        declared = m.streams(network, shape, chunk_steps)
        keys = [s.key for s in declared]
        if not all(isinstance(s, Stream) for s in declared) or len(set(keys)) != len(keys):
            raise TypeError(
                f"run_long: {type(m).__name__}.streams must return brainsim Stream values with "
                f"distinct keys; got {declared!r}."
            )
        for s in declared:
            slug = re.sub(r"[^A-Za-z0-9_-]+", "_", s.key)
            file = f"m{i}_{len(streams)}_{slug}.bin"
            streams.append({"file": file, "monitor": i, **s.to_json()})
    return {"streams": streams}


def _chunk_rows(network: Network, plan: dict, monitors: tuple, result, k0: int) -> list:
    """The rows each stream gets from one chunk's recordings (NumPy, on the host)."""
    rows: list = [None] * len(plan["streams"])
    by_monitor: dict = {}
    for j, s in enumerate(plan["streams"]):
        by_monitor.setdefault(s["monitor"], {})[s["key"]] = j
    for i, (m, rec) in enumerate(zip(monitors, result.recordings, strict=True)):
        wanted = by_monitor.get(i, {})
        got = m.rows(network, rec, k0)
        if set(got) != set(wanted):
            raise TypeError(
                f"run_long: {type(m).__name__}.rows returned keys {sorted(got)}; its streams "
                f"declare {sorted(wanted)}."
            )
        for key, j in wanted.items():
            r = np.asarray(got[key])
            if list(r.shape[1:]) != plan["streams"][j]["shape"]:
                raise TypeError(
                    f"run_long: {type(m).__name__}.rows gave {key!r} rows of shape "
                    f"{r.shape[1:]}; its stream declares {tuple(plan['streams'][j]['shape'])}."
                )
            rows[j] = r
    return rows


class _Writer:
    """Append-only stream files and their index, cut back to given lengths on resume."""

    def __init__(self, out: Path, streams: list[dict], lengths: list[int], n_index: int):
        self.out, self.streams = out, streams
        self.row_bytes = [np.dtype(s["dtype"]).itemsize * math.prod(s["shape"]) for s in streams]
        self.lengths = list(lengths)
        self.n_index = n_index
        self.files = []
        for s, rb, n in zip(streams, self.row_bytes, lengths, strict=True):
            self.files.append(_open_truncated(_inside(out, s["file"]), n * rb))
        self.index = _open_truncated(_inside(out, _INDEX), n_index * 8 * (1 + len(streams)))

    def close(self) -> None:
        for f in (*self.files, self.index):
            f.close()

    def append(self, end_step: int, rows: list) -> None:
        for i, (f, r) in enumerate(zip(self.files, rows, strict=True)):
            dtype = np.dtype(self.streams[i]["dtype"])
            data = np.ascontiguousarray(r, dtype=dtype)
            f.write(memoryview(data).cast("B"))
            self.lengths[i] += data.shape[0]
        for f in self.files:
            f.flush()
        # The index row goes last: a reader never sees a chunk whose data are not written.
        self.index.write(np.asarray([end_step, *self.lengths], np.int64).tobytes())
        self.index.flush()
        self.n_index += 1

    def sync(self) -> None:
        for f in (*self.files, self.index):
            os.fsync(f.fileno())


def _open_truncated(path: Path, size: int):
    if size and (not path.exists() or path.stat().st_size < size):
        raise CheckpointError(
            f"run_long: {str(path)!r} is shorter than its checkpoint records ({size} bytes); "
            "the run folder is damaged. Restart the run in a new folder."
        )
    f = open(path, "ab")  # noqa: SIM115 - kept open across chunks, closed by _Writer.close
    f.truncate(size)
    f.seek(size)
    return f


# ------------------------------------------------------------------------------ the folder


@contextlib.contextmanager
def _folder_lock(out: Path) -> Iterator[None]:
    """Hold ``out/run.lock`` locked while a run writes ``out``; refuse at once if another
    process (or another call in this one) holds it."""
    out.mkdir(parents=True, exist_ok=True)
    path = _inside(out, _LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        try:
            _lock(fd)
        except BlockingIOError:
            try:
                holder = os.read(fd, 256).decode(errors="replace").strip()
            except OSError:  # Windows: the holder's lock covers what it wrote
                holder = ""
            holder = holder or "holder unknown"
            raise RuntimeError(
                f"run_long: the folder {str(out)!r} is in use by another run ({holder}); two "
                "runs writing one folder would corrupt it. Wait for that run to end (its lock "
                f"on {str(path)!r} is released when its process exits) or use another folder."
            ) from None
        except OSError as e:
            raise RuntimeError(
                f"run_long: cannot lock {str(path)!r} ({e}); put the run on a file system "
                "with file locks."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def _lock(fd: int) -> None:
    """Lock the open file ``fd`` without waiting; ``BlockingIOError`` if it is locked."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as e:
            raise BlockingIOError(str(e)) from None
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _inside(out: Path, name, named_in: str | None = None) -> Path:
    """``out / name``, refusing a name that leads out of the folder ``out``: an absolute path,
    a ``..`` component or a link to somewhere else (``named_in``: the file giving ``name``)."""
    what = f"{named_in} names the file {name!r}" if named_in else f"the file {name!r}"
    if not isinstance(name, str) or not name or os.path.isabs(name) or ".." in Path(name).parts:
        problem = "; a run's files are plain names inside its folder"
    else:
        real = (out / name).resolve()
        if real.is_relative_to(out.resolve()):
            return out / name
        problem = f", a link to {str(real)!r} outside the folder"
    raise CheckpointError(
        f"run folder {str(out)!r}: {what}{problem}. Nothing was read from or written to it; "
        "the folder was damaged or tampered with: restore it from a copy or use another folder."
    )


# ------------------------------------------------------------------------------ run


def _cursors(path: Path, metadata) -> tuple[list[int], int]:
    """The stream lengths and index rows a run_long checkpoint records."""
    metadata = metadata if isinstance(metadata, dict) else {}
    lengths, chunks = metadata.get("lengths"), metadata.get("chunks")
    if not (
        isinstance(lengths, list)
        and all(isinstance(n, int) and n >= 0 for n in lengths)
        and isinstance(chunks, int)
        and chunks >= 0
    ):
        raise CheckpointError(
            f"run_long: {str(path)!r} does not record the lengths of the run's files (it was "
            "not written by run_long, or was damaged). Restart the run in a new folder."
        )
    return lengths, chunks


def _run_meta(network, monitors, chunk_steps, plan, start_step) -> dict:
    return {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "brainsim_version": __version__,
        "dt": network.dt,
        # A spike of step k is recorded at (k + spike_stamp_steps) dt (brainsim.Timing).
        "spike_stamp_steps": network.timing.stamp_steps,
        "population_names": [p.name for p in network.populations],
        "population_sizes": [p.size for p in network.populations],
        "chunk_steps": chunk_steps,
        "start_step": start_step,
        "monitors": [repr(m) for m in monitors],
        # Read back by name (run["name"]) and by the exporters (a trace's neurons).
        "monitor_names": [monitor_name(m) for m in monitors],
        "traces": [
            {
                "key": f"trace/{m.population}/{m.variable}",
                "population": m.population,
                "variable": m.variable,
                "every": int(m.every),
                "neurons": None if m.neurons is None else np.asarray(m.neurons).tolist(),
            }
            for m in monitors
            if isinstance(m, StateTrace)
        ],
        **plan,
    }


def _overflow_advice(monitors, overflow, chunk_steps: int, resumes_at: float | None) -> str:
    """How to go on after a monitor's buffer filled up (``overflow``: the items each monitor
    could not store): a larger one in a resumed call."""
    for m, count in zip(monitors, np.asarray(overflow).tolist(), strict=True):
        advice = m.resized_for(count) if count > 0 else None
        if advice is not None:
            continues = (
                f"resumes from the last checkpoint (t = {resumes_at:g} ms), keeping the chunks "
                "before it"
                if resumes_at is not None
                else "starts again from t = 0 (there is no checkpoint yet; `checkpoint_every` "
                "makes runs resumable)"
            )
            return (
                f" To go on, call run_long again with the same arguments and out_dir but "
                f"{advice} in `record` (its buffer holds one chunk, {chunk_steps} steps): the "
                f"run {continues}."
            )
    return ""


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=1).encode()))


def _compatible(out: Path, old: dict, new: dict) -> None:
    for field in (
        "format", "format_version", "dt", "spike_stamp_steps", "population_names",
        "population_sizes",
    ):  # fmt: skip
        if old.get(field) != new.get(field):
            raise ValueError(
                f"run_long: {str(out)!r} holds a run with {field} = {old.get(field)!r}, but this "
                f"call has {new.get(field)!r}; resume with the same network or use another folder."
            )
    if old.get("chunk_steps") != new.get("chunk_steps"):
        raise ValueError(
            f"run_long: {str(out)!r} was run with `chunk` giving {old.get('chunk_steps')!r} "
            f"steps; this call gives {new.get('chunk_steps')!r}. Resume with the same `chunk` "
            "or use another folder."
        )
    differences = _record_differences(old, new)
    if differences:
        raise ValueError(
            f"run_long: {str(out)!r} holds recordings that this call's `record` would not "
            f"continue: {'; '.join(differences)}. Resume with a `record` that writes the same "
            "streams (a SpikeList's capacity may change) or use another folder."
        )


def _record_differences(old: dict, new: dict) -> list[str]:
    """What the files of the run in the folder (``old``) and of this call (``new``) record
    differently. Only the files count: a monitor that writes the same streams may replace
    another (a SpikeList's capacity, which bounds one chunk in memory, may change)."""

    def recorded(meta):
        return [
            (s.get("monitor"), s.get("key"), s.get("dtype"), s.get("shape"), s.get("every"))
            for s in meta.get("streams", [])
        ]

    def text(items):
        return "[" + ", ".join(f"record[{i}] {k} {d}{tuple(sh)}" for i, k, d, sh, _ in items) + "]"

    a, b = recorded(old), recorded(new)
    if a == b and [s.get("file") for s in old.get("streams", [])] == [
        s["file"] for s in new["streams"]
    ]:
        return []
    if sorted(x[1:] for x in a) == sorted(x[1:] for x in b):
        return [
            "the same recordings in other files (another order of `record`): "
            f"{text(a)} in the folder, {text(b)} in this call"
        ]
    gone = [x for x in a if x not in b]
    extra = [x for x in b if x not in a]
    return [f"{text(gone)} in the folder, {text(extra)} in this call"]


def run_long(
    network: Network,
    duration: float,
    out_dir: str | os.PathLike,
    *,
    key=None,
    state: NetworkState | None = None,
    chunk: float = 1000.0,
    record: Sequence[AbstractMonitor] = (SpikeRaster(),),
    checkpoint_every: float | None = None,
    resume: bool = True,
    progress=None,
    partition=None,
) -> StoredRun:
    """Simulate ``duration`` ms in compiled chunks, streaming the recordings to ``out_dir``.

    Memory is bounded by the chunk, not the duration: about twice the recordings of one chunk
    (``sum(m.nbytes(network, chunk_steps) for m in record)``: one chunk being written while
    the next runs) plus the state. The spikes equal those of one :func:`~brainsim.simulate`
    call over the whole duration, bit for bit.

    Arguments:
        network: the :class:`Network`.
        duration: total simulated time in ms from the first step (a whole number of steps);
            resuming with a longer ``duration`` extends a finished run.
        out_dir: folder for the recordings and checkpoints (created if missing; see the
            module docstring for the layout and :func:`load_run` to read it).
        key: PRNG key for a fresh initial state (or give ``state``); not needed, and
            ignored, when the run resumes from a checkpoint.
        state: start from this state instead (also ignored when resuming).
        chunk: length of one compiled chunk in ms (a whole number of steps). Each chunk
            costs a few ms on the host (dispatch, spike extraction, file appends; measured on
            COBA 4k: about 15 % over one scan with 100 ms chunks, 5-9 % with 250 ms), so
            use chunks of a second or more for small networks; smaller chunks bound memory
            more tightly and give finer progress.
        record: monitors, built-in or your own (:class:`AbstractMonitor`): each streams
            its recording to its own files (:meth:`AbstractMonitor.streams`). A SpikeList's
            ``capacity`` is per chunk; a StateTrace's or WeightTrace's ``every`` must divide
            the chunk.
        checkpoint_every: write ``out_dir/checkpoint.npz`` (atomically) at the first chunk
            boundary after every this many ms and at the end; ``None``: no checkpoints.
        resume: if ``out_dir`` already holds a run of this network: continue it from its
            last checkpoint (or from ``key``/``state`` if it has none) with the files cut back
            to that point. ``False``: refuse to touch an existing run.
        progress: a progress bar advanced after every chunk: biological time done/total,
            speed relative to real time, steps/s and the remaining time (the
            :class:`~brainsim.Progress` mechanism shared with :func:`~brainsim.simulate` and
            :func:`~brainsim.fit.fit`). ``None`` (default): shown when ``stderr`` is a
            terminal or in a notebook, silent in logs; ``True``: always, on ``stderr``;
            ``False``: silent; a text stream or a :class:`~brainsim.Progress`: written
            there.
        partition: as for :func:`~brainsim.simulate`: ``None`` (one device) or
            :class:`~brainsim.Sharded` ``(mesh)``; the network is split once for all chunks.

    Returns:
        The run as a :class:`StoredRun` (also ``load_run(out_dir)``); ``.state`` is the final
        state.

    Raises:
        SimulationError: non-finite state or a full monitor buffer in a chunk (the files
            hold the chunks before it; the last checkpoint is in ``out_dir``). For a full
            SpikeList the message says how to continue: call again with a larger capacity,
            which resumes.
        CheckpointError: the folder's checkpoint is corrupted or of another network, or
            ``run.json`` names a file outside the folder.
        RuntimeError: another run (in any process) is writing ``out_dir``.

    Example:
        >>> run = bs.run_long(net, 60_000.0, "out/run1", key=jax.random.key(0),
        ...                   chunk=1000.0, checkpoint_every=10_000.0)
        >>> times, ids = run.spikes("E", t_start=30_000.0, t_stop=31_000.0)
    """
    # Arguments are checked before the folder (and its lock file) is created.
    steps = _checked_arguments(network, duration, chunk, checkpoint_every, record)
    progress = resolve_progress(progress, "run_long")
    run_chunk = _chunk_runner(network, partition)
    with _folder_lock(Path(out_dir)):
        return _run_long(
            network,
            duration,
            Path(out_dir),
            *steps,
            key=key,
            state=state,
            resume=resume,
            progress=progress,
            run_chunk=run_chunk,
        )


def _chunk_runner(network, partition):
    """``run(state, monitors, n_steps) -> SimulationResult`` for one chunk: the compiled loop
    of :func:`~brainsim.simulate`, on one device or partitioned (split once)."""
    if partition is None:
        plan = host_plan(network)  # merged once for all chunks
        return lambda state, monitors, n: _run_jit(network, state, monitors, n, None, 1, plan)
    from ._sharding import partitioned, run_partitioned

    sharded = partitioned(network, partition)
    return lambda state, monitors, n: run_partitioned(sharded, state, monitors, n)


def _checked_arguments(network, duration, chunk, checkpoint_every, record):
    """``(chunk_steps, total_steps, checkpoint_steps or None, monitors)`` of valid arguments of
    :func:`run_long`, or the error naming the bad one."""
    if not isinstance(network, Network):
        raise TypeError(
            f"run_long: `network` must be a brainsim.Network; got {type(network).__name__}."
        )
    chunk_steps = n_steps_for(chunk, network.dt, owner="run_long", name="chunk")
    total_steps = n_steps_for(duration, network.dt, owner="run_long")
    ckpt_steps = None
    if checkpoint_every is not None:
        check_positive("checkpoint_every", checkpoint_every, owner="run_long", unit="ms")
        ckpt_steps = max(1, int(round(checkpoint_every / network.dt)))
    return chunk_steps, total_steps, ckpt_steps, checked_monitors(record, "run_long")


def _run_long(
    network,
    duration,
    out: Path,
    chunk_steps,
    total_steps,
    ckpt_steps,
    monitors,
    *,
    key,
    state,
    resume,
    progress,
    run_chunk,
) -> StoredRun:
    """:func:`run_long` in the folder ``out``, which this process has locked."""
    meta_path = out / _RUN_JSON
    ckpt_path = _inside(out, _CHECKPOINT)
    checkpoint: Checkpoint | None = None
    if meta_path.exists():
        if not resume:
            raise FileExistsError(
                f"run_long: {str(out)!r} already holds a brainsim run; pass resume=True to "
                "continue it or choose another folder."
            )
        meta = _read_meta(out)
        if ckpt_path.exists():
            checkpoint = load_checkpoint(ckpt_path, network)
    else:
        meta = None
    for stale in out.glob(f".{_CHECKPOINT}.*.tmp"):  # left by a crash during a write
        stale.unlink(missing_ok=True)

    if checkpoint is not None:
        network, state = checkpoint.network, checkpoint.state
        lengths, n_index = _cursors(ckpt_path, checkpoint.metadata)
        if checkpoint.metadata.get("step") != int(absolute_step(state.step, state.epoch)):
            raise CheckpointError(
                f"run_long: {str(ckpt_path)!r} is at step "
                f"{int(absolute_step(state.step, state.epoch))} but "
                f"records step {checkpoint.metadata.get('step')}; the run folder is damaged."
            )
    else:
        if state is None and key is None:
            raise ValueError(
                "run_long: pass `key` (e.g. jax.random.key(0)) or `state` to start the run"
                + (f" ({str(out)!r} has no checkpoint to resume from)." if meta else ".")
            )
        lengths, n_index = None, 0
    network, state, monitors, _ = prepare(
        network, n_steps=chunk_steps, key=key, state=state, record=monitors, owner="run_long"
    )
    if np.ndim(state.step):
        raise ValueError(
            "run_long: runs one network state; batched (vmap-ed) states are not supported."
        )
    step = int(absolute_step(state.step, state.epoch))
    plan = _plan_streams(network, state, monitors, chunk_steps)
    if lengths is None:
        lengths = [0] * len(plan["streams"])
    new_meta = _run_meta(
        network, monitors, chunk_steps, plan, step if meta is None else meta["start_step"]
    )
    if meta is not None:
        _compatible(out, meta, new_meta)
        if checkpoint is None:
            new_meta["start_step"] = step
    if len(lengths) != len(plan["streams"]):
        raise CheckpointError(f"run_long: {str(ckpt_path)!r} does not match this run's `record`.")
    start_step = new_meta["start_step"]
    end_step = start_step + total_steps
    if step > end_step:
        raise ValueError(
            f"run_long: {str(out)!r} is already at t = {(step - start_step) * network.dt:g} ms, "
            f"beyond `duration` = {duration:g} ms."
        )
    new_meta["duration_ms"] = float(duration)
    _write_json(meta_path, new_meta)
    writer = _Writer(out, plan["streams"], lengths, n_index)
    bar = None
    if progress is not None:
        bar = SimulationBar(
            progress, end_step - start_step, network.dt, desc="run_long", initial=step - start_step
        )
    last_ckpt = step

    def finish_chunk(k0: int, n0: int, result) -> None:
        """Host side of one chunk: check, append to the files, checkpoint, progress."""
        nonlocal last_ckpt
        try:
            result.raise_if_failed()
        except SimulationError as e:
            resumes_at = (last_ckpt - start_step) * network.dt if ckpt_path.exists() else None
            raise SimulationError(
                f"{e} (run_long: in the chunk from t = {(k0 - start_step) * network.dt:g} ms; "
                f"{str(out)!r} holds the recordings before it"
                + (" and the last checkpoint)." if resumes_at is not None else ").")
                + _overflow_advice(
                    monitors, result.faults.recording_overflow, chunk_steps, resumes_at
                )
            ) from None
        writer.append(k0 + n0, _chunk_rows(network, plan, monitors, result, k0))
        done = k0 + n0
        if ckpt_steps is not None and (done - last_ckpt >= ckpt_steps or done == end_step):
            writer.sync()
            metadata = {"lengths": writer.lengths, "chunks": writer.n_index, "step": done}
            _save_checkpoint(ckpt_path, network, result.state, metadata=metadata)
            last_ckpt = done
        if bar is not None:  # the first chunk, and a shorter last one, compiled
            bar.update(done - start_step, compiled=k0 == step or n0 != chunk_steps)

    # The host side of chunk c runs in a worker thread while chunk c + 1 computes (the
    # compiled call returns only when its chunk is done and releases the GIL meanwhile); at
    # most one chunk waits for the worker, so memory holds two chunks of recordings.
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="brainsim-run_long") as pool:
            pending = None
            k = step
            while k < end_step:
                n = min(chunk_steps, end_step - k)
                result = run_chunk(state, monitors, n)
                state = result.state
                if pending is not None:
                    pending.result()  # re-raises the worker's error, if any
                pending = pool.submit(finish_chunk, k, n, result)
                k += n
            if pending is not None:
                pending.result()
        writer.sync()
    finally:
        writer.close()
        if bar is not None:
            bar.close()
    fsync_dir(out)
    run = StoredRun(out)
    run.state = state
    return run


# ------------------------------------------------------------------------------ reading


def _read_meta(out: Path) -> dict:
    path = _inside(out, _RUN_JSON)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{str(out)!r} holds no brainsim run (no {_RUN_JSON}).") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{str(path)!r} is corrupted ({e}).") from None
    if not isinstance(meta, dict) or meta.get("format") != RUN_FORMAT:
        raise CheckpointError(f"{str(path)!r} does not describe a brainsim run.")
    if meta.get("format_version") != RUN_FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has run format version {meta.get('format_version')}; this brainsim "
            f"({__version__}) reads version {RUN_FORMAT_VERSION}. Read the folder with the "
            f"brainsim that wrote it (version {meta.get('brainsim_version')}), or run again "
            "into a new folder."
        )
    streams = meta.get("streams")
    if not isinstance(streams, list) or not all(_valid_stream(s) for s in streams):
        raise CheckpointError(
            f"{str(path)!r} is corrupted: `streams` must list files, each with a numeric dtype "
            "and a shape."
        )
    return meta


def _valid_stream(stream) -> bool:
    try:
        dtype = np.dtype(stream["dtype"])
    except (TypeError, KeyError, ValueError):
        return False
    shape, every = stream.get("shape"), stream.get("every")
    return (
        isinstance(stream.get("file"), str)
        and isinstance(stream.get("key"), str)
        and isinstance(stream.get("monitor"), int)
        and (every is None or (isinstance(every, int) and every >= 1))
        and dtype.kind in "biuf"
        and isinstance(shape, list)
        and all(isinstance(d, int) and d >= 0 for d in shape)
    )


class StoredRun:
    """A run written by :func:`run_long`, read lazily from its folder.

    Arrays are memory-mapped: ``spikes(pop)`` over the whole run materialises the times
    (8 bytes per spike) and maps the ids; pass ``t_start``/``t_stop`` or iterate with
    :meth:`iter_spikes` to stay within a bounded memory whatever the run's length. Only
    chunks listed in the index are visible (a crashed run shows its completed chunks).
    """

    state: NetworkState | None = None
    """The final state when returned by :func:`run_long` (``None`` from :func:`load_run`)."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)
        self.meta = _read_meta(self.out_dir)
        self.dt: float = self.meta["dt"]
        self.population_names: tuple[str, ...] = tuple(self.meta["population_names"])
        self.population_sizes: tuple[int, ...] = tuple(self.meta["population_sizes"])
        self.start_step: int = self.meta["start_step"]
        self.stamp_steps: int = self.meta["spike_stamp_steps"]
        for s in self.meta["streams"]:  # refused now rather than when first read
            _inside(self.out_dir, s["file"], _RUN_JSON)
        width = 1 + len(self.meta["streams"])
        raw = np.fromfile(_inside(self.out_dir, _INDEX), dtype=np.int64)
        self.index = raw[: raw.size // width * width].reshape(-1, width)
        """Completed chunks: ``[end_step, rows of every stream]``."""

    @property
    def n_steps(self) -> int:
        """Completed steps."""
        return int(self.index[-1, 0]) - self.start_step if len(self.index) else 0

    @property
    def duration(self) -> float:
        """Completed simulated time (ms)."""
        return self.n_steps * self.dt

    def _stream(self, i: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
        s = self.meta["streams"][i]
        n = int(self.index[-1, 1 + i]) if len(self.index) else 0
        hi = n if hi is None else min(hi, n)
        shape = tuple(s["shape"])
        if hi <= lo:
            return np.empty((0, *shape), np.dtype(s["dtype"]))
        mm = np.memmap(
            _inside(self.out_dir, s["file"], _RUN_JSON),
            dtype=np.dtype(s["dtype"]),
            mode="r",
            shape=(n, *shape),
        )
        return mm[lo:hi]

    def _find(self, key: str) -> int | None:
        """The first stream (in the order of ``record``) holding quantity ``key``."""
        return next((j for j, s in enumerate(self.meta["streams"]) if s["key"] == key), None)

    def _spike_streams(self, population: str) -> tuple[int, int]:
        if population not in self.population_names:
            raise unknown_name_error("population", population, self.population_names)
        steps = self._find(f"spikes/{population}/steps")
        if steps is None:
            raise ValueError(f"No spike recording of population {population!r} in this run.")
        monitor = self.meta["streams"][steps]["monitor"]
        ids = next(
            j
            for j, s in enumerate(self.meta["streams"])
            if s["key"] == f"spikes/{population}/ids" and s["monitor"] == monitor
        )
        return steps, ids

    @property
    def monitors(self) -> tuple[str, ...]:
        """The monitors of the run (their ``repr``), in the order of ``record``."""
        return tuple(self.meta["monitors"])

    batch_shape: tuple[int, ...] = ()
    """A stored run is one run (the exporters' and ``SimulationResult``'s protocol)."""
    t_start: float = 0.0
    """Times of a stored run count from its start (ms)."""

    def recorded(self) -> list[str]:
        """What this run recorded: its monitors' ``repr``, one per monitor."""
        return list(self.monitors)

    def __getitem__(self, name) -> dict[str, np.ndarray]:
        """:meth:`recording` of the monitor given ``name=`` (or at position ``name``)."""
        return self.recording(name)

    def recording(self, monitor) -> dict[str, np.ndarray]:
        """``{stream key: rows}`` of one monitor (memory-mapped), all completed chunks.

        ``monitor``: its position in ``record``, its ``name=``, or the monitor itself (found
        by ``repr``).
        For a monitor streamed by default (one row per step) the rows are what
        :func:`~brainsim.simulate` returns over the whole run: ``run.recording(m)["values"]``
        equals ``result.recordings[i]`` for a monitor whose recording is one array.
        """
        names = self.monitors
        if isinstance(monitor, str):
            given = self.meta.get("monitor_names") or [None] * len(names)
            if monitor not in given:
                valid = [n for n in given if n is not None]
                raise unknown_name_error("monitor name", monitor, valid, where="StoredRun")
            monitor = given.index(monitor)
        if isinstance(monitor, AbstractMonitor):
            if repr(monitor) not in names:
                raise ValueError(f"{monitor!r} is not a monitor of this run; it has {list(names)}.")
            monitor = names.index(repr(monitor))
        if not (isinstance(monitor, int) and 0 <= monitor < len(names)):
            raise ValueError(
                f"`monitor` must be a position in `record` (0..{len(names) - 1}) or one of the "
                f"run's monitors; got {monitor!r}."
            )
        return {
            s["key"]: self._stream(j)
            for j, s in enumerate(self.meta["streams"])
            if s["monitor"] == monitor
        }

    def samples(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(times_ms, values)`` of the first sampled stream named ``key`` (values
        memory-mapped; times from the run's start): ``"trace/<population>/<variable>"``,
        ``"weights/<projection>"``, ``"spike_counts/<population>"`` or a key of your own
        monitor's streams."""
        j = self._find(key)
        if j is None or self.meta["streams"][j]["every"] is None:
            sampled = [s["key"] for s in self.meta["streams"] if s["every"] is not None]
            raise ValueError(f"No sampled stream {key!r} in this run; it has {sampled}.")
        values = self._stream(j)
        return np.arange(values.shape[0]) * self.meta["streams"][j]["every"] * self.dt, values

    def _step(self, t: float | None, default: int) -> int:
        """The first step whose spikes are recorded at or after ``t`` (ms from the start)."""
        if t is None:
            return default
        return self.start_step + int(math.ceil(t / self.dt - 1e-9)) - self.stamp_steps

    def _spike_times(self, steps) -> np.ndarray:
        """Recorded times (ms from the run's start) of spikes emitted by ``steps``, computed
        in integers first so they stay exact however long the run."""
        return (np.asarray(steps, np.int64) - self.start_step + self.stamp_steps) * self.dt

    def spikes(
        self, population: str, t_start: float | None = None, t_stop: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(times_ms, ids)`` of the spikes of ``population`` with ``t_start <= t < t_stop``
        (ms from the run's start; default: all), sorted by time."""
        s_steps, s_ids = self._spike_streams(population)
        steps = self._stream(s_steps)
        lo = int(np.searchsorted(steps, self._step(t_start, -(2**62)), side="left"))
        hi = int(np.searchsorted(steps, self._step(t_stop, 2**62), side="left"))
        return self._spike_times(steps[lo:hi]), np.asarray(self._stream(s_ids, lo, hi))

    def iter_spikes(self, population: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(times_ms, ids)`` chunk by chunk, as written: memory of one chunk at a time."""
        s_steps, s_ids = self._spike_streams(population)
        lo = 0
        for row in self.index:
            hi = int(row[1 + s_steps])
            steps = self._stream(s_steps, lo, hi)
            yield self._spike_times(steps), np.asarray(self._stream(s_ids, lo, hi))
            lo = hi

    def n_spikes(self, population: str) -> int:
        """Number of recorded spikes of ``population``."""
        s_steps, _ = self._spike_streams(population)
        return int(self.index[-1, 1 + s_steps]) if len(self.index) else 0

    def rate(self, population: str) -> float:
        """Mean firing rate of ``population`` over the completed run (Hz)."""
        counts = self._find(f"spike_counts/{population}")
        if counts is not None:
            count = float(np.sum(self._stream(counts), dtype=np.float64))
        else:
            count = self.n_spikes(population)
        size = self.population_sizes[self.population_names.index(population)]
        return count / (size * self.duration * 1e-3) if self.duration else 0.0

    def spike_counts(self, population: str, *, per: str = "step") -> np.ndarray:
        """Spike counts of ``population``, as :meth:`SimulationResult.spike_counts
        <brainsim.SimulationResult.spike_counts>` gives them: ``per="step"`` the
        population's total in every step, ``(n_steps,)`` (memory-mapped from a
        :class:`PopulationRate`, else counted from the recorded spikes); ``per="neuron"``
        each neuron's total over the run, ``(size,)`` int64 (counted chunk by chunk: the
        memory of one chunk)."""
        per_option(per)
        if population not in self.population_names:
            raise unknown_name_error("population", population, self.population_names)
        size = self.population_sizes[self.population_names.index(population)]
        if per == "neuron":
            if self._find(f"spikes/{population}/steps") is None:
                raise ValueError(
                    f"No spike recording of population {population!r} in this run (per-neuron "
                    "counts need a SpikeRaster or SpikeList)."
                )
            counts = np.zeros(size, np.int64)
            for _, ids in self.iter_spikes(population):
                counts += np.bincount(ids, minlength=size)
            return counts
        if self._find(f"spike_counts/{population}") is not None:
            return self.samples(f"spike_counts/{population}")[1]
        if self._find(f"spikes/{population}/steps") is None:
            raise ValueError(
                f"No PopulationRate or spike recording of population {population!r} in this run."
            )
        counts = np.zeros(self.n_steps, np.float32)
        s_steps, _ = self._spike_streams(population)
        lo = 0
        for row in self.index:
            hi = int(row[1 + s_steps])
            steps = np.asarray(self._stream(s_steps, lo, hi), np.int64) - self.start_step
            counts += np.bincount(steps, minlength=self.n_steps)[: self.n_steps]
            lo = hi
        return counts

    def spiking_populations(self) -> list[str]:
        """The populations whose spikes this run recorded, in network order."""
        return [p for p in self.population_names if self._find(f"spikes/{p}/steps") is not None]

    def trace_records(self) -> list[TraceRecord]:
        """Every :class:`StateTrace` recorded (values memory-mapped)."""
        out = []
        infos = self.meta.get("traces")
        if infos is None:  # written before the metadata named them: read the stream keys
            infos = [
                {"key": st["key"], "population": st["key"].split("/")[1],
                 "variable": st["key"].split("/", 2)[2], "every": st["every"], "neurons": None}
                for st in self.meta["streams"]
                if st["key"].startswith("trace/") and st["key"].count("/") >= 2
            ]  # fmt: skip
        for info in infos:
            times, values = self.samples(info["key"])
            ids = info["neurons"]
            ids = np.arange(values.shape[-1]) if ids is None else np.asarray(ids)
            out.append(
                TraceRecord(info["population"], info["variable"], info["every"], times, values, ids)
            )
        return out

    def to_pandas(self, kind: str = "spikes", *, wide: bool = False):
        """This run as a :class:`pandas.DataFrame`: :func:`brainsim.interop.to_pandas`."""
        from . import interop

        return interop.to_pandas(self, kind, wide=wide)

    def to_neo(self):
        """This run as a :class:`neo.Block`: :func:`brainsim.interop.to_neo`."""
        from . import interop

        return interop.to_neo(self)

    def to_nwb(self, target, **kwargs):
        """This run in an NWB file or ``NWBFile``: :func:`brainsim.interop.to_nwb`."""
        from . import interop

        return interop.to_nwb(self, target, **kwargs)

    def trace(self, population: str, variable: str) -> tuple[np.ndarray, np.ndarray]:
        """``(times_ms, values)`` of a :class:`StateTrace` (values memory-mapped)."""
        if self._find(f"trace/{population}/{variable}") is None:
            raise ValueError(f"No StateTrace({population!r}, {variable!r}) in this run.")
        return self.samples(f"trace/{population}/{variable}")

    def weight_trace(self, projection: str) -> tuple[np.ndarray, np.ndarray]:
        """``(times_ms, weights[samples, ...])`` of a :class:`WeightTrace` (memory-mapped)."""
        if self._find(f"weights/{projection}") is None:
            raise ValueError(f"No WeightTrace({projection!r}) in this run.")
        return self.samples(f"weights/{projection}")

    def load_checkpoint(self, network: Network) -> Checkpoint:
        """The run's last checkpoint (network and state) for ``network``."""
        return load_checkpoint(_inside(self.out_dir, _CHECKPOINT), network)


def load_run(out_dir: str | os.PathLike) -> StoredRun:
    """Open a folder written by :func:`run_long` (complete, running or crashed)."""
    return StoredRun(out_dir)
