"""Glue between plasticity rules and networks: synapse views of built connectivity, the
per-projection plastic state, and rules applied between runs."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from .._errors import is_concrete
from .._propagation import CsrConnectivity, DenseConnectivity, EllConnectivity
from ._base import Chain
from ._synapses import CsrSynapses, DenseSynapses, EllSynapses


class PlasticState(NamedTuple):
    """What a plastic projection adds to :class:`~brainsim.NetworkState` (``state.plasticity
    [projection_name]``)."""

    weights: Array
    """The evolving weights, in the projection's storage (Dense: ``(n_pre, n_post)``;
    Sparse: ``(n_pre, fan_out)`` aligned with the ELL targets)."""
    rule: object
    """The rule's state (traces, eligibility, sensors)."""


def synapses_for(connectivity, edges=None, *, owner: str = "Projection", capacity=None):
    """A synapse view of built connectivity and its per-synapse weights.

    Returns ``(synapses, weights)``. Dense: the mask of existing synapses comes from ``edges``
    (an :class:`~brainsim.connect.EdgeList`; ``None`` = every pair). Sparse (ELL) and CSR: a
    homogeneous weight is expanded to one value per synapse (0 on ELL padding), and the
    transposed index is built here, once. Any other format provides its own view
    (:meth:`~brainsim.AbstractConnectivity.plastic_synapses`).
    """
    if isinstance(connectivity, DenseConnectivity):
        mask = None
        n_pairs = connectivity.n_pre * connectivity.n_post
        if edges is None and connectivity.n_synapses != n_pairs:
            # The dense matrix alone cannot tell a zero-weight synapse from a missing one:
            # guessing would make absent synapses plastic.
            raise ValueError(
                f"{owner}: plasticity on already built Dense connectivity with "
                f"{connectivity.n_synapses} synapses out of {n_pairs} pairs: which pairs exist "
                "is unknown. Pass the edge list (a brainsim.connect builder's result) instead "
                "of the built connectivity."
            )
        if edges is not None:
            m = np.zeros((connectivity.n_pre, connectivity.n_post), bool)
            m[np.asarray(edges.pre), np.asarray(edges.post)] = True
            mask = None if m.all() else m
        syn = DenseSynapses(connectivity.n_pre, connectivity.n_post, mask)
        return syn, connectivity.weights
    if isinstance(connectivity, EllConnectivity):
        syn = EllSynapses(connectivity.targets, connectivity.n_post, capacity=capacity)
        valid = connectivity.targets < connectivity.n_post
        w = jnp.where(valid, jnp.broadcast_to(connectivity.weights, valid.shape), 0)
        return syn, w.astype(jnp.asarray(connectivity.weights).dtype)
    if isinstance(connectivity, CsrConnectivity):
        syn = CsrSynapses(connectivity.indptr, connectivity.indices, connectivity.n_post,
                          capacity=capacity)  # fmt: skip
        w = jnp.broadcast_to(connectivity.weights, connectivity.indices.shape)
        return syn, w.astype(jnp.asarray(connectivity.weights).dtype)
    return connectivity.plastic_synapses(edges, owner=owner)


def _rules(rule):
    """The rules of ``rule``, with chains flattened."""
    return [r for c in rule.rules for r in _rules(c)] if isinstance(rule, Chain) else [rule]


def needs_modulator(rule) -> str | None:
    """The name of the first rule in ``rule`` that learns only from a modulator, or None."""
    return next((type(r).__name__ for r in _rules(rule) if r.needs_modulator), None)


def _weight_bounds(rule):
    """``(what, w_min, w_max)`` of the bounds a rule clips weights to, or None: a weight
    dependence's, or the rule's own ``w_max`` (with ``w_min``, else 0, as PowerLawSTDP)."""
    wd = getattr(rule, "weight_dependence", None)
    if wd is not None:
        return f"{type(rule).__name__}'s {type(wd).__name__} weight dependence", wd.w_min, wd.w_max
    if hasattr(rule, "w_max"):
        return type(rule).__name__, getattr(rule, "w_min", 0.0), rule.w_max
    return None


def check_initial_weights(rule, synapses, weights, *, owner: str) -> None:
    """Raise if a synapse starts outside the weight bounds of a rule of ``rule``: its first
    update would clip it there silently. Traced weights or bounds are not checked."""
    if not is_concrete(weights):
        return
    w = np.asarray(weights)
    rows, cols, valid = synapses.pairs()
    for bounds in filter(None, map(_weight_bounds, _rules(rule))):
        what, lo, hi = bounds
        if not (is_concrete(lo) and is_concrete(hi)):
            continue
        lo, hi = np.asarray(lo), np.asarray(hi)
        bad = valid & ((w < lo) | (w > hi))
        if bad.any():
            i = np.unravel_index(np.argmax(bad), w.shape)
            lo_i, hi_i = np.broadcast_to(lo, w.shape)[i], np.broadcast_to(hi, w.shape)[i]
            raise ValueError(
                f"{owner}: synapse {rows[i]} -> {cols[i]} starts at weight {w[i]!s}, outside "
                f"[{lo_i!s}, {hi_i!s}] (w_min, w_max) of {what}; its "
                "first update would clip it silently. Draw the initial weights within the "
                "bounds (e.g. connect.Clipped(..., low=w_min, high=w_max)) or widen them."
            )


def at_boundary(network, state):
    """Apply every plastic projection's ``boundary`` (slow rules between examples or epochs,
    e.g. :class:`Normalization`) to a :class:`~brainsim.NetworkState`; return the new state.

    Example:
        >>> result = bs.simulate(net, 350.0, state=state)
        >>> state = bs.plasticity.at_boundary(net, result.state)
    """
    new = dict(state.plasticity)
    for proj in network.projections:
        if proj.plasticity is None:
            continue
        ps = state.plasticity[proj.name]
        w, rs = proj.plasticity.boundary(ps.rule, ps.weights, synapses=proj.synapses)
        new[proj.name] = PlasticState(w, rs)
    return state._replace(plasticity=new)
