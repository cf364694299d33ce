r"""Oja's subspace rule for the lateral subspace neurons, with momentum and clipping.

For a minibatch :math:`X` (``B × n``) of presynaptic activity and the active rows :math:`H`
(``m × n``), the subspace neurons respond :math:`Y = X H^\top`, reconstruct
:math:`\hat X = Y H`, and learn (Oja 1989; HLOP, Xiao et al. ICLR 2024)

.. math::
    \Delta H = \mathrm{clip}\!\left(\tfrac{1}{B}\, Y^\top (X - \hat X),\ \pm c\right), \qquad
    v \leftarrow \mu v + \Delta H, \qquad H \leftarrow H + \eta\, v,

applied to the learning rows only (active and not frozen); frozen rows take part in
:math:`Y` and :math:`\hat X`, so new rows learn the principal subspace of what the frozen
ones do not yet explain. Averaged over data with second-moment matrix
:math:`C = E[x x^\top]`, :math:`\Delta H = H C (I - H^\top H)` (for symmetric fixed points),
whose stable fixed points are orthonormal bases of the span of the top-:math:`m`
eigenvectors of :math:`C` (uncentred: the mean is part of the activity to protect).

Defaults follow REFERENCES.md: momentum :math:`\mu = 0.9`, clip :math:`c = 10`, 5
iterations per minibatch, :math:`\eta = 10^{-3}` (input layer) or :math:`10^{-2}` (others).
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float

from brainsim import jit

from ._subspace import Subspace, _check_subspace


class OjaState(NamedTuple):
    """Momentum of the subspace weights (``max_rows × n``)."""

    velocity: Array


class Oja(eqx.Module):
    r"""Oja's subspace rule with momentum and element-wise clipping, as a pure (init, update) pair.

    Arguments:
        lr: learning rate :math:`\eta` (per unit of activity squared).
        momentum: :math:`\mu` in :math:`[0, 1)`.
        clip: element-wise bound :math:`c` on :math:`\Delta H` (``None``: no clipping).
        iterations: updates per minibatch (a static integer).

    ``update(subspace, state, x)`` runs ``iterations`` updates on the minibatch ``x``
    (``(B, n)``, any leading axes are flattened into ``B``) and returns
    ``(subspace, state)``; frozen and inactive rows are returned bitwise unchanged.
    """

    lr: Float[Array, ""]
    momentum: Float[Array, ""]
    clip: Float[Array, ""] | None
    iterations: int = eqx.field(static=True)

    def __init__(
        self,
        lr: float = 1e-3,
        *,
        momentum: float = 0.9,
        clip: float | None = 10.0,
        iterations: int = 5,
    ):
        if not lr > 0:
            raise ValueError(f"Oja: `lr` must be positive; got {lr!r}.")
        if not 0 <= momentum < 1:
            raise ValueError(f"Oja: `momentum` must be in [0, 1); got {momentum!r}.")
        if clip is not None and not clip > 0:
            raise ValueError(f"Oja: `clip` must be positive or None; got {clip!r}.")
        if not (isinstance(iterations, int | np.integer) and iterations >= 1):
            raise ValueError(f"Oja: `iterations` must be a positive integer; got {iterations!r}.")
        self.lr = jnp.asarray(lr)
        self.momentum = jnp.asarray(momentum)
        self.clip = None if clip is None else jnp.asarray(clip)
        self.iterations = int(iterations)

    def init(self, subspace: Subspace) -> OjaState:
        _check_subspace(subspace, "Oja.init")
        return OjaState(jnp.zeros_like(subspace.weights))

    def delta(self, subspace: Subspace, x: Float[Array, "B n"]) -> Float[Array, "max_rows n"]:
        r"""The clipped Oja term :math:`\mathrm{clip}(Y^\top (X - \hat X)/B)` on the learning
        rows (zero elsewhere)."""
        H = subspace.active_basis()
        x = x.reshape(-1, subspace.n).astype(H.dtype)
        y = x @ H.T
        return self._finish(subspace, y.T @ (x - y @ H) / x.shape[0])

    def delta_from_moment(
        self, subspace: Subspace, moment: Float[Array, "n n"]
    ) -> Float[Array, "max_rows n"]:
        r"""The same term from the batch's second moment :math:`C = X^\top X / B`:
        :math:`Y^\top (X - \hat X)/B = H C - (H C H^\top) H` exactly, at a cost independent
        of the batch size (used by :func:`learn` for full-batch learning)."""
        H = subspace.active_basis()
        HC = H @ moment.astype(H.dtype)
        return self._finish(subspace, HC - (HC @ H.T) @ H)

    def _finish(self, subspace, d):
        if self.clip is not None:
            d = jnp.clip(d, -self.clip, self.clip)
        learning = subspace.active & ~subspace.frozen
        return jnp.where(learning[:, None], d, 0)

    def update(
        self, subspace: Subspace, state: OjaState, x: Float[Array, "... n"]
    ) -> tuple[Subspace, OjaState]:
        """``iterations`` momentum steps of the rule on the minibatch ``x``."""
        _check_subspace(subspace, "Oja.update")
        if jnp.shape(x)[-1:] != (subspace.n,):
            raise ValueError(
                f"Oja.update: the last axis of `x` must be the subspace dimension "
                f"{subspace.n}; got shape {jnp.shape(x)}."
            )
        return self._iterate(subspace, state, lambda s: self.delta(s, x))

    def update_from_moment(
        self, subspace: Subspace, state: OjaState, moment: Float[Array, "n n"]
    ) -> tuple[Subspace, OjaState]:
        """As :meth:`update` for a minibatch with second moment ``moment`` (``XᵀX/B``)."""
        _check_subspace(subspace, "Oja.update_from_moment")
        if jnp.shape(moment) != (subspace.n, subspace.n):
            raise ValueError(
                f"Oja.update_from_moment: `moment` must have shape ({subspace.n}, "
                f"{subspace.n}); got {jnp.shape(moment)}."
            )
        return self._iterate(subspace, state, lambda s: self.delta_from_moment(s, moment))

    def _iterate(self, subspace, state, delta):
        learning = (subspace.active & ~subspace.frozen)[:, None]
        dtype = subspace.weights.dtype

        def body(carry, _):
            H, v = carry
            s = eqx.tree_at(lambda s: s.weights, subspace, H)
            v = (self.momentum * v + delta(s)).astype(dtype)
            H = jnp.where(learning, H + (self.lr * v).astype(dtype), H)
            return (H, v), None

        (H, v), _ = lax.scan(body, (subspace.weights, state.velocity), None, self.iterations)
        return eqx.tree_at(lambda s: s.weights, subspace, H), OjaState(v)


def learn(
    rule: Oja,
    subspace: Subspace,
    activity: Float[Array, "samples n"],
    *,
    key,
    epochs: int = 1,
    batch_size: int | None = None,
) -> Subspace:
    r"""Train the learning rows of ``subspace`` on ``activity`` with ``rule`` (compiled scan).

    Arguments:
        rule: an :class:`Oja` rule.
        subspace: the :class:`Subspace` (grow it first: only active, unfrozen rows learn).
        activity: presynaptic activity vectors, last axis ``n`` (leading axes, e.g. samples
            and steps, are flattened).
        key: PRNG key for the minibatch order.
        epochs: passes over the data (each minibatch gets ``rule.iterations`` updates).
        batch_size: vectors per minibatch; ``None`` uses all of them every update (full
            batch). The last partial minibatch of an epoch is left out (static shapes).

    The momentum starts from zero.
    """
    _check_subspace(subspace, "learn")
    x = jnp.asarray(activity)
    if x.ndim < 1 or x.shape[-1] != subspace.n:
        raise ValueError(
            f"learn: the last axis of `activity` must be the subspace dimension {subspace.n}; "
            f"got shape {x.shape}."
        )
    x = x.reshape(-1, subspace.n)
    if not (isinstance(epochs, int | np.integer) and epochs >= 1):
        raise ValueError(f"learn: `epochs` must be a positive integer; got {epochs!r}.")
    n = x.shape[0]
    size = n if batch_size is None else int(batch_size)
    if not 1 <= size <= n:
        raise ValueError(f"learn: `batch_size` must be in 1..{n}; got {batch_size!r}.")
    return _learn(rule, subspace, x, key, int(epochs), size)


@jit
def _learn(rule, subspace, x, key, epochs, size):
    n_batches = x.shape[0] // size
    state = rule.init(subspace)

    if size == x.shape[0]:
        # Full batch: every update sees the same second moment; compute it once.
        moment = x.T @ x / x.shape[0]

        def full(carry, _):
            return rule.update_from_moment(*carry, moment), None

        (subspace, _), _ = lax.scan(full, (subspace, state), None, epochs)
        return subspace

    def epoch(carry, k):
        s, st = carry
        order = jax.random.permutation(k, x.shape[0])[: n_batches * size]
        batches = x[order].reshape(n_batches, size, -1)

        def step(c, xb):
            return rule.update(*c, xb), None

        (s, st), _ = lax.scan(step, (s, st), batches)
        return (s, st), None

    (subspace, _), _ = lax.scan(epoch, (subspace, state), jax.random.split(key, epochs))
    return subspace


def principal_angles(A: Float[Array, "p n"], B: Float[Array, "q n"]) -> Float[Array, " r"]:
    r"""Principal angles (radians, ascending) between the row spans of ``A`` and ``B``:
    :math:`\arccos` of the singular values of :math:`Q_A^\top Q_B` with orthonormal bases from
    QR. The largest angle is ``0`` iff one span contains the other."""
    qa, _ = jnp.linalg.qr(jnp.asarray(A).T)
    qb, _ = jnp.linalg.qr(jnp.asarray(B).T)
    s = jnp.linalg.svd(qa.T @ qb, compute_uv=False)
    return jnp.sort(jnp.arccos(jnp.clip(s, -1.0, 1.0)))
