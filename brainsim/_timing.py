r"""Timing conventions within a step: Brian2's (the default) or NEST's.

Step :math:`k` advances the network from :math:`t_k = k\,\Delta t` to :math:`t_{k+1}`. Brian2
and NEST agree on the *dynamics* of a spike: if a neuron crosses threshold during step
:math:`k` and its synapse has a delay of :math:`D = d/\Delta t` steps, the target first
integrates the input during step :math:`k + D + 1`. They disagree on how they *label* it and on
a few choices around it. Measured with Brian2 2.9 and NEST 3.10
(``benchmarks/peers/brian2_timing.py``, ``nest_timing.py``; dt = 0.1 ms):

=====================================================  ====================  ====================
                                                       Brian2 (default)      NEST
=====================================================  ====================  ====================
a spike of step :math:`k` is recorded at               :math:`t_k`           :math:`t_{k+1}`
first step a delay-:math:`D` spike acts in             :math:`k + D + 1`     :math:`k + D + 1`
  (so its effect begins at recorded time + …)          :math:`d + \Delta t`  :math:`d`
shortest delay                                         0                     :math:`\Delta t`
refractory :math:`t_{ref}` = :math:`R` steps: held     :math:`R - 1` steps   :math:`R` steps
  (shortest interval between spikes)                   :math:`R` steps       :math:`R + 1` steps
  :math:`t_{ref}/\Delta t` not whole: :math:`R` is     rounded down          rounded up
a spike generator's spike at :math:`\tau` is emitted   step :math:`\tau/\Delta t`  step :math:`\tau/\Delta t - 1`
a step current switching at :math:`T` first acts in    step :math:`T/\Delta t` step :math:`T/\Delta t + 1`
  (:math:`t \ge T` or :math:`t > T`)
a plastic synapse transmits the weight                 before its update     after its update
STDP on a synapse with delay :math:`d` pairs           :math:`\Delta t - d`  :math:`\Delta t + d`
=====================================================  ====================  ====================

(:math:`\Delta t = t_{post} - t_{pre}` of the recorded times.) brainsim follows every row but
the last: its plasticity rules pair :math:`\Delta t` whatever the delay, which is both
simulators' interval for a zero delay.

Both rules for refractoriness are one rule: the membrane is held at reset while a step starts
less than :math:`t_{ref}` after the recorded spike time, which is one step later in NEST.
NEST's step current is a device connected with the shortest delay (one step). Brian2's order
of a plastic synapse is that of its STDP example (``on_pre: g += w; ...; w = ...``); NEST's
``stdp_synapse`` updates the weight, then sends it.

brainsim allows zero delays under both conventions (NEST itself refuses delays below one
step): a zero delay acts in the next step, the earliest a spike can act.
"""

from __future__ import annotations

import copy

import equinox as eqx
import jax.numpy as jnp


class Timing(eqx.Module):
    r"""Which reference simulator's conventions a network follows (module table above).

    Build one with :meth:`brian2` (the default of every :class:`~brainsim.Network`) or
    :meth:`nest`; the two choices are independent, so e.g. ``Timing.brian2(
    transmit_after_update=True)`` keeps Brian2's spike times with NEST's plastic order.

    Arguments:
        spike_at_step_end: stamp a spike of step :math:`k` at :math:`t_{k+1}` (NEST) instead
            of :math:`t_k` (Brian2). This also lengthens the refractory clamp by one step,
            emits spike generators' spikes one step earlier and delays step currents by one
            step, as in NEST (module table).
        transmit_after_update: a plastic synapse transmits the weight after this spike's own
            plasticity update (NEST's ``stdp_synapse``) instead of before it (Brian2).

    Example:
        >>> net = bs.Network(pops, projs, dt=0.1, timing=bs.Timing.nest())
    """

    spike_at_step_end: bool = eqx.field(static=True, default=False)
    transmit_after_update: bool = eqx.field(static=True, default=False)

    def __init__(self, *, spike_at_step_end: bool = False, transmit_after_update: bool = False):
        for name, value in (
            ("spike_at_step_end", spike_at_step_end),
            ("transmit_after_update", transmit_after_update),
        ):
            if not isinstance(value, bool):
                raise TypeError(f"Timing: `{name}` must be True or False; got {value!r}.")
        self.spike_at_step_end = spike_at_step_end
        self.transmit_after_update = transmit_after_update

    @classmethod
    def brian2(cls, *, transmit_after_update: bool = False) -> Timing:
        """Brian2's conventions (the default)."""
        return cls(spike_at_step_end=False, transmit_after_update=transmit_after_update)

    @classmethod
    def nest(cls, *, transmit_after_update: bool = True) -> Timing:
        """NEST's conventions."""
        return cls(spike_at_step_end=True, transmit_after_update=transmit_after_update)

    @property
    def stamp_steps(self) -> int:
        """Steps from the start of the step that emits a spike to its recorded time (0 or 1)."""
        return int(self.spike_at_step_end)

    def spike_time(self, step, dt: float):
        """Recorded time (ms) of a spike emitted by step ``step``."""
        return (step + self.stamp_steps) * dt

    def refractory_hold(self, t_ref, dt: float):
        r"""Steps after the spike step during which the membrane is held at reset.

        :math:`R` = ``t_ref / dt`` in whole steps, rounded as each simulator does (Brian2's
        ``timestep`` rounds down with a tolerance of 1e-3 step, NEST's ``Time`` up); held
        :math:`\max(R - 1, 0)` steps (Brian2) or :math:`R` steps (NEST).
        """
        ratio = jnp.asarray(t_ref) / dt
        if self.spike_at_step_end:
            return jnp.maximum(jnp.ceil(ratio - 1e-3), 0).astype(jnp.int32)
        return jnp.maximum(jnp.floor(ratio + 1e-3) - 1, 0).astype(jnp.int32)

    def describe(self) -> str:
        """One line for summaries: ``"Brian2"``, ``"NEST"`` or the mixed choice."""
        base = "NEST" if self.spike_at_step_end else "Brian2"
        if self.transmit_after_update != self.spike_at_step_end:
            order = "after" if self.transmit_after_update else "before"
            return f"{base}, plastic weights transmitted {order} their update"
        return base


BRIAN2 = Timing.brian2()
"""The default conventions."""


def with_static_field(module: eqx.Module, name: str, value) -> eqx.Module:
    """A copy of ``module`` with the static field ``name`` set to ``value``.

    ``eqx.tree_at`` replaces leaves and subtrees, not static fields, and the models' own
    ``__init__`` takes their parameters, not their fields, so ``dataclasses.replace`` does not
    apply either.
    """
    new = copy.copy(module)
    object.__setattr__(new, name, value)
    return new


def follow_timing(module: eqx.Module, timing: Timing) -> eqx.Module:
    """``module`` with its static ``timing`` field set to ``timing``; a module without one
    (its step does not depend on the conventions) is returned unchanged."""
    import dataclasses

    if any(f.name == "timing" for f in dataclasses.fields(module)):
        return with_static_field(module, "timing", timing)
    return module


def check_timing(timing, owner: str) -> Timing:
    if not isinstance(timing, Timing):
        raise TypeError(
            f"{owner}: `timing` must be a brainsim.Timing (Timing.brian2() or Timing.nest()); "
            f"got {type(timing).__name__}."
        )
    return timing
