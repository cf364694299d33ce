r"""NIR (Neuromorphic Intermediate Representation) import and export.

NIR is the exchange format of snnTorch, Norse, Spyx, Rockpool, Lava and neuromorphic hardware:
a graph of continuous-time nodes (neurons, linear maps, delays) joined by edges. Install the
optional dependency with ``pip install 'brainsim[nir]'``; it is imported only when a function
here is called.

- :func:`to_nir` writes a :class:`~brainsim.Network` (or a :class:`brainsim.fit.SpikingRNN`)
  as a ``nir.NIRGraph``.
- :func:`from_nir` builds a :class:`~brainsim.Network` from a graph, with the input arrays fed
  to its ``Input`` nodes; :func:`run` simulates it and returns each ``Output`` node's values.

Units. NIR is unitless. brainsim reads every NIR time (``tau``, ``delay``) as ms, the same
unit as ``dt``, and every other quantity as dimensionless: a membrane of capacitance
:math:`C_m = \tau/R` (pF with mV, pA; :math:`C_m = 1/R` for ``IF``), voltages in mV, weights in
pA. So a graph exported with ``dt = 1`` by a discrete-time simulator is imported with
``dt = 1.0`` (ms).

Input convention. The input of a NIR neuron in one step is a value :math:`x_k` held over the
step (the convention of snnTorch's and Norse's exporters: a discrete model
:math:`v_{k+1} = \beta v_k + x_k` is written as ``tau = dt/(1-beta)``, ``r = tau/dt``). In brainsim
that is a :class:`~brainsim.PulseSynapse` through :class:`~brainsim.CurrentBased`: a spike of
weight ``w`` is a current ``w`` for one step.

Mapping (NIR node ↔ brainsim):

==================  ========================================================================
NIR                 brainsim
==================  ========================================================================
``Input``           a :class:`~brainsim.SpikeArray` population (values >= 0 per step)
``LIF``             :class:`~brainsim.LIF` ``tau_m = tau``, ``C_m = tau/r``, ``E_L = v_leak``,
                    ``V_th = v_threshold``, ``V_reset = v_reset``, ``t_ref = 0``; inputs on a
                    ``PulseSynapse`` receptor ``"in"``
``IF``              the same with ``tau_m = inf``, ``C_m = 1/r``, ``E_L = 0``
``CubaLIF``         :class:`~brainsim.LIF` as above with an
                    :class:`~brainsim.ExponentialSynapse` ``(tau_syn)`` receptor; weights
                    times ``w_in * dt / tau_syn`` (a held input :math:`x` adds
                    :math:`x\, w_{in} \Delta t/\tau_{syn}` to the synaptic current)
``LI``              :class:`~brainsim.LIF` with ``V_th = inf`` (never spikes); its output is
                    the membrane ``v`` (an ``Output`` only)
``I`` (integrator)  the same with ``tau_m = inf``, ``C_m = 1/r``
``Linear``          a :class:`~brainsim.Projection` with the dense matrix ``weight.T``
``Affine``          the same; ``bias`` becomes the target's constant current ``I_e``
``Scale``           a diagonal matrix
``Conv1d/Conv2d``   the convolution's dense matrix (:func:`conv_matrix`; exact, ``n_in × n_out``
                    weights), its bias as for ``Affine``
``Delay``           the projection's delay (ms, whole steps of ``dt``)
``SumPool2d``,      a per-channel convolution with a kernel of ones (:func:`pool_matrix`;
``AvgPool2d``       divided by the kernel's area for the average)
``Flatten``         nothing (brainsim populations are flat, C order)
``NIRGraph`` node   its nodes, named ``"outer.inner"`` (e.g. a recurrent subgraph); its one
                    ``Input`` and one ``Output`` pass values on
``Output``          a recording (spikes, or ``v`` of an ``LI``/``I``)
==================  ========================================================================

Chains of ``Linear``/``Affine``/``Scale``/``Conv``/pooling/``Delay``/``Flatten`` between two neuron nodes are
multiplied into one projection (exact: they are linear). Refused with a clear error:
``Threshold``, ``CubaLI``, a nested graph with several inputs or outputs, an
``Affine`` bias into a ``CubaLIF``, delays that
are not whole steps of ``dt``, per-channel delays after a matrix (a ``Delay`` right after a
source may differ per channel: each synapse gets its source channel's delay).

Spyx 1.0 writes its ``LIF`` layers with ``r = beta`` (its own importer ignores ``r``): read as
NIR, such a neuron's input gain per step is :math:`\Delta t\, r/\tau = (1-\beta)\beta`, not
Spyx's 1, so these graphs do not reproduce Spyx's runs until ``r`` is set to ``tau/dt`` (as
snnTorch writes it). Its ``IF`` layers (``r = 1``) map.

Discretisation. Neurons integrate with ``integrator`` (default :class:`~brainsim.Euler`):
:math:`v_{k+1} = v_k + \frac{\Delta t}{\tau}(v_{leak} - v_k + R\,x_k)`, the update of snnTorch,
Spyx and Norse; pass :class:`~brainsim.ExponentialEuler` for the exact solution with the input
held over the step. brainsim's :class:`~brainsim.ExponentialSynapse` integrates the synaptic
current exactly (its step average drives the membrane), while snnTorch's ``Synaptic`` uses
:math:`I_{k+1} = \alpha I_k + x_k`: ``CubaLIF`` graphs agree with those to first order in
``dt`` only. A neuron spikes when :math:`v \ge v_{threshold}` after the update (NIR and
Spyx write :math:`v > v_{threshold}`: the two differ only when the membrane lands exactly on
the threshold) and is set to
``v_reset`` (NIR's reset). snnTorch and Spyx reset by subtraction,
:math:`v \leftarrow v - v_{th}`, in their own runs, also of the graphs they export (which say
``v_reset``): ``from_nir(..., reset="subtract")`` reproduces those runs (tested spike for spike
on an IF network of Spyx 1.0 and a Leaky network of snnTorch 1.0). snnTorch's ``Leaky`` must
then reset in the step of the spike (``reset_delay=False``): with its default
``reset_delay=True`` it subtracts the threshold one step later, after the decay
(:math:`v_{k+1} = \beta v_k + x_k - v_{th} s_k`), which differs from any reset in the spike's
step by :math:`(1-\beta) v_{th}` per spike. snnTorch writes ``dt = 1e-4`` into its ``LIF``
nodes (``tau = 1e-4 / (1 - beta)``): import them with ``dt=1e-4``. The membrane starts at
``v_leak`` (``0`` for ``IF``).

Timing. A spike emitted in step :math:`k` reaches its targets in step :math:`k + 1 + d/\Delta t`
(brainsim's zero-delay convention), so every neuron layer adds one step between its input and
its spikes, as Spyx's neurons do (snnTorch's spike in the step of their input).

Example:
    >>> import brainsim.nir as bnir
    >>> graph = bnir.to_nir(network)
    >>> imported = bnir.from_nir(graph, dt=1.0, inputs={"input": x})  # x: (T, n) spikes
    >>> outputs = bnir.run(imported)  # {"output": (T, n_out) array}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import SimpleNamespace
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._integrators import AbstractIntegrator, Euler
from ._monitors import StateTrace
from ._network import Network, Population, Projection, Receptor
from ._neurons._base import AbstractSpikeSource, check_reset
from ._neurons.lif import LIF
from ._propagation import Dense
from ._simulate import simulate
from ._synapses.kinetics import ExponentialSynapse, PulseSynapse
from ._synapses.outputs import CurrentBased
from .connect import from_arrays

RECEPTOR = "in"
"""The receptor of an imported neuron population that all its projections target."""


def _nir():
    try:
        import nir
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "brainsim.nir needs the `nir` package: pip install 'brainsim[nir]'."
        ) from err
    return nir


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _scalar_or_all(x, n: int) -> np.ndarray:
    return np.broadcast_to(_arr(x), (n,)).copy()


# ----------------------------------------------------------------------------------- export


def _export_neuron(nir, pop: Population, network: Network):
    """The NIR node of an LIF population, or a ValueError saying why it does not map."""
    model, name, n = pop.model, pop.name, pop.size
    where = f"to_nir: population {name!r}"
    if not isinstance(model, LIF):
        raise ValueError(
            f"{where}: model {type(model).__name__} has no NIR node; only brainsim.LIF "
            "(NIR LIF, IF, CubaLIF) and spike sources (NIR Input) are exported."
        )
    p = {
        k: _scalar_or_all(getattr(model, k), n)
        for k in ("C_m", "tau_m", "E_L", "V_th", "V_reset", "t_ref", "I_e")
    }
    if np.any(p["t_ref"] != 0):
        raise ValueError(
            f"{where}: t_ref={model.t_ref} ms; NIR neurons have no refractory period. Use t_ref=0."
        )
    if model.reset != "value":
        raise ValueError(
            f"{where}: LIF(reset={model.reset!r}); a NIR neuron is set to v_reset when it spikes "
            "(snnTorch and Spyx apply their own subtractive reset to any graph they import). "
            "Use reset='value' to export."
        )
    if pop.currents:
        raise ValueError(
            f"{where}: injected currents ({len(pop.currents)}) have no NIR form; "
            "drive it through a projection from a spike source instead."
        )
    if pop.initial:
        raise ValueError(
            f"{where}: `initial` values {sorted(pop.initial)} have no NIR form "
            "(NIR membranes start at rest)."
        )
    kinetics = set()
    for rname, receptor in pop.receptors.items():
        if not isinstance(receptor.output, CurrentBased):
            raise ValueError(
                f"{where}: receptor {rname!r} is {type(receptor.output).__name__}; "
                "NIR neurons are current-based (brainsim.CurrentBased)."
            )
        k = receptor.kinetics
        if isinstance(k, PulseSynapse):
            kinetics.add(("pulse",))
        elif isinstance(k, ExponentialSynapse):
            kinetics.add(("exp", tuple(_scalar_or_all(k.tau, n))))
        else:
            raise ValueError(
                f"{where}: receptor {rname!r} has {type(k).__name__} kinetics; "
                "NIR has PulseSynapse (LIF/IF input) and ExponentialSynapse "
                "(CubaLIF) only."
            )
    if len(kinetics) > 1:
        raise ValueError(
            f"{where}: receptors with different kinetics {sorted(kinetics)}; a NIR "
            "neuron has one synaptic input."
        )
    r = p["tau_m"] / p["C_m"]
    if kinetics and next(iter(kinetics))[0] == "exp":
        if np.any(p["I_e"] != 0):
            raise ValueError(
                f"{where}: I_e={model.I_e} pA with an ExponentialSynapse; a NIR "
                "CubaLIF takes a bias only through its synapse. Use I_e=0."
            )
        tau_syn = _arr(next(iter(kinetics))[1])
        if np.any(np.isinf(p["tau_m"])):
            raise ValueError(
                f"{where}: tau_m=inf with an ExponentialSynapse (NIR CubaIF) is "
                "not supported; use a finite tau_m."
            )
        # A held input x adds x w_in dt / tau_syn to the current: w_in = tau_syn/dt makes a
        # spike of weight w add w, brainsim's jump (see the module docstring).
        return nir.CubaLIF(
            tau_syn=tau_syn,
            tau_mem=p["tau_m"],
            r=r,
            v_leak=p["E_L"],
            v_threshold=p["V_th"],
            v_reset=p["V_reset"],
            w_in=tau_syn / network.dt,
        )
    if np.all(np.isinf(p["tau_m"])):
        if np.any(p["E_L"] != 0):
            raise ValueError(
                f"{where}: a non-leaky LIF (NIR IF) starts at E_L={model.E_L} mV; "
                "NIR IF membranes start at 0. Use E_L=0."
            )
        return nir.IF(r=1.0 / p["C_m"], v_threshold=p["V_th"], v_reset=p["V_reset"])
    if np.any(np.isinf(p["tau_m"])):
        raise ValueError(
            f"{where}: tau_m is inf for some neurons only; NIR has one node "
            "type per population (LIF or IF)."
        )
    return nir.LIF(
        tau=p["tau_m"], r=r, v_leak=p["E_L"], v_threshold=p["V_th"], v_reset=p["V_reset"]
    )


def _projection_lags(proj: Projection) -> np.ndarray:
    """The projection's lag (steps) as one value, or a ValueError."""
    conn = proj.connectivity
    lags = getattr(conn, "distinct_delays", None)
    if lags is None:
        hom = getattr(conn, "homogeneous_delay", None)
        lags = (hom,) if hom is not None else None
    if lags is None or len(lags) != 1:
        raise ValueError(
            f"to_nir: projection {proj.name!r}: its synapses have different delays (or a "
            f"{type(conn).__name__} whose delays are not readable); NIR Delay nodes here are "
            "one value per projection. Use one delay for all its synapses."
        )
    return int(lags[0])


def _export_network(nir, network: Network, outputs):
    nodes, edges = {}, []
    for pop in network.populations:
        if isinstance(pop.model, AbstractSpikeSource):
            nodes[pop.name] = nir.Input(input_type={"input": np.array([pop.size])})
        else:
            nodes[pop.name] = _export_neuron(nir, pop, network)
    biased = set()
    for proj in network.projections:
        where = f"to_nir: projection {proj.name!r}"
        if proj.stp is not None or proj.plasticity is not None:
            raise ValueError(
                f"{where}: short-term or long-term plasticity has no NIR form; "
                "export the network with fixed weights."
            )
        if proj.modulator is not None or proj.modulator_population is not None:
            raise ValueError(f"{where}: a modulator has no NIR form.")
        w = np.asarray(proj.connectivity.to_dense(), dtype=np.float64)
        lag = _projection_lags(proj)
        src = proj.pre
        if lag > 1:
            key = f"{proj.name}.delay"
            n_pre = w.shape[0]
            nodes[key] = nir.Delay(delay=np.full((n_pre,), (lag - 1) * network.dt))
            edges.append((src, key))
            src = key
        key = f"{proj.name}.weight"
        bias = _scalar_or_all(
            getattr(network.populations[_index(network, proj.post)].model, "I_e", 0.0), w.shape[1]
        )
        if proj.post not in biased and np.any(bias != 0):
            # The constant current I_e is the bias of one incoming Affine (a held input).
            biased.add(proj.post)
            nodes[key] = nir.Affine(weight=w.T, bias=bias)
        else:
            nodes[key] = nir.Linear(weight=w.T)
        edges += [(src, key), (key, proj.post)]
    for pop in network.populations:
        model = pop.model
        if isinstance(model, LIF) and pop.name not in biased and np.any(_arr(model.I_e) != 0):
            raise ValueError(
                f"to_nir: population {pop.name!r}: I_e={model.I_e} pA with no "
                "incoming projection to carry it as an Affine bias. Use I_e=0."
            )
    if outputs is None:
        outputs = [
            p.name for p in network.populations if not isinstance(p.model, AbstractSpikeSource)
        ]
    for name in outputs:
        if name not in nodes or isinstance(nodes[name], nir.Input):
            raise ValueError(
                f"to_nir: `outputs` names {name!r}, which is not a neuron "
                "population of the network."
            )
        key = f"{name}.output"
        nodes[key] = nir.Output(output_type={"output": np.array([_size(network, name)])})
        edges.append((name, key))
    return nir.NIRGraph(
        nodes=nodes, edges=edges, metadata={"source": "brainsim", "dt": float(network.dt)}
    )


def _size(network, name):
    return network.populations[_index(network, name)].size


def _index(network, name):
    return next(i for i, p in enumerate(network.populations) if p.name == name)


def _export_rnn(nir, model, dt):
    """A :class:`brainsim.fit.SpikingRNN` as Input → Linear → LIF (→ Linear → LIF) → Affine → LI."""
    n_in, n = model.w_in.shape
    hidden_pop = Population("hidden", n, model.neuron)
    lif = _export_neuron(nir, hidden_pop, Network([hidden_pop], dt=dt))
    kappa = float(np.exp(-dt / float(model.tau_out)))
    # Euler of tau dv/dt = -v + r I with tau = dt/(1-kappa), r = tau/dt: v' = kappa v + I,
    # the readout filter of SpikingRNN.
    tau_li = dt / (1.0 - kappa)
    n_out = model.w_out.shape[1]
    nodes = {
        "input": nir.Input(input_type={"input": np.array([n_in])}),
        "w_in": nir.Linear(weight=_arr(model.w_in).T),
        "hidden": lif,
        "w_out": nir.Affine(weight=_arr(model.w_out).T, bias=_arr(model.b_out)),
        "readout": nir.LI(
            tau=np.full(n_out, tau_li), r=np.full(n_out, tau_li / dt), v_leak=np.zeros(n_out)
        ),
        "output": nir.Output(output_type={"output": np.array([n_out])}),
    }
    edges = [
        ("input", "w_in"),
        ("w_in", "hidden"),
        ("hidden", "w_out"),
        ("w_out", "readout"),
        ("readout", "output"),
    ]
    if model.w_rec is not None:
        nodes["w_rec"] = nir.Linear(weight=_arr(model.w_rec).T)
        edges += [("hidden", "w_rec"), ("w_rec", "hidden")]
    return nir.NIRGraph(
        nodes=nodes, edges=edges, metadata={"source": "brainsim.fit.SpikingRNN", "dt": float(dt)}
    )


def to_nir(network, *, outputs=None, dt: float | None = None):
    """Export ``network`` as a ``nir.NIRGraph`` (mapping in the module docstring).

    Arguments:
        network: a :class:`~brainsim.Network` of spike sources and :class:`~brainsim.LIF`
            populations, or a :class:`brainsim.fit.SpikingRNN` (then ``dt`` (ms) is required:
            its readout's decay per step depends on it).
        outputs: names of populations that get an ``Output`` node ``"<name>.output"``
            (default: every neuron population).

    A constant current ``I_e`` becomes the bias of the population's first incoming
    projection (an ``Affine``). Anything without an exact NIR form (other neuron models,
    refractoriness, injected currents, conductance-based or other synapse kinetics,
    plasticity, per-synapse delays) raises a ValueError naming the population or projection.

    A SpikingRNN is written as ``input → w_in → hidden (→ w_rec → hidden) → w_out (Affine,
    b_out) → readout (LI) → output``; the LI node's Euler step is the model's readout filter
    :math:`y_k = \\kappa y_{k-1} + u_k`, :math:`\\kappa = e^{-\\Delta t/\\tau_{out}}`. Its input
    current acts in the step of its row, an imported ``Input`` one step later (a projection):
    :func:`from_nir` of the graph gives the model's hidden spikes one step later and its
    readout two steps later.
    """
    nir = _nir()
    from .fit._online import SpikingRNN

    if isinstance(network, SpikingRNN):
        if dt is None:
            raise ValueError(
                "to_nir: a SpikingRNN needs `dt` (ms), the step its readout "
                "decay exp(-dt/tau_out) is defined for; e.g. dt=1.0."
            )
        return _export_rnn(nir, network, float(dt))
    if not isinstance(network, Network):
        raise TypeError(
            f"to_nir: `network` must be a brainsim.Network or a "
            f"brainsim.fit.SpikingRNN; got {type(network).__name__}."
        )
    return _export_network(nir, network, outputs)


# ----------------------------------------------------------------------------------- import


class Imported(NamedTuple):
    """What :func:`from_nir` returns."""

    network: Network
    """The network; its ``Input`` populations are :class:`~brainsim.SpikeArray` sources."""
    inputs: tuple[str, ...]
    """Names of the ``Input`` nodes (= their populations)."""
    outputs: dict[str, tuple[str, str]]
    """Per ``Output`` node: ``(population, "spikes")`` or ``(population, "v")``."""
    n_steps: int
    """Number of input rows (the default length of :func:`run`)."""


_NEURONS = ("LIF", "IF", "CubaLIF", "LI", "I")
_PASS = (
    "SumPool2d",
    "AvgPool2d",
    "Linear",
    "Affine",
    "Scale",
    "Delay",
    "Flatten",
    "Conv1d",
    "Conv2d",
    "_Identity",
)


def _size_of(node) -> int:
    shape = next(iter(node.output_type.values()))
    return int(np.prod(np.asarray(shape)))


def _import_neuron(nir, key, node, integrator, dt, reset):
    """``(LIF model, kinetics or None, synaptic weight factor, emits spikes)``."""
    kind = type(node).__name__
    n = _size_of(node)
    common = dict(t_ref=0.0, integrator=integrator)
    spiking = dict(common, reset=reset)
    if isinstance(node, nir.LIF | nir.CubaLIF):
        tau = _arr(node.tau if isinstance(node, nir.LIF) else node.tau_mem).ravel()
        r = _arr(node.r).ravel()
        model = LIF(
            C_m=tau / r,
            tau_m=tau,
            E_L=_arr(node.v_leak).ravel(),
            V_th=_arr(node.v_threshold).ravel(),
            V_reset=_arr(node.v_reset).ravel(),
            **spiking,
        )
        if isinstance(node, nir.CubaLIF):
            tau_syn = _arr(node.tau_syn).ravel()
            factor = _arr(node.w_in).ravel() * dt / tau_syn
            return model, ExponentialSynapse(tau_syn), factor, True
        return model, PulseSynapse(), np.ones(n), True
    if isinstance(node, nir.IF):
        model = LIF(
            C_m=1.0 / _arr(node.r).ravel(),
            tau_m=math.inf,
            E_L=0.0,
            V_th=_arr(node.v_threshold).ravel(),
            V_reset=_arr(node.v_reset).ravel(),
            **spiking,
        )
        return model, PulseSynapse(), np.ones(n), True
    if isinstance(node, nir.LI):
        tau = _arr(node.tau).ravel()
        model = LIF(
            C_m=tau / _arr(node.r).ravel(),
            tau_m=tau,
            E_L=_arr(node.v_leak).ravel(),
            V_th=math.inf,
            V_reset=0.0,
            **common,
        )
        return model, PulseSynapse(), np.ones(n), False
    if isinstance(node, nir.I):
        model = LIF(
            C_m=1.0 / _arr(node.r).ravel(),
            tau_m=math.inf,
            E_L=0.0,
            V_th=math.inf,
            V_reset=0.0,
            **common,
        )
        return model, PulseSynapse(), np.ones(n), False
    raise AssertionError(kind)  # pragma: no cover


class _Identity(NamedTuple):
    """The ``Input``/``Output`` node of a nested graph, once flattened: passes values on."""

    output_type: dict


class _Flat(NamedTuple):
    nodes: dict
    edges: list


def _flatten(nir, graph, where="from_nir") -> _Flat:
    """``graph`` with every nested ``NIRGraph`` node replaced by its nodes (named
    ``"outer.inner"``); the inner ``Input``/``Output`` nodes pass their values on."""
    nodes, ends, edges = {}, {}, []
    for key, node in graph.nodes.items():
        if not isinstance(node, nir.NIRGraph):
            nodes[key] = node
            continue
        inner = _flatten(nir, node, f"{where}: subgraph {key!r}")
        ins = [k for k, v in node.nodes.items() if isinstance(v, nir.Input)]
        outs = [k for k, v in node.nodes.items() if isinstance(v, nir.Output)]
        if len(ins) != 1 or len(outs) != 1:
            raise NotImplementedError(
                f"{where}: subgraph {key!r} has Input nodes {ins} and Output nodes {outs}; "
                "only subgraphs with one of each are flattened."
            )
        for k, v in inner.nodes.items():
            if k in (ins[0], outs[0]):
                v = _Identity({"output": _shape(v)})
            nodes[f"{key}.{k}"] = v
        ends[key] = (f"{key}.{ins[0]}", f"{key}.{outs[0]}")
        edges += [(f"{key}.{a}", f"{key}.{b}") for a, b in inner.edges]
    for a, b in graph.edges:
        edges.append((ends[a][1] if a in ends else a, ends[b][0] if b in ends else b))
    return _Flat(nodes, edges)


def _shape(node):
    """The shape of an ``Input``/``Output`` node's values."""
    types = [t for t in (node.output_type, node.input_type) if t]
    for t in types:
        shape = next(iter(t.values()))
        if shape is not None:
            return np.asarray(shape)
    raise ValueError(f"from_nir: a subgraph's {type(node).__name__} node has no shape.")


def _refuse(key, node):
    kind = type(node).__name__
    raise ValueError(
        f"from_nir: node {key!r} is a {kind}, which has no exact brainsim form; supported: "
        f"Input, Output, {', '.join(_NEURONS + _PASS)}."
    )


def _paths(nir, graph, start, dt):
    """Every way from node ``start`` through linear nodes to a neuron or Output node:
    ``(target, matrix (n_start, n_target), bias or None, delay per start channel)``."""
    n0 = _size_of(graph.nodes[start])
    out = {}
    for a, b in graph.edges:
        out.setdefault(a, []).append(b)
    results = []

    def walk(key, w, bias, delay, seen):
        for nxt in out.get(key, []):
            node = graph.nodes[nxt]
            where = f"from_nir: node {nxt!r}"
            if isinstance(node, nir.Output) or type(node).__name__ in _NEURONS:
                results.append((nxt, w, bias, delay))
                continue
            if nxt in seen:
                raise ValueError(f"{where}: a loop of linear nodes without a neuron in it.")
            if isinstance(node, nir.Linear | nir.Affine):
                m = _arr(node.weight)
                if m.ndim != 2 or m.shape[1] != w.shape[1]:
                    raise ValueError(
                        f"{where}: weight of shape {m.shape} after {w.shape[1]} "
                        "values; a 2-D (out, in) weight that takes them maps."
                    )
                w2, b2 = w @ m.T, None if bias is None else m @ bias
                if isinstance(node, nir.Affine):
                    b2 = _arr(node.bias) if b2 is None else b2 + _arr(node.bias)
                walk(nxt, w2, b2, delay, seen | {nxt})
            elif isinstance(node, nir.Conv1d | nir.Conv2d):
                a, conv_bias = conv_matrix(node, where)
                if w.shape[1] != a.shape[0]:
                    raise ValueError(
                        f"{where}: takes {a.shape[0]} values; its input has {w.shape[1]}."
                    )
                b2 = None if bias is None else a.T @ bias
                if conv_bias is not None:
                    b2 = conv_bias if b2 is None else b2 + conv_bias
                walk(nxt, w @ a, b2, delay, seen | {nxt})
            elif isinstance(node, nir.SumPool2d | nir.AvgPool2d):
                shape = node.input_type.get("input") if node.input_type else None
                if shape is None:
                    shape = _out_shape(graph.nodes[key])
                a = pool_matrix(node, shape, where)
                if w.shape[1] != a.shape[0]:
                    raise ValueError(
                        f"{where}: pools an input of shape {tuple(shape)} ({a.shape[0]} "
                        f"values); its input has {w.shape[1]}."
                    )
                walk(nxt, w @ a, None if bias is None else a.T @ bias, delay, seen | {nxt})
            elif isinstance(node, nir.Scale):
                s = _arr(node.scale).ravel()
                walk(nxt, w * s, None if bias is None else bias * s, delay, seen | {nxt})
            elif isinstance(node, nir.Flatten | _Identity):
                walk(nxt, w, bias, delay, seen | {nxt})
            elif isinstance(node, nir.Delay):
                d = _arr(node.delay).ravel()
                if w.shape[1] != w.shape[0] or not np.array_equal(w, np.eye(len(w))):
                    if not np.all(d == d[0]):
                        raise ValueError(
                            f"{where}: per-channel delays after a matrix; only a "
                            "Delay on a source's channels or one value maps."
                        )
                    d = np.full(n0, d[0])
                walk(nxt, w, bias, delay + d, seen | {nxt})
            else:
                _refuse(nxt, node)

    walk(start, np.eye(n0), None, np.zeros(n0), {start})
    return results


def _out_shape(node):
    """The shape of a node's output, or None where the node does not say."""
    types = getattr(node, "output_type", None) or {}
    shape = next(iter(types.values()), None)
    return None if shape is None else tuple(int(d) for d in np.asarray(shape))


def pool_matrix(node, input_shape, where: str = "pool_matrix"):
    """The dense matrix (inputs × outputs, C order) of a NIR ``SumPool2d``/``AvgPool2d``
    on an input of shape ``(C, H, W)``: a per-channel convolution with a kernel of ones
    (divided by the kernel's area for the average; zero padding counts, as in PyTorch)."""
    if input_shape is None or len(input_shape) != 3:
        raise ValueError(
            f"{where}: pooling needs its input's shape (C, H, W); got {input_shape}. Set the "
            "node's input_type (e.g. graph.infer_types())."
        )
    c, h, w = (int(d) for d in input_shape)
    kh, kw = (int(k) for k in np.broadcast_to(np.asarray(node.kernel_size), (2,)))
    kernel = np.ones((c, 1, kh, kw))
    if isinstance(node, _nir().AvgPool2d):
        kernel /= kh * kw
    conv = SimpleNamespace(
        weight=kernel,
        input_shape=(h, w),
        stride=tuple(int(x) for x in np.broadcast_to(np.asarray(node.stride), (2,))),
        padding=tuple(int(x) for x in np.broadcast_to(np.asarray(node.padding), (2,))),
        dilation=1,
        groups=c,
        bias=None,
    )
    return conv_matrix(conv, where)[0]


def conv_matrix(node, where: str = "conv_matrix"):
    """The dense matrix ``A`` (inputs × outputs, C order) and the per-output bias of a NIR
    ``Conv1d``/``Conv2d`` (cross-correlation, as PyTorch: padding symmetric or ``"same"``
    (extra on the high side) / ``"valid"``, stride, dilation, groups): ``y = x A + b``."""
    weight = _arr(node.weight)
    one_d = weight.ndim == 3
    if node.input_shape is None:
        raise ValueError(
            f"{where}: the convolution has no `input_shape`; set it (or call "
            "graph.infer_types()) so that its matrix is defined."
        )
    spatial = (int(node.input_shape), 1) if one_d else tuple(int(d) for d in node.input_shape)
    if one_d:
        weight = weight[..., None]

    def pair(v, fill):
        """One value per spatial axis (the second axis of a Conv1d is a dummy of size 1)."""
        if one_d:
            return (int(v), fill)
        return tuple(int(x) for x in np.broadcast_to(np.asarray(v), (2,)))

    stride, dilation = pair(node.stride, 1), pair(node.dilation, 1)
    c_out, c_in_group, kh, kw = weight.shape
    groups = int(node.groups)
    c_in = c_in_group * groups
    if node.padding == "valid":
        pads = ((0, 0), (0, 0))
    elif node.padding == "same":
        if stride != (1, 1):
            raise ValueError(
                f"{where}: padding 'same' with stride {node.stride}; PyTorch and "
                "NIR define it for stride 1 only."
            )
        total = (dilation[0] * (kh - 1), dilation[1] * (kw - 1))
        pads = tuple((t // 2, t - t // 2) for t in total)
    else:
        p0, p1 = pair(node.padding, 0)
        pads = ((p0, p0), (p1, p1))
    n_in = c_in * spatial[0] * spatial[1]
    x = np.eye(n_in).reshape(n_in, c_in, *spatial)
    x = np.pad(x, ((0, 0), (0, 0), *pads))
    out_hw = [
        (x.shape[2 + i] - dilation[i] * (k - 1) - 1) // stride[i] + 1
        for i, k in enumerate((kh, kw))
    ]
    y = np.zeros((n_in, c_out, *out_hw))
    per_out = c_out // groups
    for i in range(kh):
        for j in range(kw):
            patch = x[
                :,
                :,
                i * dilation[0] : i * dilation[0] + stride[0] * (out_hw[0] - 1) + 1 : stride[0],
                j * dilation[1] : j * dilation[1] + stride[1] * (out_hw[1] - 1) + 1 : stride[1],
            ]
            for g in range(groups):
                ins = slice(g * c_in_group, (g + 1) * c_in_group)
                outs = slice(g * per_out, (g + 1) * per_out)
                y[:, outs] += np.einsum("nchw,oc->nohw", patch[:, ins], weight[outs, :, i, j])
    bias = None if node.bias is None else _arr(node.bias).ravel()
    if bias is not None and np.any(bias != 0):
        bias = np.repeat(bias, out_hw[0] * out_hw[1])
    else:
        bias = None  # (a zero bias is no bias: it may then precede a CubaLIF)
    return y.reshape(n_in, -1), bias


def _steps(delay, dt, where) -> np.ndarray:
    steps = np.round(delay / dt)
    if not np.allclose(steps * dt, delay, rtol=0, atol=1e-9 * max(1.0, float(np.max(delay)))):
        raise ValueError(
            f"{where}: delays {np.unique(delay)} are not whole steps of dt={dt}; "
            "choose a dt that divides them."
        )
    return steps


def from_nir(
    graph, *, dt: float, inputs, integrator: AbstractIntegrator | None = None, reset: str = "value"
) -> Imported:
    """Build a :class:`~brainsim.Network` from the NIR graph ``graph``.

    Arguments:
        graph: a ``nir.NIRGraph`` (e.g. ``nir.read(path)``).
        dt: the step (ms); NIR times are read as ms (module docstring).
        inputs: per ``Input`` node, its ``(T, n)`` per-step input (>= 0: spikes or counts), a
            mapping from node name to array; one array for a graph with one ``Input``.
        integrator: the neurons' integrator (default :class:`~brainsim.Euler`, the update of
            snnTorch/Spyx/Norse; :class:`~brainsim.ExponentialEuler` for the exact one).
        reset: the spiking neurons' reset: ``"value"`` (default), NIR's: set to ``v_reset``;
            ``"subtract"``: lowered by ``v_threshold - v_reset`` (:class:`~brainsim.LIF`
            ``reset="subtract"``), what snnTorch and Spyx do when they run the model they
            exported (their exporters still write NIR's reset), so an imported graph of theirs
            spikes as their own run of it.

    Returns an :class:`Imported` (``network``, ``inputs``, ``outputs``, ``n_steps``); run it
    with :func:`run`.
    """
    nir = _nir()
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"from_nir: `graph` must be a nir.NIRGraph; got {type(graph).__name__}.")
    integrator = Euler() if integrator is None else integrator
    check_reset(reset, "from_nir")
    graph = _flatten(nir, graph)
    input_keys = [k for k, v in graph.nodes.items() if isinstance(v, nir.Input)]
    if not isinstance(inputs, Mapping):
        if len(input_keys) != 1:
            raise ValueError(
                f"from_nir: the graph has Input nodes {input_keys}; pass `inputs` "
                "as a mapping from each name to its (T, n) array."
            )
        inputs = {input_keys[0]: inputs}
    if sorted(inputs) != sorted(input_keys):
        raise ValueError(
            f"from_nir: `inputs` has {sorted(inputs)}; the graph's Input nodes "
            f"are {sorted(input_keys)}. Give one (T, n) array for each."
        )
    for key, node in graph.nodes.items():
        if not isinstance(node, nir.Input | nir.Output) and type(node).__name__ not in (
            _NEURONS + _PASS
        ):
            _refuse(key, node)
    pops, models, spiking = {}, {}, {}
    n_steps = None
    for key in input_keys:
        x = jnp.asarray(inputs[key])
        n = _size_of(graph.nodes[key])
        if x.ndim != 2 or x.shape[1] != n:
            raise ValueError(
                f"from_nir: `inputs[{key!r}]` must have shape (T, {n}); got {x.shape}."
            )
        if not isinstance(x, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(x) & (x >= 0))):
            raise ValueError(
                f"from_nir: `inputs[{key!r}]` must be finite and >= 0 (spikes or "
                "counts per step: an Input feeds a spike source); got values in "
                f"[{float(jnp.min(x))}, {float(jnp.max(x))}]."
            )
        n_steps = x.shape[0] if n_steps is None else max(n_steps, x.shape[0])
        models[key] = ("source", x)
        spiking[key] = True
    for key, node in graph.nodes.items():
        if type(node).__name__ in _NEURONS:
            model, kinetics, factor, spikes = _import_neuron(nir, key, node, integrator, dt, reset)
            models[key] = (model, kinetics, factor)
            spiking[key] = spikes
    biases: dict[str, np.ndarray] = {}
    projections, outputs = [], {}
    for start in models:
        for target, w, bias, delay in _paths(nir, graph, start, dt):
            node = graph.nodes[target]
            if isinstance(node, nir.Output):
                if (
                    models[start][0] == "source"
                    or not np.array_equal(w, np.eye(len(w)))
                    or bias is not None
                    or np.any(delay != 0)
                ):
                    raise ValueError(
                        f"from_nir: Output {target!r} is reached from {start!r} "
                        "through linear nodes or directly from an Input; only a "
                        "neuron node's own output is recorded."
                    )
                outputs[target] = (start, "spikes" if spiking[start] else "v")
                continue
            if not spiking[start]:
                raise ValueError(
                    f"from_nir: node {start!r} ({type(graph.nodes[start]).__name__}"
                    f") feeds {target!r}; its output is a membrane value, not "
                    "spikes, and only an Output may follow it."
                )
            _, kinetics, factor = models[target]
            if w.shape[1] != len(factor):
                raise ValueError(
                    f"from_nir: {w.shape[1]} values from {start!r} reach "
                    f"{target!r}, which has {len(factor)} neurons."
                )
            if bias is not None:
                if isinstance(kinetics, ExponentialSynapse):
                    raise ValueError(
                        f"from_nir: an Affine bias into CubaLIF {target!r}; a "
                        "constant input through a synaptic filter has no exact "
                        "brainsim form (it rises from 0)."
                    )
                biases[target] = biases.get(target, 0.0) + bias
            w = w * factor[None, :]
            steps = _steps(delay, dt, f"from_nir: edge {start!r} -> {target!r}")
            pre, post = np.nonzero(np.ones_like(w, dtype=bool))
            conn = from_arrays(
                pre,
                post,
                n_pre=w.shape[0],
                n_post=w.shape[1],
                weight=w[pre, post],
                delay=steps[pre] * dt,
            )
            projections.append(
                Projection(
                    start,
                    target,
                    conn,
                    receptor=RECEPTOR,
                    layout=Dense(),
                    name=f"{start}->{target}",
                )
            )
    for key, spec in models.items():
        n = _size_of(graph.nodes[key])
        if spec[0] == "source":
            from ._inputs import SpikeArray

            pops[key] = Population(key, n, SpikeArray(spec[1]))
            continue
        model, kinetics, _ = spec
        if key in biases:
            model = LIF(
                C_m=model.C_m,
                tau_m=model.tau_m,
                E_L=model.E_L,
                V_th=model.V_th,
                V_reset=model.V_reset,
                t_ref=0.0,
                I_e=jnp.asarray(biases[key]),
                integrator=integrator,
            )
        pops[key] = Population(
            key, n, model, receptors={RECEPTOR: Receptor(kinetics, CurrentBased())}
        )
    network = Network(list(pops.values()), projections, dt=dt)
    return Imported(network, tuple(input_keys), outputs, int(n_steps or 0))


def run(imported: Imported, n_steps: int | None = None, *, dtype=None):
    """Simulate an :func:`from_nir` network: ``{output name: (n_steps, n) array}`` of spikes
    (0/1 per step) or membrane values (``LI``/``I`` nodes, after each step)."""
    from .fit._recording import SpikeTrain

    n_steps = imported.n_steps if n_steps is None else n_steps
    names = list(imported.outputs)
    record = tuple(
        SpikeTrain(pop) if what == "spikes" else StateTrace(pop, "v")
        for pop, what in (imported.outputs[k] for k in names)
    )
    net = imported.network
    # StateTrace samples at the start of a step: one step more gives v after each step.
    result = simulate(
        net, n_steps=n_steps + 1, state=net.init(jax.random.key(0), dtype=dtype), record=record
    )
    return {
        k: result.recordings[i][:n_steps]
        if imported.outputs[k][1] == "spikes"
        else result.recordings[i][1:]
        for i, k in enumerate(names)
    }
