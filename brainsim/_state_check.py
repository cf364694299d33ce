"""Refusing a state that belongs to another network, wherever a state enters.

A :class:`~brainsim.NetworkState` of another network (other population sizes, other delays and
so other ring-buffer lengths, other projections, plasticity or models) has arrays of other
shapes, or other arrays altogether. Stepped by this network it would be indexed as if it were
this network's state and run wrong without a word, so every entry point (``simulate(state=)``,
``simulate_sharded``, ``run_long``, ``save_checkpoint``, ``load_checkpoint``) compares it with
the state this network makes: ``jax.eval_shape`` of :meth:`Network.init` (traced, never
compiled or run), leaf by leaf, whatever fields :class:`NetworkState` has.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._network import Network, NetworkState


def check_state(network: Network, state, *, owner: str, batched: bool = False) -> None:
    """Raise unless ``state`` has the structure, shapes and dtypes of ``network``'s state.

    ``batched``: the state may have leading batch axes (a ``vmap``-ed state), the same on every
    leaf (those of ``state.step``). The float dtype is the state's own (float32 and float64
    states of one network are both valid); within the state every leaf must have the dtype
    ``network.init`` gives it at that precision.
    """
    if not isinstance(state, NetworkState):
        raise TypeError(
            f"{owner}: `state` must be a brainsim.NetworkState (e.g. result.state or "
            f"network.init(key)); got {type(state).__name__}."
        )
    batch = tuple(np.shape(state.step)) if batched else ()
    if not batched and np.ndim(state.step):
        raise ValueError(
            f"{owner}: `state` is batched (state.step has shape {np.shape(state.step)}); pass "
            "one state, e.g. jax.tree.map(lambda x: x[i], state)."
        )
    key = state.key
    key = jax.ShapeDtypeStruct(np.shape(key)[len(batch) :], key.dtype)
    expected = jax.eval_shape(lambda k: network.init(k, dtype=float_dtype(state)), key)

    got_leaves, got_tree = jax.tree_util.tree_flatten_with_path(state)
    want_leaves, want_tree = jax.tree_util.tree_flatten_with_path(expected)
    if got_tree != want_tree:
        raise ValueError(f"{owner}: {_structure_difference(got_leaves, want_leaves)}")
    for (path, got), (_, want) in zip(got_leaves, want_leaves, strict=True):
        where = "state" + jax.tree_util.keystr(path)
        shape, want_shape = tuple(np.shape(got)), tuple(want.shape)
        if shape != batch + want_shape:
            extra = f" (after the batch axes {batch})" if batch else ""
            raise ValueError(
                f"{owner}: {where} has shape {shape[len(batch) :] if batch else shape}{extra} "
                f"but this network needs {want_shape}: {_shape_hint(network, path, shape, want_shape)}"
            )
        if got.dtype != want.dtype:  # PRNG key dtypes compare too (np.dtype cannot take them)
            raise ValueError(
                f"{owner}: {where} has dtype {got.dtype} but this network needs {want.dtype} "
                f"(the state's neuron arrays are {float_dtype(state)}): "
                "the state was not made by this network's init; use network.init(key, "
                "dtype=...) or a result of this network."
            )


def float_dtype(state: NetworkState):
    """The floating-point dtype of a state (its first floating-point neuron or source array;
    JAX's default if it has none): the precision ``network.init`` is asked to reproduce, and
    that of recording buffers. The first array of all can be an integer (a spike generator's
    cursor)."""
    floats = [x for x in jax.tree.leaves(state.populations) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return floats[0].dtype if floats else jnp.zeros(()).dtype


_REMEDY = (
    "pass a state of this network (network.init(key), a result of this network, or a "
    "checkpoint loaded into it), or rebuild the network exactly as the one the state came from."
)


def _structure_difference(got_leaves, want_leaves) -> str:
    got = [jax.tree_util.keystr(p) for p, _ in got_leaves]
    want = [jax.tree_util.keystr(p) for p, _ in want_leaves]
    missing = [p for p in want if p not in set(got)]
    extra = [p for p in got if p not in set(want)]
    parts = []
    if missing:
        parts.append(f"this network needs state{missing[0]}, which the state lacks")
    if extra:
        parts.append(f"the state has state{extra[0]}, which this network does not have")
    if not parts:
        parts.append("its arrays are organised differently from this network's state")
    more = len(missing) + len(extra) - len(parts)
    return (
        f"`state` comes from another network: {'; '.join(parts)}"
        f"{f' ({more} more differences)' if more > 0 else ''} (other populations, receptors, "
        f"projections, short-term or long-term plasticity, or models); {_REMEDY}"
    )


def _shape_hint(network: Network, path, shape, want_shape) -> str:
    keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    if keys[0] == "receptors" and len(keys) >= 3:
        pop, receptor = keys[1], keys[2]
        n = network.population(pop).size
        if keys[-1] == "ring" and want_shape and shape and shape[-1] % n == 0:
            return (
                f"the state comes from a network with other delays into {pop}:{receptor} (a "
                f"ring of {shape[-1] // n} rows, for delays up to {shape[-1] // n - 1} steps; "
                f"this network's longest delay into it is {want_shape[0] // n - 1} steps). "
                f"{_REMEDY[0].upper()}{_REMEDY[1:]}"
            )
        return (
            f"the state comes from a network where population {pop!r} has another size or "
            f"receptor {receptor!r} other kinetics; {_REMEDY}"
        )
    if keys[0] == "populations" and len(keys) >= 2:
        return (
            f"the state comes from a network where population {keys[1]!r} has another size "
            f"(this one has {network.population(keys[1]).size}) or model; {_REMEDY}"
        )
    if keys[0] in ("stp", "plasticity") and len(keys) >= 2:
        return (
            f"the state comes from a network where projection {keys[1]!r} connects other "
            f"populations or has another rule; {_REMEDY}"
        )
    return f"the state comes from another network; {_REMEDY}"
