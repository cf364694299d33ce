r"""Subspace neurons, their growth per task, and projections out of the learned subspace.

A :class:`Subspace` is the weight matrix :math:`H` (``max_rows × n``) of lateral "subspace
neurons" that read a layer's presynaptic activity :math:`x \in \mathbb{R}^n`
(:math:`y = H x`), with two row masks of static shape: ``active`` (rows in use) and
``frozen`` (rows of earlier tasks, no longer learned). Growing the subspace for a new task
switches ``k`` more rows on (:func:`grow`); :func:`freeze` fixes them when the task is done.

The projection used in weight updates removes the frozen subspace from the presynaptic
activity,

.. math::
    \tilde x = x - H_f^\top (H_f\, x), \qquad H_f = \mathrm{diag}(\text{frozen})\, H,

which is the orthogonal projection onto the complement of the frozen rows' span when those
rows are orthonormal (Oja's subspace rule converges to orthonormal rows). A weight update
built from :math:`\tilde x` — for ``current = x @ W`` with ``W`` of shape ``(n_pre, n_post)``,
:math:`\Delta W = \tilde x\, \delta^\top` summed over samples and steps — satisfies
:math:`x_{old}^\top \Delta W = 0` for every :math:`x_{old}` in the frozen span: the layer's
input current for old tasks' activity is unchanged, while the forward pass itself is never
modified (Xiao et al., ICLR 2024).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Float


class Subspace(eqx.Module):
    r"""Weights of ``max_rows`` subspace neurons over an ``n``-dimensional activity, with masks.

    Arguments:
        n: dimension of the presynaptic activity (the layer's fan-in).
        max_rows: capacity (``≤ n``): the most rows the subspace can ever hold. Shapes are
            static, so growing never recompiles.
        dtype: dtype of the weights (default JAX's float).

    Fields: ``weights`` :math:`H` (``max_rows × n``, zero on inactive rows), ``active`` and
    ``frozen`` (boolean, ``max_rows``; frozen rows are always active).

    Example:
        >>> s = hlop.Subspace(64, 40)
        >>> s = hlop.grow(s, 10, key=jax.random.key(0))   # rows 0..9 active, orthonormal
        >>> s = hlop.learn(hlop.Oja(lr=1e-2), s, activity, key=key)
        >>> s = hlop.freeze(s)                              # rows 0..9 now fixed
    """

    weights: Float[Array, "max_rows n"]
    active: Bool[Array, " max_rows"]
    frozen: Bool[Array, " max_rows"]

    def __init__(self, n: int, max_rows: int, *, dtype=None):
        for name, value in (("n", n), ("max_rows", max_rows)):
            if not (isinstance(value, int | np.integer) and value >= 1):
                raise ValueError(f"Subspace: `{name}` must be a positive integer; got {value!r}.")
        if max_rows > n:
            raise ValueError(
                f"Subspace: `max_rows` ({max_rows}) cannot exceed the activity dimension `n` "
                f"({n}): at most n orthonormal rows exist."
            )
        dtype = jnp.zeros((), dtype).dtype if dtype is not None else jnp.zeros(()).dtype
        self.weights = jnp.zeros((int(max_rows), int(n)), dtype)
        self.active = jnp.zeros((int(max_rows),), bool)
        self.frozen = jnp.zeros((int(max_rows),), bool)

    @property
    def n(self) -> int:
        return self.weights.shape[1]

    @property
    def max_rows(self) -> int:
        return self.weights.shape[0]

    @property
    def n_active(self) -> Array:
        return jnp.sum(self.active)

    @property
    def n_frozen(self) -> Array:
        return jnp.sum(self.frozen)

    def frozen_basis(self) -> Float[Array, "max_rows n"]:
        """:math:`H_f`: the frozen rows, zeros elsewhere (what projections use)."""
        return jnp.where(self.frozen[:, None], self.weights, 0)

    def active_basis(self) -> Float[Array, "max_rows n"]:
        """The active rows (frozen and learning), zeros elsewhere."""
        return jnp.where(self.active[:, None], self.weights, 0)


def _check_subspace(subspace, owner):
    if not isinstance(subspace, Subspace):
        raise TypeError(
            f"{owner}: `subspace` must be a brainsim.examples.hlop.Subspace; got {type(subspace).__name__}."
        )


def grow(subspace: Subspace, k: int, *, key) -> Subspace:
    r"""Activate the next ``k`` inactive rows, initialised orthonormal and orthogonal to the
    rows already active.

    Random normal rows :math:`R` are projected off the active span,
    :math:`R \leftarrow R - (R H_a^\top) H_a`, then orthonormalised symmetrically,
    :math:`H_{new} = (R R^\top)^{-1/2} R` (Löwdin), so the result does not depend on row
    order. Existing rows (frozen or not) are returned bitwise unchanged. Rows beyond the
    capacity are silently not added: ``k`` is clipped to ``max_rows - n_active``; check
    ``n_active`` if it matters.

    Arguments:
        subspace: the :class:`Subspace`.
        k: number of rows to add (a static Python integer ``≥ 0``).
        key: PRNG key for the initial rows.
    """
    _check_subspace(subspace, "grow")
    if not (isinstance(k, int | np.integer) and k >= 0):
        raise ValueError(f"grow: `k` must be a non-negative integer; got {k!r}.")
    H, active = subspace.weights, subspace.active
    # The k first inactive rows (masks keep shapes static).
    new = ~active & (jnp.cumsum(~active) <= k)
    basis = subspace.active_basis()
    R = jax.random.normal(key, H.shape, H.dtype)
    R = R - (R @ basis.T) @ basis
    R = jnp.where(new[:, None], R, 0)
    gram = R @ R.T + jnp.diag(jnp.where(new, 0, 1).astype(H.dtype))
    evals, evecs = jnp.linalg.eigh(gram)
    inv_sqrt = (evecs * jax.lax.rsqrt(jnp.maximum(evals, jnp.finfo(H.dtype).tiny))) @ evecs.T
    R = inv_sqrt @ R
    weights = jnp.where(new[:, None], R.astype(H.dtype), H)
    return eqx.tree_at(lambda s: (s.weights, s.active), subspace, (weights, active | new))


def freeze(subspace: Subspace) -> Subspace:
    """Freeze every active row: from now on it is excluded from learning and used by
    :func:`project`."""
    _check_subspace(subspace, "freeze")
    return eqx.tree_at(lambda s: s.frozen, subspace, subspace.active)


def project(x: Float[Array, "... n"], subspace: Subspace) -> Float[Array, "... n"]:
    r"""Remove the frozen subspace from activity: :math:`\tilde x = x - H_f^\top (H_f x)`.

    Arguments:
        x: presynaptic activity or trace, last axis ``n`` (any leading axes: samples, steps).
        subspace: the :class:`Subspace`; only frozen rows are used.

    With no frozen row this is the identity (exactly).
    """
    _check_subspace(subspace, "project")
    if jnp.shape(x)[-1:] != (subspace.n,):
        raise ValueError(
            f"project: the last axis of `x` must be the subspace dimension {subspace.n}; got "
            f"shape {jnp.shape(x)}."
        )
    Hf = subspace.frozen_basis().astype(jnp.result_type(x))
    return x - (x @ Hf.T) @ Hf


def project_gradient(grad: Float[Array, "..."], subspace: Subspace, *, axis: int = 0) -> Array:
    r"""Project a weight gradient (or update) along its presynaptic axis.

    For ``current = x @ W`` (brainsim's convention, ``W`` of shape ``(n_pre, n_post)``, so
    ``axis=0``) the gradient is :math:`g = \sum x\,\delta^\top` and its projection

    .. math::
        \tilde g = (I - H_f^\top H_f)\, g = \sum \tilde x\, \delta^\top

    is the gradient computed with the projected presynaptic activity. A descent step
    :math:`W \leftarrow W - \eta \tilde g` leaves :math:`x^\top W` unchanged for every
    :math:`x` in the frozen span; the forward pass is untouched. For the PyTorch layout
    ``W (n_post, n_pre)`` pass ``axis=-1`` (:math:`g - g H_f^\top H_f`).

    Because e-prop's and BPTT's weight gradients are linear in the presynaptic activity at
    every step, projecting the gradient equals projecting the trace it was built from.
    """
    _check_subspace(subspace, "project_gradient")
    grad = jnp.asarray(grad)
    if grad.ndim == 0 or grad.shape[axis] != subspace.n:
        raise ValueError(
            f"project_gradient: axis {axis} of `grad` must have the subspace dimension "
            f"{subspace.n}; got shape {grad.shape}. Use `axis=` to name the presynaptic axis."
        )
    moved = jnp.moveaxis(grad, axis, -1)
    return jnp.moveaxis(project(moved, subspace), -1, axis)


def trace_update(
    pre_trace: Float[Array, " n_pre"],
    post_signal: Float[Array, " n_post"],
    subspace: Subspace,
    *,
    lr: float | Array,
) -> Float[Array, "n_pre n_post"]:
    r"""Projected online (trace-based) weight update
    :math:`\Delta W = \eta\, \tilde e\, L^\top`, :math:`\tilde e = e - H_f^\top (H_f e)`.

    Arguments:
        pre_trace: presynaptic trace :math:`e` (spikes of the step, a filtered spike train,
            an eligibility trace), ``(n_pre,)``; leading batch axes are summed over.
        post_signal: postsynaptic factor :math:`L` (learning signal, error, postsynaptic
            trace), ``(n_post,)`` with the same leading axes.
        subspace: the :class:`Subspace` of this layer's presynaptic activity.
        lr: :math:`\eta` (signed: pass ``-lr`` times an error for descent).

    Returns ``ΔW`` of shape ``(n_pre, n_post)`` to add to ``W`` (``current = x @ W``).
    """
    e = project(jnp.asarray(pre_trace), subspace)
    post = jnp.asarray(post_signal)
    if e.shape[:-1] != post.shape[:-1]:
        raise ValueError(
            f"trace_update: `pre_trace` {jnp.shape(pre_trace)} and `post_signal` {post.shape} "
            "must have the same leading (batch) axes."
        )
    e2 = e.reshape(-1, e.shape[-1])
    p2 = post.reshape(-1, post.shape[-1])
    return lr * (e2.T @ p2)


class _ProjectState(eqx.Module):
    inner: optax.OptState
    subspaces: object


def _project_tree(updates, subspaces):
    return jax.tree.map(
        lambda u, s: u if s is None else project_gradient(u, s, axis=0),
        updates,
        subspaces,
        is_leaf=lambda s: s is None or isinstance(s, Subspace),
    )


def _project_init(optimizer, subspaces, params):
    return _ProjectState(optimizer.init(params), subspaces)


def _project_update(optimizer, updates, state, params=None):
    updates, inner = optimizer.update(updates, state.inner, params)
    return _project_tree(updates, state.subspaces), _ProjectState(inner, state.subspaces)


def project_updates(optimizer: optax.GradientTransformation, subspaces) -> optax.GradientTransformation:
    r"""Wrap an ``optax`` optimiser so that its final updates are projected per weight.

    Arguments:
        optimizer: any ``optax`` gradient transformation (``optax.adam(1e-3)``, ...).
        subspaces: a PyTree with the structure of the trained parameters whose leaves are a
            :class:`Subspace` (project that weight along axis 0, its presynaptic axis) or
            ``None`` (leave it alone).

    Projecting *after* the optimiser (not the raw gradient before it) keeps every applied
    update :math:`\Delta W` in the orthogonal complement of the frozen subspace even for
    element-wise adaptive optimisers such as Adam, whose rescaling would otherwise rotate the
    update back into it. The subspaces travel in the optimiser state, so a new task (new
    subspaces, same optimiser) does not recompile the training step.
    """
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            "project_updates: `optimizer` must be an optax.GradientTransformation; got "
            f"{type(optimizer).__name__}."
        )
    return optax.GradientTransformation(
        eqx.Partial(_project_init, optimizer, subspaces), eqx.Partial(_project_update, optimizer)
    )
