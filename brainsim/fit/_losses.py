r"""Loss functions for fitting and training, written on plain arrays.

Conventions: time is the second-to-last axis and neurons the last, as in a
:class:`~brainsim.StateTrace` recording (``(steps, neurons)``) or a :class:`SpikeTrain`
recording; any leading axes are batch axes. Spike arrays hold the per-step spike values a
simulation produced (1.0 for a spike), which carry the surrogate gradient of the neuron's
spike function, so every loss below can be differentiated with respect to the parameters that
produced the spikes. ``dt`` is in ms, rates in Hz, times in ms.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jaxtyping import Array, ArrayLike, Float, Int

from .._errors import check_positive


def _time_axis_check(x, name, owner):
    if jnp.ndim(x) < 2:
        raise ValueError(
            f"{owner}: `{name}` must have shape (..., steps, neurons); got shape {jnp.shape(x)}."
        )


def voltage_mse(
    v: Float[Array, "... T n"],
    target: Float[Array, "... T n"],
    *,
    mask: Float[Array, "... T n"] | None = None,
) -> Float[Array, ""]:
    r"""Mean squared error between two voltage traces (mV²).

    .. math:: L = \frac{1}{\sum m} \sum_{k, i} m_{ki} (V_{ki} - \hat V_{ki})^2

    ``mask`` (0/1 or weights, broadcastable) selects the samples that count, e.g. to leave out
    the few steps around each target spike where a one-step shift costs the most.
    """
    if jnp.shape(v) != jnp.shape(target):
        raise ValueError(
            f"voltage_mse: `v` has shape {jnp.shape(v)} but `target` has {jnp.shape(target)}."
        )
    err = (v - target) ** 2
    if mask is None:
        return jnp.mean(err)
    mask = jnp.broadcast_to(jnp.asarray(mask, err.dtype), err.shape)
    return jnp.sum(mask * err) / jnp.maximum(jnp.sum(mask), 1.0)


def spike_counts(spikes: Float[Array, "... T n"]) -> Float[Array, "... n"]:
    """Number of spikes of every neuron (sum over the time axis)."""
    _time_axis_check(spikes, "spikes", "spike_counts")
    return jnp.sum(spikes, axis=-2)


def firing_rates(spikes: Float[Array, "... T n"], dt: float) -> Float[Array, "... n"]:
    """Mean firing rate of every neuron (Hz) over the ``T`` steps of ``dt`` ms."""
    check_positive("dt", dt, owner="firing_rates", unit="ms")
    _time_axis_check(spikes, "spikes", "firing_rates")
    return jnp.sum(spikes, axis=-2) / (spikes.shape[-2] * dt * 1e-3)


def spike_count_error(
    spikes: Float[Array, "... T n"], target_counts: Float[ArrayLike, "... n"]
) -> Float[Array, ""]:
    r"""Mean squared difference of spike counts, :math:`\langle (N_i - \hat N_i)^2 \rangle`."""
    return jnp.mean((spike_counts(spikes) - jnp.asarray(target_counts)) ** 2)


def rate_error(
    spikes: Float[Array, "... T n"], target_rate: Float[ArrayLike, "... n"], dt: float
) -> Float[Array, ""]:
    r"""Mean squared difference of firing rates (Hz²), :math:`\langle (\nu_i - \hat\nu_i)^2 \rangle`."""
    return jnp.mean((firing_rates(spikes, dt) - jnp.asarray(target_rate)) ** 2)


def _filtered_difference(a, b, decay):
    """``d_k = decay * d_{k-1} + a_k - b_k`` along axis -2 (one exact exponential step)."""
    diff = jnp.moveaxis(a - b, -2, 0)

    def body(d, x):
        d = decay * d + x
        return d, d

    _, d = lax.scan(body, jnp.zeros_like(diff[0]), diff)
    return jnp.moveaxis(d, 0, -2)


def van_rossum_distance(
    spikes: Float[Array, "... T n"],
    target: Float[Array, "... T n"],
    *,
    tau: float,
    dt: float,
    squared: bool = False,
) -> Float[Array, "... n"]:
    r"""Van Rossum (2001) distance between spike trains, per neuron, in its exact form.

    Each train is filtered with a causal exponential kernel :math:`e^{-t/\tau}` (unit jump per
    spike) and

    .. math:: D^2 = \frac{1}{\tau} \int_0^\infty \big(f(t) - \hat f(t)\big)^2\, dt .

    Spikes lie on the step grid, so between grid points the filtered difference is an exact
    exponential :math:`d_k e^{-(t - t_k)/\tau}` and the integral is summed in closed form:
    :math:`D^2 = \tfrac{1 - \lambda^2}{2} \sum_{k < T-1} d_k^2 + \tfrac12 d_{T-1}^2` with
    :math:`\lambda = e^{-\Delta t/\tau}` (the last term is the decay after the window). Hence
    one spike against none gives :math:`D^2 = 1/2` and two single spikes :math:`\Delta t` apart
    give :math:`D^2 = 1 - e^{-|\Delta t|/\tau}`, for any ``dt``.

    Arguments:
        spikes, target: per-step spike values ``(..., T, n)``.
        tau: filter time constant (ms). dt: step (ms).
        squared: return :math:`D^2` (smooth everywhere; what :func:`van_rossum_loss` uses)
            instead of :math:`D`.
    """
    check_positive("tau", tau, owner="van_rossum_distance", unit="ms")
    check_positive("dt", dt, owner="van_rossum_distance", unit="ms")
    _time_axis_check(spikes, "spikes", "van_rossum_distance")
    if jnp.shape(spikes) != jnp.shape(target):
        raise ValueError(
            f"van_rossum_distance: `spikes` has shape {jnp.shape(spikes)} but `target` has "
            f"{jnp.shape(target)}."
        )
    dtype = jnp.result_type(spikes, target, float)
    decay = jnp.exp(-jnp.asarray(dt, dtype) / tau)
    d = _filtered_difference(spikes.astype(dtype), jnp.asarray(target, dtype), decay)
    sq = d**2
    body = 0.5 * (1.0 - decay**2) * jnp.sum(sq[..., :-1, :], axis=-2)
    d2 = body + 0.5 * sq[..., -1, :]
    if squared:
        return d2
    # sqrt has an infinite slope at 0: keep the gradient finite for identical trains.
    tiny = jnp.finfo(dtype).tiny
    return jnp.where(d2 > 0, jnp.sqrt(jnp.maximum(d2, tiny)), 0.0)


def van_rossum_loss(
    spikes: Float[Array, "... T n"], target: Float[Array, "... T n"], *, tau: float, dt: float
) -> Float[Array, ""]:
    """Mean over neurons (and batch) of the squared van Rossum distance :math:`D^2`."""
    return jnp.mean(van_rossum_distance(spikes, target, tau=tau, dt=dt, squared=True))


def spike_times(
    spikes: Float[Array, "T n"], dt: float, n_spikes: int, *, t_start: float = 0.0
) -> Float[Array, "n_spikes n"]:
    r"""Times (ms) of the first ``n_spikes`` spikes of every neuron; missing ones at the end.

    Spike ``j`` of neuron ``i`` is at :math:`t_k = t_0 + k\,\Delta t` for the step ``k`` that
    holds it; if the neuron fired fewer than ``j + 1`` times the time is the end of the window
    :math:`t_0 + T\Delta t`. The value is exact; its gradient flows through the spike values
    (:math:`\partial t_j / \partial s_k = t_k - t_{end}` over the steps between spike ``j - 1``
    and spike ``j``), so a surrogate gradient pulls spikes earlier or later.
    """
    _time_axis_check(spikes, "spikes", "spike_times")
    if not (isinstance(n_spikes, int) and n_spikes >= 1):
        raise ValueError(f"spike_times: `n_spikes` must be a positive integer; got {n_spikes!r}.")
    if spikes.ndim != 2:
        raise ValueError(
            f"spike_times: `spikes` must have shape (steps, neurons) (vmap over batches); got "
            f"{spikes.shape}."
        )
    dtype = jnp.result_type(spikes, float)
    t = t_start + dt * jnp.arange(spikes.shape[0], dtype=dtype)
    return _spike_times(spikes.astype(dtype), t, jnp.asarray(t_start + dt * spikes.shape[0], dtype), n_spikes)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _spike_times(spikes, t, t_end, n_spikes):
    # Forward: the step of spike j is the first whose inclusive count exceeds j (a search per
    # neuron, O(n_spikes log T)); no (n_spikes x T) tensor and no scatter.
    T = spikes.shape[0]
    counts = lax.associative_scan(jnp.add, spikes, axis=0)  # XLA's CPU cumsum is quadratic
    j = jnp.arange(1, n_spikes + 1, dtype=counts.dtype)
    idx = jax.vmap(lambda c: jnp.searchsorted(c, j - 0.5), in_axes=1, out_axes=1)(counts)
    return jnp.where(idx < T, t[jnp.minimum(idx, T - 1)], t_end)


def _spike_times_fwd(spikes, t, t_end, n_spikes):
    counts = lax.associative_scan(jnp.add, spikes, axis=0)
    return _spike_times(spikes, t, t_end, n_spikes), (counts - spikes, t, t_end)


def _spike_times_bwd(n_spikes, residuals, g):
    # d t_j / d s_k = (t_k - t_end) for every step k that belongs to spike j (holds it, or
    # lies between spike j - 1 and it): a gather of the cotangent by spike number.
    counts_before, t, t_end = residuals
    j = jnp.clip(counts_before.astype(jnp.int32), 0, n_spikes)
    g = jnp.concatenate([g, jnp.zeros((1,) + g.shape[1:], g.dtype)], axis=0)
    d_spikes = jnp.take_along_axis(g, j, axis=0) * (t - t_end)[:, None]
    return d_spikes, jnp.zeros_like(t), jnp.zeros_like(t_end)


_spike_times.defvjp(_spike_times_fwd, _spike_times_bwd)


def spike_time_loss(
    spikes: Float[Array, "T n"],
    target_times: Float[ArrayLike, "m n"],
    *,
    dt: float,
    tau: float = 5.0,
    t_start: float = 0.0,
) -> Float[Array, ""]:
    r"""Smooth loss between spike times and target times (the first ``m`` spikes per neuron).

    With :math:`t_{ji}` from :func:`spike_times` and targets :math:`\hat t_{ji}` (use the end of
    the window, ``t_start + T*dt``, for "no spike"),

    .. math:: L = \frac{1}{mn} \sum_{j,i} \tau^2 \log\cosh\!\big((t_{ji} - \hat t_{ji})/\tau\big)

    which is quadratic (:math:`\tfrac12 \Delta t^2`) for errors below ``tau`` ms and grows
    linearly beyond, so a spike that is far off (or missing) does not swamp the others.
    """
    check_positive("tau", tau, owner="spike_time_loss", unit="ms")
    target_times = jnp.asarray(target_times)
    if target_times.ndim != 2 or target_times.shape[-1] != spikes.shape[-1]:
        raise ValueError(
            f"spike_time_loss: `target_times` must have shape (m, {spikes.shape[-1]}) (m spikes "
            f"per neuron); got {target_times.shape}."
        )
    times = spike_times(spikes, dt, int(target_times.shape[0]), t_start=t_start)
    x = (times - target_times) / tau
    # log(cosh(x)) = |x| + log1p(exp(-2|x|)) - log 2, stable for large |x|.
    ax = jnp.abs(x)
    return jnp.mean(tau**2 * (ax + jnp.log1p(jnp.exp(-2.0 * ax)) - jnp.log(2.0)))


def rate_regularizer(
    spikes: Float[Array, "... T n"],
    dt: float,
    *,
    lower: float | None = None,
    upper: float | None = None,
    lower_strength: float = 1.0,
    upper_strength: float = 1.0,
) -> Float[Array, ""]:
    r"""Activity regulariser of Zenke & Vogels (2021), on rates in Hz.

    .. math:: L = s_\ell \frac{1}{n}\sum_i \big[\nu_\ell - \nu_i\big]_+^2
              + s_u \big[\bar\nu - \nu_u\big]_+^2

    A per-neuron lower bound :math:`\nu_\ell` (``lower``) revives silent neurons; an upper
    bound :math:`\nu_u` (``upper``) on the population mean :math:`\bar\nu = \frac1n \sum_i
    \nu_i` keeps activity sparse. Leading axes are averaged over (per sample, then mean).
    """
    rates = firing_rates(spikes, dt)
    total = jnp.zeros((), rates.dtype)
    if lower is not None:
        total = total + lower_strength * jnp.mean(jax.nn.relu(lower - rates) ** 2)
    if upper is not None:
        total = total + upper_strength * jnp.mean(
            jax.nn.relu(jnp.mean(rates, axis=-1) - upper) ** 2
        )
    return total


def _labels_check(logits, labels, owner):
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"{owner}: `labels` must be integer class indices; got {labels.dtype}.")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"{owner}: `labels` has shape {labels.shape} but the readout gives one prediction "
            f"per {logits.shape[:-1]} (batch shape)."
        )
    return labels


def rate_cross_entropy(
    spikes: Float[Array, "... T classes"], labels: Int[ArrayLike, "..."]
) -> Float[Array, ""]:
    r"""Softmax cross-entropy with spike counts of the output neurons as logits (mean over
    the batch): the class whose neuron fires most wins."""
    logits = spike_counts(spikes)
    labels = _labels_check(logits, labels, "rate_cross_entropy")
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def membrane_cross_entropy(
    v: Float[Array, "... T classes"],
    labels: Int[ArrayLike, "..."],
    *,
    reduce: Callable = jnp.max,
    scale: float = 1.0,
) -> Float[Array, ""]:
    r"""Softmax cross-entropy over a membrane readout (non-spiking output neurons).

    The logits are ``scale * reduce(v, axis=-2)``: the maximum over time (default, as in
    Cramer et al. 2020 for SHD), or ``jnp.mean`` / ``jnp.sum`` for the time average. ``v`` in
    mV (offsets cancel in the softmax; ``scale`` in 1/mV sets its temperature).
    """
    _time_axis_check(v, "v", "membrane_cross_entropy")
    logits = scale * reduce(v, axis=-2)
    labels = _labels_check(logits, labels, "membrane_cross_entropy")
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def accuracy(logits: Float[Array, "... classes"], labels: Int[ArrayLike, "..."]) -> Float[Array, ""]:
    """Fraction of samples whose largest logit is the label."""
    return jnp.mean(jnp.argmax(logits, axis=-1) == jnp.asarray(labels))
