"""NEST's timing conventions, and spike-for-spike reference runs of ``iaf_psc_exp`` for
brainsim's tests with ``Timing.nest()``.

Run with NEST 3.10 in its own environment (``pip install nest-simulator``), from the
repository root:

    /tmp/nest/bin/python benchmarks/peers/nest_timing.py

It prints the conventions NEST follows (measured on small probes) as JSON, also written to
``benchmarks/peers/reference/nest_timing.json``, and writes
``benchmarks/peers/reference/nest_timing.npz`` with the runs of
``benchmarks/peers/brian2_timing.py`` rebuilt from NEST models:

* **feed-forward**: the same 200 input trains (each spike one step later, as NEST stamps a
  spike at the end of the step that emits it and cannot emit one at 0 ms), weights, and
  delays of 1–50 steps (NEST's shortest delay is one step: Brian2's zero delays become one
  step) onto 20 ``iaf_psc_exp`` neurons; dt = 0.1 ms, 1 s.
* **refractory**: one ``iaf_psc_exp`` with a bias current per (t_ref, dt) pair, 50 ms.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from brian2_timing import FF, REFRACTORY, feedforward_inputs  # noqa: E402

OUT = HERE / "reference" / "nest_timing.npz"


def _nest(dt: float):
    import nest

    nest.set_verbosity("M_ERROR")
    nest.ResetKernel()
    nest.resolution = dt
    return nest


def _lif_params(p, **extra):
    return dict(
        C_m=p["C_m"], tau_m=p["tau_m"], E_L=p["E_L"], V_th=p["V_th"], V_reset=p["V_reset"],
        V_m=p["E_L"], **extra,
    )  # fmt: skip


def run_feedforward(p=FF):
    steps, ids, weights, delays = feedforward_inputs(p)
    delays = np.maximum(delays, 1)
    in_steps = steps + 1  # NEST stamps: the step that emits a spike ends at its time
    nest = _nest(p["dt"])
    out = nest.Create(
        "iaf_psc_exp", p["n_out"],
        params=_lif_params(p, t_ref=p["t_ref"], tau_syn_ex=p["tau_s"], I_e=0.0),
    )  # fmt: skip
    gens = nest.Create("spike_generator", p["n_in"])
    for i, g in enumerate(gens):
        g.spike_times = np.round(in_steps[ids == i] * p["dt"], 10)
    # all_to_all takes (n_post, n_pre) arrays of per-connection values.
    nest.Connect(gens, out, "all_to_all",
                 syn_spec={"weight": weights.T, "delay": delays.T * p["dt"]})  # fmt: skip
    rec = nest.Create("spike_recorder")
    nest.Connect(out, rec)
    nest.Simulate(p["duration_ms"])
    ev = rec.get("events")
    first = min(out.global_id) if hasattr(out.global_id, "__iter__") else out.global_id
    return dict(
        ff_in_steps=in_steps, ff_in_ids=ids, ff_weights=weights, ff_delays=delays,
        ff_out_times=np.asarray(ev["times"], float),
        ff_out_ids=np.asarray(ev["senders"], np.int64) - first,
    )  # fmt: skip


def run_refractory(p=REFRACTORY):
    rows = []
    for dt in p["dts"]:
        for t_ref in p["t_refs"]:
            nest = _nest(dt)
            n = nest.Create("iaf_psc_exp", params=_lif_params(p, t_ref=t_ref, I_e=p["I_e"]))
            rec = nest.Create("spike_recorder")
            nest.Connect(n, rec)
            nest.Simulate(p["duration_ms"])
            for t in rec.get("events")["times"]:
                rows.append((dt, t_ref, t))
    return dict(refractory=np.asarray(rows, float))


def probe_conventions() -> dict:
    facts = {}
    # Spike stamp and delays: a spike generator at 1.0 ms kicks neuron a over threshold;
    # a's spike reaches b with delay d. Multimeters record after each step's update.
    for d_steps in (1, 5):
        nest = _nest(0.1)
        a = nest.Create("iaf_psc_exp", params={"t_ref": 2.0})
        b = nest.Create("iaf_psc_exp")
        sg = nest.Create("spike_generator", params={"spike_times": [1.0]})
        nest.Connect(sg, a, syn_spec={"weight": 1e6, "delay": 0.1})
        nest.Connect(a, b, syn_spec={"weight": 100.0, "delay": d_steps * 0.1})
        mm = nest.Create("multimeter", params={"record_from": ["V_m", "I_syn_ex"], "interval": 0.1})
        nest.Connect(mm, a + b)
        rec = nest.Create("spike_recorder")
        nest.Connect(a, rec)
        nest.Simulate(5.0)
        ev = mm.get("events")
        sel_a, sel_b = ev["senders"] == a.global_id, ev["senders"] == b.global_id
        # The multimeter's time t is the state after the update of step t/dt - 1.
        step_of = lambda t: int(round(t / 0.1)) - 1  # noqa: E731
        facts["generator_spike_at_1.0ms_first_in_I_syn_after_step"] = step_of(
            ev["times"][sel_a][np.argmax(ev["I_syn_ex"][sel_a] > 0)]
        )
        facts["a_crosses_threshold_in_step_11_spike_recorded_at_ms"] = float(rec.get("events")["times"][0])
        v_b = ev["V_m"][sel_b]
        facts[f"a_spike_delay_{d_steps}_steps_first_moves_b_v_in_step"] = step_of(
            ev["times"][sel_b][np.argmax(np.abs(v_b - v_b[0]) > 1e-12)]
        )
    # Refractory with a drive that crosses threshold in one step.
    for t_ref in (0.0, 0.1, 2.0):
        nest = _nest(0.1)
        n = nest.Create("iaf_psc_exp", params={"I_e": 1e7, "t_ref": t_ref})
        rec = nest.Create("spike_recorder")
        nest.Connect(n, rec)
        nest.Simulate(5.0)
        facts[f"saturated_isi_steps_t_ref_{t_ref}"] = int(round(np.diff(rec.get("events")["times"])[0] / 0.1))
    # step_current_generator switching at 1.0 ms, connected with the shortest delay.
    nest = _nest(0.1)
    n = nest.Create("iaf_psc_exp")
    scg = nest.Create("step_current_generator", params={"amplitude_times": [1.0], "amplitude_values": [100.0]})
    nest.Connect(scg, n, syn_spec={"delay": 0.1})
    mm = nest.Create("multimeter", params={"record_from": ["V_m"], "interval": 0.1})
    nest.Connect(mm, n)
    nest.Simulate(3.0)
    ev = mm.get("events")
    facts["step_current_switch_at_1.0ms_first_used_in_step"] = int(round(ev["times"][np.argmax(ev["V_m"] > -70 + 1e-12)] / 0.1)) - 1
    # stdp_synapse: transmitted weight of a presynaptic spike, before or after its update.
    nest = _nest(0.1)
    pre = nest.Create("parrot_neuron")
    post = nest.Create("iaf_psc_exp", params={"tau_syn_ex": 2.0})
    nest.Connect(nest.Create("spike_generator", params={"spike_times": [5.0, 10.0]}), pre,
                 syn_spec={"delay": 0.1})  # fmt: skip
    nest.Connect(nest.Create("spike_generator", params={"spike_times": [7.0]}), post,
                 syn_spec={"weight": 1e6, "delay": 0.1})  # fmt: skip
    nest.CopyModel("stdp_synapse", "stdp_probe", {"lambda": 0.01, "alpha": 1.0, "Wmax": 100.0,
                                                  "mu_plus": 0.0, "mu_minus": 0.0})  # fmt: skip
    nest.Connect(pre, post, syn_spec={"synapse_model": "stdp_probe", "weight": 10.0, "delay": 1.0})
    mm = nest.Create("multimeter", params={"record_from": ["I_syn_ex"], "interval": 0.1})
    nest.Connect(mm, post)
    nest.Simulate(15.0)
    ev = mm.get("events")
    i = np.concatenate([[0.0], ev["I_syn_ex"]])
    jumps = i[1:] - i[:-1] * np.exp(-0.1 / 2.0)
    facts["stdp_second_transmission_pA"] = round(float(jumps[np.flatnonzero(jumps > 1e-6)][-1]), 6)
    facts["stdp_final_weight_pA"] = round(float(nest.GetConnections(pre, post).get("weight")), 6)
    facts.update(_probe_stdp_pairing())
    return facts


def _probe_stdp_pairing() -> dict:
    """Which interval a stdp_synapse with delay d pairs: one presynaptic spike, one driven
    postsynaptic spike 2.1 ms later (recorded times), additive potentiation only (alpha = 0,
    lambda * Wmax = 1), so dw = exp(-dt_eff / 20 ms)."""
    facts = {}
    for delay in (0.1, 2.0):
        nest = _nest(0.1)
        pre = nest.Create("parrot_neuron")
        post = nest.Create("iaf_psc_exp", params={"tau_minus": 20.0, "t_ref": 50.0})
        nest.Connect(nest.Create("spike_generator", params={"spike_times": [10.0, 80.0]}), pre,
                     syn_spec={"delay": 0.1})  # fmt: skip
        nest.Connect(nest.Create("spike_generator", params={"spike_times": [12.0]}), post,
                     syn_spec={"delay": 0.1, "weight": 1e6})  # fmt: skip
        nest.CopyModel("stdp_synapse", f"pairing_{delay}",
                       {"lambda": 0.01, "alpha": 0.0, "Wmax": 100.0, "mu_plus": 0.0,
                        "mu_minus": 0.0, "tau_plus": 20.0})  # fmt: skip
        nest.Connect(pre, post, syn_spec={"synapse_model": f"pairing_{delay}", "weight": 1.0,
                                          "delay": delay})  # fmt: skip
        rec = nest.Create("spike_recorder")
        nest.Connect(pre + post, rec)
        nest.Simulate(100.0)
        ev = rec.get("events")
        t_pre = ev["times"][ev["senders"] == pre.global_id][0]
        t_post = ev["times"][ev["senders"] == post.global_id][0]
        dw = float(nest.GetConnections(pre, post).get("weight")) - 1.0
        facts[f"stdp_delay_{delay:g}ms_recorded_t_post_minus_t_pre"] = round(t_post - t_pre, 6)
        facts[f"stdp_delay_{delay:g}ms_paired_interval"] = round(-20.0 * np.log(dw), 6)
    return facts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    import nest

    facts = probe_conventions()
    data = run_feedforward()
    data.update(run_refractory())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, nest_version=nest.__version__, **data)
    facts["feedforward_output_spikes"] = int(data["ff_out_times"].size)
    facts["nest"] = nest.__version__
    text = json.dumps(facts, indent=1)
    args.out.with_suffix(".json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
