"""Shared fixtures and helpers for the core-simulator validation suite.

Helpers here build the small probe networks the tests share (a spike generator driving one
receptor, a population with one recorded variable) and step a network while keeping the
receptor traces, which :func:`brainsim.simulate` does not record.
"""

from __future__ import annotations

import equinox as eqx
import jax
import numpy as np
import pytest

import brainsim as bs

# A threshold no test drive can reach: probe neurons then integrate without spiking.
NO_SPIKE_V_TH = 1e6


@pytest.fixture
def x64():
    """Run a test in float64 (JAX's flag is global: restore it afterwards)."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


def same_tree(a, b) -> bool:
    """Two pytrees with the same structure and bitwise-equal leaves (shape, dtype, values)."""
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    return tree_a == tree_b and all(
        np.shape(x) == np.shape(y) and np.asarray(x).dtype == np.asarray(y).dtype
        and np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(leaves_a, leaves_b, strict=True)
    )


def pallas_grids(jaxpr):
    """Grids of every pallas_call in a (closed) jaxpr, searched recursively."""
    grids = []

    def walk(jx):
        for eqn in jx.eqns:
            if eqn.primitive.name == "pallas_call":
                grids.append(eqn.params["grid_mapping"].grid)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jaxpr.jaxpr)
    return grids


def quiet_lif(**overrides):
    """A LIF that never spikes (threshold far away), for watching synaptic input."""
    params = dict(C_m=250.0, tau_m=10.0, E_L=-70.0, V_th=NO_SPIKE_V_TH, V_reset=-70.0, t_ref=0.0)
    params.update(overrides)
    return bs.LIF(**params)


def generator_network(times, indices, n_pre, n_post, edges, *, kinetics=None, output=None,
                      layout=None, dt=0.1, stp=None, round_delays=False, neuron=None):
    """``SpikeGenerator`` population ``"src"`` → receptor ``"r"`` of population ``"post"``."""
    receptor = bs.Receptor(kinetics if kinetics is not None else bs.ExponentialSynapse(5.0),
                           output if output is not None else bs.CurrentBased())
    pops = [
        bs.Population("src", n_pre, bs.SpikeGenerator(times, indices)),
        bs.Population("post", n_post, neuron if neuron is not None else quiet_lif(),
                      receptors={"r": receptor}),
    ]
    proj = bs.Projection("src", "post", edges, receptor="r", layout=layout, stp=stp,
                         round_delays=round_delays)
    return bs.Network(pops, [proj], dt=dt)


@eqx.filter_jit
def _scan_steps(network, state, n_steps: int):
    def body(s, _):
        s, spikes = network.step(s)
        return s, (s.receptors, spikes)

    return jax.lax.scan(body, state, None, length=n_steps)


def receptor_history(network, n_steps, population="post", receptor="r", *, key=0):
    """Step ``network`` ``n_steps`` times from its initial state.

    Returns the receptor's trace value after every step, shape ``(n_steps, n)`` (row ``k`` is
    the trace at :math:`t_{k+1}`, after the arrivals of step ``k`` and one step of decay), and
    the per-step spikes dict.
    """
    state = network.init(jax.random.key(key))
    _, (receptors, spikes) = _scan_steps(network, state, n_steps)
    kin = network.population(population).receptors[receptor].kinetics
    values = jax.vmap(kin.value)(receptors[population][receptor].kinetics)
    return np.asarray(values), {k: np.asarray(v) for k, v in spikes.items()}


def isi_cvs(times, ids, min_spikes=3):
    """Coefficient of variation of the inter-spike intervals of every neuron with at least
    ``min_spikes`` spikes."""
    times = np.asarray(times, dtype=float)
    ids = np.asarray(ids)
    order = np.lexsort((times, ids))
    times, ids = times[order], ids[order]
    cvs = []
    for i in np.unique(ids):
        t = times[ids == i]
        if t.size >= min_spikes:
            isi = np.diff(t)
            cvs.append(isi.std() / isi.mean())
    return np.asarray(cvs)


def first_nonzero_row(values, atol=0.0):
    """Index of the first row of ``values`` (steps × neurons) with |value| > atol, per column
    (-1 if none)."""
    nz = np.abs(values) > atol
    return np.where(nz.any(axis=0), nz.argmax(axis=0), -1)
