r"""The execution plan: a network's populations merged into groups, its projections into
deliveries, so that the work of one step grows with the kinds of model, not their number.

A :class:`~brainsim.Network` is a description: named populations and projections, as a user
writes them. Simulating it population by population would compile one set of operations per
population and one spike delivery per projection (Potjans–Diesmann: 16 populations, 72
projections), so compile time and, on a GPU, kernel launches would grow with the length of
the description. The plan (GeNN's *merged groups*, built here from values and static
structure, without code generation) removes that growth:

* **Groups.** Populations whose models have the same class and static structure, whose
  receptors have the same names, kinetics and outputs, and whose parameters are scalars or
  per-neuron arrays, are one group: one state (struct of arrays, the members' neurons one
  after the other), one model with per-neuron parameters (each member's parameters broadcast
  to its neurons and concatenated; a scalar that is one and the same object in every member,
  as when populations share a model value, stays a scalar, so its exponentials are computed
  once per step), one ring buffer per receptor. Spike sources are grouped the same way.
* **Deliveries.** All projections into one receptor of one group that share a storage
  format (:meth:`AbstractConnectivity.merge_key`) become one connectivity: the rows of every
  presynaptic population stacked, the targets shifted by the offset of their member in the
  group, per-synapse weights and delays kept. One kernel call delivers all of them in a step.
  A projection that cannot be merged (its own weights in the state, an unmergeable format)
  is delivered on its own into the group's ring (:meth:`AbstractConnectivity.placed`).
  Grouping depends on models and receptors only: the formats of the projections never
  change which populations merge.
* **Names** stay as static views: a member's state and spikes are slices of its group's, so
  monitors, results, plasticity rules and fitting address populations by name as before.

The plan is computed from the network's values inside the traced program (merging is
concatenation and index arithmetic, done once per compiled run, outside the time loop), so
it is differentiable in every parameter and never stale after ``eqx.tree_at``.

Randomness: a population's injected currents draw from ``fold_in(step_key, i)`` with ``i``
its index in the network, as before merging; a merged group of stochastic sources draws one
stream for the whole group, from its first member's key (so a source's spike train depends
on the group it is merged into, not only on its own index).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._propagation import AbstractConnectivity, array_module


class Member(NamedTuple):
    """A population inside its group: neurons ``offset .. offset + size - 1`` of the group."""

    name: str
    size: int
    offset: int
    index: int
    """Position of the population in ``network.populations`` (its random stream)."""


class Block(NamedTuple):
    """Rows of a delivery: the spikes of ``population``, through the short-term plasticity
    of projection ``stp`` when it is not ``None``."""

    population: str
    stp: str | None


class DeviceBlock(NamedTuple):
    """A group partitioned over mesh axis ``axis``: this device holds neurons
    ``index * n_local .. (index + 1) * n_local - 1`` of the group's ``n_global`` (the last
    block padded with inert neurons)."""

    axis: str
    n_global: int
    n_local: int


class Group(eqx.Module):
    """Merged populations: one model with per-neuron parameters, one state, one ring per
    receptor. ``currents[m]`` are the injected currents of member ``m``.

    In a partitioned run (``block`` set) ``size`` is the device's share, ``n_local``; members
    keep their offsets and sizes in the whole group."""

    name: str = eqx.field(static=True)
    members: tuple[Member, ...] = eqx.field(static=True)
    size: int = eqx.field(static=True)
    is_source: bool = eqx.field(static=True)
    model: object
    receptors: dict
    currents: tuple
    block: DeviceBlock | None = eqx.field(static=True, default=None)

    @property
    def n_global(self) -> int:
        return self.size if self.block is None else self.block.n_global

    def member(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)


class Delivery(eqx.Module):
    """One kernel call per step: ``conn`` delivers the spikes of ``blocks`` (concatenated in
    that order) into receptor ``receptor`` of group ``group``; ``plastic`` names the
    projection whose weights come from the plasticity state."""

    group: int = eqx.field(static=True)
    receptor: str = eqx.field(static=True)
    blocks: tuple[Block, ...] = eqx.field(static=True)
    plastic: str | None = eqx.field(static=True)
    conn: AbstractConnectivity
    projections: tuple[str, ...] = eqx.field(static=True, default=())
    """Names of the projections this delivery carries."""


class Plan(eqx.Module):
    """A network compiled to groups and deliveries (see the module docstring)."""

    network: object
    """The :class:`~brainsim.Network` it was built from (dt, timing, plasticity, STP)."""
    groups: tuple[Group, ...]
    deliveries: tuple[Delivery, ...]
    ring_lengths: tuple = eqx.field(static=True)
    """``((group index, receptor), rows D)`` of every receptor's ring buffer."""
    locations: tuple = eqx.field(static=True)
    """``(population name, (group index, member))`` pairs (static fields must hash)."""
    exchange: object = eqx.field(static=True, default=None)
    """Partitioned runs: ``exchange({group: local spikes})`` returns every group's spikes
    over the whole network (a collective over the devices); ``None`` on one device."""

    def group_of(self, population: str) -> tuple[Group, Member]:
        g, member = dict(self.locations)[population]
        return self.groups[g], member


# ------------------------------------------------------------------------------ grouping


def _leaves_fit(module, size: int) -> bool:
    """Whether every array leaf of ``module`` is a scalar or one value per neuron."""
    return all(jnp.ndim(x) == 0 or jnp.shape(x) == (size,) for x in jax.tree.leaves(module))


def _structure(module) -> Hashable:
    """Class and static structure of a module, its array leaves' kinds ignored."""
    return jax.tree.structure(module)


def group_key(population) -> Hashable | None:
    """The key under which populations merge; ``None`` keeps the population alone. It
    depends on the population's model and receptors only, never on the formats of the
    projections into it (any format can deliver into a merged group:
    :meth:`AbstractConnectivity.placed`), so choosing a layout never regroups the network."""
    if population.currents and not _leaves_fit(
        population.currents, population.size
    ):
        return None
    parts = [population.model, *(population.receptors[r] for r in sorted(population.receptors))]
    if not all(_leaves_fit(p, population.size) for p in parts):
        return None
    receptors = tuple(
        (r, _structure(population.receptors[r])) for r in sorted(population.receptors)
    )
    try:
        key = (population.is_source, _structure(population.model), receptors)
        hash(key)
    except TypeError:  # static fields that are not hashable: never merged
        return None
    return key


def _merge_modules(modules: Sequence, sizes: Sequence[int]):
    """One module whose array leaves are the members' leaves broadcast to their neurons and
    concatenated (a single member is returned unchanged, scalars and all)."""
    if len(modules) == 1:
        return modules[0]
    flat = [jax.tree.leaves(m) for m in modules]
    treedef = jax.tree.structure(modules[0])
    leaves = []
    for column in zip(*flat, strict=True):
        if jnp.ndim(column[0]) == 0 and all(x is column[0] for x in column):
            # One parameter object shared by every member (one model value used for several
            # populations): it stays a scalar, so a time constant's exponentials are computed
            # once per step, not once per neuron.
            leaves.append(column[0])
            continue
        xp = array_module(*column)
        parts = [xp.broadcast_to(xp.asarray(x), (n,)) for x, n in zip(column, sizes, strict=True)]
        leaves.append(xp.concatenate(parts))
    return jax.tree.unflatten(treedef, leaves)


def _specialised(model, dt: float):
    """``model.specialised(dt)`` where the model has that hook (a spike source's static facts
    about its current values, e.g. :meth:`PoissonSource.specialised`) and every array of it is
    concrete: the plan is built again from the network's values for every run, so the facts
    hold for the run that uses them. With traced values (``vmap``, ``grad``) nothing is known
    and the model stays general."""
    hook = getattr(model, "specialised", None)
    if hook is None or any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(model)):
        return model
    return hook(dt)


def group_name(names: Sequence[str], taken: set[str]) -> str:
    """A group's name: its population's for a group of one, else the members joined by ``+``
    (made unique against the network's population names)."""
    name = names[0] if len(names) == 1 else "+".join(names)
    while len(names) > 1 and name in taken:
        name += "'"
    return name


class Layout(NamedTuple):
    """Which populations form which group (static: computed from structure alone)."""

    groups: tuple[tuple[str, tuple[Member, ...]], ...]
    """``(group name, members)`` in group order."""
    locations: dict
    """``{population name: (group index, member)}``."""

    def group_of(self, population: str) -> tuple[int, Member]:
        return self.locations[population]

    def size(self, g: int) -> int:
        return sum(m.size for m in self.groups[g][1])


def group_layout(network, merge: bool | str = True) -> Layout:
    """Group the populations of ``network`` (see the module docstring); ``merge=False``
    gives every population a group of its own, ``merge="sources"`` merges spike sources
    only."""
    pops = network.populations
    keys: dict[Hashable, list[int]] = {}
    for i, p in enumerate(pops):
        wanted = merge is True or (merge == "sources" and p.is_source)
        key = group_key(p) if wanted else None
        keys.setdefault(("alone", i) if key is None else key, []).append(i)
    taken = {p.name for p in pops}
    groups, locations = [], {}
    for indices in keys.values():
        members, offset = [], 0
        for i in indices:
            members.append(Member(pops[i].name, pops[i].size, offset, i))
            offset += pops[i].size
        for m in members:
            locations[m.name] = (len(groups), m)
        groups.append((group_name([m.name for m in members], taken), tuple(members)))
    return Layout(tuple(groups), locations)


def host_plan(network, merge: bool | str = True) -> Plan:
    """:func:`build_plan` of a network of concrete values, merged with NumPy on the host and
    put on the device: no tracing and no compilation of the merge (which for
    Potjans–Diesmann compiled longer than the simulation loop). The drivers use it outside
    transformations."""
    arrays, rest = eqx.partition(network, eqx.is_array)
    device = jax.tree.leaves(arrays)
    # Traced leaves (a gradient with respect to a parameter) stay traced: only they, and what
    # is merged with them, go through jax.numpy.
    converted: dict[int, object] = {}  # one host array per device array: sharing survives
    host_leaves = []
    for x in device:
        if not isinstance(x, jax.core.Tracer) and id(x) not in converted:
            converted[id(x)] = np.asarray(x)
        host_leaves.append(x if isinstance(x, jax.core.Tracer) else converted[id(x)])
    # Arrays the merge passes through unchanged keep their device copy (no second upload).
    originals = {id(h): d for h, d in zip(host_leaves, device, strict=True)}
    host = eqx.combine(jax.tree.unflatten(jax.tree.structure(arrays), host_leaves), rest)
    plan = build_plan(host, merge)

    def on_device(x):
        if not isinstance(x, np.ndarray):
            return x
        # device_put, not jnp.asarray: the latter compiles a program per shape (~7 ms each).
        return originals[id(x)] if id(x) in originals else jax.device_put(x)

    plan = jax.tree.map(on_device, eqx.tree_at(lambda p: p.network, plan, replace=None))
    return eqx.tree_at(lambda p: p.network, plan, network, is_leaf=lambda x: x is None)


def build_plan(network, merge: bool | str = True) -> Plan:
    """The plan of ``network`` (a :class:`~brainsim.Network`); see the module docstring.
    ``merge=False``: one group per population and one delivery per projection;
    ``merge="sources"``: spike sources merged, neurons and deliveries not."""
    layout = group_layout(network, merge)
    groups = []
    for name, members in layout.groups:
        chosen = [network.populations[m.index] for m in members]
        sizes = [p.size for p in chosen]
        first = chosen[0]
        receptors = {
            r: _merge_modules([p.receptors[r] for p in chosen], sizes) for r in first.receptors
        }
        groups.append(
            Group(
                name,
                members,
                sum(sizes),
                first.is_source,
                _specialised(_merge_modules([p.model for p in chosen], sizes), network.dt),
                receptors,
                tuple(p.currents for p in chosen),
            )
        )
    deliveries = _deliveries(network, groups, layout.locations, merge)
    rings: dict[tuple[int, str], int] = {}
    for g, group in enumerate(groups):
        for r in group.receptors:
            rings[(g, r)] = 1
    for d in deliveries:
        rings[(d.group, d.receptor)] = max(rings[(d.group, d.receptor)], d.conn.max_delay)
    return Plan(
        network,
        tuple(groups),
        tuple(deliveries),
        tuple(rings.items()),
        tuple(layout.locations.items()),
    )


def _deliveries(network, groups, locations, merge: bool) -> list[Delivery]:
    """Merge the projections into each receptor of each group by format (see module doc)."""
    by_target: dict[tuple[int, str], list] = {}
    for proj in network.projections:
        g, member = locations[proj.post]
        by_target.setdefault((g, proj.receptor), []).append((proj, member.offset))
    out = []
    for (g, receptor), parts in by_target.items():
        width = groups[g].size
        mergeable: dict[Hashable, list] = {}
        for proj, offset in parts:
            key = None
            if merge is True and proj.plasticity is None:
                key = proj.connectivity.merge_key()
            if key is None:
                conn = proj.connectivity.placed(offset, width)
                plastic = proj.name if proj.plasticity is not None else None
                block = Block(proj.pre, proj.name if proj.stp is not None else None)
                out.append(Delivery(g, receptor, (block,), plastic, conn, (proj.name,)))
                continue
            mergeable.setdefault(key, []).append((proj, offset))
        for same in mergeable.values():
            rows: dict[Block, list] = {}
            names: dict[Block, list[str]] = {}
            for proj, offset in same:
                block = Block(proj.pre, proj.name if proj.stp is not None else None)
                rows.setdefault(block, []).append((proj.connectivity, offset))
                names.setdefault(block, []).append(proj.name)
            for blocks, conn in type(same[0][0].connectivity).merge(list(rows.items()), width):
                carried = tuple(n for b in blocks for n in names[b])
                out.append(Delivery(g, receptor, tuple(blocks), None, conn, carried))
    return out


def member_view(tree, member: Member, group_size: int):
    """The slice of a group's per-neuron arrays that belongs to ``member``."""
    if member.size == group_size:
        return tree
    return jax.tree.map(lambda x: x[member.offset : member.offset + member.size], tree)


def concat_members(trees: Sequence):
    """Members' states (or spikes) joined into their group's (one member: unchanged)."""
    if len(trees) == 1:
        return trees[0]
    return jax.tree.map(lambda *xs: array_module(*xs).concatenate(xs), *trees)

