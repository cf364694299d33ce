"""Gradients through simulations: finite differences on smooth problems (conductance
synapses, Hodgkin–Huxley), event-driven kernels against the dense layout, and checkpointed
scans against plain backpropagation through time.

All in float64. Central differences with step h have truncation error O(h²) and rounding
error O(eps/h); with h = 1e-5 relative both are below 1e-7 relative for these losses, so
agreement is asserted to 1e-5.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brainsim as bs
from brainsim import connect, fit, kernels

DT = 0.1


def _central_difference(f, x, rel=1e-5):
    x = np.asarray(x, dtype=float)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        h = rel * max(abs(x[i]), 1.0)
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        grad[i] = (float(f(jnp.asarray(up))) - float(f(jnp.asarray(down)))) / (2 * h)
    return grad


def _source(n, seed, n_spikes=60, t_max=30.0):
    rng = np.random.default_rng(seed)
    times = np.round(rng.uniform(0.0, t_max, n_spikes) / DT) * DT
    return bs.SpikeGenerator(times, rng.integers(0, n, n_spikes))


def _conductance_network(layout=None):
    # 6 spike generators -> 4 subthreshold LIF neurons through excitatory and inhibitory
    # conductances (exponential and alpha kinetics), heterogeneous weights.
    lif = bs.LIF(C_m=200.0, tau_m=15.0, E_L=-65.0, V_th=1e6, V_reset=-65.0, t_ref=0.0)
    receptors = {
        "exc": bs.Receptor(bs.ExponentialSynapse(3.0), bs.ConductanceBased(0.0)),
        "inh": bs.Receptor(bs.AlphaSynapse(6.0), bs.ConductanceBased(-80.0)),
    }
    edges_e = connect.fixed_probability(6, 4, 0.6, weight=lambda r, k: r.uniform(1.0, 4.0, k),
                                        seed=2)
    edges_i = connect.fixed_probability(6, 4, 0.5, weight=lambda r, k: r.uniform(2.0, 6.0, k),
                                        delay=0.3, seed=3)
    pops = [bs.Population("src", 6, _source(6, 0)), bs.Population("N", 4, lif, receptors=receptors)]
    projs = [bs.Projection("src", "N", edges_e, receptor="exc", layout=layout),
             bs.Projection("src", "N", edges_i, receptor="inh", layout=layout)]
    return bs.Network(pops, projs, dt=DT)


def _voltage_loss(network, n_steps=400):
    v = bs.simulate(network, n_steps=n_steps, key=jax.random.key(0),
                    record=(fit.Trace("N"),)).recordings[0]
    return jnp.mean((v + 60.0) ** 2)


def test_conductance_synapse_gradients_match_finite_differences(x64):
    net = _conductance_network(bs.Dense())
    where = lambda n: (  # noqa: E731
        n.projections[0].connectivity.weights,
        n.population("N").receptors["exc"].kinetics.tau,
        n.population("N").receptors["inh"].output.E_rev,
        n.population("N").model.tau_m,
    )
    tr = fit.Trainable(net, where)
    params = tr.init()
    loss = jax.jit(lambda p: _voltage_loss(tr.build(p)))
    grads = jax.grad(lambda p: _voltage_loss(tr.build(p)))(params)
    for i in range(len(params)):
        def partial_loss(x, i=i):
            return loss(tuple(x if j == i else p for j, p in enumerate(params)))

        fd = _central_difference(partial_loss, params[i])
        np.testing.assert_allclose(grads[i], fd, rtol=1e-5, atol=1e-9 * np.abs(fd).max())
        assert np.abs(fd).max() > 0  # the parameter matters


@pytest.mark.parametrize("impl", [kernels.Implementation.REFERENCE,
                                  kernels.Implementation.NATIVE_CPU])
def test_event_driven_gradients_equal_the_dense_layout(impl, x64):
    if impl is kernels.Implementation.NATIVE_CPU and not kernels.native_cpu_available():
        pytest.skip(f"native CPU kernel unavailable: {kernels.native_cpu_status()}")
    # Subthreshold (conductances): both layouts must give the same gradient with respect to
    # every synaptic weight (the event-driven kernel's JVP is the dense sum over synapses).
    dense = _conductance_network(bs.Dense())
    sparse = _conductance_network(bs.Sparse(implementation=impl))

    def weight_grads(net):
        where = lambda n: [p.connectivity.weights for p in n.projections]  # noqa: E731
        tr = fit.Trainable(net, where)
        g = jax.grad(lambda p: _voltage_loss(tr.build(p)))(tr.init())
        return [eqx.tree_at(lambda c: c.weights, p.connectivity, gi).to_dense()
                for p, gi in zip(net.projections, g, strict=True)]

    # A dense matrix also has gradients for absent synapses (zero weights): compare where
    # synapses exist.
    masks = [p.connectivity.to_dense() != 0 for p in dense.projections]
    for gd, gs, m in zip(weight_grads(dense), weight_grads(sparse), masks, strict=True):
        gd = jnp.where(m, gd, 0.0)
        np.testing.assert_allclose(gs, gd, rtol=1e-10, atol=1e-12 * float(jnp.abs(gd).max()))
        assert float(jnp.abs(gd).max()) > 0


def _spiking_recurrent(layout):
    # A recurrent spiking network: gradients flow through surrogate spikes and through the
    # kernel's tangent with respect to presynaptic spikes.
    n = 12
    lif = bs.LIF(C_m=250.0, tau_m=10.0, E_L=-70.0, V_th=-55.0, V_reset=-70.0, t_ref=2.0,
                 I_e=np.linspace(300.0, 450.0, n), surrogate=bs.surrogate.FastSigmoid(2.0))
    rec = {"e": bs.Receptor(bs.ExponentialSynapse(2.0), bs.CurrentBased())}
    edges = connect.fixed_probability(n, n, 0.4, weight=lambda r, k: r.uniform(-60.0, 60.0, k),
                                      delay=0.2, allow_self=False, seed=4)
    pops = [bs.Population("N", n, lif, receptors=rec,
                          initial={"v": bs.init.Uniform(-70.0, -56.0)})]
    return bs.Network(pops, [bs.Projection("N", "N", edges, receptor="e", layout=layout)], dt=DT)


@pytest.mark.parametrize("impl", [kernels.Implementation.REFERENCE,
                                  kernels.Implementation.NATIVE_CPU])
def test_event_driven_surrogate_gradients_equal_dense_in_a_spiking_network(impl, x64):
    if impl is kernels.Implementation.NATIVE_CPU and not kernels.native_cpu_available():
        pytest.skip(f"native CPU kernel unavailable: {kernels.native_cpu_status()}")

    def grads(layout):
        net = _spiking_recurrent(layout)
        tr = fit.Trainable(net, lambda n: n.projections[0].connectivity.weights)

        def loss(p):
            r = bs.simulate(tr.build(p), n_steps=300, key=jax.random.key(1),
                            record=(fit.SpikeTrain("N"), fit.Trace("N")))
            return jnp.mean(r.recordings[0]) + 1e-4 * jnp.mean(r.recordings[1])

        value, g = jax.value_and_grad(loss)(tr.init())
        return value, eqx.tree_at(lambda c: c.weights, net.projections[0].connectivity,
                                  g).to_dense()

    (vd, gd), (vs, gs) = grads(bs.Dense()), grads(bs.Sparse(implementation=impl))
    assert float(vd) == float(vs)
    gd = jnp.where(_spiking_recurrent(bs.Dense()).projections[0].connectivity.to_dense() != 0,
                   gd, 0.0)
    np.testing.assert_allclose(gs, gd, rtol=1e-9, atol=1e-12 * float(jnp.abs(gd).max()))


def test_hodgkin_huxley_gradients_match_finite_differences(x64):
    drive = bs.StepCurrent([2.0, 12.0], [8.0, 0.0])
    net = bs.Network([bs.Population("N", 1, bs.HodgkinHuxley(), currents=[drive])], dt=0.05)
    tr = fit.Trainable(net, lambda n: (n.populations[0].model.g_Na, n.populations[0].model.g_K,
                                       n.populations[0].model.g_L))

    def loss(p):
        v = bs.simulate(tr.build(p), n_steps=400, key=jax.random.key(0),
                        record=(fit.Trace("N"),)).recordings[0]
        return jnp.mean((v + 65.0) ** 2)

    params = tr.init()
    grads = jax.grad(loss)(params)
    f = jax.jit(loss)
    for i in range(3):
        fd = _central_difference(
            lambda x, i=i: f(tuple(x if j == i else p for j, p in enumerate(params))), params[i])
        np.testing.assert_allclose(grads[i], fd, rtol=1e-5)


# ----------------------------------------------------------------------------- checkpointing


def test_checkpointed_gradients_equal_plain_bptt(x64):
    # 437 steps = 20 x 21 + 17 (two levels) and 5 x (8 x 9 + 8) + 37 (three levels):
    # remainders at every level. Monitors of both kinds: per-step outputs (SpikeTrain, Trace,
    # PopulationRate) and buffers carried through the loop (StateTrace every 7 steps).
    n_steps = 437
    net = _spiking_recurrent(bs.Sparse())
    where = lambda n: (n.projections[0].connectivity.weights, n.populations[0].model.tau_m)  # noqa: E731
    tr = fit.Trainable(net, where)
    monitors = (fit.SpikeTrain("N"), fit.Trace("N"), bs.StateTrace("N", "v", every=7),
                bs.PopulationRate())

    def loss(p, checkpoint):
        r = bs.simulate(tr.build(p), n_steps=n_steps, key=jax.random.key(2), record=monitors,
                        checkpoint=checkpoint)
        value = (jnp.mean(r.recordings[0]) + 1e-4 * jnp.mean(r.recordings[1])
                 + 1e-4 * jnp.mean(r.recordings[2]))
        return value, r.recordings

    grad = jax.grad(loss, has_aux=True)
    plain, plain_rec = grad(tr.init(), None)
    for levels in (2, 3):
        g, rec = grad(tr.init(), bs.Checkpointing(levels=levels))
        # The forward pass is the same computation: the same spikes, and membrane traces equal
        # to rounding. Not always bit for bit: XLA contracts a * b + c into one FMA inside a
        # fused kernel, and the checkpointed program fuses its (re)computed steps differently
        # (measured: 1 ulp in 87 of 5244 float64 values, none with FMA disabled).
        np.testing.assert_array_equal(rec[0], plain_rec[0])
        for a, b in zip(jax.tree.leaves(rec), jax.tree.leaves(plain_rec), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-14, atol=0)
        for a, b in zip(g, plain, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13 * float(jnp.abs(b).max()))
    assert float(jnp.abs(plain[0]).max()) > 0 and float(jnp.abs(plain[1])) > 0


def test_checkpointing_stores_less_and_names_bad_arguments():
    # Compiled temporary memory of the gradient (XLA's own accounting, no run needed): the
    # plain scan keeps every step's residuals, two levels about 2 sqrt(T) of them.
    net = _spiking_recurrent(bs.Sparse())

    def loss(w, checkpoint):
        n = eqx.tree_at(lambda n: n.projections[0].connectivity.weights, net, w)
        r = bs.simulate(n, n_steps=2000, key=jax.random.key(0), record=(fit.SpikeTrain("N"),),
                        checkpoint=checkpoint)
        return jnp.mean(r.recordings[0])

    w = net.projections[0].connectivity.weights
    temp = {levels: jax.jit(jax.grad(loss), static_argnums=1).lower(w, ck).compile()
            .memory_analysis().temp_size_in_bytes
            for levels, ck in ((1, None), (2, bs.Checkpointing(levels=2)))}
    assert temp[2] < temp[1] / 5, temp
    with pytest.raises(ValueError, match="`levels`"):
        bs.Checkpointing(levels=0)
    with pytest.raises(TypeError, match="`checkpoint`"):
        bs.simulate(net, n_steps=10, key=jax.random.key(0), checkpoint=2)
