r"""The trace-based STDP update of ELL synapses, with a native CPU kernel.

Every event of pair and triplet STDP changes the synapses of the neuron ``e`` that spiked by

.. math:: w \leftarrow \mathrm{clip}\big(w \pm (a_e\,f_\pm(w))\,b_p,\; w_{min}, w_{max}\big)

where ``a_e`` is an amplitude (one value, or one per neuron of the spiking side), ``b_p`` the
trace of the partner neuron on the other side of the synapse and ``f`` the weight dependence on
:math:`\hat w = \mathrm{clip}((w - w_{min}) / (w_{max} - w_{min}), 0, 1)`
(:class:`TraceDependence`): additive :math:`f = 1`; multiplicative :math:`f_+ = 1 - \hat w`,
:math:`f_- = \hat w`; power (Gütig) :math:`f_+ = (1 - \hat w)^\mu`, :math:`f_- = \hat w^\mu`.

* :func:`ell_trace_update_pre`: presynaptic spikes, the rows of ELL storage
  (partner = target);
* :func:`ell_trace_update_post`: postsynaptic spikes, the columns through the transposed index
  (partner = presynaptic neuron).

Implementations: the pure-jnp reference (:func:`~brainsim.kernels.ell_update_pre` /
``_post`` with the formula above, the oracle and the path on TPU), a native CPU kernel
(``kernels/cpu/stdp_update.cc``) that updates the weights in place in one call per event side,
and a GPU Pallas kernel (:mod:`brainsim.kernels._pallas_stdp`, an active-row design without
atomics; ``PALLAS_TRITON`` and ``PALLAS_PORTABLE`` both name it). ``AUTO``: native on CPU (the
reference if it did not compile), Pallas on CUDA, the reference elsewhere.
On the development CPU the reference costs ~0.3 ms per step and side for the 40k COBA E->E
projection (a data-dependent loop, gathers, a scatter, each a separate XLA CPU op); the kernel
is limited by the scattered memory accesses of the column update (BENCHMARKS.md §7).
Derivatives come from the reference run as one window of every neuron (``custom_jvp``; no
loop, so forward and reverse mode both work, and gradients equal the dense computation's);
``vmap`` runs one batched kernel call.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array

from . import _cpu, _pallas_stdp
from ._batching import batched
from ._dispatch import Implementation, select
from ._plasticity import ell_update_post, ell_update_pre

_KINDS = {"additive": 0, "multiplicative": 1, "power": 2}
_SUPPORTED = (
    Implementation.AUTO,
    Implementation.REFERENCE,
    Implementation.NATIVE_CPU,
    Implementation.PALLAS_TRITON,
    Implementation.PALLAS_PORTABLE,
)


class TraceDependence(NamedTuple):
    """A weight dependence in the form the STDP kernels evaluate (module docstring)."""

    kind: str
    """``"additive"``, ``"multiplicative"`` or ``"power"``."""
    w_min: Array
    w_max: Array
    mu: Array
    """Exponent of ``"power"`` (ignored otherwise): ``mu_plus`` for potentiation updates,
    ``mu_minus`` for depression."""


def dependence_factor(w, dependence: TraceDependence, potentiate: bool):
    """:math:`f_+(w)` (``potentiate``) or :math:`f_-(w)` of ``dependence``."""
    if dependence.kind not in _KINDS:
        raise ValueError(
            f"TraceDependence: `kind` must be one of {list(_KINDS)}; got {dependence.kind!r}."
        )
    if dependence.kind == "additive":
        return jnp.ones_like(w)
    hat = jnp.clip((w - dependence.w_min) / (dependence.w_max - dependence.w_min), 0, 1)
    base = 1 - hat if potentiate else hat
    if dependence.kind == "multiplicative":
        return base
    # base ** mu, with finite derivatives at base = 0: absent synapses and padding sit there
    # (w = 0 = w_min), and the masked-out update of one must not turn a gradient into
    # 0 * inf = NaN. Same values (0 ** mu is 1 for mu = 0, else 0).
    positive = base > 0
    power = jnp.where(positive, base, 1) ** dependence.mu
    return jnp.where(positive, power, jnp.where(dependence.mu == 0, 1, 0).astype(power.dtype))


def _apply(w, amplitude, partner, factor, clip, potentiate: bool):
    """``clip(w ± (amplitude * factor) * partner)``, in this order (the kernels' order)."""
    change = (amplitude * factor) * partner
    return clip(w + change if potentiate else w - change)


def trace_step(w, amplitude, partner, dependence: TraceDependence, potentiate: bool):
    """One event on synapses ``w``: ``clip(w ± (amplitude * f(w)) * partner)`` (jnp)."""
    factor = dependence_factor(w, dependence, potentiate)
    return _apply(w, amplitude, partner, factor,
                  lambda v: jnp.clip(v, dependence.w_min, dependence.w_max), potentiate)  # fmt: skip


def _gather(values, index):
    values = jnp.asarray(values)
    if values.ndim == 0:
        return values
    return values.at[index].get(mode="fill", fill_value=0)


def trace_event(amplitude, partner, factor, clip, *, potentiate: bool, pre_side: bool):
    """The block function ``fn(w, i, j, valid)`` of one STDP event, for the generic updates
    (:func:`ell_update_pre` / ``_post``, a synapse view's ``on_pre`` / ``on_post``):
    ``clip(w ± (amplitude[e] * factor(w)) * partner[p])`` with ``e`` the neuron that spiked
    (``i`` if ``pre_side``, else ``j``) and ``p`` the other one; ``amplitude`` may be a scalar.
    ``factor`` and ``clip`` are the weight dependence's ``f`` and bounds."""

    def fn(w, i, j, valid):
        event, other = (i, j) if pre_side else (j, i)
        return _apply(w, _gather(amplitude, event), _gather(partner, other), factor(w), clip,
                      potentiate)  # fmt: skip

    return fn


def _reference(values, index, spikes, amplitude, partner, params, *, dep, cfg, single=None):
    dependence = TraceDependence(dep, params[0], params[1], params[2])
    fn = trace_event(
        amplitude,
        partner,
        lambda w: dependence_factor(w, dependence, cfg.potentiate),
        lambda w: jnp.clip(w, dependence.w_min, dependence.w_max),
        potentiate=cfg.potentiate,
        pre_side=not cfg.columns,
    )
    if cfg.columns:
        return ell_update_post(values, index, spikes, fn, capacity=cfg.capacity, single=single)
    return ell_update_pre(values, index, spikes, fn, n_post=cfg.n_post, capacity=cfg.capacity,
                          single=single)  # fmt: skip


class _Config(NamedTuple):
    columns: bool
    potentiate: bool
    n_post: int
    capacity: int | None


def _call(index, spikes, amplitude, partner, params, values, *, dep, cfg, amplitude_base):
    """The native call. Arguments are unbatched or all carry a leading batch axis of 1 or B
    (the kernel broadcasts the shared ones); ``values`` has the output's shape."""
    n_pre, fan_out = values.shape[-2:]
    call = jax.ffi.ffi_call(
        "brainsim_stdp_update",
        jax.ShapeDtypeStruct(values.shape, values.dtype),
        input_output_aliases={5: 0},  # in place: no copy of the weights per step
    )
    return call(
        index,
        spikes,
        amplitude,
        partner,
        params,
        values,
        n_pre=np.int64(n_pre),
        fan_out=np.int64(fan_out),
        n_post=np.int64(cfg.n_post),
        index_width=np.int64(index.shape[-1]),
        columns=np.int64(cfg.columns),
        dependence=np.int64(_KINDS[dep]),
        potentiate=np.int64(cfg.potentiate),
        amplitude_base=np.int64(amplitude_base),
    )


def _call_batched(*args, **kw):
    """:func:`_call` on arguments with a leading batch axis of 1 or B (:func:`._batching.batched`)."""
    values = args[-1]
    batch = max(a.shape[0] for a in args)
    # Every batch element updates its own weights: shared initial weights are copied once.
    values = jnp.broadcast_to(values, (batch,) + values.shape[1:])
    return _call(*args[:-1], values, **kw)


def _native(values, index, spikes, amplitude, partner, params, *, dep, cfg):
    dtype = values.dtype
    amplitude = jnp.reshape(amplitude, (-1,)).astype(dtype)
    kw = dict(dep=dep, cfg=cfg, amplitude_base=amplitude.shape[0])
    args = (index.astype(jnp.int32), lax.stop_gradient(spikes).astype(dtype), amplitude,
            partner.astype(dtype), params.astype(dtype), values)  # fmt: skip

    # Unbatched, the weights go to the kernel as they are: any reshape of the loop-carried
    # weights makes XLA copy them before and after the in-place call (13 MB per step for the
    # 40k network). Under vmap every argument gets a leading batch axis and one batched call.
    @jax.custom_batching.custom_vmap
    def run(*xs):
        return _call(*xs, **kw)

    @run.def_vmap
    def _rule(axis_size, in_batched, *xs):
        lead = [x if b else x[None] for x, b in zip(xs, in_batched, strict=True)]
        return batched(functools.partial(_call_batched, **kw))(*lead), True

    return run(*args)


def _kernel_step(w, a, b, params_ref, *, dep, potentiate):
    """The formula inside the Pallas kernel (bounds and exponent read from ``params_ref``)."""
    dependence = TraceDependence(dep, params_ref[0], params_ref[1], params_ref[2])
    return trace_step(w, a, b, dependence, potentiate)


@functools.partial(jax.custom_jvp, nondiff_argnums=(6, 7, 8))
def _update(values, index, spikes, amplitude, partner, params, dep, cfg, impl):
    args = (values, index, spikes, amplitude, partner, params)
    reference = functools.partial(_reference, dep=dep, cfg=cfg)
    native = functools.partial(_native, dep=dep, cfg=cfg)

    def pallas(which, interpret):
        del which  # PALLAS_TRITON and PALLAS_PORTABLE: one kernel (PALLAS_TPU: see _check)
        step = functools.partial(_kernel_step, dep=dep, potentiate=cfg.potentiate)
        return functools.partial(_pallas_stdp.update, step=step, columns=cfg.columns,
                                 n_post=cfg.n_post, capacity=cfg.capacity,
                                 interpret=interpret)  # fmt: skip

    return select(impl, args, reference=reference, native=native, pallas=pallas,
                  tpu_supported=False)  # fmt: skip


@_update.defjvp
def _update_jvp(dep, cfg, impl, primals, tangents):
    out = _update(*primals, dep, cfg, impl)
    # The tangent is the reference's in one window of every neuron: no loop with a
    # data-dependent trip count, so reverse mode can transpose it.
    every = functools.partial(_reference, dep=dep, cfg=cfg, single=True)
    _, out_dot = jax.jvp(every, primals, tangents)
    return out, out_dot


def _check(fn, values, spikes, n_event, amplitude, partner, n_partner, dependence, impl):
    if impl not in _SUPPORTED:
        raise ValueError(
            f"{fn}: `implementation` must be one of {[i.name for i in _SUPPORTED]}; got {impl}"
            " (there is no TPU kernel: TPU has no general gather; AUTO uses the jnp reference "
            "there)."
        )
    if impl is Implementation.NATIVE_CPU and not _cpu.available():
        raise RuntimeError(f"native CPU kernels unavailable: {_cpu.status()}")
    if not isinstance(dependence, TraceDependence) or dependence.kind not in _KINDS:
        raise TypeError(
            f"{fn}: `dependence` must be a TraceDependence with kind in {list(_KINDS)}; "
            f"got {dependence!r}."
        )
    if values.ndim != 2:
        raise ValueError(f"{fn}: `values` must be (n_pre, fan_out); got shape {values.shape}.")
    if spikes.shape != (n_event,):
        raise ValueError(f"{fn}: `spikes` must have shape ({n_event},); got {spikes.shape}.")
    if amplitude.shape not in ((), (1,), (n_event,)):
        raise ValueError(
            f"{fn}: `amplitude` must be a scalar or have shape ({n_event},) (one per neuron "
            f"that can spike); got {amplitude.shape}."
        )
    if partner.shape != (n_partner,):
        raise ValueError(
            f"{fn}: `trace` must have shape ({n_partner},) (the partner neurons); "
            f"got {partner.shape}."
        )


def _validated_update(fn, values, index, spikes, amplitude, trace, dependence, cfg, impl):
    """Check the arguments of the public op ``fn`` and run it: rows (``cfg.columns`` false,
    the spikes and amplitude are presynaptic, the trace postsynaptic) or columns."""
    values, spikes = jnp.asarray(values), jnp.asarray(spikes)
    amplitude, trace = jnp.asarray(amplitude), jnp.asarray(trace)
    n_pre = values.shape[0] if values.ndim else 0
    n_event, n_partner = (cfg.n_post, n_pre) if cfg.columns else (n_pre, cfg.n_post)
    _check(fn, values, spikes, n_event, amplitude, trace, n_partner, dependence, impl)
    params = jnp.stack([jnp.asarray(p, values.dtype) for p in dependence[1:]])
    return _update(values, jnp.asarray(index), spikes, amplitude, trace, params,
                   dependence.kind, cfg, impl)  # fmt: skip


def ell_trace_update_pre(
    values,
    targets,
    spikes,
    amplitude,
    trace,
    dependence: TraceDependence,
    *,
    potentiate: bool,
    n_post: int,
    capacity: int | None = None,
    implementation: Implementation = Implementation.AUTO,
):
    r"""STDP event on the rows of the presynaptic neurons that spiked (module docstring).

    Arguments:
        values: ``(n_pre, fan_out)`` weights in ELL storage.
        targets: ``(n_pre, fan_out)`` int32 postsynaptic indices, ``n_post`` for padding.
        spikes: ``(n_pre,)``; non-zero marks a presynaptic spike.
        amplitude: scalar or ``(n_pre,)``: :math:`a_i`.
        trace: ``(n_post,)`` postsynaptic trace :math:`b_j`.
        dependence: the weight dependence and bounds.
        potentiate: ``True`` adds the change, ``False`` subtracts it.
        n_post: number of postsynaptic neurons.
        capacity: active neurons per loop iteration of the reference, programs of the Pallas
            kernel's one launch (never a limit).
        implementation: ``AUTO``, ``REFERENCE``, ``NATIVE_CPU``, ``PALLAS_TRITON`` or
            ``PALLAS_PORTABLE`` (the same GPU kernel).
    """
    cfg = _Config(False, bool(potentiate), int(n_post), capacity)
    return _validated_update("ell_trace_update_pre", values, targets, spikes, amplitude, trace,
                             dependence, cfg, implementation)  # fmt: skip


def ell_trace_update_post(
    values,
    post_slots,
    spikes,
    amplitude,
    trace,
    dependence: TraceDependence,
    *,
    potentiate: bool,
    capacity: int | None = None,
    implementation: Implementation = Implementation.AUTO,
):
    r"""STDP event on the columns of the postsynaptic neurons that spiked (module docstring).

    Arguments:
        values: ``(n_pre, fan_out)`` weights in ELL storage.
        post_slots: ``(n_post, fan_in)`` transposed index (:func:`ell_post_slots`).
        spikes: ``(n_post,)``; non-zero marks a postsynaptic spike.
        amplitude: scalar or ``(n_post,)``: :math:`a_j`.
        trace: ``(n_pre,)`` presynaptic trace :math:`b_i`.
        dependence, potentiate, capacity, implementation: as :func:`ell_trace_update_pre`.
    """
    post_slots = jnp.asarray(post_slots)
    cfg = _Config(True, bool(potentiate), int(post_slots.shape[0]), capacity)
    return _validated_update("ell_trace_update_post", values, post_slots, spikes, amplitude,
                             trace, dependence, cfg, implementation)  # fmt: skip
