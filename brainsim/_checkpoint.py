r"""Checkpoints: the complete state of a simulation on disk, to resume it exactly.

A checkpoint holds the :class:`~brainsim.Network` value, its :class:`~brainsim.NetworkState`
(step, PRNG key, neurons, receptor ring buffers with the spikes still in flight, short-term
plasticity and whatever else the state carries) and a small JSON dictionary of metadata (for
example the recording cursors of :func:`~brainsim.run_long`). Because a step's randomness is
``fold_in(key, step)`` and the state is restored bit for bit, a run resumed from a checkpoint
produces exactly the spikes and states of an uninterrupted run.

**Structure from code, values from the file** (as ``equinox.tree_deserialise_leaves``): the
file stores the array leaves of both PyTrees and a description of their structure;
:func:`load_checkpoint` takes the network the checkpoint belongs to, derives the expected state
structure from ``network.init`` and checks both against the description before restoring.

**File format, version 1**: an uncompressed NumPy ``.npz`` archive with

* ``header`` — UTF-8 JSON (as ``uint8``): ``format``, ``format_version``, ``brainsim_version``,
  ``jax_version``, ``created``, for ``network`` and ``state`` the PyTree structure (its text
  and SHA-256) and every leaf's path, shape, dtype, weak type and PRNG implementation, the
  user ``metadata``, and ``checksum``: the SHA-256 of the header without it and of every
  leaf's bytes;
* ``n0, n1, ...`` — the network's array leaves; ``s0, s1, ...`` — the state's leaves (PRNG
  keys as their ``uint32`` key data).

Writes are atomic: the archive is written to a temporary file in the target's folder, flushed
to disk (``fsync``) and renamed over the target (``os.replace``), so after a crash at any
point the path holds either the previous checkpoint or the new one, never a partial file.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._network import Network, NetworkState
from ._state_check import check_state
from ._version import __version__

FORMAT = "brainsim-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: not a checkpoint, corrupted or truncated, of
    another format version, or of a different network. The message names the file."""


class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` returns."""

    network: Network
    """The network with the saved parameter values (the one passed in if they are equal)."""
    state: NetworkState
    """The saved state; pass it to ``simulate(..., state=...)`` to continue."""
    metadata: dict
    """The ``metadata`` given to :func:`save_checkpoint`."""
    brainsim_version: str
    """The brainsim version that wrote the file."""


# ------------------------------------------------------------------------------ description


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _describe(tree, arrays_only: bool) -> tuple[dict, list[np.ndarray]]:
    """The structural description of ``tree`` and its leaves as NumPy arrays.

    ``arrays_only``: non-array leaves (Python numbers, functions) are not stored but their
    type (and value, for plain scalars) is part of the description, so a change is detected.
    """
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    described, arrays = [], []
    for path, leaf in leaves_with_path:
        entry: dict[str, Any] = {"path": jax.tree_util.keystr(path)}
        if _is_key(leaf):
            data = np.asarray(jax.random.key_data(leaf))
            entry.update(
                key_impl=str(jax.random.key_impl(leaf)),
                shape=list(leaf.shape),
                dtype=str(leaf.dtype),
            )
        elif eqx.is_array(leaf) or not arrays_only:
            data = np.asarray(leaf)
            entry.update(shape=list(data.shape), weak_type=bool(getattr(leaf, "weak_type", False)))
        else:
            value = leaf if isinstance(leaf, bool | int | float | str | type(None)) else None
            entry.update(python=type(leaf).__name__, value=repr(value))
            described.append(entry)
            continue
        entry.setdefault("dtype", data.dtype.str)
        described.append(entry)
        arrays.append(data)
    text = str(treedef)
    return {
        "treedef": text,
        "treedef_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "leaves": described,
    }, arrays


def _checksum(header: dict, arrays: list[np.ndarray]) -> str:
    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
    return h.hexdigest()


# ------------------------------------------------------------------------------ writing


def atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it and rename it over
    ``path``; on any error the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    path: str | os.PathLike,
    network: Network,
    state: NetworkState,
    *,
    metadata: dict | None = None,
) -> Path:
    """Write ``network`` and ``state`` to ``path`` atomically; return the path.

    Arguments:
        path: the file (conventionally ``*.npz``); an existing file is replaced only once the
            new one is completely on disk.
        network: the :class:`Network` being simulated.
        state: its :class:`NetworkState` (e.g. ``result.state``), any dtype; a batched
            (``vmap``-ed) state works too (load it with ``like=``).
        metadata: JSON-serialisable dictionary stored with the checkpoint.

    Example:
        >>> result = bs.simulate(net, 500.0, key=jax.random.key(0))
        >>> bs.save_checkpoint("ckpt.npz", net, result.state)
        >>> ckpt = bs.load_checkpoint("ckpt.npz", net)
        >>> rest = bs.simulate(ckpt.network, 500.0, state=ckpt.state)
    """
    if not isinstance(network, Network):
        raise TypeError(
            f"save_checkpoint: `network` must be a brainsim.Network; got {type(network).__name__}."
        )
    if not isinstance(state, NetworkState):
        raise TypeError(
            f"save_checkpoint: `state` must be a brainsim.NetworkState (e.g. result.state); got "
            f"{type(state).__name__}."
        )
    check_state(network, state, owner="save_checkpoint", batched=True)
    path = Path(path)
    net_desc, net_arrays = _describe(network, arrays_only=True)
    state_desc, state_arrays = _describe(state, arrays_only=False)
    floats = [x for x in jax.tree.leaves(state.populations) if jnp.issubdtype(x.dtype, jnp.inexact)]
    state_desc["dtype"] = np.dtype(floats[0].dtype).name if floats else None
    state_desc["typed_key"] = _is_key(state.key)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "brainsim_version": __version__,
        "jax_version": jax.__version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "network": net_desc,
        "state": state_desc,
        "metadata": {} if metadata is None else metadata,
    }
    try:
        json.dumps(header["metadata"])
    except TypeError as e:
        raise TypeError(f"save_checkpoint: `metadata` must be JSON-serialisable ({e}).") from None
    header["checksum"] = _checksum(header, net_arrays + state_arrays)
    members = {"header": np.frombuffer(json.dumps(header).encode(), np.uint8)}
    members.update({f"n{i}": a for i, a in enumerate(net_arrays)})
    members.update({f"s{i}": a for i, a in enumerate(state_arrays)})
    atomic_write(path, lambda f: np.savez(f, **members))
    return path


# ------------------------------------------------------------------------------ reading


def read_checkpoint_file(path: Path) -> tuple[dict, list[np.ndarray], list[np.ndarray]]:
    """Header and leaves of a checkpoint, with the format and checksum verified."""
    if not path.exists():
        raise FileNotFoundError(f"Checkpoint {str(path)!r} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            if "header" not in names:
                raise CheckpointError(
                    f"{str(path)!r} is not a brainsim checkpoint (no header member)."
                )
            header = json.loads(z["header"].tobytes().decode())
            net = [z[f"n{i}"] for i in range(_count(names, "n"))]
            state = [z[f"s{i}"] for i in range(_count(names, "s"))]
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} is corrupted or truncated and cannot be read "
            f"({type(e).__name__}: {e}). Use an earlier checkpoint or restart the run."
        ) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a brainsim checkpoint.")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} has format version {version} (written by brainsim "
            f"{header.get('brainsim_version')}); this brainsim ({__version__}) reads format "
            f"version {FORMAT_VERSION}."
        )
    stored = header.pop("checksum", None)
    if stored != _checksum(header, net + state):
        raise CheckpointError(
            f"Checkpoint {str(path)!r} is corrupted: its checksum does not match its contents. "
            "Use an earlier checkpoint or restart the run."
        )
    for what, arrays in (("network", net), ("state", state)):
        _check_arrays(path, what, header.get(what), arrays)
    return header, net, state


def _check_arrays(path: Path, what: str, description, arrays: list[np.ndarray]) -> None:
    """Every array of ``what`` has the shape and dtype its header entry gives.

    The checksum catches accidental damage; a file edited on purpose can carry a recomputed
    one, so the arrays are checked against the header before anything uses them.
    """
    damaged = f"Checkpoint {str(path)!r} is damaged or was tampered with:"
    fix = "Use an earlier checkpoint or restart the run."
    entries = description.get("leaves") if isinstance(description, dict) else None
    if not (
        isinstance(entries, list)
        and all(isinstance(e, dict) for e in entries)
        and isinstance(description.get("treedef"), str)
        and isinstance(description.get("treedef_sha256"), str)
    ):
        raise CheckpointError(f"{damaged} its header does not describe the {what}. {fix}")
    stored = [e for e in entries if "python" not in e]
    if len(stored) != len(arrays):
        raise CheckpointError(
            f"{damaged} its header lists {len(stored)} {what} arrays but it holds "
            f"{len(arrays)}. {fix}"
        )
    for e, a in zip(stored, arrays, strict=True):
        expected = _stored_layout(e)
        if (a.shape, a.dtype.str) != expected:
            raise CheckpointError(
                f"{damaged} {what} leaf {e.get('path')} is stored with shape {a.shape} and dtype "
                f"{a.dtype.str} but its header gives shape {expected[0]} and dtype "
                f"{expected[1]}. {fix}"
            )


def _stored_layout(entry: dict) -> tuple[tuple, str] | tuple[None, None]:
    """Shape and dtype (``dtype.str``) of the array stored for a header entry (a PRNG key is
    stored as its ``uint32`` key data); ``(None, None)`` for an invalid entry."""
    shape = entry.get("shape")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        return None, None
    if "key_impl" not in entry:
        return tuple(shape), entry.get("dtype")
    try:
        data = jax.eval_shape(
            lambda: jax.random.key_data(jax.random.key(0, impl=entry["key_impl"]))
        )
    except (TypeError, ValueError, KeyError):
        return None, None
    return (*shape, *data.shape), np.dtype(data.dtype).str


def _count(names, prefix: str) -> int:
    return sum(1 for n in names if n.startswith(prefix) and n[1:].isdigit())


def _first_difference(a: str, b: str, context: int = 60) -> str:
    i = next((j for j, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    lo = max(0, i - context)
    return f"file: ...{a[lo : i + context]}...\n  this network: ...{b[lo : i + context]}..."


def _check(path, what: str, stored: dict, expected: dict) -> None:
    hint = (
        "The checkpoint was written for a network with a different structure (populations, "
        "sizes, projections, delays, dt or models); rebuild the network exactly as it was."
    )
    if stored["treedef_sha256"] != expected["treedef_sha256"]:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} does not match this {what}: the PyTree structure differs.\n"
            f"  {_first_difference(stored['treedef'], expected['treedef'])}\n{hint}"
        )
    if len(stored["leaves"]) != len(expected["leaves"]):
        raise CheckpointError(
            f"Checkpoint {str(path)!r} does not match this {what}: it describes "
            f"{len(stored['leaves'])} leaves, this {what} has {len(expected['leaves'])}. {hint}"
        )
    for s, e in zip(stored["leaves"], expected["leaves"], strict=True):
        for field in ("path", "shape", "dtype", "python", "value"):
            if s.get(field) != e.get(field):
                raise CheckpointError(
                    f"Checkpoint {str(path)!r} does not match this {what}: leaf {e['path']} has "
                    f"{field} {s.get(field)} in the file but {e.get(field)} here. {hint}"
                )


def _weak(x: jax.Array) -> jax.Array:
    """``x`` as a weakly typed array (as Python-scalar parameters are), so the restored
    network has the same types as the original and the compiled step is reused."""
    try:
        from jax._src.lax.lax import _convert_element_type

        return _convert_element_type(x, np.dtype(x.dtype), weak_type=True)
    except Exception:  # the private helper moved: a strong type only costs a recompile
        return x


def _restore(entries: list[dict], arrays: list[np.ndarray]) -> list:
    out, it = [], iter(arrays)
    for e in entries:
        if "python" in e:
            out.append(None)
            continue
        a = next(it)
        if "key_impl" in e:
            out.append(jax.random.wrap_key_data(jnp.asarray(a), impl=e["key_impl"]))
        else:
            x = jnp.asarray(a)
            out.append(_weak(x) if e.get("weak_type") else x)
    return out


def load_checkpoint(
    path: str | os.PathLike,
    network: Network,
    *,
    like: NetworkState | None = None,
    check_version: bool = True,
) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` for ``network``.

    Arguments:
        path: the checkpoint file.
        network: the network the checkpoint belongs to, built as for the original run (its
            structure is checked; its parameter values are replaced by the saved ones).
        like: a state of the saved structure (only for states that ``network.init`` does
            not produce, e.g. batched ones); default ``jax.eval_shape(network.init)``.
        check_version: refuse checkpoints written by another brainsim version (a different
            version may step differently, so resuming would not be exact).

    Raises:
        CheckpointError: the file is not a checkpoint, is corrupted or truncated (checksum),
            has another format or brainsim version, or belongs to a different network.
    """
    path = Path(path)
    header, net_arrays, state_arrays = read_checkpoint_file(path)
    if check_version and header.get("brainsim_version") != __version__:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} was written by brainsim {header.get('brainsim_version')}, "
            f"this is brainsim {__version__}; a resumed run would not be guaranteed to equal an "
            "uninterrupted one. Pass check_version=False to load it anyway."
        )
    net_desc, current = _describe(network, arrays_only=True)
    _check(path, "network", header["network"], net_desc)
    if like is None:
        dtype = header["state"].get("dtype")
        if dtype == "float64" and not jax.config.jax_enable_x64:
            raise CheckpointError(
                f"Checkpoint {str(path)!r} holds a float64 state; enable float64 first with "
                'jax.config.update("jax_enable_x64", True).'
            )
        key = jax.random.key(0) if header["state"].get("typed_key") else jax.random.PRNGKey(0)
        try:
            like = jax.eval_shape(lambda: network.init(key, dtype=dtype))
        except (TypeError, ValueError) as e:
            raise CheckpointError(
                f"Checkpoint {str(path)!r} is damaged or was tampered with: its state dtype "
                f"{dtype!r} is not one this network can be initialised with ({e})."
            ) from None
    like_desc = _describe_like(like)
    _check(path, "network's state", header["state"], like_desc)

    if all(
        a.shape == b.shape
        and a.dtype == b.dtype
        and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        for a, b in zip(net_arrays, current, strict=True)
    ):
        restored_net = network
    else:
        leaves, treedef = jax.tree.flatten(network)
        new = _restore(header["network"]["leaves"], net_arrays)
        leaves = [old if n is None else n for old, n in zip(leaves, new, strict=True)]
        restored_net = jax.tree.unflatten(treedef, leaves)
    state_leaves = _restore(header["state"]["leaves"], state_arrays)
    state = jax.tree.unflatten(jax.tree.structure(like), state_leaves)
    try:  # a `like` of another network matches the file but not `network`
        check_state(restored_net, state, owner="load_checkpoint", batched=True)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"Checkpoint {str(path)!r}: {e}") from None
    return Checkpoint(restored_net, state, header.get("metadata", {}), header["brainsim_version"])


def _describe_like(like) -> dict:
    """The description of a state template whose leaves may be ``ShapeDtypeStruct``s."""
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(like)
    described = []
    for path, leaf in leaves_with_path:
        entry: dict[str, Any] = {"path": jax.tree_util.keystr(path), "shape": list(leaf.shape)}
        is_key = jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        entry["dtype"] = str(leaf.dtype) if is_key else np.dtype(leaf.dtype).str
        described.append(entry)
    text = str(treedef)
    return {
        "treedef": text,
        "treedef_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "leaves": described,
    }
