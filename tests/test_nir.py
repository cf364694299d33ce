"""brainsim.nir: export and import of NIR graphs, checked against a NumPy reference."""

from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pytest

import brainsim as bs
from brainsim import connect

nir = pytest.importorskip("nir")
bnir = bs.nir

T = 60
DATA = Path(__file__).resolve().parent / "data"


pytestmark = pytest.mark.usefixtures("x64")  # float64: spikes compared exactly


def _dense(pre, post, w, delay=0.0, receptor="in"):
    i, j = np.nonzero(np.ones_like(w, dtype=bool))
    conn = connect.from_arrays(
        i, j, n_pre=w.shape[0], n_post=w.shape[1], weight=w[i, j], delay=delay
    )
    return bs.Projection(pre, post, conn, receptor=receptor, layout=bs.Dense())


def _pulse():
    return {"in": bs.Receptor(bs.PulseSynapse(), bs.CurrentBased())}


def _inputs(n, seed=0):
    return (np.random.default_rng(seed).random((T, n)) < 0.3).astype(np.float64)


def _spikes(net, pop):
    result = bs.simulate(
        net, n_steps=T, state=net.init(jax.random.key(0)), record=(bs.fit.SpikeTrain(pop),)
    )
    return np.asarray(result.recordings[0])


def _two_layer(x, *, kinetics=None, integrator=None, delay=2.0, dt=1.0, reset="value"):
    rng = np.random.default_rng(1)
    lif = bs.LIF(
        reset=reset,
        C_m=2.0,
        tau_m=[10.0, 12.0, 8.0, 20.0, 15.0],
        E_L=0.0,
        V_th=1.0,
        V_reset=-0.2,
        t_ref=0.0,
        integrator=integrator or bs.Euler(),
    )
    rec = {"in": bs.Receptor(kinetics, bs.CurrentBased())} if kinetics else _pulse()
    pops = [
        bs.Population("x", x.shape[1], bs.SpikeArray(x)),
        bs.Population("h", 5, lif, receptors=rec),
        bs.Population("o", 5, lif, receptors=rec),
    ]
    projs = [
        _dense("x", "h", rng.normal(1.5, 1.0, (x.shape[1], 5))),
        _dense("h", "o", rng.normal(1.5, 1.0, (5, 5)), delay=delay),
        _dense("o", "h", rng.normal(0.0, 0.5, (5, 5))),
    ]
    return bs.Network(pops, projs, dt=dt)


@pytest.mark.parametrize(
    "synapse, dt", [("pulse", 1.0), ("exponential", 1.0), ("pulse", 0.5), ("exponential", 0.5)]
)
def test_round_trip_brainsim_nir_brainsim_same_spikes(synapse, dt):
    x = _inputs(4)
    kinetics = bs.ExponentialSynapse([3.0, 4.0, 5.0, 6.0, 2.0]) if synapse != "pulse" else None
    net = _two_layer(x, kinetics=kinetics, dt=dt)
    graph = bnir.to_nir(net)
    node = graph.nodes["h"]
    assert isinstance(node, nir.CubaLIF if kinetics else nir.LIF)
    imported = bnir.from_nir(graph, dt=dt, inputs=x)
    out = bnir.run(imported)
    want = _spikes(net, "o")
    assert want.sum() > 5  # the comparison is not between two silent networks
    np.testing.assert_array_equal(np.asarray(out["o.output"]), want)
    np.testing.assert_array_equal(np.asarray(out["h.output"]), _spikes(net, "h"))
    assert imported.outputs == {"h.output": ("h", "spikes"), "o.output": ("o", "spikes")}


def test_round_trip_through_file(tmp_path):
    x = _inputs(4)
    net = _two_layer(x)
    nir.write(tmp_path / "net.nir", bnir.to_nir(net))
    out = bnir.run(bnir.from_nir(nir.read(tmp_path / "net.nir"), dt=1.0, inputs=x))
    np.testing.assert_array_equal(np.asarray(out["o.output"]), _spikes(net, "o"))


def _graph(**lif_overrides):
    rng = np.random.default_rng(3)
    w1 = rng.normal(1.0, 1.0, (6, 3))
    w2 = rng.normal(0.8, 0.8, (4, 6))
    params = dict(
        tau=np.array([5.0, 10.0, 20.0, 8.0, 4.0, 30.0]),
        r=np.full(6, 2.0),
        v_leak=np.array([0.0, 0.1, -0.1, 0.0, 0.2, 0.0]),
        v_threshold=np.full(6, 1.0),
        v_reset=np.full(6, -0.5),
    )
    params.update(lif_overrides)
    return nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([3])}),
            "fc1": nir.Affine(weight=w1, bias=np.full(6, 0.05)),
            "lif": nir.LIF(**params),
            "delay": nir.Delay(delay=np.full(6, 2.0)),
            "fc2": nir.Linear(weight=w2),
            "if": nir.IF(r=np.full(4, 1.5), v_threshold=np.full(4, 1.0)),
            "output": nir.Output(output_type={"output": np.array([4])}),
        },
        edges=[
            ("input", "fc1"),
            ("fc1", "lif"),
            ("lif", "delay"),
            ("delay", "fc2"),
            ("fc2", "if"),
            ("if", "output"),
        ],
    ), (w1, w2, params)


def _reference(x, w1, w2, p, dt):
    """The graph by hand: Euler, input of step k from spikes of step k-1 (plus the delay),
    spike when v >= threshold after the update, reset to v_reset."""
    v1 = p["v_leak"].copy()
    v2 = np.zeros(4)
    s1_hist = np.zeros((T, 6))
    out = np.zeros((T, 4))
    lag2 = int(round(2.0 / dt)) + 1
    for k in range(T):
        i1 = (x[k - 1] @ w1.T if k >= 1 else 0.0) + 0.05
        v1 = v1 + dt / p["tau"] * (p["v_leak"] - v1 + p["r"] * i1)
        s1 = v1 >= p["v_threshold"]
        v1 = np.where(s1, p["v_reset"], v1)
        s1_hist[k] = s1
        i2 = s1_hist[k - lag2] @ w2.T if k >= lag2 else 0.0
        v2 = v2 + dt * 1.5 * i2
        s2 = v2 >= 1.0
        v2 = np.where(s2, 0.0, v2)
        out[k] = s2
    return out


def test_hand_built_graph_matches_numpy_reference():
    graph, (w1, w2, p) = _graph()
    x = _inputs(3, seed=5)
    out = np.asarray(bnir.run(bnir.from_nir(graph, dt=1.0, inputs={"input": x}))["output"])
    want = _reference(x, w1, w2, p, 1.0)
    assert want.sum() > 5
    np.testing.assert_array_equal(out, want)


def test_nir_brainsim_nir_same_parameters():
    graph, (w1, w2, p) = _graph()
    net = bnir.from_nir(graph, dt=1.0, inputs=_inputs(3)).network
    back = bnir.to_nir(net)
    lif = back.nodes["lif"]
    for name in ("tau", "r", "v_leak", "v_threshold", "v_reset"):
        np.testing.assert_allclose(getattr(lif, name), p[name], rtol=1e-15)
    assert isinstance(back.nodes["if"], nir.IF)
    np.testing.assert_allclose(back.nodes["if"].r, 1.5)
    np.testing.assert_allclose(back.nodes["lif->if.weight"].weight, w2)
    np.testing.assert_allclose(back.nodes["lif->if.delay"].delay, 2.0)
    # The Affine bias became I_e, exported again as the bias of the incoming Affine.
    fc1 = back.nodes["input->lif.weight"]
    assert isinstance(fc1, nir.Affine)
    np.testing.assert_allclose(fc1.bias, 0.05)
    np.testing.assert_allclose(fc1.weight, w1)


def test_spiking_rnn_export_readout_matches_model():
    model = bs.fit.SpikingRNN(3, 6, 2, key=jax.random.key(0), recurrent=True)
    graph = bnir.to_nir(model, dt=1.0)
    assert set(graph.nodes) >= {"input", "w_in", "hidden", "w_rec", "w_out", "readout"}
    np.testing.assert_array_equal(graph.nodes["w_in"].weight, np.asarray(model.w_in).T)
    li = graph.nodes["readout"]
    # Euler of the LI node: v' = (1 - dt/tau) v + dt r/tau I must be the model's filter.
    kappa = np.exp(-1.0 / float(model.tau_out))
    np.testing.assert_allclose(1.0 - 1.0 / li.tau, kappa, rtol=1e-12)
    np.testing.assert_allclose(li.r / li.tau, 1.0, rtol=1e-12)
    with pytest.raises(ValueError, match="needs `dt`"):
        bnir.to_nir(model)


def test_spiking_rnn_exported_and_imported_gives_its_spikes():
    """The SpikingRNN's input current acts in the step of its row, an imported Input's spikes
    one step later (a projection): the imported hidden spikes are the model's one step later
    and the readout (one more projection) two steps later. Its neuron integrates exactly."""
    model = bs.fit.SpikingRNN(3, 8, 2, key=jax.random.key(1), recurrent=True, input_gain=3.0)
    x = _inputs(3, seed=2)
    spikes, readout = model(x, 1.0)
    assert np.asarray(spikes).sum() > 10
    imported = bnir.from_nir(
        bnir.to_nir(model, dt=1.0), dt=1.0, inputs=x, integrator=bs.ExponentialEuler()
    )
    # The readout is an LI node: integrated with Euler, its update is SpikingRNN's filter
    # y = kappa y + u exactly; the hidden LIF with the model's own (exact) integrator.
    index = [p.name for p in imported.network.populations].index("readout")
    net = eqx.tree_at(lambda n: n.populations[index].model.integrator, imported.network, bs.Euler())
    out = np.asarray(bnir.run(imported._replace(network=net))["output"])
    # 1 - dt/tau and r dt/tau are kappa and 1 up to rounding (tau = dt/(1 - kappa)).
    np.testing.assert_allclose(out[2:], np.asarray(readout)[:-2], rtol=1e-12, atol=1e-12)
    assert np.abs(out).max() > 0.1


def test_export_refuses_what_does_not_map():
    x = _inputs(2)
    src = bs.Population("x", 2, bs.SpikeArray(x))
    refractory = bs.Population("r", 2, bs.LIF(t_ref=2.0), receptors=_pulse())
    with pytest.raises(ValueError, match="population 'r'.*t_ref"):
        bnir.to_nir(bs.Network([src, refractory], [_dense("x", "r", np.ones((2, 2)))], dt=1.0))
    cond = bs.Population(
        "c",
        2,
        bs.LIF(t_ref=0.0),
        receptors={"in": bs.Receptor(bs.ExponentialSynapse(5.0), bs.ConductanceBased(0.0))},
    )
    with pytest.raises(ValueError, match="receptor 'in' is ConductanceBased"):
        bnir.to_nir(bs.Network([src, cond], [_dense("x", "c", np.ones((2, 2)))], dt=1.0))
    adex = bs.Population("a", 2, bs.AdEx(), receptors=_pulse())
    with pytest.raises(ValueError, match="population 'a'.*AdEx"):
        bnir.to_nir(bs.Network([src, adex], [_dense("x", "a", np.ones((2, 2)))], dt=1.0))
    lif = bs.Population("l", 2, bs.LIF(t_ref=0.0), receptors=_pulse())
    i, j = np.array([0, 1]), np.array([0, 1])
    mixed = bs.Projection(
        "x",
        "l",
        connect.from_arrays(i, j, n_pre=2, n_post=2, weight=1.0, delay=np.array([0.0, 1.0])),
        receptor="in",
        layout=bs.Dense(),
    )
    with pytest.raises(ValueError, match="projection 'x->l:in'.*different delays"):
        bnir.to_nir(bs.Network([src, lif], [mixed], dt=1.0))


def test_import_refuses_unsupported_nodes():
    graph, _ = _graph()
    threshold = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([4])}),
            "thr": nir.Threshold(threshold=np.ones(4)),
            "output": nir.Output(output_type={"output": np.array([4])}),
        },
        edges=[("input", "thr"), ("thr", "output")],
    )
    with pytest.raises(ValueError, match="node 'thr' is a Threshold, which has no exact"):
        bnir.from_nir(threshold, dt=1.0, inputs=np.zeros((T, 4)))
    wrong = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([2])}),
            "fc": nir.Linear(weight=np.ones((3, 2))),
            "lif": nir.IF(r=np.ones(4), v_threshold=np.ones(4)),
            "output": nir.Output(output_type={"output": np.array([4])}),
        },
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")],
        type_check=False,
    )
    with pytest.raises(ValueError, match="3 values from 'input' reach 'lif', which has 4"):
        bnir.from_nir(wrong, dt=1.0, inputs=np.zeros((T, 2)))
    with pytest.raises(ValueError, match=r"inputs\['input'\]` must be finite and >= 0"):
        bnir.from_nir(graph, dt=1.0, inputs=-_inputs(3))
    with pytest.raises(ValueError, match="not whole steps of dt=0.3"):
        bnir.from_nir(graph, dt=0.3, inputs=_inputs(3))
    with pytest.raises(ValueError, match=r"inputs\['input'\]` must have shape \(T, 3\)"):
        bnir.from_nir(graph, dt=1.0, inputs=np.zeros((T, 5)))
    cuba = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([2])}),
            "fc": nir.Affine(weight=np.ones((2, 2)), bias=np.ones(2)),
            "lif": nir.CubaLIF(
                tau_syn=np.full(2, 5.0),
                tau_mem=np.full(2, 10.0),
                r=np.ones(2),
                v_leak=np.zeros(2),
                v_threshold=np.ones(2),
            ),
            "output": nir.Output(output_type={"output": np.array([2])}),
        },
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")],
    )
    with pytest.raises(ValueError, match="Affine bias into CubaLIF 'lif'"):
        bnir.from_nir(cuba, dt=1.0, inputs=np.zeros((T, 2)))


def _first_repeat(*rasters):
    """The first step at which some neuron spikes for the second time in any raster."""
    cut = min(r.shape[0] for r in rasters)
    for r in rasters:
        counts = np.cumsum(r, axis=0)
        late = np.nonzero((counts >= 2).any(axis=1))[0]
        if late.size:
            cut = min(cut, int(late[0]))
    return cut


def test_spyx_exported_graph_gives_spyx_spikes():
    """Cross-simulator: an IF network built and exported by Spyx 1.0, run by Spyx and by
    brainsim on the same input spikes. Spyx's IF resets by subtracting the threshold (and
    spikes on v > threshold) while the graph (NIR) says reset to v_reset = 0: imported with
    ``reset="subtract"`` brainsim gives Spyx's spikes in both layers over the whole run, one
    by one; imported as NIR says (the default), the two agree until a neuron spikes for the
    second time and differ after. It checks what the exporter writes and brainsim reads:
    weight orientation, r, threshold and one step per layer."""
    pytest.importorskip("spyx")
    import jax.numpy as jnp
    from flax import nnx
    from spyx import nir as spyx_nir
    from spyx import nn as spyx_nn

    rng = np.random.default_rng(4)
    n_in, n_hidden, n_out, steps = 20, 40, 10, 3 * T
    lin1 = nnx.Linear(n_in, n_hidden, use_bias=False, rngs=nnx.Rngs(0))
    lin2 = nnx.Linear(n_hidden, n_out, use_bias=False, rngs=nnx.Rngs(1))
    lin1.kernel[...] = jnp.asarray(rng.normal(0.05, 0.05, (n_in, n_hidden)), jnp.float32)
    lin2.kernel[...] = jnp.asarray(rng.normal(0.15, 0.1, (n_hidden, n_out)), jnp.float32)
    if1 = spyx_nn.IF((n_hidden,), threshold=1.0)
    model = spyx_nn.Sequential(lin1, if1, lin2, spyx_nn.IF((n_out,), threshold=1.0))
    graph = spyx_nir.to_nir(
        model, {"input": np.array([n_in])}, {"output": np.array([n_out])}, dt=1.0
    )
    x = (np.random.default_rng(7).random((steps, n_in)) < 0.1).astype(np.float64)
    # Spyx runs time-major with a batch axis; the first layer's spikes from its own model.
    out_spyx = np.asarray(spyx_nn.run(model, jnp.asarray(x[:, None], jnp.float32))[0])[:, 0]
    hidden_spyx = np.asarray(
        spyx_nn.run(spyx_nn.Sequential(lin1, if1), jnp.asarray(x[:, None], jnp.float32))[0]
    )[:, 0]

    def imported_run(reset):
        imported = bnir.from_nir(graph, dt=1.0, inputs=x, reset=reset)
        out = np.asarray(bnir.run(imported)["output"])
        result = bs.simulate(
            imported.network,
            n_steps=steps,
            state=imported.network.init(jax.random.key(0)),
            record=(bs.fit.SpikeTrain("layer_1"),),
        )
        return out, np.asarray(result.recordings[0])

    out, hidden = imported_run("subtract")
    assert hidden_spyx.sum() >= 200 and out_spyx.sum() >= 200
    np.testing.assert_array_equal(hidden, hidden_spyx)
    np.testing.assert_array_equal(out, out_spyx)

    out, hidden = imported_run("value")
    cut = _first_repeat(out_spyx, hidden_spyx, out, hidden)
    assert hidden_spyx[:cut].sum() >= 8 and out_spyx[:cut].sum() >= 5, cut
    np.testing.assert_array_equal(hidden[:cut], hidden_spyx[:cut])
    np.testing.assert_array_equal(out[:cut], out_spyx[:cut])
    assert (hidden != hidden_spyx).any()  # NIR's reset is not Spyx's


def test_subtractive_reset_is_refused_by_to_nir_and_named_in_from_nir():
    x = _inputs(4)
    net = _two_layer(x)
    with pytest.raises(ValueError, match=r"population 'h': LIF\(reset='subtract'\).*Use reset='value'"):
        bnir.to_nir(_two_layer(x, reset="subtract"))
    with pytest.raises(ValueError, match="from_nir: `reset` must be 'value'.*got 'zero'"):
        bnir.from_nir(bnir.to_nir(net), dt=1.0, inputs=x, reset="zero")


@pytest.mark.parametrize(
    "kind, stride, padding, dilation, groups",
    [
        ("2d", 1, 1, 1, 1),
        ("2d", 2, 0, 1, 2),
        ("2d", 1, "same", 2, 1),
        ("2d", (2, 1), (1, 0), 1, 1),
        ("2d-square", 2, 1, 1, 1),
        ("1d", 2, 1, 1, 1),
        ("1d", 1, "valid", 2, 2),
    ],
)
def test_conv_matrix_matches_lax_conv(kind, stride, padding, dilation, groups):
    rng = np.random.default_rng(0)
    c_in, c_out = 2, 4
    if kind.startswith("2d"):
        kernel = (3, 3) if kind == "2d-square" else (3, 2)
        shape, w = (5, 6), rng.normal(size=(c_out, c_in // groups, *kernel))
        node = nir.Conv2d(
            input_shape=shape,
            weight=w,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=rng.normal(size=c_out),
        )
    else:
        shape, w = (7,), rng.normal(size=(c_out, c_in // groups, 3))
        node = nir.Conv1d(
            input_shape=7,
            weight=w,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=rng.normal(size=c_out),
        )
    a, b = bnir.conv_matrix(node)
    x = rng.normal(size=(3, c_in, *shape))
    nd = len(shape)
    pad = (
        padding.upper()
        if isinstance(padding, str)
        else [(p, p) for p in np.broadcast_to(padding, (nd,))]
    )
    want = jax.lax.conv_general_dilated(
        x,
        w,
        window_strides=tuple(np.broadcast_to(stride, (nd,))),
        padding=pad,
        rhs_dilation=tuple(np.broadcast_to(dilation, (nd,))),
        feature_group_count=groups,
    )
    want = np.asarray(want) + node.bias.reshape((1, c_out) + (1,) * nd)
    np.testing.assert_allclose(
        x.reshape(3, -1) @ a + b, want.reshape(3, -1), rtol=1e-12, atol=1e-12
    )
    if w.shape[2:] == w.shape[2:3] * (w.ndim - 2):
        # (nir 1.0.8 infers the output shape from the first kernel dimension only.)
        assert tuple(want.shape[1:]) == tuple(node.output_type["output"])


def test_conv_graph_runs_as_its_matrix():
    """Input (1, 5, 5) → Conv2d → IF → Output: the IF neurons integrate the convolved input
    of the previous step (NumPy reference with the convolution done by lax)."""
    rng = np.random.default_rng(2)
    w = rng.normal(0.4, 0.3, (2, 1, 3, 3))
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([1, 5, 5])}),
            "conv": nir.Conv2d(
                input_shape=(5, 5),
                weight=w,
                stride=1,
                padding=1,
                dilation=1,
                groups=1,
                bias=np.zeros(2),
            ),
            "flat": nir.Flatten(input_type={"input": np.array([2, 5, 5])}, start_dim=0),
            "if": nir.IF(r=np.ones(50), v_threshold=np.full(50, 1.0)),
            "output": nir.Output(output_type={"output": np.array([50])}),
        },
        edges=[("input", "conv"), ("conv", "flat"), ("flat", "if"), ("if", "output")],
    )
    x = _inputs(25, seed=3)
    out = np.asarray(bnir.run(bnir.from_nir(graph, dt=1.0, inputs=x))["output"])
    conv = np.asarray(
        jax.lax.conv_general_dilated(x.reshape(T, 1, 5, 5), w, (1, 1), [(1, 1), (1, 1)])
    ).reshape(T, 50)
    v, want = np.zeros(50), np.zeros((T, 50))
    for k in range(1, T):
        v = v + conv[k - 1]
        want[k] = v >= 1.0
        v = np.where(want[k] > 0, 0.0, v)
    assert want.sum() > 20
    np.testing.assert_array_equal(out, want)


def test_integrator_scale_and_per_channel_delays_closed_form():
    """Input → Delay (per channel) → Scale → Linear → I → Output: the integrator's membrane
    after step k is dt r Σ_{j<k-d_i} (x_j s) W^T, a cumulative sum."""
    rng = np.random.default_rng(6)
    w = rng.normal(size=(2, 3))
    s = np.array([0.5, 2.0, -1.0])
    d = np.array([0.0, 2.0, 5.0])
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([3])}),
            "delay": nir.Delay(delay=d),
            "scale": nir.Scale(scale=s),
            "fc": nir.Linear(weight=w),
            "int": nir.I(r=np.array([0.5, 3.0])),
            "output": nir.Output(output_type={"output": np.array([2])}),
        },
        edges=[
            ("input", "delay"),
            ("delay", "scale"),
            ("scale", "fc"),
            ("fc", "int"),
            ("int", "output"),
        ],
    )
    x = _inputs(3, seed=8)
    imported = bnir.from_nir(graph, dt=0.5, inputs=x)
    assert imported.outputs == {"output": ("int", "v")}
    out = np.asarray(bnir.run(imported)["output"])
    lag = (d / 0.5).astype(int) + 1
    arriving = np.zeros((T, 3))
    for i in range(3):
        arriving[lag[i] :, i] = x[: T - lag[i], i]
    want = np.cumsum(0.5 * (arriving * s) @ w.T * np.array([0.5, 3.0]), axis=0)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


def test_cuba_lif_graph_matches_numpy_reference():
    """Input → Linear → CubaLIF: a held input x adds x w_in dt/tau_syn to the synaptic
    current, which decays exactly (its step average e^{-h}-weighted by φ1 drives the
    membrane), the membrane takes an Euler step with R = r, C_m = tau_mem/r."""
    rng = np.random.default_rng(9)
    n = 4
    w = rng.normal(1.0, 0.5, (n, 3))
    p = dict(
        tau_syn=np.array([2.0, 3.0, 5.0, 8.0]),
        tau_mem=np.array([10.0, 5.0, 20.0, 8.0]),
        r=np.array([2.0, 1.0, 4.0, 3.0]),
        v_leak=np.full(n, 0.1),
        v_threshold=np.full(n, 1.0),
        v_reset=np.full(n, -0.3),
        w_in=np.full(n, 1.5),
    )
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([3])}),
            "fc": nir.Linear(weight=w),
            "lif": nir.CubaLIF(**p),
            "output": nir.Output(output_type={"output": np.array([n])}),
        },
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")],
    )
    dt = 0.5
    x = _inputs(3, seed=10)
    out = np.asarray(bnir.run(bnir.from_nir(graph, dt=dt, inputs=x))["output"])
    z = -dt / p["tau_syn"]
    phi1 = np.expm1(z) / z
    g, v, want = np.zeros(n), p["v_leak"].copy(), np.zeros((T, n))
    for k in range(T):
        if k >= 1:
            g = g + (x[k - 1] @ w.T) * p["w_in"] * dt / p["tau_syn"]
        current = g * phi1
        v = v + dt / p["tau_mem"] * (p["v_leak"] - v + p["r"] * current)
        want[k] = v >= p["v_threshold"]
        v = np.where(want[k] > 0, p["v_reset"], v)
        g = g * np.exp(z)
    assert want.sum() > 10
    np.testing.assert_array_equal(out, want)


def test_nested_recurrent_subgraph_is_flattened():
    """A recurrent layer written as a subgraph (as Spyx and snnTorch write theirs) runs as
    the same graph written flat."""
    rng = np.random.default_rng(11)
    w_in, w_rec = rng.normal(0.8, 0.5, (5, 3)), rng.normal(0.0, 0.6, (5, 5))

    def lif():
        return nir.LIF(
            tau=np.full(5, 8.0),
            r=np.full(5, 8.0),
            v_leak=np.zeros(5),
            v_threshold=np.ones(5),
            v_reset=np.zeros(5),
        )

    def io(kind):
        return (
            nir.Input(input_type={"input": np.array([5])})
            if kind == "in"
            else nir.Output(output_type={"output": np.array([5])})
        )

    outer = {
        "input": nir.Input(input_type={"input": np.array([3])}),
        "fc": nir.Linear(weight=w_in),
        "output": io("out"),
    }
    flat = nir.NIRGraph(
        nodes={**outer, "lif": lif(), "rec": nir.Linear(weight=w_rec)},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")],
    )
    sub = nir.NIRGraph(
        nodes={"in": io("in"), "lif": lif(), "rec": nir.Linear(weight=w_rec), "out": io("out")},
        edges=[("in", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "out")],
    )
    nested = nir.NIRGraph(
        nodes={**outer, "rnn": sub}, edges=[("input", "fc"), ("fc", "rnn"), ("rnn", "output")]
    )
    x = _inputs(3, seed=12)
    want = np.asarray(bnir.run(bnir.from_nir(flat, dt=1.0, inputs=x))["output"])
    imported = bnir.from_nir(nested, dt=1.0, inputs=x)
    assert imported.outputs == {"output": ("rnn.lif", "spikes")}
    assert want.sum() > 10
    np.testing.assert_array_equal(np.asarray(bnir.run(imported)["output"]), want)


@pytest.mark.parametrize("kind", ["SumPool2d", "AvgPool2d"])
def test_pooling_integrated_closed_form(kind):
    """Input (2, 4, 6) → pooling (2×3 kernel, stride (2, 3), no padding) → I → Output: the
    integrator sums the pooled input of the steps before, dt r Σ pool(x)."""
    node = getattr(nir, kind)(
        kernel_size=np.array([2, 3]), stride=np.array([2, 3]), padding=np.array([0, 0])
    )
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([2, 4, 6])}),
            "pool": node,
            "int": nir.I(r=np.full(8, 2.0)),
            "output": nir.Output(output_type={"output": np.array([8])}),
        },
        edges=[("input", "pool"), ("pool", "int"), ("int", "output")],
        type_check=False,
    )
    x = _inputs(48, seed=13)
    out = np.asarray(bnir.run(bnir.from_nir(graph, dt=1.0, inputs=x))["output"])
    pooled = x.reshape(T, 2, 2, 2, 2, 3).sum(axis=(3, 5)).reshape(T, 8)
    if kind == "AvgPool2d":
        pooled = pooled / 6
    want = np.cumsum(np.vstack([np.zeros(8), 2.0 * pooled[:-1]]), axis=0)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    assert want[-1].min() > 0


def test_snntorch_exported_graph_gives_snntorch_spikes():
    """Cross-simulator: a two-layer Leaky network exported and run by snnTorch 1.0
    (``benchmarks/peers/snntorch_nir_export.py`` wrote the graph, its input and snnTorch's
    spikes to ``tests/data``: PyTorch is too large for this environment). snnTorch writes
    ``dt = 1e-4`` into its LIF nodes (``tau = dt / (1 - beta)``), so the graph is imported
    with ``dt=1e-4``; its neurons reset by subtraction (``reset="subtract"``) and spike in the
    step of their input, where brainsim's layers add one step each: every spike of both
    layers over the 200 steps, one and two steps later. With NIR's own reset the output
    differs."""
    data = np.load(DATA / "snntorch_leaky.npz")
    graph = nir.read(DATA / "snntorch_leaky.nir")
    x, hidden_snn, out_snn = data["x"].astype(np.float64), data["hidden"], data["output"]
    steps = x.shape[0]
    imported = bnir.from_nir(graph, dt=1e-4, inputs=x, reset="subtract")
    out = np.asarray(bnir.run(imported)["output"])
    result = bs.simulate(imported.network, n_steps=steps,
                         state=imported.network.init(jax.random.key(0)),
                         record=(bs.fit.SpikeTrain("1"),))  # fmt: skip
    hidden = np.asarray(result.recordings[0])
    assert hidden_snn.sum() > 500 and out_snn.sum() > 150
    np.testing.assert_array_equal(hidden[1:], hidden_snn[:-1])
    np.testing.assert_array_equal(out[2:], out_snn[:-2])
    nir_reset = np.asarray(bnir.run(bnir.from_nir(graph, dt=1e-4, inputs=x))["output"])
    assert (nir_reset[2:] != out_snn[:-2]).any()
