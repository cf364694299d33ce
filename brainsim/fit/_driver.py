r"""The fitting/training loop: optax updates of free parameters, with progress and history.

:func:`fit` minimises ``loss(params, batch, key)`` over ``params`` (any PyTree; usually the
free parameters of a :class:`Trainable`). Each step is one compiled call (gradient + optimiser
update); the Python loop around it prints progress, records the history and stops early.
Everything random is derived from ``seed``: minibatch order from a NumPy generator, and the
``key`` passed to the loss at step ``k`` is ``fold_in(key(seed), k)``, so two runs with the
same seed give the same parameters.

With ``batched=True`` the whole step — loss, gradient and optimiser state — is ``vmap``-ed
over the leading axis of ``params`` and ``data``: many independent fits (one per cell) in one
compiled program, each with its own optimiser state, as if run one by one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._compile import jit
from .._progress import open_bar
from .._progress import resolve as resolve_progress


class EarlyStopping(eqx.Module):
    """Stop when the loss has not improved for a while, or has reached a target.

    Arguments:
        patience: steps without an improvement larger than ``min_delta`` before stopping.
        min_delta: improvement (absolute, in loss units) that counts.
        target: stop as soon as the loss is at or below this value.

    With ``batched=True`` the criteria apply to the largest loss of the batch, so the fit
    stops when every member has converged.
    """

    patience: int | None = eqx.field(static=True, default=None)
    min_delta: float = eqx.field(static=True, default=0.0)
    target: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.patience is not None and not (
            isinstance(self.patience, int) and self.patience >= 1
        ):
            raise ValueError(
                f"EarlyStopping: `patience` must be a positive integer; got {self.patience!r}."
            )
        if self.patience is None and self.target is None:
            raise ValueError("EarlyStopping: give `patience` (steps), `target` (loss) or both.")


class FitResult(eqx.Module):
    """What :func:`fit` returns.

    ``params`` are the parameters with the lowest loss seen (per member with ``batched``);
    ``last_params`` those after the last update. ``history`` maps ``"loss"`` (one row per
    step: the loss *before* that step's update; ``(steps, batch)`` when batched), ``"time"``
    (seconds since the start, compilation included) and every scalar entry of the loss's
    auxiliary dict (with ``has_aux``) to NumPy arrays.
    """

    params: object
    last_params: object
    opt_state: object
    best_loss: object
    history: dict
    steps: int = eqx.field(static=True)
    stopped_early: bool = eqx.field(static=True)

    @property
    def loss(self):
        """The loss history (NumPy)."""
        return self.history["loss"]


def _update(loss, optimizer, has_aux, params, opt_state, best, best_loss, batch, key):
    if has_aux:
        (value, aux), grads = eqx.filter_value_and_grad(loss, has_aux=True)(params, batch, key)
    else:
        value, grads = eqx.filter_value_and_grad(loss)(params, batch, key)
        aux = {}
    trainable, static = eqx.partition(params, eqx.is_inexact_array)
    if isinstance(optimizer, optax.GradientTransformationExtraArgs):
        # Line-search methods (optax.lbfgs, ...) re-evaluate the loss at trial points.
        def value_fn(p):
            out = loss(eqx.combine(p, static), batch, key)
            return out[0] if has_aux else out

        updates, opt_state = optimizer.update(
            grads, opt_state, trainable, value=value, grad=grads, value_fn=value_fn
        )
    else:
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
    new_params = eqx.apply_updates(params, updates)
    # A non-finite gradient would be written into the parameters by the optimizer while the
    # loss can stay finite (e.g. a network gone silent); the loop raises on it.
    grads_finite = _all_finite(grads)
    better = value < best_loss
    best = jax.tree.map(
        lambda b, p: jnp.where(better, p, b) if eqx.is_inexact_array(p) else b, best, params
    )
    best_loss = jnp.where(better, value, best_loss)
    return new_params, opt_state, best, best_loss, value, aux, grads_finite


def _all_finite(tree) -> jax.Array:
    leaves = jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves] or [jnp.bool_(True)]))


@jit
def _step(loss, optimizer, has_aux, batched, params, opt_state, best, best_loss, batch, key):
    fn = lambda *a: _update(loss, optimizer, has_aux, *a)  # noqa: E731
    if batched:
        batch_axis = None if batch is None else 0
        fn = jax.vmap(fn, in_axes=(0, 0, 0, 0, batch_axis, None))
    return fn(params, opt_state, best, best_loss, batch, key)


def _init_opt(optimizer, params, batched):
    trainable = eqx.filter(params, eqx.is_inexact_array)
    if batched:
        return jax.vmap(optimizer.init)(trainable)
    return optimizer.init(trainable)


def _leading_size(data, owner, what):
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves(data)}
    if None in sizes or len(sizes) != 1:
        raise ValueError(
            f"{owner}: every array in `data` needs the same leading {what} axis; got leading "
            f"sizes {sorted(s for s in sizes if s is not None)} (or a scalar)."
        )
    return sizes.pop()


def _loss_text(loss: float, best: float) -> str:
    return f"loss {loss:.4e}, best {best:.4e}"


def fit(
    loss: Callable,
    params,
    optimizer: optax.GradientTransformation,
    *,
    steps: int,
    data=None,
    batch_size: int | None = None,
    seed: int = 0,
    batched: bool = False,
    has_aux: bool = False,
    early_stopping: EarlyStopping | None = None,
    progress=None,
    log_every: int | None = None,
    callback: Callable | None = None,
) -> FitResult:
    r"""Minimise ``loss`` over ``params`` with ``optimizer`` for up to ``steps`` updates.

    Arguments:
        loss: ``loss(params, batch, key) -> scalar`` (or ``(scalar, aux_dict)`` with
            ``has_aux``); ``batch`` is ``None`` without ``data``. Pure: no side effects.
        params: initial parameters (a PyTree; inexact-array leaves are trained, other leaves
            are carried unchanged). With ``batched``, every leaf has a leading batch axis.
        optimizer: an ``optax`` gradient transformation, e.g. ``optax.adam(1e-2)``.
        steps: maximum number of updates.
        data: optional PyTree of arrays with a leading sample axis (training sets) or, with
            ``batched``, a leading batch axis matching ``params`` (one target per fit).
        batch_size: minibatch size; each epoch visits the samples in a new order drawn from
            ``seed`` and leaves out the last partial batch (static shapes). ``None``: all data
            every step.
        seed: the only source of randomness (minibatch order and the per-step ``key``).
        batched: ``vmap`` the whole step over the leading axis (independent fits).
        early_stopping: an :class:`EarlyStopping`, or ``None`` to run all ``steps``.
        progress: a progress bar over the steps with the loss, the best loss, steps/s and the
            remaining time (the :class:`~brainsim.Progress` mechanism shared with
            :func:`~brainsim.simulate` and :func:`~brainsim.run_long`). ``None`` (default):
            shown when ``stderr`` is a terminal or in a notebook, silent in logs; ``True``:
            always, on ``stderr``; ``False``: silent; a text stream or a
            :class:`~brainsim.Progress`: written there.
        log_every: steps between calls of ``callback`` (default: about 20 per fit).
        callback: ``callback(step, params, loss) -> bool | None`` called every ``log_every``
            steps on the host; returning ``True`` stops the fit.

    Returns:
        A :class:`FitResult` (best and last parameters, optimiser state, history).

    Example:
        >>> tr = bs.fit.Trainable(neuron, where=lambda m: m.tau_m, bijections=bs.fit.Positive())
        >>> def loss(u, batch, key):
        ...     return bs.fit.voltage_mse(run(tr.build(u)), target)
        >>> result = bs.fit.fit(loss, tr.init(), optax.adam(0.05), steps=200)
        >>> tr.values(result.params)
    """
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"fit: `steps` must be a positive integer; got {steps!r}.")
    if not callable(loss):
        raise TypeError(f"fit: `loss` must be a function; got {type(loss).__name__}.")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"fit: `optimizer` must be an optax.GradientTransformation (e.g. optax.adam(1e-2)); "
            f"got {type(optimizer).__name__}."
        )
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise TypeError(
            f"fit: `early_stopping` must be a brainsim.fit.EarlyStopping; got "
            f"{type(early_stopping).__name__}."
        )
    if not jax.tree.leaves(eqx.filter(params, eqx.is_inexact_array)):
        raise ValueError("fit: `params` has no floating-point array leaf to train.")
    n_samples = None
    if data is not None:
        n_samples = _leading_size(data, "fit", "batch" if batched else "sample")
    if batched:
        n_fits = _leading_size(eqx.filter(params, eqx.is_array), "fit", "batch")
        if n_samples is not None and n_samples != n_fits:
            raise ValueError(
                f"fit: batched `params` have {n_fits} members but `data` has {n_samples}."
            )
        if batch_size is not None:
            raise ValueError(
                "fit: `batch_size` selects minibatches of samples and cannot be combined with "
                "`batched=True` (where each fit gets its own data row)."
            )
    if batch_size is not None:
        if data is None:
            raise ValueError("fit: `batch_size` needs `data`.")
        if not (isinstance(batch_size, int) and 1 <= batch_size <= n_samples):
            raise ValueError(
                f"fit: `batch_size` must be an integer in 1..{n_samples} (the number of "
                f"samples); got {batch_size!r}."
            )
    every = log_every or max(1, steps // 20)
    progress = resolve_progress(progress, "fit")

    opt_state = _init_opt(optimizer, params, batched)
    first = jax.tree.leaves(eqx.filter(params, eqx.is_inexact_array))[0]
    inf = jnp.full(first.shape[:1] if batched else (), jnp.inf, first.dtype)
    best, best_loss = params, inf
    base_key = jax.random.key(seed)
    rng = np.random.default_rng(seed)
    order, cursor = None, 0
    data = jax.tree.map(jnp.asarray, data)

    losses, times, auxes = [], [], {}
    bar = None if progress is None else open_bar(progress, steps, desc="fit", unit="step")
    start = time.perf_counter()
    stopped = False
    since_best, tracked_best = 0, math.inf
    k = 0
    try:
        for k in range(1, steps + 1):
            if batch_size is not None:
                if order is None or cursor + batch_size > n_samples:
                    order, cursor = rng.permutation(n_samples), 0
                idx = jnp.asarray(order[cursor : cursor + batch_size])
                cursor += batch_size
                batch = jax.tree.map(lambda x, idx=idx: jnp.take(x, idx, axis=0), data)
            else:
                batch = data
            key = jax.random.fold_in(base_key, k - 1)
            params, opt_state, best, best_loss, value, aux, grads_finite = _step(
                loss, optimizer, has_aux, batched, params, opt_state, best, best_loss, batch, key
            )
            value = np.asarray(value)
            if not np.all(np.isfinite(value)):
                raise FloatingPointError(
                    f"fit: the loss became {value.ravel()[~np.isfinite(value.ravel())][0]} at step "
                    f"{k}; lower the learning rate, bound the parameters with bijections, or check "
                    "the simulation (reduce dt)."
                )
            if not np.all(np.asarray(grads_finite)):
                raise FloatingPointError(
                    f"fit: the gradient became non-finite at step {k} (loss {np.mean(value):.6g}), "
                    "so the parameters are no longer usable. Use a narrower surrogate (a larger "
                    "scale), detach_reset=True, a lower learning rate or gradient clipping "
                    "(optax.clip_by_global_norm)."
                )
            losses.append(value)
            times.append(time.perf_counter() - start)
            for name, x in (aux or {}).items():
                if np.ndim(x) == (1 if batched else 0):
                    auxes.setdefault(name, []).append(np.asarray(x))
            monitored = float(np.max(value))
            if bar is not None:
                bar.set_postfix_str(
                    _loss_text(float(np.mean(value)), float(np.mean(np.asarray(best_loss)))),
                    refresh=False,
                )
                bar.update()
            if callback is not None and (k % every == 0 or k == steps):
                if callback(k, params, value):
                    stopped = True
                    break
            if early_stopping is not None:
                if early_stopping.target is not None and monitored <= early_stopping.target:
                    stopped = True
                    break
                if early_stopping.patience is not None:
                    if monitored < tracked_best - early_stopping.min_delta:
                        tracked_best, since_best = monitored, 0
                    else:
                        since_best += 1
                        if since_best >= early_stopping.patience:
                            stopped = True
                            break
    finally:
        if bar is not None:  # also on an error: the bar ends where the fit did
            bar.close()
    history = {"loss": np.stack(losses), "time": np.asarray(times)}
    history.update({name: np.stack(v) for name, v in auxes.items()})
    return FitResult(
        params=best,
        last_params=params,
        opt_state=opt_state,
        best_loss=best_loss,
        history=history,
        steps=k,
        stopped_early=stopped,
    )
