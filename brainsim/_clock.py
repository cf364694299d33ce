r"""Exact time over runs of any length under JAX's default 32-bit integers.

A network state counts steps in two int32 values: ``step`` in :math:`[0, 2^{30})` and ``epoch``,
the number of times ``step`` has rolled over, so the absolute step is
:math:`\text{epoch}\cdot 2^{30} + \text{step}` (an int32 alone wraps after :math:`2^{31}` steps,
59.6 h at dt = 0.1 ms; the pair lasts :math:`2^{61}` steps). Everything that needs the step
derives it from the pair:

* a delay ring of ``D`` rows reads row (absolute step mod ``D``) — :func:`ring_cursor`;
* each step's random key is the Threefry cipher of the counter ``(epoch, step)`` under the
  run's key — :func:`step_key`; in the first epoch that is ``jax.random.fold_in(key, step)``
  (so the first :math:`2^{30}` steps draw exactly what they drew before epochs existed);
* inputs with a schedule (step currents, timed arrays, spike generators and arrays) see the
  absolute step saturated at :math:`2^{31} - 1` — :func:`input_step`: a schedule is stored as
  int32 steps, so every schedule has ended by then, and building one that reaches further is
  an error (:func:`check_schedule_steps`).

Times are computed on the host from the integers (:func:`absolute_step`), in float64, so a
spike after 100 h is still stamped at its exact step.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ._random import fold_in

EPOCH_STEPS = 2**30
"""Steps per epoch: ``step`` stays below it, so ``step + 2**30`` still fits an int32."""
MAX_INPUT_STEP = 2**31 - 1
"""The largest step an input schedule can name (int32)."""


def advance(step, epoch):
    """``(step, epoch)`` one step later."""
    step = step + 1
    roll = step >= EPOCH_STEPS
    return jnp.where(roll, 0, step).astype(jnp.int32), (epoch + roll).astype(jnp.int32)


def absolute_step(step, epoch) -> np.ndarray:
    """The absolute step as a host int64 (NumPy; works on batched arrays)."""
    return np.asarray(epoch, np.int64) * EPOCH_STEPS + np.asarray(step, np.int64)


def split_step(absolute: int) -> tuple[int, int]:
    """``(step, epoch)`` of an absolute step (host integers)."""
    if absolute < 0:
        raise ValueError(f"a step index must be >= 0; got {absolute}.")
    return absolute % EPOCH_STEPS, absolute // EPOCH_STEPS


def ring_cursor(step, epoch, n_rows: int):
    """The absolute step modulo ``n_rows`` (a ring's row for this step), in int32 without
    overflow: :math:`((\\text{epoch} \\bmod D)(2^{30} \\bmod D) + \\text{step}) \\bmod D`."""
    if n_rows == 1:
        return jnp.zeros((), jnp.int32)
    per_epoch = EPOCH_STEPS % n_rows
    if per_epoch == 0:
        return step % n_rows
    # (epoch mod D) * (2**30 mod D) < D**2 fits an unsigned 32-bit integer for D <= 2**16
    # rows; longer rings multiply by doubling (31 static steps of additions mod D).
    a = (epoch % n_rows).astype(jnp.uint32)
    if n_rows <= 2**16:
        wrapped = (a * jnp.uint32(per_epoch)) % jnp.uint32(n_rows)
    else:
        wrapped, addend = jnp.uint32(0), a
        for bit in range(per_epoch.bit_length()):
            if (per_epoch >> bit) & 1:
                wrapped = (wrapped + addend) % jnp.uint32(n_rows)
            addend = (addend * 2) % jnp.uint32(n_rows)
    return ((wrapped.astype(jnp.int32) + step % n_rows) % n_rows).astype(jnp.int32)


def step_key(key, step, epoch):
    """The random key of a step: ``jax.random.fold_in(key, step)`` in the first epoch, and the
    cipher of the counter ``(epoch, step)`` after it (no two steps of a run share a key). One
    cipher per step (:func:`brainsim._random.fold_in` with ``high=epoch``), not a fold with
    ``step`` and another with ``epoch``: each is ~150 integer operations for XLA to compile.
    Keys of other PRNG implementations are folded with ``step``, then with ``epoch`` after
    the first rollover."""
    return fold_in(key, step, high=epoch)


def input_step(step, epoch):
    """The absolute step for inputs, saturated at :data:`MAX_INPUT_STEP` (int32)."""
    return jnp.where(
        epoch == 0, step, jnp.where(epoch == 1, step + EPOCH_STEPS, MAX_INPUT_STEP)
    ).astype(jnp.int32)


def check_schedule_steps(steps, *, owner: str, what: str, dt: float) -> None:
    """Raise if a schedule names a step an int32 cannot hold (beyond 2**31 - 1 steps)."""
    steps = np.asarray(steps)
    if steps.size and np.max(steps) > MAX_INPUT_STEP:
        worst = float(np.max(steps)) * dt
        raise ValueError(
            f"{owner}: {what} at {worst:g} ms is beyond the last step an input schedule can "
            f"name ({MAX_INPUT_STEP} steps = {MAX_INPUT_STEP * dt / 3.6e6:.1f} h at dt = {dt} "
            "ms). Keep schedules within that time (the network itself can run longer), or use "
            "a larger dt."
        )
