r"""Storage layouts of a projection and the delivery of spikes into a receptor's ring buffer.

Delivery writes each spike's weight into the *future* input of the postsynaptic receptor: a
ring buffer of ``D`` rows of ``n_post`` values, stored flat. A spike emitted in step ``k`` over
a synapse with lag ``l`` steps lands in row ``(k + l) mod D`` and is read at the start of step
``k + l``. The lag of a delay :math:`d` (ms) is :math:`d/\Delta t + 1` (:func:`delay_steps`):
built connectivity stores lags (``delays``, ``max_delay``, ``distinct_delays`` are in lag
steps), so a zero delay acts in the next step, as in Brian2 and NEST.

Layouts:

* :class:`Dense` — an ``n_pre × n_post`` weight matrix; delivery is a matrix–vector product
  (best for small, dense or trained networks).
* :class:`Sparse` — fixed-fan-out ELL by presynaptic neuron: ``targets[i, :]`` and
  ``weights[i, :]`` padded to the largest out-degree with the index ``n_post`` (skipped). Delivery is
  event-driven: only rows of neurons that spiked are read, in chunks of ``chunk_size``
  spikes, looping over exactly as many chunks as there are spikes (none is ever dropped).
  Its JVP is written in plain jnp over all synapses, so gradients with respect to weights and
  to (surrogate) spikes equal those of the dense computation.
* :class:`CSR` — compressed rows by presynaptic neuron (``indptr``, ``indices``, ``weights``,
  ``delays``): memory proportional to the synapses whatever the spread of out-degrees (ELL pads
  every row to the largest), event-driven delivery load-balanced over the delivered synapses.
* :class:`Procedural` — no stored synapses: the targets and weights of a neuron that spiked
  are regenerated from ``(seed, neuron, index)`` every step (connectivity from
  :func:`brainsim.connect.procedural_fixed_outdegree` /
  :func:`~brainsim.connect.procedural_fixed_probability`); memory independent of the synapses.

The plan delivers merged Sparse rows of fan-out 1 (one-to-one projections: background
drives) as a :class:`PointwiseConnectivity`, an add into a slice of a ring row or a
scatter-add in plain jnp, with the sums of the ELL kernel bitwise.

Every layout gives the same delivery (up to float summation order) and the same gradients.
Dense, Sparse and CSR also accept a procedural rule, which they materialise at build.

A built connectivity can deliver into a ring other than its population's own
(:meth:`AbstractConnectivity.placed`): target ``t`` goes to column ``t + offset`` of a ring
``width`` neurons wide, the population's place in a merged group of the plan
(:mod:`brainsim._plan`). Dense, Procedural and LearnableDelays do it as a *window*: a static
offset with no copy of the synapses, and targets whose column falls outside ``[0, width)``
skipped, which is also the share of the targets a device owning ``width`` neurons of the
population keeps (``placed(-first, width)``).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Hashable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float, Int

from . import kernels
from ._errors import check_positive_int
from .connect import EdgeList, ProceduralEdges


def delay_steps(delay_ms, dt: float, *, owner: str, round_delays: bool) -> np.ndarray:
    r"""The transmission lag, in steps, of synapses with delays ``delay_ms`` (ms; ``None`` = 0).

    A spike emitted by step ``k`` over a synapse with delay :math:`d` is first integrated by
    its target in step :math:`k + d/\Delta t + 1`, as in Brian2 and NEST
    (:mod:`brainsim._timing`): the lag is :math:`d/\Delta t + 1` steps, at least one (a zero
    delay acts in the next step). Raises if a delay is negative, not finite or (unless
    ``round_delays``) not a whole number of steps.
    """
    if delay_ms is None:
        return np.asarray(1, np.int64)
    d = np.asarray(delay_ms, dtype=float)
    if not np.all(np.isfinite(d)):
        bad = d[~np.isfinite(d)].ravel()[0] if d.ndim else float(d)
        raise ValueError(f"{owner}: delay {bad} ms is not a finite number. Pass delays >= 0 ms.")
    steps = np.rint(d / dt)
    if not round_delays:
        off = np.abs(d / dt - steps) > 1e-6 * np.maximum(1.0, np.abs(d / dt))
        if np.any(off):
            bad = d[off].ravel()[0] if d.ndim else float(d)
            raise ValueError(
                f"{owner}: delay {bad} ms is not a whole number of steps of dt = {dt} ms. "
                "Use delays that are multiples of dt, a smaller dt, or round_delays=True."
            )
    if np.any(steps < 0):
        bad = d[steps < 0].ravel()[0] if d.ndim else float(d)
        raise ValueError(
            f"{owner}: delay {bad} ms is negative. Delays are >= 0 ms (a zero delay acts in "
            "the next step, as in Brian2)."
        )
    return steps.astype(np.int64) + 1


def host_to_device(values, dtype) -> jax.Array:
    """NumPy ``values`` as a device array of ``dtype``, converted on the host.

    ``jnp.asarray`` of a NumPy array compiles a small XLA program per distinct shape and
    dtype (~7 ms each: seconds for a network with many projections); casting in NumPy and
    ``jax.device_put`` compile nothing.
    """
    if isinstance(values, jax.Array):
        return values.astype(dtype)
    return jax.device_put(np.asarray(values, dtype=np.dtype(dtype)))


def materialise(edges, owner: str) -> EdgeList:
    """The :class:`~brainsim.connect.EdgeList` a stored layout builds from: ``edges`` itself,
    or every synapse of a procedural rule generated in full; anything else is a ``TypeError``
    naming ``owner``."""
    if isinstance(edges, ProceduralEdges):
        return edges.edges()
    if not isinstance(edges, EdgeList):
        raise TypeError(
            f"{owner}: expected connectivity from brainsim.connect; got {type(edges).__name__}."
        )
    return edges


def ring_row(ring, row, n_post: int):
    """Row ``row`` (the ``n_post`` values arriving at one step) of a flat ring buffer."""
    return lax.dynamic_slice(ring, (row * n_post,), (n_post,))


def add_to_ring_row(ring, row, values, n_post: int, start: int = 0):
    """The ring buffer with ``values`` (cast to the ring's dtype) added to row ``row`` (rows of
    ``n_post``), from column ``start`` on: how a connectivity's ``deliver`` schedules input
    ``l`` steps ahead, with ``row = (cursor + l) % D`` and ``D = ring.shape[0] // n_post``."""
    at = row * n_post + start
    current = lax.dynamic_slice(ring, (at,), (values.shape[0],))
    return lax.dynamic_update_slice(ring, current + values.astype(ring.dtype), (at,))


def check_window(offset, width, owner: str) -> tuple[int, int]:
    """``(offset, width)`` of :meth:`AbstractConnectivity.placed` as Python ints, or an error
    naming the bad one."""
    width = check_positive_int("width", width, owner=f"{owner}.placed", what=" (neurons)")
    if isinstance(offset, bool | np.bool_) or not isinstance(offset, int | np.integer):
        raise TypeError(
            f"{owner}.placed: `offset` must be an int (a static ring column); got {offset!r}."
        )
    return int(offset), width


def placed_window(conn, size: int, offset, width) -> tuple[int, int]:
    """The window ``(post_offset, width)`` of ``conn`` (a format with a static
    ``post_offset``, its population ``size`` neurons) placed at ``(offset, width)``.

    Placing is relative to the ring ``conn`` already delivers into: an unplaced connectivity
    (offset 0, its population's width) takes the new window as it is; one placed whole inside a
    wider ring shifts it by its own offset. A window that already cuts the population cannot be
    placed again (the neurons it dropped are gone)."""
    owner = type(conn).__name__
    offset, width = check_window(offset, width, owner)
    if conn.post_offset == 0 and conn.n_post == size:
        return offset, width
    if conn.post_offset >= 0 and conn.post_offset + size <= conn.n_post:
        return conn.post_offset + offset, width
    raise ValueError(
        f"{owner}.placed: this connectivity keeps only the targets in columns "
        f"[{conn.post_offset}, {conn.post_offset + size}) ∩ [0, {conn.n_post}) of its ring, so "
        "it cannot be placed again; place the unplaced connectivity instead."
    )


def window_columns(size: int, offset: int, width: int) -> tuple[int, int]:
    """The targets ``lo .. hi - 1`` of a population of ``size`` neurons that a window
    ``(offset, width)`` keeps (``lo == hi``: none)."""
    lo = min(max(0, -offset), size)
    return lo, max(lo, min(size, width - offset))


class AbstractLayout(eqx.Module):
    """A choice of storage for a projection; ``build`` makes the connectivity value."""

    @abc.abstractmethod
    def build(self, edges: EdgeList, dt: float, *, owner: str, round_delays: bool, dtype):
        """Turn host-side edges into a device connectivity with delays in steps."""


class AbstractConnectivity(eqx.Module):
    """Built connectivity: weights are array leaves (fittable), sizes and delays structure.

    ``max_delay`` is the longest lag in steps (at least 1: :func:`delay_steps`); the
    receptor's ring buffer has that many rows of ``n_post`` values. Weights kept in a field
    named ``weights`` can be fitted and made plastic.
    """

    n_pre: int = eqx.field(static=True)
    n_post: int = eqx.field(static=True)
    max_delay: int = eqx.field(static=True)
    n_synapses: int = eqx.field(static=True)

    @abc.abstractmethod
    def deliver(self, ring, cursor, spikes):
        """Add the weights of this step's spikes (``(n_pre,)`` values, 0 = none) to the ring
        rows they arrive in; ``cursor`` is the current step."""

    def clear_and_deliver(self, ring, cursor, spikes, *, after=()):
        """Zero the ring row ``cursor mod D`` (the row the receptor read this step) once every
        array in ``after`` is computed (:func:`brainsim.kernels.clear_ring_row`), then
        :meth:`deliver`. Formats whose kernel clears the row itself override this: one kernel
        call per step instead of two."""
        ring = kernels.clear_ring_row(ring, cursor, n_post=self.n_post, after=after)
        return self.deliver(ring, cursor, spikes)

    @abc.abstractmethod
    def to_dense(self) -> Float[Array, "n_pre n_post"]:
        """Summed weight matrix (duplicates added; for inspection and tests)."""

    def plastic_synapses(self, edges, *, owner: str):
        """What a plasticity rule on this connectivity works through: ``(synapses,
        weights)``, a :class:`~brainsim.plasticity.AbstractSynapses` view of the stored
        synapses and the per-synapse weights in that view's layout (the network carries them
        in its state and puts them back into ``weights`` before every delivery). ``edges``
        is the :class:`~brainsim.connect.EdgeList` the connectivity was built from, or
        ``None``. Formats that cannot carry plasticity keep this default, which refuses."""
        raise TypeError(
            f"{owner}: plasticity needs a Dense(), Sparse() or CSR() layout, or a format whose "
            f"connectivity gives plasticity a view of its synapses (plastic_synapses); "
            f"{type(self).__name__} does not. Pass layout=brainsim.Sparse(), brainsim.CSR() or "
            "brainsim.Dense()."
        )


    def with_weights(self, weights) -> AbstractConnectivity:
        """This connectivity with ``weights`` (same layout) in place of its own: how a plastic
        projection transmits the weights of the plasticity state."""
        return eqx.tree_at(lambda c: c.weights, self, weights)

    # The plan (brainsim._plan) merges populations into groups and projections into one
    # delivery per receptor of a group. A format takes part through these three methods; the
    # defaults deliver it on its own, into its population's place through a scratch ring.

    def placed(self, offset: int, width: int) -> AbstractConnectivity:
        """This connectivity delivering into neurons ``offset .. offset + n_post - 1`` of a
        ring ``width`` neurons wide (its population's place in a merged group).

        Target ``t`` of the population goes to column ``t + offset`` of the wider ring. The
        result's ``n_post`` is ``width``, the ring's row length (what the step and the ring
        clearing read); the population's own size stays in the format (its weight matrix, its
        rule). Formats with window delivery (Dense, Procedural, LearnableDelays) also accept
        an ``offset`` below 0 or a ``width`` shorter than the population: the targets whose
        column falls outside ``[0, width)`` are then skipped (a device owning neurons
        ``f .. f + width - 1`` of the population: ``placed(-f, width)``).

        The default (a format without its own placement, e.g. a user's) delivers into a
        scratch ring of its population's width and adds that into the window
        (:class:`ScratchPlaced`): correct for any format, at the cost of ``D × n`` values per
        step; formats override it to shift their targets instead."""
        if offset == 0 and width == self.n_post:
            return self
        return ScratchPlaced(self, offset, width)

    def merge_key(self) -> Hashable | None:
        """Connectivities with equal keys are merged by :meth:`merge` into one delivery;
        ``None`` (the default) delivers this one on its own."""
        return None

    @classmethod
    def merge(cls, rows, width: int) -> list:
        """Merge connectivities into as few as possible.

        ``rows``: ``[(block, [(connectivity, offset), ...]), ...]``: for each block of rows
        (one presynaptic spike vector), the connectivities from it and the offsets of their
        targets in the ring of ``width`` neurons. Returns ``[(blocks, connectivity), ...]``,
        each connectivity delivering the spikes of its blocks, concatenated in order."""
        raise NotImplementedError(f"{cls.__name__} does not merge.")


def scratch_delivery(conn, rows: int, dtype, cursor, spikes):
    """``(rows, conn.n_post)``: what ``conn`` delivers this step into a zeroed ring of
    ``rows`` rows (for wrappers that move it into another ring's window)."""
    n = conn.n_post
    return conn.deliver(jnp.zeros((rows * n,), dtype), cursor, spikes).reshape(rows, n)


class ScratchPlaced(AbstractConnectivity):
    """A connectivity without its own placement, delivering into neurons ``offset ..
    offset + size - 1`` of a ring ``width`` wide: it delivers into a zeroed ring of its own
    population's width, which is then added into the window (any format, ``D × size`` values
    of work per step)."""

    inner: AbstractConnectivity
    offset: int = eqx.field(static=True)

    def __init__(self, inner, offset, width):
        if offset < 0 or offset + inner.n_post > width:
            raise ValueError(
                f"{type(inner).__name__}.placed: a format without its own placement can only "
                f"be placed whole inside a ring; got offset {offset} and width {width} for "
                f"{inner.n_post} neurons."
            )
        self.inner = inner
        self.offset = int(offset)
        self.n_pre = inner.n_pre
        self.n_post = int(width)
        self.max_delay = inner.max_delay
        self.n_synapses = inner.n_synapses

    @property
    def weights(self):
        return self.inner.weights

    def with_weights(self, weights):
        return eqx.tree_at(lambda c: c.inner, self, self.inner.with_weights(weights))

    def plastic_synapses(self, edges, *, owner):
        return self.inner.plastic_synapses(edges, owner=owner)

    def deliver(self, ring, cursor, spikes):
        rows = ring.shape[0] // self.n_post
        scratch = scratch_delivery(self.inner, rows, ring.dtype, cursor, spikes)
        grid = ring.reshape(rows, self.n_post)
        window = lax.dynamic_slice_in_dim(grid, self.offset, scratch.shape[1], axis=1)
        grid = lax.dynamic_update_slice_in_dim(grid, window + scratch, self.offset, axis=1)
        return grid.reshape(-1)

    def to_dense(self):
        dense = self.inner.to_dense()
        return jnp.pad(dense, ((0, 0), (self.offset, self.n_post - self.offset - dense.shape[1])))


def _merge_key(conn, kind: str, tile: int):
    """Merge key of the event-driven formats: same kernel, tiling and weight dtype (which
    weights share a delivery is decided by :func:`_weight_families`)."""
    return (kind, tile, conn.implementation, np.dtype(conn.weights.dtype))


def _weight_families(rows) -> list:
    """``rows`` (as :meth:`AbstractConnectivity.merge` takes them) split into families that
    are merged separately, so that a shared (scalar) weight is not needlessly turned into
    one weight per synapse.

    A merge that mixes a scalar weight with other weights stores one weight per synapse.
    That is worth it only where a weight per synapse costs no more memory than the neurons
    do (one-to-one and sparser projections, e.g. background drives); for denser
    projections the per-synapse weights would cost more memory traffic than the kernel call
    the merge saves. So every denser projection with a scalar weight forms a family with
    all others sharing that *same* weight (COBA's E→E and E→I: one delivery, still one
    scalar), and everything else is one family."""
    dense = {
        _scalar_identity(c.weights)
        for _, parts in rows
        for c, _ in parts
        if jnp.ndim(c.weights) == 0 and c.n_synapses > 2 * (c.n_pre + c.n_post)
    }
    families: dict[Hashable, dict] = {}
    for block, parts in rows:
        for c, offset in parts:
            identity = _scalar_identity(c.weights) if jnp.ndim(c.weights) == 0 else None
            family = families.setdefault(identity if identity in dense else None, {})
            family.setdefault(block, []).append((c, offset))
    return [list(f.items()) for f in families.values()]


def _scalar_identity(w):
    """What makes two scalar weights the same: the value of a concrete one; a traced weight
    (a parameter being differentiated) is merged only with itself, so that its gradient is
    not split."""
    if isinstance(w, jax.core.Tracer):
        return ("array", id(w))
    return ("value", np.asarray(w).item())


def _shared_scalar(convs):
    """The weight all ``convs`` share, when each has the same scalar weight; else ``None``."""
    if not all(jnp.ndim(c.weights) == 0 for c in convs):
        return None
    if len({_scalar_identity(c.weights) for c in convs}) != 1:
        return None
    return convs[0].weights


def array_module(*arrays):
    """NumPy when every array is a host (NumPy) array, else jax.numpy: the plan is merged on
    the host for a network of concrete values (no compilation, no device round trips) and
    in the traced program when the values are traced (gradients, vmap)."""
    return np if all(isinstance(x, np.ndarray | np.generic) for x in arrays) else jnp


def _scattered(array, positions, values):
    """``array`` with ``values`` written at ``positions`` (NumPy or jax)."""
    if isinstance(array, np.ndarray):
        array = array.copy()
        array[positions] = values
        return array
    return array.at[positions].set(values)


def _synapse_delays(conn, shape):
    """Per-synapse lags of an ELL/CSR connectivity (its one static lag broadcast)."""
    if conn.delays is not None:
        return conn.delays.astype(np.int32)
    xp = array_module(conn.weights)
    return xp.full(shape, conn.homogeneous_delay or 1, np.int32)


def _fan_out_buckets(blocks, fan_out, rows):
    """Blocks of rows grouped for padding to the widest of their group. A block joins the
    group of the wider ones when padding at most doubles the work of its spikes, or when
    its rows are few: padding them adds at most 1/8 to the group's slots (memory, and on
    average work), less than a delivery of their own costs (an event kernel call per step
    and ~0.2 s of compilation: Potjans–Diesmann's inhibitory rows, fan-out 397 against the
    excitatory 823, 591 rows against 7126). Rows of fan-out 1 stay apart: they become a
    :class:`PointwiseConnectivity`, cheaper still."""
    ordered = sorted(blocks, key=fan_out, reverse=True)
    buckets: list[list] = []
    for b in ordered:
        widest = fan_out(buckets[-1][0]) if buckets else 0
        slots = widest * sum(rows(x) for x in buckets[-1]) if buckets else 0
        few = fan_out(b) > 1 and 8 * rows(b) * (widest - fan_out(b)) <= slots
        if buckets and (2 * fan_out(b) >= widest or few):
            buckets[-1].append(b)
        else:
            buckets.append([b])
    return buckets


# ----------------------------------------------------------------------------------- dense


class Dense(AbstractLayout):
    """Store the projection as a dense ``n_pre × n_post`` weight matrix."""

    def build(self, edges, dt, *, owner, round_delays, dtype):
        edges = materialise(edges, owner)
        steps = delay_steps(edges.delay, dt, owner=owner, round_delays=round_delays)
        weights = np.zeros((edges.n_pre, edges.n_post))
        np.add.at(weights, (edges.pre, edges.post), edges.weights_per_edge())
        if steps.ndim == 0:
            return DenseConnectivity(
                host_to_device(weights, dtype),
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
            host_to_device(weights, dtype),
            host_to_device(per_pair, np.int32),
            distinct,
            edges.n_pre,
            edges.n_post,
            max(distinct),
            edges.n_synapses,
        )


class DenseConnectivity(AbstractConnectivity):
    r"""Dense weights ``(n_pre, size)`` for a population of ``size`` neurons; delays
    homogeneous or one per pair.

    Window delivery (:meth:`placed`): with ``post_offset`` :math:`o` and ring width
    ``n_post`` :math:`W`, a spike vector :math:`s` adds :math:`(s W_d)_t` to column
    :math:`t + o` of ring row :math:`(c + d) \bmod D` for the targets with
    :math:`0 \le t + o < W`, one matrix–vector product per distinct delay :math:`d` over those
    columns only. Unplaced, :math:`o = 0` and :math:`W` = ``size``. Placing neither copies
    nor pads the weights: a plastic projection's weights stay ``(n_pre, size)``.
    """

    weights: Float[Array, "n_pre size"]
    delays: Int[Array, "n_pre size"] | None
    distinct_delays: tuple[int, ...] = eqx.field(static=True)
    post_offset: int = eqx.field(static=True)
    """Ring column of target 0 (:meth:`placed`)."""

    def __init__(
        self,
        weights,
        delays,
        distinct_delays,
        n_pre,
        n_post,
        max_delay,
        n_synapses,
        post_offset=0,
    ):
        self.weights = weights
        self.delays = delays
        self.distinct_delays = distinct_delays
        self.n_pre = n_pre
        self.n_post = n_post
        self.max_delay = max_delay
        self.n_synapses = n_synapses
        self.post_offset = post_offset

    @property
    def size(self) -> int:
        """Neurons of the postsynaptic population (columns of ``weights``)."""
        return self.weights.shape[1]

    def deliver(self, ring, cursor, spikes):
        n_ring = ring.shape[0] // self.n_post
        lo, hi = window_columns(self.size, self.post_offset, self.n_post)
        if lo == hi:  # no target in the window
            return ring
        whole = (lo, hi) == (0, self.size)
        weights = self.weights if whole else self.weights[:, lo:hi]
        delays = self.delays if whole or self.delays is None else self.delays[:, lo:hi]
        values = spikes.astype(weights.dtype)
        for d in self.distinct_delays:
            w = weights if delays is None else jnp.where(delays == d, weights, 0)
            row = (cursor + d) % n_ring
            ring = add_to_ring_row(ring, row, values @ w, self.n_post, self.post_offset + lo)
        return ring


    def placed(self, offset, width):
        if offset == 0 and width == self.n_post:
            return self
        post_offset, width = placed_window(self, self.size, offset, width)
        return DenseConnectivity(
            self.weights,
            self.delays,
            self.distinct_delays,
            self.n_pre,
            width,
            self.max_delay,
            self.n_synapses,
            post_offset,
        )

    def to_dense(self):
        """The weights in ring columns, ``(n_pre, n_post)``: ``weights`` itself unplaced."""
        if self.post_offset == 0 and self.n_post == self.size:
            return self.weights
        lo, hi = window_columns(self.size, self.post_offset, self.n_post)
        dense = jnp.zeros((self.n_pre, self.n_post), self.weights.dtype)
        start = self.post_offset + lo
        return dense.at[:, start : start + hi - lo].set(self.weights[:, lo:hi])


# ----------------------------------------------------------------------------------- sparse


class Sparse(AbstractLayout):
    """Fixed-fan-out (ELL) storage by presynaptic neuron, event-driven delivery.

    ``implementation`` picks the kernel (:class:`brainsim.kernels.Implementation`; default:
    the native kernel on CPU when available, else the jnp reference). ``chunk_size`` is the
    number of spikes the jnp reference processes per loop iteration; it trades loop overhead
    against work on padding and never limits how many spikes are delivered.
    """

    chunk_size: int = eqx.field(static=True, default=8)
    implementation: kernels.Implementation = eqx.field(
        static=True, default=kernels.Implementation.AUTO
    )

    def build(self, edges, dt, *, owner, round_delays, dtype):
        check_positive_int("chunk_size", self.chunk_size, owner="Sparse")
        edges = materialise(edges, owner)
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
            weights = host_to_device(weight, dtype)
        else:
            w = np.zeros((edges.n_pre, fan_out))
            w[pre, rank] = weight[order]
            weights = host_to_device(w, dtype)
        if steps.ndim == 0:
            delays, max_delay, homogeneous = None, int(steps), int(steps)
        else:
            dl = np.ones((edges.n_pre, fan_out), np.int32)
            dl[pre, rank] = steps[order]
            delays, max_delay, homogeneous = host_to_device(dl, np.int32), int(steps.max(initial=1)), 0
        return EllConnectivity(
            host_to_device(targets, np.int32),
            weights,
            delays,
            homogeneous,
            self.chunk_size,
            kernels.Implementation(self.implementation),
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
    implementation: kernels.Implementation = eqx.field(static=True)

    def __init__(
        self,
        targets,
        weights,
        delays,
        homogeneous_delay,
        chunk_size,
        implementation,
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
        self.implementation = implementation
        self.n_pre = n_pre
        self.n_post = n_post
        self.max_delay = max_delay
        self.n_synapses = n_synapses

    @property
    def fan_out(self) -> int:
        return self.targets.shape[1]

    def deliver(self, ring, cursor, spikes, *, clear_row=False, after=()):
        return kernels.ell_deliver(
            ring,
            cursor,
            spikes,
            self.targets,
            self.weights,
            self.delays,
            n_post=self.n_post,
            homogeneous_delay=self.homogeneous_delay or 1,
            chunk_size=self.chunk_size,
            implementation=self.implementation,
            clear_row=clear_row,
            after=after,
        )

    def clear_and_deliver(self, ring, cursor, spikes, *, after=()):
        return self.deliver(ring, cursor, spikes, clear_row=True, after=after)


    def placed(self, offset, width):
        if offset == 0 and width == self.n_post:
            return self
        xp = array_module(self.targets)
        targets = xp.where(self.targets < self.n_post, self.targets + offset, width)
        return dataclasses.replace(self, targets=targets.astype(np.int32), n_post=width)

    def merge_key(self):
        return _merge_key(self, "ell", self.chunk_size)

    @classmethod
    def merge(cls, rows, width):
        """Stack the blocks' rows (each block's connectivities side by side in its rows),
        in buckets of similar fan-out so that padding at most doubles a bucket's work;
        separately per family of weights (:func:`_weight_families`)."""
        return [out for family in _weight_families(rows) for out in cls._merged(family, width)]

    @classmethod
    def _merged(cls, rows, width):
        shared = _shared_scalar([c for _, parts in rows for c, _ in parts])
        out = []
        fan_out = lambda r: sum(c.fan_out for c, _ in r[1])  # noqa: E731
        for bucket in _fan_out_buckets(rows, fan_out, lambda r: r[1][0][0].n_pre):
            convs = [c for _, parts in bucket for c, _ in parts]
            first = convs[0]
            homogeneous = len({c.homogeneous_delay for c in convs}) == 1 and all(
                c.delays is None for c in convs
            )
            targets, weights, delays = _stacked(bucket, width, shared, homogeneous)
            if weights is None:
                weights = first.weights if shared is None else shared
            blocks = [block for block, _ in bucket]
            n_synapses = sum(c.n_synapses for c in convs)
            max_delay = max(c.max_delay for c in convs)
            lag = first.homogeneous_delay if homogeneous else 0
            if targets.shape[1] == 1:
                pointwise = _pointwise(targets, weights, delays, lag, width, max_delay, n_synapses)
                if pointwise is not None:
                    out.append((blocks, pointwise))
                    continue
            conn = EllConnectivity(
                targets,
                weights,
                delays,
                lag,
                first.chunk_size,
                first.implementation,
                targets.shape[0],
                width,
                max_delay,
                n_synapses,
            )
            out.append((blocks, conn))
        return out

    def to_dense(self):
        w = jnp.broadcast_to(self.weights, self.targets.shape)
        rows = jnp.broadcast_to(jnp.arange(self.n_pre)[:, None], self.targets.shape)
        dense = jnp.zeros((self.n_pre, self.n_post + 1), w.dtype)
        return dense.at[rows, self.targets].add(w)[:, : self.n_post]


def _stacked(bucket, width: int, shared, homogeneous: bool):
    """The ELL arrays of merged rows (``(block, [(connectivity, offset), ...])`` as
    :meth:`AbstractConnectivity.merge` takes them): the blocks' rows one after another, in
    each row its connectivities side by side with their targets shifted into the ring of
    ``width`` (:meth:`EllConnectivity.placed`), padded to the widest block (target ``width``,
    weight 0, lag 1). Returns ``(targets, weights, delays)``; ``weights`` is ``None`` where
    it is ``shared`` or one connectivity's own, ``delays`` where ``homogeneous``.

    Each array is allocated once and every piece written into its place: Potjans–Diesmann
    0.1's 3 M synapses are copied once (stacking and padding block by block copied them four
    times). Structure and weights go separately through NumPy or jax.numpy
    (:func:`array_module`): traced weights (a gradient) leave the structure on the host,
    where a partitioned run splits it."""
    convs = [c for _, parts in bucket for c, _ in parts]
    shape = (
        sum(parts[0][0].n_pre for _, parts in bucket),
        max(sum(c.fan_out for c, _ in parts) for _, parts in bucket),
    )
    xp = array_module(*(c.targets for c in convs))
    targets = xp.full(shape, width, np.int32)
    delays = None if homogeneous else xp.full(shape, 1, np.int32)
    weights = None
    if shared is None and len(convs) > 1:
        xw = array_module(*(c.weights for c in convs))
        weights = xw.zeros(shape, convs[0].weights.dtype)
    row = 0
    for _, parts in bucket:
        column = 0
        for c, offset in parts:
            at = (slice(row, row + c.n_pre), slice(column, column + c.fan_out))
            shifted = xp.where(c.targets < c.n_post, c.targets + offset, width)
            targets = _written(targets, at, shifted)
            if delays is not None:
                lags = c.homogeneous_delay or 1 if c.delays is None else c.delays  # broadcast
                delays = _written(delays, at, lags)
            if weights is not None:
                weights = _written(weights, at, c.weights)
            column += c.fan_out
        row += parts[0][0].n_pre
    return targets, weights, delays


def _written(array, at, values):
    """``array`` (freshly allocated by the caller, so NumPy writes in place) with ``values``
    written at ``at`` (a pair of slices; jax: a dynamic-update-slice, not a scatter)."""
    if isinstance(array, np.ndarray):
        array[at] = values
        return array
    shape = (at[0].stop - at[0].start, at[1].stop - at[1].start)
    values = jnp.broadcast_to(values, shape).astype(array.dtype)
    return lax.dynamic_update_slice(array, values, (at[0].start, at[1].start))


def _pointwise(targets, weights, delays, lag: int, width: int, max_delay: int, n_synapses: int):
    """Merged ELL rows of fan-out 1 (one synapse per presynaptic neuron; the arrays of
    :func:`_stacked`) as a :class:`PointwiseConnectivity`, or ``None`` where it would not
    deliver bitwise what the ELL kernel delivers: structure traced (unknown on the host), or
    a target reached twice (the kernel's summation order)."""
    if isinstance(targets, jax.core.Tracer) or isinstance(delays, jax.core.Tracer):
        return None
    targets = np.asarray(targets)[:, 0]
    valid = targets[targets < width]
    if np.unique(valid).size != valid.size:
        return None
    if delays is not None:
        delays = np.asarray(delays)[:, 0]
        if np.all(delays == delays[0]):
            delays, lag = None, int(delays[0])
    if jnp.ndim(weights):
        weights = weights[:, 0]
    first = int(targets[0]) if targets.size else 0
    contiguous = np.array_equal(targets, first + np.arange(targets.size))
    return PointwiseConnectivity(
        None if contiguous else targets.astype(np.int32),
        weights,
        delays,
        lag,
        first if contiguous else 0,
        targets.size,
        width,
        max_delay,
        n_synapses,
    )


class PointwiseConnectivity(AbstractConnectivity):
    r"""One synapse per presynaptic neuron, each neuron's target distinct (one-to-one
    projections, e.g. background drives): spike ``s_i`` adds :math:`w_i s_i` to target
    ``targets[i]`` at lag ``delays[i]``, as plain jnp on every platform.

    The plan builds it from merged ELL rows of fan-out 1 (:meth:`EllConnectivity.merge`):
    the same sums as the ELL kernel, bitwise (every ring entry gets at most one term, the same
    product), without an event kernel in the program (a kernel traces every platform's
    implementation, ~0.1 s of compilation per delivery). With ``targets = None`` they are the
    contiguous ``first_target, first_target + 1, ...`` and, with one lag, delivery is an add
    into one slice of one ring row; otherwise a scatter-add (padding: ``n_post``, skipped).
    ``weights`` and ``delays``: per neuron or a scalar / ``None`` (then ``homogeneous_delay``).
    """

    targets: Int[Array, " n_pre"] | None
    weights: Float[Array, " n_pre"] | Float[Array, ""]
    delays: Int[Array, " n_pre"] | None
    homogeneous_delay: int = eqx.field(static=True)
    first_target: int = eqx.field(static=True)

    def __init__(
        self,
        targets,
        weights,
        delays,
        homogeneous_delay,
        first_target,
        n_pre,
        n_post,
        max_delay,
        n_synapses,
    ):
        self.targets = targets
        self.weights = weights
        self.delays = delays
        self.homogeneous_delay = int(homogeneous_delay)
        self.first_target = int(first_target)
        self.n_pre = int(n_pre)
        self.n_post = int(n_post)
        self.max_delay = int(max_delay)
        self.n_synapses = int(n_synapses)

    def target_indices(self) -> Int[Array, " n_pre"]:
        """Each presynaptic neuron's target (``n_post``: none)."""
        if self.targets is not None:
            return self.targets
        return self.first_target + np.arange(self.n_pre, dtype=np.int32)

    def deliver(self, ring, cursor, spikes):
        # As the ELL kernel computes a synapse's term. A neuron that did not spike adds
        # w * 0 = ±0 (weights are finite), which leaves every sum as it is; masking it out
        # would also cut the (surrogate) gradient with respect to the spike, which the ELL
        # kernel's tangent keeps.
        terms = (self.weights * spikes).astype(ring.dtype)
        n_ring = ring.shape[0] // self.n_post
        if self.targets is None and self.delays is None:
            row = (cursor + self.homogeneous_delay) % n_ring
            return add_to_ring_row(ring, row, terms, self.n_post, self.first_target)
        t = self.target_indices()
        row = (cursor + (self.homogeneous_delay if self.delays is None else self.delays)) % n_ring
        slots = jnp.where(t < self.n_post, row * self.n_post + t, ring.shape[0])
        return ring.at[slots].add(terms, mode="drop")

    def placed(self, offset, width):
        if offset == 0 and width == self.n_post:
            return self
        offset, width = check_window(offset, width, type(self).__name__)
        xp = array_module(self.target_indices())
        t = self.target_indices()
        t = xp.where(t < self.n_post, t + offset, width)
        t = xp.where((t >= 0) & (t < width), t, width).astype(np.int32)
        return dataclasses.replace(self, targets=t, first_target=0, n_post=width)

    def to_dense(self):
        w = jnp.broadcast_to(self.weights, (self.n_pre,))
        dense = jnp.zeros((self.n_pre, self.n_post + 1), w.dtype)
        return dense.at[jnp.arange(self.n_pre), self.target_indices()].add(w)[:, : self.n_post]


# ------------------------------------------------------------------------------------- CSR


class CSR(AbstractLayout):
    """Compressed sparse rows by presynaptic neuron, event-driven delivery.

    Stores ``indptr`` (``n_pre + 1`` int32 offsets), ``indices`` (int32 targets), ``weights``
    (per synapse, or one scalar when homogeneous) and ``delays`` (per synapse, or one static
    delay): 8–12 bytes per synapse whatever the out-degrees, where ELL pads every row to the
    largest one (a few hub neurons can multiply its memory). ``block_size`` is the number of
    synapses the jnp reference delivers per loop iteration (never a limit); ``implementation``
    picks the kernel as in :class:`Sparse`.
    """

    block_size: int = eqx.field(static=True, default=256)
    implementation: kernels.Implementation = eqx.field(
        static=True, default=kernels.Implementation.AUTO
    )

    def build(self, edges, dt, *, owner, round_delays, dtype):
        check_positive_int("block_size", self.block_size, owner="CSR")
        edges = materialise(edges, owner)
        if edges.n_synapses > np.iinfo(np.int32).max:
            raise ValueError(
                f"{owner}: {edges.n_synapses} synapses exceed the int32 offsets of CSR; split "
                "the projection."
            )
        steps = delay_steps(edges.delay, dt, owner=owner, round_delays=round_delays)
        pre = edges.pre
        # Builders such as fixed_outdegree already emit edges sorted by presynaptic neuron.
        order = None if np.all(pre[1:] >= pre[:-1]) else np.argsort(pre, kind="stable")

        def by_row(values):
            return values if order is None else values[order]

        indptr = np.zeros(edges.n_pre + 1, np.int32)
        np.cumsum(np.bincount(pre, minlength=edges.n_pre), out=indptr[1:])
        indices = by_row(edges.post).astype(np.int32)
        weight = np.asarray(edges.weight, dtype=float)
        weights = host_to_device(weight if weight.ndim == 0 else by_row(weight), dtype)
        if steps.ndim == 0:
            delays, max_delay, homogeneous = None, int(steps), int(steps)
        else:
            delays = host_to_device(by_row(steps), np.int32)
            max_delay, homogeneous = int(steps.max(initial=1)), 0
        return CsrConnectivity(
            host_to_device(indptr, np.int32),
            host_to_device(indices, np.int32),
            weights,
            delays,
            homogeneous,
            self.block_size,
            kernels.Implementation(self.implementation),
            edges.n_pre,
            edges.n_post,
            max_delay,
            edges.n_synapses,
        )


class CsrConnectivity(AbstractConnectivity):
    """CSR by presynaptic neuron: synapses ``indptr[i] .. indptr[i+1]-1`` of neuron ``i`` have
    targets ``indices``, ``weights`` (or one scalar) and ``delays`` in steps (or one static)."""

    indptr: Int[Array, " n_pre_plus_1"]
    indices: Int[Array, " n_synapses"]
    weights: Float[Array, " n_synapses"] | Float[Array, ""]
    delays: Int[Array, " n_synapses"] | None
    homogeneous_delay: int = eqx.field(static=True)
    block_size: int = eqx.field(static=True)
    implementation: kernels.Implementation = eqx.field(static=True)

    def __init__(
        self,
        indptr,
        indices,
        weights,
        delays,
        homogeneous_delay,
        block_size,
        implementation,
        n_pre,
        n_post,
        max_delay,
        n_synapses,
    ):
        self.indptr = indptr
        self.indices = indices
        self.weights = weights
        self.delays = delays
        self.homogeneous_delay = homogeneous_delay
        self.block_size = block_size
        self.implementation = implementation
        self.n_pre = n_pre
        self.n_post = n_post
        self.max_delay = max_delay
        self.n_synapses = n_synapses

    def deliver(self, ring, cursor, spikes, *, clear_row=False, after=()):
        return kernels.csr_deliver(
            ring,
            cursor,
            spikes,
            self.indptr,
            self.indices,
            self.weights,
            self.delays,
            n_post=self.n_post,
            homogeneous_delay=self.homogeneous_delay or 1,
            block_size=self.block_size,
            implementation=self.implementation,
            clear_row=clear_row,
            after=after,
        )

    def clear_and_deliver(self, ring, cursor, spikes, *, after=()):
        return self.deliver(ring, cursor, spikes, clear_row=True, after=after)


    def placed(self, offset, width):
        if offset == 0 and width == self.n_post:
            return self
        indices = (self.indices + offset).astype(np.int32)
        return dataclasses.replace(self, indices=indices, n_post=width)

    def merge_key(self):
        return _merge_key(self, "csr", self.block_size)

    @classmethod
    def merge(cls, rows, width):
        """One CSR of all blocks per family of weights (:func:`_weight_families`): each
        block's rows hold the synapses of its connectivities one after the other (no
        padding, so no buckets)."""
        return [out for family in _weight_families(rows) for out in cls._merged(family, width)]

    @classmethod
    def _merged(cls, rows, width):
        xp = array_module(*(c.indices for _, parts in rows for c, _ in parts))
        given = [c for _, parts in rows for c, _ in parts]
        # One scalar or one connectivity's weights, or one static delay, are kept as they
        # are: the per-synapse arrays are then not built at all.
        shared = _shared_scalar(given)
        if shared is None and len(given) == 1:
            shared = given[0].weights
        homogeneous = len({c.homogeneous_delay for c in given}) == 1 and all(
            c.delays is None for c in given
        )
        indptr, indices, weights, delays, convs = [xp.zeros((1,), np.int32)], [], [], [], []
        for _, parts in rows:
            shifted = [c.placed(offset, width) for c, offset in parts]
            convs += shifted
            n_pre = shifted[0].n_pre
            counts = [xp.diff(c.indptr).astype(np.int32) for c in shifted]
            starts = xp.concatenate([xp.zeros((1,), np.int32), xp.cumsum(sum(counts))])
            starts = starts.astype(np.int32)
            nnz = sum(c.indices.shape[0] for c in shifted)
            xw = array_module(*(c.weights for c in shifted))
            idx = xp.zeros((nnz,), np.int32)
            w = None if shared is not None else xw.zeros((nnz,), shifted[0].weights.dtype)
            d = None if homogeneous else xp.zeros((nnz,), np.int32)
            before = xp.zeros((n_pre,), np.int32)
            for c, count in zip(shifted, counts, strict=True):
                m = c.indices.shape[0]
                if xp is np:
                    row = np.repeat(np.arange(n_pre), count)
                else:
                    row = jnp.repeat(jnp.arange(n_pre), count, total_repeat_length=m)
                pos = starts[row] + before[row] + xp.arange(m, dtype=np.int32) - c.indptr[row]
                idx = _scattered(idx, pos, c.indices.astype(np.int32))
                if shared is None:
                    w = _scattered(w, pos, xw.broadcast_to(c.weights, (m,)))
                if not homogeneous:
                    d = _scattered(d, pos, _synapse_delays(c, (m,)))
                before = before + count
            indptr.append(starts[1:] + indptr[-1][-1])
            indices.append(idx)
            weights.append(w)
            delays.append(d)
        first = convs[0]
        conn = CsrConnectivity(
            xp.concatenate(indptr),
            xp.concatenate(indices),
            shared if shared is not None else array_module(*weights).concatenate(weights),
            None if homogeneous else xp.concatenate(delays),
            first.homogeneous_delay if homogeneous else 0,
            first.block_size,
            first.implementation,
            sum(parts[0][0].n_pre for _, parts in rows),
            width,
            max(c.max_delay for c in convs),
            sum(c.n_synapses for c in convs),
        )
        return [([block for block, _ in rows], conn)]

    def to_dense(self):
        n_syn = self.indices.shape[0]
        rows = jnp.repeat(
            jnp.arange(self.n_pre), jnp.diff(self.indptr), total_repeat_length=n_syn
        )
        w = jnp.broadcast_to(self.weights, (n_syn,))
        dense = jnp.zeros((self.n_pre, self.n_post), w.dtype)
        return dense.at[rows, self.indices].add(w, mode="drop")


# ------------------------------------------------------------------------------ procedural


class Procedural(AbstractLayout):
    """No stored synapses: regenerate them from the connectivity rule every step.

    Takes a :class:`~brainsim.connect.ProceduralEdges` (from
    :func:`~brainsim.connect.procedural_fixed_outdegree` or
    :func:`~brainsim.connect.procedural_fixed_probability`). Memory: the weight parameters
    (and, for fixed probability, one count per presynaptic neuron); work per spike:
    regenerating its synapses (a hash per synapse). ``chunk_size`` is the number of spikes the
    jnp reference regenerates per loop iteration; ``implementation`` picks the kernel.
    """

    chunk_size: int = eqx.field(static=True, default=8)
    implementation: kernels.Implementation = eqx.field(
        static=True, default=kernels.Implementation.AUTO
    )

    def build(self, edges, dt, *, owner, round_delays, dtype):
        check_positive_int("chunk_size", self.chunk_size, owner="Procedural")
        if not isinstance(edges, ProceduralEdges):
            raise TypeError(
                f"{owner}: the Procedural layout regenerates synapses from a rule; give it "
                "connect.procedural_fixed_outdegree(...) or "
                "connect.procedural_fixed_probability(...), not an explicit "
                f"{type(edges).__name__} (use Sparse() or CSR() for those)."
            )
        steps = int(delay_steps(edges.delay, dt, owner=owner, round_delays=round_delays))
        return ProceduralConnectivity(
            host_to_device(edges.weight_loc, dtype),
            None if edges.weight_scale is None else host_to_device(edges.weight_scale, dtype),
            None if edges.counts is None else host_to_device(edges.counts, np.int32),
            edges.rule,
            steps,
            self.chunk_size,
            kernels.Implementation(self.implementation),
            edges.n_synapses,
        )


class ProceduralConnectivity(AbstractConnectivity):
    """Procedural synapses: weight parameters as leaves (fittable), the rule as structure.

    Weights are ``weight_loc`` or ``weight_loc + weight_scale · U[0, 1)`` with the uniform
    variate regenerated per synapse; ``counts`` (fixed probability) holds each presynaptic
    neuron's number of synapses.

    Targets are drawn from the postsynaptic population, ``rule.n_post`` neurons, whatever the
    ring: placed (:meth:`placed`), target ``t`` adds into column ``t + post_offset`` of a ring
    ``n_post`` neurons wide, and is skipped where that column does not exist (the
    ``post_offset`` / ``ring_width`` window of :func:`brainsim.kernels.procedural_deliver`).
    The synapses never change with the placement.
    """

    weight_loc: Float[Array, ""]
    weight_scale: Float[Array, ""] | None
    counts: Int[Array, " n_pre"] | None
    rule: kernels.ProceduralRule = eqx.field(static=True)
    delay: int = eqx.field(static=True)
    chunk_size: int = eqx.field(static=True)
    implementation: kernels.Implementation = eqx.field(static=True)
    post_offset: int = eqx.field(static=True)
    """Ring column of target 0 (:meth:`placed`)."""

    def __init__(
        self,
        weight_loc,
        weight_scale,
        counts,
        rule,
        delay,
        chunk_size,
        implementation,
        n_syn,
        post_offset=0,
        ring_width=None,
    ):
        self.weight_loc = weight_loc
        self.weight_scale = weight_scale
        self.counts = counts
        self.rule = rule
        self.delay = delay
        self.chunk_size = chunk_size
        self.implementation = implementation
        self.n_pre = rule.n_pre
        self.n_post = rule.n_post if ring_width is None else ring_width
        self.max_delay = delay
        self.n_synapses = n_syn
        self.post_offset = post_offset

    def deliver(self, ring, cursor, spikes, *, clear_row=False, after=()):
        return kernels.procedural_deliver(
            ring,
            cursor,
            spikes,
            self.weight_loc,
            self.weight_scale,
            self.counts,
            n_post=self.rule.n_post,
            fan_out=self.rule.fan_out,
            seed=self.rule.seed,
            replace=self.rule.replace,
            allow_self=self.rule.allow_self,
            delay=self.delay,
            post_offset=self.post_offset,
            ring_width=self.n_post,
            chunk_size=self.chunk_size,
            implementation=self.implementation,
            clear_row=clear_row,
            after=after,
        )

    def clear_and_deliver(self, ring, cursor, spikes, *, after=()):
        return self.deliver(ring, cursor, spikes, clear_row=True, after=after)


    def placed(self, offset, width):
        if offset == 0 and width == self.n_post:
            return self
        post_offset, width = placed_window(self, self.rule.n_post, offset, width)
        return ProceduralConnectivity(
            self.weight_loc,
            self.weight_scale,
            self.counts,
            self.rule,
            self.delay,
            self.chunk_size,
            self.implementation,
            self.n_synapses,
            post_offset,
            width,
        )

    def to_dense(self):
        """Summed weight matrix in ring columns, ``(n_pre, n_post)``, regenerated in jnp
        (differentiable in the weight leaves)."""
        eye_rows = jnp.arange(self.n_pre, dtype=jnp.int32)
        j = jnp.arange(self.rule.fan_out, dtype=jnp.int32)
        count = (
            self.rule.fan_out
            if self.counts is None
            else jnp.reshape(self.counts, (-1, 1))
        )
        valid = jnp.broadcast_to(j[None, :] < count, (self.n_pre, self.rule.fan_out))
        targets, g = kernels.procedural_synapses(
            self.rule, eye_rows[:, None], j[None, :], valid, need_g=self.weight_scale is not None
        )
        w = self.weight_loc if self.weight_scale is None else self.weight_loc + self.weight_scale * g
        columns = targets + self.post_offset
        valid = valid & (columns >= 0) & (columns < self.n_post)
        w = jnp.where(valid, w, 0)
        rows = jnp.broadcast_to(eye_rows[:, None], valid.shape)
        dense = jnp.zeros((self.n_pre, self.n_post), w.dtype)
        return dense.at[rows, jnp.where(valid, columns, self.n_post)].add(w, mode="drop")

    def edges(self) -> EdgeList:
        """Every synapse as an :class:`~brainsim.connect.EdgeList` with the current weight
        parameters (regenerated on the host; the delay, ``self.delay`` steps, is left out);
        targets are the population's neurons, whatever the placement."""
        scale = None if self.weight_scale is None else float(self.weight_scale)
        spec = ProceduralEdges(
            self.n_pre,
            self.rule.n_post,
            self.rule.fan_out,
            None if self.counts is None else np.asarray(self.counts),
            self.rule.replace,
            self.rule.allow_self,
            float(self.weight_loc),
            scale,
            None,
            self.rule.seed,
        )
        return spec.edges()
