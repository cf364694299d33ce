"""Validation helpers shared by every component.

Errors raised at build/trace time name the argument, what was given and how to fix it. Values
that are traced (inside `jit`/`vmap`) cannot be inspected in Python; the helpers then skip the
check silently because the same value was already checked when the model was built.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np

# Defined in the kernels, the bottom layer, which warn too and import nothing from here.
from .kernels import BrainsimWarning as BrainsimWarning


class SimulationError(RuntimeError):
    """A run-time fault found after a simulation (non-finite state, a state variable outside
    the range its model allows, a full recording buffer)."""


def is_concrete(x) -> bool:
    """True if ``x`` holds a value Python can inspect (not a tracer)."""
    return not isinstance(x, jax.core.Tracer)


def _where(owner: str) -> str:
    return f"{owner}: " if owner else ""


def _in(unit: str) -> str:
    return f" (in {unit})" if unit else ""


def shown(value) -> str:
    """A rejected value for a message: its (shortened) repr and its type."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def first_bad(arr: np.ndarray, ok: np.ndarray) -> str:
    """The first element of ``arr`` where ``ok`` is False: ``-1.0``, or ``-1.0 at index 3``
    for an array (a per-neuron parameter)."""
    i = int(np.flatnonzero(~np.broadcast_to(ok, arr.shape))[0])
    value = str(arr.ravel()[i])  # a NumPy scalar prints as briefly as its dtype allows
    if arr.ndim == 0:
        return value
    index = np.unravel_index(i, arr.shape)
    return f"{value} at index {index[0] if arr.ndim == 1 else tuple(map(int, index))}"


def real_array(name: str, value, *, owner: str = "", unit: str = "") -> np.ndarray | None:
    """``value`` as a NumPy array of real numbers, or ``None`` if it is traced.

    Raises ``TypeError`` naming ``name`` for what is not a real number or array of them:
    strings, ``None``, other objects, complex values, and booleans (``True`` is an ``int`` in
    Python, but never the number a parameter means).
    """
    if not all(is_concrete(leaf) for leaf in jax.tree.leaves(value)):
        return None
    fix = None
    if isinstance(value, bool | np.bool_):
        fix = "Pass a number: a boolean is not one here"
    else:
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError):  # ragged nested lists, objects that refuse conversion
            arr = np.asarray(None)
        if arr.dtype.kind == "b":
            fix = "Pass numbers: booleans are not numbers here"
        elif arr.dtype.kind == "c":
            fix = "Pass real values (x.real, if the imaginary part is meant to be dropped)"
        elif not (jnp.issubdtype(arr.dtype, jnp.floating) or arr.dtype.kind in "iu"):
            fix = "Pass a float or an array of floats"
    if fix is not None:
        raise TypeError(
            f"{_where(owner)}`{name}` must be a real number or an array of real numbers"
            f"{_in(unit)}; got {shown(value)}. {fix}."
        )
    return arr


def check_finite(
    name: str, value, *, owner: str = "", unit: str = "", allow_inf: bool = False
) -> np.ndarray | None:
    """Raise unless a concrete ``value`` is real (see :func:`real_array`) and has no NaN, nor
    ±inf unless ``allow_inf`` (for parameters where infinity has a meaning, e.g. an unbounded
    weight). Returns the NumPy array, or ``None`` if ``value`` is traced."""
    arr = real_array(name, value, owner=owner, unit=unit)
    if arr is None or not arr.size:
        return arr
    ok = ~np.isnan(arr) if allow_inf else np.isfinite(arr)
    if not np.all(ok):
        what = "a number, not NaN" if allow_inf else "finite"
        raise ValueError(
            f"{_where(owner)}`{name}` must be {what}{_in(unit)}; got {first_bad(arr, ok)}. "
            f"Pass {'a number (infinity is allowed here)' if allow_inf else 'a finite value'}."
        )
    return arr


def check_that(
    name: str,
    value,
    test,
    requirement: str,
    *,
    owner: str = "",
    unit: str = "",
    fix: str = "",
    allow_inf: bool = False,
) -> None:
    """Raise ``ValueError`` unless a concrete ``value`` is real and finite (see
    :func:`check_finite`) and ``test(array)`` holds for every element; the message says
    ``name`` ``must {requirement}`` (e.g. "be positive", "lie in (0, 1]"), the first
    offending element and ``fix``."""
    arr = check_finite(name, value, owner=owner, unit=unit, allow_inf=allow_inf)
    if arr is None or not arr.size:
        return
    ok = test(arr)
    if not np.all(ok):
        raise ValueError(
            f"{_where(owner)}`{name}` must {requirement}{_in(unit)}; got "
            f"{first_bad(arr, ok)}.{f' {fix}' if fix else ''}"
        )


def check_positive(
    name: str, value, *, owner: str = "", unit: str = "", allow_inf: bool = False
) -> None:
    """Raise unless a concrete ``value`` is a finite real number > 0 everywhere (``+inf``
    too with ``allow_inf``)."""
    check_that(name, value, lambda a: a > 0, "be positive", owner=owner, unit=unit,
               fix="Pass a value > 0.", allow_inf=allow_inf)  # fmt: skip


def check_nonnegative(
    name: str, value, *, owner: str = "", unit: str = "", allow_inf: bool = False
) -> None:
    """Raise unless a concrete ``value`` is a finite real number >= 0 everywhere."""
    check_that(name, value, lambda a: a >= 0, "be >= 0", owner=owner, unit=unit,
               fix="Pass a value >= 0.", allow_inf=allow_inf)  # fmt: skip


def integer_array(name: str, value, *, owner: str = "") -> np.ndarray:
    """``value`` as a NumPy array of integers (indices): floats and booleans are refused with
    a ``TypeError``, never truncated or read as 0/1."""
    arr = np.asarray(value)
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(
            f"{_where(owner)}`{name}` must be an array of integers (indices); got dtype "
            f"{arr.dtype} (first value {arr.ravel()[0]!s}). Pass integer arrays, e.g. "
            f"np.asarray({name}, int)."
        )
    return arr


def check_name(name: str, value, *, owner: str = "") -> str:
    """``value``, which must be a name (a string): of a population, projection or variable."""
    if not isinstance(value, str):
        raise TypeError(f"{_where(owner)}`{name}` must be a name (a string); got {shown(value)}.")
    if not value:
        raise ValueError(f"{_where(owner)}`{name}` must be a non-empty name; got ''.")
    return value


def check_positive_int(name: str, value, *, owner: str = "", what: str = "") -> int:
    """``value`` as an ``int``; raises ``ValueError`` unless it is an integer >= 1 (a boolean
    is refused although Python counts it as an ``int``). ``what`` describes it, e.g. " (steps)"."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(
            f"{_where(owner)}`{name}` must be a positive integer{what}; got {shown(value)}."
        )
    return int(value)


def as_parameter(
    value,
    name: str,
    *,
    owner: str,
    unit: str = "",
    positive: bool = False,
    nonnegative: bool = False,
    allow_inf: bool = False,
):
    """A model parameter, checked, as a floating-point array (integers become the default
    float), so it is a differentiable leaf and int/float inputs do not compile different
    programs.

    A concrete ``value`` must be real (not a string, ``None``, boolean or complex) and finite
    (``allow_inf``: ±inf allowed, NaN never), and > 0 with ``positive`` or >= 0 with
    ``nonnegative``; otherwise the error names ``owner``, ``name``, the value and the fix.
    Traced values (inside ``jit``/``vmap``/``grad``) are not checked.
    """
    if positive:
        check_positive(name, value, owner=owner, unit=unit, allow_inf=allow_inf)
    elif nonnegative:
        check_nonnegative(name, value, owner=owner, unit=unit, allow_inf=allow_inf)
    else:
        check_finite(name, value, owner=owner, unit=unit, allow_inf=allow_inf)
    arr = jnp.asarray(value)
    if not jnp.issubdtype(arr.dtype, jnp.inexact):
        arr = arr.astype(jnp.result_type(float))
    return arr


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
