"""Continual-learning task sequences: permuted spike-encoded digits.

The images are scikit-learn's 8×8 handwritten digits (1,797 samples, 10 classes), which ship
inside scikit-learn (``sklearn.datasets.load_digits`` reads a bundled file; nothing is
downloaded). scikit-learn is imported only when :func:`permuted_digits` is called.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int


class Task(NamedTuple):
    """One task: spike-encoded training and test sets.

    ``train_x``/``test_x``: ``(samples, steps, n_in)`` spikes (0/1, float32);
    ``train_y``/``test_y``: ``(samples,)`` integer labels; ``permutation``: the pixel order
    of this task (``(n_in,)``).
    """

    train_x: Float[Array, "samples steps n_in"]
    train_y: Int[Array, " samples"]
    test_x: Float[Array, "samples steps n_in"]
    test_y: Int[Array, " samples"]
    permutation: Int[Array, " n_in"]


def permuted_digits(
    n_tasks: int = 5,
    *,
    steps: int = 20,
    max_rate: float = 0.5,
    test_fraction: float = 0.3,
    seed: int = 0,
) -> list[Task]:
    r"""Permuted-pixel tasks on scikit-learn's 8×8 digits, rate-encoded as Bernoulli spikes.

    Pixel intensities :math:`I \in [0, 16]` become independent spikes with probability
    :math:`p = \texttt{max\_rate}\, I/16` per step (a Poisson process discretised at one spike
    per step at most), drawn once from ``seed`` so that every run sees the same spike trains.
    Task 0 keeps the original pixel order; task :math:`j > 0` applies its own fixed random
    permutation to the pixels (the same train/test split for every task).

    Arguments:
        n_tasks: number of tasks.
        steps: time steps per sample.
        max_rate: spike probability per step of a saturated pixel, in ``(0, 1]``.
        test_fraction: share of the 1,797 images held out for testing.
        seed: seed of the split, the permutations and the spikes.
    """
    if not (isinstance(n_tasks, int) and n_tasks >= 1):
        raise ValueError(f"permuted_digits: `n_tasks` must be a positive integer; got {n_tasks!r}.")
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"permuted_digits: `steps` must be a positive integer; got {steps!r}.")
    if not 0 < max_rate <= 1:
        raise ValueError(f"permuted_digits: `max_rate` must be in (0, 1]; got {max_rate!r}.")
    if not 0 < test_fraction < 1:
        raise ValueError(
            f"permuted_digits: `test_fraction` must be in (0, 1); got {test_fraction!r}."
        )
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "permuted_digits needs scikit-learn (its bundled 8x8 digits): "
            "`pip install scikit-learn` (or the package's `test` extra)."
        ) from error
    digits = load_digits()
    images = digits.data.astype(np.float32) / 16.0
    labels = digits.target.astype(np.int32)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    n_test = int(round(test_fraction * len(labels)))
    test_idx, train_idx = order[:n_test], order[n_test:]
    n_in = images.shape[1]
    tasks = []
    for j in range(n_tasks):
        perm = np.arange(n_in) if j == 0 else rng.permutation(n_in)
        permuted = images[:, perm]

        def encode(idx, permuted=permuted):
            p = max_rate * permuted[idx]
            return (rng.random((len(idx), steps, n_in)) < p[:, None, :]).astype(np.float32)

        tasks.append(
            Task(
                jnp.asarray(encode(train_idx)),
                jnp.asarray(labels[train_idx]),
                jnp.asarray(encode(test_idx)),
                jnp.asarray(labels[test_idx]),
                jnp.asarray(perm),
            )
        )
    return tasks
