"""Network assembly: mistakes are caught when the network is built (or first initialised),
with messages that name the culprit and suggest the closest valid name."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import brainsim as bs
from brainsim import connect


def _receptors():
    return {"ampa": bs.Receptor(bs.ExponentialSynapse(2.0), bs.ConductanceBased(0.0)),
            "gaba": bs.Receptor(bs.ExponentialSynapse(8.0), bs.ConductanceBased(-80.0))}


def _pops(**kw):
    return [bs.Population("exc", 8, bs.LIF(), receptors=_receptors(), **kw),
            bs.Population("inh", 4, bs.LIF(), receptors=_receptors()),
            bs.Population("drive", 5, bs.PoissonSource(10.0))]


def _proj(pre="exc", post="inh", receptor="ampa", n_pre=8, n_post=4, **kw):
    return bs.Projection(pre, post, connect.all_to_all(n_pre, n_post), receptor=receptor, **kw)


def test_valid_network_builds_and_counts():
    net = bs.Network(_pops(), [_proj(), _proj("drive", "exc", n_pre=5, n_post=8)], dt=0.1)
    assert net.n_neurons == 12
    assert net.n_synapses == 32 + 40
    assert net.population("inh").size == 4


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(pre="exx"), r"unknown `pre` population 'exx'\. Did you mean 'exc'\?"),
        (dict(post="ihn"), r"unknown `post` population 'ihn'\. Did you mean 'inh'\?"),
        (dict(receptor="ampa2"), r"unknown receptor of population 'inh' 'ampa2'.*'ampa'\?"),
        (dict(receptor="GABA"), r"'GABA'.*Valid: 'ampa', 'gaba'"),
    ],
)
def test_unknown_names_suggest_the_closest(kwargs, pattern):
    with pytest.raises(KeyError, match=pattern):
        bs.Network(_pops(), [_proj(**kwargs)], dt=0.1)


def test_edge_list_size_mismatch():
    with pytest.raises(ValueError, match=r"8 x 5.*4 \(inh\)"):
        bs.Network(_pops(), [_proj(n_post=5)], dt=0.1)
    with pytest.raises(ValueError, match=r"7 x 4.*8 \(exc\)"):
        bs.Network(_pops(), [_proj(n_pre=7)], dt=0.1)


def test_duplicate_names():
    pops = _pops() + [bs.Population("exc", 3, bs.LIF())]
    with pytest.raises(ValueError, match="two populations are named 'exc'"):
        bs.Network(pops, dt=0.1)
    with pytest.raises(ValueError, match="two projections are named 'exc->inh:ampa'"):
        bs.Network(_pops(), [_proj(), _proj()], dt=0.1)
    # Distinct names make the same pair legal (e.g. two synapse groups onto one receptor).
    bs.Network(_pops(), [_proj(), _proj(name="second")], dt=0.1)


def test_projection_onto_a_spike_source():
    with pytest.raises(ValueError, match="'drive' is a spike source"):
        bs.Network(_pops(), [_proj(post="drive", n_post=5)], dt=0.1)
    with pytest.raises(ValueError, match="spike source takes no receptors"):
        bs.Population("drive", 5, bs.PoissonSource(10.0), receptors=_receptors())


@pytest.mark.parametrize("name, value", [("V_th", np.full(5, -50.0)), ("tau_m", np.ones((8, 1)))])
def test_per_neuron_parameter_shapes(name, value):
    with pytest.raises(ValueError, match=rf"`{name}` must be a scalar or have shape \(8,\)"):
        bs.Population("exc", 8, bs.LIF(**{name: value}))
    bs.Population("exc", 8, bs.LIF(V_th=np.full(8, -50.0)))  # one per neuron is fine


def test_bad_initial_variable_name():
    net = bs.Network(_pops(initial={"vm": bs.init.Uniform(-60.0, -50.0)}), dt=0.1)
    with pytest.raises(KeyError, match=r"initial: .*'vm'\. Did you mean 'v'\?"):
        bs.simulate(net, 1.0, key=jax.random.key(0))


@pytest.mark.parametrize("where", ["initial", "receptor"])
def test_case_only_typos_are_suggested(where):
    # The commonest slip, V for v (or GABA for gaba), must get the suggestion too.
    if where == "initial":
        net = bs.Network(_pops(initial={"V": bs.init.Uniform(-60.0, -50.0)}), dt=0.1)
        with pytest.raises(KeyError, match=r"'V'\. Did you mean 'v'\?"):
            bs.simulate(net, 1.0, key=jax.random.key(0))
    else:
        with pytest.raises(KeyError, match=r"'GABA'\. Did you mean 'gaba'\?"):
            bs.Network(_pops(), [_proj(receptor="GABA")], dt=0.1)


def test_argument_types_and_values():
    with pytest.raises(TypeError, match="Receptor"):
        bs.Population("exc", 8, bs.LIF(), receptors={"ampa": bs.ExponentialSynapse(2.0)})
    with pytest.raises(TypeError, match="neuron model"):
        bs.Population("exc", 8, bs.ExponentialSynapse(2.0))
    with pytest.raises(ValueError, match="`size`"):
        bs.Population("exc", 0, bs.LIF())
    with pytest.raises(ValueError, match="`name`"):
        bs.Population("", 3, bs.LIF())
    with pytest.raises(TypeError, match="brainsim.connect"):
        bs.Projection("exc", "inh", np.ones((8, 4)), receptor="ampa")
    with pytest.raises(ValueError, match="`dt`"):
        bs.Network(_pops(), dt=0.0)
    with pytest.raises(ValueError, match="at least one population"):
        bs.Network([], dt=0.1)
    with pytest.raises(TypeError, match="Population"):
        bs.Network(["exc"], dt=0.1)


def test_monitor_and_result_names():
    net = bs.Network(_pops(), [_proj()], dt=0.1)
    with pytest.raises(KeyError, match=r"'ecx'.*Did you mean 'exc'\?"):
        bs.simulate(net, 1.0, key=jax.random.key(0), record=(bs.SpikeRaster(("ecx",)),))
    with pytest.raises(KeyError, match=r"'vv'.*Did you mean 'v'\?"):
        bs.simulate(net, 1.0, key=jax.random.key(0), record=(bs.StateTrace("exc", "vv"),))
    with pytest.raises(ValueError, match="neuron index 8 out of range"):
        bs.simulate(net, 1.0, key=jax.random.key(0),
                    record=(bs.StateTrace("exc", "v", neurons=[0, 8]),))
    res = bs.simulate(net, 1.0, key=jax.random.key(0), record=(bs.SpikeRaster(),))
    with pytest.raises(KeyError, match=r"Did you mean 'inh'\?"):
        res.spikes("inhh")
    with pytest.raises(ValueError, match="whole number of steps"):
        bs.simulate(net, 1.05, key=jax.random.key(0))
    with pytest.raises(ValueError, match="`key`"):
        bs.simulate(net, 1.0)
