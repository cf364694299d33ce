r"""Progress bars: one mechanism for :func:`~brainsim.simulate`, :func:`~brainsim.run_long`
and :func:`~brainsim.fit.fit`, on ``tqdm``.

Every driver takes ``progress=``:

* ``False``: nothing is shown or written;
* ``None`` (auto): a bar when someone can see it, i.e. in a notebook or when ``stderr`` is a
  terminal; nothing in logs, CI or tests;
* ``True``: a bar on ``stderr`` (or the notebook widget) even when ``stderr`` is a log;
* a text stream (``sys.stdout``, an open file, ``io.StringIO``): a text bar written there;
* a :class:`Progress` value: the same, with its settings.

A simulation bar shows biological time done / total, the speed relative to real time
(simulated ms per wall-clock ms, over the parts of the run that did not compile), steps/s and the remaining time. ``tqdm.auto`` picks a notebook widget when
``ipywidgets`` is installed and a text bar otherwise.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import warnings
from typing import TextIO

_TERMINAL_INTERVAL_S = 0.1
_LOG_INTERVAL_S = 10.0
"""Minimum seconds between redraws: a terminal redraws in place, a log gets a new line."""


@dataclasses.dataclass(frozen=True)
class Progress:
    """How a driver shows its progress (``progress=bs.Progress(...)``).

    Arguments:
        every_ms: for :func:`~brainsim.simulate`: biological time (ms, a whole number of
            steps) between updates; the run is computed in chunks of this length by one
            compiled loop (the results are those of one unchunked run). ``None``: about
            100 updates per run. Ignored by :func:`~brainsim.run_long` (its ``chunk`` sets
            the updates) and :func:`~brainsim.fit.fit` (every step).
        file: a text stream for a text bar; ``None``: ``stderr``, or the notebook widget.
        interval_s: minimum wall-clock seconds between redraws; ``None``: 0.1 s in a
            terminal or notebook, 10 s when writing to a file or log.

    Example:
        >>> result = bs.simulate(net, 60_000.0, key=key, progress=bs.Progress(every_ms=500.0))
    """

    every_ms: float | None = None
    file: TextIO | None = None
    interval_s: float | None = None


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()
    except AttributeError:
        return False
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def _is_terminal(stream) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def resolve(progress, owner: str) -> Progress | None:
    """``progress=`` of ``owner`` as a :class:`Progress`, or ``None`` for no bar (see the
    module documentation), or a ``TypeError`` naming the argument."""
    if progress is False:
        return None
    if progress is None:
        return Progress() if _in_notebook() or _is_terminal(sys.stderr) else None
    if progress is True:
        return Progress()
    if isinstance(progress, Progress):
        return progress
    if callable(getattr(progress, "write", None)):
        return Progress(file=progress)
    raise TypeError(
        f"{owner}: `progress` must be None (a bar when stderr is a terminal or in a notebook), "
        "True, False, a text stream or a brainsim.Progress(...); got "
        f"{type(progress).__name__}."
    )


def _tqdm_class(progress: Progress):
    if progress.file is not None:  # a stream asked for: text, never the widget
        from tqdm.std import tqdm

        return tqdm
    from tqdm import TqdmWarning

    with warnings.catch_warnings():
        # Without ipywidgets, tqdm.auto falls back to text in a notebook and warns about it
        # once per process; the fallback is what we want, the warning is noise.
        warnings.simplefilter("ignore", TqdmWarning)
        from tqdm.auto import tqdm
    return tqdm


def open_bar(progress: Progress, total: int, *, desc: str, unit: str, initial: int = 0):
    """A ``tqdm`` bar over ``total`` units for a resolved :class:`Progress`."""
    stream = progress.file if progress.file is not None else sys.stderr
    interval = progress.interval_s
    if interval is None:
        live = progress.file is None and _in_notebook() or _is_terminal(stream)
        interval = _TERMINAL_INTERVAL_S if live else _LOG_INTERVAL_S
    return _tqdm_class(progress)(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        file=progress.file,
        mininterval=interval,
        maxinterval=max(interval, 10.0),
        dynamic_ncols=True,
        leave=True,
    )


class SimulationBar:
    """A bar over simulation steps that also shows biological time and speed.

    ``update(done, compiled)`` sets the steps done since the start of the bar's run. The speed
    relative to real time (simulated ms per wall ms) counts only the parts that did not
    compile (``compiled=False``), so the first part of a run, and a shorter last one, do not
    drag it down for the rest of the run.
    """

    def __init__(
        self, progress: Progress, total_steps: int, dt: float, *, desc: str, initial: int = 0
    ):
        self.dt, self.total = dt, total_steps
        self.bar = open_bar(progress, total_steps, desc=desc, unit="step", initial=initial)
        self.last = (time.perf_counter(), initial)
        self.measured = (0.0, 0)  # wall seconds and steps of the parts that did not compile
        self.bar.set_postfix_str(self._postfix(initial), refresh=False)

    def _postfix(self, done: int) -> str:
        wall, steps = self.measured
        speed = f"{steps * self.dt / (wall * 1e3):.3g}x" if steps and wall > 0 else "--x"
        return (
            f"t = {_seconds(done * self.dt)}/{_seconds(self.total * self.dt)} s, {speed} real time"
        )

    def update(self, done: int, compiled: bool = False) -> None:
        now = time.perf_counter()
        if not compiled:
            wall, steps = self.measured
            self.measured = (wall + now - self.last[0], steps + done - self.last[1])
        self.last = (now, done)
        self.bar.set_postfix_str(self._postfix(done), refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _seconds(ms: float) -> str:
    return f"{ms / 1e3:.3f}" if math.isfinite(ms) else "--"
