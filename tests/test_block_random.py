"""The random keys of a partitioned neuron group (``brainsim._block_random``): every block's
draws are its rows of the single-device draws.

The per-block keys are checked in process, with the devices emulated by ``vmap`` over a
named axis (``lax.axis_index`` is the block's index, as under ``shard_map``); whole runs of a
stochastic neuron on 2 and 4 host devices against one device, in a subprocess (JAX fixes its
device count at import).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brainsim as bs
from brainsim import extend as bx
from brainsim._block_random import _impl, block_key, step_block
from brainsim._plan import DeviceBlock

HERE = os.path.dirname(os.path.abspath(__file__))
R = jax.random


def blocks(draw, key, n_global, n_devices, axis=0):
    """``draw(key, n)`` of every device's block (``n`` neurons each, the last padded),
    concatenated along ``axis`` and cut to the ``n_global`` neurons."""
    n_local = -(-n_global // n_devices)
    block = DeviceBlock("d", n_global, n_local)
    parts = jax.jit(jax.vmap(lambda _: draw(block_key(key, block), n_local), axis_name="d"))(
        jnp.arange(n_devices)
    )
    whole = np.concatenate(list(np.asarray(parts)), axis=axis)
    return np.take(whole, np.arange(n_global), axis=axis)


# Samplers mapping each element's bits to its value, the key used as models use it (split,
# folded, one key per neuron), shapes with the neurons on any axis; ``n`` neurons.
ELEMENTWISE = {
    "bits8": lambda k, n: R.bits(k, (n,), jnp.uint8),
    "bits16": lambda k, n: R.bits(k, (n,), jnp.uint16),
    "bits32": lambda k, n: R.bits(k, (n,), jnp.uint32),
    "uniform": lambda k, n: R.uniform(k, (n,)),
    "normal": lambda k, n: R.normal(k, (n,)),
    "normal_2d": lambda k, n: R.normal(k, (n, 3)),
    "normal_3d": lambda k, n: R.normal(k, (n, 2, 3), jnp.float16),
    "bernoulli": lambda k, n: R.bernoulli(k, 0.3, (n,)),
    "randint": lambda k, n: R.randint(k, (n,), -5, 17),
    "split_fold_in_chain": lambda k, n: R.normal(
        R.fold_in(R.split(R.fold_in(k, 3), 3)[1], 9), (n,)
    ),
    "split_2": lambda k, n: R.uniform(R.split(k)[1], (n, 2)),
    "key_per_neuron": lambda k, n: jax.vmap(lambda kk: R.normal(kk, (2,)))(R.split(k, n)),
    "exponential": lambda k, n: R.exponential(k, (n,)),
    "truncated_normal": lambda k, n: R.truncated_normal(k, -1.0, 2.0, (n,)),
    "gumbel": lambda k, n: R.gumbel(k, (n,), mode="highest"),  # draws (2, n) bits
    "gamma": lambda k, n: R.gamma(k, 0.7, (n,)),  # one key per element, rejection per key
    "beta": lambda k, n: R.beta(k, 2.0, 3.0, (n,)),
    "binomial_inversion": lambda k, n: R.binomial(k, 10.0, 0.3, (n,)),
    "categorical_per_row": lambda k, n: R.categorical(k, jnp.zeros((n, 4))),
    "scalar_for_all": lambda k, n: jnp.full((n,), R.normal(k)),
    "fixed_vector_for_all": lambda k, n: jnp.broadcast_to(R.normal(k, (7,)), (n, 7)),
}


@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_block_draws_are_the_rows_of_the_single_device_draw(name):
    # 3 blocks of 4 neurons (the last with 2 padded); jit: eager gamma and beta take seconds
    draw, key = ELEMENTWISE[name], R.key(7)
    whole = np.asarray(jax.jit(draw, static_argnums=1)(key, 10))
    got = blocks(draw, key, 10, 3)
    if name == "beta":
        # Same gamma draws; XLA contracts beta's arithmetic into FMAs differently in the
        # batched program (last bit; see brainsim/_sharding.py, Exactness).
        np.testing.assert_allclose(got, whole, rtol=1e-6)
    else:
        np.testing.assert_array_equal(got, whole, err_msg=name)


def test_neurons_on_a_later_axis():
    draw = lambda k, n: R.uniform(k, (2, n, 3))  # noqa: E731
    np.testing.assert_array_equal(blocks(draw, R.key(1), 10, 3, axis=1), draw(R.key(1), 10))


def test_64_bit_draws():
    with jax.enable_x64(True):
        for draw in (lambda k, n: R.bits(k, (n, 2), jnp.uint64),
                     lambda k, n: R.normal(k, (n,), jnp.float64)):  # fmt: skip
            np.testing.assert_array_equal(blocks(draw, R.key(2), 10, 3), draw(R.key(2), 10))


def test_raw_keys_draw_as_typed_keys():
    draw = lambda k, n: R.normal(R.split(k)[0], (n,))  # noqa: E731
    whole = np.asarray(draw(R.PRNGKey(5), 9))
    np.testing.assert_array_equal(blocks(draw, R.PRNGKey(5), 9, 2), whole)
    np.testing.assert_array_equal(whole, draw(R.key(5), 9))


def test_splits_into_two_or_three_are_not_over_the_neurons():
    # Blocks of 2 and 3 neurons: split(key) and split(key, 3) are the model's own splits.
    for n_global, n_devices, num in ((4, 2, 2), (6, 2, 3)):
        draw = lambda k, n, num=num: R.normal(R.split(k, num)[-1], (n,))  # noqa: E731
        whole = np.asarray(draw(R.key(3), n_global))
        np.testing.assert_array_equal(blocks(draw, R.key(3), n_global, n_devices), whole)


def test_rejection_loops_over_the_block_differ():
    # binomial (n p >= 10, BTRS) and poisson (lam >= 10) keep overwriting an accepted element
    # while another one rejects: a block's values depend on its other elements (documented).
    draw = lambda k, n: R.binomial(k, 100.0, 0.4, (n,))  # noqa: E731
    assert not np.array_equal(blocks(draw, R.key(0), 40, 4), draw(R.key(0), 40))


def test_a_draw_of_more_than_2_to_the_32_values_is_refused():
    key = R.wrap_key_data(jnp.zeros(3, jnp.uint32), impl=_impl(4, 10))
    with pytest.raises(NotImplementedError, match="more than 2\\*\\*32"):
        jax.jit(lambda k: R.bits(k, (4, 2**30), jnp.uint8)).lower(key)


def per_device(draw, key, n_global, n_devices):
    """The draws before block keys: each device's key folded with its index."""
    n_local = -(-n_global // n_devices)
    parts = [draw(R.fold_in(key, d), n_local) for d in range(n_devices)]
    return np.concatenate([np.asarray(p) for p in parts])[:n_global]


def test_without_threefry_partitionable_each_device_draws_its_own():
    draw = lambda k, n: R.normal(k, (n,))  # noqa: E731
    with jax.threefry_partitionable(False):
        with pytest.warns(bs.BrainsimWarning, match="jax_threefry_partitionable is off"):
            got = blocks(draw, R.key(4), 10, 2)
        np.testing.assert_array_equal(got, per_device(draw, R.key(4), 10, 2))


def test_other_prng_implementations_draw_per_device():
    draw = lambda k, n: R.uniform(k, (n,))  # noqa: E731
    key = R.key(4, impl="rbg")
    with pytest.warns(bs.BrainsimWarning, match="rbg"):
        got = blocks(draw, key, 10, 2)
    # (rbg draws differ under vmap: compared with the per-device keys under the same vmap)
    expected = jax.jit(jax.vmap(lambda d: draw(R.fold_in(key, d), 5)))(jnp.arange(2))
    np.testing.assert_array_equal(got, np.concatenate(list(np.asarray(expected))))


class _PoissonCounts(NamedTuple):
    lam: float

    def step(self, state, drive, t, dt, key):
        return state, R.poisson(key, self.lam, state.shape).astype(jnp.float32)


def test_a_model_calling_poisson_draws_per_device():
    # jax.random.poisson accepts jax's own threefry keys only.
    block = DeviceBlock("d", 10, 5)
    run = lambda _: step_block(_PoissonCounts(3.0), jnp.zeros(5), None, 0.0, 0.1, R.key(6), block)  # noqa: E731
    with pytest.warns(bs.BrainsimWarning, match="poisson"):
        _, counts = jax.vmap(run, axis_name="d")(jnp.arange(2))
    expected = per_device(lambda k, n: R.poisson(k, 3.0, (n,)), R.key(6), 10, 2)
    np.testing.assert_array_equal(np.concatenate(list(np.asarray(counts))), expected)


# ============================================================== whole runs on host devices


class EscapeState(NamedTuple):
    v: jax.Array
    """Membrane potential (mV)."""
    refractory: jax.Array
    """Steps of refractoriness left."""


class EscapeLIF(bx.AbstractNeuron):
    r"""LIF membrane with white noise and stochastic threshold crossings (escape noise).

    :math:`V' = V_\infty + (V - V_\infty) a + \sigma\sqrt{1 - a^2}\,\xi` with
    :math:`a = e^{-\Delta t/\tau_m}`, :math:`V_\infty = E_L + \tau_m (I_e + I)/C_m`; a neuron
    also fires with probability :math:`\rho\,\Delta t\, e^{(V - V_{th})/\delta}\,g/2`,
    :math:`g \sim \Gamma(2)`. Draws through ``split``, ``fold_in``, a 2-D normal, ``gamma``
    (one key per neuron) and ``bernoulli``.
    """

    C_m: jax.Array
    tau_m: jax.Array
    E_L: jax.Array
    V_th: jax.Array
    I_e: jax.Array
    sigma: jax.Array
    rho: jax.Array

    def __init__(self, *, C_m=200.0, tau_m=20.0, E_L=-60.0, V_th=-50.0, I_e=150.0, sigma=1.5,
                 rho=0.02):  # fmt: skip
        owner = "EscapeLIF"
        self.C_m = bx.as_parameter(C_m, "C_m", owner=owner, unit="pF", positive=True)
        self.tau_m = bx.as_parameter(tau_m, "tau_m", owner=owner, unit="ms", positive=True)
        self.E_L = bx.as_parameter(E_L, "E_L", owner=owner, unit="mV")
        self.V_th = bx.as_parameter(V_th, "V_th", owner=owner, unit="mV")
        self.I_e = bx.as_parameter(I_e, "I_e", owner=owner, unit="pA")
        self.sigma = bx.as_parameter(sigma, "sigma", owner=owner, unit="mV", nonnegative=True)
        self.rho = bx.as_parameter(rho, "rho", owner=owner, unit="1/ms", nonnegative=True)

    def init(self, n, *, dtype=None):
        dtype = bx.default_dtype(dtype)
        return EscapeState(jnp.broadcast_to(self.E_L, (n,)).astype(dtype),
                           jnp.zeros((n,), jnp.int32))  # fmt: skip

    def voltage(self, state):
        return state.v

    def state_bounds(self):
        return {"v": bx.MEMBRANE_FLOOR}

    def step(self, state, drive, t, dt, key):
        dtype = state.v.dtype
        k_noise, k_gain, k_escape = R.split(key, 3)
        xi = R.normal(R.fold_in(k_noise, 1), (*state.v.shape, 2), dtype)[:, 1]
        a = jnp.exp(-dt / self.tau_m)
        v_inf = self.E_L + self.tau_m * (self.I_e + drive.current) / self.C_m
        v = v_inf + (state.v - v_inf) * a + self.sigma * jnp.sqrt(1 - a * a) * xi
        gain = R.gamma(k_gain, 2.0, state.v.shape, dtype) / 2
        p = jnp.clip(self.rho * dt * jnp.exp((v - self.V_th) / 2.0) * gain, 0.0, 1.0)
        escape = R.bernoulli(k_escape, jax.lax.stop_gradient(p))
        threshold = jnp.where(escape, -jnp.inf, self.V_th)
        v, spikes, refractory = bx.fire_and_reset(
            v, threshold, state.refractory, V_reset=self.E_L,
            surrogate=bs.surrogate.FastSigmoid(), detach=True, t_ref=2.0, dt=dt,
            timing=bs.Timing.brian2(),
        )  # fmt: skip
        return EscapeState(v.astype(dtype), refractory), spikes.astype(dtype)


def escape_network(I_e=150.0):
    """Poisson ``X`` -> ``A`` (13) and ``B`` (6), merged into one group of 19 neurons (blocks
    of 10 and 5 on 2 and 4 devices, the last padded), ``A`` -> ``B``."""
    rec = {"exc": bs.Receptor(bs.ExponentialSynapse(5.0), bs.CurrentBased())}
    init = {"v": bs.init.Uniform(-60.0, -50.0)}
    pops = [
        bs.Population("X", 20, bs.PoissonSource(50.0)),
        bs.Population("A", 13, EscapeLIF(I_e=I_e), receptors=rec, initial=init),
        bs.Population("B", 6, EscapeLIF(I_e=120.0), receptors=rec, initial=init),
    ]
    projs = [
        bs.Projection("X", "A", bs.connect.fixed_probability(20, 13, 0.3, weight=60.0, seed=1),
                      receptor="exc", layout=bs.Dense()),
        bs.Projection("A", "B", bs.connect.fixed_probability(13, 6, 0.5, weight=80.0, seed=2),
                      receptor="exc", layout=bs.Dense()),
    ]  # fmt: skip
    return bs.Network(pops, projs, dt=0.1)


WORKER = textwrap.dedent(
    r"""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import jax, jax.numpy as jnp, numpy as np
    import brainsim as bs
    from test_block_random import escape_network

    def spikes(result):
        return {p: [a.tolist() for a in result.spikes(p)] for p in ("A", "B")}

    def batched(partition):
        net = escape_network()
        run = lambda k: bs.simulate(net, 10.0, key=k, record=(bs.SpikeRaster(),),
                                    partition=partition, check=False)
        keys = jax.random.split(jax.random.key(5), 2)
        return [np.asarray(x).tolist() for x in jax.tree.leaves(jax.vmap(run)(keys).recordings)]

    def gradient(partition):
        def loss(i_e):
            net = escape_network(i_e)
            res = bs.simulate(net, 5.0, key=jax.random.key(0), record=(), partition=partition)
            return jnp.mean(net.population_state(res.state, "A").v)
        return float(jax.grad(loss)(jnp.asarray(150.0)))

    net, out = escape_network(), {}
    for name, key in (("typed", jax.random.key(3)), ("raw", jax.random.PRNGKey(3))):
        out[name] = {"single": spikes(bs.simulate(net, 40.0, key=key, record=(bs.SpikeRaster(),)))}
        for n in (2, 4):
            mesh = jax.make_mesh((n,), ("neurons",), devices=jax.devices()[:n])
            result = bs.simulate(net, 40.0, key=key, record=(bs.SpikeRaster(),),
                                 partition=bs.Sharded(mesh))
            out[name][n] = spikes(result)
    partition = bs.Sharded(jax.make_mesh((2,), ("neurons",), devices=jax.devices()[:2]))
    out["vmap"] = [batched(None), batched(partition)]
    out["grad"] = [gradient(None), gradient(partition)]
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def host_runs():
    env = dict(os.environ)
    # no FMA contraction: the two programs then compute bit-identical membranes
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4 --xla_cpu_max_isa=AVX"
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", WORKER, HERE], env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


@pytest.mark.parametrize("key", ["typed", "raw"])
@pytest.mark.parametrize("devices", ["2", "4"])
def test_stochastic_neuron_partitioned_equals_one_device(host_runs, key, devices):
    single, sharded = host_runs[key]["single"], host_runs[key][devices]
    assert len(single["A"][0]) > 30 and len(single["B"][0]) > 5  # the comparison means something
    assert sharded == single


def test_vmap_over_keys_and_grad_partitioned_equal_one_device(host_runs):
    single, sharded = host_runs["vmap"]
    assert single == sharded
    assert any(not np.array_equal(*np.asarray(r)) for r in single)  # the keys drew apart
    g_single, g_sharded = host_runs["grad"]
    assert g_single > 0
    assert g_sharded == g_single
