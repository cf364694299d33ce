"""Run-time faults (brainsim/_faults.py): a state that diverges to huge but finite values is
reported like a non-finite one; every report names the population, variable, value, step and,
for a batched run, the batch member, the same from a concrete result and from inside
``jit``/``vmap``; with ``check=False`` a batched result is kept and checked outside."""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brainsim as bs
from brainsim._monitors import INT32_MAX

KEY = jax.random.key(0)


def _hh(i_e):
    """Hodgkin–Huxley neurons under ``i_e`` μA/cm²: 8e6 (a unit mistake) drives the membrane to
    ~2e5 mV, finite (the exponential Euler update is exact for frozen conductances)."""
    return bs.Network([bs.Population("H", 2, bs.HodgkinHuxley(I_e=i_e))], dt=0.01)


def _adex(b):
    """AdEx neurons under a step to 1 nA; ``b`` = 2e6 pA takes ``w`` beyond NEST's 1e6 pA bound
    at the first spike, and it decays from there, finite."""
    return bs.Network([bs.Population("A", 2, bs.AdEx(b=b, I_e=1000.0))], dt=0.1)


def test_hodgkin_huxley_diverging_to_finite_values_is_reported():
    net = _hh(8e6)
    res = bs.simulate(net, n_steps=50, key=KEY, record=(bs.StateTrace("H", "v"),), check=False)
    v = np.asarray(res.recordings[0])
    # The fault the non-finite check cannot see: every value finite, the membrane at 1e5 mV.
    assert np.all(np.isfinite(v)) and v.max() > 1e5
    assert res.faults.first_nonfinite_step.tolist() == [-1]
    assert res.faults.first_out_of_bounds_step.tolist() == [0]
    assert res.state_bounds[0][int(res.faults.out_of_bounds_variable[0])][0] == "v"
    assert float(res.faults.out_of_bounds_value[0]) > 1e3
    with pytest.raises(
        bs.SimulationError,
        match=r"population 'H': state variable 'v' reached [0-9.e+]+ mV at step 0 \(t = 0 ms\), "
        r"outside the range its model allows \(\[-1000, 1000\] mV\).*smaller dt.*integrator.*"
        r"parameters",
    ):
        bs.simulate(net, n_steps=50, key=KEY)


def test_adex_adaptation_diverging_to_finite_values_is_reported():
    net = _adex(2e6)
    res = bs.simulate(net, n_steps=200, key=KEY, record=(bs.SpikeRaster(),), check=False)
    first_spike = int(round(res.spikes("A")[0].min() / 0.1))
    assert np.all(np.isfinite(np.asarray(res.state.populations["A"].w)))
    assert res.faults.first_nonfinite_step.tolist() == [-1]
    # w jumps by b at the first spike: the step of the fault and the value seen.
    assert res.faults.first_out_of_bounds_step.tolist() == [first_spike]
    np.testing.assert_allclose(float(res.faults.out_of_bounds_value[0]), 2e6, rtol=1e-4)
    with pytest.raises(
        bs.SimulationError,
        match=rf"state variable 'w' reached 2e\+06 pA at step {first_spike} .*outside the "
        r"range its model allows \(\[-1e\+06, 1e\+06\] pA\)",
    ):
        res.raise_if_failed()
    # NEST's defaults (b = 80.5 pA) stay in range.
    bs.simulate(_adex(80.5), n_steps=200, key=KEY)


def test_divergence_is_reported_at_its_first_step_before_the_nan_it_becomes():
    # Forward Euler at 0.1 ms is unstable for Hodgkin–Huxley: a gate leaves [0, 1], and a few
    # steps later the state overflows to inf/NaN. The report is the first of the two.
    net = bs.Network(
        [bs.Population("H", 2, bs.HodgkinHuxley(I_e=10.0, integrator=bs.Euler()))], dt=0.1
    )
    res = bs.simulate(net, n_steps=100, key=KEY, check=False)
    oob = int(res.faults.first_out_of_bounds_step[0])
    assert 0 <= oob < int(res.faults.first_nonfinite_step[0])
    with pytest.raises(bs.SimulationError, match=rf"Numerical instability .* at step {oob} "):
        res.raise_if_failed()


class _GrowingState(NamedTuple):
    v: jax.Array


class _Growing(bs.AbstractNeuron):
    """A user-defined model whose state doubles every step (finite for 100 steps in float32),
    declaring no bounds (``bounded=None``) or ``|x| <= 1000`` for its variable ``bounded``."""

    bounded: str | None = eqx.field(static=True, default=None)

    def init(self, n, *, dtype=None):
        return _GrowingState(jnp.ones((n,), dtype or jnp.float32))

    def step(self, state, drive, t, dt, key):
        return _GrowingState(state.v * 2.0), jnp.zeros_like(state.v)

    def voltage(self, state):
        return state.v

    def state_bounds(self):
        if self.bounded is None:
            return super().state_bounds()
        return {self.bounded: bs.StateBound(-1e3, 1e3, "mV")}


def test_models_declare_bounds_and_the_default_checks_finiteness_only():
    plain = bs.Network([bs.Population("G", 3, _Growing())], dt=0.1)
    res = bs.simulate(plain, n_steps=100, key=KEY)  # 2**100: finite, and no bound declared
    assert res.faults.first_out_of_bounds_step.tolist() == [-1]
    bounded = bs.Network([bs.Population("G", 3, _Growing(bounded="v"))], dt=0.1)
    res = bs.simulate(bounded, n_steps=100, key=KEY, check=False)
    assert res.faults.first_out_of_bounds_step.tolist() == [9]  # 2**10 = 1024 after step 9
    assert float(res.faults.out_of_bounds_value[0]) == 1024.0
    wrong = bs.Network([bs.Population("G", 3, _Growing(bounded="u"))], dt=0.1)
    with pytest.raises(KeyError, match=r"_Growing.state_bounds\(\).*'u'.*Valid: 'v'"):
        bs.simulate(wrong, n_steps=5, key=KEY)


def test_every_builtin_neuron_declares_valid_bounds():
    for model in (
        bs.LIF(),
        bs.ALIF(),
        bs.AdEx(),
        bs.ExpIF(),
        bs.QIF(),
        bs.Izhikevich(),
        bs.HodgkinHuxley(),
        bs.TraubMiles(),
    ):
        fields = model.init(2)._fields
        for name, bound in model.state_bounds().items():
            assert name in fields and bound.lower < bound.upper, (model, name)
            # Far outside the range of a working simulation: the resting state is inside.
            assert bound.lower < float(getattr(model.init(2), name)[0]) < bound.upper


# ------------------------------------------------------------------------ batches and jit


def _nan_network():
    """Population B gets the current `values[:, 1]` (a TimedArray): inf at step 37 poisons it."""
    pops = [
        bs.Population("A", 3, bs.LIF(I_e=400.0)),
        bs.Population("B", 2, bs.LIF(), currents=[bs.TimedArray(np.zeros((60, 2)), dt=0.1)]),
    ]
    return bs.Network(pops, dt=0.1)


def _with_current(net, values):
    return eqx.tree_at(lambda n: n.populations[1].currents[0].values, net, values)


def _batch_with_one_bad_member():
    values = np.zeros((3, 60, 2), np.float32)
    values[2, 37, 1] = np.inf  # member 2 only
    return jnp.asarray(values)


MEMBER_2_NAN = (
    r"Non-finite state \(NaN, inf or overflowing values\) first appeared in "
    r"population 'B' at step 37 \(t = 3\.7 ms\) in batch member 2\..*"
    r"\(1 of 3 batch members failed: 2\.\)"
)


def test_traced_check_names_the_kind_the_step_and_the_batch_member():
    # Before: a NaN in one member of a vmap was reported as "A SpikeList overflowed its
    # capacity" (the index of the messages was maximised over the batch), with no step.
    net = _nan_network()

    def run(values):
        return bs.simulate(
            _with_current(net, values), 5.0, key=KEY, record=(bs.SpikeList("A", 1000),)
        ).state.step

    with pytest.raises(
        bs.SimulationError,
        match=MEMBER_2_NAN + r".*check=False.*"
        r"raise_if_failed\(\)",
    ):
        bs.jit(jax.vmap(run))(_batch_with_one_bad_member())
    # Under a plain jax.jit the same report arrives inside JAX's runtime error.
    with pytest.raises(RuntimeError, match=MEMBER_2_NAN):
        jax.block_until_ready(jax.jit(jax.vmap(run))(_batch_with_one_bad_member()))


def test_traced_check_reports_overflows_and_instabilities_with_their_member():
    lif = bs.LIF(I_e=0.0)
    net = bs.Network([bs.Population("N", 4, lif)], dt=0.1)

    def spiking(i_e):
        n = eqx.tree_at(lambda n: n.populations[0].model.I_e, net, i_e)
        return bs.simulate(n, 20.0, key=KEY, record=(bs.SpikeList("N", 8),)).state.step

    with pytest.raises(
        bs.SimulationError,
        match=r"^In batch member 1: SpikeList 'N': \d+ spike "
        r"entries .* capacity >= \d+.*\(1 of 2 batch members failed: 1\.\)",
    ):
        bs.jit(jax.vmap(spiking))(jnp.array([0.0, 2000.0]))

    def adex(b):
        n = eqx.tree_at(lambda n: n.populations[0].model.b, _adex(80.5), b)
        return bs.simulate(n, n_steps=200, key=KEY).state.step

    with pytest.raises(
        bs.SimulationError,
        match=r"state variable 'w' reached 2e\+06 pA at "
        r"step \d+ \(t = [0-9.]+ ms\) in batch member 1",
    ):
        bs.jit(jax.vmap(adex))(jnp.array([80.5, 2e6]))


def test_eager_vmap_raises_the_simulation_error():
    # Without an outer jit the check runs while vmap evaluates: the same SimulationError.
    def adex(b):
        n = eqx.tree_at(lambda n: n.populations[0].model.b, _adex(80.5), b)
        return bs.simulate(n, n_steps=200, key=KEY)

    with pytest.raises(bs.SimulationError, match=r"'w' reached 2e\+06 pA .* in batch member 1"):
        jax.vmap(adex)(jnp.array([80.5, 2e6]))


def test_result_is_kept_with_check_false_and_checked_outside_the_jit():
    net = _nan_network()

    def run(values):
        return bs.simulate(
            _with_current(net, values), 5.0, key=KEY, check=False, record=(bs.StateTrace("A", "v"),)
        )

    res = jax.jit(jax.vmap(run))(_batch_with_one_bad_member())
    assert res.faults.first_nonfinite_step.tolist() == [[-1, -1], [-1, -1], [-1, 37]]
    assert np.asarray(res.recordings[0]).shape == (3, 50, 3)  # every member's recording
    with pytest.raises(bs.SimulationError, match=MEMBER_2_NAN):
        res.raise_if_failed()
    res.batch(0).raise_if_failed()  # the good members' results are usable as they are
    with pytest.raises(bs.SimulationError, match=r"population 'B' at step 37 \(t = 3\.7 ms\)\."):
        res.batch(2).raise_if_failed()


def test_concrete_batched_overflow_names_the_member():
    # raise_if_failed used to take the largest overflow over the batch and name no member.
    net = bs.Network([bs.Population("N", 4, bs.LIF())], dt=0.1)

    def run(i_e):
        n = eqx.tree_at(lambda n: n.populations[0].model.I_e, net, i_e)
        return bs.simulate(n, 20.0, key=KEY, record=(bs.SpikeList("N", 8),), check=False)

    res = jax.vmap(run)(jnp.array([0.0, 0.0, 2000.0]))
    with pytest.raises(
        bs.SimulationError,
        match=r"^In batch member 2: SpikeList 'N'.*"
        r"\(1 of 3 batch members failed: 2\.\)",
    ):
        res.raise_if_failed()


def test_gradients_flow_through_a_checked_simulation():
    # The traced check is bookkeeping: grad through simulate(check=True) is unaffected.
    net = _adex(80.5)

    def loss(i_e):
        n = eqx.tree_at(lambda n: n.populations[0].model.I_e, net, i_e)
        r = bs.simulate(n, n_steps=50, key=KEY, record=(bs.StateTrace("A", "v"),))
        return jnp.mean(r.recordings[0]) + 0.0 * r.state.step

    g = jax.grad(loss)(jnp.float32(300.0))
    assert np.isfinite(g) and g > 0


def test_saturated_overflow_reads_at_least():
    monitor = bs.SpikeList("N", 10)
    assert "at least 2147483647 spike entries" in monitor.describe_overflow(INT32_MAX)
    assert "capacity more than 2147483647" in monitor.describe_overflow(INT32_MAX)
    assert "3 spike entries" in monitor.describe_overflow(3)
