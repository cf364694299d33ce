"""The Potjans–Diesmann microcircuit of ``brainsim.networks.potjans_diesmann`` in NEST 3.10.

Run with NEST in its own environment (``pip install nest-simulator "numpy<2.4"``); the model's
numbers come from a JSON file that ``benchmarks/pd_vs_nest.py`` writes from brainsim's builder
(``--params``), so both simulators build the same model:

    /work/peers/nest/bin/python benchmarks/peers/nest_potjans_diesmann.py --params pd.json

The model, as brainsim builds it: ``iaf_psc_exp`` cells (C_m, τm, E_L, V_th, V_reset, t_ref and
the 0.5 ms synaptic time constant for both signs; the DC of the in-degree compensation in
``I_e``), initial V normal per population; for every pair of populations a
``fixed_total_number`` of synapses with autapses and multapses, weights normal with relative
SD ``weight_rel_sd`` and redrawn when they change sign, delays normal with relative SD
``delay_rel_sd`` and redrawn below ``dt`` (NEST rounds them to whole steps, as brainsim's
``round_delays``); Poisson background of rate ``bg_rates`` into every neuron (each target of a
``poisson_generator`` gets its own train) with weight ``w_ext`` and the shortest delay, one
step (brainsim's zero delay: a stationary Poisson input's delay is immaterial). dt and the
timing conventions are NEST's, which brainsim's builder follows (``Timing.nest()``).

Single-threaded by default (``--threads``). Timed apart: ``build_s`` (Create + Connect),
``prepare_s`` (``nest.Prepare``: NEST's connection infrastructure, part of the first
``nest.Simulate``), and per run ``run_s`` (``nest.Run`` of ``--duration`` ms). Repeated runs
continue the same network (NEST cannot restart it without rebuilding); the rates of each run
leave out its first ``--transient`` ms. Prints JSON, or with ``--serve`` speaks the protocol
of ``_common.py`` (``READY``, then ``RESULT`` per ``run`` line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as c  # noqa: E402


def build(p: dict, seed: int, threads: int):
    """Create and connect the model of ``p``; returns ``(nest, populations, recorders)``."""
    os.environ.setdefault("PYNEST_QUIET", "1")  # no banner on stdout: it carries JSON
    import nest

    if hasattr(nest, "VerbosityLevel"):  # NEST 3.10; set_verbosity is deprecated there
        nest.verbosity = nest.VerbosityLevel.ERROR
    else:
        nest.set_verbosity("M_ERROR")
    nest.ResetKernel()
    dt = p["dt"]
    nest.resolution = dt
    nest.local_num_threads = threads
    nest.rng_seed = seed + 1  # NEST's seeds start at 1
    cell = p["neuron"]
    params = {k: cell[k] for k in ("C_m", "tau_m", "E_L", "V_th", "V_reset", "t_ref")}
    params.update(tau_syn_ex=cell["tau_syn"], tau_syn_in=cell["tau_syn"])
    pops = [
        nest.Create(
            "iaf_psc_exp",
            n,
            params={**params, "I_e": i_e, "V_m": nest.random.normal(mean=mean, std=std)},
        )
        for n, i_e, mean, std in zip(p["sizes"], p["I_e"], p["v0_mean"], p["v0_std"], strict=True)
    ]
    inf = float("inf")
    for j, post in enumerate(pops):
        for i, pre in enumerate(pops):
            n_syn = p["n_synapses"][j][i]
            if n_syn == 0:
                continue
            w, d = p["weights"][j][i], p["delays"][j][i]
            weight = nest.math.redraw(
                nest.random.normal(mean=w, std=p["weight_rel_sd"] * abs(w)),
                min=0.0 if w > 0 else -inf,
                max=inf if w > 0 else 0.0,
            )
            delay = nest.math.redraw(
                nest.random.normal(mean=d, std=p["delay_rel_sd"] * d), min=dt, max=inf
            )
            nest.Connect(
                pre,
                post,
                {"rule": "fixed_total_number", "N": n_syn, "allow_autapses": True,
                 "allow_multapses": True},
                {"synapse_model": "static_synapse", "weight": weight, "delay": delay},
            )  # fmt: skip
    if p["background"] == "poisson":
        for pop, rate in zip(pops, p["bg_rates"], strict=True):
            gen = nest.Create("poisson_generator", params={"rate": rate})
            nest.Connect(gen, pop, "all_to_all", {"weight": p["w_ext"], "delay": dt})
    recorders = [nest.Create("spike_recorder") for _ in pops]
    for pop, rec in zip(pops, recorders, strict=True):
        nest.Connect(pop, rec)
    return nest, pops, recorders


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", required=True, help="JSON written by pd_vs_nest.py")
    parser.add_argument("--duration", type=float, default=1000.0, help="ms per run")
    parser.add_argument(
        "--transient",
        type=float,
        default=200.0,
        help="ms at the start of each run left out of its rates",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs (without --serve)")
    parser.add_argument(
        "--serve", action="store_true", help="answer `run` lines on stdin with one timed run each"
    )
    args = parser.parse_args(argv)  # fmt: skip
    if not 0 <= args.transient < args.duration:
        parser.error("--transient must lie in [0, --duration)")
    with open(args.params) as f:
        p = json.load(f)

    start = time.perf_counter()
    nest, pops, recorders = build(p, args.seed, args.threads)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    nest.Prepare()
    prepare_s = time.perf_counter() - start
    names = p["populations"]
    window_s = (args.duration - args.transient) * 1e-3

    def run_once(r: int) -> dict:
        t0 = nest.biological_time
        cpu0, start = time.process_time(), time.perf_counter()
        nest.Run(args.duration)
        run_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu0
        rates = {}
        for name, n, rec in zip(names, p["sizes"], recorders, strict=True):
            # Recorders cannot be cleared between nest.Run calls: count this run's window.
            times = rec.get("events")["times"]
            late = sum(1 for t in times if t0 + args.transient < t <= t0 + args.duration)
            rates[name] = late / (n * window_s)
        total = sum(rates[k] * n for k, n in zip(names, p["sizes"], strict=True))
        return {"run_s": run_s, "cpu_s": cpu_s, "rates": rates,
                "rate_hz": total / sum(p["sizes"])}  # fmt: skip

    args.neurons = sum(p["sizes"])  # what serve_or_repeat reports
    info = {
        "simulator": "NEST",
        "version": nest.__version__,
        "build_s": build_s,
        "prepare_s": prepare_s,
        "setup_s": build_s + prepare_s,
        "synapses": nest.num_connections,
        "populations": names,
    }
    code = c.serve_or_repeat(args, info, run_once)
    nest.Cleanup()
    return code


if __name__ == "__main__":
    sys.exit(main())
