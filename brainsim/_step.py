r"""The one loop body: :func:`step` advances a network's :class:`~brainsim._plan.Plan` by one
time step. Every driver (``simulate``, ``run_long``, fitting) scans this function.

The order within a step is described in :mod:`brainsim._network`; here it runs group by group
(one model update per group of merged populations) and delivery by delivery (one kernel call
per merged receptor).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import kernels
from ._block_random import step_block
from ._clock import advance, input_step, ring_cursor
from ._clock import step_key as clock_step_key
from ._neurons._base import Drive
from ._plan import Plan, member_view
from ._propagation import ring_row
from ._random import fold_in
from .plasticity._network import PlasticState


def step(plan: Plan, state):
    """Advance the network by one step: ``(state, spikes)`` with ``spikes`` a dict of float
    arrays, one per population (by name).

    Pure: ``plan`` is :meth:`Network.plan` (build it once, outside the time loop) and
    ``state`` a :class:`~brainsim.NetworkState`; ``jit``, ``vmap``, ``grad`` and ``lax.scan``
    apply to it directly.
    """
    from ._network import NetworkState

    network = plan.network
    dt = network.dt
    # Inputs see the absolute step (saturated far beyond any schedule); rings index rows by
    # the absolute step modulo their length (``_clock``), so both stay exact past 2**31.
    k = input_step(state.step, state.epoch)
    t = k.astype(jnp.result_type(float)) * dt
    step_key = clock_step_key(state.key, state.step, state.epoch)
    pops, receptors, clears, fired = {}, {}, {}, {}
    for g, group in enumerate(plan.groups):
        gstate = state.populations[group.name]
        gkey = fold_in(step_key, group.members[0].index)
        if group.is_source:
            pops[group.name], fired[group.name] = group.model.step(gstate, k, dt, gkey)
            receptors[group.name] = {}
        else:
            pops[group.name], fired[group.name], receptors[group.name], pending = _update_group(
                plan, g, gstate, state.receptors[group.name], state, k, t, step_key
            )
            clears.update(pending)
    if plan.exchange is not None:  # partitioned: every device needs every spike
        fired.update(plan.exchange({g.name: fired[g.name] for g in plan.groups if g.block}))
    spikes = {}
    for group in plan.groups:
        whole = fired[group.name]
        if len(group.members) > 1:
            whole = _materialised(whole, state.step)
        for m in group.members:
            spikes[m.name] = member_view(whole, m, group.n_global)
    spikes = {p.name: spikes[p.name] for p in network.populations}
    if network.timing.transmit_after_update:
        plastic = _plasticity(plan, state, spikes, k, step_key)
        stp, receptors = _propagate(plan, state, spikes, receptors, plastic, clears)
    else:
        stp, receptors = _propagate(plan, state, spikes, receptors, state.plasticity, clears)
        plastic = _plasticity(plan, state, spikes, k, step_key, delivered=receptors)
    step_, epoch = advance(state.step, state.epoch)
    return NetworkState(step_, epoch, state.key, pops, receptors, stp, plastic), spikes


def _materialised(x, step):
    """``x``, computed once into its own buffer before anything slices it.

    A member's spikes are a slice of its group's. XLA fuses an element-wise producer into
    each slice's consumer, so every member's slice would recompute the neuron update from
    the *old* state; those reads are not ordered before the state's in-place update, and XLA
    then copies the whole group state every step (COBA: more than the rest of the step).
    A conditional is a fusion boundary XLA does not remove (an optimization barrier is
    expanded away before fusion on CPU): the spikes are materialised once and sliced. The
    predicate is always true; it only has to be unknown at compile time.
    """
    return jax.lax.cond(step >= 0, lambda v: v, lambda v: v * 1, x)


def _update_group(plan: Plan, g: int, gstate, rstates, state, k, t, step_key):
    """Arrivals, drive, neuron update and trace decay of group ``g``: ``(state, spikes,
    receptor states, clears)``.

    The receptors' traces are decayed and their ring rows cleared *after* the neuron update
    and depending on its result: XLA then knows that every read of the old trace and ring row
    comes before their in-place rewrite, and does not copy the loop-carried traces and rings
    every step (for a delayed projection the copy is the whole ring, ``D × n`` values, which
    cost more than the rest of the step). The row of a receptor that a delivery writes into is
    not cleared here: ``clears`` maps ``(group, receptor)`` to the arrays the clear must wait
    for, and the first delivery into it clears the row in the same kernel call.
    """
    from ._network import ReceptorState

    group = plan.groups[g]
    dt = plan.network.dt
    drive, arrived = _drive(plan, g, gstate, rstates, state, k, step_key)
    key = fold_in(step_key, group.members[0].index)
    if group.block is None:
        new_gstate, spikes = group.model.step(gstate, drive, t, dt, key)
    else:  # the key draws this device's rows of the single-device draws
        new_gstate, spikes = step_block(group.model, gstate, drive, t, dt, key, group.block)
    v_new = group.model.voltage(new_gstate)
    dtype = v_new.dtype
    fed = {d.receptor for d in plan.deliveries if d.group == g}
    new, clears = {}, {}
    for name, rec in group.receptors.items():
        ring = rstates[name].ring
        decayed = jax.tree.map(
            lambda x: kernels.after(x.astype(dtype), v_new),
            rec.kinetics.decay(arrived[name], dt),
        )
        if name in fed:
            clears[(g, name)] = tuple(jax.tree.leaves(decayed))
        else:
            row = ring_cursor(state.step, state.epoch, ring.shape[0] // group.size)
            ring = kernels.clear_ring_row(
                ring, row, n_post=group.size, after=jax.tree.leaves(decayed)
            )
        new[name] = ReceptorState(decayed, ring)
    return new_gstate, spikes, new, clears


def _drive(plan: Plan, g: int, gstate, rstates, state, k, step_key):
    """The membrane input of step ``k`` and each receptor's trace after this step's
    arrivals."""
    group = plan.groups[g]
    dt = plan.network.dt
    n = group.size
    v = group.model.voltage(gstate)
    dtype = v.dtype
    current = jnp.zeros((n,), dtype)
    conductance = jnp.zeros((n,), dtype)
    arrived = {}
    for name, rec in group.receptors.items():
        rs = rstates[name]
        row = ring_cursor(state.step, state.epoch, rs.ring.shape[0] // n)
        kin = rec.kinetics.arrive(rs.kinetics, ring_row(rs.ring, row, n))
        contribution = rec.output.drive(rec.kinetics.mean(kin, dt), v)
        current = current + contribution.current
        conductance = conductance + contribution.conductance
        arrived[name] = kin
    for m, currents in zip(group.members, group.currents, strict=True):
        mkey = fold_in(step_key, m.index)
        for j, c in enumerate(currents):
            value = c.current(k, dt, fold_in(mkey, 1000 + j))
            if group.block is not None:
                current = current + _device_share(value, m, group.block)
            elif m.size == n:
                current = current + value
            else:  # the member's slice, added in the same order as for a lone population
                part = current[m.offset : m.offset + m.size] + value
                current = jax.lax.dynamic_update_slice(current, part.astype(dtype), (m.offset,))
    return Drive(current.astype(dtype), conductance.astype(dtype)), arrived


def _device_share(value, member, block):
    """A member's injected current (evaluated for the whole member, with the key and values
    of a single-device run) cut to this device's neurons; zero on the others."""
    full = jnp.zeros((block.n_local * jax.lax.axis_size(block.axis),), jnp.result_type(value))
    full = jax.lax.dynamic_update_slice(
        full, jnp.broadcast_to(value, (member.size,)).astype(full.dtype), (member.offset,)
    )
    start = jax.lax.axis_index(block.axis) * block.n_local
    return jax.lax.dynamic_slice(full, (start,), (block.n_local,))


def _propagate(plan: Plan, state, spikes, receptors, plastic, pending_clears):
    """Short-term plasticity, then every delivery into the postsynaptic ring buffers."""
    network = plan.network
    stp, transmitted = {}, {}
    for proj in network.projections:
        if proj.stp is not None:
            stp[proj.name], transmitted[proj.name] = proj.stp.step(
                state.stp[proj.name], spikes[proj.pre], network.dt
            )
    pending_clears = dict(pending_clears)
    receptors = {name: dict(r) for name, r in receptors.items()}
    for d in plan.deliveries:
        group = plan.groups[d.group]
        rs = receptors[group.name][d.receptor]
        parts = [transmitted[b.stp] if b.stp else spikes[b.population] for b in d.blocks]
        values = parts[0] if len(parts) == 1 else jnp.concatenate(parts)
        conn = d.conn
        if d.plastic is not None:
            w = plastic[d.plastic].weights
            conn = conn.with_weights(w.astype(conn.weights.dtype))
        after = pending_clears.pop((d.group, d.receptor), None)
        cursor = ring_cursor(state.step, state.epoch, rs.ring.shape[0] // conn.n_post)
        if after is None:
            ring = conn.deliver(rs.ring, cursor, values)
        else:
            ring = conn.clear_and_deliver(rs.ring, cursor, values, after=after)
        receptors[group.name][d.receptor] = rs._replace(ring=ring)
    if pending_clears:
        raise AssertionError(f"ring clears deferred to no delivery: {list(pending_clears)}")
    return stp, receptors


def _plasticity(plan: Plan, state, spikes, k, key, delivered=None):
    """Long-term plasticity of every plastic projection, after this step's spikes.

    With ``delivered`` (the receptors after this step's deliveries; Brian2's order, the
    spikes were transmitted with the weights before this update) each update waits for
    its projection's delivery: XLA then updates the weights in place after the delivery
    has read them, instead of copying them every step."""
    network = plan.network
    out = {}
    for n, proj in enumerate(network.projections):
        if proj.plasticity is None:
            continue
        ps = state.plasticity[proj.name]
        pre_spikes = spikes[proj.pre]
        if delivered is not None:
            group, _ = plan.group_of(proj.post)
            ring = delivered[group.name][proj.receptor].ring
            pre_spikes = kernels.after(pre_spikes, ring[:1])
        mod = proj.modulator
        if proj.modulator_population is not None:
            mod = kernels.fast_sum(spikes[proj.modulator_population])
        elif mod is not None:
            mod = mod.current(k, network.dt, fold_in(key, 2000 + n))
        w, rs = proj.plasticity.update(
            ps.rule,
            ps.weights,
            pre_spikes,
            spikes[proj.post],
            network.dt,
            synapses=proj.synapses,
            modulator=mod,
        )
        out[proj.name] = PlasticState(w.astype(ps.weights.dtype), rs)
    return out
