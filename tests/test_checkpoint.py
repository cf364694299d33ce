"""Checkpoints: a resumed run equals an uninterrupted one bit for bit; writes are atomic; a
checkpoint of another format, brainsim version or network, or a corrupted or truncated one,
is refused with an error naming the file and the problem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brainsim as bs
import brainsim._checkpoint as ckpt_module
from brainsim import connect

DT = 0.1


def network(n=20, w_exc=60.0):
    """Poisson channels onto a recurrent LIF population. Both projections have multi-step
    delays (so spikes are in flight in the ring buffers at any cut) and the recurrent one has
    short-term plasticity (state beyond neurons and synapses)."""
    lif = bs.LIF(C_m=250.0, tau_m=10.0, E_L=-70.0, V_th=-55.0, V_reset=-70.0, t_ref=2.0,
                 I_e=np.linspace(300.0, 420.0, n))
    rec = {"e": bs.Receptor(bs.ExponentialSynapse(2.0), bs.CurrentBased())}
    pops = [bs.Population("P", 8, bs.PoissonSource(300.0)),
            bs.Population("N", n, lif, receptors=rec, initial={"v": bs.init.Uniform(-70.0, -55.0)})]
    projs = [
        bs.Projection("P", "N", connect.fixed_probability(8, n, 0.5, weight=w_exc, delay=1.3,
                                                          seed=1), receptor="e"),
        bs.Projection("N", "N", connect.fixed_probability(n, n, 0.3, weight=-30.0, delay=0.7,
                                                          allow_self=False, seed=2),
                      receptor="e", stp=bs.TsodyksMarkram(U=0.3, tau_rec=100.0, tau_fac=50.0)),
    ]
    return bs.Network(pops, projs, dt=DT)


def leaves_equal(a, b) -> bool:
    """Bitwise equality of two PyTrees (PRNG keys compared by their key data)."""
    def raw(x):
        x = jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x
        return np.asarray(x)

    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return (jax.tree.structure(a) == jax.tree.structure(b) and len(la) == len(lb)
            and all(raw(x).dtype == raw(y).dtype and raw(x).tobytes() == raw(y).tobytes()
                    for x, y in zip(la, lb, strict=True)))


RECORD = (bs.SpikeRaster(), bs.SpikeList("N", 4000))
N1 = N2 = 300  # equal halves: the continued run reuses the first half's compiled scan


@pytest.fixture(scope="module")
def runs():
    net = network()
    key = jax.random.key(3)
    whole = bs.simulate(net, n_steps=N1 + N2, key=key, record=RECORD)
    first = bs.simulate(net, n_steps=N1, key=key, record=RECORD)
    return net, whole, first


def test_resume_from_checkpoint_equals_uninterrupted_run(runs, tmp_path):
    net, whole, first = runs
    ring = first.state.receptors["N"]["e"].ring
    # The property is only tested if something is in flight and the sources were active.
    assert np.count_nonzero(np.asarray(ring)) > 0
    assert len(first.spikes("P")[0]) > 0

    path = bs.save_checkpoint(tmp_path / "ckpt.npz", net, first.state, metadata={"cut": N1})
    ckpt = bs.load_checkpoint(path, network())  # a freshly built, equal network
    assert ckpt.metadata == {"cut": N1}
    assert leaves_equal(ckpt.state, first.state)
    second = bs.simulate(ckpt.network, n_steps=N2, state=ckpt.state, record=RECORD)
    assert leaves_equal(second.state, whole.state)
    for pop in ("P", "N"):
        t_whole, id_whole = whole.spikes(pop)
        t1, i1 = first.spikes(pop)
        t2, i2 = second.spikes(pop)
        assert np.array_equal(np.rint(np.concatenate([t1, t2]) / DT), np.rint(t_whole / DT))
        assert np.array_equal(np.concatenate([i1, i2]), id_whole)
    # The SpikeList of the continued run starts its (step, id) entries at the cut: together
    # with the first part it is the uninterrupted list.
    sl = [r for m, r in zip(whole.monitors, whole.recordings, strict=True)
          if isinstance(m, bs.SpikeList)][0]
    s1 = [r for m, r in zip(first.monitors, first.recordings, strict=True)
          if isinstance(m, bs.SpikeList)][0]
    s2 = [r for m, r in zip(second.monitors, second.recordings, strict=True)
          if isinstance(m, bs.SpikeList)][0]
    n1, n2 = int(s1.total), int(s2.total)
    assert n1 + n2 == int(sl.total) > 0
    assert np.array_equal(np.concatenate([np.asarray(s1.steps[:n1]), np.asarray(s2.steps[:n2]) + N1]),
                          np.asarray(sl.steps[: n1 + n2]))
    assert np.array_equal(np.concatenate([np.asarray(s1.ids[:n1]), np.asarray(s2.ids[:n2])]),
                          np.asarray(sl.ids[: n1 + n2]))


def test_resume_in_a_new_process_is_bitwise_equal(runs, tmp_path):
    """The real use: the checkpoint is loaded by another Python process."""
    net, whole, first = runs
    path = bs.save_checkpoint(tmp_path / "ckpt.npz", net, first.state)
    out = tmp_path / "second.npz"
    script = textwrap.dedent(f"""
        import sys, numpy as np, jax
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import brainsim as bs
        from test_checkpoint import network, RECORD, N2
        ck = bs.load_checkpoint({str(path)!r}, network())
        r = bs.simulate(ck.network, n_steps=N2, state=ck.state, record=RECORD)
        bs.save_checkpoint({str(out)!r}, ck.network, r.state,
                           metadata={{"ids": r.spikes("N")[1].tolist()}})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    ck = bs.load_checkpoint(out, net)
    assert leaves_equal(ck.state, whole.state)
    t1, i1 = first.spikes("N")
    assert np.array_equal(np.concatenate([i1, ck.metadata["ids"]]), whole.spikes("N")[1])


def test_saved_network_values_are_restored(runs, tmp_path):
    """The checkpoint holds the network's values: loading it into a network of the same
    structure with other weights gives back the saved weights, with the original (weak) types,
    so the compiled step is reused."""
    net, _, first = runs
    path = bs.save_checkpoint(tmp_path / "ckpt.npz", net, first.state)
    other = network(w_exc=99.0)
    ck = bs.load_checkpoint(path, other)
    assert ck.network is not other
    assert leaves_equal(ck.network, net)
    assert [x.weak_type for x in jax.tree.leaves(ck.network)] == [
        x.weak_type for x in jax.tree.leaves(net)]
    same = bs.load_checkpoint(path, network())
    assert leaves_equal(same.network, net)


def test_float64_state_round_trips(x64, tmp_path):
    net = network(n=6)
    state = net.init(jax.random.key(0))
    assert state.populations["N"].v.dtype == jnp.float64
    path = bs.save_checkpoint(tmp_path / "c.npz", net, state)
    assert leaves_equal(bs.load_checkpoint(path, net).state, state)


# ------------------------------------------------------------------------------ atomic writes


def test_crash_during_write_keeps_the_previous_checkpoint(runs, tmp_path, monkeypatch):
    net, whole, first = runs
    path = tmp_path / "ckpt.npz"
    bs.save_checkpoint(path, net, first.state, metadata={"version": "old"})
    before = path.read_bytes()

    real_savez = np.savez

    def crash(f, **members):  # half of the archive reaches the disk, then the process dies
        real_savez(f, **members)
        f.truncate(f.tell() // 2)
        raise KeyboardInterrupt("killed during the write")

    monkeypatch.setattr(ckpt_module.np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        bs.save_checkpoint(path, net, whole.state, metadata={"version": "new"})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert bs.load_checkpoint(path, net).metadata == {"version": "old"}
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]  # no partial file left behind

    bs.save_checkpoint(path, net, whole.state, metadata={"version": "new"})
    assert bs.load_checkpoint(path, net).metadata == {"version": "new"}


def test_crash_before_rename_leaves_target_untouched(runs, tmp_path, monkeypatch):
    net, _, first = runs
    path = tmp_path / "ckpt.npz"

    def no_rename(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_module.os, "replace", no_rename)
    with pytest.raises(OSError, match="disk full"):
        bs.save_checkpoint(path, net, first.state)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------ refusals


def _rewrite(path: Path, header_update=None, leaf_update=None):
    """Rewrite a checkpoint with a changed header field or leaf (keeping the old checksum)."""
    with np.load(path) as z:
        members = {k: z[k] for k in z.files}
    header = json.loads(members["header"].tobytes())
    header.update(header_update or {})
    members["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    for k, fn in (leaf_update or {}).items():
        members[k] = fn(members[k])
    with open(path, "wb") as f:
        np.savez(f, **members)


@pytest.fixture
def saved(runs, tmp_path):
    net, _, first = runs
    return net, bs.save_checkpoint(tmp_path / "ckpt.npz", net, first.state)


def test_other_format_version_is_refused(saved):
    net, path = saved
    _rewrite(path, {"format_version": 99})
    with pytest.raises(bs.CheckpointError, match=r"ckpt\.npz.*format version 99"):
        bs.load_checkpoint(path, net)


def test_other_brainsim_version_is_refused_unless_allowed(saved, monkeypatch):
    net, path = saved
    monkeypatch.setattr(ckpt_module, "__version__", "9.9.9")
    with pytest.raises(bs.CheckpointError, match=r"ckpt\.npz.*written by brainsim .*9\.9\.9"):
        bs.load_checkpoint(path, net)
    assert bs.load_checkpoint(path, net, check_version=False).brainsim_version != "9.9.9"


@pytest.mark.parametrize("kind", ["truncated", "flipped byte", "empty"])
def test_corrupted_file_is_refused(saved, kind):
    net, path = saved
    data = bytearray(path.read_bytes())
    if kind == "truncated":
        data = data[: len(data) * 2 // 3]
    elif kind == "flipped byte":
        data[len(data) // 2] ^= 0xFF
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    with pytest.raises(bs.CheckpointError, match=r"ckpt\.npz.*(corrupted|truncated)"):
        bs.load_checkpoint(path, net)


def test_changed_values_fail_the_checksum(saved):
    """A well-formed archive whose data changed after writing (zip CRCs recomputed)."""
    net, path = saved
    _rewrite(path, leaf_update={"s2": lambda a: a + np.ones_like(a)})
    with pytest.raises(bs.CheckpointError, match=r"ckpt\.npz.*checksum does not match"):
        bs.load_checkpoint(path, net)


def test_other_network_is_refused(saved):
    _, path = saved
    with pytest.raises(bs.CheckpointError, match=r"(?s)ckpt\.npz.*does not match this network.*'N', 21"):
        bs.load_checkpoint(path, network(n=21))


def test_other_dtype_of_state_is_refused(runs, saved, x64):
    net, path = saved
    # A float64 template for a float32 checkpoint: the leaves' dtypes differ.
    like = jax.eval_shape(lambda: net.init(jax.random.key(0), dtype=jnp.float64))
    with pytest.raises(bs.CheckpointError, match=r"does not match this network's state: leaf "):
        bs.load_checkpoint(path, net, like=like)


def test_not_a_checkpoint(tmp_path, runs):
    net = runs[0]
    np.savez(tmp_path / "x.npz", a=np.zeros(3))
    with pytest.raises(bs.CheckpointError, match=r"x\.npz.* not a brainsim checkpoint"):
        bs.load_checkpoint(tmp_path / "x.npz", net)
    with pytest.raises(FileNotFoundError, match="missing"):
        bs.load_checkpoint(tmp_path / "missing.npz", net)


def test_plasticity_state_round_trips(tmp_path):
    """Long-term plasticity keeps its weights and traces in ``state.plasticity``; the
    checkpoint stores whatever the state holds."""
    plasticity = getattr(bs, "plasticity", None)
    if plasticity is None or not hasattr(plasticity, "PairSTDP"):
        pytest.skip("brainsim.plasticity is not available")

    def build():
        base = network(n=6)
        projs = (base.projections[0], bs.Projection(
            "P", "N", connect.fixed_probability(8, 6, 0.5, weight=1.0, delay=0.5, seed=4),
            receptor="e", plasticity=plasticity.PairSTDP(), name="plastic"))
        return bs.Network(base.populations, projs, dt=DT)

    net = build()
    state = net.init(jax.random.key(5))
    assert jax.tree.leaves(state.plasticity)  # there is plasticity state to save
    # Distinct values, so that a mix-up of leaves would show.
    state = state._replace(plasticity=jax.tree.map(
        lambda x: x + jnp.arange(x.size, dtype=x.dtype).reshape(x.shape)
        if jnp.issubdtype(x.dtype, jnp.floating) else x, state.plasticity))
    path = bs.save_checkpoint(tmp_path / "p.npz", net, state)
    assert leaves_equal(bs.load_checkpoint(path, build()).state, state)



def _tamper(path: Path, edit):
    """Rewrite a checkpoint after ``edit(members, header)`` with a recomputed checksum: a file
    edited on purpose, which the checksum alone does not catch."""
    with np.load(path) as z:
        members = {k: z[k] for k in z.files}
    header = json.loads(members.pop("header").tobytes())
    edit(members, header)
    header.pop("checksum")
    arrays = [members[f"{p}{i}"] for p in "ns" for i in range(ckpt_module._count(members, p))]
    header["checksum"] = ckpt_module._checksum(header, arrays)
    with open(path, "wb") as f:
        np.savez(f, header=np.frombuffer(json.dumps(header).encode(), np.uint8), **members)


@pytest.mark.parametrize(("edit", "message"), [
    # s3 is .populations['N'].v, float32 (20,); s2 the PRNG key, stored as uint32 (2,) (s0 and
    # s1 are the step and its epoch).
    (lambda m, h: m.update(s3=m["s3"][:-1]),
     r"state leaf .populations\['N'\].v is stored with shape \(19,\) and dtype <f4 but its "
     r"header gives shape \(20,\) and dtype <f4"),
    (lambda m, h: m.update(s3=m["s3"].astype(np.float64)),
     r"is stored with shape \(20,\) and dtype <f8 but its header gives shape \(20,\) and "
     r"dtype <f4"),
    (lambda m, h: m.update(s2=m["s2"][:1]),
     r"state leaf .key is stored with shape \(1,\) and dtype <u4 but its header gives shape "
     r"\(2,\)"),
    (lambda m, h: m.update({f"s{len(h['state']['leaves'])}": np.zeros(1)}),
     r"its header lists \d+ state arrays but it holds \d+"),
    (lambda m, h: h["state"].pop("leaves"), r"its header does not describe the state"),
    (lambda m, h: h["state"]["leaves"][2].update(key_impl="nonsense"),
     r"state leaf .key is stored with shape \(2,\) and dtype <u4 but its header gives shape "
     r"None"),
], ids=["truncated leaf", "other dtype", "truncated key", "extra array", "no leaves",
        "unknown key type"])
def test_tampered_checkpoint_is_refused_before_use(saved, edit, message):
    net, path = saved
    _tamper(path, edit)
    with pytest.raises(bs.CheckpointError,
                       match=r"ckpt\.npz' is damaged or was tampered with: .*" + message):
        bs.load_checkpoint(path, net)
