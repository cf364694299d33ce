r"""Storage layouts of a projection and the delivery of spikes into a receptor's ring buffer.

Delivery writes each spike's weight into the *future* input of the postsynaptic receptor: a
ring buffer of ``D`` rows of ``n_post`` values, stored flat. A spike emitted in step ``k`` over a synapse with delay ``d`` steps lands in row
``(k + d) mod D`` and is read at the start of step ``k + d``.

Two layouts:

* :class:`Dense` — an ``n_pre × n_post`` weight matrix; delivery is a matrix–vector product
  (best for small, dense or trained networks).
* :class:`Sparse` — fixed-fan-out ELL by presynaptic neuron: ``targets[i, :]`` and
  ``weights[i, :]`` padded to the largest out-degree with the index ``n_post`` (skipped). Delivery is
  event-driven: only rows of neurons that spiked are read, in chunks of ``chunk_size``
  spikes, looping over exactly as many chunks as there are spikes (none is ever dropped).
  Its JVP is written in plain jnp over all synapses, so gradients with respect to weights and
  to (surrogate) spikes equal those of the dense computation.
"""

from __future__ import annotations

import abc
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float, Int

from ._events import SpikeEvents, chunk_indices, n_chunks
from .connect import EdgeList


def delay_steps(delay_ms, dt: float, *, owner: str, round_delays: bool) -> np.ndarray:
    """Convert delays (ms) to whole steps of ``dt``; ``None`` means one step.

    Raises if a delay is shorter than one step or (unless ``round_delays``) not a multiple of
    ``dt``.
    """
    if delay_ms is None:
        return np.asarray(1, np.int64)
    d = np.asarray(delay_ms, dtype=float)
    steps = np.rint(d / dt)
    if not round_delays:
        off = np.abs(d / dt - steps) > 1e-6 * np.maximum(1.0, np.abs(d / dt))
        if np.any(off):
            bad = d[off].ravel()[0] if d.ndim else float(d)
            raise ValueError(
                f"{owner}: delay {bad} ms is not a whole number of steps of dt = {dt} ms. "
                "Use delays that are multiples of dt, a smaller dt, or round_delays=True."
            )
    if np.any(steps < 1):
        bad = d[steps < 1].ravel()[0] if d.ndim else float(d)
        raise ValueError(
            f"{owner}: delay {bad} ms is shorter than one step (dt = {dt} ms). The shortest "
            "delay is one step: a spike affects its targets in the next step."
        )
    return steps.astype(np.int64)


def ring_row(ring, row, n_post: int):
    return lax.dynamic_slice(ring, (row * n_post,), (n_post,))


def add_to_ring_row(ring, row, values, n_post: int):
    current = ring_row(ring, row, n_post)
    return lax.dynamic_update_slice(ring, current + values.astype(ring.dtype), (row * n_post,))


class AbstractLayout(eqx.Module):
    """A choice of storage for a projection; ``build`` makes the connectivity value."""

    @abc.abstractmethod
    def build(self, edges: EdgeList, dt: float, *, owner: str, round_delays: bool, dtype):
        """Turn host-side edges into a device connectivity with delays in steps."""


class AbstractConnectivity(eqx.Module):
    """Built connectivity: weights are array leaves (fittable), sizes and delays structure."""

    n_pre: int = eqx.field(static=True)
    n_post: int = eqx.field(static=True)
    max_delay: int = eqx.field(static=True)
    n_synapses: int = eqx.field(static=True)

    @abc.abstractmethod
    def deliver(self, ring, cursor, events: SpikeEvents):
        """Add the weights of this step's spikes to the ring rows they arrive in."""

    @abc.abstractmethod
    def to_dense(self) -> Float[Array, "n_pre n_post"]:
        """Summed weight matrix (duplicates added; for inspection and tests)."""


# ----------------------------------------------------------------------------------- dense


class Dense(AbstractLayout):
    """Store the projection as a dense ``n_pre × n_post`` weight matrix."""

    def build(self, edges, dt, *, owner, round_delays, dtype):
        steps = delay_steps(edges.delay, dt, owner=owner, round_delays=round_delays)
        weights = np.zeros((edges.n_pre, edges.n_post))
        np.add.at(weights, (edges.pre, edges.post), edges.weights_per_edge())
        if steps.ndim == 0:
            return DenseConnectivity(
                jnp.asarray(weights, dtype),
                None,
                (int(steps),),
                edges.n_pre,
                edges.n_post,
                int(steps),
                edges.n_synapses,
            )
        per_pair = np.zeros((edges.n_pre, edges.n_post), np.int64)
        per_pair[edges.pre, edges.post] = steps
        clash = per_pair[edges.pre, edges.post] != steps
        if np.any(clash):
            raise ValueError(
                f"{owner}: two synapses between the same pair of neurons have different "
                "delays, which a Dense layout cannot store. Use Sparse()."
            )
        distinct = tuple(int(d) for d in np.unique(steps))
        return DenseConnectivity(
            jnp.asarray(weights, dtype),
            jnp.asarray(per_pair, jnp.int32),
            distinct,
            edges.n_pre,
            edges.n_post,
            max(distinct),
            edges.n_synapses,
        )


class DenseConnectivity(AbstractConnectivity):
    """Dense weights ``(n_pre, n_post)``; delays homogeneous or one per pair."""

    weights: Float[Array, "n_pre n_post"]
    delays: Int[Array, "n_pre n_post"] | None
    distinct_delays: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, weights, delays, distinct_delays, n_pre, n_post, max_delay, n_synapses):
        self.weights = weights
        self.delays = delays
        self.distinct_delays = distinct_delays
        self.n_pre = n_pre
        self.n_post = n_post
        self.max_delay = max_delay
        self.n_synapses = n_synapses

    def deliver(self, ring, cursor, events):
        n_ring = ring.shape[0] // self.n_post
        values = events.values.astype(self.weights.dtype)
        for d in self.distinct_delays:
            w = (
                self.weights
                if self.delays is None
                else jnp.where(self.delays == d, self.weights, 0)
            )
            ring = add_to_ring_row(ring, (cursor + d) % n_ring, values @ w, self.n_post)
        return ring

    def to_dense(self):
        return self.weights


# ----------------------------------------------------------------------------------- sparse


class Sparse(AbstractLayout):
    """Fixed-fan-out (ELL) storage by presynaptic neuron, event-driven delivery.

    ``chunk_size`` spikes are processed per loop iteration; it trades loop overhead against
    wasted work on padding and does not limit how many spikes are delivered.
    """

    chunk_size: int = eqx.field(static=True, default=8)

    def build(self, edges, dt, *, owner, round_delays, dtype):
        if self.chunk_size < 1:
            raise ValueError(f"Sparse: `chunk_size` must be >= 1; got {self.chunk_size}.")
        steps = delay_steps(edges.delay, dt, owner=owner, round_delays=round_delays)
        order = np.argsort(edges.pre, kind="stable")
        pre = edges.pre[order]
        counts = np.bincount(pre, minlength=edges.n_pre)
        fan_out = max(int(counts.max(initial=0)), 1)
        starts = np.cumsum(counts) - counts
        rank = np.arange(pre.size) - starts[pre]
        targets = np.full((edges.n_pre, fan_out), edges.n_post, np.int32)
        targets[pre, rank] = edges.post[order]
        weight = np.asarray(edges.weight, dtype=float)
        if weight.ndim == 0:
            weights = jnp.asarray(weight, dtype)
        else:
            w = np.zeros((edges.n_pre, fan_out))
            w[pre, rank] = weight[order]
            weights = jnp.asarray(w, dtype)
        if steps.ndim == 0:
            delays, max_delay, homogeneous = None, int(steps), int(steps)
        else:
            dl = np.ones((edges.n_pre, fan_out), np.int32)
            dl[pre, rank] = steps[order]
            delays, max_delay, homogeneous = jnp.asarray(dl), int(steps.max(initial=1)), 0
        return EllConnectivity(
            jnp.asarray(targets),
            weights,
            delays,
            homogeneous,
            self.chunk_size,
            edges.n_pre,
            edges.n_post,
            max_delay,
            edges.n_synapses,
        )


class EllConnectivity(AbstractConnectivity):
    """ELL by presynaptic neuron: ``targets[i, s]`` (padding = ``n_post``), ``weights`` per synapse
    (or a scalar for homogeneous weights), ``delays`` in steps per synapse (or one static delay)."""

    targets: Int[Array, "n_pre fan_out"]
    weights: Float[Array, "n_pre fan_out"] | Float[Array, ""]
    delays: Int[Array, "n_pre fan_out"] | None
    homogeneous_delay: int = eqx.field(static=True)
    chunk_size: int = eqx.field(static=True)

    def __init__(
        self,
        targets,
        weights,
        delays,
        homogeneous_delay,
        chunk_size,
        n_pre,
        n_post,
        max_delay,
        n_synapses,
    ):
        self.targets = targets
        self.weights = weights
        self.delays = delays
        self.homogeneous_delay = homogeneous_delay
        self.chunk_size = chunk_size
        self.n_pre = n_pre
        self.n_post = n_post
        self.max_delay = max_delay
        self.n_synapses = n_synapses

    @property
    def fan_out(self) -> int:
        return self.targets.shape[1]

    def deliver(self, ring, cursor, events):
        return deliver_sparse_group((self,), (ring,), cursor, (events.values,), events)[0]

    def to_dense(self):
        w = jnp.broadcast_to(self.weights, self.targets.shape)
        rows = jnp.broadcast_to(jnp.arange(self.n_pre)[:, None], self.targets.shape)
        dense = jnp.zeros((self.n_pre, self.n_post + 1), w.dtype)
        return dense.at[rows, self.targets].add(w)[:, : self.n_post]


def deliver_sparse_group(conns, rings, cursor, values, events: SpikeEvents):
    """Deliver the spikes of one presynaptic population through several sparse projections.

    The projections share one loop over spike chunks, so the spiking neurons are located
    once per chunk whatever the number of projections leaving the population. ``values[i]``
    is the spike vector for ``conns[i]`` (it differs from ``events.values`` only in
    magnitude, e.g. after short-term plasticity).
    """
    meta = tuple((c.homogeneous_delay, c.n_post) for c in conns)
    chunk = min(c.chunk_size for c in conns)
    return _sparse_deliver(
        meta,
        chunk,
        tuple(rings),
        tuple(values),
        tuple(c.weights for c in conns),
        tuple(c.targets for c in conns),
        tuple(c.delays for c in conns),
        cursor,
        events.words,
        events.offsets,
        events.count,
    )


def _flat_slots(targets, delays, homogeneous_delay, cursor, n_ring, n_post):
    """Flat ring positions for ``targets``; padding maps past the end and is dropped."""
    d = homogeneous_delay if delays is None else delays
    row = (cursor + d) % n_ring
    return jnp.where(targets < n_post, row * n_post + targets, n_ring * n_post)


@partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _sparse_deliver(
    meta, chunk, rings, values, weights, targets, delays, cursor, words, offsets, count
):
    events = SpikeEvents(values[0], words, offsets, count)

    def body(c, rings):
        idx = chunk_indices(events, c * chunk, chunk)
        out = []
        for (hd, n_post), ring, val, w, tg, dl in zip(
            meta, rings, values, weights, targets, delays, strict=True
        ):
            tgt = tg.at[idx].get(mode="fill", fill_value=n_post)
            d = None if dl is None else dl.at[idx].get(mode="fill", fill_value=1)
            spk = val.at[idx].get(mode="fill", fill_value=0)
            wi = w if w.ndim == 0 else w.at[idx].get(mode="fill", fill_value=0)
            contrib = jnp.broadcast_to((wi * spk[:, None]).astype(ring.dtype), tgt.shape)
            slots = _flat_slots(tgt, d, hd, cursor, ring.shape[0] // n_post, n_post)
            out.append(ring.at[slots.ravel()].add(contrib.ravel(), mode="drop"))
        return tuple(out)

    return lax.fori_loop(0, n_chunks(events, chunk), body, rings)


@_sparse_deliver.defjvp
def _sparse_deliver_jvp(meta, chunk, primals, tangents):
    rings, values, weights, targets, delays, cursor, *_ = primals
    rings_dot, values_dot, weights_dot, *_ = tangents
    out = _sparse_deliver(meta, chunk, *primals)
    # Tangent over every synapse (not only those of spiking neurons): surrogate gradients
    # flow through neurons that did not spike, exactly as in the dense computation.
    out_dot = []
    for (hd, n_post), ring, r_dot, val, v_dot, w, w_dot, tg, dl in zip(
        meta,
        rings,
        rings_dot,
        values,
        values_dot,
        weights,
        weights_dot,
        targets,
        delays,
        strict=True,
    ):
        slots = _flat_slots(tg, dl, hd, cursor, ring.shape[0] // n_post, n_post)
        w = jnp.broadcast_to(w, tg.shape)
        w_dot = jnp.broadcast_to(w_dot, tg.shape)
        t = v_dot[:, None].astype(w.dtype) * w + val[:, None].astype(w.dtype) * w_dot
        out_dot.append(
            r_dot
            + jnp.zeros_like(ring).at[slots.ravel()].add(t.astype(ring.dtype).ravel(), mode="drop")
        )
    return out, tuple(out_dot)
