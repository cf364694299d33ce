"""Plasticity inside simulated networks: dense, sparse (ELL) and CSR projections agree, weights
are part of the state and recorded, modulators reach the rule, and homeostasis drives rates to
a target."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brainsim as bs
from brainsim import plasticity as pl


def poisson_trains(n, rate_hz, duration_ms, dt, seed):
    """Independent Poisson trains on the step grid as (times, indices) for SpikeGenerator."""
    rng = np.random.default_rng(seed)
    steps = int(round(duration_ms / dt))
    counts = rng.random((steps, n)) < rate_hz * dt * 1e-3
    k, i = np.nonzero(counts)
    return k * dt, i


def lif():
    return bs.LIF(C_m=10.0, tau_m=10.0, E_L=-74.0, V_th=-54.0, V_reset=-60.0, t_ref=2.0)


def network(layout, rule, *, duration=400.0, dt=0.5, n_in=60, n_out=20, seed=0, timing=None):
    times, ids = poisson_trains(n_in, 40.0, duration, dt, seed)
    receptors = {"e": bs.Receptor(bs.ExponentialSynapse(5.0), bs.ConductanceBased(0.0))}
    pops = [
        bs.Population("in", n_in, bs.SpikeGenerator(times, ids)),
        bs.Population("out", n_out, lif(), receptors=receptors),
    ]
    def uniform(rng, size):
        return rng.uniform(0.05, 0.25, size)

    ff = bs.connect.fixed_probability(n_in, n_out, 0.5, weight=uniform, seed=1)
    rec = bs.connect.fixed_probability(n_out, n_out, 0.3, weight=0.05, seed=2)
    projs = [
        bs.Projection("in", "out", ff, receptor="e", layout=layout, plasticity=rule, name="ff"),
        bs.Projection("out", "out", rec, receptor="e", layout=layout, plasticity=rule, name="rec"),
    ]
    return bs.Network(pops, projs, dt=dt, timing=timing)


RULE = pl.chain(
    pl.PairSTDP(A_plus=0.01, A_minus=0.0105, weight_dependence=pl.Additive(w_max=0.3)),
    pl.SynapticScaling(10.0, tau=100.0, beta=1e-5, w_max=0.3),
)


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


TRANSMIT = {
    "before-update": bs.Timing.brian2(),
    "after-update": bs.Timing.brian2(transmit_after_update=True),
}


@pytest.mark.parametrize("order", list(TRANSMIT))
def test_sparse_plasticity_equals_dense(x64, order):
    """Same network in Dense, Sparse (ELL) and CSR layout, float64 so that the different
    summation order of delivery cannot flip a spike: identical spikes and weights to 1e-12,
    whether a spike is transmitted with the weight before (Brian2) or after (NEST) its own
    update."""
    results = {}
    for layout in (bs.Dense(), bs.Sparse(), bs.CSR()):
        net = network(layout, RULE, duration=300.0, timing=TRANSMIT[order])
        r = bs.simulate(net, 300.0, key=jax.random.key(0), record=(bs.SpikeRaster(("out",)),))
        results[type(layout).__name__] = (net, r)
    nd, rd = results.pop("Dense")
    assert rd.state.plasticity["ff"].weights.dtype == jnp.float64
    td, _ = rd.spikes("out")
    assert td.size > 50
    for ns, rs in results.values():
        ts, _ = rs.spikes("out")
        np.testing.assert_array_equal(td, ts)
        for name in ("ff", "rec"):
            wd = np.asarray(nd.weights(rd.state, name))
            ws = np.asarray(ns.weights(rs.state, name))
            w0 = np.asarray(nd.projection(name).connectivity.to_dense())
            assert np.abs(wd - w0).max() > 1e-3  # learning happened
            np.testing.assert_allclose(ws, wd, rtol=1e-12, atol=1e-14)
            assert np.all(wd[w0 == 0] == 0)  # no synapse appears


def test_the_transmit_order_changes_what_is_transmitted():
    """Same inputs, the two orders: the spikes diverge (a test of the option, not of a rate)."""
    trains = {}
    for order, timing in TRANSMIT.items():
        net = network(bs.Sparse(), RULE, duration=300.0, timing=timing)
        r = bs.simulate(net, 300.0, key=jax.random.key(0), record=(bs.SpikeRaster(("out",)),))
        trains[order] = r.spikes("out")
    before, after = trains["before-update"], trains["after-update"]
    assert before[0].size > 50
    assert before[0].size != after[0].size or not np.array_equal(before[0], after[0])


@pytest.mark.parametrize("order", list(TRANSMIT))
@pytest.mark.parametrize("layout", [bs.Dense(), bs.Sparse(), bs.CSR()],
                         ids=["dense", "sparse", "csr"])
def test_plastic_weights_are_updated_in_place_in_either_order(layout, order):
    """The loop body copies no weight array: the update waits for the delivery that reads the
    old weights (Brian2's order), or the delivery reads the updated ones (NEST's); the one
    copy allowed is of the argument before the loop."""
    import re

    from brainsim._simulate import _run_jit

    net = network(layout, RULE, duration=20.0, timing=TRANSMIT[order])
    state = net.init(jax.random.key(0))
    compiled = _run_jit.lower(net, state, (bs.PopulationRate(),), 10, None, 1).compile()
    text = compiled.compiled.as_text() if hasattr(compiled, "compiled") else compiled.as_text()
    for name in ("ff", "rec"):
        shape = ",".join(map(str, state.plasticity[name].weights.shape))
        copies = [line for line in text.splitlines()
                  if re.search(r"copy\(", line) and f"[{shape}]" in line]  # fmt: skip
        assert len(copies) <= 1, copies


def test_weights_in_state_recorded_and_continued():
    net = network(bs.Sparse(), RULE, duration=200.0)
    pairs = [(0, 0), (1, 3), (5, 7)]
    r = bs.simulate(
        net, 100.0, key=jax.random.key(1), record=(bs.WeightTrace("ff", pairs, every=20),)
    )
    times, w = r.weight_trace("ff")
    np.testing.assert_allclose(times, np.arange(10) * 10.0)
    dense0 = np.asarray(net.projection("ff").connectivity.to_dense())
    np.testing.assert_allclose(w[0], [dense0[i, j] for i, j in pairs], rtol=1e-6)
    assert r.weights("ff").shape == net.projection("ff").connectivity.targets.shape
    # Continuing from the final state keeps learning from the learned weights.
    r2 = bs.simulate(net, 100.0, state=r.state, record=(bs.WeightTrace("ff", pairs, every=20),))
    _, w2 = r2.weight_trace("ff")
    final = np.asarray(net.weights(r.state, "ff"))
    np.testing.assert_allclose(w2[0], [final[i, j] for i, j in pairs], rtol=1e-6)
    learned = net.with_weights(r2.state)
    np.testing.assert_allclose(
        np.asarray(learned.projection("ff").connectivity.to_dense()),
        np.asarray(net.weights(r2.state, "ff")),
    )
    with pytest.raises(TypeError, match="plasticity"):
        bs.Projection("in", "out", bs.connect.all_to_all(2, 2), receptor="e", plasticity=1.0)
    # Procedural synapses are not stored: nothing to make plastic.
    procedural = bs.connect.procedural_fixed_outdegree(60, 20, 5, weight=0.1, seed=1)
    with pytest.raises(TypeError, match="Dense\\(\\), Sparse\\(\\) or CSR\\(\\)"):
        bs.Network(net.populations, [bs.Projection("in", "out", procedural, receptor="e",
                                                   layout=bs.Procedural(), plasticity=RULE)],
                   dt=net.dt)  # fmt: skip


def test_modulator_gates_reward_modulated_stdp():
    rule = pl.RewardModulatedSTDP(A_plus=1.0, A_minus=1.0, tau_c=100.0, eta=1e-3,
                                  weight_dependence=pl.Additive(w_max=1.0))  # fmt: skip
    times, ids = poisson_trains(30, 50.0, 200.0, 0.5, 3)
    receptors = {"e": bs.Receptor(bs.ExponentialSynapse(5.0), bs.ConductanceBased(0.0))}
    out = {}
    for level in (0.0, 1.0):
        net = bs.Network(
            [
                bs.Population("in", 30, bs.SpikeGenerator(times, ids)),
                bs.Population("out", 5, lif(), receptors=receptors),
            ],
            [
                bs.Projection("in", "out", bs.connect.all_to_all(30, 5, weight=0.2),
                              receptor="e", layout=bs.Sparse(), plasticity=rule,
                              modulator=bs.ConstantCurrent(level), name="p"),
            ],
            dt=0.5,
        )  # fmt: skip
        r = bs.simulate(net, 200.0, key=jax.random.key(0), record=(bs.SpikeRaster(),))
        assert r.spikes("out")[0].size > 0
        out[level] = r.weights("p")
    np.testing.assert_array_equal(out[0.0], np.float32(0.2))
    assert np.abs(out[1.0] - 0.2).max() > 1e-4


@pytest.mark.parametrize("drive", [30.0, 18.0], ids=["from_above", "from_below"])
def test_intrinsic_plasticity_reaches_target_rate(drive):
    """AdaptiveThreshold with a target rate (SORN intrinsic plasticity): LIF neurons (rheobase
    20 pA) starting far above (~150 Hz) or below (silent) the 10 Hz target end within 10 % of
    it."""
    target = 10.0
    model = pl.AdaptiveThreshold(lif(), theta_plus=0.2, tau_theta=jnp.inf, target_rate=target)
    current = bs.ConstantCurrent(drive + 2.0 * np.arange(20) / 20)
    pop = bs.Population("n", 20, model, currents=(current,))
    net = bs.Network([pop], dt=0.5)
    r = bs.simulate(net, 8000.0, key=jax.random.key(0), record=(bs.PopulationRate(),))
    counts = r.spike_counts("n")
    early = counts[:1000].sum() / (20 * 0.5)
    late = counts[-8000:].sum() / (20 * 4.0)  # last 4 s
    assert abs(early - target) > 5.0  # it really started away from the target
    assert abs(late - target) < 0.1 * target


@pytest.mark.parametrize("w_init", [0.6, 0.08], ids=["from_above", "from_below"])
def test_synaptic_scaling_reaches_target_rate(w_init):
    """SynapticScaling alone: feed-forward Poisson input with weights far too strong or too weak;
    the population's rate ends within 10 % of the 15 Hz target."""
    target, dt, duration = 15.0, 0.5, 6000.0
    times, ids = poisson_trains(100, 20.0, duration, dt, 4)
    receptors = {"e": bs.Receptor(bs.ExponentialSynapse(5.0), bs.ConductanceBased(0.0))}
    rule = pl.SynapticScaling(target, tau=200.0, beta=2e-5)
    net = bs.Network(
        [
            bs.Population("in", 100, bs.SpikeGenerator(times, ids)),
            bs.Population("out", 20, lif(), receptors=receptors),
        ],
        [bs.Projection("in", "out", bs.connect.fixed_probability(100, 20, 0.5, weight=w_init,
                                                                 seed=5),
                       receptor="e", plasticity=rule, name="p")],
        dt=dt,
    )  # fmt: skip
    r = bs.simulate(net, duration, key=jax.random.key(0), record=(bs.PopulationRate(),))
    counts = r.spike_counts("out")
    early = counts[:1000].sum() / (20 * 0.5)
    late = counts[-4000:].sum() / (20 * 2.0)
    assert abs(early - target) > 5.0
    assert abs(late - target) < 0.1 * target


def test_plasticity_refuses_what_it_cannot_know():
    # A built Dense matrix cannot tell a zero-weight synapse from a missing one.
    net = network(bs.Dense(), None)
    ff = net.projection("ff")
    assert ff.connectivity.n_synapses < 60 * 20
    with pytest.raises(ValueError, match="which pairs exist is unknown.*edge list"):
        bs.Network(
            net.populations,
            [bs.Projection("in", "out", ff.connectivity, receptor="e", plasticity=RULE)],
            dt=net.dt,
        )
    # Weight bounds must leave room.
    for make in (lambda: pl.Additive(w_max=-0.5), lambda: pl.Gutig(0.5, w_max=0.0),
                 lambda: pl.Multiplicative(w_max=1.0, w_min=2.0)):  # fmt: skip
        with pytest.raises(ValueError, match="`w_max` must exceed w_min.*Raise w_max"):
            make()
