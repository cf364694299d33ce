"""Standard benchmark networks (REFERENCES: Brette et al. 2007 / Vogels & Abbott 2005;
Potjans & Diesmann 2014).

Each builder returns a :class:`~brainsim.Network`; the configs in ``configs/`` and the
``brainsim run`` CLI use them, and so can notebooks.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from . import connect
from ._network import Network, Population, Projection, Receptor
from ._neurons.lif import LIF
from ._propagation import AbstractLayout
from ._synapses.kinetics import ExponentialSynapse
from ._synapses.outputs import ConductanceBased, CurrentBased
from ._timing import Timing
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


# ------------------------------------------------------------- Potjans & Diesmann (2014)

PD14_POPULATIONS = ("L23E", "L23I", "L4E", "L4I", "L5E", "L5I", "L6E", "L6I")
"""Population names of :func:`potjans_diesmann`, in the order of every table below."""

PD14_SIZES = (20683, 5834, 21915, 5479, 4850, 1065, 14395, 2948)
"""Neurons per population at full scale (77 169 in all)."""

PD14_CONN_PROBS = np.array(
    [
        # from: L23E    L23I    L4E     L4I     L5E     L5I     L6E     L6I
        [0.1009, 0.1689, 0.0437, 0.0818, 0.0323, 0.0000, 0.0076, 0.0000],  # to L23E
        [0.1346, 0.1371, 0.0316, 0.0515, 0.0755, 0.0000, 0.0042, 0.0000],  # to L23I
        [0.0077, 0.0059, 0.0497, 0.1350, 0.0067, 0.0003, 0.0453, 0.0000],  # to L4E
        [0.0691, 0.0029, 0.0794, 0.1597, 0.0033, 0.0000, 0.1057, 0.0000],  # to L4I
        [0.1004, 0.0622, 0.0505, 0.0057, 0.0831, 0.3726, 0.0204, 0.0000],  # to L5E
        [0.0548, 0.0269, 0.0257, 0.0022, 0.0600, 0.3158, 0.0086, 0.0000],  # to L5I
        [0.0156, 0.0066, 0.0211, 0.0166, 0.0572, 0.0197, 0.0396, 0.2252],  # to L6E
        [0.0364, 0.0010, 0.0034, 0.0005, 0.0277, 0.0080, 0.0658, 0.1443],  # to L6I
    ]
)
"""Connection probabilities ``[target, source]`` (Potjans & Diesmann 2014, Table 5)."""

PD14_K_EXT = (1600, 1500, 2100, 1900, 2000, 1900, 2900, 2100)
"""External (background) in-degrees per population at full scale."""

PD14_RATES = (0.903, 2.965, 4.414, 5.876, 7.569, 8.633, 1.105, 7.829)
"""Mean rates (Hz) of the full-scale model in NEST: the reference values, and the rates the
in-degree compensation assumes."""

# Initial membrane potentials (mV): "optimized" per-population normals of the reference
# implementation (they shorten the start-up transient), or the paper's N(-58, 10).
_PD14_V0 = {
    "optimized": (
        (-68.28, -63.16, -63.33, -63.45, -63.11, -61.66, -66.72, -61.43),
        (5.36, 4.57, 4.74, 4.94, 4.94, 4.55, 5.46, 4.48),
    ),
    "original": ((-58.0,) * 8, (10.0,) * 8),
}


def psp_to_psc(psp, *, C_m=250.0, tau_m=10.0, tau_syn=0.5):
    r"""Peak current (pA) of an exponential PSC whose PSP peaks at ``psp`` (mV) in a LIF.

    With :math:`I(t) = J e^{-t/\tau_s}` into :math:`C \dot V = -C V / \tau_m + I`, the PSP
    :math:`V(t) = \frac{J \tau_m \tau_s}{C(\tau_m - \tau_s)}(e^{-t/\tau_m} - e^{-t/\tau_s})`
    peaks at :math:`t^* = \frac{\tau_m \tau_s}{\tau_m - \tau_s}\ln(\tau_m/\tau_s)`; ``psp``
    divided by that peak per pA is returned (0.15 mV ↦ 87.81 pA for the microcircuit's cells).
    """
    t_peak = tau_m * tau_syn / (tau_m - tau_syn) * np.log(tau_m / tau_syn)
    per_pA = (
        tau_m
        * tau_syn
        / (C_m * (tau_m - tau_syn))
        * (np.exp(-t_peak / tau_m) - np.exp(-t_peak / tau_syn))
    )
    return np.asarray(psp, dtype=float) / per_pA


@dataclasses.dataclass(frozen=True)
class MicrocircuitParameters:
    """The numbers :func:`potjans_diesmann` builds its network from (see its docstring)."""

    sizes: np.ndarray
    """Neurons per population, ``round(scale * PD14_SIZES)``."""
    n_synapses: np.ndarray
    """Synapses ``[target, source]``, ``round(K_full * scale * k_scale)``."""
    weights: np.ndarray
    """Mean PSC amplitudes ``[target, source]`` (pA), divided by ``sqrt(k_scale)``."""
    delays: np.ndarray
    """Mean delays ``[target, source]`` (ms): 1.5 from excitatory, 0.75 from inhibitory cells."""
    k_ext: np.ndarray
    """Background in-degrees, ``round(k_scale * PD14_K_EXT)``."""
    w_ext: float
    """Background PSC amplitude (pA), divided by ``sqrt(k_scale)``."""
    bg_rates: np.ndarray
    """Poisson background rate into each neuron (Hz), ``bg_rate * k_ext``."""
    dc: np.ndarray
    """Constant input current per population (pA): background and/or compensation."""
    v0_mean: np.ndarray
    v0_std: np.ndarray


def full_scale_synapses() -> np.ndarray:
    r"""Total synapses ``[target, source]`` of the full model from the probabilities.

    :math:`K = \ln(1 - p) / \ln(1 - 1/(N_{pre} N_{post}))`: the number of synapses drawn with
    replacement among the :math:`N_{pre} N_{post}` pairs for which a given pair is connected
    at least once with probability :math:`p`.
    """
    n = np.asarray(PD14_SIZES, dtype=float)
    pairs = np.outer(n, n)
    return np.log1p(-PD14_CONN_PROBS) / np.log1p(-1.0 / pairs)


def potjans_diesmann_parameters(
    *,
    scale: float = 0.1,
    k_scale: float = 1.0,
    background: str = "poisson",
    v0: str = "optimized",
    psp: float = 0.15,
    g: float = -4.0,
    bg_rate: float = 8.0,
) -> MicrocircuitParameters:
    """Derived parameters of :func:`potjans_diesmann` (sizes, synapse counts, weights, DC)."""
    owner = "potjans_diesmann"
    for name, value in (("scale", scale), ("k_scale", k_scale)):
        if not (isinstance(value, int | float) and 0 < value <= 1):
            raise ValueError(f"{owner}: `{name}` must lie in (0, 1]; got {value!r}.")
    if background not in ("poisson", "dc"):
        raise ValueError(f"{owner}: `background` must be 'poisson' or 'dc'; got {background!r}.")
    if v0 not in _PD14_V0:
        raise ValueError(f"{owner}: `v0` must be 'optimized' or 'original'; got {v0!r}.")
    tau_syn = 0.5
    sizes = np.maximum(np.round(np.asarray(PD14_SIZES) * scale).astype(np.int64), 1)
    k_full = full_scale_synapses()
    n_synapses = np.round(k_full * scale * k_scale).astype(np.int64)
    excitatory = np.array([name.endswith("E") for name in PD14_POPULATIONS])
    psp_matrix = np.where(excitatory[None, :], psp, g * psp) * np.ones((8, 1))
    psp_matrix[0, 2] *= 2.0  # L4E -> L23E doubled
    w_full = psp_to_psc(psp_matrix)
    w_ext_full = float(psp_to_psc(psp))
    k_ext_full = np.asarray(PD14_K_EXT, dtype=float)
    # Mean input currents (pA) of the full model: the charge of one PSC is w * tau_syn.
    indegree = k_full / np.asarray(PD14_SIZES, dtype=float)[:, None]
    mean_rec = 1e-3 * tau_syn * (w_full * indegree * np.asarray(PD14_RATES)).sum(axis=1)
    mean_ext = 1e-3 * tau_syn * w_ext_full * k_ext_full * bg_rate
    root = np.sqrt(k_scale)
    dc = (1.0 - root) * mean_rec + (mean_ext if background == "dc" else (1.0 - root) * mean_ext)
    mean, std = _PD14_V0[v0]
    return MicrocircuitParameters(
        sizes=sizes,
        n_synapses=n_synapses,
        weights=w_full / root,
        delays=np.where(excitatory[None, :], 1.5, 0.75) * np.ones((8, 1)),
        k_ext=np.round(k_ext_full * k_scale).astype(np.int64),
        w_ext=w_ext_full / root,
        bg_rates=bg_rate * np.round(k_ext_full * k_scale),
        dc=dc,
        v0_mean=np.asarray(mean),
        v0_std=np.asarray(std),
    )


def potjans_diesmann(
    *,
    scale: float = 0.1,
    k_scale: float = 1.0,
    background: str = "poisson",
    v0: str = "optimized",
    dt: float = 0.1,
    seed: int = 0,
    layout: AbstractLayout | None = None,
    timing: Timing | None = None,
) -> Network:
    r"""The cortical microcircuit of Potjans & Diesmann (2014): 8 populations, 1 mm² of cortex.

    Populations :data:`PD14_POPULATIONS` (L2/3, L4, L5, L6; excitatory and inhibitory) of
    :data:`PD14_SIZES` neurons (77 169 at full scale), NEST ``iaf_psc_exp`` cells
    (:class:`~brainsim.LIF` with C = 250 pF, τm = 10 ms, E_L = V_reset = −65 mV,
    V_th = −50 mV, 2 ms refractory) with one current-based exponential receptor
    (τ_syn = 0.5 ms) that all synapses share, inhibitory weights being negative.

    **Connectivity.** For each pair of populations the connection probability ``p`` of
    :data:`PD14_CONN_PROBS` becomes a fixed total number of synapses
    (:func:`full_scale_synapses`: :math:`K = \ln(1-p)/\ln(1 - 1/(N_{pre}N_{post}))` at full
    scale) drawn uniformly over the pairs with multapses and autapses allowed
    (:func:`brainsim.connect.fixed_total_number`, as NEST's ``fixed_total_number``).
    Weights: PSC amplitudes with mean ``w`` = 87.81 pA (a 0.15 mV PSP, :func:`psp_to_psc`),
    ``g·w`` = −351.2 pA from inhibitory cells, L4E→L2/3E doubled, relative SD 0.1, redrawn if
    they change sign. Delays: normal, 1.5 ± 0.75 ms from excitatory and 0.75 ± 0.375 ms from
    inhibitory cells, redrawn below ``dt`` and rounded to whole steps.

    **Background.** ``"poisson"``: every neuron receives an independent Poisson train of rate
    8 Hz × :data:`PD14_K_EXT` (its layer's external in-degree) with weight ``w``, from a
    :class:`~brainsim.PoissonSource` population ``"<name>_bg"`` through a one-to-one
    projection (zero delay: the delay of a stationary Poisson input is immaterial).
    ``"dc"``: its mean instead, a constant current
    :math:`I_{ext} = 10^{-3}\,\tau_{syn}\, w\, K_{ext}\, \nu_{bg}` (pA) in each cell's ``I_e``.
    The DC drive removes the external fluctuations; with in-degrees scaled down
    (``k_scale < 1``) the remaining recurrent fluctuations do not sustain activity and the
    network falls silent (measured at ``scale = k_scale = 0.1``: every population but L6I at
    0 Hz), so use ``"poisson"`` there.

    **Scaling.** ``scale`` multiplies the population sizes; ``k_scale`` the in-degrees
    (recurrent and external). Total synapses are ``round(K · scale · k_scale)``, so at
    ``k_scale = 1`` every neuron keeps its full in-degree (the connection probabilities grow
    by ``1/scale``). With ``k_scale < 1`` the weights are multiplied by
    :math:`1/\sqrt{k}`, which keeps the variance of each neuron's input, and the mean input
    lost in the process is restored by a DC current (as in the NEST/INM-6 reference code):

    .. math::
        I_{DC} = 10^{-3}\,\tau_{syn}\,(1 - \sqrt{k})\Big(\sum_{s} w_{ts}\, K_{ts}\, \nu_s
        + w\, K_{ext,t}\, \nu_{bg}\Big)

    with the full-scale in-degrees :math:`K_{ts}` and the reference rates
    :math:`\nu_s` = :data:`PD14_RATES` (the external term only with Poisson background; with
    ``"dc"`` the full background mean is already in the DC). :func:`potjans_diesmann_parameters`
    returns all derived numbers. ``scale=1, k_scale=1`` is the full model (about 3·10⁸
    synapses: tens of GB of host memory to build).

    **Initial state.** ``v0="optimized"`` draws each population's V from the normal
    distribution of the reference implementation (means −68.3 … −61.4 mV, SD 4.5–5.5 mV),
    which shortens the start-up transient; ``"original"``: N(−58, 10) mV for all.

    Arguments:
        scale: fraction of neurons, in (0, 1].
        k_scale: fraction of in-degrees, in (0, 1].
        background: ``"poisson"`` or ``"dc"``.
        v0: ``"optimized"`` or ``"original"``.
        dt: step (ms), 0.1 in the reference.
        seed: NumPy seed of the connectivity: projection from population ``i`` to ``j``
            (order of :data:`PD14_POPULATIONS`) uses ``[seed, i, j]``.
        layout: storage of the recurrent projections (default :class:`~brainsim.Sparse`);
            the one-to-one background projections are always Sparse.
        timing: the network's conventions; default :meth:`Timing.nest() <brainsim.Timing.nest>`,
            as the reference is a NEST model (a 2 ms refractory period holds the membrane 20
            steps after the spike step, and spikes are recorded at the end of their step).

    Reference rates (NEST, full scale, Hz): 0.90, 2.97, 4.41, 5.88, 7.57, 8.63, 1.11, 7.83
    (:data:`PD14_RATES`).

    Example:
        >>> from brainsim.networks import potjans_diesmann
        >>> net = potjans_diesmann(scale=0.02, k_scale=0.1)
        >>> res = bs.simulate(net, 500.0, key=jax.random.key(0), record=(bs.SpikeRaster(),))
        >>> res.rate("L5E")  # Hz
    """
    from ._inputs import PoissonSource
    from ._propagation import Sparse
    from .init import Normal

    params = potjans_diesmann_parameters(scale=scale, k_scale=k_scale, background=background, v0=v0)
    layout = Sparse() if layout is None else layout
    receptors = {"syn": Receptor(ExponentialSynapse(0.5), CurrentBased())}
    populations, projections = [], []
    # One cell value for every population, each with its own I_e: the shared parameters stay
    # one object, so the merged group of the 8 populations keeps them scalar (brainsim._plan).
    base = LIF(C_m=250.0, tau_m=10.0, E_L=-65.0, V_th=-50.0, V_reset=-65.0, t_ref=2.0)
    for i, name in enumerate(PD14_POPULATIONS):
        cell = eqx.tree_at(lambda m: m.I_e, base, jnp.asarray(float(params.dc[i])))
        initial = {"v": Normal(float(params.v0_mean[i]), float(params.v0_std[i]))}
        populations.append(
            Population(name, int(params.sizes[i]), cell, receptors=receptors, initial=initial)
        )
    for j, post in enumerate(PD14_POPULATIONS):
        for i, pre in enumerate(PD14_POPULATIONS):
            n_syn = int(params.n_synapses[j, i])
            if n_syn == 0:
                continue
            w = float(params.weights[j, i])
            weight = connect.Clipped(
                connect.Normal(w, 0.1 * abs(w)),
                low=0.0 if w > 0 else -np.inf,
                high=np.inf if w > 0 else 0.0,
                redraw=True,
            )
            d = float(params.delays[j, i])
            delay = connect.Clipped(connect.Normal(d, 0.5 * d), low=dt, redraw=True)
            edges = connect.fixed_total_number(
                int(params.sizes[i]),
                int(params.sizes[j]),
                n_syn,
                weight=weight,
                delay=delay,
                allow_multapses=True,
                seed=[seed, i, j],
            )
            projections.append(
                Projection(pre, post, edges, receptor="syn", layout=layout, round_delays=True)
            )
    if background == "poisson":
        for i, name in enumerate(PD14_POPULATIONS):
            n = int(params.sizes[i])
            source = f"{name}_bg"
            populations.append(Population(source, n, PoissonSource(float(params.bg_rates[i]))))
            edges = connect.one_to_one(n, weight=params.w_ext)
            projections.append(Projection(source, name, edges, receptor="syn", layout=Sparse()))
    return Network(
        populations, projections, dt=dt, timing=Timing.nest() if timing is None else timing
    )
