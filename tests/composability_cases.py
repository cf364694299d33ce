"""The networks and monitors of tests/test_composability.py (imported by the test and by its
sharded subprocesses)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import brainsim as bs


def layout(fmt):
    return {
        "dense": bs.Dense(),
        "sparse": bs.Sparse(),
        "csr": bs.CSR(block_size=8),
        "procedural": bs.Procedural(),
    }[fmt]


def edges(fmt, n_pre, n_post, k, w, seed, delay):
    if fmt == "procedural":
        return bs.connect.procedural_fixed_outdegree(
            n_pre, n_post, k, weight=w, seed=seed, delay=delay
        )
    return bs.connect.fixed_outdegree(n_pre, n_post, k, weight=w, seed=seed, delay=delay)


def network(fmt, plastic):
    lif = dict(C_m=200.0, tau_m=20.0, E_L=-60.0, V_th=-50.0, V_reset=-60.0, t_ref=2.0)
    rec = {
        "exc": bs.Receptor(bs.ExponentialSynapse(5.0), bs.CurrentBased()),
        "inh": bs.Receptor(bs.ExponentialSynapse(10.0), bs.CurrentBased()),
    }
    init = {"v": bs.init.Uniform(-60.0, -50.0)}
    pops = [
        bs.Population("X", 30, bs.PoissonSource(60.0)),
        bs.Population("E", 27, bs.LIF(I_e=180.0, **lif), receptors=rec, initial=init),
        bs.Population("I", 11, bs.LIF(I_e=150.0, **lif), receptors=rec, initial=init),
    ]
    projs = [
        bs.Projection(
            "X", "E", edges(fmt, 30, 27, 4, 60.0, 1, 0.5), receptor="exc", layout=layout(fmt)
        ),
        bs.Projection(
            "E", "I", edges(fmt, 27, 11, 3, 40.0, 2, 1.0), receptor="exc", layout=layout(fmt)
        ),
        bs.Projection(
            "I", "E", edges(fmt, 11, 27, 5, -50.0, 3, 0.2), receptor="inh", layout=layout(fmt)
        ),
    ]
    if plastic:
        stdp = bs.plasticity.PairSTDP(
            20.0,
            20.0,
            A_plus=0.5,
            A_minus=0.6,
            weight_dependence=bs.plasticity.Additive(w_max=80.0),
        )
        projs.append(
            bs.Projection(
                "E",
                "E",
                bs.connect.fixed_outdegree(27, 27, 4, weight=30.0, seed=4, delay=0.3),
                receptor="exc",
                plasticity=stdp,
                layout=bs.Dense() if fmt == "dense" else bs.Sparse(),
            )
        )
    return bs.Network(pops, projs, dt=0.1)


class MeanVoltage(bs.AbstractMonitor):
    population: str = eqx.field(static=True)

    def per_step(self, network, state_before, spikes, k):
        return jnp.mean(network.population_state(state_before, self.population).v)

    def nbytes(self, network, n_steps):
        return 4 * n_steps

    def describe(self, network, n_steps):
        return f"MeanVoltage {self.population}"


def monitors(plastic):
    out = (
        bs.SpikeRaster(),
        bs.SpikeList("E", capacity=4000),
        bs.PopulationRate(),
        bs.StateTrace("E", "v", every=3),
        bs.StateTrace("I", "exc.g"),
        MeanVoltage("E"),
    )
    return out + ((bs.WeightTrace("E->E:exc", every=5),) if plastic else ())


def summary(result, plastic):
    """Every recording and the final state, as lists (JSON)."""
    out = {}
    for i, rec in enumerate(result.recordings):
        out[f"m{i}"] = [np.asarray(x).tolist() for x in jax.tree.leaves(rec)]
    for p in ("X", "E", "I"):
        out["spikes_" + p] = [a.tolist() for a in result.spikes(p)]
    state = [
        x
        for x in jax.tree.leaves(result.state)
        if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
    ]
    out["state"] = [np.asarray(x).tolist() for x in state]
    return out
