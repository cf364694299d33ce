r"""How a plasticity rule reaches the synapses of one projection, whatever their storage.

A rule never indexes a weight array itself: it hands a block function
``fn(values, pre, post, valid) -> new_values`` to a *synapse view*, which applies it

* to the synapses of presynaptic neurons that spiked (:meth:`AbstractSynapses.on_pre`),
* to the synapses onto postsynaptic neurons that spiked (:meth:`AbstractSynapses.on_post`),
* or to every synapse (:meth:`AbstractSynapses.map`, for per-step homeostasis and decays).

The trace-based STDP event :math:`w \leftarrow \mathrm{clip}(w \pm (a f(w))\,b)` has its own
methods (:meth:`AbstractSynapses.trace_update_pre` / ``_post``) so that ELL storage can run it
as one native in-place kernel call (:mod:`brainsim.kernels._stdp`) when the weight dependence
is additive, multiplicative or Gütig; otherwise they fall back to :meth:`on_pre` /
:meth:`on_post` with the same formula.

``pre`` and ``post`` are the neuron indices of each synapse (broadcastable to ``values``;
padding entries hold ``n_pre``/``n_post``), so a rule gathers its per-neuron traces with
``trace.at[post].get(mode="fill", fill_value=0)``. :class:`DenseSynapses` works on an
``(n_pre, n_post)`` matrix with an optional mask of existing synapses;
:class:`EllSynapses` on ELL storage ``(n_pre, fan_out)`` and :class:`CsrSynapses` on CSR
storage ``(n_synapses,)`` touch only the rows and columns of neurons that spiked
(:mod:`brainsim.kernels._plasticity`).

Every view differentiates in forward and reverse mode, with the gradients of the dense
computation on the same synapses: the event-driven updates differentiate as one window of
every neuron (:func:`brainsim.kernels._active.for_each_active`).
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int

from .. import kernels


class AbstractSynapses(eqx.Module):
    """The synapses of one projection, as seen by a plasticity rule."""

    n_pre: int = eqx.field(static=True)
    n_post: int = eqx.field(static=True)

    @abc.abstractmethod
    def on_pre(self, values, spikes, fn):
        """Apply ``fn`` to the synapses of presynaptic neurons with a non-zero spike."""

    @abc.abstractmethod
    def on_post(self, values, spikes, fn):
        """Apply ``fn`` to the synapses onto postsynaptic neurons with a non-zero spike."""

    def trace_update_pre(self, values, spikes, amplitude, trace, dependence, *, potentiate):
        r"""The trace-based STDP event on the synapses of presynaptic neurons that spiked:
        :math:`w \leftarrow \mathrm{clip}(w \pm (a_i f_\pm(w))\,b_j)` with ``amplitude``
        :math:`a` (scalar or ``(n_pre,)``), postsynaptic ``trace`` :math:`b` and the weight
        ``dependence`` (an :class:`~brainsim.plasticity.AbstractWeightDependence`: ``f`` and
        the clip). ``potentiate`` picks :math:`+ f_+` or :math:`- f_-`. The same as
        :meth:`on_pre` with that function; storages may run it natively."""
        return self.on_pre(values, spikes, _trace_event(amplitude, trace, dependence, potentiate,
                                                        pre_side=True))  # fmt: skip

    def trace_update_post(self, values, spikes, amplitude, trace, dependence, *, potentiate):
        r"""As :meth:`trace_update_pre` for postsynaptic spikes: amplitude :math:`a_j` (scalar
        or ``(n_post,)``), presynaptic ``trace`` :math:`b_i`."""
        return self.on_post(values, spikes, _trace_event(amplitude, trace, dependence,
                                                         potentiate, pre_side=False))  # fmt: skip

    @abc.abstractmethod
    def map(self, values, fn):
        """Apply ``fn`` to every synapse (padding / absent synapses are left unchanged)."""

    @abc.abstractmethod
    def post_sum(self, values) -> Array:
        """``(n_post,)`` sums of ``values`` over the synapses onto each postsynaptic neuron."""

    @abc.abstractmethod
    def to_dense(self, values) -> Array:
        """``(n_pre, n_post)`` matrix of ``values`` (duplicate synapses summed)."""

    @abc.abstractmethod
    def get(self, values, pre, post) -> Array:
        """Values of the synapses ``pre[m] -> post[m]`` (0 where there is none; duplicates
        summed)."""

    @abc.abstractmethod
    def zeros(self, dtype) -> Array:
        """A per-synapse array of zeros in this storage (e.g. for eligibility traces)."""

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Host arrays ``(pre, post, valid)`` of the storage's shape: the neurons of each
        stored entry and whether it is a synapse (for checks and exports, not in a run).
        The default reads them through :meth:`map`."""
        shape = self.zeros(jnp.float32).shape

        def per_synapse(which: int, dtype):
            pick = lambda v, i, j, ok: jnp.broadcast_to((i, j, ok)[which], v.shape)  # noqa: E731
            return np.asarray(self.map(jnp.zeros(shape, dtype), pick))

        return per_synapse(0, jnp.int32), per_synapse(1, jnp.int32), per_synapse(2, bool)


def _trace_event(amplitude, trace, dependence, potentiate: bool, *, pre_side: bool):
    """The block function of :meth:`AbstractSynapses.trace_update_pre` / ``_post`` for any
    weight dependence (the formula of the STDP kernels)."""
    factor = dependence.potentiation if potentiate else dependence.depression
    return kernels.trace_event(amplitude, trace, factor, dependence.clip, potentiate=potentiate,
                       pre_side=pre_side)  # fmt: skip


class DenseSynapses(AbstractSynapses):
    """Synapses of an ``(n_pre, n_post)`` weight matrix; ``mask`` marks the pairs that are
    synapses (``None``: all of them)."""

    mask: Bool[Array, "n_pre n_post"] | None

    def __init__(self, n_pre: int, n_post: int, mask=None):
        self.n_pre = int(n_pre)
        self.n_post = int(n_post)
        self.mask = None if mask is None else jnp.asarray(mask, bool)

    def _masked(self, fn):
        if self.mask is None:
            return fn
        return lambda v, i, j, valid: fn(v, i, j, valid & self.mask)

    def _restrict(self, old, new):
        return new if self.mask is None else jnp.where(self.mask, new, old)

    def on_pre(self, values, spikes, fn):
        return self._restrict(values, kernels.dense_update_pre(values, spikes, fn))

    def on_post(self, values, spikes, fn):
        return self._restrict(values, kernels.dense_update_post(values, spikes, fn))

    def map(self, values, fn):
        rows = jnp.arange(self.n_pre)[:, None]
        cols = jnp.arange(self.n_post)[None, :]
        valid = jnp.ones(values.shape, bool) if self.mask is None else self.mask
        return self._restrict(values, fn(values, rows, cols, valid).astype(values.dtype))

    def post_sum(self, values):
        v = values if self.mask is None else jnp.where(self.mask, values, 0)
        return jnp.sum(v, axis=0)

    def to_dense(self, values):
        return values if self.mask is None else jnp.where(self.mask, values, 0)

    def get(self, values, pre, post):
        return self.to_dense(values)[jnp.asarray(pre), jnp.asarray(post)]

    def zeros(self, dtype):
        return jnp.zeros((self.n_pre, self.n_post), dtype)

    def pairs(self):
        pre, post = np.indices((self.n_pre, self.n_post))
        valid = np.ones(pre.shape, bool) if self.mask is None else np.asarray(self.mask)
        return pre, post, valid


class EllSynapses(AbstractSynapses):
    """ELL synapses by presynaptic neuron (``targets[i, s]``, padding ``n_post``) with the
    transposed index ``post_slots`` (:func:`brainsim.kernels.ell_post_slots`).

    ``capacity`` is the number of active neurons handled per loop iteration (default
    ``ceil(n / 400)`` clipped to 16..128, a little above the neurons spiking per step at 20 Hz and
    dt = 0.1 ms); it never limits how many are updated.
    """

    targets: Int[Array, "n_pre fan_out"]
    post_slots: Int[Array, "n_post fan_in"]
    capacity: int | None = eqx.field(static=True)

    def __init__(self, targets, n_post: int, *, capacity: int | None = None, post_slots=None):
        targets_np = np.asarray(targets)
        self.n_pre = int(targets_np.shape[0])
        self.n_post = int(n_post)
        if post_slots is None:
            post_slots = kernels.ell_post_slots(targets_np, self.n_post)
        self.targets = (
            targets if isinstance(targets, jnp.ndarray) else jnp.asarray(targets_np, jnp.int32)
        )
        self.post_slots = jnp.asarray(post_slots, jnp.int32)
        self.capacity = capacity

    def on_pre(self, values, spikes, fn):
        return kernels.ell_update_pre(
            values, self.targets, spikes, fn, n_post=self.n_post, capacity=self.capacity
        )

    def on_post(self, values, spikes, fn):
        return kernels.ell_update_post(values, self.post_slots, spikes, fn, capacity=self.capacity)

    def trace_update_pre(self, values, spikes, amplitude, trace, dependence, *, potentiate):
        form = dependence.trace_form(potentiate)
        if form is None:  # a dependence the kernels do not know: the generic block update
            return super().trace_update_pre(
                values, spikes, amplitude, trace, dependence, potentiate=potentiate
            )
        return kernels.ell_trace_update_pre(
            values, self.targets, spikes, amplitude, trace, form, potentiate=potentiate,
            n_post=self.n_post, capacity=self.capacity,
        )  # fmt: skip

    def trace_update_post(self, values, spikes, amplitude, trace, dependence, *, potentiate):
        form = dependence.trace_form(potentiate)
        if form is None:
            return super().trace_update_post(
                values, spikes, amplitude, trace, dependence, potentiate=potentiate
            )
        return kernels.ell_trace_update_post(
            values, self.post_slots, spikes, amplitude, trace, form, potentiate=potentiate,
            capacity=self.capacity,
        )  # fmt: skip

    def map(self, values, fn):
        rows = jnp.arange(self.n_pre)[:, None]
        valid = self.targets < self.n_post
        new = fn(values, rows, self.targets, valid)
        return jnp.where(valid, new, values).astype(values.dtype)

    def post_sum(self, values):
        v = jnp.where(self.targets < self.n_post, values, 0)
        out = jnp.zeros((self.n_post + 1,), values.dtype).at[self.targets.ravel()].add(v.ravel())
        return out[: self.n_post]

    def to_dense(self, values):
        rows = jnp.broadcast_to(jnp.arange(self.n_pre)[:, None], self.targets.shape)
        dense = jnp.zeros((self.n_pre, self.n_post + 1), values.dtype)
        return dense.at[rows, self.targets].add(values)[:, : self.n_post]

    def get(self, values, pre, post):
        pre, post = jnp.asarray(pre), jnp.asarray(post)
        hit = self.targets[pre] == post[..., None]
        return jnp.sum(jnp.where(hit, values[pre], 0), axis=-1)

    def zeros(self, dtype):
        return jnp.zeros(self.targets.shape, dtype)

    def pairs(self):
        post = np.asarray(self.targets)
        pre = np.broadcast_to(np.arange(self.n_pre)[:, None], post.shape)
        return pre, post, (post >= 0) & (post < self.n_post)


class CsrSynapses(AbstractSynapses):
    """CSR synapses by presynaptic neuron (``indptr``, ``indices``; weights flat, one per
    synapse) with the synapses by postsynaptic neuron (:func:`brainsim.kernels.csr_post_index`),
    both proportional to the number of synapses. Updates touch only the synapses of neurons
    that spiked (:func:`brainsim.kernels.csr_update_pre` / ``_post``); ``capacity`` as in
    :class:`EllSynapses`.
    """

    indptr: Int[Array, " n_pre_plus_1"]
    indices: Int[Array, " n_synapses"]
    post_ptr: Int[Array, " n_post_plus_1"]
    post_slots: Int[Array, " n_synapses"]
    max_fan_out: int = eqx.field(static=True)
    max_fan_in: int = eqx.field(static=True)
    capacity: int | None = eqx.field(static=True)

    def __init__(self, indptr, indices, n_post: int, *, capacity: int | None = None):
        indptr_np, indices_np = np.asarray(indptr), np.asarray(indices)
        self.n_pre = int(indptr_np.shape[0]) - 1
        self.n_post = int(n_post)
        post_ptr, post_slots, self.max_fan_in = kernels.csr_post_index(
            indptr_np, indices_np, self.n_post
        )
        self.max_fan_out = max(int(np.diff(indptr_np).max(initial=0)), 1)
        self.indptr = jnp.asarray(indptr_np, jnp.int32)
        self.indices = jnp.asarray(indices_np, jnp.int32)
        self.post_ptr = jnp.asarray(post_ptr)
        self.post_slots = jnp.asarray(post_slots)
        self.capacity = capacity

    def _pre(self):
        """The presynaptic neuron of every synapse."""
        n_syn = self.indices.shape[0]
        counts = jnp.diff(self.indptr)
        return jnp.repeat(jnp.arange(self.n_pre, dtype=jnp.int32), counts,
                          total_repeat_length=n_syn)  # fmt: skip

    def on_pre(self, values, spikes, fn):
        return kernels.csr_update_pre(values, self.indptr, self.indices, spikes, fn,
                                      n_post=self.n_post, max_fan_out=self.max_fan_out,
                                      capacity=self.capacity)  # fmt: skip

    def on_post(self, values, spikes, fn):
        return kernels.csr_update_post(values, self.indptr, self.post_ptr, self.post_slots,
                                       spikes, fn, max_fan_in=self.max_fan_in,
                                       capacity=self.capacity)  # fmt: skip

    def map(self, values, fn):
        valid = (self.indices >= 0) & (self.indices < self.n_post)
        new = fn(values, self._pre(), self.indices, valid)
        return jnp.where(valid, new, values).astype(values.dtype)

    def post_sum(self, values):
        out = jnp.zeros((self.n_post,), values.dtype)
        return out.at[self.indices].add(values, mode="drop")

    def to_dense(self, values):
        dense = jnp.zeros((self.n_pre, self.n_post), values.dtype)
        return dense.at[self._pre(), self.indices].add(values, mode="drop")

    def get(self, values, pre, post):
        pre, post = jnp.asarray(pre), jnp.asarray(post)
        start = self.indptr[pre][..., None]
        slots = start + jnp.arange(self.max_fan_out, dtype=start.dtype)
        inside = slots < self.indptr[pre + 1][..., None]
        hit = inside & (self.indices.at[slots].get(mode="fill", fill_value=-1) == post[..., None])
        return jnp.sum(jnp.where(hit, values.at[slots].get(mode="fill", fill_value=0), 0), axis=-1)

    def zeros(self, dtype):
        return jnp.zeros(self.indices.shape, dtype)

    def pairs(self):
        post = np.asarray(self.indices)
        pre = np.repeat(np.arange(self.n_pre), np.diff(np.asarray(self.indptr)))
        return pre, post, (post >= 0) & (post < self.n_post)
