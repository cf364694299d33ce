r"""Multi-device simulation: the network's plan partitioned over a device mesh, spikes exchanged
every step.

``simulate(network, ..., partition=Sharded(mesh))`` (and :func:`simulate_sharded`, the same
call) runs the same network as a single-device :func:`~brainsim.simulate` on the devices of
one axis of a :class:`jax.sharding.Mesh` and returns the same
:class:`~brainsim.SimulationResult`: with the same key and dtype, the same spikes, recordings
and final state as a single-device run (see *Exactness* for the one caveat, FMA contraction).
It is not a second simulator: the loop body is :func:`brainsim.step` on each device's share
of the plan (:mod:`brainsim._plan`), inside one ``lax.scan`` inside one ``shard_map``.

How the work is split:

* **Neurons.** Every group of merged neuron populations of ``n`` neurons is cut into ``D``
  equal blocks of ``ceil(n / D)`` neurons, device ``d`` owning neurons ``d*ceil(n/D) ...``;
  the last block is padded with inert neurons (no synapses, no injected current, spikes
  masked), so sizes need not divide the device count. A device keeps the state, per-neuron
  parameters, synaptic traces and ring buffers of its own neurons only.
* **Synapses live with their postsynaptic neuron.** At :class:`ShardedNetwork` construction
  each delivery's ELL/CSR/dense storage is split by the block of its *target*: device ``d``
  stores the synapses onto its neurons, with local target indices, in the original
  per-neuron order (so every target sums its inputs in the same order as on one device).
  Formats that cannot be split that way (procedural connectivity, which stores nothing to
  split; learnable delays; a user's own format) run whole on every device into a scratch
  ring, of which each device keeps its block. Plastic projections are replicated: every
  device holds all their synapses and applies the same update (from the exchanged spikes)
  to the replicated weights, delivering only into its own neurons.
* **Spike exchange.** After the neuron update, the spikes of all neuron groups are exchanged
  with one collective per step (the plan's ``exchange`` hook): an ``all_gather`` of the
  spike vector (default) or, with ``capacity=c``, an ``all_gather`` of compacted lists of at
  most ``c`` spiking neurons per device; a step in which any device has more than ``c``
  spikes falls back to the full vector for that step, so no spike is ever dropped. Every
  device then delivers the spikes of all presynaptic neurons through its local synapses.
* **Replicated parts.** Spike sources (:class:`PoissonSource`, generators, arrays),
  short-term plasticity state (per presynaptic neuron), plasticity state and the
  recordings are computed identically on every device. Sources are replicated because their
  random draws must be those of the single-device run (the draw for channel ``i`` depends on
  the whole vector); their cost does not shrink with more devices.
* **Monitors** see the whole network's state, all-gathered (XLA drops the gathers no monitor
  reads), so any monitor records what it records on one device.

Randomness follows :func:`brainsim.step`: step ``k`` uses ``fold_in(key, k)``, then the
group's first population index; injected currents are evaluated for the whole population
and cut per device. A stochastic *neuron* model draws for the neurons it is given; in a
partitioned group its key is a *block key* (:mod:`brainsim._block_random`): a draw of shape
``(n, ...)`` over the device's ``n`` neurons hashes the global counters of those rows, so it
is the device's rows of the single-device draw, with no extra work or communication. That
holds for every element-wise ``jax.random`` sampler, after any ``split``/``fold_in``, with
one key per neuron, and for the gamma family; the exceptions (draws that mix the neurons,
``binomial``'s rejection loop, ``poisson``, which accepts only jax's own keys, other PRNG
implementations, ``jax_threefry_partitionable`` off) are listed there, and the ones that
fall back to per-device draws warn (:class:`~brainsim.BrainsimWarning`).

``vmap`` (over keys or parameters) and ``grad`` (with respect to parameters and weights)
apply to a partitioned run as to a single-device one: the structure is split on the host,
traced values are laid out by the program.

Exactness: every neuron goes through the floating-point operations of the single-device
step, every target sums its synaptic inputs in the single-device order and every random
draw is the single-device draw, so spikes, recordings and state are equal bit for bit
whenever XLA compiles the same arithmetic. XLA contracts ``a*b + c`` into fused
multiply-adds depending on how it fuses the surrounding program, which differs between the
two programs: membrane potentials can then differ in the last bit, and in a chaotic network
the spike trains diverge after long enough (as between any two compilations of different
programs). On CPU, ``--xla_cpu_max_isa=AVX`` in ``XLA_FLAGS`` (no FMA instructions) removes
that difference; ``tests/test_sharding.py`` and ``tests/test_composability.py`` check
bitwise equality that way. Dense projections are split by columns, and the matrix-vector
product may then also sum in a different order.

Launching on several GPUs of one host::

    import jax, brainsim as bs
    mesh = jax.make_mesh((jax.device_count(),), ("neurons",))
    result = bs.simulate(net, 1000.0, key=jax.random.key(0), record=(bs.SpikeRaster(),),
                         partition=bs.Sharded(mesh))

On CPU the same code runs on ``N`` simulated devices with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` set before jax is imported.

Several hosts (one process per host, each seeing its local GPUs; every process runs the same
script and the mesh spans the devices of all of them)::

    import jax
    # First, before any other JAX call. Under SLURM (srun) or Open MPI (mpirun) the call needs no
    # arguments; otherwise give the coordinator (process 0's host and a free port), the number
    # of processes and this process's rank, e.g. from your own environment variables:
    jax.distributed.initialize(coordinator_address="host0:1234", num_processes=2,
                               process_id=int(os.environ["RANK"]))
    import brainsim as bs
    mesh = jax.make_mesh((jax.device_count(),), ("neurons",))  # all devices of all hosts
    net = build_network(seed=0)  # the same network (same seeds) in every process
    result = bs.simulate(net, 1000.0, key=jax.random.key(0), record=(bs.PopulationRate(),),
                         partition=bs.Sharded(mesh))

Each process builds the network on its host and uploads only its own devices' synapses. The
recordings and the final state come back replicated on every process.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ._checkpoint_scan import checkpointed_scan
from ._compile import jit
from ._faults import StateFaults, check_step, combine_devices
from ._monitors import AbstractMonitor
from ._network import Network, NetworkState, Projection, ReceptorState
from ._plan import Delivery, DeviceBlock, Group, Plan, host_plan
from ._propagation import (
    AbstractConnectivity,
    CsrConnectivity,
    DenseConnectivity,
    EllConnectivity,
    PointwiseConnectivity,
    array_module,
    scratch_delivery,
)
from ._simulate import SimulationResult, collect_result
from ._state_check import float_dtype
from ._step import step

# ------------------------------------------------------------------------ jax versions


def _shard_map(fn, *, mesh, in_specs, out_specs):
    """``shard_map`` without replication checks (the only jax-version difference here).

    jax >= 0.7 (including the 0.10 and 0.11 lines brainsim supports) has ``jax.shard_map`` with
    ``check_vma``; older releases only ``jax.experimental.shard_map.shard_map`` with
    ``check_rep``. The checks are off because replicated outputs (recordings) are computed
    identically on every device from all-gathered values, which the checker cannot see.
    """
    if hasattr(jax, "shard_map"):
        return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    from jax.experimental.shard_map import shard_map  # pragma: no cover - jax < 0.7

    return shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


def _place(tree, specs, mesh: Mesh):
    """Lay ``tree`` out as ``specs`` on ``mesh`` inside a jitted function.

    ``jax.make_mesh`` gives *explicit* axes from jax 0.7 on; ``shard_map`` then requires inputs
    whose sharding type already matches ``in_specs`` (``jax.reshard``). Meshes with *auto* axes
    (and older jax) take a sharding constraint.
    """
    shardings = jax.tree.map(
        lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P)
    )
    explicit = getattr(jax.sharding.AxisType, "Explicit", None)
    if hasattr(jax, "reshard") and all(t == explicit for t in getattr(mesh, "axis_types", ())):
        return jax.reshard(tree, shardings)
    return lax.with_sharding_constraint(tree, shardings)


# ------------------------------------------------------------------------------- plan


@dataclasses.dataclass(frozen=True)
class _Block:
    name: str
    size: int
    n_local: int
    is_source: bool


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Static description of a partition (hashable: part of the compiled program's key)."""

    mesh: Mesh
    axis: str
    n_devices: int
    blocks: tuple[_Block, ...]
    capacity: int | None

    def block(self, name: str) -> _Block:
        return next(b for b in self.blocks if b.name == name)


def _check_mesh(mesh, axis) -> tuple[str, int]:
    if not isinstance(mesh, Mesh):
        raise TypeError(
            "simulate_sharded: `mesh` must be a jax.sharding.Mesh, e.g. "
            f"jax.make_mesh((jax.device_count(),), ('neurons',)); got {type(mesh).__name__}."
        )
    names = tuple(mesh.axis_names)
    if axis is None:
        if len(names) != 1:
            raise ValueError(
                f"simulate_sharded: `mesh` has axes {names}; pass `axis=` naming the one to "
                "partition neurons over (the others replicate the run)."
            )
        axis = names[0]
    if axis not in names:
        raise ValueError(
            f"simulate_sharded: `axis` {axis!r} is not an axis of `mesh` (axes: {names})."
        )
    return axis, int(mesh.shape[axis])


def _auto_axes(mesh: Mesh) -> Mesh:
    """``mesh`` with *auto* axes. ``jax.make_mesh`` gives explicit axes (jax >= 0.7), whose
    sharding becomes part of every result's type; a gradient of a result then needs a mesh
    context (``jax.set_mesh``) to build its cotangent. The run lays its arrays out itself, so
    its results need not carry the mesh in their types."""
    auto = getattr(jax.sharding.AxisType, "Auto", None)
    if auto is None or all(t == auto for t in getattr(mesh, "axis_types", ())):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(auto,) * len(mesh.axis_names))


def _check_capacity(capacity):
    if capacity is None:
        return None
    if not (isinstance(capacity, int | np.integer) and not isinstance(capacity, bool)) or (
        capacity < 1
    ):
        raise ValueError(
            "simulate_sharded: `capacity` must be a positive integer (spikes per device and "
            f"step in the compacted exchange) or None (exchange spike vectors); got {capacity!r}."
        )
    return int(capacity)


# ----------------------------------------------------------------- splitting the network


def _pad(x, n_pad: int, mode: str):
    """Pad axis 0 of ``x`` to ``n_pad`` (``edge`` repeats the last neuron, ``zero`` adds 0)."""
    extra = n_pad - x.shape[0]
    if extra == 0:
        return x
    widths = [(0, extra)] + [(0, 0)] * (x.ndim - 1)
    return jnp.pad(x, widths, mode="edge" if mode == "edge" else "constant")


def _slice_neurons(tree, size: int, n_local: int, n_devices: int, d: int):
    """Device ``d``'s block of every per-neuron leaf (shape ``(size,)``) of a parameter tree.

    Models validate per-neuron parameters as scalars or ``(size,)`` arrays
    (``check_per_neuron``), so the shape identifies them.
    """

    def cut(x):
        if eqx.is_array(x) and x.shape == (size,):
            return _pad(x, n_local * n_devices, "edge")[d * n_local : (d + 1) * n_local]
        return x

    return jax.tree.map(cut, tree)


def _local_group(group: Group, plan: _Plan, d: int) -> Group:
    """Device ``d``'s share of a group: its block of every per-neuron parameter; the
    members' injected currents are evaluated whole and cut in the step (same values and
    keys as one device)."""
    if group.is_source:
        return group  # replicated: the draws for channel i depend on the whole vector
    b = plan.block(group.name)
    return Group(
        group.name,
        group.members,
        b.n_local,
        False,
        _slice_neurons(group.model, group.size, b.n_local, plan.n_devices, d),
        _slice_neurons(group.receptors, group.size, b.n_local, plan.n_devices, d),
        group.currents,
        DeviceBlock(plan.axis, group.size, b.n_local),
    )


def _host_or_traced(x):
    """``x`` as a NumPy array, unless it is traced (then as it is)."""
    return x if isinstance(x, jax.core.Tracer) else np.asarray(x)


def _owner(targets: np.ndarray, n_post: int, n_local: int, n_devices: int) -> np.ndarray:
    """Device owning each target index; padding entries (``>= n_post``) get ``n_devices``."""
    return np.where(targets < n_post, targets // n_local, n_devices)


def _split_ell(conn: EllConnectivity, n_local: int, n_devices: int, where: str):
    targets = np.asarray(conn.targets)
    owner = _owner(targets, conn.n_post, n_local, n_devices)
    width = max(1, int(max((owner == d).sum(axis=1).max(initial=0) for d in range(n_devices))))
    weights = _host_or_traced(conn.weights)
    delays = None if conn.delays is None else np.asarray(conn.delays)
    parts = []
    for d in range(n_devices):
        mine = owner == d
        # A stable sort keeps each row's synapses in their original order: every target then
        # receives its inputs in the same order as on one device (bitwise-equal sums).
        order = np.argsort(~mine, axis=1, kind="stable")[:, :width]
        keep = np.take_along_axis(mine, order, axis=1)
        local = np.take_along_axis(targets, order, axis=1) - d * n_local
        t = np.where(keep, local, n_local).astype(np.int32)
        w = conn.weights  # a shared scalar stays one object (replicated, see _stack)
        if weights.ndim:
            xw = array_module(weights)
            w = xw.where(keep, xw.take_along_axis(weights, order, axis=1), 0)
            w = w.astype(weights.dtype)
        dl = None
        if delays is not None:
            dl = np.where(keep, np.take_along_axis(delays, order, axis=1), 1).astype(np.int32)
        parts.append(
            EllConnectivity(
                t,
                w,
                dl,
                conn.homogeneous_delay,
                conn.chunk_size,
                conn.implementation,
                conn.n_pre,
                n_local,
                conn.max_delay,
                conn.n_synapses,
            )
        )
    return parts


def _split_csr(conn: CsrConnectivity, n_local: int, n_devices: int, where: str):
    indptr = np.asarray(conn.indptr)
    indices = np.asarray(conn.indices)
    rows = np.repeat(np.arange(conn.n_pre), np.diff(indptr))
    owner = _owner(indices, conn.n_post, n_local, n_devices)
    length = max(1, int(max((owner == d).sum() for d in range(n_devices))))
    weights = _host_or_traced(conn.weights)
    delays = None if conn.delays is None else np.asarray(conn.delays)
    parts = []
    for d in range(n_devices):
        sel = np.flatnonzero(owner == d)  # ascending: the original order within each row
        pad = length - sel.size
        ptr = np.zeros(conn.n_pre + 1, np.int32)
        np.cumsum(np.bincount(rows[sel], minlength=conn.n_pre), out=ptr[1:])
        idx = np.concatenate([indices[sel] - d * n_local, np.full(pad, n_local)]).astype(np.int32)
        w = conn.weights
        if weights.ndim:
            xw = array_module(weights)
            w = xw.concatenate([weights[sel], xw.zeros(pad, weights.dtype)])
        dl = None
        if delays is not None:
            dl = np.concatenate([delays[sel], np.ones(pad, delays.dtype)]).astype(np.int32)
        parts.append(
            CsrConnectivity(
                ptr,
                idx,
                w,
                dl,
                conn.homogeneous_delay,
                conn.block_size,
                conn.implementation,
                conn.n_pre,
                n_local,
                conn.max_delay,
                conn.n_synapses,
            )
        )
    return parts


def _split_dense(conn: DenseConnectivity, n_local: int, n_devices: int, where: str):
    n_pad = n_local * n_devices

    def columns(x, d):
        x = _host_or_traced(x)
        x = array_module(x).pad(x, ((0, 0), (0, n_pad - x.shape[1])))
        return x[:, d * n_local : (d + 1) * n_local]

    return [
        DenseConnectivity(
            columns(conn.weights, d),
            None if conn.delays is None else columns(conn.delays, d),
            conn.distinct_delays,
            conn.n_pre,
            n_local,
            conn.max_delay,
            conn.n_synapses,
        )
        for d in range(n_devices)
    ]


def _split_pointwise(conn: PointwiseConnectivity, n_local: int, n_devices: int, where: str):
    # Every presynaptic neuron stays on every device (spikes are exchanged whole); a device
    # keeps the targets it owns and pads the others (n_local: skipped).
    targets = np.asarray(conn.target_indices())
    owner = _owner(targets, conn.n_post, n_local, n_devices)
    return [
        dataclasses.replace(
            conn,
            targets=np.where(owner == d, targets - d * n_local, n_local).astype(np.int32),
            first_target=0,
            n_post=n_local,
        )
        for d in range(n_devices)
    ]


_SPLITTERS = {
    EllConnectivity: _split_ell,
    PointwiseConnectivity: _split_pointwise,
    CsrConnectivity: _split_csr,
    DenseConnectivity: _split_dense,
}


def _split_delivery(delivery: Delivery, where: str, n_local: int, n_devices: int):
    conn = delivery.conn
    if delivery.plastic is not None:
        return _windowed(conn, where, n_local, n_devices)
    splitter = _SPLITTERS.get(type(conn))
    if isinstance(conn, DenseConnectivity) and (conn.post_offset, conn.n_post) != (0, conn.size):
        splitter = None  # placed into a merged group: its columns are not the group's
    if splitter is None:  # procedural, learnable delays, a user's format
        return [_Replicated(conn, np.int32(d * n_local), n_local) for d in range(n_devices)]
    return splitter(conn, n_local, n_devices, where)


def _windowed(conn, where: str, n_local: int, n_devices: int):
    """A plastic projection on every device: all its synapses (their weights are the
    replicated plasticity state, updated identically everywhere from the exchanged spikes),
    each device delivering only into its own block of neurons (ELL and CSR by remapping
    their targets, other formats through :class:`_Replicated`)."""
    field = {EllConnectivity: "targets", CsrConnectivity: "indices"}.get(type(conn))
    if field is not None:
        targets = np.asarray(getattr(conn, field))
        parts = []
        for d in range(n_devices):
            local = targets - d * n_local
            mine = (targets < conn.n_post) & (local >= 0) & (local < n_local)
            t = np.where(mine, local, n_local).astype(np.int32)
            parts.append(dataclasses.replace(conn, **{field: t}, n_post=n_local))
        return parts
    return [_Replicated(conn, np.int32(d * n_local), n_local) for d in range(n_devices)]


class _Replicated(AbstractConnectivity):
    """Any connectivity on every device, delivering into the device's block of neurons.

    The formats that cannot be split by postsynaptic neuron (procedural connectivity, which
    stores no synapses to split; learnable delays; a user's own format) deliver into a
    whole-width scratch ring of the step's new rows, of which each device adds its block to
    its own ring: memory ``D × n`` per device instead of a share of the synapses, and every
    device regenerates (or reads) every synapse of the spikes. The result is the
    single-device delivery (up to the order in which a neuron sums inputs arriving in one
    step from one delivery and earlier ones)."""

    inner: AbstractConnectivity
    first: jax.Array

    def __init__(self, inner, first, n_local):
        self.inner = inner
        self.first = first
        self.n_pre = inner.n_pre
        self.n_post = n_local
        self.max_delay = inner.max_delay
        self.n_synapses = inner.n_synapses

    @property
    def weights(self):
        return self.inner.weights

    def with_weights(self, weights):
        return eqx.tree_at(lambda c: c.inner, self, self.inner.with_weights(weights))

    def deliver(self, ring, cursor, spikes):
        scratch = scratch_delivery(self.inner, ring.shape[0] // self.n_post, ring.dtype, cursor,
                                   spikes)  # fmt: skip
        n = self.inner.n_post
        n_pad = -(-n // self.n_post) * self.n_post
        scratch = jnp.pad(scratch, ((0, 0), (0, n_pad - n)))
        mine = lax.dynamic_slice_in_dim(scratch, self.first, self.n_post, axis=1)
        return ring + mine.reshape(-1)

    def to_dense(self):
        return self.inner.to_dense()


def _without_synapses(network: Network) -> Network:
    """The network a device's plan carries for the step's per-projection work (short-term
    plasticity, names, dt): its synapses left out, since each device stores only its share
    (in the plan's deliveries) and a replicated copy would cost every device the whole
    network's memory."""
    projections = []
    for proj in network.projections:
        bare = object.__new__(Projection)
        for f in dataclasses.fields(proj):
            object.__setattr__(bare, f.name, getattr(proj, f.name))
        object.__setattr__(bare, "connectivity", None)
        projections.append(bare)
    net = object.__new__(Network)
    for f in dataclasses.fields(network):
        object.__setattr__(net, f.name, getattr(network, f.name))
    object.__setattr__(net, "projections", tuple(projections))
    return net


def _stack(parts, mesh: Mesh, axis: str):
    """One value from the per-device parts: leaves that differ between devices are stacked
    along a new leading axis with one slice per device (spec ``P(axis)``); identical leaves
    (shared parameters) are replicated with their own shape (spec ``P()``), so a device's
    program sees them exactly as a single-device run does (same shapes, same compiled
    arithmetic). Each process uploads only its own devices' slices
    (``make_array_from_callback``), which is what several hosts need.

    Returns ``(value, specs)``.
    """
    split, whole = NamedSharding(mesh, P(axis)), NamedSharding(mesh, P())

    def put(*xs):
        if not eqx.is_array(xs[0]):
            return _Placed(xs[0], None)  # Python scalars etc. stay as they are
        if any(isinstance(x, jax.core.Tracer) for x in xs):
            # Traced (a gradient with respect to it): laid out by the program (_place).
            if all(x is xs[0] for x in xs):
                return _Placed(xs[0], P())
            return _Placed(jnp.stack(xs), P(axis))
        if all(x is xs[0] for x in xs):
            one = np.asarray(xs[0])
            return _Placed(jax.make_array_from_callback(one.shape, whole, lambda i: one[i]), P())
        full = np.stack([np.asarray(x) for x in xs])
        placed = jax.make_array_from_callback(full.shape, split, lambda i: full[i])
        return _Placed(placed, P(axis))

    placed = jax.tree.map(put, *parts)
    is_placed = lambda x: isinstance(x, _Placed)  # noqa: E731
    value = jax.tree.map(lambda p: p.value, placed, is_leaf=is_placed)
    specs = jax.tree.map(lambda p: p.spec, placed, is_leaf=is_placed)
    return value, specs


@dataclasses.dataclass(frozen=True)
class _Placed:
    value: object
    spec: P | None


class ShardedNetwork:
    """A :class:`~brainsim.Network` partitioned over one axis of a device mesh.

    Construction does the host-side work once (splitting every projection's synapses by the
    device of their postsynaptic neuron and uploading each device's part); pass the value to
    :func:`simulate_sharded` as often as needed.

    Arguments:
        network: the network (built as for :func:`~brainsim.simulate`).
        mesh: a :class:`jax.sharding.Mesh`, e.g. ``jax.make_mesh((4,), ("neurons",))``.
        axis: the mesh axis to partition neurons over (default: the only axis of a 1-D mesh).
        capacity: ``None`` (default) exchanges every step's spike vector; an integer exchanges
            compacted lists of at most ``capacity`` spiking neurons per device and step (less
            traffic for large, sparsely firing networks), falling back to the vector in steps
            with more spikes, so no spike is lost.

    Example:
        >>> mesh = jax.make_mesh((jax.device_count(),), ("neurons",))
        >>> sharded = bs.ShardedNetwork(bs.networks.coba(), mesh)
        >>> result = bs.simulate_sharded(sharded, 100.0, key=jax.random.key(0))
    """

    def __init__(self, network: Network, mesh: Mesh, *, axis: str | None = None, capacity=None):
        if not isinstance(network, Network):
            raise TypeError(
                "simulate_sharded: `network` must be a brainsim.Network or ShardedNetwork; got "
                f"{type(network).__name__}."
            )
        axis, n_devices = _check_mesh(mesh, axis)
        capacity = _check_capacity(capacity)
        whole = host_plan(network)
        blocks = tuple(
            _Block(g.name, g.size, -(-g.size // n_devices), g.is_source) for g in whole.groups
        )
        plan = _Plan(_auto_axes(mesh), axis, n_devices, blocks, capacity)
        _check_state_shapes(network)
        deliveries = []
        for d in whole.deliveries:
            group = whole.groups[d.group]
            where = "projection " + ", ".join(d.projections)
            deliveries.append(_split_delivery(d, where, plan.block(group.name).n_local, n_devices))
        bare = _without_synapses(network)
        exchange = _Exchange(plan)
        locals_ = []
        for dev in range(n_devices):
            groups = tuple(_local_group(g, plan, dev) for g in whole.groups)
            mine = tuple(
                Delivery(d.group, d.receptor, d.blocks, d.plastic, parts[dev], d.projections)
                for d, parts in zip(whole.deliveries, deliveries, strict=True)
            )
            locals_.append(
                Plan(bare, groups, mine, whole.ring_lengths, whole.locations, exchange)
            )
        self.network = network
        self.plan = plan
        self.local, self.local_specs = _stack(locals_, mesh, axis)
        self.skeleton = eqx.filter(network, eqx.is_array, inverse=True)
        self._synapses = tuple(
            sum(_count_synapses(parts[dev]) for parts in deliveries) for dev in range(n_devices)
        )

    @property
    def mesh(self) -> Mesh:
        return self.plan.mesh

    @property
    def n_devices(self) -> int:
        return self.plan.n_devices

    def synapses_per_device(self) -> tuple[int, ...]:
        """Synapses stored on each device (their postsynaptic neurons' share), for load
        balance."""
        return self._synapses


def _count_synapses(conn) -> int:
    if isinstance(conn, _Replicated):
        return int(conn.n_synapses)  # every device holds (or regenerates) all of them
    if isinstance(conn, EllConnectivity):
        return int(np.sum(np.asarray(conn.targets) < conn.n_post))
    if isinstance(conn, CsrConnectivity):
        return int(np.asarray(conn.indptr)[-1])
    if isinstance(conn, PointwiseConnectivity):
        return int(np.sum(np.asarray(conn.target_indices()) < conn.n_post))
    return int(np.count_nonzero(np.asarray(conn.weights)))


def _check_state_shapes(network: Network) -> None:
    """Every state leaf of a neuron group (and its synaptic traces) must be per neuron."""
    shapes = jax.eval_shape(lambda: network._init(jax.random.key(0), jnp.zeros(()).dtype))
    layout = network.layout()
    for g, (name, members) in enumerate(layout.groups):
        if network.populations[members[0].index].is_source:
            continue
        kinetics = [rs.kinetics for rs in shapes.receptors[name].values()]
        for x in jax.tree.leaves((shapes.populations[name], kinetics)):
            if x.shape[:1] != (layout.size(g),):
                raise ValueError(
                    f"simulate_sharded: population {members[0].name!r} has a state array of "
                    f"shape {x.shape[1:] or '()'} per group of {layout.size(g)} neurons, not "
                    "one value per neuron; its model cannot be partitioned."
                )


# -------------------------------------------------------------------- state layouts


def _ring_to_blocks(ring, size, n_local, n_devices):
    """Global ring ``(D*size,)`` → device-major ``(n_devices*D*n_local,)``."""
    rows = ring.shape[0] // size
    r = _pad(ring.reshape(rows, size).T, n_local * n_devices, "zero").T
    return r.reshape(rows, n_devices, n_local).transpose(1, 0, 2).reshape(-1)


def _ring_from_blocks(ring, size, n_local, n_devices):
    rows = ring.shape[0] // (n_local * n_devices)
    r = ring.reshape(n_devices, rows, n_local).transpose(1, 0, 2).reshape(rows, -1)
    return r[:, :size].reshape(-1)


def _to_blocks(plan: _Plan, state: NetworkState) -> NetworkState:
    pops, receptors = {}, {}
    for b in plan.blocks:
        n_pad = b.n_local * plan.n_devices
        pstate = state.populations[b.name]
        if b.is_source:
            pops[b.name], receptors[b.name] = pstate, state.receptors[b.name]
            continue
        pops[b.name] = jax.tree.map(lambda x: _pad(x, n_pad, "edge"), pstate)  # noqa: B023
        receptors[b.name] = {
            r: ReceptorState(
                jax.tree.map(lambda x: _pad(x, n_pad, "edge"), rs.kinetics),  # noqa: B023
                _ring_to_blocks(rs.ring, b.size, b.n_local, plan.n_devices),
            )
            for r, rs in state.receptors[b.name].items()
        }
    return state._replace(populations=pops, receptors=receptors)


def _from_blocks(plan: _Plan, state: NetworkState) -> NetworkState:
    pops, receptors = {}, {}
    for b in plan.blocks:
        pstate = state.populations[b.name]
        if b.is_source:
            pops[b.name], receptors[b.name] = pstate, state.receptors[b.name]
            continue
        pops[b.name] = jax.tree.map(lambda x: x[: b.size], pstate)  # noqa: B023
        receptors[b.name] = {
            r: ReceptorState(
                jax.tree.map(lambda x: x[: b.size], rs.kinetics),  # noqa: B023
                _ring_from_blocks(rs.ring, b.size, b.n_local, plan.n_devices),
            )
            for r, rs in state.receptors[b.name].items()
        }
    return state._replace(populations=pops, receptors=receptors)


def _state_specs(plan: _Plan, state: NetworkState) -> NetworkState:
    split, whole = P(plan.axis), P()
    pops, receptors = {}, {}
    for b in plan.blocks:
        spec = whole if b.is_source else split
        pops[b.name] = jax.tree.map(lambda _: spec, state.populations[b.name])  # noqa: B023
        receptors[b.name] = jax.tree.map(lambda _: spec, state.receptors[b.name])  # noqa: B023
    return NetworkState(
        whole,
        whole,
        whole,
        pops,
        receptors,
        jax.tree.map(lambda _: whole, state.stp),
        jax.tree.map(lambda _: whole, state.plasticity),
    )


# ------------------------------------------------------------------------ one step


def _gather_vector(plan: _Plan, local: dict) -> dict:
    """All-gather the neuron populations' local spike vectors (one collective)."""
    names = list(local)
    flat = jnp.concatenate([local[n] for n in names])
    every = lax.all_gather(flat, plan.axis)  # (devices, sum of local sizes)
    return _split_gathered(plan, names, every)


def _split_gathered(plan: _Plan, names, every) -> dict:
    out, offset = {}, 0
    for n in names:
        b = plan.block(n)
        out[n] = every[:, offset : offset + b.n_local].reshape(-1)[: b.size]
        offset += b.n_local
    return out


def _gather_compact(plan: _Plan, local: dict) -> dict:
    """Exchange at most ``capacity`` (index, value) pairs per device; fall back to the whole
    vector in a step where any device has more spikes (decided identically everywhere from
    the gathered counts, so all devices take the same branch)."""
    names = list(local)
    flat = jnp.concatenate([local[n] for n in names])
    width = flat.shape[0]
    cap = min(plan.capacity, width)
    (idx,) = jnp.nonzero(flat, size=cap, fill_value=width)
    values = flat.at[idx].get(mode="fill", fill_value=0)
    count = jnp.count_nonzero(flat).astype(jnp.int32)
    all_idx, all_values, all_counts = lax.all_gather((idx, values, count), plan.axis)
    devices = jnp.arange(plan.n_devices, dtype=idx.dtype)[:, None]
    slots = jnp.where(all_idx < width, devices * width + all_idx, plan.n_devices * width)

    def from_lists(_):
        every = jnp.zeros((plan.n_devices * width,), flat.dtype)
        every = every.at[slots.ravel()].set(all_values.ravel(), mode="drop")
        return every.reshape(plan.n_devices, width)

    def from_vector(_):
        return lax.all_gather(flat, plan.axis)

    every = lax.cond(jnp.any(all_counts > cap), from_vector, from_lists, None)
    return _split_gathered(plan, names, every)


@dataclasses.dataclass(frozen=True)
class _Exchange:
    """The spike exchange of a partitioned step (:attr:`Plan.exchange`): padding neurons
    masked, then every group's local spikes gathered from all devices in one collective."""

    plan: _Plan

    def __call__(self, local: dict) -> dict:
        local = {n: jnp.where(_valid(self.plan, n), s, 0) for n, s in local.items()}
        if not local:
            return {}
        gather = _gather_vector if self.plan.capacity is None else _gather_compact
        return gather(self.plan, local)


def _valid(plan: _Plan, name: str):
    """Which of this device's slots of population ``name`` are real neurons."""
    b = plan.block(name)
    first = lax.axis_index(plan.axis) * b.n_local
    return first + jnp.arange(b.n_local) < b.size


def _global_view(plan: _Plan, state: NetworkState, specs) -> NetworkState:
    """The state as every monitor sees it (:class:`AbstractMonitor`): the whole network's, in
    the single-device layout. Every partitioned array is all-gathered; XLA removes the gathers
    whose values no monitor reads, so monitors cost the communication of what they read."""
    split = P(plan.axis)
    whole = jax.tree.map(
        lambda s, x: lax.all_gather(x, plan.axis, tiled=True) if s == split else x,
        specs,
        state,
        is_leaf=lambda x: isinstance(x, P),
    )
    return _from_blocks(plan, whole)


def _device_program(local, local_specs, skeleton, plan: _Plan, monitors, specs):
    """The per-device loop of a partitioned run: ``part(dynamic, carry, n_steps, checkpoint,
    unroll) -> (carry, outputs)`` under ``shard_map``, where ``carry = (state in blocks,
    buffers, faults of each device, steps so far)``. A run in parts that pass the carry on is
    the same run, step for step (as :func:`brainsim._simulate._scan`)."""
    dynamic, static = eqx.partition(local, eqx.is_array)
    split = P(plan.axis)
    carry_specs = (specs, P(), split, P())

    def device(dynamic, carry, n_steps, checkpoint, unroll):
        mine = jax.tree.map(lambda x, s: x[0] if s == split else x, dynamic, local_specs)
        device_plan = eqx.combine(mine, static)
        state, buffers, faults, local = carry
        faults = jax.tree.map(lambda x: x[0], faults)  # this device's own record
        # Padding slots are not neurons: their state is not checked for faults.
        valid = {b.name: _valid(plan, b.name) for b in plan.blocks if not b.is_source}

        def body(carry, _):
            state, buffers, faults, local = carry  # local: steps of this run so far
            new_state, spikes = step(device_plan, state)
            view = _global_view(plan, state, specs)
            buffers = tuple(
                m.update(skeleton, b, view, spikes, local)
                for m, b in zip(monitors, buffers, strict=True)
            )
            outputs = tuple(m.per_step(skeleton, view, spikes, local) for m in monitors)
            new_groups = [new_state.populations[g.name] for g in device_plan.groups]
            faults = check_step(device_plan.groups, new_groups, local, faults, valid)
            return (new_state, buffers, faults, local + 1), outputs

        (state, buffers, faults, local), outputs = checkpointed_scan(
            body, (state, buffers, faults, local), n_steps, checkpoint, unroll
        )
        return (state, buffers, jax.tree.map(lambda x: x[None], faults), local), outputs

    def part(dynamic, carry, n_steps, checkpoint, unroll):
        run = functools.partial(device, n_steps=n_steps, checkpoint=checkpoint, unroll=unroll)
        args = _place((dynamic, carry), (local_specs, carry_specs), plan.mesh)
        return _shard_map(
            run, mesh=plan.mesh, in_specs=(local_specs, carry_specs),
            out_specs=(carry_specs, P()),
        )(*args)

    return dynamic, static, part


def _sharded_start(plan: _Plan, state, buffers, n_groups: int):
    """The carry of a partitioned run from ``state`` (single-device layout)."""
    faults = jax.tree.map(
        lambda x: jnp.broadcast_to(x, (plan.n_devices,) + x.shape), StateFaults.init(n_groups)
    )
    return _to_blocks(plan, state), buffers, faults, jnp.zeros((), jnp.int32)


def _sharded_finish(plan: _Plan, skeleton, groups, monitors, n_steps, start, carry, outputs):
    """The :class:`SimulationResult` of a partitioned run's final carry."""
    final, buffers, faults, _ = carry
    # Each device tracked its own neurons; one reduction after the run (not one per step)
    # gives the first step at which any device saw a fault.
    faults = _shard_map(
        lambda f: combine_devices(jax.tree.map(lambda x: x[0], f), plan.axis),
        mesh=plan.mesh, in_specs=(P(plan.axis),), out_specs=P(),
    )(faults)
    # Back to the single-device layout, replicated (the reshapes need whole arrays).
    final = _from_blocks(plan, _place(final, jax.tree.map(lambda _: P(), final), plan.mesh))
    return collect_result(
        final,
        buffers,
        outputs,
        faults,
        monitors,
        skeleton.populations,
        dt=skeleton.dt,
        n_steps=n_steps,
        start=start,
        timing=skeleton.timing,
        groups=groups,
    )


@jit
def _run_sharded(
    local, local_specs, skeleton, plan: _Plan, state, buffers, monitors, n_steps, checkpoint, unroll
):
    start = (state.step, state.epoch)
    carry = _sharded_start(plan, state, buffers, len(local.groups))
    specs = _state_specs(plan, carry[0])
    dynamic, static, part = _device_program(local, local_specs, skeleton, plan, monitors, specs)
    carry, outputs = part(dynamic, carry, n_steps, checkpoint, unroll)
    groups = eqx.combine(dynamic, static).groups
    return _sharded_finish(plan, skeleton, groups, monitors, n_steps, start, carry, outputs)


@jit
def _sharded_carry(plan: _Plan, state, buffers, n_groups: int):
    return _sharded_start(plan, state, buffers, n_groups)


def _sharded_part(fixed, carry, n_steps, checkpoint, unroll):
    dynamic, _, part = _device_program(*fixed)
    return part(dynamic, carry, n_steps, checkpoint, unroll)


# The carry is donated, as in simulate's parts: the monitors' buffers are updated in place.
_sharded_part_jit = jit(_sharded_part, donate="all-except-first")


@jit
def _sharded_result(plan, skeleton, local, monitors, n_steps, start, carry, outputs):
    return _sharded_finish(plan, skeleton, local.groups, monitors, n_steps, start, carry, outputs)


def run_partitioned_in_parts(
    sharded: ShardedNetwork, state, monitors, n_steps: int, chunk: int, bar, checkpoint=None,
    unroll: int = 1,
) -> SimulationResult:
    """:func:`run_partitioned` as a host loop over parts of ``chunk`` steps, advancing ``bar``
    after each (``simulate(..., partition=..., progress=...)``): the same result, bit for
    bit."""
    buffers = tuple(m.init(sharded.network, n_steps, float_dtype(state)) for m in monitors)
    state, buffers = _replicate((state, buffers), sharded.mesh)
    plan, local = sharded.plan, sharded.local
    start = (state.step, state.epoch)
    # Copied: the caller's state is not ours to donate, and a leaf that appears twice in the
    # carry (one zeros array for two fields) cannot be donated twice.
    carry = jax.tree.map(jnp.copy, _sharded_carry(plan, state, buffers, len(local.groups)))
    specs = _state_specs(plan, carry[0])
    fixed = (local, sharded.local_specs, sharded.skeleton, plan, monitors, specs)
    parts = []
    for k in range(0, n_steps, chunk):
        n = min(chunk, n_steps - k)
        carry, outputs = _sharded_part_jit(fixed, carry, n, checkpoint, unroll)
        parts.append(outputs)
        jax.block_until_ready(carry[3])  # the bar reports finished work
        bar.update(k + n, compiled=k == 0 or n != chunk)
    outputs = jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)
    return _sharded_result(plan, sharded.skeleton, local, monitors, n_steps, start, carry, outputs)


def _replicate(tree, mesh: Mesh):
    """Host values as arrays replicated over ``mesh`` (global arrays: with several processes
    every one passes its own identical copy, as ``jax.distributed`` programs require)."""
    whole = NamedSharding(mesh, P())

    def put(x):
        if not eqx.is_array(x) or isinstance(x, jax.core.Tracer):
            return x  # traced (vmap over runs): placed by the program itself
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = put(jax.random.key_data(x))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, whole, lambda i: host[i])

    return jax.tree.map(put, tree)


# ------------------------------------------------------------------------ public


class Sharded(eqx.Module):
    """A partition of the network's neurons over one axis of a device mesh: pass it as
    ``simulate(..., partition=bs.Sharded(mesh))`` (and to :func:`~brainsim.run_long`).

    Arguments:
        mesh: a :class:`jax.sharding.Mesh`, e.g. ``jax.make_mesh((4,), ("neurons",))``.
        axis: the mesh axis to partition neurons over (default: the only axis).
        capacity: ``None`` (default) exchanges every step's spike vectors; an integer
            exchanges compacted lists of at most ``capacity`` spiking neurons per device and
            step, falling back to the vectors in steps with more (no spike is ever lost).

    The split of the synapses is host work done for every call; to split once and run many
    times, pass a :class:`ShardedNetwork` as the network instead.
    """

    mesh: Mesh = eqx.field(static=True)
    axis: str | None = eqx.field(static=True, default=None)
    capacity: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        _check_mesh(self.mesh, self.axis)
        _check_capacity(self.capacity)

    def split(self, network: Network) -> ShardedNetwork:
        return ShardedNetwork(network, self.mesh, axis=self.axis, capacity=self.capacity)


def partitioned(network, partition) -> ShardedNetwork:
    """The :class:`ShardedNetwork` a run with ``partition`` uses (``network`` may already be
    one, then ``partition`` must be ``None``)."""
    if isinstance(network, ShardedNetwork):
        if partition is not None:
            raise ValueError(
                "simulate: `network` is a ShardedNetwork, which fixes its partition; pass "
                "partition=None (or the plain Network with the partition)."
            )
        return network
    if not isinstance(partition, Sharded):
        raise TypeError(
            "simulate: `partition` must be None (one device) or a brainsim.Sharded value, e.g. "
            f"bs.Sharded(jax.make_mesh((jax.device_count(),), ('neurons',))); got "
            f"{type(partition).__name__}."
        )
    return partition.split(network)


def run_partitioned(
    sharded: ShardedNetwork, state, monitors, n_steps: int, checkpoint=None, unroll: int = 1
) -> SimulationResult:
    """The sharded loop for prepared arguments (``simulate`` and ``run_long`` call it)."""
    buffers = tuple(m.init(sharded.network, n_steps, float_dtype(state)) for m in monitors)
    state, buffers = _replicate((state, buffers), sharded.mesh)
    return _run_sharded(
        sharded.local,
        sharded.local_specs,
        sharded.skeleton,
        sharded.plan,
        state,
        buffers,
        monitors,
        n_steps,
        checkpoint,
        unroll,
    )


def simulate_sharded(
    network: Network | ShardedNetwork,
    duration: float | None = None,
    *,
    mesh: Mesh | None = None,
    axis: str | None = None,
    capacity: int | None = None,
    n_steps: int | None = None,
    key=None,
    state: NetworkState | None = None,
    record: Sequence[AbstractMonitor] = (),
    check: bool = True,
) -> SimulationResult:
    """:func:`~brainsim.simulate` with the neurons partitioned over the devices of ``mesh``:
    ``simulate(network, ..., partition=bs.Sharded(mesh, axis, capacity))``.

    Same arguments and result as :func:`~brainsim.simulate` (``state`` and ``result.state``
    are ordinary single-device-layout :class:`NetworkState` values, so runs can be continued
    either way); see the module documentation for how the work is split and how to launch on
    several GPUs or hosts.

    Arguments:
        network: a :class:`~brainsim.Network` (split on every call) or a
            :class:`ShardedNetwork` (split once; then ``mesh``, ``axis`` and ``capacity`` come
            from it and must not be given).
        mesh: a :class:`jax.sharding.Mesh`, e.g. ``jax.make_mesh((4,), ("neurons",))``.
        axis: mesh axis to partition neurons over (default: the only axis).
        capacity: spikes per device and step in the compacted exchange, or ``None`` to
            exchange spike vectors (see :class:`ShardedNetwork`).
        duration, n_steps, key, state, record, check: as for :func:`~brainsim.simulate`.

    Example:
        >>> mesh = jax.make_mesh((jax.device_count(),), ("neurons",))
        >>> result = bs.simulate_sharded(net, 100.0, mesh=mesh, key=jax.random.key(0),
        ...                              record=(bs.SpikeRaster(),))
        >>> times, ids = result.spikes("E")  # equal to bs.simulate(net, 100.0, ...)
    """
    if isinstance(network, ShardedNetwork):
        given = [n for n, v in (("mesh", mesh), ("axis", axis), ("capacity", capacity)) if v]
        if given:
            raise ValueError(
                f"simulate_sharded: `{given[0]}` is fixed by the ShardedNetwork; build a new "
                "ShardedNetwork to change it."
            )
        partition = None
    else:
        if mesh is None:
            raise ValueError(
                "simulate_sharded: pass `mesh=` (e.g. jax.make_mesh((jax.device_count(),), "
                "('neurons',))) or a ShardedNetwork."
            )
        if not isinstance(network, Network):
            raise TypeError(
                "simulate_sharded: `network` must be a brainsim.Network or ShardedNetwork; got "
                f"{type(network).__name__}."
            )
        partition = Sharded(mesh, axis, capacity)
    from ._simulate import simulate

    return simulate(
        network,
        duration,
        n_steps=n_steps,
        key=key,
        state=state,
        record=record,
        check=check,
        partition=partition,
    )
