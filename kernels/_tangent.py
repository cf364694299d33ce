r"""Differentiate an event-driven computation as its loop-free, all-neuron form.

An event-driven update visits only the neurons that spiked, in ``ceil(count / size)`` windows:
a loop whose trip count depends on the data. JAX differentiates such a loop in forward mode
but cannot transpose it, so reverse mode (``jax.grad``) fails on it. The same update written
as one window of every neuron (no loop; non-spiking neurons masked) computes the same value
and differentiates in both modes, at the cost of a pass over every synapse.

:func:`differentiated_as` runs the first and differentiates the second:

.. math:: \mathrm{out} = p(x),\qquad \dot{\mathrm{out}} = \partial q(x)\,\dot x

with :math:`p` the event-driven primal and :math:`q` the all-neuron form (``p(x) == q(x)``).
Forward values are those of :math:`p`, bit for bit; gradients are those of :math:`q`, i.e. of
the dense computation. Arrays the two functions close over (traces, rule parameters, spikes,
indices) are differentiated too: both are traced to jaxprs whose constants become explicit
arguments, because a ``custom_jvp`` can neither see the tangents of values it closes over
nor keep traced values of an enclosing ``jit`` or ``scan`` in its rules.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.extend


def differentiated_as(primal: Callable, tangent: Callable, x):
    """``primal(x)``, with the derivatives of ``tangent(x)`` (module docstring).

    Arguments:
        primal: the event-driven function of the pytree ``x`` (any loop inside).
        tangent: a loop-free function of ``x`` that returns the same value.
        x: the argument (a pytree of arrays).
    """
    primal_c, primal_consts = _explicit(primal, x)
    tangent_c, tangent_consts = _explicit(tangent, x)
    return _run(primal_c, tangent_c, len(primal_consts), x, *primal_consts, *tangent_consts)


def _explicit(fn, x):
    """``(run, consts)`` with ``run(x, *consts) == fn(x)`` and nothing traced closed over
    (:func:`jax.closure_convert` keeps integer tracers closed over, which the rules of a
    ``custom_jvp`` inside a ``jit`` cannot hold)."""
    closed, shape = jax.make_jaxpr(fn, return_shape=True)(x)
    jaxpr, out_tree = closed.jaxpr, jax.tree.structure(shape)

    def run(x, *consts):
        fun = jax.extend.core.jaxpr_as_fun(jax.extend.core.ClosedJaxpr(jaxpr, list(consts)))
        return jax.tree.unflatten(out_tree, fun(*jax.tree.leaves(x)))

    return run, closed.consts


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _run(primal, tangent, n_primal, x, *consts):
    return primal(x, *consts[:n_primal])


@_run.defjvp
def _run_jvp(primal, tangent, n_primal, primals, tangents):
    x, *consts = primals
    x_dot, *consts_dot = tangents
    out = primal(x, *consts[:n_primal])
    # The primal's own closed-over values do not enter the tangent: the tangent form closes
    # over the same arrays and carries their tangents.
    _, out_dot = jax.jvp(tangent, (x, *consts[n_primal:]), (x_dot, *consts_dot[n_primal:]))
    return out, out_dot
