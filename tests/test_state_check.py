"""A state from another network is refused wherever a state enters (brainsim/_state_check.py):
``simulate(state=)``, ``simulate_sharded``, ``run_long``, ``save_checkpoint`` and
``load_checkpoint``, with the leaf that differs, both shapes, and what it means."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brainsim as bs
from brainsim import connect

KEY = jax.random.key(0)


def network(n=5, delay=1.0, stp=False, plastic=False):
    """``n`` LIF neurons "E" onto themselves (receptor ``exc``) with ``delay`` ms."""
    rec = {"exc": bs.Receptor(bs.ExponentialSynapse(2.0), bs.CurrentBased())}
    pops = [bs.Population("E", n, bs.LIF(I_e=400.0), receptors=rec)]
    edges = connect.fixed_probability(n, n, 0.5, weight=1.0, delay=delay, seed=0)
    proj = bs.Projection(
        "E",
        "E",
        edges,
        receptor="exc",
        stp=bs.TsodyksMarkram(U=0.3, tau_rec=100.0, tau_fac=50.0) if stp else None,
        plasticity=bs.plasticity.PairSTDP() if plastic else None,
    )
    return bs.Network(pops, [proj], dt=0.1)


def test_state_with_other_delays_is_refused():
    net, other = network(delay=1.0), network(delay=2.0)
    with pytest.raises(
        ValueError,
        match=r"^simulate: state\.receptors\['E'\]\['exc'\]\.ring has shape \(105,\) but this "
        r"network needs \(55,\): the state comes from a network with other delays into E:exc "
        r"\(a ring of 21 rows, for delays up to 20 steps; this network's longest delay into it "
        r"is 10 steps\)",
    ):
        bs.simulate(net, 1.0, state=other.init(KEY))


def test_state_with_another_population_size_is_refused():
    with pytest.raises(
        ValueError,
        match=r"state\.populations\['E'\]\.v has shape \(6,\) but this "
        r"network needs \(5,\).*population 'E' has another size \(this one has 5\)",
    ):
        bs.simulate(network(n=5), 1.0, state=network(n=6).init(KEY))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(stp=True), r"the state lacks"),
        (dict(plastic=True), r"the state lacks"),
    ],
)
def test_state_without_the_projections_state_is_refused(kwargs, message):
    with pytest.raises(
        ValueError,
        match=r"`state` comes from another network: this network needs "
        r"state\.(stp|plasticity)\['E->E:exc'\].*" + message,
    ):
        bs.simulate(network(**kwargs), 1.0, state=network().init(KEY))
    with pytest.raises(
        ValueError,
        match=r"the state has state\.(stp|plasticity)\['E->E:exc'\].*"
        r"which this network does not have",
    ):
        bs.simulate(network(), 1.0, state=network(**kwargs).init(KEY))


def test_state_with_a_foreign_dtype_is_refused():
    state = network().init(KEY)
    pops = dict(state.populations)
    pops["E"] = pops["E"]._replace(refractory=pops["E"].refractory.astype(jnp.float32))
    with pytest.raises(
        ValueError,
        match=r"state\.populations\['E'\]\.refractory has dtype float32 "
        r"but this network needs int32",
    ):
        bs.simulate(network(), 1.0, state=state._replace(populations=pops))


def test_own_states_pass_in_either_precision(x64):
    net = network()
    first = bs.simulate(net, 1.0, key=KEY)
    bs.simulate(net, 1.0, state=first.state)  # a continuation
    for dtype in (jnp.float32, jnp.float64):
        res = bs.simulate(net, 1.0, state=net.init(KEY, dtype=dtype))
        assert res.state.populations["E"].v.dtype == dtype


def test_batched_state_is_refused_by_simulate_and_accepted_by_save_checkpoint(tmp_path):
    net = network()
    batched = jax.vmap(net.init)(jax.random.split(KEY, 3))
    with pytest.raises(ValueError, match=r"`state` is batched \(state\.step has shape \(3,\)\)"):
        bs.simulate(net, 1.0, state=batched)
    bs.save_checkpoint(tmp_path / "b.npz", net, batched)
    with pytest.raises(
        ValueError,
        match=r"^save_checkpoint: state\.populations\['E'\]\.v has "
        r"shape \(6,\) \(after the batch axes \(3,\)\) but this network needs",
    ):
        bs.save_checkpoint(
            tmp_path / "c.npz", net, jax.vmap(network(n=6).init)(jax.random.split(KEY, 3))
        )


def test_every_entry_point_refuses_a_foreign_state(tmp_path):
    net, other = network(delay=1.0), network(delay=2.0)
    foreign = other.init(KEY)
    ring = r"state\.receptors\['E'\]\['exc'\]\.ring has shape \(105,\)"
    with pytest.raises(ValueError, match=r"^save_checkpoint: " + ring):
        bs.save_checkpoint(tmp_path / "x.npz", net, foreign)
    assert not (tmp_path / "x.npz").exists()
    with pytest.raises(ValueError, match=r"^run_long: " + ring):
        bs.run_long(net, 1.0, tmp_path / "run", state=foreign, progress=False)
    mesh = jax.make_mesh((1,), ("neurons",), devices=jax.devices()[:1])
    with pytest.raises(ValueError, match=r"^simulate: " + ring):
        bs.simulate_sharded(net, 1.0, mesh=mesh, state=foreign)


def test_loading_a_foreign_state_is_refused(tmp_path, monkeypatch):
    """A file written before save_checkpoint checked its state can hold `net` with the state of
    `other`; loaded through a template that fits the file, the state is still refused."""
    import brainsim._checkpoint as ckpt_module

    net, other = network(delay=1.0), network(delay=2.0)
    monkeypatch.setattr(ckpt_module, "check_state", lambda *a, **k: None)
    path = bs.save_checkpoint(tmp_path / "old.npz", net, other.init(KEY))
    monkeypatch.undo()
    with pytest.raises(bs.CheckpointError, match=r"old\.npz.*does not match this network's state"):
        bs.load_checkpoint(path, net)
    with pytest.raises(
        bs.CheckpointError,
        match=r"old\.npz.*: load_checkpoint: state\.receptors"
        r"\['E'\]\['exc'\]\.ring has shape \(105,\) but this network needs \(55,\)",
    ):
        bs.load_checkpoint(path, net, like=jax.eval_shape(other.init, KEY))


def test_a_state_that_is_not_a_network_state_is_named():
    with pytest.raises(
        TypeError,
        match=r"simulate: `state` must be a brainsim\.NetworkState.*"
        r"got dict",
    ):
        bs.simulate(network(), 1.0, state={"step": np.int32(0)})
