r"""The extension contract: components written outside the package, with public names only
(``brainsim`` and ``brainsim.extend``), run through every driver.

Defined here as a user would: a stochastic neuron (an LIF membrane driven by white noise,
integrated exactly), synaptic kinetics with two time scales, a Hebbian plasticity rule, a
connectivity format (one synapse ``i -> i`` per neuron, with its own delivery) and two
monitors (a carried buffer and a per-step value). Each passes the component battery (jit,
vmap, finite gradients, float32/float64, no recompilation) and a closed form or a reference,
then runs through :func:`brainsim.simulate` (``record=``, ``checkpoint=``, ``unroll=``),
:func:`brainsim.run_long` (with a resume), :func:`brainsim.simulate_sharded` (2 host devices)
and :func:`brainsim.fit.fit`, compared with a plain ``simulate`` where that means something.

Combinations refused today are written as the behaviour we want and marked
``xfail(strict=True)`` with the reason: the list of what is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_battery import float_leaves, run_kinetics

import brainsim as bs
from brainsim import extend as bx

DT = 0.1

# ====================================================================== user components


class NoisyLIFState(NamedTuple):
    v: jax.Array
    """Membrane potential (mV)."""
    refractory: jax.Array
    """Steps of refractoriness left."""


class NoisyLIF(bx.AbstractNeuron):
    r"""Leaky integrate-and-fire neuron driven by white noise, integrated exactly.

    .. math::
        dV = -\frac{V - V_\infty}{\tau_{eff}}\,dt + \sigma \sqrt{2/\tau_m}\, dW, \qquad
        V_\infty = \frac{g_L E_L + I_e + i}{g_L + g}, \quad \tau_{eff} = \frac{C_m}{g_L + g}

    an Ornstein–Uhlenbeck process: without input its stationary standard deviation is
    ``sigma`` (mV). Over a step with input held constant the update is exact,
    :math:`V' = V_\infty + (V - V_\infty) a + \sigma \sqrt{(\tau_{eff}/\tau_m)(1 - a^2)}\,\xi`
    with :math:`a = e^{-\Delta t/\tau_{eff}}` and :math:`\xi \sim N(0, 1)` drawn from the
    step's key. Threshold, reset and refractoriness as :class:`brainsim.LIF`.
    """

    C_m: jax.Array
    tau_m: jax.Array
    E_L: jax.Array
    V_th: jax.Array
    V_reset: jax.Array
    t_ref: jax.Array
    I_e: jax.Array
    sigma: jax.Array
    surrogate: bs.surrogate.AbstractSurrogate
    timing: bs.Timing = eqx.field(static=True, default=bs.Timing.brian2())

    def __init__(self, *, C_m=250.0, tau_m=10.0, E_L=-65.0, V_th=-55.0, V_reset=-65.0,
                 t_ref=2.0, I_e=0.0, sigma=1.0):  # fmt: skip
        owner = "NoisyLIF"
        self.C_m = bx.as_parameter(C_m, "C_m", owner=owner, unit="pF", positive=True)
        self.tau_m = bx.as_parameter(tau_m, "tau_m", owner=owner, unit="ms", positive=True)
        self.E_L = bx.as_parameter(E_L, "E_L", owner=owner, unit="mV")
        self.V_th = bx.as_parameter(V_th, "V_th", owner=owner, unit="mV", allow_inf=True)
        self.V_reset = bx.as_parameter(V_reset, "V_reset", owner=owner, unit="mV")
        self.t_ref = bx.as_parameter(t_ref, "t_ref", owner=owner, unit="ms", nonnegative=True)
        self.I_e = bx.as_parameter(I_e, "I_e", owner=owner, unit="pA")
        self.sigma = bx.as_parameter(sigma, "sigma", owner=owner, unit="mV", nonnegative=True)
        bx.check_above(owner, "V_th", self.V_th, "V_reset", self.V_reset)
        self.surrogate = bs.surrogate.FastSigmoid()

    def init(self, n, *, dtype=None):
        dtype = bx.default_dtype(dtype)
        return NoisyLIFState(jnp.broadcast_to(self.E_L, (n,)).astype(dtype),
                             jnp.zeros((n,), jnp.int32))  # fmt: skip

    def voltage(self, state):
        return state.v

    def state_bounds(self):
        return {"v": bx.MEMBRANE_FLOOR}

    def step(self, state, drive, t, dt, key):
        dtype = state.v.dtype
        g_L = self.C_m / self.tau_m
        g = g_L + drive.conductance
        v_inf = (g_L * self.E_L + self.I_e + drive.current) / g
        a = jnp.exp(-dt * g / self.C_m)
        spread = self.sigma * jnp.sqrt(g_L / g * (1.0 - a * a))
        xi = jax.random.normal(key, state.v.shape, dtype)
        v = v_inf + (state.v - v_inf) * a + spread * xi
        v, spikes, refractory = bx.fire_and_reset(
            v, self.V_th, state.refractory, V_reset=self.V_reset, surrogate=self.surrogate,
            detach=True, t_ref=self.t_ref, dt=dt, timing=self.timing,
        )  # fmt: skip
        return NoisyLIFState(v.astype(dtype), refractory), spikes.astype(dtype)


class TwoTimescaleState(NamedTuple):
    fast: jax.Array
    slow: jax.Array


class TwoTimescaleSynapse(bx.AbstractKinetics):
    r"""A fast and a slow exponential sharing one weight:
    :math:`g(t) = w\,[f e^{-t/\tau_f} + (1 - f) e^{-t/\tau_s}]` after a spike at 0 (peak ``w``).
    Step average of each component: :math:`g\,\varphi_1(-\Delta t/\tau)`."""

    tau_fast: jax.Array
    tau_slow: jax.Array
    fraction: jax.Array

    def __init__(self, tau_fast=1.0, tau_slow=8.0, fraction=0.6):
        owner = "TwoTimescaleSynapse"
        self.tau_fast = bx.as_parameter(tau_fast, "tau_fast", owner=owner, unit="ms", positive=True)
        self.tau_slow = bx.as_parameter(tau_slow, "tau_slow", owner=owner, unit="ms", positive=True)
        bx.check_that("fraction", fraction, lambda f: (f >= 0) & (f <= 1), "lie in [0, 1]",
                      owner=owner, fix="Pass the fast component's share of the peak.")  # fmt: skip
        self.fraction = bx.as_parameter(fraction, "fraction", owner=owner)

    def init(self, n, dtype):
        z = jnp.zeros((n,), dtype)
        return TwoTimescaleState(z, z)

    def arrive(self, state, weight):
        f = self.fraction
        return TwoTimescaleState((state.fast + f * weight).astype(state.fast.dtype),
                                 (state.slow + (1 - f) * weight).astype(state.slow.dtype))  # fmt: skip

    def mean(self, state, dt):
        m = state.fast * bx.phi1(-dt / self.tau_fast) + state.slow * bx.phi1(-dt / self.tau_slow)
        return m.astype(state.fast.dtype)

    def decay(self, state, dt):
        return TwoTimescaleState((state.fast * jnp.exp(-dt / self.tau_fast)).astype(state.fast.dtype),
                                 (state.slow * jnp.exp(-dt / self.tau_slow)).astype(state.slow.dtype))  # fmt: skip

    def value(self, state):
        return state.fast + state.slow


class PostTraceHebb(bx.AbstractPlasticity):
    r"""Presynaptically gated Hebbian rule: a postsynaptic trace :math:`y_j` (decay
    :math:`\tau`, +1 per spike) and, at every presynaptic spike of neuron :math:`i`,
    :math:`w_{ij} \leftarrow \mathrm{clip}(w_{ij} + \eta\, y_j, 0, w_{max})` with the trace
    before this step's postsynaptic spikes."""

    eta: jax.Array
    tau: jax.Array
    w_max: jax.Array

    def __init__(self, eta=0.5, tau=20.0, w_max=100.0):
        self.eta = bx.as_parameter(eta, "eta", owner="PostTraceHebb")
        self.tau = bx.as_parameter(tau, "tau", owner="PostTraceHebb", unit="ms", positive=True)
        self.w_max = bx.as_parameter(w_max, "w_max", owner="PostTraceHebb", positive=True)

    def init(self, synapses, weights):
        return jnp.zeros((synapses.n_post,), weights.dtype)

    def update(self, state, weights, pre_spikes, post_spikes, dt, *, synapses, modulator=None):
        y = (state * jnp.exp(-dt / self.tau)).astype(state.dtype)

        def potentiate(w, pre, post, valid):
            up = self.eta * y.at[post].get(mode="fill", fill_value=0)
            return jnp.clip(w + up, 0.0, self.w_max).astype(w.dtype)

        weights = synapses.on_pre(weights, pre_spikes, potentiate)
        return weights, (y + post_spikes.astype(y.dtype)).astype(state.dtype)


class Diagonal(bx.AbstractLayout):
    """One synapse ``i -> i`` per neuron (``connect.one_to_one``), stored as a weight vector,
    with one delay for all."""

    def build(self, edges, dt, *, owner, round_delays, dtype):
        edges = bx.materialise(edges, owner)
        pre, post = np.asarray(edges.pre), np.asarray(edges.post)
        if edges.n_pre != edges.n_post or not np.array_equal(np.sort(pre), np.arange(edges.n_pre)) \
                or np.any(pre != post):  # fmt: skip
            raise ValueError(
                f"{owner}: a Diagonal layout stores exactly the synapses i -> i of every neuron "
                f"(connect.one_to_one); got {pre.size} synapses between {edges.n_pre} and "
                f"{edges.n_post} neurons. Use bs.Sparse()."
            )
        lags = np.unique(bx.delay_steps(edges.delay, dt, owner=owner, round_delays=round_delays))
        if lags.size != 1:
            raise ValueError(f"{owner}: a Diagonal layout has one delay; got lags {lags} steps.")
        w = np.zeros(edges.n_pre)
        w[pre] = edges.weights_per_edge()
        return DiagonalConnectivity(bx.host_to_device(w, dtype), int(lags[0]), edges.n_pre,
                                    pre.size)  # fmt: skip


class DiagonalConnectivity(bx.AbstractConnectivity):
    weights: jax.Array
    lag: int = eqx.field(static=True)

    def __init__(self, weights, lag, n, n_synapses):
        self.weights = weights
        self.lag = lag
        self.n_pre = self.n_post = n
        self.max_delay = lag
        self.n_synapses = n_synapses

    def deliver(self, ring, cursor, spikes):
        rows = ring.shape[0] // self.n_post
        values = spikes.astype(self.weights.dtype) * self.weights
        return bx.add_to_ring_row(ring, (cursor + self.lag) % rows, values, self.n_post)

    def to_dense(self):
        return jnp.diag(self.weights)

    def plastic_synapses(self, edges, *, owner):
        return DiagonalSynapses(self.n_pre), self.weights


class DiagonalSynapses(bx.AbstractSynapses):
    """A plasticity rule's view of the synapses ``i -> i``: one weight per neuron."""

    def __init__(self, n):
        self.n_pre = self.n_post = n

    def _apply(self, values, fn):
        i = jnp.arange(self.n_pre)
        return fn(values, i, i, jnp.ones(values.shape, bool)).astype(values.dtype)

    def on_pre(self, values, spikes, fn):  # synapse i is the only one of neuron i
        return jnp.where(spikes != 0, self._apply(values, fn), values)

    on_post = on_pre

    def map(self, values, fn):
        return self._apply(values, fn)

    def post_sum(self, values):
        return values

    def to_dense(self, values):
        return jnp.diag(values)

    def get(self, values, pre, post):
        pre, post = jnp.asarray(pre), jnp.asarray(post)
        return jnp.where(pre == post, values[pre], 0)

    def zeros(self, dtype):
        return jnp.zeros((self.n_pre,), dtype)


class SpikeCount(bx.AbstractMonitor):
    """Spikes of every neuron of ``population`` over the run (a carried buffer)."""

    population: str = eqx.field(static=True)

    def init(self, network, n_steps, dtype):
        return jnp.zeros((network.population(self.population).size,), jnp.int32)

    def update(self, network, buffer, state_before, spikes, k):
        return buffer + spikes[self.population].astype(jnp.int32)

    def nbytes(self, network, n_steps):
        return 4 * network.population(self.population).size

    def describe(self, network, n_steps):
        return f"SpikeCount {self.population!r}: {self.nbytes(network, n_steps)} bytes"

    # Streaming (run_long): one row per chunk, the counts of that chunk.
    def streams(self, network, recording, n_steps):
        size = network.population(self.population).size
        return (bs.Stream("counts", "<i4", (size,), every=n_steps),)

    def rows(self, network, recording, k0):
        return {"counts": np.asarray(recording)[None]}


class MeanVoltage(bx.AbstractMonitor):
    """Mean membrane potential of ``population`` at the start of every step (mV)."""

    population: str = eqx.field(static=True)

    def per_step(self, network, state_before, spikes, k):
        model = network.population(self.population).model
        return jnp.mean(model.voltage(network.population_state(state_before, self.population)))

    def nbytes(self, network, n_steps):
        return 4 * n_steps

    def describe(self, network, n_steps):
        return f"MeanVoltage {self.population!r}: {self.nbytes(network, n_steps)} bytes"


# ====================================================================== the test network

N = 15  # odd: the sharded runs pad the last device's block
N_SRC = 12


def contract_network(*, sigma=1.0, layout="user", plastic=True):
    """Poisson ``P`` -> noisy ``N`` (Dense) -> noisy ``M`` one to one (the user's
    :class:`Diagonal` format, or ``layout="dense"``), both projections plastic with the user's
    rule (``plastic``), every receptor with the user's kinetics."""
    rng = np.random.default_rng(3)
    receptor = {"syn": bs.Receptor(TwoTimescaleSynapse(), bs.CurrentBased())}
    pops = [
        bs.Population("P", N_SRC, bs.PoissonSource(100.0)),
        bs.Population("N", N, NoisyLIF(I_e=rng.uniform(230.0, 300.0, N), sigma=sigma),
                      receptors=receptor, initial={"v": bs.init.Uniform(-65.0, -56.0)}),
        bs.Population("M", N, NoisyLIF(I_e=200.0, sigma=sigma), receptors=receptor),
    ]  # fmt: skip
    drive = bs.connect.fixed_probability(N_SRC, N, 0.5, weight=bs.connect.Uniform(40.0, 80.0),
                                         delay=0.5, seed=1)  # fmt: skip
    relay = bs.connect.one_to_one(N, weight=600.0, delay=1.0)
    projs = [
        bs.Projection("P", "N", drive, receptor="syn", layout=bs.Dense(),
                      plasticity=PostTraceHebb() if plastic else None, name="drive"),
        bs.Projection("N", "M", relay, receptor="syn", name="relay",
                      layout=Diagonal() if layout == "user" else bs.Dense(),
                      plasticity=PostTraceHebb(eta=20.0, w_max=2000.0) if plastic else None),
    ]  # fmt: skip
    return bs.Network(pops, projs, dt=DT)


def raster(result, population):
    """Per-step spikes (steps × neurons; counts for a source) from a SpikeRaster."""
    m, rec = next((m, r) for m, r in zip(result.monitors, result.recordings, strict=True)
                  if isinstance(m, bs.SpikeRaster))  # fmt: skip
    rows = np.asarray(rec[population])
    if population == "P":
        return rows.astype(np.int64)
    size = dict(zip(result.population_names, result.population_sizes, strict=True))[population]
    return np.unpackbits(rows, axis=1, count=size).astype(np.int64)


def test_extend_names_are_documented():
    # Every public building block teaches its use: classes carry their own docstring (not
    # one inherited or generated by dataclasses), functions theirs.
    names = [n for n in dir(bx) if not n.startswith("_")]
    assert {"fire_and_reset", "next_refractory", "as_parameter", "check_positive",
            "default_dtype", "StateBound", "AbstractNeuron", "AbstractConnectivity",
            "AbstractMonitor", "AbstractPlasticity"} <= set(names)  # fmt: skip
    for name in names:
        obj = getattr(bx, name)
        if isinstance(obj, type):
            doc = vars(obj).get("__doc__") or ""
            assert len(doc) > 40 and not doc.startswith(f"{obj.__name__}("), name
        elif callable(obj):
            assert len(obj.__doc__ or "") > 40, name


# ====================================================================== component battery


def run_noisy(model, state, current, n_steps, key):
    """Scan the neuron with a constant current and a fresh key per step."""

    def body(s, k):
        drive = bs.Drive(jnp.full(s.v.shape, current, s.v.dtype), jnp.zeros_like(s.v))
        return model.step(s, drive, 0.0, DT, k)

    return jax.lax.scan(body, state, jax.random.split(key, n_steps))


def test_noisy_lif_is_an_exact_ornstein_uhlenbeck_membrane():
    # Free membrane from V = E_L: after k steps V is normal with mean E_L + I_e/g_L (1 - a^k)
    # and variance sigma^2 (1 - a^(2k)), a = exp(-dt/tau_m), and successive steps correlate
    # as the exact OU transition. 20000 neurons: the sample variance's relative standard
    # error is sqrt(2/n) = 1 %, so 5 % is > 4 standard errors.
    model = NoisyLIF(V_th=float("inf"), I_e=50.0, sigma=2.0)
    n, k = 20000, 30
    final, _ = jax.jit(lambda s: run_noisy(model, s, 0.0, k, jax.random.key(1)))(model.init(n))
    a = np.exp(-DT / 10.0)
    v = np.asarray(final.v, np.float64)
    assert abs(v.mean() - (-65.0 + 50.0 / 25.0 * (1 - a**k))) < 5 * 2.0 / np.sqrt(n)
    np.testing.assert_allclose(v.var(), 4.0 * (1 - a ** (2 * k)), rtol=0.05)
    # one more step: V' - a V is independent of V with variance sigma^2 (1 - a^2)
    nxt, _ = model.step(final, bs.Drive.zeros(n, jnp.float32), 0.0, DT, jax.random.key(2))
    innovation = np.asarray(nxt.v, np.float64) - a * v
    np.testing.assert_allclose(innovation.var(), 4.0 * (1 - a**2), rtol=0.05)
    assert abs(np.corrcoef(innovation, v)[0, 1]) < 0.03


def test_user_neuron_follows_the_network_timing():
    # fire_and_reset holds the membrane t_ref/dt - 1 steps after a spike with Brian2's
    # conventions and t_ref/dt with NEST's; a Network hands its Timing to the model's static
    # `timing` field. A drive far above threshold then fires at the first free step.
    isi = {}
    for timing in (bs.Timing.brian2(), bs.Timing.nest()):
        pop = bs.Population("N", 1, NoisyLIF(sigma=0.0, I_e=1e5, t_ref=2.0))
        net = bs.Network([pop], [], dt=DT, timing=timing)
        assert net.population("N").model.timing == timing
        r = bs.simulate(net, 10.0, key=jax.random.key(0), record=(bs.SpikeRaster(),))
        isi[timing.describe()] = set(np.diff(np.flatnonzero(raster(r, "N")[:, 0])).tolist())
    assert isi == {"Brian2": {20}, "NEST": {21}}


def test_noisy_lif_draws_from_its_key():
    model = NoisyLIF(sigma=1.0)
    s, d = model.init(8), bs.Drive.zeros(8, jnp.float32)
    a = model.step(s, d, 0.0, DT, jax.random.key(0))[0].v
    b = model.step(s, d, 0.0, DT, jax.random.key(0))[0].v
    c = model.step(s, d, 0.0, DT, jax.random.key(1))[0].v
    assert np.array_equal(a, b) and not np.allclose(a, c)
    assert np.unique(np.asarray(a)).size == 8  # every neuron its own draw


def test_noisy_lif_rejects_bad_parameters():
    with pytest.raises(ValueError, match=r"NoisyLIF: `sigma` must be >= 0 \(in mV\); got -1.0"):
        NoisyLIF(sigma=-1.0)
    with pytest.raises(ValueError, match="NoisyLIF: `V_th`.*must be above `V_reset`"):
        NoisyLIF(V_th=-70.0)
    with pytest.raises(ValueError, match="TwoTimescaleSynapse: `fraction` must lie in"):
        TwoTimescaleSynapse(fraction=1.5)


_NEURON_TRACES = []


@eqx.filter_jit
def _neuron_run(model, state, key):
    _NEURON_TRACES.append(None)  # runs only when tracing
    return run_noisy(model, state, 500.0, 200, key)


def test_neuron_battery_jit_vmap_recompile():
    model = NoisyLIF(sigma=1.0)
    final, spikes = _neuron_run(model, model.init(3), jax.random.key(0))
    assert spikes.shape == (200, 3) and set(np.unique(np.asarray(spikes))) <= {0.0, 1.0}
    assert float(spikes.sum()) >= 3 and final.refractory.dtype == jnp.int32
    # vmap over parameters and keys equals the loop
    models = [NoisyLIF(sigma=s, I_e=i) for s, i in ((0.5, 250.0), (2.0, 270.0))]
    keys = jax.random.split(jax.random.key(5), 2)
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *models)
    batched = eqx.filter_vmap(lambda m, k: run_noisy(m, m.init(3), 500.0, 200, k))(stacked, keys)
    before = len(_NEURON_TRACES)
    for i, m in enumerate(models):
        f, s = _neuron_run(m, m.init(3), keys[i])
        np.testing.assert_array_equal(batched[1][i], s)
        np.testing.assert_allclose(batched[0].v[i], f.v, rtol=1e-6, atol=1e-4)
    assert len(_NEURON_TRACES) == before  # new parameter values and keys: no recompilation


def test_neuron_battery_grad_is_finite_and_flows():
    model = NoisyLIF(sigma=1.0)

    @eqx.filter_jit
    @eqx.filter_grad
    def grad(model):
        final, spikes = run_noisy(model, model.init(3), 500.0, 200, jax.random.key(0))
        return jnp.mean(final.v) + jnp.sum(spikes)

    g = grad(model)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in float_leaves(g))
    assert float(g.I_e) != 0.0 and float(g.sigma) != 0.0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_neuron_battery_dtype_preserved(dtype, request):
    if dtype == "float64":
        request.getfixturevalue("x64")
    model = NoisyLIF(sigma=1.0)
    final, spikes = jax.jit(lambda s: run_noisy(model, s, 500.0, 20, jax.random.key(0)))(
        model.init(2, dtype=jnp.dtype(dtype))
    )
    assert final.v.dtype == jnp.dtype(dtype) and spikes.dtype == jnp.dtype(dtype)


def test_kinetics_closed_form_response():
    # One spike of weight w at t = 0: value w (f e^{-t/tf} + (1-f) e^{-t/ts}) at t = k dt, and
    # the step average is the exact integral of that over the step.
    syn = TwoTimescaleSynapse(tau_fast=1.0, tau_slow=8.0, fraction=0.6)
    spikes = np.zeros(50, np.float32)
    spikes[0] = 1.0
    _, means = jax.jit(lambda: run_kinetics(syn, syn.init(1, jnp.float32), 2.0, spikes))()
    t0 = np.arange(50) * 0.1

    def integral(t):  # ∫ g dt
        return -2.0 * (0.6 * 1.0 * np.exp(-t / 1.0) + 0.4 * 8.0 * np.exp(-t / 8.0))

    exact = (integral(t0 + 0.1) - integral(t0)) / 0.1
    np.testing.assert_allclose(np.asarray(means)[:, 0], exact, rtol=1e-5, atol=1e-7)


def test_kinetics_battery():
    syns = [TwoTimescaleSynapse(tau_slow=s) for s in (6.0, 9.0)]
    spikes = (np.arange(100) % 15 == 0).astype(np.float32)
    traces = []

    @eqx.filter_jit
    def run(syn, w):
        traces.append(None)
        return run_kinetics(syn, syn.init(3, w.dtype), w, jnp.asarray(spikes, w.dtype))

    outs = [run(s, jnp.asarray(1.5))[1] for s in syns]
    assert len(traces) == 1 and not np.allclose(outs[0], outs[1])
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *syns)
    batched = eqx.filter_vmap(lambda s: run_kinetics(s, s.init(3, jnp.float32), 1.5, spikes))(
        stacked
    )[1]
    for i, out in enumerate(outs):
        np.testing.assert_allclose(batched[i], out, rtol=1e-6)
    g_syn, g_w = eqx.filter_grad(lambda p: jnp.sum(run(*p)[1]))((syns[0], jnp.asarray(1.5)))
    assert float(g_w) > 0 and float(g_syn.tau_slow) > 0  # a slower decay delivers more
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in float_leaves(g_syn))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kinetics_dtype_preserved(dtype, request):
    if dtype == "float64":
        request.getfixturevalue("x64")
    syn = TwoTimescaleSynapse()
    dt_ = jnp.dtype(dtype)
    final, out = jax.jit(lambda: run_kinetics(syn, syn.init(3, dt_), jnp.asarray(1.0, dt_),
                                              jnp.ones(5, dt_)))()  # fmt: skip
    assert out.dtype == dt_ and all(x.dtype == dt_ for x in jax.tree.leaves(final))


def _apply_rule(rule, synapses, w, pre, post):
    """The rule over a sequence of spike steps; returns the final weights."""

    def body(carry, spikes):
        w, s = carry
        w, s = rule.update(s, w, spikes[0], spikes[1], DT, synapses=synapses)
        return (w, s), None

    return jax.lax.scan(body, (w, rule.init(synapses, w)), (pre, post))[0][0]


def _rule_inputs(dtype=jnp.float32):
    rng = np.random.default_rng(0)
    pre = jnp.asarray(rng.random((60, 4)) < 0.2, dtype)
    post = jnp.asarray(rng.random((60, 5)) < 0.2, dtype)
    w = jnp.asarray(rng.uniform(0.0, 1.0, (4, 5)), dtype)
    return bs.plasticity.DenseSynapses(4, 5), w, pre, post


def test_plasticity_battery():
    synapses, w, pre, post = _rule_inputs()
    traces = []

    @eqx.filter_jit
    def run(rule, w):
        traces.append(None)
        return _apply_rule(rule, synapses, w, pre, post)

    rules = [PostTraceHebb(eta=e, w_max=2.0) for e in (0.01, 0.02)]
    outs = [run(r, w) for r in rules]
    assert len(traces) == 1 and not np.allclose(outs[0], outs[1])
    assert np.all(np.asarray(outs[0]) >= np.asarray(w))  # Hebbian: only potentiation
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *rules)
    batched = eqx.filter_vmap(lambda r: _apply_rule(r, synapses, w, pre, post))(stacked)
    for i, out in enumerate(outs):
        np.testing.assert_allclose(batched[i], out, rtol=1e-6)
    g = eqx.filter_grad(lambda r: jnp.sum(run(r, w)))(rules[0])
    assert np.isfinite(float(g.eta)) and float(g.eta) > 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_plasticity_dtype_preserved(dtype, request):
    if dtype == "float64":
        request.getfixturevalue("x64")
    synapses, w, pre, post = _rule_inputs(jnp.dtype(dtype))
    out = jax.jit(lambda w: _apply_rule(PostTraceHebb(eta=0.01), synapses, w, pre, post))(w)
    assert out.dtype == jnp.dtype(dtype)


def test_connectivity_delivers_like_its_dense_matrix():
    edges = bs.connect.one_to_one(6, weight=bs.connect.Uniform(1.0, 2.0), delay=0.3, seed=2)
    conn = Diagonal().build(edges, DT, owner="test", round_delays=False, dtype=jnp.float32)
    assert conn.max_delay == 4  # 0.3 ms = 3 steps, +1 (acts in the next step)
    spikes = jnp.asarray([1.0, 0.0, 2.0, 0.0, 1.0, 1.0])
    ring = jnp.zeros((5 * 6,), jnp.float32)
    out = eqx.filter_jit(DiagonalConnectivity.deliver)(conn, ring, jnp.asarray(3), spikes)
    out = out.reshape(5, 6)
    expected = np.zeros((5, 6), np.float32)
    expected[(3 + 4) % 5] = np.asarray(spikes @ conn.to_dense())
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    # grad with respect to the weights is the spike vector; vmap over weight sets
    g = jax.grad(lambda c: jnp.sum(c.deliver(ring, 3, spikes)))(conn)
    np.testing.assert_allclose(g.weights, spikes)
    stacked = jax.tree.map(lambda *x: jnp.stack(x), conn, eqx.tree_at(lambda c: c.weights, conn,
                                                                        2 * conn.weights))  # fmt: skip
    both = eqx.filter_vmap(lambda c: c.deliver(ring, 3, spikes))(stacked)
    np.testing.assert_allclose(both[1], 2 * both[0], rtol=1e-6)


def test_connectivity_dtype_and_errors(x64):
    edges = bs.connect.one_to_one(4, weight=1.0)
    conn = Diagonal().build(edges, DT, owner="P", round_delays=False, dtype=jnp.float64)
    assert conn.weights.dtype == jnp.float64
    assert conn.deliver(jnp.zeros(4, jnp.float32), 0, jnp.ones(4)).dtype == jnp.float32
    with pytest.raises(ValueError, match="P: a Diagonal layout stores exactly the synapses i -> i"):
        Diagonal().build(bs.connect.all_to_all(3, 3), DT, owner="P", round_delays=False,
                         dtype=jnp.float32)  # fmt: skip


# ====================================================================== simulate


@pytest.fixture(scope="module")
def reference():
    """The full network (noise, user format, user rule, user monitors) over 40 ms."""
    net = contract_network()
    record = (bs.SpikeRaster(), SpikeCount("N"), MeanVoltage("N"), bs.StateTrace("N", "v"),
              bs.StateTrace("M", "syn.slow"))  # fmt: skip
    return net, record, bs.simulate(net, 40.0, key=jax.random.key(4), record=record)


def test_network_noise_has_the_ou_statistics():
    # Through Network.step: every neuron and every step draws afresh from the run's key
    # (the same noise in every neuron would give no spread; the same in every step, a
    # lag-1 correlation other than the OU's a = exp(-dt/tau_m)).
    pop = bs.Population("N", 2000, NoisyLIF(V_th=float("inf"), sigma=2.0))
    net = bs.Network([pop], [], dt=DT)
    result = bs.simulate(net, 30.0, key=jax.random.key(0),
                         record=(bs.StateTrace("N", "v"), MeanVoltage("N")))  # fmt: skip
    _, v = result.trace("N", "v")
    v = np.asarray(v, np.float64)
    a, k = np.exp(-DT / 10.0), 299
    np.testing.assert_allclose(v[k].var(), 4.0 * (1 - a ** (2 * k)), rtol=0.1)
    innovation = v[k] - a * v[k - 1]
    np.testing.assert_allclose(innovation.var(), 4.0 * (1 - a**2), rtol=0.1)
    # the user's per-step monitor agrees with the built-in trace
    np.testing.assert_allclose(result.recordings[1], v.mean(axis=1), rtol=0, atol=1e-4)


def test_network_runs_and_user_monitors_agree(reference):
    net, _, result = reference
    result.raise_if_failed()
    counts = {p: raster(result, p).sum() for p in ("P", "N", "M")}
    assert counts["P"] > 20 and counts["N"] > 10 and counts["M"] > 5  # every part is exercised
    np.testing.assert_array_equal(result.recordings[1], raster(result, "N").sum(axis=0))
    _, v = result.trace("N", "v")
    np.testing.assert_allclose(result.recordings[2], np.asarray(v).mean(axis=1), atol=1e-4)
    assert net.population_state(result.state, "N").v.dtype == jnp.float32


def test_user_format_equals_dense(reference):
    # The Diagonal format and the built-in Dense layout deliver the same input: same spikes
    # and the same synaptic traces (noise is independent of the format: same key).
    net, record, result = reference
    dense = bs.simulate(contract_network(layout="dense"), 40.0, key=jax.random.key(4),
                        record=record)  # fmt: skip
    for p in ("P", "N", "M"):
        np.testing.assert_array_equal(raster(dense, p), raster(result, p))
    np.testing.assert_allclose(dense.recordings[4], result.recordings[4], rtol=1e-6, atol=1e-6)


def replay_rule(rule, w, mask, pre, post):
    """:class:`PostTraceHebb` in NumPy on recorded spikes (steps × neurons) from dense
    weights ``w`` with existing synapses ``mask`` (Brian2's order: this step's pre spikes
    potentiate with the trace before this step's post spikes)."""
    y = np.zeros(w.shape[1])
    decay = np.exp(-DT / float(rule.tau))
    for k in range(pre.shape[0]):
        y = y * decay
        hit = (pre[k] > 0)[:, None] & mask
        w = np.where(hit, np.clip(w + float(rule.eta) * y[None, :], 0.0, float(rule.w_max)), w)
        y = y + post[k]
    return w


def test_user_rule_matches_its_reference(reference):
    net, _, result = reference
    edges = bs.connect.fixed_probability(N_SRC, N, 0.5, weight=bs.connect.Uniform(40.0, 80.0),
                                         delay=0.5, seed=1)  # fmt: skip
    w0 = np.zeros((N_SRC, N))
    w0[edges.pre, edges.post] = edges.weight
    w = replay_rule(net.projection("drive").plasticity, w0, w0 > 0, raster(result, "P"),
                    raster(result, "N"))  # fmt: skip
    final = np.asarray(result.state.plasticity["drive"].weights)
    np.testing.assert_allclose(final, w, rtol=1e-5, atol=1e-4)
    assert (final - w0).max() > 1.0  # the rule did something


def test_user_rule_on_user_format_matches_its_reference(reference):
    # The rule on the Diagonal format, through the format's own synapse view.
    net, record, result = reference
    eye = np.eye(N, dtype=bool)
    w = replay_rule(net.projection("relay").plasticity, 600.0 * eye, eye, raster(result, "N"),
                    raster(result, "M"))  # fmt: skip
    final = np.asarray(result.state.plasticity["relay"].weights)
    np.testing.assert_allclose(final, np.diag(w), rtol=1e-5, atol=1e-3)
    assert final.max() > 601.0
    assert np.array_equal(np.asarray(net.weights(result.state, "relay")), np.diag(final))
    # and WeightTrace records it through the same view
    traced = bs.simulate(net, 40.0, key=jax.random.key(4),
                         record=(bs.WeightTrace("relay", [(0, 0), (3, 3), (1, 2)]),))  # fmt: skip
    _, wt = traced.weight_trace("relay")
    np.testing.assert_allclose(np.asarray(wt)[-1, :2], final[[0, 3]], rtol=1e-4)
    assert np.all(np.asarray(wt)[:, 2] == 0)  # no synapse 1 -> 2


def test_checkpoint_and_unroll_give_the_same_run(reference):
    net, record, result = reference
    other = bs.simulate(net, 40.0, key=jax.random.key(4), record=record,
                        checkpoint=bs.Checkpointing(levels=2), unroll=4)  # fmt: skip
    for a, b in zip(jax.tree.leaves(other.recordings), jax.tree.leaves(result.recordings),
                    strict=True):  # fmt: skip
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-5)


def test_simulate_vmaps_over_keys_with_user_monitors(reference):
    net, _, _ = reference
    record = (SpikeCount("N"), MeanVoltage("N"))
    keys = jax.random.split(jax.random.key(9), 2)
    batched = jax.vmap(lambda k: bs.simulate(net, 10.0, key=k, record=record).recordings)(keys)
    for i in range(2):
        one = bs.simulate(net, 10.0, key=keys[i], record=record).recordings
        np.testing.assert_array_equal(batched[0][i], one[0])
        np.testing.assert_allclose(batched[1][i], one[1], atol=1e-4)
    assert not np.allclose(batched[1][0], batched[1][1])  # the keys gave different noise


# ====================================================================== run_long


def test_run_long_with_resume_equals_simulate(reference, tmp_path):
    # 20 ms with checkpoints, then the same call extended to 40 ms resumes from the last
    # checkpoint: the spikes and the learned weights equal one simulate call over 40 ms.
    net, _, result = reference
    out = tmp_path / "run"
    record = (bs.SpikeRaster(),)
    key = jax.random.key(4)
    bs.run_long(net, 20.0, out, key=key, chunk=10.0, record=record, checkpoint_every=10.0,
                progress=False)  # fmt: skip
    run = bs.run_long(net, 40.0, out, chunk=10.0, record=record, checkpoint_every=10.0,
                      progress=False)  # fmt: skip
    assert run.n_steps == 400
    for p in ("P", "N", "M"):
        t, ids = run.spikes(p)
        t_ref, ids_ref = result.spikes(p)
        np.testing.assert_array_equal(np.rint(t / DT), np.rint(t_ref / DT))
        np.testing.assert_array_equal(ids, ids_ref)
    for proj in ("drive", "relay"):
        np.testing.assert_allclose(run.state.plasticity[proj].weights,
                                   result.state.plasticity[proj].weights, rtol=1e-6)  # fmt: skip


def test_run_long_streams_user_monitors(reference, tmp_path):
    net, _, result = reference
    record = (bs.SpikeRaster(), SpikeCount("N"), MeanVoltage("N"))
    run = bs.run_long(net, 40.0, tmp_path / "run", key=jax.random.key(4), chunk=10.0,
                      record=record, progress=False)  # fmt: skip
    np.testing.assert_array_equal(run.spikes("N")[1], result.spikes("N")[1])
    counts = np.asarray(run.recording(1)["counts"])
    assert counts.shape[0] == 4  # one row per 10 ms chunk
    np.testing.assert_array_equal(counts.sum(0), np.bincount(result.spikes("N")[1], minlength=counts.shape[1]))
    np.testing.assert_allclose(np.asarray(run.recording(2)["values"]), result.recordings[2],
                               rtol=1e-6)  # fmt: skip


# ====================================================================== fit


def _subthreshold_network():
    """Poisson input one to one (user format, user kinetics) onto noisy neurons that never
    spike: the mean membrane is smooth in every parameter."""
    pops = [
        bs.Population("P", 8, bs.PoissonSource(200.0)),
        bs.Population("N", 8, NoisyLIF(V_th=float("inf"), sigma=1.0),
                      receptors={"syn": bs.Receptor(TwoTimescaleSynapse(), bs.CurrentBased())}),
    ]  # fmt: skip
    edges = bs.connect.one_to_one(8, weight=1.0, delay=0.2)
    proj = bs.Projection("P", "N", edges, receptor="syn", layout=Diagonal())
    return bs.Network(pops, [proj], dt=DT)


def _mean_voltage(params, checkpoint=None):
    """The network with ``params`` (values or tracers) set in its built leaves."""
    net = eqx.tree_at(
        lambda n: (n.populations[1].model.I_e, n.projections[0].connectivity.weights,
                   n.populations[1].receptors["syn"].kinetics.tau_slow),
        _subthreshold_network(),
        (params["I_e"], jnp.broadcast_to(params["w"], (8,)), params["tau_slow"]),
    )  # fmt: skip
    result = bs.simulate(net, 20.0, key=jax.random.key(1), record=(MeanVoltage("N"),),
                         checkpoint=checkpoint)  # fmt: skip
    return result.recordings[0]


def test_grad_through_simulate_matches_finite_differences(x64):
    params = {"I_e": jnp.asarray(100.0), "w": jnp.asarray(30.0), "tau_slow": jnp.asarray(8.0)}

    def loss(p):
        return jnp.mean((_mean_voltage(p, bs.Checkpointing(levels=2)) + 60.0) ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    f = jax.jit(loss)
    for name, eps in (("I_e", 1e-3), ("w", 1e-3), ("tau_slow", 1e-4)):
        up = dict(params, **{name: params[name] + eps})
        down = dict(params, **{name: params[name] - eps})
        fd = (f(up) - f(down)) / (2 * eps)
        assert float(grads[name]) != 0.0, name
        np.testing.assert_allclose(float(grads[name]), float(fd), rtol=1e-5, err_msg=name)


def test_fit_through_simulate_lowers_the_loss():
    # A teacher's mean membrane trace; fitting I_e and the user format's weights from other
    # values lowers the loss by far.
    teacher = {"I_e": jnp.asarray(150.0), "w": jnp.asarray(40.0), "tau_slow": jnp.asarray(8.0)}
    target = _mean_voltage(teacher)
    start = {"I_e": jnp.asarray(80.0), "w": jnp.asarray(10.0)}

    def loss(p, batch, key):
        trace = _mean_voltage(dict(p, tau_slow=teacher["tau_slow"]))
        return jnp.mean((trace - target) ** 2)

    result = bs.fit.fit(loss, start, optax.adam(5.0), steps=40, progress=False)
    assert result.history["loss"][0] > 1.0
    assert float(result.best_loss) < 0.02 * result.history["loss"][0]


# ====================================================================== simulate_sharded

WORKER = textwrap.dedent(
    r"""
    import json, sys, traceback
    import jax, numpy as np
    sys.path.insert(0, sys.argv[1])
    import brainsim as bs
    import test_contract as c

    CASES = {
        "deterministic": (dict(sigma=0.0, layout="dense", plastic=False),
                          lambda: (bs.SpikeRaster(), c.SpikeCount("N"))),
        "noise": (dict(sigma=1.0, layout="dense", plastic=False),
                  lambda: (bs.SpikeRaster(), c.SpikeCount("N"))),
        "user_format": (dict(sigma=0.0, layout="user", plastic=False),
                        lambda: (bs.SpikeRaster(),)),
        "plasticity": (dict(sigma=0.0, layout="dense", plastic=True),
                       lambda: (bs.SpikeRaster(),)),
        "state_monitor": (dict(sigma=0.0, layout="dense", plastic=False),
                          lambda: (bs.SpikeRaster(), c.MeanVoltage("N"))),
    }

    def summary(result):
        out = {p: c.raster(result, p).tolist() for p in ("P", "N", "M")}
        out["monitors"] = [np.asarray(r).tolist() for r in result.recordings[1:]]
        return out

    mesh = jax.make_mesh((2,), ("neurons",), devices=jax.devices()[:2])
    runs = {}
    for name, (kw, record) in CASES.items():
        net, key = c.contract_network(**kw), jax.random.key(4)
        runs[name] = {"single": summary(bs.simulate(net, 20.0, key=key, record=record()))}
        try:
            sharded = bs.simulate_sharded(net, 20.0, mesh=mesh, key=key, record=record())
            runs[name]["sharded"] = summary(sharded)
        except Exception as e:
            runs[name]["error"] = f"{type(e).__name__}: {e}"
    print("RESULT" + json.dumps(runs))
    """
)


@pytest.fixture(scope="module")
def sharded_runs():
    env = dict(os.environ)
    # no FMA contraction: the two programs then compute bit-identical membranes
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2 --xla_cpu_max_isa=AVX"
    env["JAX_PLATFORMS"] = "cpu"
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run([sys.executable, "-c", WORKER, here], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


@pytest.mark.parametrize(
    "case",
    [
        # user neuron (deterministic), user kinetics, user spike monitor: works today
        "deterministic",
        # a stochastic user neuron: each device draws its rows of the single-device draws
        "noise",
        "user_format",
        "plasticity",
        "state_monitor",
    ],
)  # fmt: skip
def test_sharded_equals_single_device(sharded_runs, case):
    run = sharded_runs[case]
    assert "error" not in run, run.get("error")
    single, sharded = run["single"], run["sharded"]
    assert sum(map(sum, single["N"])) > 5  # the comparison means something
    for p in ("P", "N", "M"):
        assert sharded[p] == single[p], p
    np.testing.assert_allclose(sharded["monitors"], single["monitors"], rtol=1e-6, atol=1e-5)
