"""Time stays exact over runs of any length: the (step, epoch) pair of a network state, rings
indexed by the absolute step, keys that never repeat, and times computed from integers on the
host (an int32 step wraps after 2**31 steps, 59.6 h at 0.1 ms; a float32 time stops resolving
steps after 2**24)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brainsim as bs
from brainsim._clock import EPOCH_STEPS, absolute_step, ring_cursor, split_step

DT = 0.1


def recurrent_network():
    """Deterministic (no random input): a driven population with delayed recurrent synapses
    (7 ring rows: 7 does not divide 2**30, so a wrong ring row would show)."""
    lif = bs.LIF(C_m=250.0, tau_m=10.0, E_L=-70.0, V_th=-55.0, V_reset=-70.0, t_ref=2.0,
                 I_e=np.linspace(380.0, 420.0, 20))  # fmt: skip
    rec = {"e": bs.Receptor(bs.ExponentialSynapse(2.0), bs.CurrentBased())}
    edges = bs.connect.fixed_probability(20, 20, 0.3, weight=300.0, delay=0.6, seed=0)
    return bs.Network([bs.Population("n", 20, lif, receptors=rec)],
                      [bs.Projection("n", "n", edges, receptor="e")], dt=DT)  # fmt: skip


def at_step(state, absolute: int):
    step, epoch = split_step(absolute)
    return state._replace(step=jnp.asarray(step, jnp.int32), epoch=jnp.asarray(epoch, jnp.int32))


@pytest.mark.parametrize("absolute", [EPOCH_STEPS - 40, 2**31 - 40, 5 * EPOCH_STEPS + 11])
def test_a_run_past_2_to_the_31_steps_equals_a_run_at_a_congruent_small_step(absolute):
    """Across the epoch rollover and beyond int32, everything but the clock is what a run from
    a small step with the same ring row gives, and spike times are exact to the step."""
    net = recurrent_network()
    warm = bs.simulate(net, 30.0, key=jax.random.key(0)).state  # rings hold spikes in flight
    small = 7 * 1000 + absolute % 7  # the same row of the 7-row ring
    record = (bs.SpikeRaster(),)
    late = bs.simulate(net, n_steps=100, state=at_step(warm, absolute), record=record)
    early = bs.simulate(net, n_steps=100, state=at_step(warm, small), record=record)
    t_late, i_late = late.spikes("n")
    t_early, i_early = early.spikes("n")
    assert t_early.size > 20
    np.testing.assert_array_equal(i_late, i_early)
    assert late.start_step == absolute and late.t_start == absolute * DT
    # On the step grid to a millionth of a step (a float32 time is 64 steps coarse at 2**31).
    assert np.max(np.abs(t_late / DT - np.rint(t_late / DT))) < 1e-6
    np.testing.assert_array_equal(np.rint(t_late / DT) - absolute, np.rint(t_early / DT) - small)
    assert int(absolute_step(late.state.step, late.state.epoch)) == absolute + 100
    assert 0 <= int(late.state.step) < EPOCH_STEPS
    for a, b in zip(jax.tree.leaves(late.state.populations), jax.tree.leaves(early.state.populations),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)


def test_random_draws_never_repeat_after_a_rollover():
    """Step s of epoch 1 draws other Poisson counts than step s of epoch 0."""
    net = bs.Network([bs.Population("p", 2000, bs.PoissonSource(200.0))], dt=DT)
    state = net.init(jax.random.key(0))
    first = bs.simulate(net, n_steps=5, state=at_step(state, 17), record=(bs.SpikeRaster(),))
    again = bs.simulate(net, n_steps=5, state=at_step(state, EPOCH_STEPS + 17),
                        record=(bs.SpikeRaster(),))  # fmt: skip
    same = bs.simulate(net, n_steps=5, state=at_step(state, 17), record=(bs.SpikeRaster(),))
    a, b, c = (r.recordings[0]["p"] for r in (first, again, same))
    assert np.asarray(a).sum() > 50
    np.testing.assert_array_equal(a, c)  # the same step draws the same counts
    assert not np.array_equal(a, b)


def test_ring_cursor_is_the_absolute_step_modulo_the_ring_length():
    rng = np.random.default_rng(0)
    for rows in (1, 2, 7, 16, 4097, 65537, 2**20 + 7):
        for _ in range(20):
            epoch, step = int(rng.integers(0, 2**31 - 1)), int(rng.integers(0, EPOCH_STEPS))
            got = int(ring_cursor(jnp.int32(step), jnp.int32(epoch), rows))
            assert got == (epoch * EPOCH_STEPS + step) % rows


def test_schedules_beyond_the_int32_step_range_are_refused():
    with pytest.raises(ValueError, match=r"SpikeGenerator: a spike at 3e\+08 ms is beyond"):
        bs.Network([bs.Population("g", 1, bs.SpikeGenerator([3e8], [0]))], dt=DT)
    lif = bs.LIF()
    with pytest.raises(ValueError, match="StepCurrent: a switch at .* is beyond"):
        bs.Network([bs.Population("n", 1, lif, currents=[bs.StepCurrent([1.0, 3e8], [1.0, 0.0])])],
                   dt=DT)  # fmt: skip
    with pytest.raises(ValueError, match="more than one compiled loop can count"):
        bs.simulate(bs.Network([bs.Population("n", 1, lif)], dt=DT), n_steps=2**31,
                    key=jax.random.key(0))  # fmt: skip


def test_run_long_past_2_to_the_31_steps_stores_exact_times(tmp_path):
    net = recurrent_network()
    warm = bs.simulate(net, 30.0, key=jax.random.key(0)).state
    absolute = 2**31 + 5
    run = bs.run_long(net, 20.0, tmp_path / "run", state=at_step(warm, absolute), chunk=10.0,
                      progress=False)  # fmt: skip
    ref = bs.simulate(net, 20.0, state=at_step(warm, absolute), record=(bs.SpikeRaster(),))
    times, ids = run.spikes("n")
    t_ref, i_ref = ref.spikes("n")
    assert times.size > 10
    # Stored runs report times from their start; the steps on disk are absolute (int64).
    np.testing.assert_array_equal(np.rint(times / DT), np.rint(t_ref / DT) - absolute)
    np.testing.assert_array_equal(ids, i_ref)
    assert run.start_step == absolute
