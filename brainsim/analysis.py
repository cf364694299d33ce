r"""Spike-train statistics on the host (NumPy): firing rates, ISI variability, population rate.

Every function takes spikes as two parallel arrays, ``times`` (ms) and ``ids`` (neuron index
``0 <= id < n``), as returned by :meth:`SimulationResult.spikes <brainsim.SimulationResult.spikes>`.

Example:
    >>> times, ids = result.spikes("E")
    >>> rates = bs.analysis.firing_rates(times, ids, 3200, result.duration)   # Hz per neuron
    >>> cv = bs.analysis.isi_cv(times, ids, 3200)
"""

from __future__ import annotations

import numpy as np


def _spikes(times, ids, n: int):
    times = np.asarray(times, dtype=float).ravel()
    ids = np.asarray(ids).ravel()
    if times.shape != ids.shape:
        raise ValueError(
            f"`times` and `ids` must have the same length; got {times.size} and {ids.size}."
        )
    if not (isinstance(n, int | np.integer) and n > 0):
        raise ValueError(f"`n` must be a positive integer (the number of neurons); got {n!r}.")
    if ids.size:
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"`ids` must be integers; got dtype {ids.dtype}.")
        if ids.min() < 0 or ids.max() >= n:
            bad = ids[(ids < 0) | (ids >= n)][0]
            raise ValueError(f"neuron id {bad} is out of range for n = {n} (valid 0..{n - 1}).")
    return times, ids.astype(np.int64)


def firing_rates(times, ids, n: int, duration: float) -> np.ndarray:
    """Mean firing rate of each of ``n`` neurons (Hz) over ``duration`` ms.

    Returns an array of shape ``(n,)``: spike count / (duration / 1000).
    """
    _, ids = _spikes(times, ids, n)
    if not duration > 0:
        raise ValueError(f"`duration` must be positive (ms); got {duration!r}.")
    return np.bincount(ids, minlength=n) / (duration * 1e-3)


def isi_cv_per_neuron(times, ids, n: int, min_spikes: int = 3) -> np.ndarray:
    r"""Coefficient of variation of the inter-spike intervals of each neuron.

    :math:`\mathrm{CV} = \sigma_{ISI} / \mu_{ISI}` (population standard deviation) for neurons
    with at least ``min_spikes`` spikes; NaN for the others (and for neurons whose ISIs are
    all zero, which only spike sources emitting several spikes per step can produce).
    A Poisson train has CV 1, a regular train CV 0. Returns shape ``(n,)``.
    """
    times, ids = _spikes(times, ids, n)
    if min_spikes < 2:
        raise ValueError(f"`min_spikes` must be >= 2 (one interval); got {min_spikes}.")
    order = np.lexsort((times, ids))
    times, ids = times[order], ids[order]
    same = ids[1:] == ids[:-1]
    isi, owner = np.diff(times)[same], ids[1:][same]
    count = np.bincount(owner, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(owner, isi, minlength=n) / count
        # Two passes (deviations from each neuron's mean) keep a regular train at CV 0 exactly
        # instead of the rounding noise of E[x²] - E[x]².
        var = np.bincount(owner, (isi - mean[owner]) ** 2, minlength=n) / count
        cv = np.sqrt(var) / mean
    enough = np.bincount(ids, minlength=n) >= min_spikes
    return np.where(enough & (mean > 0), cv, np.nan)


def isi_cv(times, ids, n: int, min_spikes: int = 3) -> float:
    """Mean ISI coefficient of variation over the neurons with at least ``min_spikes`` spikes.

    Returns NaN when no neuron has enough spikes (a silent or very sparse population): the
    CV is then undefined, not zero. See :func:`isi_cv_per_neuron`.
    """
    cv = isi_cv_per_neuron(times, ids, n, min_spikes)
    valid = cv[np.isfinite(cv)]
    return float(valid.mean()) if valid.size else float("nan")


def population_rate(
    times, n: int, duration: float, dt: float, bin_ms: float = 5.0, *, t_start: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Instantaneous population rate (Hz per neuron) in bins of ``bin_ms``.

    Spike times lie on the step grid ``t_start + k * dt``; a spike of step ``k`` counts in bin
    ``k // (bin_ms / dt)``, so ``bin_ms`` must be a whole number of steps. The last bin is
    shorter when ``duration`` is not a multiple of ``bin_ms``; its rate uses its own width.

    Returns:
        ``(t, rate)``: the start time of each bin (ms) and the number of spikes in it divided
        by ``n`` and by the bin width (s).
    """
    times = np.asarray(times, dtype=float).ravel()
    if not (isinstance(n, int | np.integer) and n > 0):
        raise ValueError(f"`n` must be a positive integer (the number of neurons); got {n!r}.")
    n_steps = int(round(duration / dt))
    bin_steps = int(round(bin_ms / dt))
    if n_steps < 1 or abs(duration / dt - n_steps) > 1e-6 * max(1.0, n_steps):
        raise ValueError(f"`duration` {duration} ms must be a positive multiple of dt = {dt} ms.")
    if bin_steps < 1 or abs(bin_ms / dt - bin_steps) > 1e-6 * max(1.0, bin_steps):
        raise ValueError(f"`bin_ms` {bin_ms} must be a positive multiple of dt = {dt} ms.")
    steps = np.rint((times - t_start) / dt).astype(np.int64)
    if steps.size and (steps.min() < 0 or steps.max() >= n_steps):
        raise ValueError(
            f"spike times must lie in [t_start, t_start + duration) = [{t_start}, "
            f"{t_start + duration}) ms."
        )
    n_bins = -(-n_steps // bin_steps)
    counts = np.bincount(steps // bin_steps, minlength=n_bins)
    starts = np.arange(n_bins) * bin_steps
    widths_ms = (np.minimum(starts + bin_steps, n_steps) - starts) * dt
    return t_start + starts * dt, counts / (n * widths_ms * 1e-3)
