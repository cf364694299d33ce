r"""Memory-bounded gradients of long simulations: nested, checkpointed scans.

Reverse-mode differentiation of a ``lax.scan`` of :math:`T` steps stores what every step's
backward pass needs (its *residuals*), so memory grows as :math:`O(T)`. Splitting the loop
into :math:`L` nested loops of about :math:`T^{1/L}` iterations each and wrapping every loop
body except the innermost in :func:`jax.checkpoint` stores only the carries at the start of
each outer iteration; the backward pass recomputes each segment's forward pass from its
stored carry when it needs it. Memory becomes :math:`O(L\,T^{1/L})` carries plus one
innermost segment of residuals, at the price of about :math:`L - 1` extra forward passes
(Griewank's recursive checkpointing, on a fixed schedule).

Values are unchanged: the same step runs the same number of times in the same order, so
results and gradients equal those of the plain scan (bitwise for the forward pass; to
floating-point rounding for gradients, whose summation order may differ).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax


class Checkpointing(eqx.Module):
    r"""How :func:`~brainsim.simulate` checkpoints its loop for reverse-mode gradients.

    Arguments:
        levels: number of nested loops (>= 1). ``1`` is the plain scan (store everything);
            ``2`` stores about :math:`\sqrt T` carries and recomputes the forward pass once;
            ``3`` stores about :math:`3\,T^{1/3}` and recomputes twice, and so on.
        policy: optional :mod:`jax.checkpoint_policies` policy for what the checkpointed
            segments may save besides their inputs (default: nothing).

    Forward-only runs are unaffected (no recomputation happens without a backward pass).

    Example:
        >>> grad = jax.grad(lambda w: loss(bs.simulate(set_w(net, w), 10_000.0, key=key,
        ...     record=rec, checkpoint=bs.Checkpointing(levels=2))))(w0)
    """

    levels: int = eqx.field(static=True, default=2)
    policy: Callable | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if not (isinstance(self.levels, int) and not isinstance(self.levels, bool) and self.levels >= 1):
            raise ValueError(
                f"Checkpointing: `levels` must be an integer >= 1 (1 = no checkpointing); got "
                f"{self.levels!r}."
            )


def _segment_length(length: int, levels: int) -> int:
    """Steps per outer iteration when ``length`` steps are split into ``levels`` loops."""
    seg = math.ceil(length ** ((levels - 1) / levels) - 1e-9)
    return max(1, min(seg, length))


def checkpointed_scan(
    body, carry, length: int, checkpointing: Checkpointing | None, unroll: int = 1
):
    """``lax.scan(body, carry, None, length=length)`` with nested checkpointing.

    ``body(carry, None) -> (carry, y)``; returns ``(carry, ys)`` with ``ys`` stacked over all
    ``length`` steps exactly as the plain scan would. ``unroll``: steps per loop iteration of
    the innermost scan (``lax.scan``'s own argument); values are unchanged.
    """
    if checkpointing is None:
        return lax.scan(body, carry, None, length=length, unroll=unroll)
    return _nested(body, carry, length, checkpointing.levels, checkpointing.policy, unroll)


def _nested(body, carry, length, levels, policy, unroll=1):
    if levels <= 1 or length <= 1:
        return lax.scan(body, carry, None, length=length, unroll=min(unroll, max(length, 1)))
    seg = _segment_length(length, levels)
    n_outer, rem = divmod(length, seg)

    def segment(n):
        # prevent_cse=False: inside a scan, CSE across iterations cannot happen anyway, and
        # the extra barriers only slow the compiled loop down (JAX's own advice).
        return jax.checkpoint(
            lambda c: _nested(body, c, n, levels - 1, policy, unroll),
            policy=policy,
            prevent_cse=False,
        )

    run_seg = segment(seg)
    carry, ys = lax.scan(lambda c, _: run_seg(c), carry, None, length=n_outer)
    ys = jax.tree.map(lambda y: y.reshape((n_outer * seg,) + y.shape[2:]), ys)
    if rem:
        carry, ys_rem = segment(rem)(carry)
        ys = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=0), ys, ys_rem)
    return carry, ys
