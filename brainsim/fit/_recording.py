"""A differentiable spike recording for losses on spike trains."""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

from .._errors import unknown_name_error
from .._monitors import AbstractMonitor


class SpikeTrain(AbstractMonitor):
    """Per-step spike values of ``population`` (optionally only ``neurons``) as a float array
    ``(n_steps, n)`` that keeps the surrogate gradient.

    :class:`~brainsim.SpikeRaster` and :class:`~brainsim.SpikeList` store spikes compactly as
    bits or indices, which cannot carry gradients; this monitor costs ``n_steps * n`` floats
    and is what spike-train losses (:func:`van_rossum_loss`, :func:`rate_cross_entropy`, ...)
    take. Pass it in ``record=`` and read ``result.recordings[i]``.
    """

    population: str = eqx.field(static=True)
    neurons: tuple[int, ...] | None = eqx.field(static=True, default=None)

    def __init__(self, population: str, neurons: Sequence[int] | None = None):
        if not isinstance(population, str):
            raise TypeError(
                f"SpikeTrain: `population` must be a population name; got {population!r}."
            )
        self.population = population
        self.neurons = None if neurons is None else tuple(int(i) for i in neurons)

    def _check(self, network):
        names = [p.name for p in network.populations]
        if self.population not in names:
            raise unknown_name_error("population", self.population, names, where="SpikeTrain")
        size = network.population(self.population).size
        if self.neurons is not None:
            bad = [i for i in self.neurons if not 0 <= i < size]
            if bad:
                raise ValueError(
                    f"SpikeTrain {self.population!r}: neuron index {bad[0]} out of range "
                    f"0..{size - 1}."
                )
        return size

    def init(self, network, n_steps, dtype):
        self._check(network)
        return None

    def per_step(self, network, state_before, spikes, k):
        s = spikes[self.population]
        return s if self.neurons is None else s[jnp.asarray(self.neurons)]

    def nbytes(self, network, n_steps):
        size = self._check(network)
        n = size if self.neurons is None else len(self.neurons)
        pstate = jax.eval_shape(
            lambda: network.population_state(network.init(jax.random.key(0)), self.population)
        )
        itemsize = jax.tree.leaves(pstate)[0].dtype.itemsize
        return n_steps * n * itemsize

    def describe(self, network, n_steps):
        return (
            f"SpikeTrain {self.population!r}: {self.nbytes(network, n_steps) / 1e6:.2f} MB (float)"
        )


class Trace(AbstractMonitor):
    """State variable ``variable`` of ``population`` (optionally only ``neurons``) at the start
    of every step, ``(n_steps, n)``: the values :class:`~brainsim.StateTrace` records with
    ``every=1``, returned as the scan's per-step output.

    Use it for losses on traces. :class:`~brainsim.StateTrace` writes into a buffer carried
    through the loop, and reverse-mode differentiation of that carry costs time quadratic in
    the number of steps (measured, 100 LIF neurons: 0.04 s at 1,000 steps, 11 s at 8,000);
    here the cost is linear (0.13 s at 8,000).
    """

    population: str = eqx.field(static=True)
    variable: str = eqx.field(static=True, default="v")
    neurons: tuple[int, ...] | None = eqx.field(static=True, default=None)

    def __init__(self, population: str, variable: str = "v", neurons: Sequence[int] | None = None):
        if not isinstance(population, str) or not isinstance(variable, str):
            raise TypeError(
                f"Trace: `population` and `variable` must be names; got {population!r}, "
                f"{variable!r}."
            )
        self.population = population
        self.variable = variable
        self.neurons = None if neurons is None else tuple(int(i) for i in neurons)

    def _as_state_trace(self):
        from .._monitors import StateTrace

        return StateTrace(self.population, self.variable, self.neurons)

    def init(self, network, n_steps, dtype):
        # Validates names and indices exactly as StateTrace does (same messages).
        trace = self._as_state_trace()
        jax.eval_shape(lambda: trace._select(network, network.init(jax.random.key(0), dtype=dtype)))
        return None

    def per_step(self, network, state_before, spikes, k):
        return self._as_state_trace()._select(network, state_before)

    def nbytes(self, network, n_steps):
        return self._as_state_trace().nbytes(network, n_steps)

    def describe(self, network, n_steps):
        return (
            f"Trace {self.population}.{self.variable}: "
            f"{self.nbytes(network, n_steps) / 1e6:.2f} MB"
        )
