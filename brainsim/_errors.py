"""Validation helpers shared by every component.

Errors raised at build/trace time name the argument, what was given and how to fix it. Values
that are traced (inside `jit`/`vmap`) cannot be inspected in Python; the helpers then skip the
check silently because the same value was already checked when the model was built.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import jax
import numpy as np


class BrainsimWarning(UserWarning):
    """Warnings emitted by brainsim itself (turned into errors in the test suite)."""


class SimulationError(RuntimeError):
    """A run-time fault found after a simulation (non-finite state, a state variable outside
    the range its model allows, a full recording buffer)."""


def is_concrete(x) -> bool:
    """True if ``x`` holds a value Python can inspect (not a tracer)."""
    return not isinstance(x, jax.core.Tracer)


def _as_numpy(x):
    return np.asarray(x) if is_concrete(x) else None


def as_parameter(value):
    """A model parameter as a floating-point array (integers become the default float), so it
    is a differentiable leaf and int/float inputs do not compile different programs."""
    import jax.numpy as jnp

    arr = jnp.asarray(value)
    if not jnp.issubdtype(arr.dtype, jnp.inexact):
        arr = arr.astype(jnp.result_type(float))
    return arr


def check_positive(name: str, value, *, owner: str = "", unit: str = "") -> None:
    """Raise ``ValueError`` if a concrete ``value`` has an element that is not > 0."""
    arr = _as_numpy(value)
    if arr is None:
        return
    if arr.size and not np.all(arr > 0):
        bad = arr[~(arr > 0)].ravel()[0]
        where = f"{owner}: " if owner else ""
        raise ValueError(
            f"{where}`{name}` must be positive{f' (in {unit})' if unit else ''}; got {bad!r}. "
            f"Pass a value > 0."
        )


def check_nonnegative(name: str, value, *, owner: str = "", unit: str = "") -> None:
    """Raise ``ValueError`` if a concrete ``value`` has an element that is < 0."""
    arr = _as_numpy(value)
    if arr is None:
        return
    if arr.size and not np.all(arr >= 0):
        bad = arr[~(arr >= 0)].ravel()[0]
        where = f"{owner}: " if owner else ""
        raise ValueError(
            f"{where}`{name}` must be >= 0{f' (in {unit})' if unit else ''}; got {bad!r}."
        )


def check_finite(name: str, value, *, owner: str = "") -> None:
    arr = _as_numpy(value)
    if arr is None:
        return
    if arr.size and not np.all(np.isfinite(arr)):
        where = f"{owner}: " if owner else ""
        raise ValueError(
            f"{where}`{name}` must be finite; got {arr.ravel()[~np.isfinite(arr.ravel())][0]!r}."
        )


def check_positive_int(name: str, value, *, owner: str, hint: str = "") -> int:
    """``value`` as an ``int`` if it is a positive integer (not a bool), else a ``ValueError``
    naming ``owner``'s argument ``name``, the value given and, in ``hint``, what it means."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(
            f"{owner}: `{name}` must be a positive integer{hint}; got {value!r} "
            f"({type(value).__name__})."
        )
    return int(value)


def check_per_neuron(name: str, value, n: int, *, owner: str = "") -> None:
    """A parameter must be a scalar or have shape ``(n,)``."""
    shape = np.shape(value)
    if shape not in ((), (n,)):
        where = f"{owner}: " if owner else ""
        raise ValueError(
            f"{where}`{name}` must be a scalar or have shape ({n},) (one value per neuron); "
            f"got shape {shape}."
        )


def closest(name: str, options: Iterable[str]) -> str:
    """A ' Did you mean X?' suffix for an unknown name, or '' if nothing is close.

    Matching ignores case (``V`` suggests ``v``); the suggestion keeps its own spelling.
    """
    by_lower = {}
    for option in options:
        by_lower.setdefault(str(option).lower(), str(option))
    match = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1, cutoff=0.5)
    return f" Did you mean {by_lower[match[0]]!r}?" if match else ""


def unknown_name_error(
    kind: str, name: str, options: Iterable[str], *, where: str = ""
) -> KeyError:
    opts = sorted(options)
    prefix = f"{where}: " if where else ""
    return KeyError(
        f"{prefix}unknown {kind} {name!r}.{closest(name, opts)} Valid: {', '.join(map(repr, opts))}."
    )
