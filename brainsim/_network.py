r"""Populations and projections composed into one network value with one step function.

A :class:`Network` is a PyTree: every parameter (neuron constants, synaptic weights, time
constants, input amplitudes) is an array leaf, so ``jit``, ``vmap`` and ``grad`` act on it
directly; names, sizes and delays (in steps) are static structure. The network carries its
step ``dt`` because delays are stored as whole steps.

One step ``k`` (from :math:`t_k = k\,\Delta t` to :math:`t_{k+1}`) is, in this order:

1. **Arrivals** — every receptor reads the row of its ring buffer due at step ``k`` (spikes
   emitted in step ``k - l`` over synapses with lag ``l``: a delay :math:`d` has the lag
   :math:`d/\Delta t + 1`) and adds it to its trace.
2. **Drive** — each receptor's trace, averaged exactly over :math:`[t_k, t_{k+1}]`, becomes
   membrane input through its output (current, conductance, NMDA) at :math:`V(t_k)`; injected
   currents are evaluated for step ``k``.
3. **Neurons** integrate to :math:`t_{k+1}`, spike and reset; spike sources emit. A spike is
   recorded at :math:`t_k` (Brian2) or :math:`t_{k+1}` (NEST), as the network's
   :class:`~brainsim.Timing` says. Each receptor's trace then decays to :math:`t_{k+1}` and the
   ring row it read is cleared (ordered after the neuron update so that XLA updates both in
   place; for a receptor with incoming projections the clear is done by the first delivery
   into it in step 4, one kernel call instead of two).
4. **Propagation** — spikes pass through short-term plasticity and are delivered into the
   postsynaptic ring rows ``k + l``. A zero delay (lag one) therefore acts in the next step,
   as in Brian2; a delay :math:`d` acts in step :math:`k + d/\Delta t + 1`, as in Brian2 and
   NEST.
5. **Plasticity** — each projection with a ``plasticity`` rule updates its weights (kept in
   ``state.plasticity``) from this step's pre- and postsynaptic spikes.

So a plastic synapse transmits the weight *before* the spike's own update, as Brian2's
``on_pre: ge += w; ...; w = ...``. With ``Timing(transmit_after_update=True)`` (NEST's
``stdp_synapse``; the default of :meth:`Timing.nest`) steps 4 and 5 swap: the weights are
updated first and the spike is transmitted with its updated weight. In both orders XLA updates
the weight array in place (the update is made to wait for the delivery that reads the old
weights).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from . import _step
from ._compile import jit
from ._errors import check_name, check_positive, check_positive_int, unknown_name_error
from ._inputs import AbstractCurrent
from ._neurons._base import AbstractNeuron, AbstractSpikeSource, default_dtype
from ._plan import Plan, build_plan, concat_members, group_layout, host_plan, member_view
from ._propagation import AbstractConnectivity, AbstractLayout, Procedural, Sparse
from ._set import set_population, set_projection
from ._synapses.kinetics import AbstractKinetics
from ._synapses.outputs import AbstractOutput
from ._synapses.stp import TsodyksMarkram
from ._timing import BRIAN2, Timing, check_timing, with_static_field
from .connect import EdgeList, ProceduralEdges
from .init import AbstractInitializer
from .plasticity._base import AbstractPlasticity
from .plasticity._network import (
    PlasticState,
    check_initial_weights,
    needs_modulator,
    synapses_for,
)
from .plasticity._synapses import AbstractSynapses


class Receptor(eqx.Module):
    """A synaptic input port of a population: kinetics (trace dynamics) and output (how the
    trace drives the membrane). Like Brian2's ``ge``/``gi`` or NEST's receptor types."""

    kinetics: AbstractKinetics
    output: AbstractOutput


class Population(eqx.Module):
    """``size`` neurons (or spike-source channels) sharing one model.

    Arguments:
        name: unique name within the network.
        size: number of neurons.
        model: an :class:`AbstractNeuron` (parameters scalar or per neuron) or an
            :class:`AbstractSpikeSource`.
        receptors: named synaptic inputs, e.g. ``{"exc": Receptor(ExponentialSynapse(5.0),
            ConductanceBased(0.0))}``.
        currents: injected currents (:class:`ConstantCurrent`, :class:`StepCurrent`,
            :class:`TimedArray`) added to the membrane input.
        initial: initial-value distributions for state variables, e.g.
            ``{"v": brainsim.init.Uniform(-60.0, -50.0)}``; others start at rest.
    """

    name: str = eqx.field(static=True)
    size: int = eqx.field(static=True)
    model: AbstractNeuron | AbstractSpikeSource
    receptors: dict[str, Receptor]
    currents: tuple[AbstractCurrent, ...]
    initial: dict[str, AbstractInitializer]

    def __init__(
        self,
        name: str,
        size: int,
        model,
        *,
        receptors: Mapping[str, Receptor] | None = None,
        currents: Sequence[AbstractCurrent] = (),
        initial: Mapping[str, AbstractInitializer] | None = None,
    ):
        if not isinstance(name, str) or not name:
            raise ValueError(f"Population: `name` must be a non-empty string; got {name!r}.")
        check_positive_int("size", size, owner=f"Population {name!r}", what=" (neurons)")
        if not isinstance(model, AbstractNeuron | AbstractSpikeSource):
            raise TypeError(
                f"Population {name!r}: `model` must be a neuron model (e.g. brainsim.LIF(...)) "
                f"or a spike source (e.g. brainsim.PoissonSource(...)); got {type(model).__name__}."
            )
        receptors = dict(receptors or {})
        for rname, rec in receptors.items():
            if not isinstance(rec, Receptor):
                raise TypeError(
                    f"Population {name!r}: receptor {rname!r} must be a brainsim.Receptor; got "
                    f"{type(rec).__name__}."
                )
        if isinstance(model, AbstractSpikeSource) and (receptors or currents):
            raise ValueError(f"Population {name!r}: a spike source takes no receptors or currents.")
        for c in currents:
            if not isinstance(c, AbstractCurrent):
                raise TypeError(
                    f"Population {name!r}: currents must be brainsim current inputs; got "
                    f"{type(c).__name__}."
                )
            c.check_size(int(size), f"Population {name!r}")
        model.check_size(int(size))
        self.name = name
        self.size = int(size)
        self.model = model
        self.receptors = receptors
        self.currents = tuple(currents)
        self.initial = dict(initial or {})

    @property
    def is_source(self) -> bool:
        return isinstance(self.model, AbstractSpikeSource)


class Projection(eqx.Module):
    """Synapses from population ``pre`` onto receptor ``receptor`` of population ``post``.

    Arguments:
        pre, post: population names.
        connectivity: an :class:`~brainsim.connect.EdgeList` from a builder in
            :mod:`brainsim.connect` (delays in ms), or a
            :class:`~brainsim.connect.ProceduralEdges` rule (``procedural_*`` builders).
        receptor: name of the postsynaptic receptor the weights add to.
        layout: storage (default :class:`Sparse`, event-driven, for an edge list and
            :class:`Procedural` for a procedural rule; or :class:`CSR`, :class:`Dense`,
            :class:`LearnableDelays` for delays trained by gradient).
        stp: optional :class:`TsodyksMarkram` short-term plasticity.
        round_delays: round delays to the nearest step instead of raising.
        name: unique name (default ``"pre->post:receptor"``).
        plasticity: optional long-term plasticity rule (:mod:`brainsim.plasticity`); the
            weights then become part of the simulated state (``state.plasticity[name]``,
            ``result.weights(name)``). Needs a :class:`Dense`, :class:`Sparse` or :class:`CSR`
            layout (or a format with its own synapse view); the initial weights must lie
            within the rule's bounds ``[w_min, w_max]``.
        modulator: the neuromodulator signal passed to the rule each step (reward-modulated
            rules, which require one): a current-like input (e.g. :class:`~brainsim.TimedArray`,
            :class:`~brainsim.ConstantCurrent`; its value at the step), or the name of a
            population whose spike count in the step is the signal.
    """

    pre: str = eqx.field(static=True)
    post: str = eqx.field(static=True)
    receptor: str = eqx.field(static=True)
    name: str = eqx.field(static=True)
    connectivity: AbstractConnectivity | EdgeList | ProceduralEdges
    layout: AbstractLayout
    stp: TsodyksMarkram | None
    round_delays: bool = eqx.field(static=True)
    plasticity: AbstractPlasticity | None
    modulator: AbstractCurrent | None
    modulator_population: str | None = eqx.field(static=True)
    synapses: AbstractSynapses | None

    def __init__(
        self,
        pre: str,
        post: str,
        connectivity,
        *,
        receptor: str,
        layout: AbstractLayout | None = None,
        stp: TsodyksMarkram | None = None,
        round_delays: bool = False,
        name: str | None = None,
        plasticity: AbstractPlasticity | None = None,
        modulator: AbstractCurrent | str | None = None,
    ):
        for role, value in (("pre", pre), ("post", post), ("receptor", receptor)):
            check_name(role, value, owner=f"Projection {pre}->{post}")
        if stp is not None and not isinstance(stp, TsodyksMarkram):
            raise TypeError(
                f"Projection {pre}->{post}: `stp` must be a brainsim.TsodyksMarkram or None; got "
                f"{type(stp).__name__}."
            )
        if layout is not None and not isinstance(layout, AbstractLayout):
            raise TypeError(
                f"Projection {pre}->{post}: `layout` must be a layout such as brainsim.Sparse() "
                f"or brainsim.Dense(); got {type(layout).__name__}."
            )
        if modulator is not None and plasticity is None:
            raise ValueError(
                f"Projection {pre}->{post}: a `modulator` only drives a plasticity rule and this "
                "projection has none; pass plasticity= (e.g. RewardModulatedSTDP) or drop the "
                "modulator."
            )
        if plasticity is not None and not isinstance(plasticity, AbstractPlasticity):
            raise TypeError(
                f"Projection {pre}->{post}: `plasticity` must be a brainsim.plasticity rule "
                f"(e.g. brainsim.plasticity.PairSTDP(...)); got {type(plasticity).__name__}."
            )
        if modulator is not None and not isinstance(modulator, AbstractCurrent | str):
            raise TypeError(
                f"Projection {pre}->{post}: `modulator` must be a current-like input (e.g. "
                f"brainsim.TimedArray) or a population name; got {type(modulator).__name__}."
            )
        if not isinstance(connectivity, EdgeList | ProceduralEdges | AbstractConnectivity):
            raise TypeError(
                f"Projection {pre}->{post}: `connectivity` must come from brainsim.connect "
                f"(e.g. connect.fixed_probability(...)); got {type(connectivity).__name__}."
            )
        self.pre = pre
        self.post = post
        self.receptor = receptor
        self.name = name if name is not None else f"{pre}->{post}:{receptor}"
        self.connectivity = connectivity
        if layout is None:
            layout = Procedural() if isinstance(connectivity, ProceduralEdges) else Sparse()
        self.layout = layout
        self.stp = stp
        self.round_delays = round_delays
        self.plasticity = plasticity
        self.modulator = None if isinstance(modulator, str) else modulator
        self.modulator_population = modulator if isinstance(modulator, str) else None
        self.synapses = None


class ReceptorState(NamedTuple):
    kinetics: object
    """State of the receptor's kinetics (the trace)."""
    ring: jax.Array
    """Future input, ``D`` rows of ``n`` values flattened; row ``k mod D`` arrives at step ``k``."""


class NetworkState(NamedTuple):
    step: jax.Array
    """Index of the next step within its epoch, in ``[0, 2**30)`` (int32)."""
    epoch: jax.Array
    """Rollovers of ``step``: the next step is ``epoch * 2**30 + step`` (time that times dt),
    exact over runs of any length (:mod:`brainsim._clock`)."""
    key: jax.Array
    """Base PRNG key; step ``k`` uses ``fold_in(key, k)``."""
    populations: dict
    receptors: dict
    stp: dict
    plasticity: dict = {}
    """Per plastic projection: :class:`~brainsim.plasticity.PlasticState` (weights, rule state)."""


class Network(eqx.Module):
    """Populations and projections as one value; see the module docstring for the step order.

    Arguments:
        populations: the :class:`Population` values (unique names).
        projections: the :class:`Projection` values.
        dt: the simulation step (ms); delays become whole steps of it.
        timing: the conventions of a reference simulator (:class:`~brainsim.Timing`): when a
            spike is recorded, how long the refractory clamp lasts, when spike generators and
            step currents act, and whether a plastic synapse transmits its weight before or
            after the spike's own update. Default :meth:`Timing.brian2`: a model ported one to
            one from Brian2 gives Brian2's spikes at Brian2's times; :meth:`Timing.nest` gives
            NEST's.
    """

    populations: tuple[Population, ...]
    projections: tuple[Projection, ...]
    dt: float = eqx.field(static=True)
    timing: Timing = eqx.field(static=True)

    def __init__(
        self,
        populations: Sequence[Population],
        projections: Sequence[Projection] = (),
        *,
        dt: float,
        timing: Timing | None = None,
    ):
        check_positive("dt", dt, owner="Network", unit="ms")
        self.timing = BRIAN2 if timing is None else check_timing(timing, "Network")
        populations = tuple(populations)
        if not populations:
            raise ValueError("Network: needs at least one population.")
        by_name: dict[str, Population] = {}
        for p in populations:
            if not isinstance(p, Population):
                raise TypeError(
                    f"Network: populations must be brainsim.Population; got {type(p).__name__}."
                )
            if p.name in by_name:
                raise ValueError(f"Network: two populations are named {p.name!r}.")
            by_name[p.name] = p
        self.dt = float(dt)
        self.populations = tuple(self._discretize(p) for p in populations)
        built, names = [], set()
        for proj in projections:
            if not isinstance(proj, Projection):
                raise TypeError(
                    f"Network: projections must be brainsim.Projection; got {type(proj).__name__}."
                )
            built.append(self._build_projection(proj, by_name))
            if proj.name in names:
                raise ValueError(
                    f"Network: two projections are named {proj.name!r}; pass distinct `name=`."
                )
            names.add(proj.name)
        self.projections = tuple(built)

    def with_timing(self, timing: Timing) -> Network:
        """This network following the conventions ``timing`` (:class:`~brainsim.Timing`), e.g.
        a network from a builder of :mod:`brainsim.networks` run with NEST's timing."""
        net = with_static_field(self, "timing", check_timing(timing, "Network.with_timing"))
        pops = tuple(net._discretize(p) for p in self.populations)
        return eqx.tree_at(lambda n: n.populations, net, pops)

    def _discretize(self, p: Population) -> Population:
        """Give models and inputs the network's timing conventions and precompute the
        step-dependent parts of sources and currents (dt is now known)."""
        model = p.model.with_timing(self.timing)
        if p.is_source:
            return eqx.tree_at(lambda q: q.model, p, model.discretize(p.size, self.dt))
        p = eqx.tree_at(lambda q: q.model, p, model)
        currents = tuple(c.with_timing(self.timing).discretize(self.dt) for c in p.currents)
        return eqx.tree_at(lambda q: q.currents, p, currents) if currents else p

    def _build_projection(self, proj: Projection, by_name) -> Projection:
        where = f"Projection {proj.name!r}"
        for role in ("pre", "post"):
            if getattr(proj, role) not in by_name:
                raise unknown_name_error(
                    f"`{role}` population", getattr(proj, role), by_name, where=where
                )
        pre, post = by_name[proj.pre], by_name[proj.post]
        if post.is_source:
            raise ValueError(
                f"{where}: `post` population {post.name!r} is a spike source and "
                "cannot receive synapses."
            )
        if proj.receptor not in post.receptors:
            raise unknown_name_error(
                f"receptor of population {post.name!r}", proj.receptor, post.receptors, where=where
            )
        conn = proj.connectivity
        if (conn.n_pre, conn.n_post) != (pre.size, post.size):
            raise ValueError(
                f"{where}: connectivity is {conn.n_pre} x {conn.n_post} but the populations have "
                f"{pre.size} ({pre.name}) and {post.size} ({post.name}) neurons."
            )
        edges = conn
        if isinstance(conn, EdgeList | ProceduralEdges):
            conn = proj.layout.build(
                conn,
                self.dt,
                owner=where,
                round_delays=proj.round_delays,
                dtype=default_dtype(None),
            )
        proj = eqx.tree_at(lambda p: p.connectivity, proj, conn)
        if proj.plasticity is None:
            return proj
        learner = needs_modulator(proj.plasticity)
        if learner and proj.modulator is None and proj.modulator_population is None:
            raise ValueError(
                f"{where}: {learner} learns only while its modulator is non-zero, and this "
                "projection has none: pass modulator= a population name (its spike count per "
                "step) or a current, e.g. brainsim.TimedArray(rewards, dt=100.0)."
            )
        has_modulator = proj.modulator is not None or proj.modulator_population is not None
        if has_modulator and not learner:
            raise ValueError(
                f"{where}: `modulator` is given but {type(proj.plasticity).__name__} does not "
                "read one (rules that do set needs_modulator = True, e.g. RewardModulatedSTDP): "
                "drop modulator= or use a modulated rule."
            )
        if proj.modulator_population is not None and proj.modulator_population not in by_name:
            raise unknown_name_error(
                "`modulator` population", proj.modulator_population, by_name, where=where
            )
        if proj.modulator is not None:
            proj = eqx.tree_at(lambda p: p.modulator, proj, proj.modulator.discretize(self.dt))
        edges = edges.edges() if isinstance(edges, ProceduralEdges) else edges
        synapses, weights = synapses_for(
            conn, edges if isinstance(edges, EdgeList) else None, owner=where
        )
        check_initial_weights(proj.plasticity, synapses, weights, owner=where)
        proj = eqx.tree_at(lambda p: p.connectivity.weights, proj, weights)
        return eqx.tree_at(lambda p: p.synapses, proj, synapses, is_leaf=lambda x: x is None)

    # ------------------------------------------------------------------------------ by name

    def set(self, name: str, **values) -> Network:
        """A copy of this network with parameters of one population or projection replaced,
        addressed by name (the network is a value: ``self`` is unchanged).

        * population ``name``: a keyword per floating-point parameter of its model
          (``I_e=`` pA, ``tau_m=`` ms, ``V_th=`` mV, a source's ``rate=`` Hz, a
          :class:`SpikeArray`'s ``spikes=``, ...), a scalar or one value per neuron
          ``(size,)``; ``"receptor.field"`` (passed as ``**{"exc.tau": 3.0}``) sets a field
          of a receptor's kinetics or output (``tau`` ms, ``E_rev`` mV, ...).
        * projection ``name``: ``weights=`` (the projection's weight unit: nS for a
          conductance receptor, pA for a current one), in the storage's own shape (that of
          ``network.projection(name).connectivity.weights``) or a scalar, which gives every
          existing synapse that weight (refused for :class:`Dense`, whose zeros are absent
          synapses); other floating-point leaves of the connectivity by their field name
          (``weight_loc``/``weight_scale`` of :class:`Procedural`, ``delays`` of
          :class:`LearnableDelays`).

        Values keep the parameter's dtype. Traced values work: ``jax.vmap(lambda i_e:
        simulate(net.set("E", I_e=i_e), ...))`` sweeps without recompiling, and
        ``jax.grad`` differentiates through ``set``. Concrete values must be finite; the
        model's other constraints (a positive time constant) are checked by its constructor
        only, so build a new model to have them checked. Parameters ``set`` does not reach
        (a plasticity rule's, an injected current's) are replaced with ``eqx.tree_at``.

        Example:
            >>> net2 = net.set("E", I_e=400.0).set("E->I:exc", weights=0.5)
            >>> rates = jax.vmap(lambda i_e: bs.simulate(net.set("E", I_e=i_e), 100.0,
            ...     key=key, record=(bs.PopulationRate(),), check=False).recordings[0]["E"])(
            ...     jnp.linspace(300.0, 500.0, 8))
        """
        pops = [p.name for p in self.populations]
        projs = [p.name for p in self.projections]
        if not isinstance(name, str) or (name not in pops and name not in projs):
            raise unknown_name_error(
                "population or projection", name, pops + projs, where="Network.set"
            )
        if name in pops and name in projs:
            raise ValueError(
                f"Network.set: {name!r} names both a population and a projection; rename the "
                "projection (Projection(..., name=...)) or use eqx.tree_at."
            )
        if not values:
            raise ValueError(
                f"Network.set({name!r}): give the parameters to set as keywords, e.g. "
                f"net.set({name!r}, {'I_e=400.0' if name in pops else 'weights=0.5'})."
            )
        if name in pops:
            i = pops.index(name)
            p = set_population(self.populations[i], values)
            return eqx.tree_at(lambda n: n.populations[i], self, p)
        j = projs.index(name)
        proj = set_projection(self.projections[j], values)
        return eqx.tree_at(lambda n: n.projections[j], self, proj)

    # ------------------------------------------------------------------------------ lookup

    def population(self, name: str) -> Population:
        for p in self.populations:
            if p.name == name:
                return p
        raise unknown_name_error("population", name, [p.name for p in self.populations])

    def projection(self, name: str) -> Projection:
        for p in self.projections:
            if p.name == name:
                return p
        raise unknown_name_error("projection", name, [p.name for p in self.projections])

    def layout(self):
        """Which populations are merged into which group (:func:`brainsim._plan.group_layout`;
        static, from the network's structure)."""
        return group_layout(self)

    def ungrouped(self, state: NetworkState) -> NetworkState:
        """``state`` with one entry per population in ``populations`` and ``receptors`` (as
        if no population were merged); :meth:`grouped` is the inverse."""
        pops = {p.name: self.population_state(state, p.name) for p in self.populations}
        receptors = {p.name: self.receptor_states(state, p.name) for p in self.populations}
        return state._replace(populations=pops, receptors=receptors)

    def grouped(self, state: NetworkState, *, rings: bool = True) -> NetworkState:
        """The network's own layout of a state from :meth:`ungrouped` (``rings=False``: the
        ring buffers left empty, for a view of the neurons' and traces' state only)."""
        layout = self.layout()
        pops, receptors = {}, {}
        for name, members in layout.groups:
            pops[name] = concat_members([state.populations[m.name] for m in members])
            first = state.receptors[members[0].name]
            receptors[name] = {
                r: ReceptorState(
                    concat_members([state.receptors[m.name][r].kinetics for m in members]),
                    _join_rings([state.receptors[m.name][r].ring for m in members], members)
                    if rings
                    else jnp.zeros((0,), state.receptors[members[0].name][r].ring.dtype),
                )
                for r in first
            }
        return state._replace(populations=pops, receptors=receptors)

    def plan(self) -> Plan:
        """This network compiled to merged groups and deliveries (:mod:`brainsim._plan`), the
        value :func:`brainsim.step` advances. Build it once per run, outside the time loop:
        merging concatenates parameters and connectivity. With concrete values the merge runs
        in NumPy on the host (:func:`~brainsim._plan.host_plan`), else in the traced program."""
        if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(self)):
            return build_plan(self)
        return host_plan(self)

    def population_state(self, state: NetworkState, name: str):
        """The state of population ``name`` in ``state`` (a NamedTuple of ``(size,)`` arrays).

        Use this rather than indexing ``state`` directly: populations merged into a group
        share one state (``state.populations[group name]``), of which this is a slice."""
        self.population(name)
        layout = self.layout()
        g, member = layout.group_of(name)
        group_name, _ = layout.groups[g]
        return member_view(state.populations[group_name], member, layout.size(g))

    def receptor_states(self, state: NetworkState, name: str) -> dict:
        """``{receptor: ReceptorState}`` of population ``name`` in ``state``: its traces, and
        the rows of its ring buffer (``(D * size,)``; a copy for a merged population)."""
        self.population(name)
        layout = self.layout()
        g, member = layout.group_of(name)
        group_name, _ = layout.groups[g]
        n = layout.size(g)
        out = {}
        for r, rs in state.receptors[group_name].items():
            ring = rs.ring
            if member.size != n:
                rows = ring.reshape(ring.shape[:-1] + (-1, n))
                ring = rows[..., member.offset : member.offset + member.size].reshape(
                    ring.shape[:-1] + (-1,)
                )
            out[r] = ReceptorState(member_view(rs.kinetics, member, n), ring)
        return out

    @property
    def n_neurons(self) -> int:
        return sum(p.size for p in self.populations if not p.is_source)

    @property
    def n_synapses(self) -> int:
        return sum(p.connectivity.n_synapses for p in self.projections)

    def ring_length(self, population: str, receptor: str) -> int:
        """Rows ``D`` of a receptor's ring buffer: the longest lag (steps) into it, over
        every population of the group ``population`` is merged into."""
        layout = self.layout()
        g, _ = layout.group_of(population)
        members = {m.name for m in layout.groups[g][1]}
        delays = [
            p.connectivity.max_delay
            for p in self.projections
            if p.post in members and p.receptor == receptor
        ]
        return max(delays, default=1)

    # ------------------------------------------------------------------------------ state

    def init(self, key, *, dtype=None) -> NetworkState:
        """Initial state: neurons at rest (or drawn from ``initial``), empty synapses.

        Outside a transformation the construction runs as one compiled call (op-by-op
        execution of the many small initialisers is seconds for a few thousand neurons).
        """
        return _init_compiled(self, key, default_dtype(dtype))

    def _init(self, key, dtype) -> NetworkState:
        key_init, key_run = jax.random.split(key)
        pops, receptors, stp = {}, {}, {}
        for i, p in enumerate(self.populations):
            state = p.model.init(p.size, dtype=dtype)
            for j, (var, dist) in enumerate(sorted(p.initial.items())):
                if var not in state._fields:
                    raise unknown_name_error(
                        f"state variable of {type(p.model).__name__}",
                        var,
                        state._fields,
                        where=f"Population {p.name!r} initial",
                    )
                k = jax.random.fold_in(jax.random.fold_in(key_init, i), j)
                old = getattr(state, var)
                state = state._replace(**{var: dist(k, old.shape, old.dtype)})
            pops[p.name] = state
        layout = self.layout()
        grouped = {}
        for g, (name, members) in enumerate(layout.groups):
            grouped[name] = concat_members([pops[m.name] for m in members])
            first = self.populations[members[0].index]
            n = layout.size(g)
            receptors[name] = {
                r: ReceptorState(
                    concat_members(
                        [
                            self.populations[m.index].receptors[r].kinetics.init(m.size, dtype)
                            for m in members
                        ]
                    ),
                    jnp.zeros((self.ring_length(first.name, r) * n,), dtype),
                )
                for r in first.receptors
            }
        pops = grouped
        plastic = {}
        for proj in self.projections:
            if proj.stp is not None:
                stp[proj.name] = proj.stp.init(proj.connectivity.n_pre, dtype)
            if proj.plasticity is not None:
                w = jnp.asarray(proj.connectivity.weights, dtype)
                plastic[proj.name] = PlasticState(w, proj.plasticity.init(proj.synapses, w))
        zero = jnp.zeros((), jnp.int32)
        return NetworkState(zero, zero, key_run, pops, receptors, stp, plastic)

    # ------------------------------------------------------------------------------ step

    def step(self, state: NetworkState):
        """Advance the whole network by one step; return ``(state, spikes)`` with ``spikes`` a
        dict of float arrays (one per population). ``brainsim.step(network.plan(), state)``
        is the same function; drivers build the plan once, outside their loop."""
        return _step.step(self.plan(), state)

    def with_weights(self, state: NetworkState) -> Network:
        """This network with the plastic projections' weights taken from ``state`` (e.g. to
        freeze learned weights: drop the rules with ``eqx.tree_at`` afterwards)."""
        net = self
        for i, proj in enumerate(self.projections):
            if proj.plasticity is not None:
                w = state.plasticity[proj.name].weights
                net = eqx.tree_at(lambda m, i=i: m.projections[i].connectivity.weights, net, w)
        return net

    def weights(self, state: NetworkState, projection: str):
        """The ``(n_pre, n_post)`` weight matrix of ``projection`` in ``state`` (plastic
        projections) or of the network itself (static ones)."""
        proj = self.projection(projection)
        if proj.plasticity is None:
            return proj.connectivity.to_dense()
        return proj.synapses.to_dense(state.plasticity[projection].weights)


def _join_rings(rings, members):
    """Members' ring buffers (``(..., D * size)`` each, rows of their neurons) as one ring of
    the group (rows of all members' neurons side by side)."""
    if len(rings) == 1:
        return rings[0]
    rows = [r.reshape(r.shape[:-1] + (-1, m.size)) for r, m in zip(rings, members, strict=True)]
    joined = jnp.concatenate(rows, axis=-1)
    return joined.reshape(joined.shape[:-2] + (-1,))


@jit
def _init_compiled(network: Network, key, dtype) -> NetworkState:
    return network._init(key, dtype)
