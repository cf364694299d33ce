"""Long-term plasticity in TOML configs: a config builds exactly the network the Python API
builds (same rules, same synapses, so the same spikes and final weights), arrays of rules are
``plasticity.chain``, weights are recorded and saved by ``brainsim run``, every mistake names
its key path, and the shipped Song et al. (2000) config describes Brian2's setup."""

import json
import tomllib
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import same_tree

import brainsim as bs
from brainsim import connect
from brainsim import plasticity as pl
from brainsim._config import ConfigError, load_config, parse_config, registry
from brainsim.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SONG = CONFIGS / "song_stdp.toml"

N_IN, N_OUT, SEED, DURATION = 30, 4, 3, 200.0

# 30 input channels at ~50 Hz over 200 ms, on the 0.1 ms grid.
_rng = np.random.default_rng(11)
_steps = np.sort(_rng.integers(0, 2000, 300))
TIMES = _steps * 0.1
INDICES = _rng.integers(0, N_IN, 300)

# One rule, as dotted keys (the same as a table { type = "PairSTDP", ... } on one line).
DENSE_RULE = """\
plasticity.type = "PairSTDP"
plasticity.tau_plus = 16.8
plasticity.tau_minus = 33.7
plasticity.A_plus = 0.02
plasticity.A_minus = 0.021
plasticity.weight_dependence = { type = "Additive", w_max = 0.5 }"""

# An array of rules: plasticity.chain(PairSTDP(...), SynapticScaling(...)). (TOML inline
# tables cannot span lines; the array can.)
SPARSE_RULES = (
    "plasticity = [\n"
    '  { type = "PairSTDP", A_plus = 0.02, A_minus = 0.021, nearest = true, '
    'weight_dependence = { type = "Multiplicative", w_max = 0.5 } },\n'
    '  { type = "SynapticScaling", target_rate = 20.0, tau = 100.0, beta = 1e-4, w_max = 0.5 },\n'
    "]"
)

BASE = f"""\
[simulation]
duration_ms = {DURATION}
dt_ms = 0.1
seed = {SEED}

[populations.in]
size = {N_IN}
model = "SpikeGenerator"

[populations.in.params]
times = [{", ".join(repr(float(t)) for t in TIMES)}]
indices = [{", ".join(str(int(i)) for i in INDICES)}]

[populations.out]
size = {N_OUT}
model = "LIF"
params = {{ C_m = 10.0, tau_m = 10.0, E_L = -74.0, V_th = -54.0, V_reset = -60.0, t_ref = 0.0 }}

[populations.out.receptors.e]
kinetics = {{ type = "ExponentialSynapse", tau = 5.0 }}
output = {{ type = "ConductanceBased", E_rev = 0.0 }}

[[projections]]
pre = "in"
post = "out"
receptor = "e"
connect = {{ type = "fixed_probability", p = 0.5, weight = {{ uniform = [0.0, 0.5] }} }}
layout = "dense"
name = "dense"
{DENSE_RULE}

[[projections]]
pre = "in"
post = "out"
receptor = "e"
connect = {{ type = "fixed_probability", p = 0.3, weight = {{ uniform = [0.0, 0.5] }} }}
layout = {{ type = "sparse", chunk_size = 4 }}
name = "sparse"
{SPARSE_RULES}

[record]
spikes = ["out"]
weights = [ {{ projection = "dense", synapses = [[0, 0], [1, 2], [5, 3]], every = 100 }},
            {{ projection = "sparse", every = 500 }} ]
"""


def edit(old, new, text=BASE):
    assert old in text, old
    return text.replace(old, new, 1)


def python_network():
    """What BASE describes, written with the Python API."""
    lif = bs.LIF(C_m=10.0, tau_m=10.0, E_L=-74.0, V_th=-54.0, V_reset=-60.0, t_ref=0.0)
    receptors = {"e": bs.Receptor(bs.ExponentialSynapse(5.0), bs.ConductanceBased(0.0))}
    pops = [bs.Population("in", N_IN, bs.SpikeGenerator(TIMES, INDICES)),
            bs.Population("out", N_OUT, lif, receptors=receptors)]

    def uniform(rng, n):
        return rng.uniform(0.0, 0.5, n)

    # Config seeds: [seed, i, j] for the first projection between populations i and j, then
    # [seed, i, j, 1] for the second.
    dense_edges = connect.fixed_probability(N_IN, N_OUT, 0.5, weight=uniform, seed=[SEED, 0, 1])
    sparse_edges = connect.fixed_probability(N_IN, N_OUT, 0.3, weight=uniform,
                                             seed=[SEED, 0, 1, 1])
    dense_rule = pl.PairSTDP(16.8, 33.7, A_plus=0.02, A_minus=0.021,
                             weight_dependence=pl.Additive(w_max=0.5))
    sparse_rule = pl.chain(
        pl.PairSTDP(A_plus=0.02, A_minus=0.021, nearest=True,
                    weight_dependence=pl.Multiplicative(w_max=0.5)),
        pl.SynapticScaling(20.0, tau=100.0, beta=1e-4, w_max=0.5),
    )
    projs = [
        bs.Projection("in", "out", dense_edges, receptor="e", layout=bs.Dense(), name="dense",
                      plasticity=dense_rule),
        bs.Projection("in", "out", sparse_edges, receptor="e", layout=bs.Sparse(chunk_size=4),
                      name="sparse", plasticity=sparse_rule),
    ]
    return bs.Network(pops, projs, dt=0.1)


@pytest.fixture(scope="module")
def config_run():
    exp = parse_config(BASE)
    return exp, exp.simulate()


# ------------------------------------------------------------------ what a config builds


def test_config_is_exactly_the_python_network_and_run(config_run):
    exp, result = config_run
    net = python_network()
    assert same_tree(exp.network, net)
    assert exp.record == (bs.SpikeRaster(("out",)),
                          bs.WeightTrace("dense", [[0, 0], [1, 2], [5, 3]], every=100),
                          bs.WeightTrace("sparse", every=500))
    reference = bs.simulate(net, DURATION, key=jax.random.key(SEED), record=exp.record)
    # Not vacuous: the output neurons fire and the rules moved the weights.
    times, ids = result.spikes("out")
    assert times.size > 20 and set(ids.tolist()) == set(range(N_OUT))
    for name in ("dense", "sparse"):
        initial = np.asarray(net.projection(name).connectivity.weights)
        assert not np.allclose(result.weights(name), initial), name
        np.testing.assert_array_equal(result.weights(name), reference.weights(name))
        np.testing.assert_array_equal(result.weight_trace(name)[1],
                                      reference.weight_trace(name)[1])
    for a, b in zip(result.spikes("out"), reference.spikes("out"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_csr_layout_carries_plasticity(config_run):
    """The dense projection stored as CSR learns the same weights (summation order aside)."""
    exp_dense, dense = config_run
    exp = parse_config(edit('layout = "dense"', 'layout = "csr"'))
    result = exp.simulate()
    for a, b in zip(result.spikes("out"), dense.spikes("out"), strict=True):
        np.testing.assert_array_equal(a, b)
    assert result.weights("dense").ndim == 1  # one weight per stored synapse
    np.testing.assert_allclose(exp.network.weights(result.state, "dense"),
                               exp_dense.network.weights(dense.state, "dense"), rtol=1e-5,
                               atol=1e-7)  # fmt: skip


def test_array_of_rules_is_chain_in_order():
    net = parse_config(BASE).network
    rule = net.projection("sparse").plasticity
    pair = pl.PairSTDP(A_plus=0.02, A_minus=0.021, nearest=True,
                       weight_dependence=pl.Multiplicative(w_max=0.5))
    scaling = pl.SynapticScaling(20.0, tau=100.0, beta=1e-4, w_max=0.5)
    assert isinstance(rule, pl.Chain)
    assert same_tree(rule, pl.chain(pair, scaling))
    assert not same_tree(rule, pl.chain(scaling, pair))  # the order of the array is kept
    # The same array as TOML's array of tables.
    tables = BASE.replace(SPARSE_RULES, "").replace("[record]", """\
[[projections.plasticity]]
type = "PairSTDP"
A_plus = 0.02
A_minus = 0.021
nearest = true
weight_dependence = { type = "Multiplicative", w_max = 0.5 }

[[projections.plasticity]]
type = "SynapticScaling"
target_rate = 20.0
tau = 100.0
beta = 1e-4
w_max = 0.5

[record]""")
    assert same_tree(parse_config(tables).network, net)


RULES = [
    # (TOML value of `plasticity`, the Python rule)
    ('"PairSTDP"', pl.PairSTDP()),
    ('{ type = "TripletSTDP", tau_x = 714.0, A3_plus = 5.3e-2, nearest = true, '
     'weight_dependence = { type = "Gutig", mu_plus = 0.5, mu_minus = 1.0, w_max = 2.0 } }',
     pl.TripletSTDP(tau_x=714.0, A3_plus=5.3e-2, nearest=True,
                    weight_dependence=pl.Gutig(0.5, 1.0, w_max=2.0))),
    ('{ type = "SymmetricSTDP", tau = 10.0, A = 0.005, A_pre_offset = 1e-3 }',
     pl.SymmetricSTDP(10.0, A=0.005, A_pre_offset=1e-3)),
    ('{ type = "PowerLawSTDP", eta = 0.05, x_tar = 0.3, mu = 0.4, w_max = 0.5 }',
     pl.PowerLawSTDP(eta=0.05, x_tar=0.3, mu=0.4, w_max=0.5)),
    ('{ type = "Normalization", total = 7.8, per_step = true }',
     pl.Normalization(7.8, per_step=True)),
    ('{ type = "SynapticScaling", target_rate = [1.0, 2.0, 3.0, 4.0], w_max = inf }',
     pl.SynapticScaling(np.array([1.0, 2.0, 3.0, 4.0]), w_max=np.inf)),
    ('[{ type = "PairSTDP", A_plus = [0.01, 0.02, 0.03, 0.04] }]',
     pl.chain(pl.PairSTDP(A_plus=np.array([0.01, 0.02, 0.03, 0.04])))),
]


@pytest.mark.parametrize(("toml", "rule"), RULES, ids=[r[0][:30] for r in RULES])
def test_every_rule_and_nested_object_builds_as_in_python(toml, rule):
    text = BASE.split("[[projections]]")[0] + f"""
[[projections]]
pre = "in"
post = "out"
receptor = "e"
connect = {{ type = "all_to_all", weight = 0.1 }}
plasticity = {toml}
"""
    assert same_tree(parse_config(text).network.projections[0].plasticity, rule)


def test_reward_modulated_rule_takes_a_population_or_a_current():
    head = BASE.split("[[projections]]")[0] + """
[populations.reward]
size = 1
model = "SpikeGenerator"
params = { times = [50.0, 150.0], indices = [0, 0] }

[[projections]]
pre = "in"
post = "out"
receptor = "e"
connect = { type = "all_to_all", weight = 0.1 }
plasticity = { type = "RewardModulatedSTDP", tau_c = 500.0, eta = 0.01 }
"""
    rule = pl.RewardModulatedSTDP(tau_c=500.0, eta=0.01)
    proj = parse_config(head + 'modulator = "reward"\n').network.projections[0]
    assert proj.modulator_population == "reward" and proj.modulator is None
    assert same_tree(proj.plasticity, rule)
    text = head + 'modulator = { type = "TimedArray", values = [0.0, 1.0, -0.5], dt = 100.0 }\n'
    proj = parse_config(text).network.projections[0]
    expected = bs.TimedArray(np.array([0.0, 1.0, -0.5]), 100.0).discretize(0.1)
    assert proj.modulator_population is None and same_tree(proj.modulator, expected)


def test_adaptive_threshold_wraps_a_model_from_the_config():
    text = edit('model = "LIF"\nparams = { C_m = 10.0, tau_m = 10.0, E_L = -74.0, V_th = -54.0, '
                'V_reset = -60.0, t_ref = 0.0 }',
                'model = "AdaptiveThreshold"\n'
                'params = { model = { type = "LIF", tau_m = 15.0, V_th = -54.0 }, '
                'theta_plus = 0.1, tau_theta = 1e4 }\ninitial = { theta = 2.0 }')
    pop = parse_config(text).network.population("out")
    assert same_tree(pop.model, pl.AdaptiveThreshold(bs.LIF(tau_m=15.0, V_th=-54.0),
                                                     theta_plus=0.1, tau_theta=1e4))
    assert float(pop.initial["theta"].value) == 2.0


# ------------------------------------------------------------------ brainsim run


def test_cli_saves_final_and_recorded_weights(config_run, tmp_path, capsys):
    exp, result = config_run
    config = tmp_path / "plastic.toml"
    config.write_text(BASE)
    assert main(["run", str(config), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "WeightTrace dense (3 synapses) every 100 step(s)" in out
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert str(tmp_path / "o" / "weights.npz") in summary["files"]
    assert (tmp_path / "o" / "weights.png").read_bytes()[:4] == b"\x89PNG"
    net = exp.network
    with np.load(tmp_path / "o" / "weights.npz") as f:
        assert f["projections"].tolist() == ["dense", "sparse"]
        for name in ("dense", "sparse"):
            # The synapse list is the final weight matrix, synapse by synapse.
            dense = np.zeros((N_IN, N_OUT))
            np.add.at(dense, (f[f"{name}.pre"], f[f"{name}.post"]), f[f"{name}.weight"])
            np.testing.assert_array_equal(
                dense, np.asarray(net.weights(result.state, name), dense.dtype))
            assert f[f"{name}.pre"].size == net.projection(name).connectivity.n_synapses
            stats = summary["plastic_weights"][name]
            assert stats["n_synapses"] == f[f"{name}.pre"].size
            assert stats["mean"] == pytest.approx(float(f[f"{name}.weight"].mean()), rel=1e-6)
            assert stats["max"] == float(f[f"{name}.weight"].max())
            assert f"{name}: {stats['n_synapses']:,} plastic synapses, final mean" in out
            times, values = result.weight_trace(name)
            np.testing.assert_array_equal(f[f"{name}.trace.times_ms"], times)
            np.testing.assert_array_equal(f[f"{name}.trace.values"], values)
        assert f["dense.trace.synapses"].tolist() == [[0, 0], [1, 2], [5, 3]]
        assert "sparse.trace.synapses" not in f.files  # the whole stored array was recorded


# ------------------------------------------------------------------ errors

P = "projections[0].plasticity"
ERRORS = [
    # (old, new, key path, fragments of the message)
    ('plasticity.type = "PairSTDP"', 'plasticity.type = "PairSTPD"', f"{P}.type",
     ["unknown plasticity rule 'PairSTPD'", "Did you mean 'PairSTDP'?", "TripletSTDP"]),
    ("tau_plus = 16.8", "tau_plu = 16.8", f"{P}.tau_plu",
     ["unknown argument 'tau_plu' of PairSTDP", "Did you mean 'tau_plus'?"]),
    ("tau_plus = 16.8", "tau_plus = -16.8", f"{P}.tau_plus",
     ["`tau_plus` must be positive (in ms)", "Pass a value > 0"]),
    ("A_plus = 0.02\n", 'A_plus = "big"\n', f"{P}.A_plus",
     ["expected `A_plus` (a number)", "got a string ('big')"]),
    ('{ type = "Additive", w_max = 0.5 }', '{ type = "Additve", w_max = 0.5 }',
     f"{P}.weight_dependence.type",
     ["unknown weight dependence 'Additve'", "Did you mean 'Additive'?"]),
    ('{ type = "Additive", w_max = 0.5 }', '{ type = "Additive", w_max = -0.5 }',
     f"{P}.weight_dependence.w_max",
     ["`w_max` must exceed w_min", "got w_max = -0.5, w_min = 0.0", "Raise w_max"]),
    ('{ type = "Additive", w_max = 0.5 }', '{ type = "Additive", w_max = "high" }',
     f"{P}.weight_dependence.w_max", ["expected `w_max` (a number)"]),
    ('{ type = "Additive", w_max = 0.5 }', '{ type = "Additive", wmax = 0.5 }',
     f"{P}.weight_dependence.wmax",
     ["unknown argument 'wmax' of Additive", "Did you mean 'w_max'?"]),
    ('{ type = "Additive", w_max = 0.5 }', '{ w_max = 0.5 }', f"{P}.weight_dependence",
     ["missing key 'type'", "Additive, Multiplicative, Gutig"]),
    ("target_rate = 20.0, ", "", "projections[1].plasticity[1]",
     ["missing argument 'target_rate' of SynapticScaling"]),
    ("tau = 100.0, beta", "tau = 0.0, beta", "projections[1].plasticity[1].tau",
     ["`tau` must be positive"]),
    ("nearest = true", "nearest = 1", "projections[1].plasticity[0].nearest",
     ["expected `nearest` (true or false)"]),
    (SPARSE_RULES, "plasticity = []", "projections[1].plasticity",
     ["expected at least one plasticity rule", "remove the key"]),
    (DENSE_RULE, "plasticity = 3", "projections[0].plasticity",
     ["expected a plasticity rule", "an array of rules", "got an integer"]),
    (SPARSE_RULES, 'plasticity = ["PairSTDP", 3]', "projections[1].plasticity[1]",
     ["expected a plasticity rule: a name (e.g. 'PairSTDP') or a table with 'type'",
      "got an integer"]),
    ('plasticity.type = "PairSTDP"', 'plasticity.type = "RewardModulatedSTDP"', P,
     ["needs the Python API", "projections[0].modulator"]),
    ('name = "dense"', 'name = "dense"\nmodulator = "reward"', "projections[0].modulator",
     ["unknown population 'reward'", "Valid: in, out"]),
    ('name = "dense"', 'name = "dense"\nmodulator = 1.0', "projections[0].modulator",
     ["expected a population name", "ConstantCurrent", "use the Python API",
      "brainsim.Projection(..., modulator=...)"]),
    ('projection = "sparse"', 'projection = "sparce"', "record.weights[1].projection",
     ["unknown projection 'sparce'", "Did you mean 'sparse'?"]),
    ('projection = "sparse"', 'projection = "dense"', "record.weights[1].projection",
     ["already recorded by record.weights[0]"]),
    ("[5, 3]", "[5, 4]", "record.weights[0].synapses",
     ["post in 0..3", "got [5, 4]"]),
    ("[5, 3]", "[5]", "record.weights[0].synapses", ["rectangular"]),
    ("every = 500", "every = 0", "record.weights[1].every", [">= 1"]),
]


@pytest.mark.parametrize(("old", "new", "path", "fragments"), ERRORS,
                         ids=[case[2] + ":" + case[1][:24] for case in ERRORS])
def test_errors_name_file_key_path_and_fix(tmp_path, old, new, path, fragments):
    file = tmp_path / "net.toml"
    file.write_text(edit(old, new))
    with pytest.raises(ConfigError) as info:
        load_config(file)
    message = str(info.value)
    assert message.startswith(f"{file}: {path}: "), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_reward_rule_without_modulator_and_modulator_without_rule(tmp_path):
    text = edit('plasticity.type = "PairSTDP"', 'plasticity.type = "RewardModulatedSTDP"')
    with pytest.raises(ConfigError, match=r": projections\[0\]\.plasticity: RewardModulatedSTDP "
                                          r"learns only while its modulator is non-zero"):
        parse_config(text)
    static = BASE.split("[[projections]]")[0] + """
[[projections]]
pre = "in"
post = "out"
receptor = "e"
connect = { type = "all_to_all", weight = 0.1 }
modulator = "in"
"""
    with pytest.raises(ConfigError, match=r"projections\[0\]\.modulator: a modulator only drives "
                                          r"a plasticity rule"):
        parse_config(static)
    recorded = static.replace('modulator = "in"\n', "") + \
        '\n[record]\nweights = [ { projection = "in->out:e" } ]\n'
    with pytest.raises(ConfigError, match=r"record\.weights\[0\]\.projection: projection "
                                          r"'in->out:e' has no plasticity"):
        parse_config(recorded)


def test_adaptive_threshold_errors():
    text = edit('model = "LIF"\nparams = {', 'model = "AdaptiveThreshold"\nparams = { model = '
                '"LIFF", theta_plus = 0.1, ')
    with pytest.raises(ConfigError, match=r"populations\.out\.params\.model: unknown model \(neuron or spike source\) 'LIFF'"
                                          r"\. Did you mean 'LIF'\?"):
        parse_config(text)


# ------------------------------------------------------------------ shipped configs


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    exp = load_config(path)
    assert exp.network.n_neurons > 0 and exp.n_steps >= 1


def test_song_config_is_brian2s_setup():
    exp = load_config(SONG)
    net = exp.network
    source, neuron = net.population("input"), net.population("out")
    assert (source.size, float(source.model.rate)) == (1000, 15.0)
    assert isinstance(source.model, bs.PoissonSource)
    lif = neuron.model
    assert neuron.size == 1
    assert float(lif.C_m) / float(lif.tau_m) == 1.0  # g_L = 1 nS: weights are Brian2's g
    assert (float(lif.tau_m), float(lif.E_L), float(lif.V_th), float(lif.V_reset)) == (
        10.0, -74.0, -54.0, -60.0)
    proj = net.projection("stdp")
    g_max, a_pre = 0.01, 0.01 * 0.01
    assert same_tree(proj.plasticity, pl.PairSTDP(20.0, 20.0, A_plus=a_pre, A_minus=1.05 * a_pre,
                                                  weight_dependence=pl.Additive(w_max=g_max)))
    w = np.asarray(proj.connectivity.weights)
    assert w.shape == (1000, 1) and w.min() >= 0 and w.max() <= g_max
    assert 0.4 < w.mean() / g_max < 0.6  # uniform in [0, g_max]
    assert exp.record == (bs.SpikeRaster(("out",)), bs.WeightTrace("stdp", every=5000))
    text = SONG.read_text()
    assert "--duration 100000" in text and "bimodal" in text
    assert tomllib.loads(text)["simulation"]["duration_ms"] <= 10_000


def test_song_config_runs_from_the_command_line(tmp_path, capsys):
    assert main(["run", str(SONG), "--duration", "20", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    with np.load(tmp_path / "weights.npz") as f:
        assert f["projections"].tolist() == ["stdp"]
        w = f["stdp.weight"]
        assert w.shape == (1000,) and w.min() >= 0 and w.max() <= 0.01
        assert f["stdp.trace.values"].shape == (1, 1000, 1)  # 200 steps, every 5000


def test_registry_kinds_are_described():
    # Every new kind has words for its messages (a KeyError here would hide a config error).
    from brainsim._config import _KIND_WORDS

    assert set(registry()) <= set(_KIND_WORDS)
