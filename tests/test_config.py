"""The TOML config loader: configs build exactly the networks they describe, and every mistake
is reported with the file, the key path, what is expected and the closest valid name."""

import inspect
import tomllib
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import same_tree

import brainsim as bs
from brainsim import connect, networks
from brainsim._config import (
    NEURON_WRAPPERS,
    ConfigError,
    Experiment,
    build_config,
    default_config_path,
    load_config,
    parse_config,
    registry,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

BASE = """\
description = "small test network"

[simulation]
duration_ms = 20.0
dt_ms = 0.1
seed = 7

[populations.E]
size = 40
model = "LIF"
initial = { v = { uniform = [-60.0, -50.0] } }

[populations.E.params]
C_m = 200.0
tau_m = 20.0
E_L = -60.0
V_th = -50.0
V_reset = -60.0
t_ref = 5.0
I_e = 250.0

[populations.E.receptors.exc]
kinetics = { type = "ExponentialSynapse", tau = 5.0 }
output = { type = "ConductanceBased", E_rev = 0.0 }

[populations.I]
size = 10
model = "LIF"
params = { tau_m = 10.0 }

[populations.I.receptors.exc]
kinetics = { type = "AlphaSynapse", tau = 2.0 }
output = "CurrentBased"

[populations.noise]
size = 20
model = "PoissonSource"
params = { rate = 50.0 }

[[projections]]
pre = "E"
post = "I"
receptor = "exc"
connect = { type = "fixed_probability", p = 0.2, weight = { normal = [2.0, 0.5] }, delay = 1.5 }
layout = { type = "dense" }

[[projections]]
pre = "noise"
post = "E"
receptor = "exc"
connect = { type = "all_to_all", weight = 0.5 }
layout = { type = "sparse", chunk_size = 4 }
stp = { type = "TsodyksMarkram", U = 0.4, tau_rec = 300.0, tau_fac = 50.0 }

[record]
spikes = ["E", "I"]
traces = [ { population = "E", variable = "v", neurons = [0, 3], every = 2 } ]
"""


def write(tmp_path, text, name="net.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def edit(old, new, text=BASE):
    assert old in text, old
    return text.replace(old, new, 1)


# ------------------------------------------------------------------ the shipped configs


@pytest.mark.parametrize(("name", "builder"), [("coba.toml", networks.coba),
                                               ("cuba.toml", networks.cuba),
                                               ("cobahh.toml", networks.cobahh)])
@pytest.mark.parametrize("seed", [None, 3])
def test_shipped_config_is_exactly_the_python_network(name, builder, seed):
    # Same parameters, same connectivity (the per-projection seeds are the builders'), same
    # storage: every leaf and the whole structure are identical, so runs are identical too.
    if name == "cobahh.toml" and "TraubMiles" not in registry()["neuron"]:
        pytest.skip("TraubMiles is not in this build")
    exp = load_config(CONFIGS / name, seed=seed)
    assert same_tree(exp.network, builder(seed=0 if seed is None else seed))
    assert exp.network.n_neurons == 4000 and exp.network.dt == 0.1
    assert exp.duration_ms == 1000.0 and exp.n_steps == 10000
    assert exp.record == (bs.SpikeRaster(),)


def test_default_config_is_coba_byte_for_byte():
    assert default_config_path().read_bytes() == (CONFIGS / "coba.toml").read_bytes()
    exp = load_config(None)
    assert exp.source == "<default>"
    assert same_tree(exp.network, networks.coba(seed=0))


def test_cobahh_config_describes_brian2_cobahh():
    if "TraubMiles" not in registry()["neuron"]:
        pytest.skip("TraubMiles is not in this build")
    exp = load_config(CONFIGS / "cobahh.toml")
    net = exp.network
    assert [(p.name, p.size) for p in net.populations] == [("E", 3200), ("I", 800)]
    model = net.population("E").model
    assert type(model).__name__ == "TraubMiles"
    # 20000 µm² of membrane: 1 µF/cm² → 200 pF, 5e-5 S/cm² → 10 nS, 100 and 30 mS/cm² → 20, 6 µS.
    for field, value in dict(C_m=200.0, g_L=10.0, g_Na=20000.0, g_K=6000.0, E_L=-60.0,
                             E_Na=50.0, E_K=-90.0, V_T=-63.0, V_spike=-20.0, t_ref=3.0).items():
        assert float(getattr(model, field)) == value, field
    init = net.population("E").initial["v"]
    assert isinstance(init, bs.init.Normal)
    assert (float(init.mean), float(init.std)) == (-65.0, 5.0)  # E_L + N(-5, 5) mV
    weights = {p.name: float(p.connectivity.weights) for p in net.projections}
    assert weights == {"E->E:exc": 6.0, "E->I:exc": 6.0, "I->E:inh": 67.0, "I->I:inh": 67.0}


# ------------------------------------------------------------------ what a config builds


def test_small_config_builds_what_it_says(tmp_path):
    exp = load_config(write(tmp_path, BASE))
    assert isinstance(exp, Experiment)
    assert exp.description == "small test network"
    assert (exp.seed, exp.duration_ms, exp.dt_ms, exp.n_steps) == (7, 20.0, 0.1, 200)
    net = exp.network
    assert [(p.name, p.size, p.is_source) for p in net.populations] == [
        ("E", 40, False), ("I", 10, False), ("noise", 20, True)]
    e = net.population("E")
    assert float(e.model.I_e) == 250.0 and float(e.model.tau_m) == 20.0
    assert isinstance(e.initial["v"], bs.init.Uniform)
    assert float(net.population("I").model.tau_m) == 10.0
    assert float(net.population("I").model.C_m) == 250.0  # the LIF default
    rec = e.receptors["exc"]
    assert isinstance(rec.kinetics, bs.ExponentialSynapse) and float(rec.kinetics.tau) == 5.0
    assert isinstance(rec.output, bs.ConductanceBased) and float(rec.output.E_rev) == 0.0
    assert isinstance(net.population("I").receptors["exc"].output, bs.CurrentBased)
    assert float(net.population("noise").model.rate) == 50.0

    e_to_i, noise_to_e = net.projections
    assert isinstance(e_to_i.connectivity, bs.DenseConnectivity)
    assert e_to_i.connectivity.max_delay == 16  # lag: 1.5 ms / 0.1 ms + 1 step
    # The seed of the projection from population 0 to population 1 is [seed, 0, 1].
    ref = connect.fixed_probability(40, 10, 0.2, weight=lambda rng, n: rng.normal(2.0, 0.5, n),
                                    delay=1.5, seed=[7, 0, 1])
    dense = np.zeros((40, 10))
    np.add.at(dense, (ref.pre, ref.post), ref.weight)
    np.testing.assert_allclose(np.asarray(e_to_i.connectivity.weights), dense, rtol=1e-6)
    assert noise_to_e.connectivity.n_synapses == 20 * 40
    assert noise_to_e.connectivity.chunk_size == 4
    assert float(noise_to_e.stp.U) == pytest.approx(0.4)
    assert float(noise_to_e.stp.tau_fac) == 50.0
    assert exp.record == (bs.SpikeRaster(("E", "I")),
                          bs.StateTrace("E", "v", neurons=[0, 3], every=2))



def test_config_simulates(tmp_path):
    # Without the Poisson source, whose sampler alone takes seconds to compile.
    start, stop = BASE.index("[populations.noise]"), BASE.index("[[projections]]")
    second, end = BASE.index("[[projections]]", stop + 1), BASE.index("[record]")
    exp = load_config(write(tmp_path, BASE[:start] + BASE[stop:second] + BASE[end:]))
    # All neurons traced: StateTrace(neurons=...) cannot be simulated yet (_monitors.py bug).
    result = exp.simulate(record=(bs.SpikeRaster(("E", "I")), bs.StateTrace("E", "v", every=2)))
    assert result.n_steps == 200
    times, values = result.trace("E", "v")
    assert values.shape == (100, 40)
    np.testing.assert_allclose(times, np.arange(100) * 0.2, atol=1e-9)
    # 250 pA > the 100 pA rheobase (g_L (V_th - E_L)): every E neuron fires in 20 ms.
    spike_times, ids = result.spikes("E")
    assert set(ids.tolist()) == set(range(40))


def test_text_dict_and_file_give_the_same_network(tmp_path):
    a = load_config(write(tmp_path, BASE)).network
    b = parse_config(BASE).network
    c = build_config(tomllib.loads(BASE)).network
    assert same_tree(a, b) and same_tree(a, c)


def test_seed_drives_connectivity_and_simulation_key(tmp_path):
    path = write(tmp_path, BASE)
    a, b, c = load_config(path), load_config(path, seed=7), load_config(path, seed=8)
    assert same_tree(a.network, b.network)
    assert not same_tree(a.network, c.network)
    assert np.array_equal(jax.random.key_data(c.key()), jax.random.key_data(jax.random.key(8)))


def test_repeated_pair_gets_its_own_seed_and_explicit_seed_wins(tmp_path):
    text = BASE + """
[[projections]]
pre = "E"
post = "I"
receptor = "exc"
connect = { type = "fixed_probability", p = 0.3 }

[[projections]]
pre = "E"
post = "I"
receptor = "exc"
connect = { type = "fixed_probability", p = 0.3, seed = 123 }
name = "explicit"
"""
    text = text.replace('layout = { type = "dense" }', 'name = "first"\nlayout = "dense"')
    net = load_config(write(tmp_path, text)).network
    second, explicit = net.projections[2], net.projections[3]
    for proj, seed in ((second, [7, 0, 1, 1]), (explicit, 123)):
        ref = connect.fixed_probability(40, 10, 0.3, seed=seed)
        dense = np.zeros((40, 10))
        np.add.at(dense, (ref.pre, ref.post), 1.0)
        np.testing.assert_array_equal(np.asarray(proj.connectivity.to_dense()), dense)


def test_duration_override_and_rich_values(tmp_path):
    text = edit('params = { tau_m = 10.0 }',
                'params = { tau_m = [10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0, 19.0],'
                ' integrator = "RK4", surrogate = { type = "Arctan", scale = 3.0 } }\n'
                'initial = { v = { normal = [-65.0, 2.0] } }\n'
                'currents = [ { type = "ConstantCurrent", amplitude = 10.0 },'
                ' { type = "StepCurrent", times = [5.0, 10.0], amplitudes = [1.0, 0.0] } ]')
    text = edit('params = { rate = 50.0 }',
                'params = { rate = { type = "TimedArray", values = [10.0, 20.0], dt = 5.0 } }',
                text)
    text += '\n[populations.gen]\nsize = 3\nmodel = "SpikeGenerator"\n' \
            'params = { times = [1.0, 2.0], indices = [0, 2] }\n'
    exp = load_config(write(tmp_path, text), duration_ms=5.0)
    assert exp.n_steps == 50
    i = exp.network.population("I")
    np.testing.assert_array_equal(np.asarray(i.model.tau_m), np.arange(10.0, 20.0))
    assert isinstance(i.model.integrator, bs.RK4)
    assert isinstance(i.model.surrogate, bs.surrogate.Arctan)
    assert float(i.model.surrogate.scale) == 3.0
    assert [type(c).__name__ for c in i.currents] == ["ConstantCurrent", "StepCurrent"]
    assert isinstance(exp.network.population("noise").model.rate, bs.TimedArray)
    gen = exp.network.population("gen").model
    np.testing.assert_array_equal(gen.indices, [0, 2])


def test_every_exported_model_is_in_the_registry():
    # A model or plasticity class added to the package must be reachable from configs. Chain is
    # written as an array of rules (`plasticity = [...]`), not by name.
    groups = {"neuron": bs.AbstractNeuron, "source": bs.AbstractSpikeSource,
              "kinetics": bs.AbstractKinetics, "output": bs.AbstractOutput,
              "current": bs.AbstractCurrent, "plasticity": bs.plasticity.AbstractPlasticity,
              "weight_dependence": bs.plasticity.AbstractWeightDependence}
    not_by_name = {bs.plasticity.Chain}
    for kind, base in groups.items():
        exported = {name for module in (bs, bs.plasticity) for name, obj in vars(module).items()
                    if inspect.isclass(obj) and issubclass(obj, base) and obj is not base
                    and not inspect.isabstract(obj) and obj not in not_by_name}
        assert exported <= set(registry()[kind]), (kind, exported - set(registry()[kind]))
    assert {"PairSTDP", "TripletSTDP", "SymmetricSTDP", "RewardModulatedSTDP", "PowerLawSTDP",
            "SynapticScaling", "Normalization"} <= set(registry()["plasticity"])
    assert {"Additive", "Multiplicative", "Gutig"} <= set(registry()["weight_dependence"])
    assert registry()["neuron"]["AdaptiveThreshold"] is bs.plasticity.AdaptiveThreshold


def test_registry_accepts_user_models(monkeypatch):
    class Leaky(bs.LIF):  # a stand-in for a user's own model class
        pass

    monkeypatch.setitem(registry()["neuron"], "Leaky", Leaky)
    text = BASE.replace('model = "LIF"\nparams = { tau_m = 10.0 }',
                        'model = "Leaky"\nparams = { tau_m = 10.0 }')
    assert type(parse_config(text).network.population("I").model) is Leaky


@pytest.mark.parametrize("model", sorted(registry()["neuron"]))
def test_every_neuron_model_builds_from_defaults(model):
    text = f"""
[simulation]
duration_ms = 1.0
dt_ms = 0.1

[populations.X]
size = 3
model = "{model}"
initial = {{ v = -60.0 }}
"""
    if model in NEURON_WRAPPERS:  # wraps another model, which has no default
        text += 'params = { model = "LIF" }\n'
    exp = parse_config(text)
    assert type(exp.network.population("X").model).__name__ == model


# ------------------------------------------------------------------ errors

ERRORS = [
    # (old, new, key path, fragments of the message)
    ("[simulation]", "[simulaton]", "simulaton", ["unknown key 'simulaton'",
                                                  "Did you mean 'simulation'?"]),
    ("dt_ms = 0.1", "dt = 0.1", "simulation.dt", ["Did you mean 'dt_ms'?"]),
    ("duration_ms = 20.0", "duration_ms = 20.05", "simulation.duration_ms",
     ["whole number of steps", "dt_ms = 0.1"]),
    ("dt_ms = 0.1", "dt_ms = -0.1", "simulation.dt_ms", ["> 0"]),
    ("seed = 7", "seed = -1", "simulation.seed", [">= 0"]),
    ("seed = 7", 'seed = "seven"', "simulation.seed", ["an integer", "got a string"]),
    ("size = 40", 'size = "40"', "populations.E.size",
     ["expected the number of neurons (an integer)", "got a string ('40')"]),
    ("size = 40", "size = 0", "populations.E.size", [">= 1"]),
    ('model = "LIF"', 'model = "LIFF"', "populations.E.model",
     ["unknown model", "Did you mean 'LIF'?", "PoissonSource"]),
    ("tau_m = 20.0", "tau_mm = 20.0", "populations.E.params.tau_mm",
     ["unknown argument 'tau_mm' of LIF", "Did you mean 'tau_m'?"]),
    ("tau_m = 20.0", 'tau_m = "slow"', "populations.E.params.tau_m",
     ["expected `tau_m` (a number)", "got a string"]),
    ("tau_m = 20.0", "tau_m = true", "populations.E.params.tau_m", ["got a boolean"]),
    ("tau_m = 20.0", "tau_m = -20.0", "populations.E.params.tau_m", ["`tau_m` must be positive"]),
    ("tau_m = 20.0", "tau_m = [20.0, 30.0]", "populations.E", ["tau_m", "shape (40,)"]),
    ("tau_m = 20.0", "tau_m = [20.0, [30.0]]", "populations.E.params.tau_m", ["rectangular"]),
    ("I_e = 250.0\n", 'I_e = 250.0\nintegrator = "RK5"\n', "populations.E.params.integrator",
     ["unknown integrator 'RK5'", "Did you mean 'RK4'?"]),
    ("I_e = 250.0\n", "I_e = 250.0\nsurrogate = { scale = 2.0 }\n",
     "populations.E.params.surrogate", ["missing key 'type'", "FastSigmoid"]),
    ("initial = { v = {", "initial = { vv = {", "populations.E.initial.vv",
     ["LIF has no state variable 'vv'", "Did you mean 'v'?"]),
    ("uniform = [-60.0, -50.0]", "unifrom = [-60.0, -50.0]", "populations.E.initial.v.unifrom",
     ["unknown distribution", "Did you mean 'uniform'?"]),
    ("uniform = [-60.0, -50.0]", "uniform = [-60.0]", "populations.E.initial.v.uniform",
     ["expected 2 values [low, high]; got 1"]),
    ("uniform = [-60.0, -50.0]", "uniform = [-50.0, -60.0], normal = [0.0, 1.0]",
     "populations.E.initial.v", ["one-key table"]),
    ('type = "ExponentialSynapse"', 'type = "ExponentialSynaps"',
     "populations.E.receptors.exc.kinetics.type",
     ["unknown synaptic kinetics", "Did you mean 'ExponentialSynapse'?"]),
    ("E_rev = 0.0", "E_reversal = 0.0", "populations.E.receptors.exc.output.E_reversal",
     ["unknown argument 'E_reversal' of ConductanceBased", "Did you mean 'E_rev'?"]),
    ('output = "CurrentBased"', 'outptu = "CurrentBased"', "populations.I.receptors.exc.outptu",
     ["Did you mean 'output'?"]),
    ('output = "CurrentBased"', "output = 3", "populations.I.receptors.exc.output",
     ["a name", "got an integer"]),
    ("tau = 5.0", "tau = 0.0", "populations.E.receptors.exc.kinetics.tau",
     ["`tau` must be positive"]),
    ("params = { rate = 50.0 }", "params = { rate = 50.0 }\ncurrents = []",
     "populations.noise.currents", ["spike source", "takes no currents"]),
    ("params = { rate = 50.0 }", "params = {}", "populations.noise.params",
     ["missing argument 'rate' of PoissonSource"]),
    ('pre = "E"', 'pre = "EE"', "projections[0].pre",
     ["unknown population 'EE'", "Did you mean 'E'?"]),
    ('post = "I"', 'post = "noise"', "projections[0].post", ["spike source"]),
    ('receptor = "exc"', 'receptor = "exct"', "projections[0].receptor",
     ["has no receptor 'exct'", "Did you mean 'exc'?"]),
    ('type = "fixed_probability"', 'type = "fixed_prob"', "projections[0].connect.type",
     ["unknown connectivity builder", "Did you mean 'fixed_probability'?"]),
    ("p = 0.2, ", "", "projections[0].connect", ["missing argument 'p' of fixed_probability"]),
    ("p = 0.2", "p = 1.5", "projections[0].connect.p", ["`p` must lie in [0, 1]"]),
    ("weight = { normal", "weights = { normal", "projections[0].connect.weights",
     ["Did you mean 'weight'?"]),
    ("normal = [2.0, 0.5]", "normall = [2.0, 0.5]", "projections[0].connect.weight.normall",
     ["Did you mean 'normal'?"]),
    ("normal = [2.0, 0.5]", "normal = [2.0, 0.5, 1.0]", "projections[0].connect.weight.normal",
     ["expected 2 values [mean, std]; got 3"]),
    ("delay = 1.5", 'delay = "long"', "projections[0].connect.delay", ["got a string"]),
    ("delay = 1.5", "delay = 1.55", "projections[0].connect.delay",
     ["1.55 ms is not a whole number of steps"]),
    ('layout = { type = "dense" }', 'layout = "sprse"', "projections[0].layout",
     ["unknown layout 'sprse'", "Did you mean 'sparse'?"]),
    ("chunk_size = 4", "chunk_size = 0", "projections[1].layout", ["`chunk_size` must be a positive integer; got 0"]),
    ("chunk_size = 4", "chunk_size = 4.5", "projections[1].layout.chunk_size",
     ["an integer", "got a float"]),
    ("U = 0.4", "U = 2.0", "projections[1].stp.U", ["`U` must lie in (0, 1]"]),
    ("tau_rec = 300.0", "tau_recovery = 300.0", "projections[1].stp.tau_recovery",
     ["Did you mean 'tau_rec'?"]),
    ('layout = { type = "dense" }', 'layout = "dense"\nround_delay = true',
     "projections[0].round_delay", ["Did you mean 'round_delays'?"]),
    ('spikes = ["E", "I"]', 'spikes = ["E", "J"]', "record.spikes[1]",
     ["unknown population 'J'"]),
    ('spikes = ["E", "I"]', 'spikes = "all"', "record.spikes", ["true (all populations)"]),
    ('variable = "v"', 'variable = "V"', "record.traces[0].variable",
     ["no state variable 'V'", "Did you mean 'v'?"]),
    ("neurons = [0, 3]", "neurons = [0, 40]", "record.traces[0].neurons",
     ["indices in 0..39", "got 40"]),
    ("every = 2", "evry = 2", "record.traces[0].evry", ["Did you mean 'every'?"]),
    ("[record]", "[recording]", "recording", ["Did you mean 'record'?"]),
]


@pytest.mark.parametrize(("old", "new", "path", "fragments"), ERRORS,
                         ids=[case[2] + ":" + case[1][:20] for case in ERRORS])
def test_errors_name_file_key_path_and_fix(tmp_path, old, new, path, fragments):
    file = write(tmp_path, edit(old, new))
    with pytest.raises(ConfigError) as info:
        load_config(file)
    message = str(info.value)
    assert message.startswith(f"{file}: {path}: "), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_missing_keys_say_what_is_expected(tmp_path):
    with pytest.raises(ConfigError, match=r"net\.toml: simulation: missing key 'dt_ms' "
                                          r"\(the time step in ms\)"):
        load_config(write(tmp_path, edit("dt_ms = 0.1\n", "")))
    with pytest.raises(ConfigError, match=r"net\.toml: the top level: missing key 'populations'"):
        load_config(write(tmp_path, "[simulation]\nduration_ms = 1.0\ndt_ms = 0.1\n"))
    with pytest.raises(ConfigError, match=r"populations\.E\.receptors\.exc: missing key "
                                          r"'kinetics'"):
        load_config(write(tmp_path, edit('kinetics = { type = "ExponentialSynapse", tau = 5.0 }'
                                          '\n', "")))


def test_quoted_population_names_in_key_paths(tmp_path):
    text = edit("[populations.I]", '[populations."L2/3 I"]')
    text = text.replace("[populations.I.receptors.exc]", '[populations."L2/3 I".receptors.exc]')
    text = text.replace('post = "I"', 'post = "L2/3 I"').replace('["E", "I"]', '["E"]')
    assert load_config(write(tmp_path, text)).network.population("L2/3 I").size == 10
    bad = text.replace("params = { tau_m = 10.0 }", "params = { tau = 10.0 }")
    with pytest.raises(ConfigError, match=r'populations\."L2/3 I"\.params\.tau: unknown '):
        load_config(write(tmp_path, bad))


def test_unreadable_or_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.toml: no such config file"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=r"is a directory"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match=r"net\.toml: invalid TOML: .*line 2"):
        load_config(write(tmp_path, "[simulation]\nduration_ms = = 1\n"))


def test_overrides_are_checked():
    with pytest.raises(ConfigError, match=r"duration \(--duration\): expected a positive whole "
                                          r"number of steps"):
        parse_config(BASE, duration_ms=0.05)
    with pytest.raises(ConfigError, match=r"seed \(--seed\): expected an integer >= 0"):
        parse_config(BASE, seed=-3)


# --------------------------------------------------------------------- entry points

USER_MODULE = '''\
import brainsim as bs


class ShiftedLIF(bs.LIF):
    """A user's neuron: a LIF whose threshold sits 1 mV higher than given."""

    def __init__(self, V_th=-50.0, **kwargs):
        super().__init__(V_th=V_th + 1.0, **kwargs)


class SlowExp(bs.ExponentialSynapse):
    """A user's kinetics: an exponential synapse with twice the time constant."""

    def __init__(self, tau=5.0):
        super().__init__(2.0 * tau)


def ring(n_pre, n_post, *, weight=1.0, seed=0):
    """A user's connectivity builder: neuron i onto neuron i + 1 (mod n_post)."""
    import numpy as np

    pre = np.arange(n_pre)
    return bs.connect.from_arrays(pre, (pre + 1) % n_post, n_pre=n_pre, n_post=n_post,
                                  weight=weight)


NOT_A_CLASS = 3.0
'''


def _user_config(tmp_path, model='"user_models:ShiftedLIF"',
                 kinetics='{ type = "user_models:SlowExp", tau = 5.0 }',
                 connect='{ type = "user_models:ring", weight = 2.0 }'):
    (tmp_path / "user_models.py").write_text(USER_MODULE, encoding="utf-8")
    text = edit('[populations.E]\nsize = 40\nmodel = "LIF"',
                f'[populations.E]\nsize = 40\nmodel = {model}')
    text = edit('kinetics = { type = "ExponentialSynapse", tau = 5.0 }',
                f"kinetics = {kinetics}", text)
    text = edit('connect = { type = "fixed_probability", p = 0.2, weight = { normal = [2.0, 0.5] }, '
                'delay = 1.5 }', f"connect = {connect}", text)
    return write(tmp_path, text)


def test_entry_points_name_user_classes_next_to_the_config(tmp_path, monkeypatch):
    """``package.module:Name`` builds the user's neuron, kinetics and connectivity builder
    (imported from the config's folder, which is not on the path), with their arguments
    checked like a built-in's, and the network runs."""
    import sys

    monkeypatch.chdir(ROOT)  # not the config's folder
    monkeypatch.delitem(sys.modules, "user_models", raising=False)
    exp = load_config(_user_config(tmp_path))
    E = exp.network.population("E")
    assert type(E.model).__name__ == "ShiftedLIF"
    assert float(E.model.V_th) == -50.0 + 1.0  # the config's V_th, shifted by the class
    assert float(E.receptors["exc"].kinetics.tau) == 10.0
    (proj,) = [p for p in exp.network.projections if p.pre == "E"]
    assert proj.connectivity.n_synapses == 40  # the ring: one synapse per presynaptic neuron
    result = bs.simulate(exp.network, 5.0, key=jax.random.key(0))
    assert np.isfinite(np.asarray(exp.network.population_state(result.state, "E").v)).all()
    assert str(tmp_path) not in sys.path  # the config's folder was on the path for the import only


@pytest.mark.parametrize(
    "model, message",
    [
        ('"no_such_module:Model"',
         r"populations\.E\.model: 'no_such_module:Model': cannot import 'no_such_module'; no "
         r"module 'no_such_module' on the Python path, nor next to the config in .*: install"),
        ('"user_models:ShiftedLif"',
         r"populations\.E\.model: 'user_models:ShiftedLif': 'user_models' has no attribute "
         r"'ShiftedLif'\. Did you mean 'ShiftedLIF'\?"),
        ('"user_models:SlowExp"',
         r"'user_models:SlowExp' is the class user_models\.SlowExp, not a subclass of "
         r"brainsim\.extend\.AbstractNeuron or brainsim\.extend\.AbstractSpikeSource"),
        ('"user_models:NOT_A_CLASS"', r"is a float value, not a subclass of"),
        ('"user_models:"', r"expected an entry point 'package\.module:Name'"),
        ('"user_models:ShiftedLIF:x"', r"expected an entry point 'package\.module:Name'"),
    ],
)  # fmt: skip
def test_entry_point_mistakes_are_named(tmp_path, monkeypatch, model, message):
    import sys

    monkeypatch.delitem(sys.modules, "user_models", raising=False)
    with pytest.raises(ConfigError, match=message):
        load_config(_user_config(tmp_path, model=model))


def test_entry_point_arguments_are_checked(tmp_path, monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "user_models", raising=False)
    path = _user_config(tmp_path, kinetics='{ type = "user_models:SlowExp", tua = 5.0 }')
    with pytest.raises(ConfigError, match=r"kinetics\.tua: unknown argument 'tua' of "
                                          r"SlowExp\. Did you mean 'tau'\?"):
        load_config(path)


def test_entry_point_whose_module_fails_says_why(tmp_path, monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "broken_models", raising=False)
    (tmp_path / "broken_models.py").write_text("import not_installed_dependency\n")
    path = _user_config(tmp_path, model='"broken_models:Model"')
    with pytest.raises(ConfigError, match=r"cannot import 'broken_models'; it imports "
                                          r"'not_installed_dependency', which is not installed"):
        load_config(path)
    (tmp_path / "broken_models.py").write_text("raise RuntimeError('bad constant')\n")
    monkeypatch.delitem(sys.modules, "broken_models", raising=False)
    with pytest.raises(ConfigError, match=r"importing 'broken_models' failed: RuntimeError: "
                                          r"bad constant"):
        load_config(path)
