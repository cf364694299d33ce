"""Standard benchmark networks (REFERENCES: Brette et al. 2007 / Vogels & Abbott 2005).

Each builder returns a :class:`~brainsim.Network`; the configs in ``configs/`` and the
``brainsim run`` CLI use them, and so can notebooks.
"""

from __future__ import annotations

from . import connect
from ._network import Network, Population, Projection, Receptor
from ._neurons.lif import LIF
from ._propagation import AbstractLayout
from ._synapses.kinetics import ExponentialSynapse
from ._synapses.outputs import ConductanceBased, CurrentBased
from .init import Uniform


def _ei_projections(n_exc, n_inh, p, w_exc, w_inh, delay, seed, layout):
    projections = []
    for i, (pre, n_pre, w, receptor) in enumerate(
        (("E", n_exc, w_exc, "exc"), ("I", n_inh, w_inh, "inh"))
    ):
        for j, (post, n_post) in enumerate((("E", n_exc), ("I", n_inh))):
            edges = connect.fixed_probability(
                n_pre, n_post, p, weight=w, delay=delay, seed=[seed, i, j]
            )
            projections.append(Projection(pre, post, edges, receptor=receptor, layout=layout))
    return projections


def coba(
    *,
    n_neurons: int = 4000,
    p: float = 0.02,
    w_exc: float = 6.0,
    w_inh: float = 67.0,
    drive: float = 200.0,
    delay: float | None = None,
    dt: float = 0.1,
    seed: int = 0,
    layout: AbstractLayout | None = None,
) -> Network:
    """Vogels–Abbott conductance-based network (the Brian2/BrainPy COBA benchmark).

    80 % excitatory, 20 % inhibitory LIF neurons (C = 200 pF, g_L = 10 nS, τm = 20 ms,
    E_L = V_reset = −60 mV, V_th = −50 mV, 5 ms refractory), exponential conductances
    (τe = 5 ms, E_e = 0 mV; τi = 10 ms, E_i = −80 mV), connection probability ``p``, weights
    ``w_exc`` = 6 nS and ``w_inh`` = 67 nS, a constant drive current ``drive`` pA (200 pA =
    20 mV × g_L, BrainPy's variant), initial V uniform in [V_reset, V_th].
    ``delay=None`` is the shortest delay (one step).
    """
    n_exc = int(round(0.8 * n_neurons))
    n_inh = n_neurons - n_exc
    lif = LIF(C_m=200.0, tau_m=20.0, E_L=-60.0, V_th=-50.0, V_reset=-60.0, t_ref=5.0, I_e=drive)
    receptors = {
        "exc": Receptor(ExponentialSynapse(5.0), ConductanceBased(0.0)),
        "inh": Receptor(ExponentialSynapse(10.0), ConductanceBased(-80.0)),
    }
    initial = {"v": Uniform(-60.0, -50.0)}
    pops = [
        Population("E", n_exc, lif, receptors=receptors, initial=initial),
        Population("I", n_inh, lif, receptors=receptors, initial=initial),
    ]
    return Network(pops, _ei_projections(n_exc, n_inh, p, w_exc, w_inh, delay, seed, layout), dt=dt)


def cuba(
    *,
    n_neurons: int = 4000,
    p: float = 0.02,
    w_exc: float = 16.2,
    w_inh: float = -90.0,
    delay: float | None = None,
    dt: float = 0.1,
    seed: int = 0,
    layout: AbstractLayout | None = None,
) -> Network:
    """Current-based network of Brian2's CUBA example (self-driven, E_L = −49 mV).

    LIF with C = 200 pF, τm = 20 ms (g_L = 10 nS), E_L = −49 mV, V_th = −50 mV,
    V_reset = −60 mV, 5 ms refractory; exponential currents τe = 5 ms, τi = 10 ms with jumps
    ``w_exc`` = 16.2 pA and ``w_inh`` = −90 pA (Brian2's 1.62 mV and −9 mV times g_L).
    """
    n_exc = int(round(0.8 * n_neurons))
    n_inh = n_neurons - n_exc
    lif = LIF(C_m=200.0, tau_m=20.0, E_L=-49.0, V_th=-50.0, V_reset=-60.0, t_ref=5.0)
    receptors = {
        "exc": Receptor(ExponentialSynapse(5.0), CurrentBased()),
        "inh": Receptor(ExponentialSynapse(10.0), CurrentBased()),
    }
    initial = {"v": Uniform(-60.0, -50.0)}
    pops = [
        Population("E", n_exc, lif, receptors=receptors, initial=initial),
        Population("I", n_inh, lif, receptors=receptors, initial=initial),
    ]
    return Network(pops, _ei_projections(n_exc, n_inh, p, w_exc, w_inh, delay, seed, layout), dt=dt)


def cobahh(
    *,
    n_neurons: int = 4000,
    p: float = 0.02,
    w_exc: float = 6.0,
    w_inh: float = 67.0,
    dt: float = 0.1,
    seed: int = 0,
    layout: AbstractLayout | None = None,
) -> Network:
    """Brian2's COBAHH example (Brette et al. 2007, benchmark 3): Traub–Miles HH neurons.

    80 % excitatory, 20 % inhibitory :class:`~brainsim.TraubMiles` neurons (20 000 μm²:
    C = 200 pF, g_L = 10 nS, g_Na = 20 μS, g_K = 6 μS, E_L = −60 mV, E_Na = 50 mV,
    E_K = −90 mV, V_T = −63 mV; spike at −20 mV with 3 ms refractoriness), exponential
    conductances (τe = 5 ms, E_e = 0 mV; τi = 10 ms, E_i = −80 mV), connection probability
    ``p`` (self-connections allowed, as in Brian2's ``connect(p=...)``), weights ``w_exc`` =
    6 nS and ``w_inh`` = 67 nS, one-step delays, exponential Euler. No external input: the
    neurons fire on their own (an isolated Traub–Miles cell with these parameters spikes at
    ≈ 14 Hz).

    Initial state: V = E_L + N(−5, 5) mV as in Brian2, gates at their steady state for
    E_L, conductances at 0. Brian2's example starts the gates at 0 and the conductances at
    g_e = N(40, 15) nS, g_i = N(200, 120) nS; this changes the first tens of milliseconds, not
    the sustained rates (Brian2 reports ≈ 37.6 Hz E / 35.9 Hz I).
    """
    from ._neurons.hh import TraubMiles
    from .init import Normal

    n_exc = int(round(0.8 * n_neurons))
    n_inh = n_neurons - n_exc
    neuron = TraubMiles()
    receptors = {
        "exc": Receptor(ExponentialSynapse(5.0), ConductanceBased(0.0)),
        "inh": Receptor(ExponentialSynapse(10.0), ConductanceBased(-80.0)),
    }
    initial = {"v": Normal(-65.0, 5.0)}
    pops = [
        Population("E", n_exc, neuron, receptors=receptors, initial=initial),
        Population("I", n_inh, neuron, receptors=receptors, initial=initial),
    ]
    return Network(pops, _ei_projections(n_exc, n_inh, p, w_exc, w_inh, None, seed, layout), dt=dt)
