r"""Long runs: compiled chunks, a progress line, recordings streamed to disk, checkpoints.

:func:`run_long` advances a network in chunks of ``chunk`` ms with one compiled
:func:`~brainsim.simulate` scan, reused for every chunk (a shorter last chunk compiles once
more). While chunk ``c + 1`` runs, a worker thread appends the recordings of chunk ``c``
to files in ``out_dir``, writes checkpoints and updates the progress line, so memory holds at
most two chunks of recordings whatever the duration. A run resumed from its last
checkpoint produces exactly the spikes of an uninterrupted one.

**Folder layout** (format version 2), read by :func:`load_run`:

* ``run.json`` — format and versions, ``dt``, the timing's ``spike_stamp_steps``, population
  names and sizes, the chunk length, the monitors, and the streams: one append-only raw
  little-endian array file per recorded quantity (``spikes_<p>_steps.bin`` int64 absolute
  network steps, exact however long the run, and ``spikes_<p>_ids.bin`` int32
  neuron indices per spike, ``rate_<p>.bin`` float32 spike counts per step,
  ``trace_<j>.bin`` samples × neurons), with dtype and row shape;
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
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

import jax
import numpy as np

from ._checkpoint import Checkpoint, CheckpointError, atomic_write, fsync_dir, load_checkpoint
from ._checkpoint import save_checkpoint as _save_checkpoint
from ._clock import absolute_step
from ._errors import SimulationError, check_positive, unknown_name_error
from ._monitors import AbstractMonitor, PopulationRate, SpikeList, SpikeRaster, StateTrace
from ._network import Network, NetworkState
from ._simulate import _run_jit, checked_monitors, n_steps_for, prepare
from ._version import __version__

RUN_FORMAT = "brainsim-run"
RUN_FORMAT_VERSION = 2
"""Version 2: spike steps are int64 (absolute network steps, exact past 2**31 steps)."""
_RUN_JSON = "run.json"
_INDEX = "index.bin"
_CHECKPOINT = "checkpoint.npz"
_LOCK = "run.lock"


# ------------------------------------------------------------------------------ streams


def _plan_streams(network: Network, monitors: tuple, chunk_steps: int, dtype) -> dict:
    """What each monitor writes: spike, rate and trace streams with dtype and row shape."""
    streams, spikes, rates, traces = [], {}, {}, []

    def add(file, dtype, shape=()):
        streams.append({"file": file, "dtype": np.dtype(dtype).str, "shape": list(shape)})
        return len(streams) - 1

    index = {p.name: i for i, p in enumerate(network.populations)}
    for m in monitors:
        if isinstance(m, SpikeRaster | SpikeList):
            names = m.names(network) if isinstance(m, SpikeRaster) else (m.population,)
            for name in names:
                if name not in index:
                    raise unknown_name_error("population", name, list(index), where="SpikeList")
                if name not in spikes:
                    i = index[name]
                    spikes[name] = [
                        add(f"spikes_{i}_steps.bin", np.int64),
                        add(f"spikes_{i}_ids.bin", np.int32),
                    ]
        elif isinstance(m, PopulationRate):
            for name in m.names(network):
                if name not in rates:
                    rates[name] = add(f"rate_{index[name]}.bin", np.float32)
        elif isinstance(m, StateTrace):
            if chunk_steps % m.every:
                raise ValueError(
                    f"run_long: StateTrace {m.population}.{m.variable} samples every {m.every} "
                    f"steps but a chunk is {chunk_steps} steps; make `chunk` a multiple of "
                    f"{m.every} steps."
                )
            example = jax.eval_shape(lambda m=m: m.init(network, 1, dtype))
            j = len(traces)
            traces.append(
                {
                    "population": m.population,
                    "variable": m.variable,
                    "every": m.every,
                    "neurons": None if m.neurons is None else list(m.neurons),
                    "stream": add(f"trace_{j}.bin", example.dtype, example.shape[1:]),
                }
            )
        else:
            raise TypeError(
                f"run_long: `record` items must be SpikeRaster, SpikeList, PopulationRate or "
                f"StateTrace; got {type(m).__name__}."
            )
    return {"streams": streams, "spikes": spikes, "rates": rates, "traces": traces}


_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(bool)
"""Row ``v``: the bits of byte ``v``, most significant first (the order of ``packbits``)."""


def _raster_events(rows: np.ndarray, is_source: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, ids)`` of the spikes in a SpikeRaster recording, sorted by step then id.

    Neuron rows are packed bits (big-endian, so the row-major bit order is the neuron order);
    source rows are one count byte per channel and a count of ``c`` gives ``c`` entries.
    Spikes are sparse: the rows are scanned 8 bytes at a time and only nonzero words are
    unpacked (unpacking every bit costs more than simulating a small network).
    """
    n_cols = rows.shape[1]
    flat = np.ascontiguousarray(rows, np.uint8).reshape(-1)
    if flat.size % 8:
        flat = np.concatenate([flat, np.zeros(-flat.size % 8, np.uint8)])
    words = np.flatnonzero(flat.view(np.uint64))
    j = np.flatnonzero(flat.reshape(-1, 8)[words])
    byte = words[j // 8] * 8 + j % 8  # indices of the nonzero bytes, in order
    values = flat[byte]
    if is_source:
        steps, cols = np.divmod(byte, n_cols)
        reps = values.astype(np.int64)
        if np.any(reps > 1):
            steps, cols = np.repeat(steps, reps), np.repeat(cols, reps)
        return steps, cols
    which, bit = np.nonzero(_BITS[values])
    return np.divmod(byte[which] * 8 + bit, n_cols * 8)


def _chunk_rows(network: Network, plan: dict, monitors: tuple, result, k0: int) -> list:
    """The rows each stream gets from one chunk's recordings (NumPy, on the host)."""
    rows: list = [None] * len(plan["streams"])
    sources = {p.name for p in network.populations if p.is_source}
    for m, rec in zip(monitors, result.recordings, strict=True):
        if isinstance(m, SpikeRaster):
            for name in m.names(network):
                s_steps, s_ids = plan["spikes"][name]
                if rows[s_steps] is not None:
                    continue
                steps, ids = _raster_events(np.asarray(rec[name]), name in sources)
                rows[s_steps] = steps.astype(np.int64) + k0
                rows[s_ids] = ids.astype(np.int32)
        elif isinstance(m, SpikeList):
            s_steps, s_ids = plan["spikes"][m.population]
            if rows[s_steps] is not None:
                continue
            # Slice on the host: slicing the device arrays would compile one op per length.
            n = min(int(np.asarray(rec.total)), m.capacity)
            reps = np.asarray(rec.counts)[:n].astype(np.int64)
            rows[s_steps] = np.repeat(np.asarray(rec.steps)[:n], reps).astype(np.int64) + k0
            rows[s_ids] = np.repeat(np.asarray(rec.ids)[:n], reps).astype(np.int32)
        elif isinstance(m, PopulationRate):
            for name in m.names(network):
                i = plan["rates"][name]
                if rows[i] is None:
                    rows[i] = np.asarray(rec[name], np.float32)
    trace_recs = [
        r for m, r in zip(monitors, result.recordings, strict=True) if isinstance(m, StateTrace)
    ]
    for t, rec in zip(plan["traces"], trace_recs, strict=True):
        rows[t["stream"]] = np.asarray(rec)
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


# ------------------------------------------------------------------------------ progress


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()
    except AttributeError:
        return False
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def progress_line(
    t_ms: float, total_ms: float, steps_per_s: float | None, dt: float, eta_s: float
) -> str:
    """``"t = 12.300/60.000 s (20.5%) | 48,211 steps/s | 4.82x real time | ETA 00:10"``
    (``steps_per_s=None``, before a speed is known: ``-- steps/s``, ``ETA --:--``)."""
    pct = 100.0 * t_ms / total_ms if total_ms else 100.0
    if steps_per_s is None:
        speed_text = "-- steps/s | -- real time"
    else:
        speed = steps_per_s * dt * 1e-3  # biological seconds per wall-clock second
        speed_text = f"{steps_per_s:,.0f} steps/s | {speed:.3g}x real time"
    return (
        f"t = {t_ms / 1e3:.3f}/{total_ms / 1e3:.3f} s ({pct:.1f}%) | {speed_text} | "
        f"ETA {_clock(eta_s)}"
    )


class _Progress:
    """One status line: in place in a terminal or notebook, else one line per ``every_s``."""

    def __init__(self, progress, total_steps: int, done_steps: int, dt: float, every_s=10.0):
        self.enabled = progress is not False and progress is not None
        self.stream: TextIO = sys.stderr if progress is True else progress
        self.total, self.dt, self.every_s = total_steps, dt, every_s
        self.start_done = done_steps
        self.t0 = time.perf_counter()
        self.last_print = -math.inf
        self.handle = None
        self.inplace = False
        if not self.enabled:
            return
        if progress is True and _in_notebook():
            from IPython.display import display

            self.handle = display(_Text(""), display_id=True)
        else:
            self.inplace = bool(getattr(self.stream, "isatty", lambda: False)())

    def start(self, done: int) -> None:
        """Start the clock with ``done`` steps done (after the first chunk, which compiles)."""
        self.t0, self.start_done = time.perf_counter(), done

    def update(self, done: int, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        rate = (
            (done - self.start_done) / max(now - self.t0, 1e-9) if done > self.start_done else None
        )
        eta = (self.total - done) / rate if rate else (0.0 if done >= self.total else math.inf)
        line = progress_line(done * self.dt, self.total * self.dt, rate, self.dt, eta)
        if self.handle is not None:
            self.handle.update(_Text(line))
        elif self.inplace:
            self.stream.write("\r" + line + ("\n" if final else ""))
            self.stream.flush()
        elif final or now - self.last_print >= self.every_s:
            self.last_print = now
            print(line, file=self.stream, flush=True)


class _Text:
    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


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
        **plan,
    }


def _overflow_advice(monitors, recordings, chunk_steps: int, resumes_at: float | None) -> str:
    """How to go on after a full SpikeList: a larger capacity in a resumed call."""
    for m, r in zip(monitors, recordings, strict=True):
        if isinstance(m, SpikeList) and int(np.asarray(m.overflow(r))) > 0:
            needed = m.capacity + int(np.asarray(m.overflow(r)))
            continues = (
                f"resumes from the last checkpoint (t = {resumes_at:g} ms), keeping the chunks "
                "before it"
                if resumes_at is not None
                else "starts again from t = 0 (there is no checkpoint yet; `checkpoint_every` "
                "makes runs resumable)"
            )
            return (
                f" To go on, call run_long again with the same arguments and out_dir but "
                f"SpikeList({m.population!r}, capacity >= {needed}) in `record` (the capacity "
                f"holds the spikes of one chunk, {chunk_steps} steps): the run {continues}."
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
            "files (a SpikeList's capacity may change) or use another folder."
        )


def _record_differences(old: dict, new: dict) -> list[str]:
    """What the files of the run in the folder (``old``) and of this call (``new``) record
    differently. Only the files count: a SpikeList's capacity, which bounds one chunk in
    memory, may change."""

    def traces(meta):
        return [
            f"StateTrace({t['population']!r}, {t['variable']!r}, neurons={t['neurons']}, "
            f"every={t['every']})"
            for t in meta.get("traces", [])
        ]

    differences = []
    for what, a, b in (
        ("spikes", sorted(old.get("spikes", {})), sorted(new["spikes"])),
        ("PopulationRate", sorted(old.get("rates", {})), sorted(new["rates"])),
        ("traces", traces(old), traces(new)),
    ):
        if a != b:
            differences.append(f"{what} of {a} in the folder, {b} in this call")
    if not differences and any(
        old.get(k) != new[k] for k in ("streams", "spikes", "rates", "traces")
    ):
        differences.append(
            "the same recordings in other files (another order of `record`, or another dtype): "
            f"{old.get('streams')} in the folder, {new['streams']} in this call"
        )
    return differences


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
    progress: bool | TextIO = True,
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
        record: :class:`SpikeRaster` / :class:`SpikeList` (spikes; a SpikeList's
            ``capacity`` is per chunk), :class:`PopulationRate`, :class:`StateTrace`
            (``every`` must divide the chunk).
        checkpoint_every: write ``out_dir/checkpoint.npz`` (atomically) at the first chunk
            boundary after every this many ms and at the end; ``None``: no checkpoints.
        resume: if ``out_dir`` already holds a run of this network: continue it from its
            last checkpoint (or from ``key``/``state`` if it has none) with the files cut back
            to that point. ``False``: refuse to touch an existing run.
        progress: print ``t``, steps/s, speed relative to real time and the ETA after every
            chunk (in place in a terminal or notebook; every 10 s in a log). ``False``: silent;
            a text stream: print there.

    Returns:
        The run as a :class:`StoredRun` (also ``load_run(out_dir)``); ``.state`` is the final
        state.

    Raises:
        SimulationError: non-finite state or a full SpikeList in a chunk (the files hold the
            chunks before it; the last checkpoint is in ``out_dir``). For a full SpikeList the
            message says how to continue: call again with a larger capacity, which resumes.
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
        )


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
    network, duration, out: Path, chunk_steps, total_steps, ckpt_steps, monitors, *, key, state,
    resume, progress,
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
    floats = [x for x in jax.tree.leaves(state.populations) if np.issubdtype(x.dtype, np.inexact)]
    plan = _plan_streams(network, monitors, chunk_steps, floats[0].dtype if floats else None)
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
    bar = _Progress(progress, end_step - start_step, step - start_step, network.dt)
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
                + _overflow_advice(monitors, result.recordings, chunk_steps, resumes_at)
            ) from None
        writer.append(k0 + n0, _chunk_rows(network, plan, monitors, result, k0))
        done = k0 + n0
        if ckpt_steps is not None and (done - last_ckpt >= ckpt_steps or done == end_step):
            writer.sync()
            metadata = {"lengths": writer.lengths, "chunks": writer.n_index, "step": done}
            _save_checkpoint(ckpt_path, network, result.state, metadata=metadata)
            last_ckpt = done
        bar.update(done - start_step, final=done == end_step)

    # The host side of chunk c runs in a worker thread while chunk c + 1 computes (the
    # compiled call returns only when its chunk is done and releases the GIL meanwhile); at
    # most one chunk waits for the worker, so memory holds two chunks of recordings.
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="brainsim-run_long") as pool:
            pending = None
            k = step
            while k < end_step:
                n = min(chunk_steps, end_step - k)
                result = _run_jit(network, state, monitors, n, None)
                state = result.state
                if k == step:
                    bar.start(k + n - start_step)  # speeds exclude the first chunk (compiling)
                if pending is not None:
                    pending.result()  # re-raises the worker's error, if any
                pending = pool.submit(finish_chunk, k, n, result)
                k += n
            if pending is not None:
                pending.result()
        writer.sync()
    finally:
        writer.close()
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
            f"({__version__}) reads version {RUN_FORMAT_VERSION}."
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
    shape = stream.get("shape")
    return (
        isinstance(stream.get("file"), str)
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

    def _spike_streams(self, population: str) -> list[int]:
        if population not in self.population_names:
            raise unknown_name_error("population", population, self.population_names)
        if population not in self.meta["spikes"]:
            raise ValueError(f"No spike recording of population {population!r} in this run.")
        return self.meta["spikes"][population]

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
        if population in self.meta["rates"]:
            count = float(np.sum(self._stream(self.meta["rates"][population]), dtype=np.float64))
        else:
            count = self.n_spikes(population)
        size = self.population_sizes[self.population_names.index(population)]
        return count / (size * self.duration * 1e-3) if self.duration else 0.0

    def spike_counts(self, population: str) -> np.ndarray:
        """Spikes of ``population`` per step (memory-mapped; needs a PopulationRate)."""
        if population not in self.meta["rates"]:
            raise ValueError(f"No PopulationRate of population {population!r} in this run.")
        return self._stream(self.meta["rates"][population])

    def trace(self, population: str, variable: str) -> tuple[np.ndarray, np.ndarray]:
        """``(times_ms, values)`` of a :class:`StateTrace` (values memory-mapped)."""
        for t in self.meta["traces"]:
            if t["population"] == population and t["variable"] == variable:
                values = self._stream(t["stream"])
                return np.arange(values.shape[0]) * t["every"] * self.dt, values
        raise ValueError(f"No StateTrace({population!r}, {variable!r}) in this run.")

    def load_checkpoint(self, network: Network) -> Checkpoint:
        """The run's last checkpoint (network and state) for ``network``."""
        return load_checkpoint(_inside(self.out_dir, _CHECKPOINT), network)


def load_run(out_dir: str | os.PathLike) -> StoredRun:
    """Open a folder written by :func:`run_long` (complete, running or crashed)."""
    return StoredRun(out_dir)
