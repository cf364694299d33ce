"""Bad input to the Python API raises a clear error at build time.

Every numeric parameter of every public model, input, plasticity rule and initialiser is tried
with NaN, ±inf, a complex number, a string, None, a boolean and (where the docstring requires a
sign) a negative or zero value; the error must be a ``ValueError``/``TypeError`` whose message
names the owner, the argument in backticks and the value given. Then the cases of networks,
builders, runs and monitors, one by one. Nothing here runs a simulation except where the case
is about a run's arguments (they fail before it starts).
"""

from __future__ import annotations

import inspect
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brainsim as bs
from brainsim import connect, surrogate
from brainsim import init as bs_init
from brainsim import plasticity as pl

NAN, INF = float("nan"), float("inf")

# Rules per argument: "x" any finite real number, "+" > 0, "0+" >= 0; " inf" after it also
# accepts +inf (a time constant without decay, an open upper bound), " -inf" accepts -inf (an
# open lower bound).
MEMBRANE = dict(C_m="+", E_L="x", V_reset="x", t_ref="0+", I_e="x")
LIF = dict(MEMBRANE, tau_m="+ inf", V_th="x inf")
EXP_IF = dict(MEMBRANE, g_L="+", V_T="x", Delta_T="+", V_peak="x")
HH = dict(C_m="+", g_Na="0+", g_K="0+", g_L="0+", E_Na="x", E_K="x", E_L="x", t_ref="0+", I_e="x")
PAIR = dict(tau_plus="+", tau_minus="+", A_plus="0+", A_minus="0+")
TRIPLET = dict(tau_x="+", tau_y="+", A2_plus="0+", A3_plus="0+", A2_minus="0+", A3_minus="0+")
BOUNDS = dict(w_max="x", w_min="x")
SCALING = dict(target_rate="0+", tau="+", beta="0+", w_min="x -inf", w_max="x inf")
NORMAL = connect.Normal(0.0, 1.0)

# (factory, required arguments, rules); the message names the owner as the class is named
# unless OWNERS says otherwise.
SPECS = [
    (bs.LIF, {}, LIF),
    (bs.ALIF, {}, dict(LIF, beta="0+", tau_a="+")),
    (bs.AdEx, {}, dict(EXP_IF, tau_w="+", a="x", b="x")),
    (bs.ExpIF, {}, EXP_IF),
    (bs.QIF, {}, dict(MEMBRANE, k="+", V_c="x", V_peak="x")),
    (
        bs.Izhikevich,
        {},
        dict(a="+", b="x", c="x", d="x", V_peak="x", V_init="x", C_m="+", I_e="x", t_ref="0+"),
    ),
    (bs.HodgkinHuxley, {}, dict(HH, V_init="x", V_spike="x")),
    (bs.TraubMiles, {}, dict(HH, V_T="x", V_spike="x")),
    (bs.ExponentialSynapse, {}, dict(tau="+")),
    (bs.AlphaSynapse, {}, dict(tau="+")),
    (bs.DualExponentialSynapse, {}, dict(tau_rise="+", tau_decay="+")),
    (bs.ConductanceBased, {}, dict(E_rev="x")),
    (bs.NMDA, {}, dict(E_rev="x", mg="0+", alpha="x", beta="+")),
    (bs.TsodyksMarkram, {}, dict(U="+", tau_rec="+", tau_fac="+")),
    (bs.ConstantCurrent, dict(amplitude=1.0), dict(amplitude="x")),
    (bs.PoissonSource, dict(rate=10.0), dict(rate="0+")),
    (bs.TimedArray, dict(values=[1.0], dt=1.0), dict(values="x", dt="+", t_start="x")),
    (bs.SpikeArray, dict(spikes=[[1.0]]), dict(spikes="0+", t_start="x")),
    (pl.PairSTDP, {}, PAIR),
    (pl.SymmetricSTDP, {}, dict(tau="+", A="0+", A_pre_offset="0+")),
    (pl.TripletSTDP, {}, dict(TRIPLET, tau_plus="+", tau_minus="+")),
    (pl.RewardModulatedSTDP, {}, dict(PAIR, tau_c="+", eta="0+")),
    (
        pl.PowerLawSTDP,
        {},
        dict(tau_pre="+", tau_post="+", eta="0+", eta_pre="0+", x_tar="x", mu="0+", w_max="+"),
    ),
    (pl.SynapticScaling, dict(target_rate=5.0), dict(SCALING, initial_rate="0+")),
    (pl.Normalization, dict(total=1.0), dict(total="+")),
    (
        pl.AdaptiveThreshold,
        dict(model=bs.LIF()),
        dict(theta_plus="x", tau_theta="+ inf", target_rate="0+"),
    ),
    (pl.Additive, {}, dict(w_max="x inf", w_min="x -inf")),
    (pl.Multiplicative, {}, BOUNDS),
    (pl.Gutig, dict(mu_plus=0.5), dict(BOUNDS, mu_plus="0+", mu_minus="0+")),
    (bs_init.Constant, dict(value=0.0), dict(value="x")),
    (bs_init.Uniform, dict(low=-1.0, high=1.0), dict(low="x", high="x")),
    (bs_init.Normal, dict(mean=0.0, std=1.0), dict(mean="x", std="0+")),
    (surrogate.FastSigmoid, {}, dict(scale="+")),
    (surrogate.Sigmoid, {}, dict(scale="+")),
    (surrogate.Arctan, {}, dict(scale="+")),
    (surrogate.Triangle, {}, dict(scale="+", height="+")),
    (surrogate.Exponential, {}, dict(scale="+")),
    (surrogate.Rectangular, {}, dict(scale="+")),
    (connect.Constant, dict(value=1.0), dict(value="x")),
    (connect.Uniform, dict(low=0.0, high=1.0), dict(low="x", high="x")),
    (connect.Normal, dict(mean=0.0, std=1.0), dict(mean="x", std="0+")),
    (connect.LogNormal, dict(mean=1.0, std=0.5), dict(mean="+", std="0+")),
    (connect.Clipped, dict(initialiser=NORMAL), dict(low="x -inf", high="x inf")),
    (connect.Gaussian, dict(p0=0.5, sigma=1.0), dict(p0="0+", sigma="+")),
    (connect.Exponential, dict(p0=0.5, length=1.0), dict(p0="0+", length="+")),
]
OWNERS = {
    bs_init.Constant: "init.Constant",
    bs_init.Uniform: "init.Uniform",
    bs_init.Normal: "init.Normal",
    surrogate.Exponential: "surrogate.Exponential",
}
SPECS = [(f, OWNERS.get(f, f.__name__), required, rules) for f, required, rules in SPECS]

# Arguments whose None means "use the default" (not a bad value).
NONE_MEANS_DEFAULT = {(pl.Gutig, "mu_minus"), (pl.SynapticScaling, "initial_rate")}


def _bad_values(rule):
    """``(value, error, text the message must show)`` for an argument with ``rule``."""
    sign, *infinite = rule.split()
    yield NAN, ValueError, "nan"
    # A bound open on one side (e.g. w_max=inf) meets the other infinity in the ordering of
    # the two bounds, which names both (explicit cases below).
    if not infinite or sign != "x":
        if "inf" not in infinite:
            yield INF, ValueError, "inf"
        yield -INF, ValueError, "-inf"
    yield 1.0 + 2.0j, TypeError, "(1+2j) (complex)"
    yield "abc", TypeError, "'abc' (str)"
    yield None, TypeError, "None (NoneType)"
    yield True, TypeError, "True (bool)"
    yield np.bool_(False), TypeError, "(bool)"
    if sign == "+":
        yield 0.0, ValueError, "got 0.0"
    if sign in ("+", "0+"):
        yield -1.0, ValueError, "got -1.0"


def _cases():
    for factory, owner, required, rules in SPECS:
        for name, rule in rules.items():
            for value, error, shown in _bad_values(rule):
                if value is None and (factory, name) in NONE_MEANS_DEFAULT:
                    continue
                args = (factory, owner, required, name, value, error, shown)
                yield pytest.param(*args, id=f"{owner}-{name}-{value!r}")


@pytest.mark.parametrize("factory, owner, required, name, value, error, shown", list(_cases()))
def test_bad_parameter_value_is_refused_naming_owner_argument_and_value(
    factory, owner, required, name, value, error, shown
):
    with pytest.raises(error, match=re.escape(f"{owner}: `{name}`")) as info:
        factory(**{**required, name: value})
    assert shown in str(info.value)


ARRAY_SPECS = [s for s in SPECS if s[0].__module__ != "brainsim.connect"]  # connect: scalars


@pytest.mark.parametrize(
    "factory, owner, required, rules", [s[:4] for s in ARRAY_SPECS], ids=[s[1] for s in ARRAY_SPECS]
)
def test_one_bad_element_of_a_per_neuron_array_is_found(factory, owner, required, rules):
    name = next(iter(rules))
    with pytest.raises(ValueError, match=re.escape(f"{owner}: `{name}`") + ".*nan at index 1"):
        factory(**{**required, name: np.array([1.0, np.nan])})


def test_the_table_covers_every_numeric_argument_of_every_public_model():
    """A class added with an ``ArrayLike`` argument must get a row in SPECS."""
    covered = {(f, n) for f, _, _, rules in SPECS for n in rules} | {
        (bs.StepCurrent, "times"),  # arrays of events: test_bad_inputs_are_refused
        (bs.StepCurrent, "amplitudes"),
        (bs.SpikeGenerator, "times"),
        (bs.SpikeGenerator, "indices"),
    }
    missing = []
    for module in (bs, pl, bs_init, surrogate):
        for obj in vars(module).values():
            if not inspect.isclass(obj) or inspect.isabstract(obj) or issubclass(obj, Exception):
                continue
            for p in inspect.signature(obj).parameters.values():
                if "ArrayLike" in str(p.annotation) and (obj, p.name) not in covered:
                    missing.append(f"{obj.__name__}.{p.name}")
    assert not missing


@pytest.mark.parametrize(
    "make",
    [
        lambda: bs.LIF(tau_m=INF, V_th=INF),  # a perfect integrator; a neuron that never spikes
        lambda: bs.ALIF(tau_m=INF, V_th=INF),
        lambda: pl.AdaptiveThreshold(bs.LIF(), tau_theta=INF),
        lambda: pl.Additive(w_max=INF, w_min=-INF),
        lambda: pl.TripletSTDP(),  # unbounded Additive by default
        lambda: pl.SynapticScaling(5.0, w_min=-INF, w_max=INF),
        lambda: connect.Clipped(connect.Normal(0.0, 1.0), low=-INF, high=INF),
    ],
)
def test_infinity_is_accepted_where_it_has_a_meaning(make):
    make()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: bs.LIF(V_th=-INF), r"LIF: `V_th` \(-inf mV\) must be above `V_reset`"),
        (lambda: pl.Additive(w_max=-INF), r"Additive: `w_max` must exceed w_min.*w_max = -inf"),
        (lambda: pl.Additive(w_min=INF), r"Additive: `w_max` must exceed w_min.*w_min = inf"),
        (lambda: pl.SynapticScaling(5.0, w_min=INF), r"SynapticScaling: `w_max` must exceed"),
        (lambda: pl.Multiplicative(w_max=0.0), r"Multiplicative: `w_max` must exceed w_min"),
        (
            lambda: connect.Clipped(connect.Normal(0.0, 1.0), low=INF),
            r"Clipped: `low` = inf, `high` = inf clip every value to infinity",
        ),
        (
            lambda: connect.Clipped(connect.Normal(0.0, 1.0), low=-INF, high=-INF),
            r"Clipped: `low` = -inf, `high` = -inf",
        ),
    ],
)
def test_an_infinite_bound_on_the_wrong_side_is_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_infinite_membrane_time_constant_is_a_perfect_integrator():
    """LIF(tau_m=inf) has no leak: V rises by I_e dt / C_m per step (exactly, mV)."""
    lif = bs.LIF(tau_m=INF, C_m=200.0, E_L=-70.0, V_th=0.0, I_e=100.0)
    state = lif.init(1)
    for _ in range(3):
        state, _ = lif.step(state, bs.Drive.zeros(1, jnp.float32), 0.0, 0.5, jax.random.key(0))
    np.testing.assert_allclose(state.v, [-70.0 + 3 * 100.0 * 0.5 / 200.0], rtol=1e-6)


def test_traced_parameters_are_not_inspected():
    """Inside vmap/jit a value cannot be checked (it was when the model was first built)."""
    taus = jnp.array([10.0, jnp.nan])
    out = jax.vmap(lambda t: bs.LIF(tau_m=t).tau_m)(taus)
    assert np.isnan(out[1])
    assert jax.jit(lambda t: pl.PairSTDP(A_plus=t).A_plus)(-1.0) == -1.0
    spikes = jax.vmap(lambda x: bs.SpikeArray(x).spikes)(-jnp.ones((2, 3, 1)))
    assert spikes.shape == (2, 3, 1)


# ----------------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: bs.PoissonSource(rate=INF), ValueError, r"PoissonSource: `rate` must be finite"),
        (
            lambda: bs.PoissonSource(bs.TimedArray([5.0, -1.0], dt=1.0)),
            ValueError,
            r"PoissonSource: `rate.values` must be >= 0 \(in Hz\); got -1.0 at index 1",
        ),
        (
            lambda: bs.TimedArray([5.0, np.nan], dt=1.0),
            ValueError,
            r"TimedArray: `values` must be finite; got nan at index 1",
        ),
        (lambda: bs.TimedArray([5.0, np.inf], dt=1.0), ValueError, r"TimedArray: `values`"),
        (
            lambda: bs.SpikeArray(np.array([[0.0, -1.0]])),
            ValueError,
            r"SpikeArray: `spikes` must be >= 0; got -1.0 at index \(0, 1\)",
        ),
        (
            lambda: bs.StepCurrent([np.nan, 1.0], [1.0, 2.0]),
            ValueError,
            r"StepCurrent: `times` must be finite \(in ms\); got nan at index 0",
        ),
        (lambda: bs.StepCurrent([0.0, np.inf], [1.0, 2.0]), ValueError, r"StepCurrent: `times`"),
        (lambda: bs.StepCurrent(["a", "b"], [1.0, 2.0]), TypeError, r"StepCurrent: `times`"),
        (
            lambda: bs.StepCurrent([0.0, 1.0], [1.0, np.nan]),
            ValueError,
            r"StepCurrent: `amplitudes` must be finite \(in pA\); got nan at index 1",
        ),
        (lambda: bs.StepCurrent([0.0, 1.0], [1.0, 2.0j]), TypeError, r"StepCurrent: `amplitudes`"),
        (
            lambda: bs.StepCurrent([1.0, 1.0], [1.0, 2.0]),
            ValueError,
            r"`times` must be strictly increasing; got 1.0 ms after 1.0 ms",
        ),
        (lambda: bs.SpikeGenerator([np.nan], [0]), ValueError, r"SpikeGenerator: `times`"),
        (lambda: bs.SpikeGenerator([1.0], [0.5]), TypeError, r"SpikeGenerator: `indices`"),
        (lambda: bs.SpikeGenerator([1.0], [True]), TypeError, r"SpikeGenerator: `indices`"),
        (lambda: bs.TimedArray([1.0], dt=True), TypeError, r"TimedArray: `dt`.*True \(bool\)"),
        (
            lambda: bs.TimedArray([1.0], dt=1.0, t_start=np.nan),
            ValueError,
            r"TimedArray: `t_start`",
        ),
        (lambda: bs.SpikeArray([[1.0]], t_start="0"), TypeError, r"SpikeArray: `t_start`"),
        (lambda: bs.LearnableDelays(max_delay=INF), ValueError, r"LearnableDelays: `max_delay`"),
        (lambda: bs.LearnableDelays(max_delay=True), TypeError, r"LearnableDelays: `max_delay`"),
    ],
)
def test_bad_inputs_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


# ----------------------------------------------------------------------------- connectivity


@pytest.mark.parametrize(
    "make, error, match",
    [
        (
            lambda: connect.from_arrays([0.0, 1.7], [0, 1], n_pre=2, n_post=2),
            TypeError,
            r"from_arrays: `pre` must be an array of integers.*float64.*np\.asarray\(pre, int\)",
        ),
        (
            lambda: connect.from_arrays([0, 1], [True, False], n_pre=2, n_post=2),
            TypeError,
            r"from_arrays: `post` must be an array of integers.*bool",
        ),
        (
            lambda: connect.from_arrays([0], [0], n_pre=True, n_post=2),
            ValueError,
            r"from_arrays: `n_pre` must be a positive integer; got True \(bool\)",
        ),
        (
            lambda: connect.from_arrays([0], [0], n_pre=1, n_post=1, weight="w"),
            TypeError,
            r"from_arrays: `weight`.*'w' \(str\)",
        ),
        (
            lambda: connect.from_arrays([0], [0], n_pre=1, n_post=1, weight=None),
            TypeError,
            r"from_arrays: `weight`.*None",
        ),
        (
            lambda: connect.from_arrays([0], [0], n_pre=1, n_post=1, weight=True),
            TypeError,
            r"from_arrays: `weight`.*True \(bool\)",
        ),
        (
            lambda: connect.from_arrays([0, 1], [0, 1], n_pre=2, n_post=2, weight=[1.0, np.nan]),
            ValueError,
            r"EdgeList: `weight` contains non-finite values; got nan at index 1",
        ),
        (
            lambda: connect.from_arrays([0, 1], [0, 1], n_pre=2, n_post=2, delay=[1.0, -0.5]),
            ValueError,
            r"EdgeList: `delay` must be >= 0 \(in ms\); got -0.5 at index 1",
        ),
        (
            lambda: connect.from_arrays([0], [0], n_pre=1, n_post=1, delay=np.inf),
            ValueError,
            r"EdgeList: `delay` contains non-finite values; got inf",
        ),
        (
            lambda: connect.from_arrays([0], [0], n_pre=1, n_post=1, seed="s"),
            TypeError,
            r"from_arrays: `seed` must be an integer",
        ),
        (
            lambda: connect.all_to_all(2, 2, weight=connect.Normal(1.0, 0.1), delay=np.nan),
            ValueError,
            r"`delay`",
        ),
        (
            lambda: connect.fixed_probability(5, 5, 1.5),
            ValueError,
            r"fixed_probability: `p` must lie in \[0, 1\]; got 1.5",
        ),
        (
            lambda: connect.fixed_probability(5, 5, np.nan),
            ValueError,
            r"fixed_probability: `p` must be finite; got nan",
        ),
        (
            lambda: connect.fixed_probability(5, 5, True),
            TypeError,
            r"fixed_probability: `p`.*True \(bool\)",
        ),
        (lambda: connect.fixed_probability(5, 5, "0.1"), TypeError, r"fixed_probability: `p`"),
        (
            lambda: connect.fixed_probability(5, 5, [0.1, 0.2]),
            TypeError,
            r"fixed_probability: `p` must be a single number",
        ),
        (lambda: connect.fixed_indegree(5, 5, True), ValueError, r"fixed_indegree: `k`"),
        (
            lambda: connect.fixed_outdegree(5, 2.0, 1),
            ValueError,
            r"fixed_outdegree: `n_post` must be a positive integer; got 2.0 \(float\)",
        ),
        (
            lambda: connect.fixed_total_number(5, 5, -1),
            ValueError,
            r"fixed_total_number: `n_synapses`",
        ),
        (lambda: connect.one_to_one(np.bool_(True)), ValueError, r"one_to_one: `n`"),
        (
            lambda: connect.Normal(0.0, -1.0),
            ValueError,
            r"Normal: `std` must be >= 0; got -1.0\. Pass a value >= 0\.",
        ),
        (lambda: connect.Uniform(1.0, 0.0), ValueError, r"Uniform: `high`"),
        (
            lambda: connect.Clipped(connect.Normal(0.0, 1.0), low=np.nan),
            ValueError,
            r"Clipped: `low` must be a number, not NaN",
        ),
        (
            lambda: connect.ring_positions(4, circumference="4"),
            TypeError,
            r"ring_positions: `circumference`",
        ),
        (
            lambda: connect.grid_positions(2, 2, spacing=-1.0),
            ValueError,
            r"grid_positions: `spacing` must be > 0",
        ),
        (
            lambda: connect.procedural_fixed_probability(5, 5, np.nan),
            ValueError,
            r"procedural_fixed_probability: `p`",
        ),
        (
            lambda: connect.procedural_fixed_outdegree(5, 5, 2, delay=-1.0),
            ValueError,
            r"procedural_fixed_outdegree: `delay` must be >= 0",
        ),
        (lambda: bs_init.Uniform(1.0, -1.0), ValueError, r"init.Uniform: `high` \(-1.0\)"),
    ],
)
def test_bad_connectivity_is_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


# ------------------------------------------------------------------------ networks and runs


def _edges(weight=0.5, n=2):
    return connect.all_to_all(n, n, weight=weight)


def _net(projection=None):
    pops = [
        bs.Population("in", 2, bs.PoissonSource(10.0)),
        bs.Population(
            "out",
            2,
            bs.LIF(),
            receptors={"e": bs.Receptor(bs.ExponentialSynapse(), bs.CurrentBased())},
        ),
    ]
    return bs.Network(pops, [] if projection is None else [projection], dt=0.1)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (
            lambda: bs.Population("p", True, bs.LIF()),
            ValueError,
            r"Population 'p': `size` must be a positive integer \(neurons\); got True \(bool\)",
        ),
        (
            lambda: bs.Population("p", np.bool_(True), bs.LIF()),
            ValueError,
            r"Population 'p': `size`",
        ),
        (lambda: bs.Population("p", 2.0, bs.LIF()), ValueError, r"Population 'p': `size`"),
        (
            lambda: bs.Population("p", 2, bs.LIF(V_th=np.array([-50.0, -50.0, -50.0]))),
            ValueError,
            r"LIF: `V_th` must be a scalar or have shape \(2,\)",
        ),
        (
            lambda: bs.Network([bs.Population("p", 1, bs.LIF())], dt=INF),
            ValueError,
            r"Network: `dt` must be finite \(in ms\); got inf",
        ),
        (
            lambda: bs.Network([bs.Population("p", 1, bs.LIF())], dt=np.nan),
            ValueError,
            r"Network: `dt`",
        ),
        (
            lambda: bs.Network([bs.Population("p", 1, bs.LIF())], dt=0.0),
            ValueError,
            r"Network: `dt` must be positive",
        ),
        (
            lambda: bs.Network([bs.Population("p", 1, bs.LIF())], dt="0.1"),
            TypeError,
            r"Network: `dt`.*'0.1' \(str\)",
        ),
        (
            lambda: bs.Projection("in", 3, _edges(), receptor="e"),
            TypeError,
            r"Projection in->3: `post` must be a name",
        ),
        (
            lambda: bs.Projection("in", "out", _edges(), receptor="e", stp=bs.LIF()),
            TypeError,
            r"`stp` must be a brainsim.TsodyksMarkram",
        ),
        (
            lambda: bs.Projection("in", "out", _edges(), receptor="e", layout="sparse"),
            TypeError,
            r"`layout` must be a layout",
        ),
        (
            lambda: bs.Projection(
                "in", "out", _edges(), receptor="e", modulator=bs.ConstantCurrent(1.0)
            ),
            ValueError,
            r"a `modulator` only drives a plasticity rule",
        ),
        (
            lambda: _net(bs.Projection("in", "out", _edges(n=3), receptor="e")),
            ValueError,
            r"connectivity is 3 x 3 but the populations have 2 \(in\) and 2 \(out\)",
        ),
    ],
)
def test_bad_network_is_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("layout", [bs.Sparse(), bs.Dense(), bs.CSR()])
@pytest.mark.parametrize(
    "rule, weight, match",
    [
        (
            pl.PairSTDP(weight_dependence=pl.Additive(w_max=0.4)),
            0.5,
            r"synapse 0 -> 0 starts at weight 0.5, outside \[0.0, 0.4\] \(w_min, w_max\) "
            r"of PairSTDP's Additive weight dependence",
        ),
        (
            pl.PairSTDP(weight_dependence=pl.Multiplicative(w_max=1.0, w_min=0.6)),
            0.5,
            r"weight 0.5, outside \[0.6, 1.0\].*Multiplicative",
        ),
        (pl.PowerLawSTDP(w_max=0.25), 0.5, r"weight 0.5, outside \[0.0, 0.25\].*of PowerLawSTDP"),
        (
            pl.chain(pl.PairSTDP(), pl.SynapticScaling(5.0, w_max=0.3)),
            0.5,
            r"weight 0.5, outside \[0.0, 0.3\].*of SynapticScaling",
        ),
        (pl.PairSTDP(), -0.5, r"synapse 0 -> 0 starts at weight -0.5"),
    ],
)
def test_initial_weights_outside_a_plastic_rules_bounds_are_refused(rule, weight, match, layout):
    proj = bs.Projection(
        "in", "out", _edges(weight), receptor="e", plasticity=rule, layout=layout, name="in->out"
    )
    with pytest.raises(ValueError, match=r"Projection 'in->out': .*" + match):
        _net(proj)


def test_initial_weights_are_checked_only_on_existing_synapses():
    """Absent pairs of a Dense layout and ELL padding hold 0, outside [0.1, 1]: not checked."""
    edges = connect.from_arrays([0], [1], n_pre=2, n_post=2, weight=0.5)
    for layout in (bs.Sparse(), bs.Dense(), bs.CSR()):
        rule = pl.PairSTDP(weight_dependence=pl.Additive(w_max=1.0, w_min=0.1))
        _net(bs.Projection("in", "out", edges, receptor="e", plasticity=rule, layout=layout))


@pytest.mark.parametrize(
    "rule", [pl.RewardModulatedSTDP(), pl.chain(pl.RewardModulatedSTDP(), pl.Normalization(1.0))]
)
def test_a_rule_that_needs_a_modulator_is_refused_without_one(rule):
    proj = bs.Projection("in", "out", _edges(), receptor="e", plasticity=rule, name="p")
    with pytest.raises(
        ValueError,
        match=r"Projection 'p': RewardModulatedSTDP learns only while "
        r"its modulator is non-zero.*pass modulator=",
    ):
        _net(proj)
    ok = bs.Projection("in", "out", _edges(), receptor="e", plasticity=rule, modulator="in")
    _net(ok)


@pytest.fixture(scope="module")
def net():
    return _net()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(duration=np.nan), ValueError, r"simulate: `duration` must be finite \(in ms\)"),
        (dict(duration=INF), ValueError, r"simulate: `duration` must be finite"),
        (dict(duration=-1.0), ValueError, r"simulate: `duration` must be positive"),
        (dict(duration="1.0"), TypeError, r"simulate: `duration`.*'1.0' \(str\)"),
        (dict(duration=True), TypeError, r"simulate: `duration`.*True \(bool\)"),
        (
            dict(duration=1.05),
            ValueError,
            r"simulate: `duration` 1.05 ms must be a positive whole number of steps of dt = 0.1 ms",
        ),
        (dict(n_steps=True), ValueError, r"simulate: `n_steps` must be a positive integer"),
        (dict(n_steps=2.0), ValueError, r"simulate: `n_steps`.*2.0 \(float\)"),
        (dict(n_steps=2, key=0), TypeError, r"simulate: `key` must be a JAX PRNG key.*0 \(int\)"),
        (dict(n_steps=2, key="k"), TypeError, r"simulate: `key`"),
        (
            dict(n_steps=2, key=None, state={}),
            TypeError,
            r"simulate: `state` must be a brainsim\.NetworkState",
        ),
        (
            dict(n_steps=2, record=bs.SpikeRaster()),
            TypeError,
            r"simulate: `record` must be a sequence of monitors.*record=\(monitor,\)",
        ),
        (dict(n_steps=2, unroll=True), ValueError, r"simulate: `unroll`"),
    ],
)
def test_bad_run_arguments_are_refused_before_the_run(net, kwargs, error, match):
    kwargs = {"key": jax.random.key(0), **kwargs}
    with pytest.raises(error, match=match):
        bs.simulate(net, **kwargs)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            dict(duration=1.0, chunk=0.15),
            ValueError,
            r"run_long: `chunk` 0.15 ms must be a positive whole number of steps",
        ),
        (dict(duration=np.nan), ValueError, r"run_long: `duration` must be finite"),
        (dict(duration=1.0, chunk=0.0), ValueError, r"run_long: `chunk` must be positive"),
        (
            dict(duration=1.0, checkpoint_every=INF),
            ValueError,
            r"run_long: `checkpoint_every` must be finite",
        ),
        (dict(duration=1.0, checkpoint_every="1"), TypeError, r"run_long: `checkpoint_every`"),
        (dict(duration=1.0, key=1), TypeError, r"run_long: `key` must be a JAX PRNG key"),
    ],
)
def test_bad_long_run_arguments_name_the_argument(net, tmp_path, kwargs, error, match):
    kwargs = {"key": jax.random.key(0), "chunk": 0.5, **kwargs}
    with pytest.raises(error, match=match):
        bs.run_long(net, out_dir=tmp_path / "run", progress=False, **kwargs)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (
            lambda: bs.StateTrace("out", "v", every=0),
            ValueError,
            r"StateTrace: `every` must be a positive integer \(steps\); got 0 \(int\)",
        ),
        (lambda: bs.StateTrace("out", "v", every=True), ValueError, r"StateTrace: `every`"),
        (lambda: bs.StateTrace("out", "v", every=2.0), ValueError, r"StateTrace: `every`"),
        (
            lambda: bs.StateTrace("out", "v", neurons=[0.5]),
            TypeError,
            r"StateTrace: `neurons` must be an array of integers \(indices\)",
        ),
        (lambda: bs.StateTrace("out", 1), TypeError, r"StateTrace: `variable` must be a name"),
        (
            lambda: bs.SpikeList("out", capacity=True),
            ValueError,
            r"SpikeList: `capacity` must be a positive integer \(spike entries kept, e\.g\. 100_000\); "
                r"got True \(bool\)",
        ),
        (lambda: bs.SpikeList("out", capacity=0), ValueError, r"SpikeList: `capacity`"),
        (
            lambda: bs.SpikeList("out", capacity=10, chunk_size=0),
            ValueError,
            r"SpikeList: `chunk_size`",
        ),
        (lambda: bs.SpikeList(None, capacity=10), TypeError, r"SpikeList: `population`"),
        (
            lambda: bs.WeightTrace("p", synapses=[0, 1, 2]),
            ValueError,
            r"WeightTrace: `synapses` must be \(pre, post\) index pairs",
        ),
        (
            lambda: bs.WeightTrace("p", synapses=[[0.0, 1.5]]),
            TypeError,
            r"WeightTrace: `synapses` must be an array of integers \(indices\)",
        ),
        (lambda: bs.WeightTrace("p", every=-1), ValueError, r"WeightTrace: `every`"),
    ],
)
def test_bad_monitor_arguments_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_refused_models_leave_eqx_tree_at_alone():
    """Replacing a leaf with tree_at does not rebuild the model (no check, no error)."""
    lif = eqx.tree_at(lambda m: m.tau_m, bs.LIF(), jnp.asarray(np.nan))
    assert np.isnan(lif.tau_m)


def test_silent_combinations_are_refused(tmp_path):
    """Arguments that would be ignored: a key next to a state, a modulator no rule reads, a
    single monitor passed to run_long, and layout sizes that are not positive integers."""
    import jax

    net = bs.Network([bs.Population("n", 2, bs.LIF())], dt=0.1)
    state = net.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"simulate: pass `key` .* or `state` .*not both"):
        bs.simulate(net, 1.0, key=jax.random.key(1), state=state)
    pops = [bs.Population("a", 2, bs.PoissonSource(10.0)),
            bs.Population("b", 2, bs.LIF(), receptors={"e": bs.Receptor(
                bs.ExponentialSynapse(5.0), bs.CurrentBased())})]  # fmt: skip
    proj = bs.Projection("a", "b", bs.connect.all_to_all(2, 2, weight=0.5), receptor="e",
                         layout=bs.Dense(), plasticity=bs.plasticity.PairSTDP(),
                         modulator=bs.ConstantCurrent(1.0))  # fmt: skip
    with pytest.raises(ValueError, match=r"`modulator` is given but PairSTDP does not read one"):
        bs.Network(pops, [proj], dt=0.1)
    with pytest.raises(TypeError, match=r"run_long: `record` must be a sequence of monitors"):
        bs.run_long(net, 1.0, tmp_path / "run", key=jax.random.key(0), record=bs.SpikeRaster())
    assert not (tmp_path / "run").exists()  # refused before the folder is made
    for layout, name in ((bs.Sparse(chunk_size=True), "chunk_size"),
                         (bs.CSR(block_size=2.5), "block_size"),
                         (bs.Procedural(chunk_size=0), "chunk_size")):  # fmt: skip
        edges = (bs.connect.procedural_fixed_outdegree(2, 2, 1) if isinstance(layout, bs.Procedural)
                 else bs.connect.all_to_all(2, 2))  # fmt: skip
        with pytest.raises(ValueError, match=rf"{type(layout).__name__}: `{name}` must be a positive integer"):
            bs.Network(pops, [bs.Projection("a", "b", edges, receptor="e", layout=layout)], dt=0.1)
