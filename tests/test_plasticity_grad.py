"""Reverse-mode gradients through plasticity: every storage (Dense, Sparse/ELL, CSR), every
kernel (native CPU and jnp reference), with and without checkpointing.

The event-driven updates loop over the neurons that spiked, a loop with a data-dependent trip
count that reverse mode cannot transpose; they differentiate as one window of every neuron
(:func:`brainsim.kernels._tangent.differentiated_as`). So the properties asserted here:

* the gradient of a smooth loss agrees with central finite differences (float64);
* the gradient of a sparse storage equals the dense storage's on the same synapses, also
  through surrogate spikes;
* the kernels alone: gradients of the event-driven updates equal those of the dense update.

Finite differences: along random directions in parameter space (one simulation pair per
direction instead of one per weight), step ``h = 1e-6`` relative. Truncation error O(h²) and
rounding O(eps/h) are both below 1e-9 relative, far under the asserted 1e-6; the smooth
network keeps its spike pattern under such steps (its spikes carry no derivative, see
:class:`_NoSurrogate`), so the loss is differentiable there.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brainsim.kernels import Implementation
from brainsim.kernels._plasticity import dense_update_post, dense_update_pre
from brainsim.kernels._stdp import trace_event

import brainsim as bs
from brainsim import connect, fit, kernels
from brainsim import plasticity as pl
from brainsim._surrogate import AbstractSurrogate

DT = 0.1
N_IN, N_OUT = 12, 4
REF, NATIVE = Implementation.REFERENCE, Implementation.NATIVE_CPU
LAYOUTS = {
    "dense": lambda: bs.Dense(),
    "ell-reference": lambda: bs.Sparse(implementation=REF),
    "ell-native": lambda: bs.Sparse(implementation=NATIVE),
    "csr-reference": lambda: bs.CSR(implementation=REF),
    "csr-native": lambda: bs.CSR(implementation=NATIVE),
}
CHECKPOINTS = {"plain": None, "checkpointed": bs.Checkpointing(levels=2)}
# The reported case: pair STDP, here soft-bounded (the ELL views run the trace kernels, CSR the
# generic block updates; the kernel tests below cover the generic updates on ELL as well).
RULE = pl.PairSTDP(A_plus=4.0, A_minus=4.2, weight_dependence=pl.Multiplicative(w_max=100.0))


class _NoSurrogate(AbstractSurrogate):
    """Spikes without a derivative: the gradient is then the exact derivative of the loss at
    a fixed spike pattern, which finite differences measure."""

    def derivative(self, x):
        return jnp.zeros_like(x)


SURROGATES = {"none": _NoSurrogate, "fast-sigmoid": lambda: bs.surrogate.FastSigmoid(2.0)}


def _skip_without_native(name):
    if "native" in name and not kernels.native_cpu_available():
        pytest.skip(f"native CPU kernels unavailable: {kernels.native_cpu_status()}")


def _network(layout_name, surrogate_name):
    rng = np.random.default_rng(0)
    times = np.round(rng.uniform(0.0, 12.0, 50) / DT) * DT
    source = bs.SpikeGenerator(times, rng.integers(0, N_IN, 50))
    lif = bs.LIF(
        C_m=250.0,
        tau_m=10.0,
        E_L=-70.0,
        V_th=-55.0,
        V_reset=-70.0,
        t_ref=2.0,
        I_e=np.linspace(360.0, 420.0, N_OUT),
        surrogate=SURROGATES[surrogate_name](),
    )
    receptors = {"e": bs.Receptor(bs.ExponentialSynapse(2.0), bs.CurrentBased())}
    edges = connect.fixed_probability(
        N_IN, N_OUT, 0.5, seed=1, weight=lambda r, k: r.uniform(30.0, 70.0, k)
    )
    pops = [
        bs.Population("in", N_IN, source),
        bs.Population("out", N_OUT, lif, receptors=receptors),
    ]
    proj = bs.Projection(
        "in", "out", edges, receptor="e", layout=LAYOUTS[layout_name](), plasticity=RULE, name="ff"
    )
    return bs.Network(pops, [proj], dt=DT)


def _where(net):
    """Initial weights, a neuron parameter and a rule parameter."""
    return (
        net.projections[0].connectivity.weights,
        net.population("out").model.tau_m,
        net.projections[0].plasticity.A_plus,
    )


def _loss_and_grad(layout_name, checkpoint_name, surrogate_name):
    """``(trainable, jitted loss, its gradient at the initial parameters, the run's result)``.

    The loss is smooth in the final weights and the membrane potential, plus (with a
    surrogate) the spike count."""
    net = _network(layout_name, surrogate_name)
    tr = fit.Trainable(net, _where)
    checkpoint = CHECKPOINTS[checkpoint_name]

    def loss(params):
        n = tr.build(params)
        r = bs.simulate(
            n,
            n_steps=150,
            key=jax.random.key(0),
            checkpoint=checkpoint,
            record=(fit.Trace("out"), fit.SpikeTrain("out")),
        )
        w = n.weights(r.state, "ff")
        value = 1e-3 * jnp.sum(w * jnp.cos(w / 30.0)) + 1e-3 * jnp.mean(
            (r.recordings[0] + 60.0) ** 2
        )
        return value + jnp.sum(r.recordings[1]), r

    (_, result), grad = jax.value_and_grad(loss, has_aux=True)(tr.init())
    return tr, jax.jit(lambda p: loss(p)[0]), grad, result


@functools.cache
def _dense_gradient(checkpoint_name, surrogate_name):
    tr, _, grad, _ = _loss_and_grad("dense", checkpoint_name, surrogate_name)
    synapses = tr.build(grad).projections[0].synapses
    return (jnp.where(synapses.mask, grad[0], 0.0), *grad[1:])


@pytest.mark.parametrize("checkpoint_name", list(CHECKPOINTS))
@pytest.mark.parametrize("layout_name", list(LAYOUTS))
def test_gradient_matches_finite_differences_and_dense(layout_name, checkpoint_name, x64):
    """``jax.grad`` runs, agrees with central differences along random directions, and (a
    sparse storage) equals the Dense layout's gradient on the same synapses."""
    _skip_without_native(layout_name)
    tr, loss, grad, result = _loss_and_grad(layout_name, checkpoint_name, "none")
    assert float(jnp.sum(result.recordings[1])) >= 4  # post and pre events both happen
    params = tr.init()
    rng = np.random.default_rng(7)
    for _ in range(2):
        step = [1e-6 * max(float(jnp.max(jnp.abs(p))), 1.0) * rng.standard_normal(np.shape(p))
                for p in params]  # fmt: skip
        up = tuple(p + s for p, s in zip(params, step, strict=True))
        down = tuple(p - s for p, s in zip(params, step, strict=True))
        fd = (float(loss(up)) - float(loss(down))) / 2
        ad = sum(float(jnp.sum(g * s)) for g, s in zip(grad, step, strict=True))
        np.testing.assert_allclose(ad, fd, rtol=1e-6)
    # Every parameter matters: weights (transmission and plasticity), tau_m, A_plus.
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in grad)
    if layout_name != "dense":
        _assert_equals_dense(tr, grad, checkpoint_name, "none")


@pytest.mark.parametrize("layout_name", ["ell-native", "csr-native"])
def test_surrogate_gradient_equals_dense(layout_name, x64):
    """Through surrogate spikes (a spike-count loss), the sparse storages have the Dense
    gradient. (The reference kernels share the native ones' tangent code, the jnp reference
    in one window; the test above runs them.)"""
    _skip_without_native(layout_name)
    tr, _, grad, _ = _loss_and_grad(layout_name, "plain", "fast-sigmoid")
    _assert_equals_dense(tr, grad, "plain", "fast-sigmoid")


def _assert_equals_dense(tr, grad, checkpoint_name, surrogate_name):
    dense = _dense_gradient(checkpoint_name, surrogate_name)
    sparse = (tr.build(grad).projections[0].synapses.to_dense(grad[0]), *grad[1:])
    for s, d in zip(sparse, dense, strict=True):
        np.testing.assert_allclose(s, d, rtol=1e-9, atol=1e-12 * float(jnp.max(jnp.abs(d))))
    assert float(jnp.max(jnp.abs(dense[0]))) > 0


# ---------------------------------------------------------------------------------- kernels


def _storages(seed, n_pre=9, n_post=7):
    """One random set of synapses in ELL, CSR and dense storage, with per-synapse weights and
    maps from a per-synapse vector to each storage and back."""
    rng = np.random.default_rng(seed)
    edges = connect.fixed_probability(
        n_pre, n_post, 0.45, seed=seed, weight=lambda r, k: r.uniform(0.2, 0.8, k)
    )
    ell = bs.Sparse().build(edges, DT, owner="test", round_delays=False, dtype=jnp.float64)
    csr = bs.CSR().build(edges, DT, owner="test", round_delays=False, dtype=jnp.float64)
    views = {
        "ell": pl.synapses_for(ell)[0],
        "csr": pl.synapses_for(csr)[0],
        "dense": pl.DenseSynapses(n_pre, n_post, ell.to_dense() != 0),
    }

    def to(name, w_dense):
        """Per-synapse values of a dense matrix in storage ``name`` (0 on padding)."""
        pre, post, valid = views[name].pairs()
        return jnp.where(valid, w_dense[pre, np.minimum(post, n_post - 1)], 0.0)

    spikes = {side: jnp.asarray(rng.random(n) < 0.5, jnp.float64)
              for side, n in (("pre", n_pre), ("post", n_post))}  # fmt: skip
    return views, to, spikes, ell.to_dense(), rng


@pytest.mark.parametrize("pre_side", [True, False], ids=["pre", "post"])
@pytest.mark.parametrize(
    "storage", ["ell-generic", "ell-trace-reference", "ell-trace-native", "csr-generic"]
)
def test_event_driven_updates_have_the_dense_gradient(storage, pre_side, x64):
    """Forward values and the gradient with respect to the weights, the amplitude and the
    partner trace equal the dense update's: the generic block update (a function closing over
    both), and the STDP kernels (reference and native)."""
    _skip_without_native(storage)
    views, to, spikes, w_dense, rng = _storages(seed=3)
    name = storage.split("-")[0]
    view = views[name]
    partner = jnp.asarray(rng.uniform(0.1, 1.0, view.n_post if pre_side else view.n_pre))
    dep = pl.Multiplicative(w_max=1.0)
    s = spikes["pre" if pre_side else "post"]

    def block(a, b):
        return trace_event(a, b, dep.potentiation, dep.clip, potentiate=True, pre_side=pre_side)

    def sparse(w, a, b):
        if "trace" not in storage:
            return (view.on_pre if pre_side else view.on_post)(w, s, block(a, b))
        impl = REF if storage.endswith("reference") else NATIVE
        if pre_side:
            return kernels.ell_trace_update_pre(w, view.targets, s, a, b, dep.trace_form(True),
                                                potentiate=True, n_post=view.n_post,
                                                implementation=impl)  # fmt: skip
        return kernels.ell_trace_update_post(w, view.post_slots, s, a, b, dep.trace_form(True),
                                             potentiate=True, implementation=impl)  # fmt: skip

    def dense(w, a, b):
        update = dense_update_pre if pre_side else dense_update_post
        return views["dense"].to_dense(update(w, s, block(a, b)))

    weighting = rng.uniform(0.5, 1.5, w_dense.shape)  # a smooth, synapse-wise loss

    def loss(update, storage_name):
        def f(w, a, b):
            out = update(w, a, b)
            return jnp.sum(jnp.sin(3.0 * out) * to(storage_name, weighting)), out

        return jax.value_and_grad(f, (0, 1, 2), has_aux=True)

    a = jnp.asarray(0.3)
    (_, out_s), g_s = loss(sparse, name)(to(name, w_dense), a, partner)
    (_, out_d), g_d = loss(dense, "dense")(w_dense, a, partner)
    np.testing.assert_allclose(view.to_dense(out_s), out_d, rtol=1e-14)
    assert float(jnp.max(jnp.abs(out_d - w_dense))) > 1e-2  # the update did something
    np.testing.assert_allclose(view.to_dense(g_s[0]), views["dense"].to_dense(g_d[0]),
                               rtol=1e-12, atol=1e-15)  # fmt: skip
    for x, y in zip(g_s[1:], g_d[1:], strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-12)
    assert float(jnp.abs(g_s[1])) > 0 and float(jnp.max(jnp.abs(g_s[2]))) > 0
