"""Brian2's timing conventions, and spike-for-spike reference runs for brainsim's tests.

Run with Brian2 2.9 in its own environment (benchmarks/peers/README.md), from the repository
root:

    /tmp/peers/bin/python benchmarks/peers/brian2_timing.py

It prints the conventions Brian2 follows (measured on small probes, not assumed) as JSON, also
written to ``benchmarks/peers/reference/brian2_timing.json``, and writes
``benchmarks/peers/reference/brian2_timing.npz`` with two reference runs that
``tests/test_timing_conventions.py`` holds brainsim to:

* **feed-forward**: 200 fixed input spike trains (Poisson, 20 Hz, drawn here with NumPy and
  stored) onto 20 LIF neurons through exponential current synapses with per-synapse weights
  and delays of 0–50 steps; exact integration, dt = 0.1 ms, 1 s, float64.
* **refractory**: one driven LIF per (t_ref, dt) pair, its spike steps over 50 ms.

Brian2 runs in runtime mode with the NumPy code generator (no compiler needed; the networks
are small). Every model is the one brainsim builds in the test: LIF
``dv/dt = (E_L - v)/tau_m + I/C_m (unless refractory)``, threshold ``v >= V_th``, reset
``v = V_reset``, current synapses ``dI/dt = -I/tau_s`` with ``on_pre: I += w``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "reference" / "brian2_timing.npz"

# The feed-forward network (units ms, mV, pF, pA).
FF = dict(
    n_in=200, n_out=20, rate_hz=20.0, duration_ms=1000.0, dt=0.1, max_delay_steps=50,
    C_m=250.0, tau_m=20.0, E_L=-70.0, V_th=-55.0, V_reset=-70.0, t_ref=2.0, tau_s=5.0,
    w_max=20.0, seed=2026,
)  # fmt: skip
# The refractory probes: LIF with a bias current that reaches threshold in about 1.9 ms from
# reset, so both the clamp and the integration after it decide each spike time.
REFRACTORY = dict(
    C_m=250.0, tau_m=10.0, E_L=-70.0, V_th=-55.0, V_reset=-70.0, I_e=2500.0, duration_ms=50.0,
    t_refs=(0.0, 0.1, 0.5, 1.0, 2.0, 2.05, 3.3), dts=(0.05, 0.1, 0.2),
)  # fmt: skip


def feedforward_inputs(p=FF):
    """Input spike trains ``(times_ms, ids)`` on the step grid, weights and delays (steps)."""
    rng = np.random.default_rng(p["seed"])
    n_steps = int(round(p["duration_ms"] / p["dt"]))
    prob = p["rate_hz"] * p["dt"] * 1e-3
    hits = rng.random((n_steps, p["n_in"])) < prob
    steps, ids = np.nonzero(hits)
    weights = rng.uniform(0.0, p["w_max"], (p["n_in"], p["n_out"]))
    delays = rng.integers(0, p["max_delay_steps"] + 1, (p["n_in"], p["n_out"]))
    return steps, ids, weights, delays


def _b2():
    import brian2 as b2

    b2.prefs.codegen.target = "numpy"
    b2.prefs.core.default_float_dtype = np.float64
    return b2


def _lif_equations(current: bool) -> str:
    eq = "dv/dt = (E_L - v)/tau_m + (I + I_e)/C_m : volt (unless refractory)\n"
    eq += "dI/dt = -I/tau_s : amp\n" if current else "I : amp\n"
    return eq + "I_e : amp\n"


def run_feedforward(p=FF):
    b2 = _b2()
    from brian2 import ms, mV, pA, pF

    b2.start_scope()
    b2.defaultclock.dt = p["dt"] * ms
    steps, ids, weights, delays = feedforward_inputs(p)
    ns = dict(C_m=p["C_m"] * pF, tau_m=p["tau_m"] * ms, E_L=p["E_L"] * mV, tau_s=p["tau_s"] * ms)
    src = b2.SpikeGeneratorGroup(p["n_in"], ids, steps * p["dt"] * ms)
    out = b2.NeuronGroup(
        p["n_out"], _lif_equations(True), threshold="v >= V_th", reset="v = V_reset",
        refractory=p["t_ref"] * ms, method="exact",
        namespace=dict(ns, V_th=p["V_th"] * mV, V_reset=p["V_reset"] * mV),
    )  # fmt: skip
    out.v = p["E_L"] * mV
    syn = b2.Synapses(src, out, "w : amp", on_pre="I += w")
    pre, post = np.meshgrid(np.arange(p["n_in"]), np.arange(p["n_out"]), indexing="ij")
    syn.connect(i=pre.ravel(), j=post.ravel())
    syn.w = weights.ravel() * pA
    syn.delay = delays.ravel() * p["dt"] * ms
    mon = b2.SpikeMonitor(out)
    b2.run(p["duration_ms"] * ms)
    out_steps = np.rint(np.asarray(mon.t / ms) / p["dt"]).astype(np.int64)
    return dict(
        ff_in_steps=steps, ff_in_ids=ids, ff_weights=weights, ff_delays=delays,
        ff_out_steps=out_steps, ff_out_ids=np.asarray(mon.i, np.int64),
    )  # fmt: skip


def run_refractory(p=REFRACTORY):
    b2 = _b2()
    from brian2 import ms, mV, pA, pF

    rows = []
    for dt in p["dts"]:
        for t_ref in p["t_refs"]:
            b2.start_scope()
            b2.defaultclock.dt = dt * ms
            g = b2.NeuronGroup(
                1, _lif_equations(False), threshold="v >= V_th", reset="v = V_reset",
                refractory=t_ref * ms, method="exact",
                namespace=dict(C_m=p["C_m"] * pF, tau_m=p["tau_m"] * ms, E_L=p["E_L"] * mV,
                               V_th=p["V_th"] * mV, V_reset=p["V_reset"] * mV),
            )  # fmt: skip
            g.v = p["E_L"] * mV
            g.I_e = p["I_e"] * pA
            mon = b2.SpikeMonitor(g)
            b2.run(p["duration_ms"] * ms)
            for s in np.rint(np.asarray(mon.t / ms) / dt).astype(np.int64):
                rows.append((dt, t_ref, s))
    table = np.asarray(rows, float)
    return dict(refractory=table)


def probe_conventions() -> dict:
    """Small runs that show each convention (numbers are steps of dt = 0.1 ms)."""
    b2 = _b2()
    from brian2 import ms, mV

    b2.start_scope()
    b2.defaultclock.dt = 0.1 * ms
    facts = {}

    # Spike stamp: v rises 1 mV per step from 0 and crosses 0.95 mV during step 9 (after its
    # update v = 1.0 mV); the monitor reports the spike at step ... .
    g = b2.NeuronGroup(1, "dv/dt = 1*mV/ms : volt", threshold="v >= 0.95*mV", reset="v = 0*mV",
                       method="euler")  # fmt: skip
    mon = b2.SpikeMonitor(g)
    b2.run(1.5 * ms)
    facts["spike_of_the_update_over_step_9_is_recorded_at_step"] = int(round(mon.t[0] / (0.1 * ms)))

    # First effect of a spike with delay d: a source spike at step 10; the target's v (a pure
    # integrator of an exponential current) is first non-zero after the update of step ...
    for d_steps in (0, 1, 5):
        b2.start_scope()
        b2.defaultclock.dt = 0.1 * ms
        src = b2.SpikeGeneratorGroup(1, [0], [1.0] * ms)
        tgt = b2.NeuronGroup(1, "dv/dt = I/ms : volt\ndI/dt = -I/(5*ms) : volt", method="euler")
        syn = b2.Synapses(src, tgt, on_pre="I += 1*mV", delay=d_steps * 0.1 * ms)
        syn.connect()
        st = b2.StateMonitor(tgt, "v", record=0, when="end")
        b2.run(3 * ms)
        first = int(np.argmax(np.asarray(st.v[0]) > 0))
        facts[f"spike_at_step_10_delay_{d_steps}_steps_first_moves_v_in_step"] = first

    # Refractory: with a drive that crosses threshold in one step, the interval between spikes.
    for t_ref in (0.0, 0.1, 2.0):
        b2.start_scope()
        b2.defaultclock.dt = 0.1 * ms
        g = b2.NeuronGroup(1, "dv/dt = (20*mV - v)/(0.001*ms) : volt (unless refractory)",
                           threshold="v >= 10*mV", reset="v = 0*mV", refractory=t_ref * ms,
                           method="exact")  # fmt: skip
        mon = b2.SpikeMonitor(g)
        b2.run(5 * ms)
        isi = np.diff(np.rint(np.asarray(mon.t / ms) / 0.1)).astype(int)
        facts[f"saturated_isi_steps_t_ref_{t_ref}"] = int(isi[0])

    # A TimedArray switching at T = 1 ms: the first step integrated with the new value.
    b2.start_scope()
    b2.defaultclock.dt = 0.1 * ms
    ta = b2.TimedArray([0, 1] * mV, dt=1 * ms)
    g = b2.NeuronGroup(1, "dv/dt = ta(t)/ms : volt", method="euler", namespace={"ta": ta})
    st = b2.StateMonitor(g, "v", record=0, when="end")
    b2.run(2 * ms)
    facts["timed_array_switch_at_step_10_first_used_in_step"] = int(np.argmax(st.v[0] > 0))

    # Plastic synapse written as in Brian2's STDP example (on_pre: I += w first). Pre spikes at
    # 0 and 10 ms, one post spike at 5 ms (driven by a separate input): the jump of I at 10 ms
    # is the weight before or after that pre spike's own depression.
    facts.update(_probe_stdp(b2, delay_ms=0.0, same_step=False))
    # A pre and a post spike in the same step: potentiation (pre counted first) or depression.
    facts.update(_probe_stdp(b2, delay_ms=0.0, same_step=True))
    # With a delay, on_pre (transmission and plasticity) runs when the spike arrives.
    facts.update(_probe_stdp(b2, delay_ms=2.0, same_step=False))
    return facts


def _probe_stdp(b2, *, delay_ms: float, same_step: bool) -> dict:
    from brian2 import ms

    b2.start_scope()
    b2.defaultclock.dt = 0.1 * ms
    t_post = 10.0 if same_step else 5.0
    pre = b2.SpikeGeneratorGroup(1, [0, 0], [0.0, 10.0] * ms)
    kick = b2.SpikeGeneratorGroup(1, [0], [t_post - 0.1] * ms)
    tgt = b2.NeuronGroup(1, "dv/dt = -v/(10*ms) : 1\ndI/dt = -I/(5*ms) : 1", threshold="v > 1",
                         reset="v = 0", method="exact")  # fmt: skip
    drive = b2.Synapses(kick, tgt, on_pre="v += 2")
    drive.connect()
    traces = "w : 1\ndApre/dt = -Apre/(20*ms) : 1 (event-driven)\n"
    traces += "dApost/dt = -Apost/(20*ms) : 1 (event-driven)"
    plastic = b2.Synapses(pre, tgt, traces, on_pre="I += w\nApre += 0.1\nw = w + Apost",
                          on_post="Apost -= 0.2\nw = w + Apre", delay=delay_ms * ms)  # fmt: skip
    plastic.connect()
    plastic.w = 1.0
    st = b2.StateMonitor(tgt, "I", record=0, when="end")
    spikes = b2.SpikeMonitor(tgt)
    b2.run(15 * ms)
    # I after each step's update; a transmission in step k adds w to it.
    i = np.concatenate([[0.0], np.asarray(st.I[0])])
    jumps = i[1:] - i[:-1] * np.exp(-0.1 / 5.0)
    k = np.flatnonzero(jumps > 1e-9)
    tag = f"stdp_delay_{delay_ms:g}ms" + ("_same_step" if same_step else "")
    return {
        f"{tag}_post_spike_steps": np.rint(np.asarray(spikes.t / ms) / 0.1).astype(int).tolist(),
        f"{tag}_transmission_steps": k.tolist(),
        f"{tag}_transmitted": [round(float(jumps[j]), 6) for j in k],
        f"{tag}_final_w": round(float(plastic.w[0]), 6),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    import brian2

    facts = probe_conventions()
    data = run_feedforward()
    data.update(run_refractory())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out, brian2_version=brian2.__version__, ff_params=json.dumps(FF),
        refractory_params=json.dumps(REFRACTORY), **data,
    )  # fmt: skip
    facts["feedforward_output_spikes"] = int(data["ff_out_steps"].size)
    facts["brian2"] = brian2.__version__
    text = json.dumps(facts, indent=1)
    args.out.with_suffix(".json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
