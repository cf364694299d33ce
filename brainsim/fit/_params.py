r"""Choose what trains: select leaves of any model value, give each a bijection, freeze the rest.

A :class:`Trainable` holds the whole model (a :class:`~brainsim.Network`, a neuron, any
PyTree) and a selector ``where`` in the style of :func:`equinox.tree_at`. Its free parameters
are a small PyTree of unconstrained arrays — what an optimiser updates — and
``trainable.build(params)`` returns the model with the natural values put back. Nothing in
the model is rewritten, and everything not selected is a constant of the fit.

Example:
    >>> tr = bs.fit.Trainable(
    ...     net,
    ...     where=lambda n: (n.population("N").model.tau_m, n.population("N").model.V_th),
    ...     bijections=(bs.fit.Positive(), bs.fit.Interval(-65.0, -40.0)),
    ... )
    >>> params = tr.init()          # free values, from the model's own (natural) values
    >>> fitted_net = tr.build(params)
    >>> tau_m, V_th = tr.values(params)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax.numpy as jnp

from ._bijections import AbstractBijection, Identity


class Trainable(eqx.Module):
    """The trainable part of a model: selected leaves, each mapped through a bijection.

    Arguments:
        model: any PyTree value (a :class:`~brainsim.Network`, a neuron model, ...).
        where: ``where(model)`` returns one array leaf or a tuple/list of them, as for
            :func:`equinox.tree_at` (e.g. ``lambda n: [p.connectivity.weights for p in
            n.projections]`` trains every projection's weights).
        bijections: one :class:`AbstractBijection` for every selected leaf (a sequence in the
            same order), one for all, or ``None`` for :class:`Identity`. Data-dependent
            settings (e.g. :class:`Positive`'s scale) are taken from the model's values.

    The free parameters (:meth:`init`) have the structure ``where`` returns: one array or a
    tuple of arrays. Their dtype is the model's.
    """

    model: object
    bijections: tuple[AbstractBijection, ...]
    where: Callable = eqx.field(static=True)
    single: bool = eqx.field(static=True)

    def __init__(
        self,
        model,
        where: Callable,
        bijections: AbstractBijection | Sequence[AbstractBijection] | None = None,
    ):
        if not callable(where):
            raise TypeError(
                f"Trainable: `where` must be a function model -> leaf or tuple of leaves, like "
                f"`lambda net: net.population('N').model.tau_m`; got {type(where).__name__}."
            )
        nodes = where(model)
        single = not isinstance(nodes, tuple | list)
        nodes = (nodes,) if single else tuple(nodes)
        for i, x in enumerate(nodes):
            if not (eqx.is_array(x) and jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)):
                raise TypeError(
                    f"Trainable: `where` selected a {type(x).__name__} at position {i}; select "
                    "floating-point array leaves of the model (e.g. model.tau_m, or "
                    "projection.connectivity.weights)."
                )
        if bijections is None:
            bijections = (Identity(),) * len(nodes)
        elif isinstance(bijections, AbstractBijection):
            bijections = (bijections,) * len(nodes)
        else:
            bijections = tuple(bijections)
            if len(bijections) != len(nodes):
                raise ValueError(
                    f"Trainable: `bijections` has {len(bijections)} entries but `where` selects "
                    f"{len(nodes)} leaves; give one per leaf, a single one for all, or None."
                )
        for i, b in enumerate(bijections):
            if not isinstance(b, AbstractBijection):
                raise TypeError(
                    f"Trainable: `bijections[{i}]` must be a brainsim.fit bijection (Identity, "
                    f"Positive, Interval); got {type(b).__name__}."
                )
        self.model = model
        self.where = where
        self.single = single
        self.bijections = tuple(
            b.fitted_to(x, name="where(model)" if single else f"where(model)[{i}]")
            for i, (b, x) in enumerate(zip(bijections, nodes, strict=True))
        )

    def _nodes(self):
        nodes = self.where(self.model)
        return (nodes,) if self.single else tuple(nodes)

    def _pack(self, values):
        return values[0] if self.single else tuple(values)

    def _unpack(self, params):
        if self.single:
            return (params,)
        if not isinstance(params, tuple | list) or len(params) != len(self.bijections):
            raise ValueError(
                f"Trainable: expected a tuple of {len(self.bijections)} free parameter arrays; "
                f"got {type(params).__name__}."
            )
        return tuple(params)

    def init(self):
        """The free parameters at the model's current (natural) values."""
        return self.inverse(self._pack(self._nodes()))

    def inverse(self, values):
        """Free parameters for natural ``values`` (same structure as ``where`` returns).

        Batched values (e.g. one row per cell for a ``vmap``-ed fit) broadcast through the
        bijections.
        """
        vals = self._unpack(values)
        dtypes = [jnp.asarray(x).dtype for x in self._nodes()]
        return self._pack(
            [
                b.inverse(jnp.asarray(v, d)).astype(d)
                for b, v, d in zip(self.bijections, vals, dtypes, strict=True)
            ]
        )

    def values(self, params):
        """Natural values of the free parameters ``params``."""
        us = self._unpack(params)
        return self._pack([b.forward(u).astype(u.dtype) for b, u in zip(self.bijections, us, strict=True)])

    def build(self, params):
        """The model with the selected leaves set to ``values(params)``."""
        vals = self.values(params)
        nodes = self._nodes()
        vals = self._unpack(vals)
        fixed = []
        for v, old in zip(vals, nodes, strict=True):
            if jnp.shape(v) != jnp.shape(old):
                raise ValueError(
                    f"Trainable.build: a free parameter has shape {jnp.shape(v)} but the model "
                    f"leaf it replaces has shape {jnp.shape(old)}. Inside jax.vmap give one "
                    "unbatched set of parameters per call."
                )
            fixed.append(v)
        return eqx.tree_at(self.where, self.model, self._pack(fixed))

