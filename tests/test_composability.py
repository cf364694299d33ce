"""The composability matrix: every driver × connectivity format × plasticity × monitor, each
compared with plain single-device :func:`brainsim.simulate`.

Drivers: ``simulate`` (the reference), ``simulate(partition=Sharded(mesh))`` on 2 and 4 host
devices (in a subprocess, since JAX fixes its device count at import), ``run_long`` with a
crash and a resume, ``vmap`` over keys and ``grad`` through the run (on one device, and on 2
partitioned devices against one). Formats: Dense, Sparse
(ELL), CSR and Procedural for the static projections; the plastic projection (pair STDP) is
Sparse or Dense (the layouts plasticity works on). Monitors: every built-in one and a
user-defined one (mean membrane potential), all recorded in every run.

"The same": sharded runs compile without FMA contraction (``--xla_cpu_max_isa=AVX``), so
equality is exact (see tests/test_sharding.py); run_long and vmap run the same compiled step
as simulate and are compared exactly too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brainsim as bs

HERE = os.path.dirname(os.path.abspath(__file__))

FORMATS = ("dense", "sparse", "csr", "procedural")
PLASTIC = (False, True)
CASES = [(f, p) for f in FORMATS for p in PLASTIC]

from composability_cases import MeanVoltage, monitors, network  # noqa: E402

WORKER = textwrap.dedent(
    r'''
    import sys, json
    sys.path.insert(0, ".")
    import equinox as eqx
    import jax, jax.numpy as jnp, numpy as np
    import brainsim as bs
    from composability_cases import MeanVoltage, monitors, network, summary
    n_devices = int(sys.argv[1])
    cases = json.loads(sys.argv[2])
    transforms = sys.argv[3] == "1"
    mesh = jax.make_mesh((n_devices,), ("neurons",))
    partition = bs.Sharded(mesh)

    def batched(net, record, partition):
        keys = jax.random.split(jax.random.key(5), 2)
        run = lambda k: bs.simulate(net, 10.0, key=k, record=record, check=False,
                                    partition=partition)
        return [np.asarray(x).tolist() for x in jax.tree.leaves(jax.vmap(run)(keys).recordings)]

    def gradient(net, partition):
        def loss(i_e):
            model = eqx.tree_at(lambda n: n.populations[1].model.I_e, net, i_e)
            res = bs.simulate(model, 5.0, key=jax.random.key(0), record=(MeanVoltage("E"),),
                              checkpoint=bs.Checkpointing(), partition=partition)
            return res.recordings[0].mean()
        return float(jax.grad(loss)(jnp.asarray(150.0)))

    out = {}
    for fmt, plastic in cases:
        net = network(fmt, plastic)
        record = monitors(plastic)
        key = jax.random.key(3)
        try:
            single = bs.simulate(net, 30.0, key=key, record=record)
            sharded = bs.simulate(net, 30.0, key=key, record=record, partition=partition)
            result = {"single": summary(single, plastic), "sharded": summary(sharded, plastic)}
            if transforms:
                result["vmap"] = [batched(net, record, None), batched(net, record, partition)]
                result["grad"] = [gradient(net, None), gradient(net, partition)]
            out[f"{fmt}-{plastic}"] = result
        except Exception as e:  # reported by the test, which names the combination
            out[f"{fmt}-{plastic}"] = {"error": f"{type(e).__name__}: {e}"}
    print("RESULT" + json.dumps(out))
    '''
)


def _sharded_runs(n_devices, transforms):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_devices} --xla_cpu_max_isa=AVX"
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, str(n_devices), json.dumps(CASES), str(int(transforms))],
        env=env, capture_output=True, text=True, timeout=1200, cwd=HERE,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


@pytest.fixture(scope="module")
def sharded2():
    return _sharded_runs(2, transforms=True)


@pytest.fixture(scope="module")
def sharded4():
    return _sharded_runs(4, transforms=False)


def _assert_same(a, b, what):
    assert a.keys() == b.keys(), what
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, list) and x and isinstance(x[0], list | float | int):
            for i, (u, v) in enumerate(zip(x, y, strict=True)):
                np.testing.assert_array_equal(np.asarray(u), np.asarray(v), err_msg=f"{what} {k}[{i}]")
        else:
            assert x == y, f"{what} {k}"


def _spiking(summary):
    return sum(len(summary[f"spikes_{p}"][1]) for p in ("E", "I"))


@pytest.mark.parametrize("fmt, plastic", CASES)
@pytest.mark.parametrize("devices", [2, 4])
def test_sharded_equals_single_device(request, devices, fmt, plastic):
    runs = request.getfixturevalue(f"sharded{devices}")[f"{fmt}-{plastic}"]
    assert "error" not in runs, runs.get("error")
    assert _spiking(runs["single"]) > 20  # the comparison means something
    _assert_same(runs["single"], runs["sharded"], f"{fmt} plastic={plastic} on {devices}")


@pytest.mark.parametrize("fmt, plastic", CASES)
def test_sharded_vmap_and_grad_equal_single_device(sharded2, fmt, plastic):
    """vmap over keys and grad with respect to a population's parameter, partitioned over 2
    devices, equal the single-device ones."""
    runs = sharded2[f"{fmt}-{plastic}"]
    assert "error" not in runs, runs.get("error")
    single, sharded = runs["vmap"]
    for i, (a, b) in enumerate(zip(single, sharded, strict=True)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"recording {i}")
    g_single, g_sharded = runs["grad"]
    assert g_single > 0
    # The forward runs are equal bit for bit, and so are the gradients without checkpointing;
    # with Checkpointing the recomputing backward pass of the partitioned program is compiled
    # differently from the single-device one, and a gradient can differ in its last bits
    # (measured: 2 float32 ulps, procedural format with plasticity).
    np.testing.assert_allclose(g_sharded, g_single, rtol=4e-7, atol=0)


@pytest.mark.parametrize("fmt, plastic", CASES)
def test_run_long_with_crash_and_resume_equals_simulate(fmt, plastic, tmp_path, monkeypatch):
    from test_long_run import crash_in_chunk

    net = network(fmt, plastic)
    record = monitors(plastic)
    key = jax.random.key(3)
    single = bs.simulate(net, 30.0, key=key, record=record)

    def run():
        return bs.run_long(net, 30.0, tmp_path / "run", key=key, chunk=6.0, record=record,
                           checkpoint_every=6.0, progress=False)  # fmt: skip

    crash_in_chunk(monkeypatch, 3, run)
    stored = run()  # resumes from the checkpoint after chunk 2
    for p in ("X", "E", "I"):
        for a, b in zip(stored.spikes(p), single.spikes(p), strict=True):
            np.testing.assert_array_equal(a, b, err_msg=p)
    _, v = single.trace("E", "v")
    np.testing.assert_array_equal(stored.trace("E", "v")[1], v)
    np.testing.assert_array_equal(stored.recording(5)["values"], single.recordings[5])
    if plastic:
        np.testing.assert_array_equal(stored.weight_trace("E->E:exc")[1],
                                      single.weight_trace("E->E:exc")[1])  # fmt: skip
    for a, b in zip(jax.tree.leaves(stored.state.plasticity),
                    jax.tree.leaves(single.state.plasticity), strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fmt, plastic", CASES)
def test_vmap_over_keys_equals_separate_runs(fmt, plastic):
    net = network(fmt, plastic)
    record = monitors(plastic)
    keys = jax.random.split(jax.random.key(5), 2)
    batched = jax.vmap(lambda k: bs.simulate(net, 20.0, key=k, record=record, check=False))(keys)
    batched.raise_if_failed()
    for i in range(2):
        alone = bs.simulate(net, 20.0, key=keys[i], record=record)
        one = batched.batch(i)
        for p in ("E", "I"):
            for a, b in zip(one.spikes(p), alone.spikes(p), strict=True):
                np.testing.assert_array_equal(a, b)
        for a, b in zip(jax.tree.leaves(one.recordings), jax.tree.leaves(alone.recordings),
                        strict=True):  # fmt: skip
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fmt, plastic", CASES)
def test_grad_matches_finite_differences(x64, fmt, plastic):
    """d/dI_e of the mean membrane potential of E over 5 ms, through the plastic scan with
    checkpointing."""
    net = network(fmt, plastic)
    # No spikes in E and I (the input from X still arrives): the potential is then affine in
    # I_e and the central difference exact.
    net = eqx.tree_at(lambda n: (n.populations[1].model.V_th, n.populations[2].model.V_th),
                      net, (jnp.asarray(1e6), jnp.asarray(1e6)))  # fmt: skip

    def loss(i_e):
        model = eqx.tree_at(lambda n: n.populations[1].model.I_e, net, i_e)
        res = bs.simulate(model, 5.0, key=jax.random.key(0), record=(MeanVoltage("E"),),
                          checkpoint=bs.Checkpointing())  # fmt: skip
        return res.recordings[0].mean()

    i_e = jnp.asarray(100.0)
    g = jax.grad(loss)(i_e)
    h = 1e-2
    fd = (loss(i_e + h) - loss(i_e - h)) / (2 * h)
    assert g > 0
    np.testing.assert_allclose(g, fd, rtol=1e-6)
