r"""Online learning with eligibility traces (e-prop, Bellec et al. 2020): gradients in one
forward pass, with memory independent of the number of steps.

The model is :class:`SpikingRNN`: ``n_in`` input channels → ``n`` brainsim neurons (any
:class:`~brainsim.LIF`, optionally recurrent) → a leaky readout
:math:`y_k = \kappa\, y_{k-1} + W_{out}^\top z_k + b`, :math:`\kappa = e^{-\Delta t/\tau_{out}}`.
The hidden layer is a :class:`~brainsim.Network` (:meth:`SpikingRNN.network`) whose membrane
current during step :math:`k` (pA, held over the step) is

.. math::
    I_k = x_k W_{in} + z_{k-1} W_{rec}

(the input as an injected current, the recurrence as a zero-delay projection onto a
:class:`~brainsim.PulseSynapse`). The forward pass, and so BPTT, is :func:`brainsim.simulate`
of that network; e-prop advances the same network with :func:`brainsim.step`, the one loop body
of every driver. The task loss is the mean over steps of a per-step loss
:math:`\ell(y_k, \hat y_k)`.

**e-prop.** Each neuron's own dynamics are followed forward in time: with
:math:`a_k = \partial v_{k+1}/\partial v_k`, :math:`b_k = \partial v_{k+1}/\partial I_k` and the
pseudo-derivatives :math:`\psi^v_k, \psi^I_k` of the spike :math:`z_k` (all per neuron,
obtained by forward-mode differentiation of the network's :func:`brainsim.step`, so reset,
refractoriness, surrogate and the delivery of the input are exactly the simulated ones), the
eligibility trace of synapse :math:`i \to j` with presynaptic input :math:`x_i` is

.. math::
    \epsilon_{k+1} = a_k\,\epsilon_k + b_k\,x_{i,k}, \qquad
    e_k = \psi^v_k\,\epsilon_k + \psi^I_k\,x_{i,k}, \qquad \bar e_k = \kappa\,\bar e_{k-1} + e_k

and the gradient is :math:`\sum_k L_{j,k}\,\bar e_{ij,k}` with the learning signal
:math:`L_{j,k} = \sum_c W_{out,jc}\,\partial\ell_k/\partial y_{c,k}` (symmetric feedback). Memory
is a few ``n_in × n`` (and ``n × n``) arrays whatever the number of steps.

**Exactness.** Without recurrence the result *equals* the BPTT gradient (same surrogate):
each hidden neuron influences the loss only through the readout, whose leak the filtered
trace :math:`\bar e` accounts for exactly. With recurrence e-prop drops the paths through
other neurons' later spikes (the defining approximation of e-prop); the tests measure how
closely it follows BPTT there.

Use :func:`eprop_loss` like any loss: its value is the task loss and ``jax.grad`` of it (and
so :func:`~brainsim.fit.fit`) returns the e-prop gradient, computed in the forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float

from .._errors import check_finite, check_positive, shown
from .._inputs import ConstantCurrent, TimedArray
from .._network import Network, Population, Projection, Receptor
from .._neurons.lif import LIF
from .._propagation import Dense, DenseConnectivity
from .._simulate import is_concrete_tree, simulate
from .._step import step
from .._surrogate import FastSigmoid
from .._synapses.kinetics import PulseSynapse
from .._synapses.outputs import CurrentBased
from ._recording import SpikeTrain

HIDDEN = "hidden"
"""The hidden population of :meth:`SpikingRNN.network`."""
RECEPTOR = "rec"
"""Its receptor for the recurrent spikes (:class:`~brainsim.PulseSynapse`, current-based)."""
RECURRENT = "recurrent"
"""The recurrent projection (hidden → hidden, Dense weights ``w_rec``, delay 0)."""


class SpikingRNN(eqx.Module):
    r"""Input weights → a population of LIF neurons (optional recurrence) → leaky readout.

    Arguments:
        n_in, n_hidden, n_out: sizes.
        key: PRNG key for the initial weights.
        recurrent: add recurrent weights ``w_rec`` (delay one step, no self-connections).
        neuron: the hidden :class:`~brainsim.LIF` (default: a dimensionless LIF with
            ``C_m`` = 1, ``tau_m`` = 20 ms, rest and reset 0, threshold 1, no refractoriness,
            fast-sigmoid surrogate of scale 10 per threshold unit, detached reset).
        tau_out: readout time constant (ms).
        input_gain, recurrent_gain: initial weights are normal with standard deviation
            ``gain / sqrt(fan_in)``; output weights ``1 / sqrt(n_hidden)``.
        dtype: dtype of the weights (default JAX's float).

    Weights are currents (pA with the neuron's units): a presynaptic spike injects ``w`` for
    one step, :math:`I_k = x_k W_{in} + z_{k-1} W_{rec}`. ``model(inputs, dt)`` runs a
    ``(T, n_in)`` input and returns hidden spikes ``(T, n_hidden)`` and the readout
    ``(T, n_out)``; the hidden layer is the :class:`~brainsim.Network` of :meth:`network`,
    run by :func:`brainsim.simulate`.
    """

    neuron: LIF
    w_in: Float[Array, "n_in n"]
    w_rec: Float[Array, "n n"] | None
    w_out: Float[Array, "n n_out"]
    b_out: Float[Array, " n_out"]
    tau_out: Float[Array, ""]

    def __init__(
        self,
        n_in: int,
        n_hidden: int,
        n_out: int,
        *,
        key,
        recurrent: bool = False,
        neuron: LIF | None = None,
        tau_out: float = 20.0,
        input_gain: float = 1.0,
        recurrent_gain: float = 0.5,
        dtype=None,
    ):
        for name, value in (("n_in", n_in), ("n_hidden", n_hidden), ("n_out", n_out)):
            if not (isinstance(value, int | np.integer) and value >= 1):
                raise ValueError(f"SpikingRNN: `{name}` must be a positive integer; got {value!r}.")
        if neuron is None:
            neuron = LIF(
                C_m=1.0, tau_m=20.0, E_L=0.0, V_th=1.0, V_reset=0.0, t_ref=0.0,
                surrogate=FastSigmoid(10.0),
            )
        if not isinstance(neuron, LIF):
            raise TypeError(f"SpikingRNN: `neuron` must be a brainsim.LIF; got {type(neuron).__name__}.")
        if tau_out <= 0:
            raise ValueError(f"SpikingRNN: `tau_out` must be positive (ms); got {tau_out!r}.")
        dtype = jnp.zeros((), dtype).dtype if dtype is not None else jnp.zeros(()).dtype
        k_in, k_rec, k_out = jax.random.split(key, 3)
        self.neuron = neuron
        self.w_in = input_gain / math.sqrt(n_in) * jax.random.normal(k_in, (n_in, n_hidden), dtype)
        if recurrent:
            w = recurrent_gain / math.sqrt(n_hidden) * jax.random.normal(
                k_rec, (n_hidden, n_hidden), dtype
            )
            self.w_rec = w * (1.0 - jnp.eye(n_hidden, dtype=dtype))
        else:
            self.w_rec = None
        self.w_out = jax.random.normal(k_out, (n_hidden, n_out), dtype) / math.sqrt(n_hidden)
        self.b_out = jnp.zeros((n_out,), dtype)
        self.tau_out = jnp.asarray(tau_out, dtype)

    @property
    def n_hidden(self) -> int:
        return self.w_in.shape[1]

    def network(self, inputs: Float[Array, "T n_in"], dt: float) -> Network:
        r"""The hidden layer driven by ``inputs`` as a :class:`~brainsim.Network` of step
        ``dt`` (ms).

        One population ``"hidden"`` (``n_hidden`` of the model's ``neuron``) whose injected
        current in step :math:`k` is :math:`x_k W_{in}` (pA), a :class:`~brainsim.TimedArray`
        with one row per step (all rows one matrix product); with ``recurrent``, the projection
        ``"recurrent"`` (hidden → hidden, :class:`~brainsim.Dense` weights ``w_rec``, delay 0)
        onto the receptor ``"rec"`` (:class:`~brainsim.PulseSynapse`,
        :class:`~brainsim.CurrentBased`), which adds :math:`z_{k-1} W_{rec}` to the current of
        step :math:`k`. The network follows the neuron's :class:`~brainsim.Timing`.

        ``bs.simulate(model.network(x, dt), n_steps=len(x), key=key,
        record=(bs.fit.SpikeTrain("hidden"),))`` records the spikes ``model(x, dt)`` returns.
        """
        inputs = _check_inputs(self, inputs, "SpikingRNN.network")
        dt = _check_dt(dt, "SpikingRNN.network")
        owner = "SpikingRNN.network"
        check_finite("inputs", inputs, owner=owner)  # (concrete values only)
        drive = inputs.astype(self.w_in.dtype) @ self.w_in
        check_finite("inputs @ w_in", drive, owner=owner, unit="pA")
        # Row k must act in step k. NEST's conventions delay an injected TimedArray by one
        # step (bs.Timing), so it then starts one step early.
        t_start = -self.neuron.timing.stamp_steps * dt
        return self._network(TimedArray(drive, dt, t_start), dt)

    def _network(self, current, dt: float) -> Network:
        """The hidden layer with the injected input current ``current``."""
        n = self.n_hidden
        receptors, projections = {}, []
        if self.w_rec is not None:
            receptors[RECEPTOR] = Receptor(PulseSynapse(), CurrentBased())
            # Built from the weights as they are (arrays of a gradient or a batch stay traced,
            # which an edge list, built on the host, could not): lag 1 step, delay 0.
            conn = DenseConnectivity(self.w_rec, None, (1,), n, n, 1, n * n)
            projections.append(
                Projection(HIDDEN, HIDDEN, conn, receptor=RECEPTOR, layout=Dense(), name=RECURRENT)
            )
        hidden = Population(HIDDEN, n, self.neuron, receptors=receptors, currents=(current,))
        return Network([hidden], projections, dt=dt, timing=self.neuron.timing)

    def __call__(self, inputs: Float[Array, "T n_in"], dt: float):
        """Run ``inputs``; return ``(spikes (T, n_hidden), readout (T, n_out))``.

        Outside ``jit``/``vmap``/``grad`` the run is checked for faults (a non-finite
        membrane, :class:`~brainsim.SimulationError`) as :func:`~brainsim.simulate` checks it.
        """
        inputs = jnp.asarray(inputs)
        net = self.network(inputs, dt)
        dtype = self.w_in.dtype
        # Only the neurons need a sequential loop. The input currents of all steps are one
        # matrix product before it (network()), and the readout (linear in the spikes) one
        # product and a leaky filter after it: two large matrix products instead of T small
        # ones, forward and backward, and a loop body that holds only the network step.
        result = simulate(
            net,
            n_steps=inputs.shape[0],
            state=net.init(_unused_key(), dtype=dtype),
            record=(SpikeTrain(HIDDEN),),
            # Traced, the check would ride on the final state, which nothing here returns.
            check=is_concrete_tree((self, inputs)),
        )
        spikes = result.recordings[0]
        kappa = jnp.exp(-net.dt / self.tau_out).astype(dtype)
        return spikes, leaky_filter(spikes @ self.w_out + self.b_out, kappa)


def _unused_key():
    """The network's key: a :class:`~brainsim.LIF` (the only neuron a :class:`SpikingRNN`
    accepts) and its inputs are deterministic and ignore it."""
    return jax.random.key(0)


def _check_dt(dt, owner) -> float:
    if isinstance(dt, jax.core.Tracer) or np.ndim(dt) != 0 or isinstance(dt, bool):
        raise TypeError(
            f"{owner}: `dt` must be a Python number (ms): it is the network's step, fixed when "
            f"the program is compiled; got {shown(dt)}. Under jit pass it as a static value "
            "(e.g. an eqx.field(static=True) of a module, or a closure constant)."
        )
    check_positive("dt", dt, owner=owner, unit="ms")
    return float(dt)


def leaky_filter(u: Float[Array, "T *n"], kappa) -> Float[Array, "T *n"]:
    r""":math:`y_k = \kappa\, y_{k-1} + u_k` along the first axis, with :math:`y_{-1} = 0`."""

    def body(y, u_k):
        y = kappa * y + u_k
        return y, y

    return lax.scan(body, jnp.zeros_like(u[0]), u)[1]


def _check_inputs(model, inputs, owner):
    """``inputs`` as an array of shape ``(T, n_in)``, ``T >= 1``, or a ValueError."""
    inputs = jnp.asarray(inputs)
    if inputs.ndim != 2 or inputs.shape[1] != model.w_in.shape[0] or inputs.shape[0] < 1:
        raise ValueError(
            f"{owner}: `inputs` must have shape (T, {model.w_in.shape[0]}) (steps, input "
            f"channels) with T >= 1; got {inputs.shape}."
        )
    return inputs


def bptt_loss(
    model: SpikingRNN, inputs, targets, *, loss: Callable, dt: float
) -> Float[Array, ""]:
    """The same task loss as :func:`eprop_loss`, differentiated by ordinary backpropagation
    through time (memory grows with ``T``); the reference e-prop is checked against."""
    _, y = model(inputs, dt)
    return jnp.mean(jax.vmap(loss)(y, targets))


def eprop_loss(
    model: SpikingRNN, inputs, targets, *, loss: Callable, dt: float
) -> Float[Array, ""]:
    r"""Task loss whose gradient (``jax.grad``, :func:`~brainsim.fit.fit`) is e-prop's.

    Arguments:
        model: a :class:`SpikingRNN`.
        inputs: ``(T, n_in)`` input spikes (or any input values) for one sample; ``vmap``
            for a batch.
        targets: PyTree of arrays with leading axis ``T`` (a target per step).
        loss: ``loss(y_k, target_k) -> scalar``, the per-step loss of the readout (e.g.
            squared error, or cross-entropy weighted to the last steps); the total is the
            mean over steps.
        dt: step (ms).

    Gradients are defined with respect to ``w_in``, ``w_rec``, ``w_out`` and ``b_out``; every
    other leaf (neuron parameters, ``tau_out``) and the inputs and targets get zero.
    """
    inputs = _check_inputs(model, inputs, "eprop_loss")
    return _eprop_loss(model, inputs, targets, loss, _check_dt(dt, "eprop_loss"))


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _eprop_loss(model, inputs, targets, loss, dt):
    return _eprop(model, inputs, targets, loss, dt)[0]


def _zero_cotangent(x):
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(x.shape, dtype=jax.dtypes.float0)


def _eprop_fwd(model, inputs, targets, loss, dt):
    value, grads = _eprop(model, inputs, targets, loss, dt)
    zeros = (jax.tree.map(_zero_cotangent, inputs), jax.tree.map(_zero_cotangent, targets))
    return value, (grads, zeros)


def _eprop_bwd(loss, dt, residuals, g):
    grads, (d_inputs, d_targets) = residuals
    return jax.tree.map(lambda x: g * x, grads), d_inputs, d_targets


_eprop_loss.defvjp(_eprop_fwd, _eprop_bwd)


def _eprop(model: SpikingRNN, inputs, targets, loss, dt):
    """Forward pass with eligibility traces; returns ``(loss, gradients shaped like model)``."""
    dtype = model.w_in.dtype
    n_in, n = model.w_in.shape
    T = inputs.shape[0]
    kappa = jnp.exp(-dt / model.tau_out).astype(dtype)
    recurrent = model.w_rec is not None
    zeros_n = jnp.zeros((n,), dtype)
    ones_n = jnp.ones((n,), dtype)
    # The network of the forward pass with its input current as a ConstantCurrent, set to
    # x_k W_in in step k: no (T, n) array of currents, so memory stays independent of T (and,
    # following no schedule, it acts in step k under either timing convention).
    net = model._network(ConstantCurrent(zeros_n), dt)
    plan = net.plan()
    g, _ = dict(plan.locations)[HIDDEN]
    group = plan.groups[g]

    def input_current(p):
        return p.groups[g].currents[0][0].amplitude

    def advance(state, v, current):
        """:func:`brainsim.step` from ``state`` with the hidden membrane ``v`` and the input
        current ``current``: ``((v_{k+1}, z_k), state_{k+1})``."""
        pops = dict(state.populations)
        pops[group.name] = pops[group.name]._replace(v=v)  # "hidden" is its group's only member
        state = state._replace(populations=pops)
        new, spikes = step(eqx.tree_at(input_current, plan, current), state)
        return (net.population_state(new, HIDDEN).v, spikes[HIDDEN]), new

    def body(carry, xs):
        x, target = xs
        x = x.astype(dtype)
        state, z_prev, y, zbar, beta, traces, grads, total = carry
        v = net.population_state(state, HIDDEN).v
        (_, z), tangent, new_state = jax.linearize(
            partial(advance, state), v, x @ model.w_in, has_aux=True
        )
        # Per-neuron derivatives: within one step every neuron's update depends only on its
        # own v and I (recurrent spikes act from the next step on), so a tangent of ones gives
        # each neuron's own derivative.
        a, psi_v = tangent(ones_n, zeros_n)
        b, psi_i = tangent(zeros_n, ones_n)

        pre = {"in": x}
        if recurrent:
            pre["rec"] = z_prev
        new_traces = {}
        elig = {}
        for name, p in pre.items():
            eps, ebar = traces[name]
            e = psi_v * eps + psi_i * p[:, None]
            ebar = kappa * ebar + e
            eps = a * eps + b * p[:, None]
            new_traces[name] = (eps, ebar)
            elig[name] = ebar

        y = kappa * y + z @ model.w_out + model.b_out
        zbar = kappa * zbar + z
        beta = kappa * beta + 1.0
        value, gy = jax.value_and_grad(loss)(y, target)
        gy = gy.astype(dtype)
        signal = model.w_out @ gy  # learning signal per hidden neuron
        grads = dict(grads)
        for name, ebar in elig.items():
            grads[name] = grads[name] + ebar * signal[None, :]
        grads["out"] = grads["out"] + zbar[:, None] * gy[None, :]
        grads["b"] = grads["b"] + beta * gy
        return (new_state, z, y, zbar, beta, new_traces, grads, total + value), None

    traces = {"in": (jnp.zeros((n_in, n), dtype),) * 2}
    grads = {
        "in": jnp.zeros((n_in, n), dtype),
        "out": jnp.zeros_like(model.w_out),
        "b": jnp.zeros_like(model.b_out),
    }
    if recurrent:
        traces["rec"] = (jnp.zeros((n, n), dtype),) * 2
        grads["rec"] = jnp.zeros((n, n), dtype)
    init = (
        net.init(_unused_key(), dtype=dtype),
        zeros_n,
        jnp.zeros_like(model.b_out),
        zeros_n,
        jnp.zeros((), dtype),
        traces,
        grads,
        jnp.zeros((), dtype),
    )
    carry, _ = lax.scan(body, init, (inputs, targets))
    grads, total = carry[6], carry[7]
    out = jax.tree.map(jnp.zeros_like, model)
    out = eqx.tree_at(lambda m: (m.w_in, m.w_out, m.b_out), out, (grads["in"] / T, grads["out"] / T, grads["b"] / T))
    if recurrent:
        out = eqx.tree_at(lambda m: m.w_rec, out, grads["rec"] / T)
    return total / T, out
