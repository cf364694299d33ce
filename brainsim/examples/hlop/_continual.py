r"""Continual learning of a spiking classifier: sequential, with HLOP, or jointly (upper bound).

The model is a :class:`~brainsim.fit.SpikingRNN` (input spikes → LIF hidden layer → leaky
readout) trained with surrogate gradients (BPTT through the LIF's surrogate) by
:func:`brainsim.fit.fit`; the logits are the readout averaged over time. Only the two weight
matrices train (``w_in`` and ``w_out``; the readout bias stays zero so that nothing outside
the projected weights can change old tasks' outputs).

**Protocol.** Tasks arrive one after the other. After training on task :math:`i` the test
accuracy on every task :math:`j` is recorded in :math:`R_{ij}` (Lopez-Paz & Ranzato 2017).
With :math:`T` tasks,

.. math::
    \mathrm{ACC} = \frac1T \sum_{j} R_{T-1,j}, \qquad
    \mathrm{BWT} = \frac1{T-1} \sum_{j<T-1} \left(R_{T-1,j} - R_{jj}\right),

so BWT < 0 measures forgetting.

**HLOP.** Each weight has a :class:`Subspace` of its presynaptic activity (the input spikes
for ``w_in``, the hidden spikes for ``w_out``). While task :math:`i` trains, the optimiser's
updates are projected out of the frozen subspaces (:func:`project_updates`), so the currents
that old tasks' activity drives are (nearly) unchanged. After the task, ``k`` new rows are
grown, learned with Oja's rule on that task's activity (every step of every training sample),
and frozen.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from brainsim import jit
from brainsim.fit import SpikingRNN, fit, membrane_cross_entropy

from ._oja import Oja, learn
from ._subspace import Subspace, freeze, grow, project_updates
from ._tasks import Task


class HLOP(eqx.Module):
    """Settings of HLOP for a :class:`~brainsim.fit.SpikingRNN` (input layer, readout layer).

    Arguments:
        rows: rows added per task to the subspace of (input spikes, hidden spikes).
        max_rows: capacity of each subspace (default: enough for every task but the last).
        rules: the :class:`Oja` rule of each subspace (default ``lr`` 1e-2, momentum 0.9,
            clip 10, 5 iterations for both; REFERENCES' 1e-3 for the input layer is for
            784-pixel MNIST, whose activity second moment is about ten times larger than that
            of 64 spike-encoded digit pixels, and converged too slowly here).
        epochs: Oja epochs over each task's activity (each of ``rule.iterations`` updates).
        batch_size: activity vectors per Oja minibatch (``None``: full batch, computed from
            the activity's second moment at a cost independent of the data size).
    """

    rows: tuple[int, int] = eqx.field(static=True)
    max_rows: tuple[int, int] | None = eqx.field(static=True, default=None)
    rules: tuple[Oja, Oja] | None = None
    epochs: int = eqx.field(static=True, default=300)
    batch_size: int | None = eqx.field(static=True, default=None)


class ContinualResult(NamedTuple):
    """What :func:`continual_learning` and :func:`multitask` return.

    ``accuracy``: the matrix :math:`R` (``(rows, tasks)``; row ``i`` after training task
    ``i``, a single row for :func:`multitask`); ``model``: the final model; ``subspaces``:
    the final (input, hidden) :class:`Subspace` pair with HLOP, else ``None``; ``seconds``:
    wall time.
    """

    accuracy: np.ndarray
    model: SpikingRNN
    subspaces: tuple[Subspace, Subspace] | None
    seconds: float

    @property
    def acc(self) -> float:
        return acc(self.accuracy)

    @property
    def bwt(self) -> float:
        return bwt(self.accuracy)


def acc(R) -> float:
    """Average accuracy after the last task: the mean of the last row of ``R``."""
    return float(np.mean(np.asarray(R)[-1]))


def bwt(R) -> float:
    r"""Backward transfer :math:`\frac{1}{T-1}\sum_{j<T-1} (R_{T-1,j} - R_{jj})` of a square
    accuracy matrix (NaN unless ``R`` is square with at least two tasks)."""
    R = np.asarray(R)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] < 2:
        return float("nan")
    return float(np.mean(R[-1, :-1] - np.diag(R)[:-1]))


def _weights(model):
    return model.w_in, model.w_out


class _ClassifierLoss(eqx.Module):
    """Cross-entropy of the time-averaged readout; a Module so that every task reuses the
    same compiled training step."""

    model: SpikingRNN
    dt: float = eqx.field(static=True)

    def __call__(self, params, batch, key):
        x, y = batch
        model = eqx.tree_at(_weights, self.model, params)
        _, out = jax.vmap(lambda s: model(s, self.dt))(x)
        return membrane_cross_entropy(out, y, reduce=jnp.mean)


@jit
def _run(model, x, dt):
    return jax.vmap(lambda s: model(s, dt))(x)


def evaluate(model: SpikingRNN, task: Task, *, dt: float = 1.0) -> float:
    """Test accuracy of ``model`` on ``task`` (argmax of the time-averaged readout)."""
    _, out = _run(model, task.test_x, dt)
    return float(jnp.mean(jnp.argmax(jnp.mean(out, axis=-2), axis=-1) == task.test_y))


def _train(model, x, y, optimizer, *, epochs, batch_size, dt, seed, progress):
    n = x.shape[0]
    batch_size = min(batch_size, n)
    steps = max(1, epochs * (n // batch_size))
    result = fit(
        _ClassifierLoss(model, float(dt)),
        _weights(model),
        optimizer,
        steps=steps,
        data=(x, y),
        batch_size=batch_size,
        seed=seed,
        progress=progress,
    )
    return eqx.tree_at(_weights, model, result.last_params)


def _check(model, tasks, owner):
    if not isinstance(model, SpikingRNN):
        raise TypeError(f"{owner}: `model` must be a brainsim.fit.SpikingRNN; got {type(model).__name__}.")
    if model.w_rec is not None:
        raise ValueError(f"{owner}: recurrent models are not supported (build with recurrent=False).")
    if not tasks or not all(isinstance(t, Task) for t in tasks):
        raise TypeError(f"{owner}: `tasks` must be a non-empty sequence of brainsim.examples.hlop.Task.")


def continual_learning(
    model: SpikingRNN,
    tasks,
    *,
    hlop: HLOP | None = None,
    optimizer: optax.GradientTransformation | None = None,
    epochs: int = 5,
    batch_size: int = 64,
    dt: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> ContinualResult:
    """Train ``model`` on ``tasks`` one after the other; record the accuracy matrix.

    Arguments:
        model: a feed-forward :class:`~brainsim.fit.SpikingRNN` (its ``w_in``, ``w_out`` train).
        tasks: sequence of :class:`Task` (e.g. :func:`permuted_digits`).
        hlop: :class:`HLOP` settings, or ``None`` for plain sequential training.
        optimizer: ``optax`` optimiser (default ``optax.adam(1e-3)``), restarted every task.
        epochs: passes over each task's training set.
        batch_size: samples per minibatch.
        dt: step (ms).
        seed: minibatch order (task ``i`` uses ``seed + i``) and subspace initialisation.
        progress: show :func:`~brainsim.fit.fit`'s progress bar.

    Returns:
        A :class:`ContinualResult` (``accuracy`` is ``(T, T)``; ``.acc``, ``.bwt``).

    Example:
        >>> tasks = hlop.permuted_digits(5, steps=10, max_rate=1.0)
        >>> model = bs.fit.SpikingRNN(64, 128, 10, key=jax.random.key(0), input_gain=3.0)
        >>> r = hlop.continual_learning(
        ...     model, tasks, hlop=hlop.HLOP(rows=(6, 24)), optimizer=optax.adam(3e-3))
        >>> r.acc, r.bwt        # about 0.77 and -0.07 (sequential: 0.48 and -0.54)
    """
    _check(model, tasks, "continual_learning")
    if hlop is not None and not isinstance(hlop, HLOP):
        raise TypeError(f"continual_learning: `hlop` must be a brainsim.examples.hlop.HLOP; got {type(hlop).__name__}.")
    optimizer = optax.adam(1e-3) if optimizer is None else optimizer
    start = time.perf_counter()
    n_tasks = len(tasks)
    subspaces = None
    if hlop is not None:
        dims = (model.w_in.shape[0], model.n_hidden)
        if len(hlop.rows) != 2 or (hlop.max_rows is not None and len(hlop.max_rows) != 2):
            raise ValueError(
                "continual_learning: `HLOP.rows` and `HLOP.max_rows` need one entry per "
                f"layer (input, hidden); got rows={hlop.rows!r}, max_rows={hlop.max_rows!r}."
            )
        max_rows = hlop.max_rows or tuple(
            min(d, r * max(1, n_tasks - 1)) for d, r in zip(dims, hlop.rows, strict=True)
        )
        subspaces = tuple(
            Subspace(d, m, dtype=model.w_in.dtype) for d, m in zip(dims, max_rows, strict=True)
        )
    key = jax.random.key(seed)
    R = np.zeros((n_tasks, n_tasks))
    for i, task in enumerate(tasks):
        opt = optimizer if subspaces is None else project_updates(optimizer, subspaces)
        model = _train(
            model, task.train_x, task.train_y, opt,
            epochs=epochs, batch_size=batch_size, dt=dt, seed=seed + i, progress=progress,
        )
        R[i] = [evaluate(model, t, dt=dt) for t in tasks]
        if subspaces is not None and i < n_tasks - 1:
            spikes, _ = _run(model, task.train_x, dt)
            activity = (task.train_x, spikes)
            new = []
            rules = hlop.rules if hlop.rules is not None else (Oja(1e-2), Oja(1e-2))
            for s, rule, k, a in zip(subspaces, rules, hlop.rows, activity, strict=True):
                key, k_grow, k_learn = jax.random.split(key, 3)
                s = grow(s, int(k), key=k_grow)
                s = learn(rule, s, a, key=k_learn, epochs=hlop.epochs, batch_size=hlop.batch_size)
                new.append(freeze(s))
            subspaces = tuple(new)
    return ContinualResult(R, model, subspaces, time.perf_counter() - start)


def multitask(
    model: SpikingRNN,
    tasks,
    *,
    optimizer: optax.GradientTransformation | None = None,
    epochs: int = 5,
    batch_size: int = 64,
    dt: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> ContinualResult:
    """Upper bound: train on the union of all tasks' training sets at once (the same number
    of epochs over every task as :func:`continual_learning`); ``accuracy`` is one row."""
    _check(model, tasks, "multitask")
    optimizer = optax.adam(1e-3) if optimizer is None else optimizer
    start = time.perf_counter()
    x = jnp.concatenate([t.train_x for t in tasks])
    y = jnp.concatenate([t.train_y for t in tasks])
    model = _train(
        model, x, y, optimizer,
        epochs=epochs, batch_size=batch_size, dt=dt, seed=seed, progress=progress,
    )
    R = np.asarray([[evaluate(model, t, dt=dt) for t in tasks]])
    return ContinualResult(R, model, None, time.perf_counter() - start)
