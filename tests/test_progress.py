"""Progress bars (brainsim._progress): a simulate run shown in parts is the unchunked run bit
for bit; the bar reaches the end and reports biological time and speed; nothing is written
when disabled or when stderr is not a terminal; a bar is refused inside a transformation;
run_long and fit draw the same bar."""

from __future__ import annotations

import io
import re

import jax
import numpy as np
import optax
import pytest

import brainsim as bs
import brainsim._progress as progress_module
from brainsim import connect
from brainsim._simulate import default_chunk

DT = 0.1
N_STEPS = 100
RECORD = (bs.SpikeRaster(), bs.SpikeList("N", 500), bs.PopulationRate(),
          bs.StateTrace("N", "v", neurons=[0, 3], every=3))


def network(n=12):
    """Poisson channels onto a recurrent LIF population with multi-step delays, so spikes are
    in flight at every part boundary."""
    lif = bs.LIF(C_m=250.0, tau_m=10.0, E_L=-70.0, V_th=-55.0, V_reset=-70.0, t_ref=2.0,
                 I_e=np.linspace(300.0, 420.0, n))
    rec = {"e": bs.Receptor(bs.ExponentialSynapse(2.0), bs.CurrentBased())}
    pops = [bs.Population("P", 6, bs.PoissonSource(400.0)),
            bs.Population("N", n, lif, receptors=rec,
                          initial={"v": bs.init.Uniform(-70.0, -55.0)})]
    projs = [
        bs.Projection("P", "N", connect.fixed_probability(6, n, 0.5, weight=60.0, delay=1.3,
                                                          seed=1), receptor="e"),
        bs.Projection("N", "N", connect.fixed_probability(n, n, 0.3, weight=-30.0, delay=0.7,
                                                          allow_self=False, seed=2), receptor="e"),
    ]
    return bs.Network(pops, projs, dt=DT)


def _bits(x):
    x = jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
    return np.asarray(x)


def assert_identical(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(_bits(x), _bits(y))


def drawings(text: str) -> list[str]:
    """The successive renderings of a text bar (tqdm redraws in place with ``\\r``)."""
    return [d for d in text.replace("\n", "\r").split("\r") if d]


@pytest.fixture(scope="module")
def reference():
    net = network()
    # Start from a state that has run (spikes in flight, step counter not at 0).
    warm = bs.simulate(net, 5.0, key=jax.random.key(3))
    return net, warm.state, bs.simulate(net, n_steps=N_STEPS, state=warm.state, record=RECORD)


def test_chunked_run_is_the_unchunked_run_bit_for_bit(reference):
    net, start, whole = reference
    assert whole.spikes("N")[0].size >= 5  # a run with activity to compare
    stream = io.StringIO()
    # 13-step parts: 7 parts and a 9-step remainder; the StateTrace samples every 3 steps, so
    # part boundaries fall between its samples.
    shown = bs.simulate(net, n_steps=N_STEPS, state=start, record=RECORD,
                        progress=bs.Progress(every_ms=1.3, file=stream, interval_s=0.0))
    assert_identical(shown, whole)
    # The parts donate their carry to each other, never the caller's state.
    assert not any(x.is_deleted() for x in jax.tree.leaves(start))
    drawn = drawings(stream.getvalue())
    done = [int(m.group(1)) for d in drawn if (m := re.search(r"(\d+)/100 ", d))]
    assert set(done) == {0, 13, 26, 39, 52, 65, 78, 91, 100}
    assert done == sorted(done)  # never goes back
    last = drawn[-1]
    assert last.startswith("simulate: 100%"), last
    # Biological time done/total (s), steps/s and the speed relative to real time.
    assert "t = 0.010/0.010 s" in last and "step/s" in last, last
    assert re.search(r"[\d.e+-]+x real time", last), last


def test_default_parts_are_equal_and_the_result_unchanged(reference):
    net, start, whole = reference
    assert default_chunk(10_000) == 100 and default_chunk(1000) == 10
    assert default_chunk(1200) == 12 and default_chunk(1234) == 12  # 1234 = 2 * 617
    assert default_chunk(10_007) == 100  # a prime: one shorter last part
    assert default_chunk(5) == 1
    stream = io.StringIO()
    shown = bs.simulate(net, n_steps=N_STEPS, state=start, record=RECORD, progress=stream)
    assert_identical(shown, whole)
    assert drawings(stream.getvalue())[-1].startswith("simulate: 100%")


def test_speed_counts_only_the_parts_that_did_not_compile(monkeypatch):
    clock = iter([0.0, 5.0, 6.0])  # construction, a part that compiled (5 s), one that ran (1 s)
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    stream = io.StringIO()
    with progress_module.SimulationBar(bs.Progress(file=stream, interval_s=0.0), 200, 0.1,
                                       desc="x") as bar:
        bar.update(100, compiled=True)
        assert "--x real time" in bar.bar.postfix
        bar.update(200)
        # 100 steps of 0.1 ms = 10 ms of biology in 1000 ms of wall time.
        assert "0.01x real time" in bar.bar.postfix
        assert "t = 0.020/0.020 s" in bar.bar.postfix


def test_disabled_or_not_a_terminal_writes_nothing(reference, capsys):
    net, start, _ = reference
    bs.simulate(net, 1.0, state=start, progress=False)
    bs.simulate(net, 1.0, state=start)  # default: off
    bs.simulate(net, 1.0, state=start, progress=None)  # auto: stderr here is not a terminal
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    assert progress_module.resolve(None, "x") is None and progress_module.resolve(False, "x") is None


def test_progress_refused_inside_a_transformation(reference):
    net, _, _ = reference
    keys = jax.random.split(jax.random.key(0), 2)
    with pytest.raises(ValueError, match="`progress`.*outside"):
        jax.vmap(lambda k: bs.simulate(net, 1.0, key=k, progress=True).state.step)(keys)
    with pytest.raises(ValueError, match="`progress`.*outside"):
        jax.jit(lambda k: bs.simulate(net, 1.0, key=k, progress=True).state.step)(keys[0])
    # Without a bar the same transformation runs.
    jax.vmap(lambda k: bs.simulate(net, 1.0, key=k, progress=False).state.step)(keys)


def test_bad_progress_values_are_named(reference):
    net, start, _ = reference
    with pytest.raises(TypeError, match="`progress`.*str"):
        bs.simulate(net, 1.0, state=start, progress="yes")
    with pytest.raises(ValueError, match="progress.every_ms"):
        bs.simulate(net, 1.0, state=start, progress=bs.Progress(every_ms=0.25))


@pytest.fixture
def bars(monkeypatch):
    """Every bar any driver opens, as ``(desc, total, n at close)``."""
    opened = []
    base = progress_module._tqdm_class(bs.Progress(file=io.StringIO()))

    class Recording(base):
        def close(self):
            if not self.disable:  # close() disables the bar: a second call does nothing
                opened.append((self.desc, self.total, self.n))
            super().close()

    monkeypatch.setattr(progress_module, "_tqdm_class", lambda progress: Recording)
    return lambda: opened


def test_run_long_and_fit_draw_the_same_bar(reference, bars, tmp_path):
    net, start, _ = reference
    sink = io.StringIO()
    bs.simulate(net, 2.0, state=start, progress=sink)
    bs.run_long(net, 3.0, tmp_path / "run", state=start, chunk=1.0, progress=sink)
    fit_stream = io.StringIO()
    bs.fit.fit(lambda u, b, k: ((u - 1.0) ** 2).sum(), np.zeros(2, np.float32),
               optax.adam(0.1), steps=7, progress=fit_stream)
    assert bars() == [("simulate", 20, 20), ("run_long", 30, 30), ("fit", 7, 7)]
    last = drawings(fit_stream.getvalue())[-1]
    assert last.startswith("fit: 100%") and "7/7" in last and "best" in last, last


def test_auto_shows_a_bar_only_on_a_terminal(monkeypatch):
    stream = io.StringIO()
    assert progress_module.resolve(True, "x") == bs.Progress()
    assert progress_module.resolve(stream, "x") == bs.Progress(file=stream)
    assert progress_module.resolve(None, "x") is None  # stderr is captured here
    monkeypatch.setattr(progress_module, "_is_terminal", lambda s: True)
    assert progress_module.resolve(None, "x") == bs.Progress()
