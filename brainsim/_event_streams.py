r"""Event streams (event cameras, silicon cochleas, tonic data sets) as a spike source.

:func:`events_to_spikes` bins a stream of events into the ``(T, n)`` spike counts of a
:class:`~brainsim.SpikeArray`. Event ``j`` at time :math:`t_j` on channel :math:`c_j` adds one
spike to row :math:`k_j = \lfloor t_j / \Delta t \rfloor` (the step whose interval
:math:`[k\Delta t, (k+1)\Delta t)` holds it), column :math:`c_j`; several events of one channel
in one step give a count above 1 (no event is dropped). The source emits row ``k`` in step
``k`` after its ``t_start``.
"""

from __future__ import annotations

import numpy as np

from ._errors import check_nonnegative, check_positive
from ._inputs import SpikeArray

_PER_MS = {"us": 1e3, "ms": 1.0, "s": 1e-3}
"""Units of event time per millisecond."""

_SPATIAL = ("x", "y", "p")


def _in_range(values: np.ndarray, extent: int, name: str, why: str) -> np.ndarray:
    """``values``, or a ValueError naming the first event outside ``0..extent-1``."""
    bad = (values < 0) | (values >= extent)
    if bad.any():
        j = int(np.argmax(bad))
        raise ValueError(
            f"events_to_spikes: event {j} has {name} {values[j]}, outside 0..{extent - 1} ({why})."
        )
    return values


def _channels(events, sensor_size) -> tuple[np.ndarray, int]:
    """``(channel of every event, number of channels)`` of a structured array with fields
    among x, y, p."""
    fields = [f for f in _SPATIAL if f in events.dtype.names]
    if sensor_size is None:
        raise ValueError(
            "events_to_spikes: events with fields (x, y, p) need `sensor_size`, tonic's (W, H, P) "
            "(e.g. (34, 34, 2) for N-MNIST, (700, 1, 1) for SHD): the channel of an event is "
            "x * H * P + y * P + p."
        )
    size = tuple(int(s) for s in np.atleast_1d(sensor_size))
    if len(size) != 3 or min(size) < 1:
        raise ValueError(
            f"events_to_spikes: `sensor_size` must be tonic's (W, H, P), three positive "
            f"integers (H = 1, P = 1 for an axis the events lack); got {sensor_size!r}."
        )
    coords = []
    for axis, (name, extent) in enumerate(zip(_SPATIAL, size, strict=True)):
        if name not in fields:
            if extent != 1:
                raise ValueError(
                    f"events_to_spikes: the events have no field {name!r} but sensor_size[{axis}]"
                    f" is {extent}; give 1 for an axis the events lack."
                )
            coords.append(np.zeros(len(events), np.int64))
            continue
        hint = "; polarities must be 0..P-1 (map -1/+1 with p > 0)" if name == "p" else ""
        c = np.asarray(events[name]).astype(np.int64)
        coords.append(_in_range(c, extent, name, f"sensor_size {size}{hint}"))
    return np.ravel_multi_index(coords, size), int(np.prod(size))


def events_to_spikes(
    events,
    dt: float,
    *,
    sensor_size=None,
    n_channels: int | None = None,
    time_unit: str | None = None,
    duration: float | None = None,
    t_start: float = 0.0,
) -> SpikeArray:
    r"""A :class:`~brainsim.SpikeArray` emitting ``events``, binned to steps of ``dt``.

    Arguments:
        events: either a structured array with a field ``t`` and fields among ``x``, ``y``,
            ``p`` (tonic's events; ``t`` in µs by default), or ``(t, channel)`` pairs: an
            array of shape ``(N, 2)`` or a tuple of two length-``N`` arrays (``t`` in ms by
            default). Times are measured from the start of the recording (>= 0).
        dt: the network's step (ms).
        sensor_size: for structured events, tonic's ``(W, H, P)``; the channel of an event
            is :math:`c = (x H + y) P + p` (``np.ravel_multi_index((x, y, p), sensor_size)``),
            so ``n = W H P`` channels. An axis the events lack must have size 1.
        n_channels: for ``(t, channel)`` events, the number of channels ``n``.
        time_unit: unit of ``t``: ``"us"``, ``"ms"`` or ``"s"`` (default ``"us"`` for
            structured events, as tonic, ``"ms"`` for ``(t, channel)`` pairs).
        duration: length of the spike array (ms, a whole number of steps); default: up to
            the step of the last event. Give it to batch samples of different lengths (a
            ``vmap`` needs equal shapes); an event at or after ``duration`` is an error.
        t_start: simulation time (ms) at which the recording's time 0 is emitted (the
            :class:`SpikeArray`'s ``t_start``).

    Returns:
        ``SpikeArray(counts, t_start)`` with ``counts`` ``(T, n)``: the number of events of
        channel ``c`` in step ``k`` (counts above 1 kept, never dropped).

    Example:
        >>> ev = np.zeros(3, dtype=[("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])
        >>> ev["x"], ev["t"], ev["p"] = [0, 1, 1], [0, 150, 180], [1, 0, 0]
        >>> src = bs.events_to_spikes(ev, dt=0.1, sensor_size=(2, 1, 2))
        >>> src.spikes  # (2, 4): channel (x=0, p=1) = 1 at step 0; (x=1, p=0) twice at step 1
    """
    check_positive("dt", dt, owner="events_to_spikes", unit="ms")
    check_nonnegative("t_start", t_start, owner="events_to_spikes", unit="ms")
    structured = isinstance(events, np.ndarray) and events.dtype.names is not None
    if structured:
        if "t" not in events.dtype.names:
            raise ValueError(
                f"events_to_spikes: structured events need a field 't'; got fields "
                f"{events.dtype.names}."
            )
        if n_channels is not None:
            raise ValueError(
                "events_to_spikes: structured events take `sensor_size`, not `n_channels`."
            )
        t = np.asarray(events["t"])
        channel, n = _channels(events, sensor_size)
    else:
        if sensor_size is not None:
            raise ValueError(
                "events_to_spikes: (t, channel) events take `n_channels`, not `sensor_size`."
            )
        if isinstance(events, tuple | list) and len(events) == 2:
            t, channel = (np.asarray(a) for a in events)
        else:
            arr = np.asarray(events)
            if arr.ndim != 2 or arr.shape[1] != 2:
                raise ValueError(
                    "events_to_spikes: `events` must be a structured array with fields (x, y, "
                    "t, p) (tonic) or (t, channel) pairs, shape (N, 2) or a tuple of two arrays; "
                    f"got shape {arr.shape}."
                )
            t, channel = arr[:, 0], arr[:, 1]
        if n_channels is None:
            raise ValueError("events_to_spikes: (t, channel) events need `n_channels`.")
        n = int(n_channels)
        if n < 1:
            raise ValueError(f"events_to_spikes: `n_channels` must be >= 1; got {n_channels}.")
        if t.shape != channel.shape or t.ndim != 1:
            raise ValueError(
                f"events_to_spikes: times and channels must be two 1-d arrays of one length; "
                f"got shapes {t.shape} and {channel.shape}."
            )
        if channel.size and not np.all(channel == np.round(channel)):
            raise ValueError("events_to_spikes: channels must be whole numbers.")
        channel = _in_range(channel.astype(np.int64), n, "channel", f"n_channels {n}")
    unit = time_unit if time_unit is not None else ("us" if structured else "ms")
    if unit not in _PER_MS:
        raise ValueError(
            f"events_to_spikes: `time_unit` must be 'us', 'ms' or 's'; got {time_unit!r}."
        )
    if not np.all(np.isfinite(t)):
        raise ValueError("events_to_spikes: event times must be finite.")
    if t.size and t.min() < 0:
        j = int(np.argmin(t))
        raise ValueError(
            f"events_to_spikes: event {j} has time {t[j]} {unit} < 0; times are from the start "
            "of the recording (shift them, or pass t_start to place the source later)."
        )
    step = dt * _PER_MS[unit]  # one step in the events' unit
    if np.issubdtype(t.dtype, np.integer) and abs(step - round(step)) < 1e-9 and round(step) > 0:
        k = t.astype(np.int64) // int(round(step))  # exact for integer µs and whole-µs dt
    else:
        # Rounded before the floor so that a time on a step boundary (0.3 ms with dt 0.1)
        # falls in the step it starts, not the one before by a rounding error.
        k = np.floor(np.round(t.astype(np.float64) / step, 9)).astype(np.int64)
    if duration is None:
        T = int(k.max()) + 1 if k.size else 1
    else:
        check_positive("duration", duration, owner="events_to_spikes", unit="ms")
        T = int(round(duration / dt))
        if T < 1 or abs(duration / dt - T) > 1e-6 * max(1.0, T):
            raise ValueError(
                f"events_to_spikes: `duration` {duration} ms must be a whole number of steps "
                f"of dt = {dt} ms."
            )
        late = k >= T
        if late.any():
            j = int(np.argmax(late))
            raise ValueError(
                f"events_to_spikes: event {j} at {t[j]} {unit} is at or after `duration` "
                f"{duration} ms (step {k[j]} of {T}); pass a longer duration or crop the events."
            )
    counts = np.bincount(k * n + channel, minlength=T * n).reshape(T, n)
    return SpikeArray(counts.astype(np.float32), t_start)
