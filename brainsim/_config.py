r"""Experiment configs: a whole network, its run and what to record, as TOML data.

A config file describes populations, receptors, injected currents, projections, the run and
the recording; :func:`load_config` turns it into an :class:`Experiment` holding a built
:class:`~brainsim.Network`. ``brainsim run CONFIG.toml`` runs one from the shell. Names in a
config (``"LIF"``, ``"ExponentialSynapse"``, ``"fixed_probability"``, ``"sparse"``) are looked up
in the single registry of this module (:func:`registry`); the library itself never looks
classes up by string.

Format (units: ms, mV, pF, nS, pA, Hz)::

    description = "optional text, printed by `brainsim run`"

    [simulation]
    duration_ms = 1000.0        # a whole number of steps
    dt_ms = 0.1
    seed = 0                    # optional (default 0); drives connectivity and the run

    [populations.E]             # populations are created in file order
    size = 3200
    model = "LIF"               # neuron: LIF, ALIF, AdEx, Izhikevich, HodgkinHuxley, TraubMiles,
                                # ExpIF, QIF; spike source: PoissonSource, SpikeGenerator,
                                # SpikeArray (spikes = [[0, 1, ...], ...], one row per step)
    params = { C_m = 200.0, tau_m = 20.0, E_L = -60.0, V_th = -50.0, V_reset = -60.0,
               t_ref = 5.0, I_e = 200.0 }   # constructor arguments: a number or one per neuron
    initial = { v = { uniform = [-60.0, -50.0] } }  # number, list, {uniform = [lo, hi]},
                                                     # {normal = [mean, std]}, {constant = x}
    currents = [ { type = "StepCurrent", times = [100.0, 200.0], amplitudes = [50.0, 0.0] } ]

    [populations.E.receptors.exc]
    kinetics = { type = "ExponentialSynapse", tau = 5.0 }
    output = { type = "ConductanceBased", E_rev = 0.0 }

    [populations.noise]
    size = 100
    model = "PoissonSource"
    params = { rate = 5.0 }     # or rate = { type = "TimedArray", values = [...], dt = 10.0 }

    [[projections]]
    pre = "E"
    post = "E"
    receptor = "exc"
    connect = { type = "fixed_probability", p = 0.02, weight = 6.0, delay = 1.0 }
    layout = "sparse"           # or "dense", "csr", or { type = "sparse", chunk_size = 16 }
    stp = { type = "TsodyksMarkram", U = 0.5, tau_rec = 800.0 }   # optional
    round_delays = false        # optional
    name = "E->E:exc"           # optional (this is the default)
    plasticity = { type = "PairSTDP", A_plus = 1e-4, A_minus = 1.05e-4,
                   weight_dependence = { type = "Additive", w_max = 0.01 } }  # optional
    modulator = "reward"        # optional: RewardModulatedSTDP's signal, a population name
                                # (its spike count per step) or a current table (TimedArray)

    [record]                    # optional
    spikes = true               # all populations (default), false, or a list of names
    traces = [ { population = "E", variable = "v", neurons = [0, 1, 2], every = 10 } ]
    weights = [ { projection = "E->E:exc", synapses = [[0, 1], [2, 3]], every = 100 } ]

(The format sketch breaks long inline tables over lines; TOML itself wants each inline table
on one line, or a ``[projections.plasticity]`` sub-table.)

Long-term plasticity (:mod:`brainsim.plasticity`): ``plasticity`` is one rule (``PairSTDP``,
``TripletSTDP``, ``SymmetricSTDP``, ``RewardModulatedSTDP``, ``PowerLawSTDP``,
``SynapticScaling``, ``Normalization``) or an array of rules applied in that order
(:func:`brainsim.plasticity.chain`); its ``weight_dependence`` is ``Additive``,
``Multiplicative`` or ``Gutig``. Plastic weights need a ``dense`` or ``sparse`` layout.
``[record] weights`` records them (:class:`~brainsim.WeightTrace`; ``synapses`` omitted: the
whole stored array), and ``brainsim run`` saves every plastic projection's final weights. The
neuron wrapper ``AdaptiveThreshold`` is a population model whose ``params.model`` is the
wrapped model (a name or a table). A modulator computed by Python code cannot be written in
TOML: build such a projection with the Python API.

A whole standard network can instead come from a named builder of :mod:`brainsim.networks`
(``coba``, ``cuba``, ``cobahh``, ``potjans_diesmann``); its other keys are the builder's
arguments, ``dt`` and ``seed`` come from ``[simulation]``, and there are no ``populations`` or
``projections``::

    [network]
    builder = "potjans_diesmann"
    scale = 0.1
    layout = "sparse"

Object values (kinetics, output, stp, currents, layout, plasticity rules and their
``weight_dependence``, a model's ``surrogate`` and ``integrator``) are either a name
(``output = "CurrentBased"``, ``integrator = "RK4"``) or a table whose ``type`` is the name
and whose other keys are the constructor's arguments. Connection
``weight`` and ``delay`` are a number, one value per synapse, or a distribution
(``{ normal = [mean, std] }``, ``{ uniform = [low, high] }``) drawn per synapse.

Your own classes and functions: wherever a config names a model, kinetics, output, current,
integrator, surrogate, layout, plasticity rule, weight dependence, connectivity builder or
network builder, an entry point ``"package.module:Name"`` names yours instead (``model =
"my_models:NoisyLIF"``, ``kinetics = { type = "my_models:Biexp", tau = 3.0 }``). The module is
imported as Python imports it, or else from the config file's folder; the object must be a
subclass of the matching base class of :mod:`brainsim.extend` (a function for builders), and
its arguments are checked against its signature like a built-in's.

Seeds: the projection from the ``i``-th to the ``j``-th population (file order) is drawn with
the NumPy seed ``[seed, i, j]`` (a further projection between the same pair ``[seed, i, j, k]``,
``k = 1, 2, ...``), so editing one projection never changes another's synapses and the
networks of :mod:`brainsim.networks` are reproduced exactly; ``connect.seed`` overrides it. The
simulation key is ``jax.random.key(seed)``.

Every mistake raises :class:`ConfigError` naming the file, the key path (e.g.
``populations.E.params.tau_mm``) and what is expected, with the closest valid name; unknown
keys are errors, never ignored.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import inspect
import math
import os
import re
import tomllib
from collections.abc import Callable
from typing import Any

import numpy as np

from ._errors import closest as _closest_by_spelling
from ._monitors import AbstractMonitor, SpikeRaster, StateTrace, WeightTrace
from ._network import Network, Population, Projection, Receptor
from ._neurons._base import default_dtype
from ._propagation import CsrConnectivity, DenseConnectivity, EllConnectivity
from ._timing import Timing

NEURON_MODELS = ("LIF", "ALIF", "AdEx", "Izhikevich", "HodgkinHuxley", "TraubMiles", "ExpIF", "QIF")
NEURON_WRAPPERS = ("AdaptiveThreshold",)
"""Models of :mod:`brainsim.plasticity` that wrap another neuron model (``params.model``)."""
PLASTICITY_RULES = (
    "PairSTDP",
    "TripletSTDP",
    "SymmetricSTDP",
    "RewardModulatedSTDP",
    "PowerLawSTDP",
    "SynapticScaling",
    "Normalization",
)
WEIGHT_DEPENDENCES = ("Additive", "Multiplicative", "Gutig")


class ConfigError(ValueError):
    """An invalid config. The message names the file, the key path and what is expected."""


def _uniform_edges(low, high):
    return lambda rng, size: rng.uniform(low, high, size)


def _normal_edges(mean, std):
    return lambda rng, size: rng.normal(mean, std, size)


@functools.cache
def registry() -> dict[str, dict[str, Callable]]:
    """The one table from config names to brainsim classes and functions, by kind.

    Built on first use from what ``brainsim`` exports, so neuron models added to the package
    appear here without further changes. To use your own class in configs, name it by its
    entry point (``model = "my_models:MyNeuron"``), or add it here:
    ``registry()["neuron"]["MyNeuron"] = MyNeuron``.
    """
    import brainsim as bs

    from . import connect, init, networks, surrogate
    from . import plasticity as pl

    def present(module, names):
        return {n: getattr(module, n) for n in names if hasattr(module, n)}

    return {
        "neuron": {**present(bs, NEURON_MODELS), **present(pl, NEURON_WRAPPERS)},
        "source": present(bs, ("PoissonSource", "SpikeGenerator", "SpikeArray")),
        "kinetics": present(
            bs, ("ExponentialSynapse", "AlphaSynapse", "DualExponentialSynapse", "PulseSynapse")
        ),
        "output": present(bs, ("CurrentBased", "ConductanceBased", "NMDA")),
        "stp": present(bs, ("TsodyksMarkram",)),
        "current": present(bs, ("ConstantCurrent", "StepCurrent", "TimedArray")),
        "rate": present(bs, ("TimedArray",)),
        "integrator": present(bs, ("Euler", "Heun", "RK2", "RK4", "ExponentialEuler", "Exact")),
        "surrogate": present(
            surrogate,
            ("FastSigmoid", "Sigmoid", "Arctan", "Triangle", "Exponential", "Rectangular"),
        ),
        "initializer": {"constant": init.Constant, "uniform": init.Uniform, "normal": init.Normal},
        "edge_distribution": {"uniform": _uniform_edges, "normal": _normal_edges},
        "connect": present(
            connect,
            (
                "all_to_all",
                "one_to_one",
                "fixed_probability",
                "fixed_indegree",
                "fixed_outdegree",
                "fixed_total_number",
                "from_arrays",
            ),
        ),
        "layout": {"sparse": bs.Sparse, "dense": bs.Dense, "csr": bs.CSR},
        "plasticity": present(pl, PLASTICITY_RULES),
        "weight_dependence": present(pl, WEIGHT_DEPENDENCES),
        "network": present(networks, ("coba", "cuba", "cobahh", "potjans_diesmann")),
    }


def _entry_point_kind(kind: str) -> tuple[str, Callable[[Any], bool]]:
    """``(what the key takes, in words; a test of it)`` for a user's entry point of ``kind``:
    a subclass of the matching brainsim base class, or a function for builders."""
    from . import extend as bx
    from . import init
    from . import plasticity as pl

    bases = {
        "neuron": ((bx.AbstractNeuron, "brainsim.extend.AbstractNeuron"),
                   (bx.AbstractSpikeSource, "brainsim.extend.AbstractSpikeSource")),
        "source": ((bx.AbstractSpikeSource, "brainsim.extend.AbstractSpikeSource"),),
        "kinetics": ((bx.AbstractKinetics, "brainsim.extend.AbstractKinetics"),),
        "output": ((bx.AbstractOutput, "brainsim.extend.AbstractOutput"),),
        "current": ((bx.AbstractCurrent, "brainsim.extend.AbstractCurrent"),),
        "integrator": ((bx.AbstractIntegrator, "brainsim.extend.AbstractIntegrator"),),
        "surrogate": ((bx.AbstractSurrogate, "brainsim.extend.AbstractSurrogate"),),
        "initializer": ((init.AbstractInitializer, "brainsim.init.AbstractInitializer"),),
        "layout": ((bx.AbstractLayout, "brainsim.extend.AbstractLayout"),),
        "plasticity": ((bx.AbstractPlasticity, "brainsim.extend.AbstractPlasticity"),),
        "weight_dependence": (
            (pl.AbstractWeightDependence, "brainsim.plasticity.AbstractWeightDependence"),
        ),
    }  # fmt: skip
    if kind in bases:
        classes = tuple(c for c, _ in bases[kind])
        what = "a subclass of " + " or ".join(name for _, name in bases[kind])
        return what, lambda obj: isinstance(obj, type) and issubclass(obj, classes)
    words = {
        "connect": "a connectivity builder (a function returning brainsim.connect.Edges)",
        "network": "a network builder (a function returning a brainsim.Network)",
    }
    what = words.get(kind, f"a {_KIND_WORDS.get(kind, kind)} (a class or function)")
    return what, callable


def _described(obj) -> str:
    if isinstance(obj, type):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    if callable(obj):
        return f"the function {getattr(obj, '__qualname__', obj)!r}"
    return f"a {type(obj).__name__} value"


_KIND_WORDS = {
    "neuron": "model (neuron or spike source)",
    "source": "spike source",
    "kinetics": "synaptic kinetics",
    "output": "receptor output",
    "stp": "short-term plasticity rule",
    "current": "current",
    "rate": "time-varying rate",
    "integrator": "integrator",
    "surrogate": "surrogate function",
    "initializer": "initial-value distribution",
    "edge_distribution": "weight/delay distribution",
    "connect": "connectivity builder",
    "layout": "layout",
    "network": "network builder",
    "plasticity": "plasticity rule",
    "weight_dependence": "weight dependence",
}

# Array arguments that hold indices, not quantities: kept integer instead of cast to float.
_INDEX_ARGUMENTS = frozenset({"indices", "pre", "post", "neurons"})


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A loaded config: the built network, the run and the recording.

    Example:
        >>> exp = bs.load_config("configs/coba.toml")
        >>> result = exp.simulate()
        >>> result.rate("E")
    """

    network: Network
    duration_ms: float
    seed: int
    record: tuple[AbstractMonitor, ...]
    source: str
    """Where the config came from (a path, ``<default>`` or ``<string>``)."""
    description: str = ""
    data: dict = dataclasses.field(default_factory=dict, repr=False)
    """The parsed TOML, unchanged."""

    @property
    def dt_ms(self) -> float:
        return self.network.dt

    @property
    def n_steps(self) -> int:
        return int(round(self.duration_ms / self.network.dt))

    def key(self):
        """The simulation PRNG key, ``jax.random.key(seed)``."""
        import jax

        return jax.random.key(self.seed)

    def simulate(self, **kwargs):
        """:func:`brainsim.simulate` with this config's network, duration, key and recording."""
        from ._simulate import simulate

        kwargs.setdefault("key", self.key())
        kwargs.setdefault("record", self.record)
        return simulate(self.network, self.duration_ms, **kwargs)


SEED_RANGE = "JAX's random keys take seeds below 2**32, or 2**63 with jax_enable_x64"


def max_seed() -> int:
    """The largest seed: beyond it JAX's key would repeat a smaller seed's (its 32-bit seed
    wraps around) or fail (a 64-bit seed overflows)."""
    import jax

    return 2**63 - 1 if jax.config.jax_enable_x64 else 2**32 - 1


def default_config_path():
    """The embedded default config (the COBA benchmark, same as ``configs/coba.toml``)."""
    return importlib.resources.files("brainsim") / "default_config.toml"


def load_config(
    path: str | os.PathLike | None = None,
    *,
    seed: int | None = None,
    duration_ms: float | None = None,
) -> Experiment:
    """Read a TOML config and build its network; ``None`` loads the embedded default.

    ``seed`` and ``duration_ms`` override ``[simulation]`` (as ``brainsim run --seed/--duration``).
    Raises :class:`ConfigError` on any mistake.
    """
    text, source = read_config_text(path)
    return parse_config(text, source=source, seed=seed, duration_ms=duration_ms)


def read_config_text(path: str | os.PathLike | None) -> tuple[str, str]:
    """``(text, source)`` of a config file (``None``: the embedded default)."""
    if path is None:
        return default_config_path().read_text(encoding="utf-8"), "<default>"
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            return f.read().decode("utf-8"), source
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such config file.") from None
    except IsADirectoryError:
        raise ConfigError(f"{source}: is a directory, not a config file.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{source}: cannot read the config: {e}") from None


def parse_config(
    text: str,
    *,
    source: str = "<string>",
    seed: int | None = None,
    duration_ms: float | None = None,
) -> Experiment:
    """Like :func:`load_config` for TOML text."""
    return build_config(parse_toml(text, source), source=source, seed=seed, duration_ms=duration_ms)


def parse_toml(text: str, source: str = "<string>") -> dict:
    """The TOML ``text`` as a dict (a :class:`ConfigError` naming ``source`` if invalid)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: {e}.") from None


def build_config(
    data: dict, *, source: str = "<dict>", seed: int | None = None, duration_ms: float | None = None
) -> Experiment:
    """Like :func:`load_config` for an already parsed config (a dict as ``tomllib`` returns)."""
    return _Loader(source).experiment(data, seed, duration_ms)


# ----------------------------------------------------------------------------- helpers

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _join(path: str, key) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    key = key if _BARE_KEY.match(key) else '"' + key.replace('"', '\\"') + '"'
    return f"{path}.{key}" if path else key


def _kind_of(value) -> str:
    """A TOML-flavoured description of a value's type, for messages."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _closest(name: str, options) -> str:
    """A ' Did you mean X?' hint: a case-insensitive match first, then the closest spelling."""
    same = [o for o in options if o.lower() == name.lower()]
    return f" Did you mean {same[0]!r}?" if same else _closest_by_spelling(name, options)


def _is_number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _library_message(e: Exception) -> str:
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    return str(msg)


def _annotation(param: inspect.Parameter) -> str:
    ann = param.annotation
    if ann is inspect.Parameter.empty:
        return ""
    return ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))


def _state_fields(model) -> tuple[str, ...]:
    """Names of a model's state variables, found without running anything."""
    import jax

    return type(jax.eval_shape(lambda: model.init(1)))._fields


class _Loader:
    """Validates a parsed config and builds it, tracking the key path of every value."""

    def __init__(self, source: str):
        self.source = source

    def error(self, path: str, message: str) -> ConfigError:
        return ConfigError(
            f"{self.source}: {path}: {message}" if path else f"{self.source}: {message}"
        )

    # ------------------------------------------------------------------ generic checks

    def table(self, value, path: str, *, required: dict[str, str], optional: dict[str, str]):
        """Check that ``value`` is a table with the ``required`` keys and no unknown keys."""
        if not isinstance(value, dict):
            raise self.error(path, f"expected a table; got {_kind_of(value)}.")
        valid = {**required, **optional}
        for key in value:
            if key not in valid:
                raise self.error(
                    _join(path, key),
                    f"unknown key {key!r}.{_closest(key, valid)} Valid keys here: "
                    f"{', '.join(valid)}.",
                )
        for key, what in required.items():
            if key not in value:
                where = path or "the top level"
                raise ConfigError(f"{self.source}: {where}: missing key {key!r} ({what}).")
        return value

    def number(self, value, path, what, *, positive=False, nonnegative=False) -> float:
        if not _is_number(value) or math.isnan(value):
            raise self.error(path, f"expected {what} (a number); got {_kind_of(value)}.")
        if positive and not value > 0:
            raise self.error(path, f"expected {what} > 0; got {value}.")
        if nonnegative and not value >= 0:
            raise self.error(path, f"expected {what} >= 0; got {value}.")
        return float(value)

    def integer(self, value, path, what, *, minimum=None) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(path, f"expected {what} (an integer); got {_kind_of(value)}.")
        if minimum is not None and value < minimum:
            raise self.error(path, f"expected {what} >= {minimum}; got {value}.")
        return value

    def boolean(self, value, path, what) -> bool:
        if not isinstance(value, bool):
            raise self.error(path, f"expected {what} (true or false); got {_kind_of(value)}.")
        return value

    def string(self, value, path, what) -> str:
        if not isinstance(value, str):
            raise self.error(path, f"expected {what} (a string); got {_kind_of(value)}.")
        return value

    def array(self, value, path, what, *, integer=False) -> np.ndarray:
        """A (nested) array of numbers as a NumPy array."""

        def flat(x):
            return [y for item in x for y in flat(item)] if isinstance(x, list) else [x]

        items = flat(value) if isinstance(value, list) else [value]
        bad = next((x for x in items if not _is_number(x)), None)
        if bad is not None or not isinstance(value, list):
            shown = _kind_of(bad) if isinstance(value, list) else _kind_of(value)
            raise self.error(path, f"expected {what} (an array of numbers); got {shown}.")
        if integer and not all(isinstance(x, int) for x in items):
            raise self.error(path, f"expected {what} (an array of integers).")
        try:
            return np.asarray(value, dtype=np.int64 if integer else float)
        except ValueError:
            raise self.error(
                path, f"expected {what}: a rectangular array (rows of equal length)."
            ) from None

    def lookup(self, kind: str, name, path: str):
        options = registry()[kind]
        if kind == "neuron":  # a population's model may be a neuron or a spike source
            options = {**options, **registry()["source"]}
        if isinstance(name, str) and ":" in name:
            return self.entry_point(kind, name, path)
        if not isinstance(name, str):
            raise self.error(
                path,
                f"expected the name of a {_KIND_WORDS[kind]} (a string); got "
                f"{_kind_of(name)}. Valid: {', '.join(options)}.",
            )
        if name not in options:
            raise self.error(
                path,
                f"unknown {_KIND_WORDS[kind]} {name!r}.{_closest(name, options)} "
                f"Valid: {', '.join(options)}.",
            )
        return options[name]

    def entry_point(self, kind: str, name: str, path: str):
        """A user's class or function named ``"package.module:Name"`` (``Name`` may be dotted,
        ``Outer.Inner``), checked to be of the kind this key takes. The module is imported as
        Python would; failing that, from the config file's folder (a ``models.py`` next to
        the config)."""
        module_name, _, attribute = name.partition(":")
        form = "'package.module:Name', e.g. 'my_models:NoisyLIF'"
        if not module_name or not attribute or ":" in attribute:
            raise self.error(path, f"expected an entry point {form}; got {name!r}.")
        module = self.import_module(module_name, name, path)
        obj = module
        for part in attribute.split("."):
            if not hasattr(obj, part):
                public = [n for n in dir(obj) if not n.startswith("_")]
                raise self.error(
                    path,
                    f"{name!r}: {getattr(obj, '__name__', module_name)!r} has no attribute "
                    f"{part!r}.{_closest(part, public)}",
                )
            obj = getattr(obj, part)
        expected, accepts = _entry_point_kind(kind)
        if not accepts(obj):
            raise self.error(
                path,
                f"{name!r} is {_described(obj)}, not {expected}; point the entry point at "
                f"{expected}.",
            )
        return obj

    def import_module(self, module_name: str, name: str, path: str):
        import importlib
        import sys

        folder = os.path.dirname(os.path.abspath(self.source)) if os.path.isfile(self.source) else None
        try:
            try:
                return importlib.import_module(module_name)
            except ModuleNotFoundError as e:
                missing_self = e.name is not None and module_name.startswith(e.name)
                if folder is None or not missing_self:
                    raise
                sys.path.insert(0, folder)  # a module next to the config file
                try:
                    return importlib.import_module(module_name)
                finally:
                    sys.path.remove(folder)
        except ModuleNotFoundError as e:
            if e.name is not None and not module_name.startswith(e.name):
                fix = f"it imports {e.name!r}, which is not installed: install it"
            else:
                nearby = f", nor next to the config in {folder}" if folder else ""
                fix = (
                    f"no module {module_name!r} on the Python path{nearby}: install its "
                    "package, add its folder to PYTHONPATH, or put the module next to the config"
                )
            raise self.error(path, f"{name!r}: cannot import {module_name!r}; {fix}.") from None
        except Exception as e:  # the user's module itself fails: say where, keep the cause
            raise self.error(
                path, f"{name!r}: importing {module_name!r} failed: {type(e).__name__}: {e}"
            ) from e

    # ------------------------------------------------------------------ objects

    def obj(self, kind: str, spec, path: str):
        """Build an object from ``"Name"`` or ``{ type = "Name", arg = value, ... }``."""
        if isinstance(spec, dict):
            if "type" not in spec:
                raise self.error(
                    path,
                    f"missing key 'type' (the name of a {_KIND_WORDS[kind]}: "
                    f"{', '.join(registry()[kind])}).",
                )
            cls = self.lookup(kind, spec["type"], _join(path, "type"))
            kwargs = {k: v for k, v in spec.items() if k != "type"}
        elif isinstance(spec, str):
            cls, kwargs = self.lookup(kind, spec, path), {}
        else:
            raise self.error(
                path,
                f"expected a {_KIND_WORDS[kind]}: a name (e.g. "
                f"{next(iter(registry()[kind]), 'Name')!r}) or a table with 'type'; got "
                f"{_kind_of(spec)}.",
            )
        made = self.construct(cls, kwargs, path)
        if kind in ("plasticity", "weight_dependence"):
            self.check_bounds(made, kwargs, path)
        return made

    def check_bounds(self, made, kwargs: dict, path: str):
        """A plasticity object's weight bounds must leave room: ``w_max > w_min`` (0 if none)."""
        if not hasattr(made, "w_max"):
            return
        w_max = np.asarray(made.w_max)
        w_min = np.asarray(getattr(made, "w_min", 0.0))
        if np.all(w_max > w_min):
            return
        key = "w_max" if "w_max" in kwargs or "w_min" not in kwargs else "w_min"
        raise self.error(
            _join(path, key),
            f"expected w_max > w_min (the weight bounds of {type(made).__name__}); got "
            f"w_max = {w_max.tolist()}, w_min = {w_min.tolist()}. Raise w_max or lower w_min.",
        )

    def construct(self, fn, kwargs: dict, path: str, *, fixed: dict | None = None):
        """Call ``fn(**kwargs, **fixed)`` after checking every key against its signature."""
        fixed = fixed or {}
        name = getattr(fn, "__name__", str(fn))
        params = {
            n: p
            for n, p in inspect.signature(fn).parameters.items()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
            and not n.startswith("_")
            and n not in fixed
        }
        # A user's class forwarding **kwargs (to a built-in model) takes any key; the
        # callee's own error then names a wrong one.
        forwards = any(
            p.kind is p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values()
        )
        converted = {}
        for key, value in kwargs.items():
            if key not in params and forwards:
                converted[key] = self.forwarded(value, _join(path, key), f"`{key}`")
                continue
            if key not in params:
                valid = ", ".join(params) or "none"
                raise self.error(
                    _join(path, key),
                    f"unknown argument {key!r} of {name}.{_closest(key, params)} Valid: {valid}.",
                )
            converted[key] = self.argument(value, params[key], _join(path, key))
        for key, p in params.items():
            if p.default is inspect.Parameter.empty and key not in converted:
                raise self.error(path, f"missing argument {key!r} of {name}.")
        try:
            return fn(**converted, **fixed)
        except (ValueError, TypeError, KeyError) as e:
            message = _library_message(e)
            # A message about one argument (the library names it as `name`) points at its key.
            named = [key for key in converted if f"`{key}`" in message]
            raise self.error(_join(path, named[0]) if len(named) == 1 else path, message) from None

    def forwarded(self, value, path: str, what: str):
        """A value for a ``**kwargs`` argument: numbers as floats, arrays as arrays."""
        if _is_number(value):
            return self.number(value, path, what)
        if isinstance(value, list):
            return self.array(value, path, what)
        return value

    def argument(self, value, param: inspect.Parameter, path: str):
        """Convert one TOML value to what a constructor argument expects (by annotation)."""
        ann, default, what = _annotation(param), param.default, f"`{param.name}`"
        if "AbstractSurrogate" in ann:
            return self.obj("surrogate", value, path)
        if "AbstractIntegrator" in ann:
            return self.obj("integrator", value, path)
        if "AbstractLayout" in ann:
            return self.obj("layout", value, path)
        if "AbstractWeightDependence" in ann:
            return self.obj("weight_dependence", value, path)
        if "AbstractPlasticity" in ann:
            return self.plasticity(value, path)[0]
        if "AbstractNeuron" in ann:
            return self.obj("neuron", value, path)
        if "TimedArray" in ann and isinstance(value, dict | str):
            return self.obj("rate", value, path)
        if "ValueSpec" in ann:
            return self.edge_values(value, path, what)
        if ann == "bool" or isinstance(default, bool):
            return self.boolean(value, path, what)
        if ann == "int":
            return self.integer(value, path, what)
        if ann == "str":
            return self.string(value, path, what)
        if param.name in _INDEX_ARGUMENTS:
            return self.array(value, path, what, integer=True)
        numeric = any(w in ann for w in ("ArrayLike", "float", "Array")) or (_is_number(default))
        if numeric or isinstance(value, list):
            if isinstance(value, list):
                return self.array(value, path, what)
            return self.number(value, path, what)
        return value  # unannotated argument of a type configs do not describe: pass through

    def edge_values(self, value, path, what):
        """A connection weight or delay: number, one per synapse, or a distribution."""
        if _is_number(value):
            return float(value)
        if isinstance(value, list):
            return self.array(value, path, what)
        if isinstance(value, dict):
            return self.distribution("edge_distribution", value, path, what)
        raise self.error(
            path,
            f"expected {what}: a number, an array with one value per "
            "synapse, or a distribution such as { normal = [mean, std] }; "
            f"got {_kind_of(value)}.",
        )

    def distribution(self, kind, value: dict, path, what):
        """``{ name = [args...] }`` or ``{ name = { arg = ... } }`` with exactly one name."""
        options = registry()[kind]
        if len(value) != 1:
            raise self.error(
                path,
                f"expected {what} as a one-key table such as "
                f"{{ {next(iter(options))} = [...] }}; got keys "
                f"{', '.join(map(repr, value)) or 'none'}.",
            )
        ((name, args),) = value.items()
        if name not in options:
            raise self.error(
                _join(path, name),
                f"unknown distribution {name!r}."
                f"{_closest(name, options)} Valid: {', '.join(options)}.",
            )
        fn = options[name]
        sub = _join(path, name)
        if isinstance(args, dict):
            return self.construct(fn, args, sub)
        args = args if isinstance(args, list) else [args]
        params = [p for p in inspect.signature(fn).parameters.values()]
        if len(args) != len(params):
            raise self.error(
                sub,
                f"expected {len(params)} values "
                f"[{', '.join(p.name for p in params)}]; got {len(args)}.",
            )
        return self.construct(fn, dict(zip((p.name for p in params), args, strict=True)), sub)

    # ------------------------------------------------------------------ sections

    def experiment(self, data, seed, duration_ms) -> Experiment:
        builder = isinstance(data, dict) and "network" in data
        if builder:
            for key in ("populations", "projections"):
                if key in data:
                    raise self.error(
                        key,
                        "a config with [network] (a named builder) cannot also list "
                        f"{key}; remove one of them.",
                    )
        self.table(
            data,
            "",
            required={"simulation": "a table with duration_ms, dt_ms and seed"}
            if builder
            else {
                "simulation": "a table with duration_ms, dt_ms and seed",
                "populations": "a table of populations, e.g. [populations.E]",
            },
            optional={"description": "", "network": "", "record": ""}
            if builder
            else {"description": "", "projections": "", "record": ""},
        )
        description = self.string(data.get("description", ""), "description", "a description")
        sim = self.table(
            data["simulation"],
            "simulation",
            required={
                "duration_ms": "the simulated time in ms",
                "dt_ms": "the time step in ms",
            },
            optional={"seed": "", "timing": "", "transmit_after_update": ""},
        )
        dt = self.number(sim["dt_ms"], "simulation.dt_ms", "the time step in ms", positive=True)
        timing = self.timing(sim)
        if duration_ms is None:
            duration = self.number(
                sim["duration_ms"],
                "simulation.duration_ms",
                "the simulated time in ms",
                positive=True,
            )
            duration_where = "simulation.duration_ms"
        else:
            duration, duration_where = float(duration_ms), "duration (--duration)"
        steps = duration / dt
        if not (
            math.isfinite(steps)
            and round(steps) >= 1
            and abs(steps - round(steps)) <= 1e-6 * max(1.0, steps)
        ):
            raise self.error(
                duration_where,
                f"expected a positive whole number of steps of dt_ms = {dt} ms; got {duration} ms.",
            )
        seed_where = "seed (--seed)" if seed is not None else "simulation.seed"
        if seed is None:
            seed = self.integer(sim.get("seed", 0), "simulation.seed", "the seed", minimum=0)
        elif not isinstance(seed, int) or seed < 0:
            raise self.error("seed (--seed)", f"expected an integer >= 0; got {seed!r}.")
        if seed > max_seed():
            raise self.error(
                seed_where, f"expected a seed from 0 to {max_seed()} ({SEED_RANGE}); got {seed}."
            )

        if builder:
            network = self.network(data["network"], dt, seed)
            if timing is not None:
                network = network.with_timing(timing)
            record = self.record(data.get("record", {}), network)
            return Experiment(network, duration, seed, record, self.source, description, data)
        pops_data = data["populations"]
        if not isinstance(pops_data, dict) or not pops_data:
            raise self.error(
                "populations",
                "expected at least one population, e.g. [populations.E] with size and model.",
            )
        populations = [
            self.population(name, spec, _join("populations", name))
            for name, spec in pops_data.items()
        ]
        projections = self.projections(data.get("projections", []), populations, seed, dt)
        try:
            network = Network(populations, [p for p, _ in projections], dt=dt, timing=timing)
        except (ValueError, TypeError, KeyError) as e:
            message = _library_message(e)
            where = next(
                (path for p, path in reversed(projections) if repr(p.name) in message),
                "projections",
            )
            raise self.error(where, message) from None
        record = self.record(data.get("record", {}), network)
        return Experiment(network, duration, seed, record, self.source, description, data)

    def timing(self, sim: dict) -> Timing | None:
        """``simulation.timing`` (``"brian2"`` or ``"nest"``) and the optional
        ``simulation.transmit_after_update`` (default: as the timing's simulator does).
        ``None`` when neither is given: the network's own (Brian2's for populations listed in
        the file; a builder's own choice otherwise)."""
        choices = {"brian2": Timing.brian2, "nest": Timing.nest}
        if "timing" not in sim and "transmit_after_update" not in sim:
            return None
        name = self.string(sim.get("timing", "brian2"), "simulation.timing", "a simulator's name")
        if name not in choices:
            raise self.error(
                "simulation.timing",
                f"unknown timing conventions {name!r}.{_closest(name, choices)} Valid: "
                f"{', '.join(map(repr, choices))}.",
            )
        if "transmit_after_update" not in sim:
            return choices[name]()
        after = self.boolean(
            sim["transmit_after_update"],
            "simulation.transmit_after_update",
            "whether a plastic synapse transmits its weight after its update",
        )
        return choices[name](transmit_after_update=after)

    def network(self, spec, dt: float, seed: int) -> Network:
        """``[network]``: a whole network from a named builder of :mod:`brainsim.networks`."""
        path = "network"
        if not isinstance(spec, dict):
            raise self.error(
                path,
                "expected a table with 'builder', e.g. [network] builder = \"potjans_diesmann\"; "
                f"got {_kind_of(spec)}.",
            )
        if "builder" not in spec:
            raise self.error(
                path,
                f"missing key 'builder' (a network builder: {', '.join(registry()['network'])}).",
            )
        fn = self.lookup("network", spec["builder"], _join(path, "builder"))
        params = inspect.signature(fn).parameters
        kwargs = {k: v for k, v in spec.items() if k != "builder"}
        for key, where in (("dt", "simulation.dt_ms"), ("seed", "simulation.seed")):
            if key in kwargs:
                raise self.error(_join(path, key), f"set it as {where}, not here.")
        fixed = {k: v for k, v in (("dt", dt), ("seed", seed)) if k in params}
        return self.construct(fn, kwargs, path, fixed=fixed)

    def population(self, name: str, spec, path: str) -> Population:
        self.table(
            spec,
            path,
            required={
                "size": "a positive integer: the number of neurons",
                "model": "a neuron model name",
            },
            optional={"params": "", "initial": "", "receptors": "", "currents": ""},
        )
        size = self.integer(spec["size"], _join(path, "size"), "the number of neurons", minimum=1)
        cls = self.lookup("neuron", spec["model"], _join(path, "model"))
        params = spec.get("params", {})
        if not isinstance(params, dict):
            raise self.error(
                _join(path, "params"),
                f"expected a table of {cls.__name__} arguments; got {_kind_of(params)}.",
            )
        model = self.construct(cls, params, _join(path, "params"))
        from ._neurons._base import AbstractSpikeSource

        if isinstance(cls, type) and issubclass(cls, AbstractSpikeSource):
            for key in ("receptors", "currents", "initial"):
                if key in spec:
                    raise self.error(
                        _join(path, key), f"a spike source ({cls.__name__}) takes no {key}."
                    )

        receptors = {}
        rec_path = _join(path, "receptors")
        rec_data = spec.get("receptors", {})
        if not isinstance(rec_data, dict):
            raise self.error(
                rec_path, f"expected a table of named receptors; got {_kind_of(rec_data)}."
            )
        for rname, rspec in rec_data.items():
            rpath = _join(rec_path, rname)
            self.table(
                rspec,
                rpath,
                required={
                    "kinetics": 'e.g. { type = "ExponentialSynapse", tau = 5.0 }',
                    "output": 'e.g. { type = "ConductanceBased", E_rev = 0.0 } or "CurrentBased"',
                },
                optional={},
            )
            receptors[rname] = Receptor(
                self.obj("kinetics", rspec["kinetics"], _join(rpath, "kinetics")),
                self.obj("output", rspec["output"], _join(rpath, "output")),
            )

        cur_path = _join(path, "currents")
        cur_data = spec.get("currents", [])
        if not isinstance(cur_data, list):
            raise self.error(
                cur_path,
                "expected an array of currents, e.g. "
                '[{ type = "ConstantCurrent", amplitude = 100.0 }].',
            )
        currents = [self.obj("current", c, _join(cur_path, i)) for i, c in enumerate(cur_data)]

        initial = {}
        init_path = _join(path, "initial")
        init_data = spec.get("initial", {})
        if not isinstance(init_data, dict):
            raise self.error(
                init_path,
                "expected a table of state variables, e.g. { v = { uniform = [-60.0, -50.0] } }.",
            )
        if init_data:
            fields = _state_fields(model)
            for var, value in init_data.items():
                vpath = _join(init_path, var)
                if var not in fields:
                    raise self.error(
                        vpath,
                        f"{cls.__name__} has no state variable {var!r}."
                        f"{_closest(var, fields)} Valid: {', '.join(fields)}.",
                    )
                initial[var] = self.initial_value(value, vpath, size)
        try:
            return Population(
                name, size, model, receptors=receptors, currents=currents, initial=initial
            )
        except (ValueError, TypeError, KeyError) as e:
            raise self.error(path, _library_message(e)) from None

    def initial_value(self, value, path, size):
        init = registry()["initializer"]
        if _is_number(value):
            return init["constant"](float(value))
        if isinstance(value, list):
            arr = self.array(value, path, "one initial value per neuron")
            if arr.shape != (size,):
                raise self.error(
                    path, f"expected one initial value per neuron ({size}); got shape {arr.shape}."
                )
            return init["constant"](arr)
        if isinstance(value, dict):
            return self.distribution("initializer", value, path, "an initial value")
        raise self.error(
            path,
            "expected an initial value: a number, one per neuron, or "
            "{ uniform = [low, high] } / { normal = [mean, std] }; got "
            f"{_kind_of(value)}.",
        )

    def projections(self, data, populations, seed, dt):
        if not isinstance(data, list):
            raise self.error(
                "projections", "expected an array of tables: write each one as [[projections]]."
            )
        index = {p.name: i for i, p in enumerate(populations)}
        pair_count: dict[tuple[int, int], int] = {}
        out = []
        for k, spec in enumerate(data):
            path = _join("projections", k)
            self.table(
                spec,
                path,
                required={
                    "pre": "the presynaptic population",
                    "post": "the postsynaptic population",
                    "receptor": "the postsynaptic receptor name",
                    "connect": 'e.g. { type = "fixed_probability", p = 0.02, weight = 1.0 }',
                },
                optional={
                    "layout": "",
                    "stp": "",
                    "round_delays": "",
                    "name": "",
                    "plasticity": "",
                    "modulator": "",
                },
            )
            for role in ("pre", "post"):
                name = self.string(spec[role], _join(path, role), "a population name")
                if name not in index:
                    raise self.error(
                        _join(path, role),
                        f"unknown population {name!r}."
                        f"{_closest(name, index)} Valid: {', '.join(index)}.",
                    )
            pre, post = populations[index[spec["pre"]]], populations[index[spec["post"]]]
            if post.is_source:
                raise self.error(
                    _join(path, "post"),
                    f"population {post.name!r} is a spike source and cannot receive synapses.",
                )
            receptor = self.string(spec["receptor"], _join(path, "receptor"), "a receptor name")
            if receptor not in post.receptors:
                valid = (
                    ", ".join(post.receptors)
                    or f"none (add [populations.{post.name}.receptors.NAME])"
                )
                raise self.error(
                    _join(path, "receptor"),
                    f"population {post.name!r} has no receptor {receptor!r}."
                    f"{_closest(receptor, post.receptors)} Valid: {valid}.",
                )
            pair = (index[pre.name], index[post.name])
            repeat = pair_count.get(pair, 0)
            pair_count[pair] = repeat + 1
            derived = [seed, *pair] + ([repeat] if repeat else [])
            edges = self.connect(
                spec["connect"], _join(path, "connect"), pre.size, post.size, derived
            )
            layout = self.obj("layout", spec.get("layout", "sparse"), _join(path, "layout"))
            stp = self.obj("stp", spec["stp"], _join(path, "stp")) if "stp" in spec else None
            plasticity, rules = (
                self.plasticity(spec["plasticity"], _join(path, "plasticity"))
                if "plasticity" in spec
                else (None, [])
            )
            modulator = self.modulator(spec, path, rules, list(index))
            round_delays = self.boolean(
                spec.get("round_delays", False), _join(path, "round_delays"), "round_delays"
            )
            name = (
                self.string(spec["name"], _join(path, "name"), "a projection name")
                if "name" in spec
                else None
            )
            # Built here rather than by Network so that delay and layout errors name this
            # projection's keys; Network keeps an already built connectivity as it is.
            owner = _join(_join(path, "connect"), "delay")
            try:
                conn = layout.build(
                    edges, dt, owner=owner, round_delays=round_delays, dtype=default_dtype(None)
                )
            except (ValueError, TypeError) as e:
                message = _library_message(e)
                if message.startswith(owner):
                    raise ConfigError(f"{self.source}: {message}") from None
                raise self.error(_join(path, "layout"), message) from None
            stored = DenseConnectivity | EllConnectivity | CsrConnectivity
            if plasticity is not None and not isinstance(conn, stored):
                raise self.error(
                    _join(path, "layout"),
                    f"the {type(layout).__name__} layout cannot carry plasticity "
                    f"({_join(path, 'plasticity')}): plastic weights need layout = "
                    '"sparse", "csr" or "dense". Change the layout or remove the plasticity.',
                )
            try:
                proj = Projection(
                    pre.name,
                    post.name,
                    # A plastic projection needs its synapse list: Network builds the mask of
                    # existing synapses from it (a built Dense matrix would make every pair
                    # plastic), and builds the connectivity again, exactly as checked above.
                    edges if plasticity is not None else conn,
                    receptor=receptor,
                    layout=layout,
                    stp=stp,
                    round_delays=round_delays,
                    name=name,
                    plasticity=plasticity,
                    modulator=modulator,
                )
            except (ValueError, TypeError, KeyError) as e:
                raise self.error(path, _library_message(e)) from None
            out.append((proj, path))
        return out

    def plasticity(self, spec, path):
        """``plasticity``: one rule (a name or a table with ``type``) or an array of rules,
        applied in order (:func:`brainsim.plasticity.chain`). Returns ``(rule, [(rule, path)])``."""
        from .plasticity import chain

        if isinstance(spec, list):
            if not spec:
                raise self.error(
                    path,
                    "expected at least one plasticity rule; remove the key for static weights.",
                )
            paths = [_join(path, i) for i in range(len(spec))]
            rules = [(self.obj("plasticity", r, p), p) for r, p in zip(spec, paths, strict=True)]
            return chain(*(r for r, _ in rules)), rules
        if not isinstance(spec, dict | str):
            raise self.error(
                path,
                'expected a plasticity rule, e.g. { type = "PairSTDP", A_plus = 0.01 }, or an '
                f"array of rules applied in order; got {_kind_of(spec)}.",
            )
        rule = self.obj("plasticity", spec, path)
        return rule, [(rule, path)]

    def modulator(self, spec, path, rules, names):
        """``modulator``: the signal of reward-modulated rules, a population name (its spike
        count per step) or a current (e.g. a ``TimedArray`` of reward values)."""
        from .plasticity import RewardModulatedSTDP

        mpath = _join(path, "modulator")
        needs = [p for r, p in rules if isinstance(r, RewardModulatedSTDP)]
        if "modulator" not in spec:
            if needs:
                raise self.error(
                    needs[0],
                    "RewardModulatedSTDP learns only while its modulator is non-zero, and this "
                    f"projection has none: set {mpath} to a population name (its spike count "
                    'per step) or a current, e.g. { type = "TimedArray", values = [...], dt = '
                    "100.0 }. A signal computed in Python needs the Python API: "
                    "brainsim.Projection(..., modulator=...).",
                )
            return None
        if not rules:
            raise self.error(
                mpath,
                "a modulator only drives a plasticity rule and this projection has no "
                f"{_join(path, 'plasticity')}; add one (e.g. RewardModulatedSTDP) or remove "
                "the modulator.",
            )
        value = spec["modulator"]
        if isinstance(value, str):
            return self.check_population(value, mpath, names)
        if isinstance(value, dict):
            return self.obj("current", value, mpath)
        raise self.error(
            mpath,
            "expected a population name (its spike count per step is the signal) or a "
            'current table, e.g. { type = "TimedArray", values = [0.0, 1.0], dt = 100.0 } or '
            '{ type = "ConstantCurrent", amplitude = 1.0 }; got '
            f"{_kind_of(value)}. A signal computed in Python (e.g. a reward from the "
            "network's output) cannot be written in TOML: use the Python API, "
            "brainsim.Projection(..., modulator=...).",
        )

    def connect(self, spec, path, n_pre, n_post, derived_seed):
        if not isinstance(spec, dict):
            raise self.error(
                path,
                "expected a table with 'type', e.g. "
                '{ type = "fixed_probability", p = 0.02, weight = 1.0 }; '
                f"got {_kind_of(spec)}.",
            )
        if "type" not in spec:
            raise self.error(
                path,
                f"missing key 'type' (a connectivity builder: {', '.join(registry()['connect'])}).",
            )
        fn = self.lookup("connect", spec["type"], _join(path, "type"))
        params = inspect.signature(fn).parameters
        fixed: dict[str, Any] = {}
        if "n" in params:
            if n_pre != n_post:
                raise self.error(
                    _join(path, "type"),
                    f"{fn.__name__} needs populations of equal size; got {n_pre} and {n_post}.",
                )
            fixed["n"] = n_pre
        if "n_pre" in params:
            fixed.update(n_pre=n_pre, n_post=n_post)
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        if "seed" in params:
            fixed["seed"] = (
                self.integer(kwargs.pop("seed"), _join(path, "seed"), "a seed", minimum=0)
                if "seed" in kwargs
                else derived_seed
            )
        return self.construct(fn, kwargs, path, fixed=fixed)

    def record(self, data, network: Network) -> tuple[AbstractMonitor, ...]:
        self.table(
            data, "record", required={}, optional={"spikes": "", "traces": "", "weights": ""}
        )
        names = [p.name for p in network.populations]
        monitors: list[AbstractMonitor] = []
        spikes = data.get("spikes", True)
        if isinstance(spikes, bool):
            if spikes:
                monitors.append(SpikeRaster())
        elif isinstance(spikes, list):
            for i, name in enumerate(spikes):
                self.check_population(name, _join("record.spikes", i), names)
            if spikes:
                monitors.append(SpikeRaster(tuple(spikes)))
        else:
            raise self.error(
                "record.spikes",
                "expected true (all populations), false, or an "
                f"array of population names; got "
                f"{_kind_of(spikes)}.",
            )
        traces = data.get("traces", [])
        if not isinstance(traces, list):
            raise self.error(
                "record.traces",
                'expected an array of tables, e.g. [{ population = "E", variable = "v" }].',
            )
        for i, spec in enumerate(traces):
            path = _join("record.traces", i)
            self.table(
                spec,
                path,
                required={"population": "a population name"},
                optional={"variable": "", "neurons": "", "every": ""},
            )
            pop = self.check_population(spec["population"], _join(path, "population"), names)
            population = network.population(pop)
            fields = _state_fields(population.model)
            var = self.string(
                spec.get("variable", "v"), _join(path, "variable"), "a state variable"
            )
            if var not in fields:
                raise self.error(
                    _join(path, "variable"),
                    f"{type(population.model).__name__} has no state variable "
                    f"{var!r}.{_closest(var, fields)} Valid: {', '.join(fields)}.",
                )
            neurons = None
            if "neurons" in spec:
                arr = self.array(
                    spec["neurons"], _join(path, "neurons"), "neuron indices", integer=True
                )
                bad = arr[(arr < 0) | (arr >= population.size)]
                if arr.ndim != 1 or bad.size:
                    raise self.error(
                        _join(path, "neurons"),
                        f"expected indices in 0..{population.size - 1}"
                        + (f"; got {int(bad[0])}." if bad.size else "."),
                    )
                neurons = arr.tolist()
            every = self.integer(
                spec.get("every", 1),
                _join(path, "every"),
                "a sampling interval in steps",
                minimum=1,
            )
            monitors.append(StateTrace(pop, var, neurons=neurons, every=every))
        weights = data.get("weights", [])
        if not isinstance(weights, list):
            raise self.error(
                "record.weights",
                'expected an array of tables, e.g. [{ projection = "in->out:e", every = 1000 }].',
            )
        recorded: dict[str, str] = {}
        for i, spec in enumerate(weights):
            path = _join("record.weights", i)
            trace = self.weight_trace(spec, path, network)
            if trace.projection in recorded:
                raise self.error(
                    _join(path, "projection"),
                    f"projection {trace.projection!r} is already recorded by "
                    f"{recorded[trace.projection]}; record it once (list every synapse in one "
                    "`synapses`).",
                )
            recorded[trace.projection] = path
            monitors.append(trace)
        return tuple(monitors)

    def weight_trace(self, spec, path, network: Network) -> WeightTrace:
        """``[record] weights``: a :class:`WeightTrace` of a plastic projection."""
        self.table(
            spec,
            path,
            required={"projection": "the name of a projection with plasticity"},
            optional={"synapses": "", "every": ""},
        )
        ppath = _join(path, "projection")
        name = self.string(spec["projection"], ppath, "a projection name")
        names = [p.name for p in network.projections]
        plastic = [p.name for p in network.projections if p.plasticity is not None]
        if name not in names:
            raise self.error(
                ppath,
                f"unknown projection {name!r}.{_closest(name, names)} Projections with "
                f"plasticity: {', '.join(plastic) or 'none'}.",
            )
        if name not in plastic:
            raise self.error(
                ppath,
                f"projection {name!r} has no plasticity, so its weights never change; add "
                "plasticity to it or record one of: " + (", ".join(plastic) or "none") + ".",
            )
        proj = network.projection(name)
        synapses = None
        if "synapses" in spec:
            spath = _join(path, "synapses")
            arr = self.array(spec["synapses"], spath, "[pre, post] index pairs", integer=True)
            if arr.ndim != 2 or arr.shape[1] != 2:
                raise self.error(
                    spath,
                    "expected an array of [pre, post] index pairs, e.g. [[0, 0], [1, 0]]; got "
                    f"shape {arr.shape}.",
                )
            n_pre, n_post = proj.synapses.n_pre, proj.synapses.n_post
            bad = (arr[:, 0] < 0) | (arr[:, 0] >= n_pre) | (arr[:, 1] < 0) | (arr[:, 1] >= n_post)
            if bad.any():
                i, j = arr[np.argmax(bad)]
                raise self.error(
                    spath,
                    f"expected pre in 0..{n_pre - 1} and post in 0..{n_post - 1}; got "
                    f"[{int(i)}, {int(j)}].",
                )
            synapses = arr.tolist()
        every = self.integer(
            spec.get("every", 1), _join(path, "every"), "a sampling interval in steps", minimum=1
        )
        return WeightTrace(name, synapses, every=every)

    def check_population(self, name, path, names) -> str:
        name = self.string(name, path, "a population name")
        if name not in names:
            raise self.error(
                path,
                f"unknown population {name!r}.{_closest(name, names)} Valid: {', '.join(names)}.",
            )
        return name


__all__ = [
    "ConfigError",
    "Experiment",
    "build_config",
    "default_config_path",
    "load_config",
    "parse_config",
    "registry",
]
