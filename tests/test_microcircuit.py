"""The Potjans & Diesmann (2014) microcircuit: structure against the published tables, input
compensation in closed form, and activity against the reference NEST rates (REFERENCES.md).

The activity tests simulate ``configs/potjans_diesmann.toml`` (scale 0.1, in-degrees 0.1 with
the 1/sqrt(k) weight and DC compensation, Poisson background) once for the whole module.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import brainsim as bs
from brainsim import analysis
from brainsim import networks as nets

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "potjans_diesmann.toml"
POPS = nets.PD14_POPULATIONS
DURATION = 600.0  # ms (the config's 1000 ms take ~2 min here; the CPU cost is per step)
TRANSIENT = 200.0  # ms discarded: the start-up transient (initial V, empty synapses)


# ------------------------------------------------------------------------------ numbers


def test_published_tables():
    # Potjans & Diesmann (2014), Tables 5 and 4: 77 169 neurons; spot checks of the
    # probability table (target, source): the largest entry L5I->L5E, L4E->L23E, L6I->L6E.
    assert sum(nets.PD14_SIZES) == 77169
    p = nets.PD14_CONN_PROBS
    assert p.shape == (8, 8) and p.max() == p[4, 5] == 0.3726
    assert p[0, 2] == 0.0437 and p[6, 7] == 0.2252 and p[2, 5] == 0.0003
    assert np.count_nonzero(p == 0) == 9
    # About 3e8 synapses in the full model (paper: "~0.3 billion").
    assert 2.9e8 < nets.full_scale_synapses().sum() < 3.1e8


def test_psp_to_psc_gives_the_peak():
    # 0.15 mV <-> 87.8 pA (the paper's value); and the PSP of that PSC peaks at 0.15 mV, found
    # numerically on a fine grid from the closed-form PSP of an iaf_psc_exp cell.
    w = float(nets.psp_to_psc(0.15))
    assert w == pytest.approx(87.81, abs=0.01)
    tau_m, tau_s, c_m = 10.0, 0.5, 250.0
    t = np.linspace(0.0, 20.0, 200_001)
    v = w * tau_m * tau_s / (c_m * (tau_m - tau_s)) * (np.exp(-t / tau_m) - np.exp(-t / tau_s))
    assert v.max() == pytest.approx(0.15, rel=1e-6)


@pytest.mark.parametrize("k_scale", [1.0, 0.5, 0.1])
@pytest.mark.parametrize("background", ["poisson", "dc"])
def test_scaling_preserves_mean_input(k_scale, background):
    # Mean input (pA) with the reference rates: sum_s w_ts K_ts nu_s tau_s (recurrent)
    # + w K_ext nu_bg tau_s (Poisson) + DC must equal the full model's, whatever k_scale;
    # and the variance term sum w^2 K nu must be unchanged (weights scale with 1/sqrt(k)).
    full = nets.potjans_diesmann_parameters(scale=1.0, k_scale=1.0, background="poisson")
    par = nets.potjans_diesmann_parameters(scale=0.5, k_scale=k_scale, background=background)
    n_full = np.asarray(nets.PD14_SIZES, float)[:, None]
    rates = np.asarray(nets.PD14_RATES)
    tau = 0.5e-3  # s

    def mean_and_var(p, n_post, ext):
        k_rec = p.n_synapses / n_post
        mean = tau * (p.weights * k_rec * rates).sum(1) + p.dc
        var = (p.weights**2 * k_rec * rates).sum(1)
        if ext:
            mean = mean + tau * p.w_ext * p.bg_rates
            var = var + p.w_ext**2 * p.bg_rates
        return mean, var

    m_full, v_full = mean_and_var(full, n_full, True)
    n_post = (np.asarray(nets.PD14_SIZES) * 0.5)[:, None]
    m, v = mean_and_var(par, n_post, background == "poisson")
    # Tolerance: synapse counts and in-degrees are rounded to integers (relative 1e-3 here).
    np.testing.assert_allclose(m, m_full, rtol=2e-3)
    if background == "poisson":
        np.testing.assert_allclose(v, v_full, rtol=2e-3)
    if k_scale == 1.0:
        # No compensation needed; "dc" carries the whole background mean w K_ext nu tau_s.
        ext_mean = tau * full.w_ext * np.asarray(nets.PD14_K_EXT) * 8.0
        expected_dc = 0.0 if background == "poisson" else ext_mean
        np.testing.assert_allclose(par.dc, expected_dc, atol=1e-9)


def test_bad_arguments():
    with pytest.raises(ValueError, match="`scale` must lie in"):
        nets.potjans_diesmann_parameters(scale=1.5)
    with pytest.raises(ValueError, match="`background` must be"):
        nets.potjans_diesmann_parameters(background="noise")
    with pytest.raises(ValueError, match="`v0` must be"):
        nets.potjans_diesmann_parameters(v0="random")


# --------------------------------------------------------------------- the built network


@pytest.fixture(scope="module")
def experiment():
    exp = bs.load_config(CONFIG)
    assert exp.data["network"]["builder"] == "potjans_diesmann"
    return exp


@pytest.fixture(scope="module")
def result(experiment):
    return bs.simulate(experiment.network, DURATION, key=experiment.key(), record=experiment.record)


def _params(experiment):
    spec = experiment.data["network"]
    return nets.potjans_diesmann_parameters(scale=spec["scale"], k_scale=spec["k_scale"])


def test_sizes_and_synapse_counts(experiment):
    net, par = experiment.network, _params(experiment)
    scale = experiment.data["network"]["scale"]
    for i, name in enumerate(POPS):
        assert net.population(name).size == round(nets.PD14_SIZES[i] * scale)
        assert net.population(f"{name}_bg").size == net.population(name).size
    k = experiment.data["network"]["k_scale"]
    for j, post in enumerate(POPS):
        for i, pre in enumerate(POPS):
            p = nets.PD14_CONN_PROBS[j, i]
            n_full = nets.PD14_SIZES[i] * nets.PD14_SIZES[j]
            expected = round(math.log(1 - p) / math.log(1 - 1 / n_full) * scale * k)
            names = [q.name for q in net.projections]
            if expected == 0:
                assert f"{pre}->{post}:syn" not in names
                continue
            assert net.projection(f"{pre}->{post}:syn").connectivity.n_synapses == expected
            assert par.n_synapses[j, i] == expected


def test_connection_probability_is_preserved(experiment):
    # With scale == k_scale the number of synapses per pair is the full model's, so the fraction
    # of pairs connected at least once (multapses drawn with replacement) is the table's p.
    net = experiment.network
    for pre, post in (("L4E", "L23E"), ("L5I", "L5E"), ("L23I", "L23I"), ("L6I", "L6E")):
        i, j = POPS.index(pre), POPS.index(post)
        conn = net.projection(f"{pre}->{post}:syn").connectivity
        n_pre, n_post = conn.n_pre, conn.n_post
        targets = np.asarray(conn.targets)
        rows = np.broadcast_to(np.arange(n_pre)[:, None], targets.shape)
        valid = targets < n_post
        pairs = np.unique(rows[valid].astype(np.int64) * n_post + targets[valid])
        p = nets.PD14_CONN_PROBS[j, i]
        frac = pairs.size / (n_pre * n_post)
        se = math.sqrt(p * (1 - p) / (n_pre * n_post))
        assert abs(frac - p) < 5 * se, (pre, post, frac, p)


def test_weights_and_delays(experiment):
    net, par = experiment.network, _params(experiment)
    dt = net.dt
    w_exc = float(nets.psp_to_psc(0.15)) / math.sqrt(experiment.data["network"]["k_scale"])
    for pre, post, factor in (("L23E", "L23E", 1.0), ("L4E", "L23E", 2.0), ("L5I", "L5E", -4.0)):
        conn = net.projection(f"{pre}->{post}:syn").connectivity
        valid = np.asarray(conn.targets) < conn.n_post
        w = np.asarray(conn.weights)[valid]
        d = (np.asarray(conn.delays)[valid] - 1) * dt  # stored as lags: delay + one step
        # Normal weights, relative SD 0.1: the sample mean is within 4 SE (SE = 0.1 w / sqrt n).
        mean = factor * w_exc
        assert abs(w.mean() - mean) < 4 * 0.1 * abs(mean) / math.sqrt(w.size)
        assert w.std() / abs(mean) == pytest.approx(0.1, rel=0.05)
        assert np.all(np.sign(w) == np.sign(mean))
        # Delays: normal (mean mu, SD mu/2) redrawn below dt, so a normal truncated at dt
        # (closed-form mean), then rounded to the grid (no bias); never shorter than a step.
        mu = 1.5 if pre.endswith("E") else 0.75
        sd = mu / 2
        a = (dt - mu) / sd
        phi = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
        tail = 0.5 * math.erfc(a / math.sqrt(2))
        truncated_mean = mu + sd * phi / tail
        assert d.min() >= dt - 1e-9
        # 4 SE of the mean plus the rounding (uniform on +-dt/2, SD dt/sqrt(12)).
        se = math.sqrt(sd**2 + dt**2 / 12) / math.sqrt(d.size)
        assert abs(d.mean() - truncated_mean) < 4 * se + 1e-3
    assert par.weights[0, 2] == pytest.approx(2 * par.weights[0, 0])


# --------------------------------------------------------------------------- activity


def _steady(result, experiment, name):
    times, ids = result.spikes(name)
    keep = times >= TRANSIENT
    n = experiment.network.population(name).size
    return times[keep], ids[keep], n


def _rates(result, experiment):
    out = {}
    for name in POPS:
        times, _, n = _steady(result, experiment, name)
        out[name] = times.size / n / ((DURATION - TRANSIENT) * 1e-3)
    return out


@pytest.mark.slow
def test_rates_in_reference_range(result, experiment):
    # Reference: NEST at full scale (REFERENCES.md). Scaling the in-degrees to 0.1 with the
    # 1/sqrt(k) weights and DC compensation keeps the mean and variance of every neuron's
    # input but not its higher statistics: measured here (seeds 0 and 1) the rates are
    # 0.52-0.91 of the reference, L2/3 lowest, while at k_scale = 1 (scale 0.1) they are
    # 1.00-1.31 of it. Sampling noise over 400 ms is below 7 % per population. The band
    # [0.4, 1.6] x reference therefore accepts the scaled model and rejects a wrong one
    # (a weight or in-degree off by 30 % moves rates by far more than that).
    rates = _rates(result, experiment)
    for name, ref in zip(POPS, nets.PD14_RATES, strict=True):
        assert 0.4 * ref <= rates[name] <= 1.6 * ref, (name, rates[name], ref)


@pytest.mark.slow
def test_published_qualitative_ordering(result, experiment):
    rates = _rates(result, experiment)
    # Inhibitory cells fire faster than the excitatory cells of their layer ...
    for layer in ("L23", "L4", "L5", "L6"):
        assert rates[f"{layer}I"] > rates[f"{layer}E"], layer
    # ... L2/3E and L6E are the two slowest excitatory populations, L5E the fastest.
    exc = sorted(("L23E", "L4E", "L5E", "L6E"), key=rates.get)
    assert set(exc[:2]) == {"L23E", "L6E"} and exc[-1] == "L5E", rates


@pytest.mark.slow
def test_irregular_firing(result, experiment):
    # Asynchronous irregular state. The mean ISI CV over neurons with >= 3 spikes in a short
    # window is biased low (long intervals are cut off: 0.42-0.58 measured over 800 ms windows
    # at scale 0.1, k_scale 0.1 or 1; less over the 400 ms here), so the bound separates
    # irregular firing from regular firing (CV < 0.2) rather than pinning the full-length
    # value (~0.7-0.9).
    for name in POPS:
        times, ids, n = _steady(result, experiment, name)
        cv = analysis.isi_cv(times, ids, n)
        assert 0.3 < cv < 1.5, (name, cv)


# ------------------------------------------------------------------------------- config


def test_config_builder_equals_function():
    text = (
        "[simulation]\nduration_ms = 10.0\ndt_ms = 0.1\nseed = 3\n"
        '[network]\nbuilder = "coba"\nn_neurons = 200\nlayout = { type = "sparse", chunk_size = 4 }\n'
    )
    exp = bs._config.parse_config(text)
    ref = nets.coba(n_neurons=200, seed=3, dt=0.1, layout=bs.Sparse(chunk_size=4))
    assert [p.size for p in exp.network.populations] == [p.size for p in ref.populations]
    for a, b in zip(exp.network.projections, ref.projections, strict=True):
        np.testing.assert_array_equal(a.connectivity.targets, b.connectivity.targets)
        assert a.connectivity.chunk_size == 4


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('builder = "potjans_diesman"', "Did you mean 'potjans_diesmann'"),
        ('builder = "coba"\nn_neuron = 10', "unknown argument 'n_neuron' of coba"),
        ('builder = "coba"\ndt = 0.1', "set it as simulation.dt_ms"),
        ("scale = 0.1", "missing key 'builder'"),
        ('builder = "potjans_diesmann"\nbackground = "x"', "`background` must be"),
        ('builder = "coba"\nlayout = "sprase"', "unknown layout 'sprase'"),
    ],
)
def test_config_builder_errors(body, message):
    text = f"[simulation]\nduration_ms = 1.0\ndt_ms = 0.1\n[network]\n{body}\n"
    with pytest.raises(bs.ConfigError, match=message):
        bs._config.parse_config(text)


def test_config_builder_excludes_populations():
    text = (
        '[simulation]\nduration_ms = 1.0\ndt_ms = 0.1\n[network]\nbuilder = "coba"\n'
        '[populations.E]\nsize = 1\nmodel = "LIF"\n'
    )
    with pytest.raises(bs.ConfigError, match="cannot also list populations"):
        bs._config.parse_config(text)


def test_config_is_the_builder_and_reproducible(experiment):
    # The config's network is potjans_diesmann(...) with the config's seed: same synapses,
    # weights and delays when built again (connectivity seeds [seed, i, j]), same DC.
    spec = experiment.data["network"]
    net = nets.potjans_diesmann(scale=spec["scale"], k_scale=spec["k_scale"], seed=experiment.seed)
    for a, b in zip(net.projections, experiment.network.projections, strict=True):
        assert a.name == b.name
        for field in ("targets", "weights", "delays"):
            np.testing.assert_array_equal(
                getattr(a.connectivity, field), getattr(b.connectivity, field)
            )
    dc = _params(experiment).dc
    for i, name in enumerate(POPS):
        assert float(net.population(name).model.I_e) == pytest.approx(dc[i], rel=1e-6)
