r"""Random keys for one device's block of a partitioned neuron group: every draw a neuron model
makes is the device's rows of the draw it makes on one device.

With ``jax_threefry_partitionable`` (on by default in the jax versions brainsim supports)
the bits of element :math:`i` (flat, row-major) of a threefry draw are a function of the key
and :math:`i` only, :math:`\mathrm{threefry2x32}(k, (\lfloor i/2^{32}\rfloor, i \bmod 2^{32}))`,
whatever the draw's shape; ``split`` makes its keys the same way. A device holding neurons
:math:`o \ldots o + n_\text{loc} - 1` of a group of :math:`N` can therefore compute its share
of a draw of shape ``(N, ...)`` alone, by hashing the global counters of its rows: no extra
work, no communication.

:func:`block_key` gives the model such a key: a JAX typed key of a PRNG implementation
(:func:`jax.extend.random.define_prng_impl`) whose data is the threefry key and the block's
first neuron :math:`o`. Its operations:

* ``random_bits(shape)`` (every ``jax.random`` sampler goes through it): if an axis of
  ``shape`` has length :math:`n_\text{loc}` — the first such axis is *the neuron axis* —
  the bits are those of the global elements of shape ``shape`` with :math:`N` on that axis,
  at indices :math:`o + j` along it. A shape without such an axis (a scalar, a fixed-size
  vector) is not a draw over the neurons: every device draws what one device draws.
* ``split(shape)`` the same, for keys: ``split(key, n_loc)`` gives the block's keys of the
  single-device ``split(key, N)``. A 1-D split into 2 or 3 keys is never over the neurons
  (``split(key)`` and ``split(key, 3)`` are what ``jax.random``'s own samplers and most models
  use), so blocks of 2 or 3 neurons are not mistaken for them.
* ``fold_in`` folds the threefry key. Every derived key keeps :math:`o`.

Which ``jax.random`` draws match the single-device draws bit for bit (checked in
``tests/test_block_random.py``, and in a wider survey when this was written):

* every sampler that maps each element's bits to its value: ``bits`` (8 to 64 bits),
  ``uniform``, ``normal``, ``truncated_normal``, ``bernoulli``, ``randint``, ``choice`` with
  replacement, ``exponential``, ``gumbel``, ``laplace``, ``logistic``, ``cauchy``,
  ``rademacher``, ``maxwell``, ``double_sided_maxwell``, ``pareto``, ``rayleigh``,
  ``weibull_min``, ``lognormal``, ``geometric``, ``triangular``, ``wald``, ``categorical``
  and ``multinomial`` with one row per neuron; with the neurons on any one axis of the draw;
* after any chain of ``split`` and ``fold_in``, and with one key per neuron
  (``vmap`` over ``split(key, n)``) in blocks of more than 3 neurons;
* the gamma family drawn with shape ``(n,)`` (``gamma``, ``loggamma``, ``beta``,
  ``chisquare``, ``t``, ``f``, ``generalized_normal``), which splits one key per element and
  runs its rejection loop per key, in blocks of more than 3 neurons;
* ``binomial`` where it uses its inversion loop (:math:`n p < 10`), which leaves finished
  elements alone.

They differ where a draw is not element-wise over the neurons: ``permutation``, ``choice``
without replacement, ``categorical`` across neurons, ``orthogonal``; where gamma is drawn
with more than one value per neuron (``gamma(key, a, (n, k))``, ``dirichlet``, ``ball``:
gamma splits a key per element of the flattened draw); and in ``binomial``'s rejection loop
(:math:`n p \ge 10`), which overwrites an accepted value while another element of the draw
still rejects, so a value depends on the other neurons of the block. ``poisson`` accepts
jax's own threefry keys only: a model that calls it (:func:`step_block` catches the refusal)
draws per device, as below.

A size that happens to equal :math:`n_\text{loc}` is taken as the neuron axis: a model
drawing a fixed-size vector of exactly the block's length (other than a split into 2 or 3)
gets the block's rows of it, and a draw with the neurons on two axes (``(n, n)``) is cut on
the first only. The neurons of the padded last block beyond :math:`N` draw counters past the
end: values no one uses.

Where the single-device draws cannot be reproduced — ``jax_threefry_partitionable`` turned
off (threefry then lays a draw's counters out by its total size), a key of another PRNG
implementation (``rbg``, ``unsafe_rbg``), a model calling ``poisson`` — each device draws
with its own key, ``fold_in(key, device index)``: the same statistics as one device, not the
same draws, with a :class:`~brainsim.BrainsimWarning` when the draw is traced.
"""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.random import define_prng_impl, threefry2x32_p, threefry_prng_impl

from ._errors import BrainsimWarning

_NOT_NEURON_SPLITS = ((2,), (3,))
_TAG = "fry_block"


def step_block(model, state, drive, t, dt, key, block):
    """``model.step`` of this device's block of a partitioned group (inside ``shard_map``),
    with the key of :func:`block_key`.

    ``jax.random.poisson`` accepts only jax's own threefry keys; a model that calls it (the
    trace raises) is traced again with the per-device key, and warned about.
    """
    try:
        return model.step(state, drive, t, dt, block_key(key, block))
    except NotImplementedError as e:
        if _TAG not in str(e):
            raise
        _warn_per_device(f"its model calls a sampler that accepts only threefry keys ({e})")
        return model.step(state, drive, t, dt, jax.random.fold_in(key, lax.axis_index(block.axis)))


def block_key(key, block):
    """The key of this device's block of a partitioned group (inside ``shard_map``).

    **Arguments:** ``key``, the group's key (typed or raw ``uint32[2]``); ``block``, the
    group's :class:`~brainsim._plan.DeviceBlock` (mesh axis, neurons per device, neurons).
    """
    device = lax.axis_index(block.axis)
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    impl = jax.random.key_impl(key) if typed else threefry_prng_impl.name
    if impl != threefry_prng_impl.name:
        _warn_per_device(f"its key is a {impl} key; use a threefry key (jax.random.key)")
        return jax.random.fold_in(key, device)
    data = jax.random.key_data(key) if typed else key
    offset = (device * block.n_local).astype(jnp.uint32)
    data = jnp.concatenate([data, offset[None]], axis=-1)
    return jax.random.wrap_key_data(data, impl=_impl(block.n_local, block.n_global))


def _warn_per_device(why: str):
    warnings.warn(
        f"a partitioned neuron group draws per device ({why}): the group's key is folded with "
        "the device index, which gives the statistics of the single-device run, not its draws.",
        BrainsimWarning,
        stacklevel=3,
    )


@functools.cache
def _impl(n_local: int, n_global: int):
    """One implementation per block geometry (cached: the key type is part of the compiled
    program's signature)."""
    return define_prng_impl(
        key_shape=(3,),
        seed=_no_seed,
        split=functools.partial(_split, n_local=n_local, n_global=n_global),
        random_bits=functools.partial(_random_bits, n_local=n_local, n_global=n_global),
        fold_in=_fold_in,
        name=f"threefry2x32 block of {n_local} of {n_global}",
        tag=f"{_TAG}_{n_local}_{n_global}",
    )


def _no_seed(seed):
    raise TypeError("a block key is made by brainsim.step from the group's key; it has no seed.")


def _fold_in(key, data):
    return jnp.concatenate([threefry_prng_impl.fold_in(key[:2], data), key[2:]])


def _split(key, shape, *, n_local, n_global):
    threefry, offset = key[:2], key[2]
    axis = _neuron_axis(shape, n_local)
    if axis is None or shape in _NOT_NEURON_SPLITS or not _exact():
        keys = threefry_prng_impl.split(threefry, shape)
    else:
        hi, lo = _hash(threefry, _counters(shape, axis, offset, n_global))
        keys = jnp.stack([hi, lo], axis=-1)
    return jnp.concatenate([keys, jnp.broadcast_to(offset, (*shape, 1))], axis=-1)


def _random_bits(key, bit_width, shape, *, n_local, n_global):
    threefry, offset = key[:2], key[2]
    axis = _neuron_axis(shape, n_local)
    if not _exact():
        _warn_per_device(
            "jax_threefry_partitionable is off; turn it on for the single-device draws"
        )
        device = offset // jnp.uint32(n_local)
        return threefry_prng_impl.random_bits(
            threefry_prng_impl.fold_in(threefry, device), bit_width, shape
        )
    if axis is None:
        return threefry_prng_impl.random_bits(threefry, bit_width, shape)
    hi, lo = _hash(threefry, _counters(shape, axis, offset, n_global))
    # How threefry_partitionable turns the two 32-bit words of an element into its bits.
    dtype = np.dtype(f"uint{bit_width}")
    if bit_width == 64:
        return (hi.astype(dtype) << np.uint64(32)) | lo.astype(dtype)
    return (hi ^ lo).astype(dtype)


def _exact() -> bool:
    return bool(jax.config.jax_threefry_partitionable)


def _neuron_axis(shape, n_local: int):
    return next((i for i, s in enumerate(shape) if s == n_local), None)


def _counters(shape, axis: int, offset, n_global: int):
    """Flat row-major index of every local element in the global array (``n_global`` on
    ``axis``, this block's rows at ``offset + j``), as a ``uint32`` array of ``shape``."""
    full = (*shape[:axis], n_global, *shape[axis + 1 :])
    if math.prod(full) > 2**32:
        raise NotImplementedError(
            f"a partitioned neuron group draws {full} random values in one call (more than "
            "2**32): split the draw into several calls."
        )
    strides = np.cumprod((1, *full[::-1]))[-2::-1]
    index = jnp.zeros(shape, jnp.uint32)
    for i, stride in enumerate(strides):
        position = lax.broadcasted_iota(jnp.uint32, shape, i)
        if i == axis:
            position = position + offset
        # Rows past n_global (the padded last block) wrap modulo 2**32: values nobody uses.
        index = index + position * jnp.uint32(stride)
    return index


def _hash(threefry, counters):
    """threefry2x32 of the 64-bit counters ``(0, counters)``: the two output words."""
    return threefry2x32_p.bind(threefry[0], threefry[1], jnp.zeros_like(counters), counters)
