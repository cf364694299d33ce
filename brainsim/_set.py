"""Replacing parameters by name (:meth:`brainsim.Network.set`): the leaf-level work.

A parameter that can be set is a floating-point array leaf of a module (a model, a receptor's
kinetics or output, a connectivity): exactly the values a sweep or a fit changes without
changing the network's structure (design rule: static only for structure).
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ._errors import check_finite, is_concrete, unknown_name_error
from .plasticity._network import check_initial_weights


def settable(module) -> list[str]:
    """The fields of ``module`` that :meth:`Network.set` may replace: its non-static
    floating-point array leaves."""
    names = []
    for f in dataclasses.fields(module):
        if f.metadata.get("static", False):
            continue
        value = getattr(module, f.name, None)
        if isinstance(value, float) or (
            eqx.is_array(value) and jnp.issubdtype(value.dtype, jnp.inexact)
        ):
            names.append(f.name)
    return names


def replaced(module, field: str, value, owner: str, shapes):
    """``module`` with ``field`` set to ``value`` (in the old leaf's dtype), whose shape must
    be one of ``shapes``; a concrete value must be finite."""
    old = getattr(module, field)
    if is_concrete(value):
        check_finite(field, value, owner=owner)
    new = jnp.asarray(value)
    if not jnp.issubdtype(new.dtype, jnp.number) or jnp.issubdtype(new.dtype, jnp.complexfloating):
        raise TypeError(f"{owner}: `{field}` must be real numbers; got dtype {new.dtype}.")
    new = new.astype(jnp.asarray(old).dtype)
    if new.shape not in shapes:
        allowed = " or ".join(str(s) for s in dict.fromkeys(shapes))
        raise ValueError(f"{owner}: `{field}` must have shape {allowed}; got {new.shape}.")
    return eqx.tree_at(lambda m: getattr(m, field), module, new)


def _valid_population_names(p) -> list[str]:
    names = settable(p.model)
    for r, rec in p.receptors.items():
        names += [f"{r}.{f}" for f in settable(rec.kinetics) + settable(rec.output)]
    return names


def set_population(p, values: dict):
    """Population ``p`` with model parameters (``"field"``) and receptor parameters
    (``"receptor.field"``) replaced (:meth:`Network.set`)."""
    owner = f"Network.set({p.name!r})"
    valid = _valid_population_names(p)
    for key, value in values.items():
        if key not in valid:
            raise unknown_name_error(
                f"parameter of population {p.name!r} ({type(p.model).__name__})",
                key,
                valid,
                where="Network.set",
            )
        receptor, dot, field = key.rpartition(".")
        if not dot:
            old = jnp.shape(getattr(p.model, field))
            # Sources' arrays need not be per channel (SpikeArray spikes are (T, n)): any
            # shape the model accepts for this size (check_size below).
            shapes = ((), (p.size,), old) if not p.is_source else (jnp.shape(value),)
            model = replaced(p.model, field, value, owner, shapes)
            model.check_size(p.size)
            p = eqx.tree_at(lambda q: q.model, p, model)
            continue
        rec = p.receptors[receptor]
        part = "kinetics" if field in settable(rec.kinetics) else "output"
        obj = getattr(rec, part)
        old = jnp.shape(getattr(obj, field))
        obj = replaced(obj, field, value, f"{owner} {key!r}", ((), (p.size,), old))
        receptors = dict(p.receptors)
        receptors[receptor] = eqx.tree_at(lambda r, part=part: getattr(r, part), rec, obj)
        p = eqx.tree_at(lambda q: q.receptors, p, receptors)
    return p


def set_projection(proj, values: dict):
    """Projection ``proj`` (built) with connectivity leaves replaced (:meth:`Network.set`)."""
    owner = f"Network.set({proj.name!r})"
    conn = proj.connectivity
    valid = settable(conn)
    for field, value in values.items():
        if field not in valid:
            raise unknown_name_error(
                f"parameter of projection {proj.name!r} ({type(conn).__name__})",
                field,
                valid,
                where="Network.set",
            )
        old = jnp.shape(getattr(conn, field))
        shapes = (old,)
        if field == "weights" and np.ndim(value) == 0 and old != ():
            if type(conn).__name__ == "DenseConnectivity":
                raise ValueError(
                    f"{owner}: a Dense projection stores a {old} matrix whose zeros are absent "
                    "synapses, so one scalar weight is ambiguous; pass the matrix (e.g. "
                    "w * (W != 0) with W = network.projection(name).connectivity.weights)."
                )
            value = jnp.broadcast_to(jnp.asarray(value), old)  # every stored synapse
        conn = replaced(conn, field, value, owner, shapes)
    if proj.plasticity is not None and is_concrete(conn.weights):
        check_initial_weights(proj.plasticity, proj.synapses, conn.weights, owner=owner)
    return eqx.tree_at(lambda q: q.connectivity, proj, conn)
