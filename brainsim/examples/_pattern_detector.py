r"""Supervised spatial-pattern detectors learned with pair STDP and weight normalisation.

A reproduction, in brainsim's pieces, of Davies et al. (Neurocomputing 2025, arXiv 2312.02659):
an output neuron learns a *spatial* pattern — a set of input channels that all spike in the
same instant, one volley — from pair STDP plus a homeostatic factor, supervised by a teacher
that makes it fire just after its pattern's volley. After training, one trained pattern gives
an ideal detector (it fires on every presentation of its pattern and on nothing else); with
several trained patterns (one output neuron each) accuracy falls as the patterns overlap.

**Network** (:func:`pattern_detector_network`)::

    input  (SpikeArray, n_inputs)  --all-to-all, plastic: chain(PairSTDP, Normalization)--> output
    teacher (SpikeArray, n_patterns) --one-to-one, fixed, teacher_weight----------------> output

Output neurons are current-based LIF cells,

.. math::
    C_m \frac{dV}{dt} = -\frac{C_m}{\tau_m}(V - E_L) + I_{syn},\qquad
    \tau_s \frac{dI_{syn}}{dt} = -I_{syn} + \tau_s \sum_{i,k} w_{ij}\,\delta(t - t_i^k),

so a volley of the channels :math:`P` lifts the current by :math:`J = \sum_{i \in P} w_{ij}`
(pA) and the voltage by at most :math:`J\,\kappa` with the peak of the exponential PSP

.. math::
    \kappa = \frac{\tau_m \tau_s}{C_m(\tau_m - \tau_s)}
    \left(e^{-t^*/\tau_m} - e^{-t^*/\tau_s}\right),\quad
    t^* = \frac{\tau_m\tau_s}{\tau_m - \tau_s}\ln\frac{\tau_m}{\tau_s}

(0.01337 mV/pA for the defaults C_m = 100 pF, τm = 10 ms, τs = 2 ms). The neuron fires when
:math:`J\kappa > V_{th} - E_L` (10 mV, i.e. :math:`J` > 748 pA).

**Learning rule.** ``chain(PairSTDP(...), Normalization(total_weight, per_step=True))`` on the
input→output weights: additive pair STDP (potentiation :math:`A_+ e^{-\Delta t/\tau_+}` when the
output fires :math:`\Delta t` after an input, depression :math:`A_- e^{\Delta t/\tau_-}` for the
reverse order, hard bounds ``[0, w_max]``), then every step the weights onto each output neuron
are rescaled to sum to ``total_weight``:

.. math::
    w_{ij} \leftarrow w_{ij}\,\frac{W}{\sum_k w_{kj}}.

Why normalisation is the homeostatic factor here: the teacher makes the output fire 0–2 ms
after every volley of its pattern, so STDP potentiates exactly the pattern's synapses; the
others see no presynaptic spike near a postsynaptic one and STDP alone would leave them where
they started, with the total drive growing until the neuron fires on any input. Normalisation
turns the potentiation into a competition — every increase of the pattern's synapses is taken
from all of the neuron's synapses, so the inactive ones decay geometrically (by
:math:`1/(1 + n_{active} A_+/W)` per teacher spike) — and fixes the total drive: after
learning a volley that contains a fraction :math:`f` of the pattern's channels gives
:math:`J \approx f\,W`, and the neuron fires iff :math:`f > (V_{th}-E_L)/(\kappa W)` (0.68 for
the defaults, W = 1100 pA). So a single pattern is detected perfectly (a random volley of the
same size shares on average a quarter of its channels), while two trained patterns that share
a large fraction of their channels drive each other's detector past threshold, and a detector
that fires on the other pattern during training also learns it (its own spike potentiates the
other pattern's channels): accuracy falls with the overlap. :class:`SynapticScaling` (a slow
rate controller) would not confine the weight to the pattern, and :class:`AdaptiveThreshold`
adapts the threshold to the teacher-driven rate rather than to the pattern's drive.

**Timing.** Presentation ``k`` (``k = 0, 1, …``) is a volley at
:math:`t_k = t_0 + k\,T` (``onset`` + k ``period``, ms); with ``jitter`` each channel's spike
is delayed by a whole number of steps drawn uniformly in ``[0, jitter]`` ms; ``noise_rate``
adds independent Poisson background spikes (Hz) on every input channel. During training the
teacher neuron of the presented pattern spikes at :math:`t_k + ` ``teacher_lag``. A detector
*responds* to a presentation when it spikes in ``[t_k, t_k + response_window)``.
"""

from __future__ import annotations

import dataclasses
from typing import NoReturn

import jax
import numpy as np

from brainsim import (
    LIF,
    CurrentBased,
    Dense,
    ExponentialSynapse,
    Network,
    Population,
    Projection,
    Receptor,
    SimulationResult,
    SpikeArray,
    SpikeRaster,
    connect,
    simulate,
)
from brainsim.plasticity import Additive, Normalization, PairSTDP, chain

_OWNER = "pattern_detector"
INPUT, TEACHER, OUTPUT = "input", "teacher", "output"
"""Population names of :func:`pattern_detector_network`."""
DETECTOR = "detector"
"""Name of the plastic input→output projection (``result.weights(DETECTOR)``)."""


def _fail(function: str, name: str, value, fix: str) -> NoReturn:
    raise ValueError(f"{function}: `{name}` {fix}; got {value!r}.")


@dataclasses.dataclass(frozen=True)
class PatternDetectorParameters:
    """Every number of the pattern-detector experiment (units: ms, mV, pF, pA, Hz).

    Defaults: 64 inputs, patterns of 16 active channels, one volley every 40 ms, 1 ms jitter,
    2 Hz background noise, LIF detectors with a 10 mV gap to threshold, weight sum 1100 pA per
    detector (a full pattern gives 1.47× the threshold current). See the module docstring for
    the equations.
    """

    dt: float = 0.5
    """Simulation step (ms)."""
    period: float = 40.0
    """Time between presentations (ms), at least ``response_window``. With τ± = 20 ms the
    traces of one presentation are down to exp(-2) = 0.14 at the next."""
    onset: float = 10.0
    """Time of the first volley (ms)."""
    jitter: float = 1.0
    """Each volley spike is delayed by a uniform whole number of steps in [0, jitter] ms."""
    noise_rate: float = 2.0
    """Poisson background rate on every input channel (Hz)."""
    response_window: float = 20.0
    """A detector responds to a presentation if it spikes within this time after it (ms)."""
    C_m: float = 100.0
    tau_m: float = 10.0
    E_L: float = -65.0
    V_th: float = -55.0
    V_reset: float = -65.0
    t_ref: float = 2.5
    """Refractory period (ms): long enough that the teacher's current (τ_syn = 2 ms) cannot
    drive a second spike after the one it causes (with 2.0 ms some presentations give
    doublets)."""
    tau_syn: float = 2.0
    """Exponential current synapse time constant (ms)."""
    total_weight: float = 1100.0
    """:math:`W`: sum of each detector's input weights (pA) kept by the normalisation."""
    w_max: float = 200.0
    """Hard upper bound of a single input weight (pA)."""
    A_plus: float = 10.0
    """STDP potentiation amplitude (pA)."""
    A_minus: float = 10.5
    """STDP depression amplitude (pA)."""
    tau_plus: float = 20.0
    tau_minus: float = 20.0
    teacher_weight: float = 1200.0
    """Current jump of a teacher spike (pA): alone it makes the detector fire (16 mV PSP)."""
    teacher_lag: float = 0.0
    """Teacher spike time after its pattern's volley (ms)."""
    normalize: bool = True
    """Chain the weight normalisation after STDP; ``False`` is the ablation "STDP alone"
    (the detector then also fires on random volleys)."""

    def __post_init__(self):
        owner = "PatternDetectorParameters"
        for name in ("dt", "period", "response_window", "C_m", "tau_m", "tau_syn",
                     "total_weight", "w_max", "tau_plus", "tau_minus"):  # fmt: skip
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                _fail(owner, name, value, "must be a finite number > 0")
        for name in ("onset", "jitter", "noise_rate", "t_ref", "A_plus", "A_minus",
                     "teacher_weight", "teacher_lag"):  # fmt: skip
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                _fail(owner, name, value, "must be a finite number >= 0")
        for name in ("period", "onset", "jitter", "teacher_lag"):
            value = getattr(self, name)
            if abs(value / self.dt - round(value / self.dt)) > 1e-9:
                _fail(owner, name, value, f"must be a whole number of steps (dt = {self.dt} ms)")
        if self.response_window > self.period:
            _fail(owner, "response_window", self.response_window,
                  f"must not exceed `period` ({self.period} ms); lengthen the period")  # fmt: skip
        if self.teacher_lag + self.jitter >= self.response_window:
            _fail(owner, "teacher_lag", self.teacher_lag,
                  "plus `jitter` must be shorter than `response_window`")  # fmt: skip
        if self.V_th <= self.E_L:
            _fail(owner, "V_th", self.V_th, f"must lie above E_L = {self.E_L} mV")

    def psp_per_pA(self) -> float:
        r"""Peak PSP (mV) of a 1 pA current jump, :math:`\kappa` of the module docstring."""
        tm, ts = self.tau_m, self.tau_syn
        if np.isclose(tm, ts):
            return float(tm / self.C_m * np.exp(-1.0))
        t_peak = tm * ts / (tm - ts) * np.log(tm / ts)
        return float(
            tm * ts / (self.C_m * (tm - ts)) * (np.exp(-t_peak / tm) - np.exp(-t_peak / ts))
        )

    def detection_fraction(self) -> float:
        """Fraction of a learned pattern's channels a volley needs to make its detector fire,
        :math:`(V_{th} - E_L)/(\\kappa W)`, once the weight sits on the pattern alone."""
        return float((self.V_th - self.E_L) / (self.psp_per_pA() * self.total_weight))


DEFAULT = PatternDetectorParameters()


def _params(params):
    if params is None:
        return DEFAULT
    if not isinstance(params, PatternDetectorParameters):
        raise TypeError(
            f"{_OWNER}: `params` must be a PatternDetectorParameters (or None for the defaults); "
            f"got {type(params).__name__}."
        )
    return params


def _check_patterns(function, patterns) -> np.ndarray:
    p = np.asarray(patterns)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        _fail(function, "patterns", p.shape,
              "must be a 2-D array (n_patterns, n_inputs) of 0/1; check its shape")  # fmt: skip
    if not np.isin(p, (0, 1)).all():
        _fail(function, "patterns", "non-binary values", "must hold only 0/1 (or booleans)")
    p = p.astype(bool)
    if not p.any(axis=1).all():
        _fail(function, "patterns", f"row {int(np.flatnonzero(~p.any(axis=1))[0])} empty",
              "must have at least one active input per pattern")  # fmt: skip
    return p


# --------------------------------------------------------------------------------- patterns


def pattern_detector_patterns(
    n_patterns: int,
    *,
    n_inputs: int = 64,
    n_active: int = 16,
    overlap: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    r"""Binary spatial patterns with a controlled pairwise overlap.

    Every pattern has ``n_active`` active channels out of ``n_inputs``; all patterns share the
    same :math:`s = \mathrm{round}(\text{overlap}\cdot n_{active})` channels and their other
    :math:`n_{active} - s` channels are disjoint. So every pair shares the fraction
    :math:`s / n_{active}` of its channels and lies at Hamming distance
    :math:`2(n_{active} - s)`. Channels are chosen by a random permutation (``seed``).

    Returns:
        ``(n_patterns, n_inputs)`` boolean array.

    Example:
        >>> p = pattern_detector_patterns(2, overlap=0.5)
        >>> int((p[0] & p[1]).sum())
        8
    """
    f = "pattern_detector_patterns"
    for name, value in (("n_patterns", n_patterns), ("n_inputs", n_inputs), ("n_active", n_active)):
        if not (isinstance(value, int | np.integer) and value >= 1):
            _fail(f, name, value, "must be an integer >= 1")
    if n_active > n_inputs:
        _fail(f, "n_active", n_active, f"must not exceed n_inputs = {n_inputs}")
    if not (0.0 <= overlap <= 1.0):
        _fail(f, "overlap", overlap, "must lie in [0, 1] (fraction of shared active channels)")
    shared = int(round(overlap * n_active))
    own = n_active - shared
    needed = shared + n_patterns * own
    if needed > n_inputs:
        _fail(f, "overlap", overlap,
              f"is too small for {n_patterns} patterns of {n_active} channels among {n_inputs} "
              f"(needs {needed} channels); raise overlap or n_inputs, or lower n_active")  # fmt: skip
    order = np.random.default_rng(seed).permutation(n_inputs)
    patterns = np.zeros((n_patterns, n_inputs), bool)
    patterns[:, order[:shared]] = True
    for p in range(n_patterns):
        patterns[p, order[shared + p * own : shared + (p + 1) * own]] = True
    return patterns


def pattern_detector_spikes(
    volleys: np.ndarray,
    params: PatternDetectorParameters | None = None,
    *,
    teacher: np.ndarray | None = None,
    n_teachers: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Spike arrays for a sequence of presentations (one volley each, every ``period`` ms).

    Arguments:
        volleys: ``(n_presentations, n_inputs)`` 0/1: the channels of each presentation.
        params: :class:`PatternDetectorParameters` (timing, jitter, noise).
        teacher: optional ``(n_presentations,)`` integer label: the teacher neuron that spikes
            ``teacher_lag`` ms after the volley (``-1``: none).
        n_teachers: number of teacher neurons (default ``max(teacher) + 1``).
        seed: NumPy seed of jitter and background noise.

    Returns:
        ``(input_spikes, teacher_spikes)``: float32 arrays ``(T, n_inputs)`` and
        ``(T, n_teachers)`` (or ``None``) for :class:`~brainsim.SpikeArray`, with
        ``T = (onset + n_presentations * period) / dt`` steps.
    """
    prm = _params(params)
    v = _check_patterns("pattern_detector_spikes", volleys)
    n_pres, n_in = v.shape
    dt = prm.dt
    n_steps = int(round((prm.onset + n_pres * prm.period) / dt))
    rng = np.random.default_rng(seed)
    p_noise = prm.noise_rate * dt * 1e-3
    spikes = (rng.random((n_steps, n_in)) < p_noise).astype(np.float32)
    onsets = np.rint((prm.onset + np.arange(n_pres) * prm.period) / dt).astype(np.int64)
    max_jitter = int(round(prm.jitter / dt))
    k, i = np.nonzero(v)
    steps = onsets[k] + rng.integers(0, max_jitter + 1, size=k.size)
    spikes[steps, i] = 1.0
    if teacher is None:
        return spikes, None
    labels = np.asarray(teacher)
    if labels.shape != (n_pres,) or not np.issubdtype(labels.dtype, np.integer):
        _fail("pattern_detector_spikes", "teacher", labels.shape,
              f"must be an integer array of shape ({n_pres},) (one label per volley)")  # fmt: skip
    n_t = int(labels.max()) + 1 if n_teachers is None else int(n_teachers)
    if labels.max() >= n_t or labels.min() < -1:
        _fail("pattern_detector_spikes", "teacher", labels,
              f"must hold labels in [-1, {n_t - 1}] (n_teachers = {n_t})")  # fmt: skip
    teach = np.zeros((n_steps, max(n_t, 1)), np.float32)
    on = labels >= 0
    teach[onsets[on] + int(round(prm.teacher_lag / dt)), labels[on]] = 1.0
    return spikes, teach


# ---------------------------------------------------------------------------------- network


def pattern_detector_rule(params: PatternDetectorParameters | None = None):
    """The plasticity rule: ``chain(PairSTDP(additive, [0, w_max]), Normalization(W, per_step))``."""
    prm = _params(params)
    stdp = PairSTDP(
        prm.tau_plus,
        prm.tau_minus,
        A_plus=prm.A_plus,
        A_minus=prm.A_minus,
        weight_dependence=Additive(w_max=prm.w_max),
    )
    if not prm.normalize:
        return chain(stdp)
    return chain(stdp, Normalization(prm.total_weight, per_step=True))


def pattern_detector_network(
    input_spikes: np.ndarray,
    weights: np.ndarray,
    params: PatternDetectorParameters | None = None,
    *,
    teacher_spikes: np.ndarray | None = None,
    plastic: bool = True,
) -> Network:
    """The detector network: inputs → LIF detectors (plastic or frozen), plus a teacher.

    Arguments:
        input_spikes: ``(T, n_inputs)`` spikes (:func:`pattern_detector_spikes`).
        weights: ``(n_inputs, n_detectors)`` initial (or learned) input weights (pA).
        params: :class:`PatternDetectorParameters`.
        teacher_spikes: ``(T, n_detectors)`` teacher spikes, or ``None`` for no teacher.
        plastic: put :func:`pattern_detector_rule` on the input→detector projection (named
            :data:`DETECTOR`); ``False`` freezes ``weights``.

    Populations are named ``"input"``, ``"teacher"`` (if any) and ``"output"``.
    """
    prm = _params(params)
    f = "pattern_detector_network"
    x = np.asarray(input_spikes, np.float32)
    w = np.asarray(weights, np.float32)
    if x.ndim != 2:
        _fail(f, "input_spikes", x.shape, "must have shape (T, n_inputs)")
    if w.ndim != 2 or w.shape[0] != x.shape[1]:
        _fail(f, "weights", w.shape, f"must have shape (n_inputs={x.shape[1]}, n_detectors)")
    if not (np.isfinite(w).all() and (w >= 0).all()):
        _fail(f, "weights", "negative or non-finite entries", "must be finite and >= 0 (pA)")
    n_in, n_out = w.shape
    cell = LIF(
        C_m=prm.C_m,
        tau_m=prm.tau_m,
        E_L=prm.E_L,
        V_th=prm.V_th,
        V_reset=prm.V_reset,
        t_ref=prm.t_ref,
    )
    receptors = {"exc": Receptor(ExponentialSynapse(prm.tau_syn), CurrentBased())}
    pops = [
        Population(INPUT, n_in, SpikeArray(x)),
        Population(OUTPUT, n_out, cell, receptors=receptors),
    ]
    edges = connect.all_to_all(n_in, n_out, weight=w.ravel())
    projs = [
        Projection(
            INPUT,
            OUTPUT,
            edges,
            receptor="exc",
            layout=Dense(),
            plasticity=pattern_detector_rule(prm) if plastic else None,
            name=DETECTOR,
        )
    ]
    if teacher_spikes is not None:
        t = np.asarray(teacher_spikes, np.float32)
        if t.shape != (x.shape[0], n_out):
            _fail(f, "teacher_spikes", t.shape,
                  f"must have shape (T={x.shape[0]}, n_detectors={n_out}) like input_spikes")  # fmt: skip
        pops.insert(1, Population(TEACHER, n_out, SpikeArray(t)))
        projs.append(
            Projection(
                TEACHER,
                OUTPUT,
                connect.one_to_one(n_out, weight=prm.teacher_weight),
                receptor="exc",
                layout=Dense(),
                name="teacher",
            )
        )
    return Network(pops, projs, dt=prm.dt)


# --------------------------------------------------------------------------- train, evaluate


@dataclasses.dataclass(frozen=True)
class PatternDetectorTraining:
    """What :func:`pattern_detector_train` returns."""

    weights_before: np.ndarray
    """``(n_inputs, n_patterns)`` initial weights (pA), already normalised to ``total_weight``."""
    weights: np.ndarray
    """``(n_inputs, n_patterns)`` learned weights (pA)."""
    labels: np.ndarray
    """``(n_presentations,)`` pattern shown at each training presentation."""
    result: SimulationResult
    """The training run (spike raster of every population)."""
    params: PatternDetectorParameters


def _initial_weights(n_in, n_out, total, rng):
    w = rng.uniform(0.5, 1.5, (n_in, n_out))
    return (w * (total / w.sum(axis=0))).astype(np.float32)


def pattern_detector_train(
    patterns: np.ndarray,
    params: PatternDetectorParameters | None = None,
    *,
    n_presentations: int = 30,
    seed: int = 0,
) -> PatternDetectorTraining:
    """Train one detector per pattern: each pattern is shown ``n_presentations`` times in a
    random order, and its detector's teacher spikes ``teacher_lag`` ms after every volley of it.

    Initial weights are uniform in [0.5, 1.5] and rescaled so that each detector's weights sum
    to ``total_weight`` (no pattern preferred). ``seed`` sets weights, order, jitter and noise.

    Example:
        >>> patterns = pattern_detector_patterns(1)
        >>> trained = pattern_detector_train(patterns)
        >>> pattern_detector_evaluate(trained.weights, patterns).accuracy
        1.0
    """
    prm = _params(params)
    p = _check_patterns("pattern_detector_train", patterns)
    if not (isinstance(n_presentations, int | np.integer) and n_presentations >= 1):
        _fail("pattern_detector_train", "n_presentations", n_presentations,
              "must be an integer >= 1 (presentations of each pattern)")  # fmt: skip
    n_pat, n_in = p.shape
    rng = np.random.default_rng([seed, 1])
    w0 = _initial_weights(n_in, n_pat, prm.total_weight, rng)
    labels = rng.permutation(np.repeat(np.arange(n_pat), n_presentations))
    x, teach = pattern_detector_spikes(p[labels], prm, teacher=labels, n_teachers=n_pat,
                                       seed=seed)  # fmt: skip
    net = pattern_detector_network(x, w0, prm, teacher_spikes=teach, plastic=True)
    result = simulate(net, n_steps=x.shape[0], key=jax.random.key(seed), record=(SpikeRaster(),))
    weights = np.asarray(result.weights(DETECTOR), np.float64)
    return PatternDetectorTraining(w0.astype(np.float64), weights, labels, result, prm)


@dataclasses.dataclass(frozen=True)
class PatternDetectorEvaluation:
    """What :func:`pattern_detector_evaluate` returns."""

    accuracy: float
    """Fraction of presentations classified correctly: the set of detectors that responded is
    exactly {the presented pattern's detector} (empty for a distractor)."""
    labels: np.ndarray
    """``(n_presentations,)`` pattern index of each presentation, ``-1`` for a distractor."""
    responses: np.ndarray
    """``(n_presentations, n_detectors)`` boolean: detector spiked within ``response_window``."""
    hit_rate: float
    """Fraction of pattern presentations on which the pattern's own detector responded."""
    false_alarm_rate: float
    """Fraction of (presentation, detector) pairs of a non-matching pattern or a distractor on
    which the detector responded."""


def pattern_detector_evaluate(
    weights: np.ndarray,
    patterns: np.ndarray,
    params: PatternDetectorParameters | None = None,
    *,
    n_repeats: int = 10,
    n_distractors: int | None = None,
    seed: int = 0,
) -> PatternDetectorEvaluation:
    r"""Test frozen detectors (no teacher, no plasticity) on the patterns and on distractors.

    Each pattern is shown ``n_repeats`` times, together with ``n_distractors`` random volleys
    (default ``n_repeats``) with as many active channels as the first pattern, in a random
    order, with the same jitter and background noise as in training. A presentation is correct
    iff the detectors that spike in ``[t_k, t_k + response_window)`` are exactly the presented
    pattern's (none for a distractor); ``accuracy`` is the fraction of correct presentations.
    """
    prm = _params(params)
    f = "pattern_detector_evaluate"
    p = _check_patterns(f, patterns)
    w = np.asarray(weights)
    n_pat, n_in = p.shape
    if w.shape != (n_in, n_pat):
        _fail(f, "weights", w.shape,
              f"must have shape (n_inputs={n_in}, n_patterns={n_pat}): one detector per pattern")  # fmt: skip
    if not (isinstance(n_repeats, int | np.integer) and n_repeats >= 1):
        _fail(f, "n_repeats", n_repeats, "must be an integer >= 1")
    n_dis = n_repeats if n_distractors is None else n_distractors
    if not (isinstance(n_dis, int | np.integer) and n_dis >= 0):
        _fail(f, "n_distractors", n_distractors, "must be an integer >= 0 (or None)")
    rng = np.random.default_rng([seed, 2])
    n_active = int(p[0].sum())
    distractors = np.zeros((n_dis, n_in), bool)
    for d in range(n_dis):
        distractors[d, rng.choice(n_in, n_active, replace=False)] = True
    labels = rng.permutation(np.concatenate([np.repeat(np.arange(n_pat), n_repeats),
                                             np.full(n_dis, -1)]))  # fmt: skip
    volleys = np.where((labels >= 0)[:, None], p[np.maximum(labels, 0)], False)
    volleys[labels < 0] = distractors
    x, _ = pattern_detector_spikes(volleys, prm, seed=seed + 10_000)
    net = pattern_detector_network(x, w, prm, plastic=False)
    result = simulate(
        net, n_steps=x.shape[0], key=jax.random.key(seed), record=(SpikeRaster((OUTPUT,)),)
    )
    responses = pattern_detector_responses(result, len(labels), prm)
    expected = labels[:, None] == np.arange(n_pat)[None, :]
    correct = (responses == expected).all(axis=1)
    on = labels >= 0
    hit = responses[on, labels[on]].mean() if on.any() else np.nan
    return PatternDetectorEvaluation(
        accuracy=float(correct.mean()),
        labels=labels,
        responses=responses,
        hit_rate=float(hit),
        false_alarm_rate=float(responses[~expected].mean()) if (~expected).any() else np.nan,
    )


def pattern_detector_responses(
    result: SimulationResult, n_presentations: int, params: PatternDetectorParameters | None = None
) -> np.ndarray:
    """``(n_presentations, n_detectors)`` boolean: output spike within ``response_window`` ms
    after each volley (volley ``k`` at ``onset + k * period``)."""
    prm = _params(params)
    times, ids = result.spikes(OUTPUT)
    n_out = result.population_sizes[result.population_names.index(OUTPUT)]
    rel = times - prm.onset
    k = np.floor(rel / prm.period + 1e-9).astype(np.int64)
    inside = (
        (rel >= 0) & (rel - k * prm.period < prm.response_window - 1e-9) & (k < n_presentations)
    )
    responses = np.zeros((n_presentations, n_out), bool)
    responses[k[inside], ids[inside]] = True
    return responses


def pattern_detector_overlap_sweep(
    overlaps,
    seeds,
    params: PatternDetectorParameters | None = None,
    *,
    n_patterns: int = 2,
    n_inputs: int = 64,
    n_active: int = 16,
    n_presentations: int = 30,
    n_repeats: int = 10,
    n_distractors: int | None = None,
) -> np.ndarray:
    """Accuracy of ``n_patterns`` detectors trained together on patterns that share the
    fraction ``overlap`` of their channels (:func:`pattern_detector_patterns`).

    Returns:
        ``(len(overlaps), len(seeds))`` accuracies; seed ``s`` draws the patterns, the initial
        weights, the training order, jitter and noise.
    """
    prm = _params(params)
    out = np.zeros((len(overlaps), len(seeds)))
    for a, overlap in enumerate(overlaps):
        for b, seed in enumerate(seeds):
            p = pattern_detector_patterns(
                n_patterns, n_inputs=n_inputs, n_active=n_active, overlap=overlap, seed=seed
            )
            trained = pattern_detector_train(p, prm, n_presentations=n_presentations, seed=seed)
            out[a, b] = pattern_detector_evaluate(
                trained.weights, p, prm, n_repeats=n_repeats, n_distractors=n_distractors, seed=seed
            ).accuracy
    return out
