"""Glue between plasticity rules and networks: synapse views of built connectivity, the
per-projection plastic state, and rules applied between runs."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from .._propagation import DenseConnectivity, EllConnectivity
from ._synapses import DenseSynapses, EllSynapses


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
    (an :class:`~brainsim.connect.EdgeList`; ``None`` = every pair). Sparse (ELL): a
    homogeneous weight is expanded to one value per synapse (0 on padding), and the
    transposed index is built here, once.
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
    raise TypeError(
        f"{owner}: plasticity needs a Dense() or Sparse() layout; got "
        f"{type(connectivity).__name__}. Pass layout=brainsim.Sparse() or brainsim.Dense()."
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
