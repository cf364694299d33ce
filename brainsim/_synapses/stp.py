r"""Tsodyks–Markram short-term plasticity (depression and facilitation).

State per presynaptic neuron: utilisation :math:`u` (decays to 0 with :math:`\tau_f`) and
available resources :math:`x` (recover to 1 with :math:`\tau_d`). At a presynaptic spike

.. math:: u \leftarrow u + U(1-u), \qquad r = u\,x, \qquad x \leftarrow x - r,

and the spike is delivered with efficacy :math:`r` (multiplying the synaptic weight). This is
the form of NEST's ``tsodyks2_synapse``; for a regular train with interval :math:`h` the
efficacy converges to :math:`u^* x^*` with

.. math::
    u^* = \frac{U}{1 - (1-U)e^{-h/\tau_f}}, \qquad
    x^* = \frac{1 - e^{-h/\tau_d}}{1 - (1 - u^*) e^{-h/\tau_d}}.

Because the state depends only on presynaptic spike times it is kept per presynaptic neuron,
so event-driven propagation simply carries the efficacy as the spike value.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._errors import as_parameter, check_that


class TsodyksMarkramState(NamedTuple):
    u: Float[Array, " n_pre"]
    x: Float[Array, " n_pre"]


class TsodyksMarkram(eqx.Module):
    """Short-term plasticity; ``U`` in (0, 1], ``tau_rec`` and ``tau_fac`` in ms."""

    U: Float[Array, "*n"]
    tau_rec: Float[Array, "*n"]
    tau_fac: Float[Array, "*n"]

    def __init__(self, U: ArrayLike = 0.5, tau_rec: ArrayLike = 800.0, tau_fac: ArrayLike = 1e-3):
        owner = "TsodyksMarkram"
        self.U = as_parameter(U, "U", owner=owner)
        self.tau_rec = as_parameter(tau_rec, "tau_rec", owner=owner, unit="ms", positive=True)
        self.tau_fac = as_parameter(tau_fac, "tau_fac", owner=owner, unit="ms", positive=True)
        check_that("U", self.U, lambda u: (u > 0) & (u <= 1), "lie in (0, 1]", owner=owner,
                   fix="Pass the release probability as a fraction, e.g. U=0.5.")  # fmt: skip

    def init(self, n: int, dtype) -> TsodyksMarkramState:
        return TsodyksMarkramState(jnp.zeros((n,), dtype), jnp.ones((n,), dtype))

    def step(self, state: TsodyksMarkramState, spikes, dt):
        """Relax over the step, then apply the spikes; return ``(state, efficacy * spikes)``."""
        u = state.u * jnp.exp(-dt / self.tau_fac)
        x = 1.0 + (state.x - 1.0) * jnp.exp(-dt / self.tau_rec)
        u_spike = u + self.U * (1.0 - u)
        released = u_spike * x
        u = jnp.where(spikes != 0, u_spike, u)
        x = jnp.where(spikes != 0, x - released, x)
        dtype = state.u.dtype
        return TsodyksMarkramState(u.astype(dtype), x.astype(dtype)), (spikes * released).astype(
            spikes.dtype
        )

    def steady_state_efficacy(self, interval):
        """Closed-form efficacy :math:`u^* x^*` for a regular train with ``interval`` ms."""
        ef = jnp.exp(-interval / self.tau_fac)
        ed = jnp.exp(-interval / self.tau_rec)
        u = self.U / (1.0 - (1.0 - self.U) * ef)
        x = (1.0 - ed) / (1.0 - (1.0 - u) * ed)
        return u * x
