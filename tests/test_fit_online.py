"""Online learning with e-prop eligibility traces: exact where it should be, close to BPTT
where it approximates, memory independent of the sequence length, and it learns."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import brainsim as bs
from brainsim import fit


def _regression_problem(T=60, n_in=12, n_out=3, dtype=jnp.float64):
    x = (jax.random.uniform(jax.random.key(1), (T, n_in)) < 0.2).astype(dtype)
    target = jnp.sin(jnp.linspace(0.0, 6.0, T, dtype=dtype))[:, None] * jnp.ones((T, n_out), dtype)
    return x, target


def _squared_error(y, t):
    return jnp.sum((y - t) ** 2)


def _reference_forward(model, inputs, dt):
    """SpikingRNN's forward pass as a loop of its own over the neuron's step (the
    implementation before it ran on a brainsim.Network): current I_k = x_k W_in + z_{k-1} W_rec
    held over step k, then the leaky readout."""
    dtype = model.w_in.dtype
    drive_in = inputs.astype(dtype) @ model.w_in
    zeros = jnp.zeros((model.n_hidden,), dtype)
    key = jax.random.key(0)

    def body(carry, current):
        state, z_prev = carry
        if model.w_rec is not None:
            current = current + z_prev @ model.w_rec
        state, z = model.neuron.step(state, bs.Drive(current, zeros), 0.0, dt, key)
        return (state, z), z

    init = (model.neuron.init(model.n_hidden, dtype=dtype), zeros)
    _, spikes = jax.lax.scan(body, init, drive_in)
    kappa = jnp.exp(-dt / model.tau_out).astype(dtype)
    return spikes, fit._online.leaky_filter(spikes @ model.w_out + model.b_out, kappa)


def _lif(detach, t_ref):
    return bs.LIF(C_m=1.0, tau_m=20.0, E_L=0.0, V_th=1.0, V_reset=0.0, t_ref=t_ref,
                  surrogate=bs.surrogate.FastSigmoid(10.0), detach_reset=detach)


@pytest.mark.parametrize(
    "recurrent, detach", [(False, True), (True, False)], ids=["feedforward", "recurrent"]
)
def test_network_run_equals_reference_loop(recurrent, detach, x64):
    # The model runs as a brainsim.Network under simulate (input current a TimedArray, the
    # recurrence a zero-delay projection onto a PulseSynapse): spikes, readout and the BPTT
    # gradient of every leaf equal those of the plain loop over the neuron's step. (Recurrent
    # with a detached reset: test_network_is_what_the_model_simulates.)
    x, target = _regression_problem()
    model = fit.SpikingRNN(12, 16, 3, key=jax.random.key(0), recurrent=recurrent,
                           neuron=_lif(detach, 2.0), input_gain=3.0, dtype=jnp.float64)

    @jax.jit
    def run(model):
        # forward(m) -> (spikes, readout): outputs and the BPTT gradient of a readout loss
        def outputs(forward):
            def loss(m):
                return jnp.mean(jax.vmap(_squared_error)(forward(m)[1], target))

            return forward(model), jax.grad(loss)(model)

        return outputs(lambda m: m(x, 1.0)), outputs(lambda m: _reference_forward(m, x, 1.0))

    ((spikes, y), g), ((ref_spikes, ref_y), g_ref) = run(model)
    assert 0.05 < float(spikes.mean()) < 0.5
    refractory = jnp.any(spikes[1:] * spikes[:-1] > 0)  # t_ref = 2 steps: never two in a row
    assert not bool(refractory)
    np.testing.assert_array_equal(spikes, ref_spikes)
    np.testing.assert_allclose(y, ref_y, rtol=1e-12, atol=1e-12)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * float(jnp.abs(b).max()))
    assert float(jnp.abs(g.w_in).max()) > 0 and float(jnp.abs(g.neuron.tau_m)) > 0
    if recurrent:
        assert float(jnp.abs(g.w_rec).max()) > 0


def test_network_is_what_the_model_simulates(x64):
    # model.network(x, dt) is a public Network: simulated with any driver option it records
    # the model's spikes (here with checkpointing, which must not change them), and the
    # neuron's NEST timing (refractory clamp one step longer) is followed, as by the loop.
    x, _ = _regression_problem()
    neuron = _lif(True, 2.0).with_timing(bs.Timing.nest())
    model = fit.SpikingRNN(12, 16, 3, key=jax.random.key(0), recurrent=True, neuron=neuron,
                           input_gain=3.0, dtype=jnp.float64)
    net = model.network(x, 1.0)
    assert [p.name for p in net.populations] == ["hidden"] and net.timing == bs.Timing.nest()
    assert isinstance(net.population("hidden").receptors["rec"].kinetics, bs.PulseSynapse)
    result = bs.simulate(net, n_steps=x.shape[0], state=net.init(jax.random.key(3)),
                         record=(fit.SpikeTrain("hidden"),), checkpoint=bs.Checkpointing(2))
    ref_spikes, _ = _reference_forward(model, x, 1.0)
    np.testing.assert_array_equal(result.recordings[0], ref_spikes)
    brian2 = eqx.tree_at(lambda m: m.neuron, model, _lif(True, 2.0))
    assert not np.array_equal(brian2(x, 1.0)[0], ref_spikes)  # the timing matters here


def test_bad_inputs_are_refused():
    model = fit.SpikingRNN(4, 5, 2, key=jax.random.key(0))
    x = jnp.zeros((10, 4))
    with pytest.raises(ValueError, match=r"`inputs` must have shape \(T, 4\)"):
        model(jnp.zeros((10, 3)), 1.0)
    with pytest.raises(ValueError, match="T >= 1"):
        model(jnp.zeros((0, 4)), 1.0)
    with pytest.raises(ValueError, match="`dt` must be positive"):
        model(x, 0.0)
    with pytest.raises(TypeError, match="`dt` must be a Python number"):
        jax.jit(lambda dt: model(x, dt))(1.0)
    with pytest.raises(ValueError, match=r"`inputs` must be finite; got nan at index \(3, 1\)"):
        model(x.at[3, 1].set(jnp.nan), 1.0)
    bad_weights = eqx.tree_at(lambda m: m.w_in, model, model.w_in.at[0, 2].set(jnp.inf))
    with pytest.raises(ValueError, match=r"`inputs @ w_in` must be finite \(in pA\); got inf"):
        bad_weights(x.at[0, 0].set(1.0), 1.0)
    with pytest.raises(TypeError, match="eprop_loss: `dt` must be a Python number"):
        jax.jit(lambda dt: fit.eprop_loss(model, x, jnp.zeros((10, 2)), loss=_squared_error,
                                          dt=dt))(1.0)


def _grads(model, x, target):
    kw = dict(loss=_squared_error, dt=1.0)
    eprop = jax.jit(jax.value_and_grad(lambda m: fit.eprop_loss(m, x, target, **kw)))(model)
    bptt = jax.jit(jax.value_and_grad(lambda m: fit.bptt_loss(m, x, target, **kw)))(model)
    return eprop, bptt


def _cosine(a, b):
    return float(jnp.sum(a * b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b)))


def test_eprop_equals_bptt_without_recurrence(x64):
    # One feed-forward layer of LIF neurons with a leaky readout: each neuron reaches the
    # loss only through the readout, so the eligibility traces are the exact gradient
    # (same surrogate, reset and refractoriness as the network's own step; the refractory
    # clamp of Brian2's and of NEST's timing conventions).
    x, target = _regression_problem()
    for detach, timing in ((True, bs.Timing.brian2()), (False, bs.Timing.nest())):
        neuron = _lif(detach, 2.0).with_timing(timing)
        model = fit.SpikingRNN(12, 16, 3, key=jax.random.key(0), neuron=neuron, input_gain=3.0,
                               dtype=jnp.float64)
        spikes, _ = model(x, 1.0)
        assert 0.05 < float(spikes.mean()) < 0.5  # the layer is active
        (le, ge), (lb, gb) = _grads(model, x, target)
        np.testing.assert_allclose(le, lb, rtol=1e-13)
        for name in ("w_in", "w_out", "b_out"):
            a, b = getattr(ge, name), getattr(gb, name)
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12 * float(jnp.abs(b).max()))
        # Neuron parameters are not trained by e-prop: their gradient is zero.
        assert float(ge.neuron.tau_m) == 0.0


def test_eprop_approximates_bptt_with_recurrence(x64):
    # With recurrent weights e-prop drops the paths through other neurons' later spikes.
    # Readout gradients stay exact; measured cosine similarity to BPTT 0.9989 (w_in) and
    # 0.9988 (w_rec) on this problem.
    x, target = _regression_problem()
    model = fit.SpikingRNN(12, 16, 3, key=jax.random.key(0), recurrent=True, input_gain=3.0,
                           dtype=jnp.float64)
    (le, ge), (lb, gb) = _grads(model, x, target)
    np.testing.assert_allclose(le, lb, rtol=1e-13)
    np.testing.assert_allclose(ge.w_out, gb.w_out, rtol=1e-10)
    assert not np.allclose(ge.w_rec, gb.w_rec, rtol=1e-3)  # it is an approximation
    assert _cosine(ge.w_in, gb.w_in) > 0.99
    assert _cosine(ge.w_rec, gb.w_rec) > 0.99


def test_eprop_memory_does_not_grow_with_sequence_length():
    # XLA's compiled temporary memory for the gradient: e-prop's is the same for 200 and
    # 2,000 steps; BPTT's grows with T.
    model = fit.SpikingRNN(20, 32, 4, key=jax.random.key(0), recurrent=True)

    def temp(loss_fn, T):
        x = jnp.zeros((T, 20))
        target = jnp.zeros((T, 4))
        grad = jax.jit(jax.grad(lambda m: loss_fn(m, x, target, loss=_squared_error, dt=1.0)))
        return grad.lower(model).compile().memory_analysis().temp_size_in_bytes

    eprop = [temp(fit.eprop_loss, T) for T in (200, 2000)]
    bptt = [temp(fit.bptt_loss, T) for T in (200, 2000)]
    assert eprop[1] <= eprop[0] * 1.05, eprop
    assert bptt[1] > 5 * bptt[0], bptt


def test_eprop_learns_to_classify_spike_patterns():
    # 4 classes of random spike patterns (20 inputs, 40 steps), 2 % of the bits flipped in
    # every sample; cross-entropy on the readout over the last 10 steps. A recurrent layer
    # of 32 LIF neurons trained with e-prop (Adam, 100 minibatches of 32) classifies new
    # noisy samples (measured: chance 21 % before, 99.6 % after).
    rng = np.random.default_rng(0)
    n_in, T, n_classes = 20, 40, 4
    prototypes = rng.random((n_classes, T, n_in)) < 0.08

    def samples(n):
        labels = rng.integers(0, n_classes, n)
        x = np.logical_xor(prototypes[labels], rng.random((n, T, n_in)) < 0.02)
        return jnp.asarray(x, jnp.float32), jnp.asarray(labels)

    x_train, y_train = samples(256)
    x_test, y_test = samples(256)
    weight = (jnp.arange(T) >= T - 10).astype(jnp.float32) * (T / 10)

    def step_loss(y, target):
        label, w = target
        return w * optax.softmax_cross_entropy_with_integer_labels(y, label)

    def loss(model, batch, key):
        x, labels = batch
        per_sample = jax.vmap(lambda x, label: fit.eprop_loss(
            model, x, (jnp.broadcast_to(label, (T,)), weight), loss=step_loss, dt=1.0))
        return jnp.mean(per_sample(x, labels))

    def accuracy(model):
        _, y = jax.vmap(lambda x: model(x, 1.0))(x_test)
        return float(fit.accuracy(y[:, -1], y_test))

    model = fit.SpikingRNN(n_in, 32, n_classes, key=jax.random.key(0), recurrent=True,
                           input_gain=4.0)
    before = accuracy(model)
    result = fit.fit(loss, model, optax.adam(1e-2), steps=100, data=(x_train, y_train),
                     batch_size=32, progress=False)
    assert before < 0.4
    assert accuracy(result.last_params) >= 0.95
