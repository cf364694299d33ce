"""The battery every model passes (STYLE §13): jit runs, vmap over a batch equals the loop,
gradients are finite (and flow), dtype is preserved in float32 and float64, and a second call
with different parameter values does not recompile.

Parametrised over every neuron model, every synaptic kinetics and short-term plasticity.
"""

import functools
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brainsim as bs


class NeuronCase(NamedTuple):
    make: object  # (**overrides) -> model
    param: str  # a parameter varied across the batch and differentiated
    values: tuple  # two values of it
    current: float  # constant drive that makes the model spike within ``steps``
    dt: float
    steps: int


NEURONS = {
    "LIF": NeuronCase(lambda **kw: bs.LIF(**kw), "tau_m", (10.0, 12.0), 1000.0, 0.1, 200),
    "ALIF": NeuronCase(lambda **kw: bs.ALIF(**kw), "beta", (1.0, 2.0), 1000.0, 0.1, 200),
    "AdEx": NeuronCase(lambda **kw: bs.AdEx(**kw), "a", (2.0, 4.0), 1000.0, 0.1, 200),
    "Izhikevich": NeuronCase(
        lambda **kw: bs.Izhikevich.preset("RS", **kw), "d", (6.0, 8.0), 10.0, 0.1, 200
    ),
    "HodgkinHuxley": NeuronCase(
        lambda **kw: bs.HodgkinHuxley(**kw), "g_Na", (110.0, 120.0), 10.0, 0.05, 200
    ),
    "TraubMiles": NeuronCase(
        lambda **kw: bs.TraubMiles(**kw), "g_K", (5000.0, 6000.0), 2000.0, 0.05, 200
    ),
    "ExpIF": NeuronCase(lambda **kw: bs.ExpIF(**kw), "Delta_T", (2.0, 3.0), 1000.0, 0.1, 200),
    "QIF": NeuronCase(lambda **kw: bs.QIF(**kw), "k", (0.6, 0.7), 300.0, 0.1, 200),
}


def run_neuron(model, state, current, dt, steps):
    """Scan ``steps`` steps with a constant current; return (final state, spikes per step)."""

    def body(s, _):
        drive = bs.Drive(jnp.full(s.v.shape, current, s.v.dtype), jnp.zeros_like(s.v))
        return model.step(s, drive, 0.0, dt, jax.random.key(0))  # deterministic models

    return jax.lax.scan(body, state, None, length=steps)


def perturbed_state(model, n, shift, dtype=None):
    state = model.init(n, dtype=dtype)
    return state._replace(v=state.v + jnp.asarray(shift, state.v.dtype))


def float_leaves(tree):
    return [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]


@pytest.fixture(params=sorted(NEURONS), ids=sorted(NEURONS))
def name(request):
    return request.param


TRACES: dict[str, int] = {}


@functools.cache
def compiled_run(name):
    """One compiled simulation per model class, shared by the tests (compilation dominates
    their cost). ``TRACES[name]`` counts how often it was traced."""
    case = NEURONS[name]

    @eqx.filter_jit
    def run(model, state):
        TRACES[name] = TRACES.get(name, 0) + 1  # a Python side effect: runs only when tracing
        return run_neuron(model, state, case.current, case.dt, case.steps)

    return run


def test_neuron_jit_runs_and_spikes(name):
    case = NEURONS[name]
    model = case.make()
    state = model.init(3)
    final, spikes = compiled_run(name)(model, state)
    assert type(final) is type(state)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in float_leaves(final))
    assert spikes.shape == (case.steps, 3)
    assert set(np.unique(np.asarray(spikes))) <= {0.0, 1.0}
    assert float(spikes.sum()) >= 3  # the spike path is exercised
    assert model.voltage(final) is final.v


def test_neuron_vmap_matches_loop(name):
    case = NEURONS[name]
    models = [case.make(**{case.param: v}) for v in case.values]
    states = [perturbed_state(m, 3, s) for m, s in zip(models, (0.0, 1.0), strict=True)]
    stacked_model = jax.tree.map(lambda *xs: jnp.stack(xs), *models)
    stacked_state = jax.tree.map(lambda *xs: jnp.stack(xs), *states)

    batched = eqx.filter_jit(
        eqx.filter_vmap(lambda m, s: run_neuron(m, s, case.current, case.dt, case.steps))
    )
    final_b, spikes_b = batched(stacked_model, stacked_state)
    assert spikes_b.shape == (2, case.steps, 3)
    for i, (m, s) in enumerate(zip(models, states, strict=True)):
        final, spikes = compiled_run(name)(m, s)
        np.testing.assert_array_equal(spikes_b[i], spikes)
        np.testing.assert_allclose(final_b.v[i], final.v, rtol=1e-5, atol=1e-3)
    # the batch really differed (two parameter values and initial states)
    assert not np.array_equal(np.asarray(final_b.v[0]), np.asarray(final_b.v[1]))


def test_neuron_grad_is_finite_and_flows(name):
    case = NEURONS[name]
    model = case.make()
    state = model.init(3)
    shift = jnp.array([0.0, 0.5, 1.0])

    @eqx.filter_jit
    @eqx.filter_grad
    def grad(params):
        model, current = params
        s = state._replace(v=state.v + shift)
        final, spikes = run_neuron(model, s, current, case.dt, case.steps)
        # mean voltage at the end plus the spike count (through the surrogate)
        return jnp.mean(model.voltage(final)) + jnp.sum(spikes)

    g_model, g_current = grad((model, jnp.asarray(case.current)))
    leaves = float_leaves(g_model)
    assert leaves and all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)
    assert np.isfinite(float(g_current))
    assert float(g_current) != 0.0  # the input reaches the loss
    assert float(getattr(g_model, case.param)) != 0.0  # so does the varied parameter


@pytest.mark.parametrize("name", ["AdEx", "ExpIF", "Izhikevich", "QIF"])
def test_neuron_grad_through_reset_is_finite(name):
    # detach_reset=False sends the gradient through the reset too. Models whose membrane
    # overshoots the peak by orders of magnitude in one step must keep it finite.
    case = NEURONS[name]
    model = case.make(detach_reset=False)
    state = model.init(3)

    @eqx.filter_jit
    @eqx.filter_grad
    def grad(model):
        final, spikes = run_neuron(model, state, case.current, case.dt, case.steps)
        return jnp.mean(model.voltage(final)) + jnp.sum(spikes)

    leaves = float_leaves(grad(model))
    assert leaves and all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)


def test_neuron_float32_preserved(name):
    model = NEURONS[name].make()
    final, spikes = compiled_run(name)(model, model.init(3, dtype=jnp.float32))
    assert all(x.dtype == jnp.float32 for x in float_leaves(final))
    assert spikes.dtype == jnp.float32
    assert final.refractory.dtype == jnp.int32


def test_neuron_float64_preserved(name, x64):
    case = NEURONS[name]
    model = case.make()  # built with x64 on: parameters are float64
    run = jax.jit(lambda s: run_neuron(model, s, case.current, case.dt, 20))
    out = {}
    for dtype in (jnp.float64, jnp.float32):  # float32 state with float64 parameters too
        final, spikes = run(model.init(2, dtype=dtype))
        assert all(x.dtype == dtype for x in float_leaves(final)), dtype
        assert spikes.dtype == dtype
        out[dtype] = final.v
    # and the two precisions agree over a short run (no dtype-dependent logic)
    np.testing.assert_allclose(out[jnp.float32], out[jnp.float64], rtol=1e-4, atol=1e-3)


def test_neuron_new_parameter_values_do_not_recompile(name):
    case = NEURONS[name]
    run = compiled_run(name)
    first = case.make(**{case.param: case.values[0]})
    jax.block_until_ready(run(first, first.init(3)))
    before = TRACES[name]
    second = case.make(**{case.param: case.values[1]})
    jax.block_until_ready(run(second, second.init(3)))
    assert TRACES[name] == before


def test_every_public_neuron_is_in_the_battery():
    public = {
        name
        for name in dir(bs)
        if isinstance(getattr(bs, name), type)
        and issubclass(getattr(bs, name), bs.AbstractNeuron)
        and getattr(bs, name) is not bs.AbstractNeuron
    }
    assert public == set(NEURONS)


# ------------------------------------------------------------------ synapses


class SynapseCase(NamedTuple):
    make: object
    param: str
    values: tuple


KINETICS = {
    "ExponentialSynapse": SynapseCase(lambda **kw: bs.ExponentialSynapse(**kw), "tau", (5.0, 7.0)),
    "AlphaSynapse": SynapseCase(lambda **kw: bs.AlphaSynapse(**kw), "tau", (2.0, 3.0)),
    "DualExponentialSynapse": SynapseCase(
        lambda **kw: bs.DualExponentialSynapse(**{"tau_rise": 1.0, **kw}), "tau_decay", (5.0, 6.0)
    ),
    # No parameter: the battery varies the weight instead (param None).
    "PulseSynapse": SynapseCase(lambda **kw: bs.PulseSynapse(**kw), None, (1.5, 2.5)),
}

SPIKE_TRAIN = (np.arange(100) % 15 == 0).astype(np.float32)  # a spike every 1.5 ms
SYN_DT = 0.1


def run_kinetics(kinetics, state, weight, spikes):
    """Step order of the network: arrive, step mean (what the neuron sees), decay."""

    def body(s, spike):
        s = kinetics.arrive(s, weight * spike)
        mean = kinetics.mean(s, SYN_DT)
        return kinetics.decay(s, SYN_DT), mean

    return jax.lax.scan(body, state, spikes)


def run_stp(stp, state, spikes):
    def body(s, spike):
        return stp.step(s, jnp.broadcast_to(spike, s.u.shape).astype(s.u.dtype), SYN_DT)

    return jax.lax.scan(body, state, spikes)


@pytest.fixture(
    params=sorted(KINETICS) + ["TsodyksMarkram"], ids=sorted(KINETICS) + ["TsodyksMarkram"]
)
def syn(request):
    if request.param == "TsodyksMarkram":
        return "stp", SynapseCase(
            lambda **kw: bs.TsodyksMarkram(**{"tau_fac": 50.0, **kw}), "U", (0.3, 0.5)
        )
    return "kinetics", KINETICS[request.param]


def run_syn(kind, model, n=3, dtype=jnp.float32, weight=1.5):
    spikes = jnp.asarray(SPIKE_TRAIN, dtype)
    if kind == "stp":
        return run_stp(model, model.init(n, dtype), spikes)
    return run_kinetics(model, model.init(n, dtype), jnp.asarray(weight, dtype), spikes)


def test_synapse_jit_runs(syn):
    kind, case = syn
    model = case.make()
    final, out = jax.jit(lambda: run_syn(kind, model))()
    assert out.shape == (100, 3)
    assert bool(jnp.all(jnp.isfinite(out))) and float(out.max()) > 0.0
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(final))


def test_synapse_vmap_matches_loop(syn):
    kind, case = syn
    if case.param is None:  # no parameter: a batch of weights
        model = case.make()
        weights = jnp.asarray(case.values)
        _, out_b = jax.jit(jax.vmap(lambda w: run_syn(kind, model, weight=w)))(weights)
        outs = [jax.jit(lambda w: run_syn(kind, model, weight=w)[1])(w) for w in weights]
    else:
        models = [case.make(**{case.param: v}) for v in case.values]
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *models)
        _, out_b = eqx.filter_jit(eqx.filter_vmap(lambda m: run_syn(kind, m)))(stacked)
        outs = [eqx.filter_jit(lambda m: run_syn(kind, m))(m)[1] for m in models]
    for i, out in enumerate(outs):
        np.testing.assert_allclose(out_b[i], out, rtol=1e-6, atol=1e-7)
    assert not np.allclose(outs[0], outs[1])


def test_synapse_grad_is_finite_and_flows(syn):
    kind, case = syn
    model = case.make()

    @eqx.filter_jit
    @eqx.filter_grad
    def grad(params):
        model, weight = params
        return jnp.sum(run_syn(kind, model, weight=weight)[1])

    g_model, g_weight = grad((model, jnp.asarray(1.5)))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in float_leaves(g_model))
    if case.param is not None:
        assert float(getattr(g_model, case.param)) != 0.0
    if kind == "kinetics":
        assert float(g_weight) > 0.0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_synapse_dtype_preserved(syn, dtype, request):
    if dtype == "float64":
        request.getfixturevalue("x64")
    kind, case = syn
    model = case.make()
    final, out = jax.jit(lambda: run_syn(kind, model, dtype=jnp.dtype(dtype)))()
    assert out.dtype == jnp.dtype(dtype)
    assert all(x.dtype == jnp.dtype(dtype) for x in jax.tree.leaves(final))


def test_synapse_new_parameter_values_do_not_recompile(syn):
    kind, case = syn
    traces = []

    @eqx.filter_jit
    def run(model, weight):
        traces.append(None)
        return run_syn(kind, model, weight=weight)

    for value in case.values:
        if case.param is None:  # no parameter: new weights
            jax.block_until_ready(run(case.make(), jnp.asarray(value)))
        else:
            jax.block_until_ready(run(case.make(**{case.param: value}), jnp.asarray(1.5)))
    assert len(traces) == 1
