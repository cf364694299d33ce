r"""Writing your own components: the abstract bases and the building blocks brainsim's own
models are made of.

A component written outside the package with only these names runs through every driver that
accepts the built-in ones (:func:`~brainsim.simulate`, :func:`~brainsim.run_long`,
:func:`~brainsim.simulate_sharded`, :func:`brainsim.fit.fit`); ``tests/test_contract.py``
defines one of each kind and checks it, and lists what is still refused.

**A neuron** subclasses :class:`AbstractNeuron`: parameters are fields (array leaves, checked
with :func:`as_parameter`), ``init(n, *, dtype=None)`` returns a NamedTuple state (use
:func:`default_dtype`), ``step(state, drive, t, dt, key)`` returns ``(state, spikes)``, and
``voltage(state)`` the membrane (mV). ``drive`` is a :class:`Drive` (:math:`I = i - gV`);
``key`` is a PRNG key for this population and step. Threshold, reset and refractoriness come
from :func:`fire_and_reset`, which follows the network's :class:`~brainsim.Timing` when the
model has a static ``timing`` field (the network fills it in through ``with_timing``)::

    class NoisyLIF(bs.extend.AbstractNeuron):
        tau: jax.Array
        sigma: jax.Array
        timing: bs.Timing = eqx.field(static=True, default=bs.Timing.brian2())

        def step(self, state, drive, t, dt, key):
            a = jnp.exp(-dt / self.tau)
            noise = self.sigma * jnp.sqrt(1 - a**2) * jax.random.normal(key, state.v.shape)
            v = ... + noise.astype(state.v.dtype)
            v, spikes, ref = bs.extend.fire_and_reset(v, V_th, state.refractory, ...,
                                                      timing=self.timing)
            ...

Declare :class:`StateBound` values in ``state_bounds()`` for variables an approximate
integrator can run away with (:data:`MEMBRANE_FLOOR` is the usual one).

**Synaptic kinetics** subclass :class:`AbstractKinetics` (``init``, ``arrive``, ``mean``,
``decay``, ``value``; :func:`phi1` gives the exact step average of an exponential), an
**output** :class:`AbstractOutput` (``drive(trace, v) -> Drive``).

**A plasticity rule** subclasses :class:`AbstractPlasticity` (``init(synapses, weights)``,
``update(state, weights, pre_spikes, post_spikes, dt, *, synapses, modulator)``) and reaches
the weights only through the :class:`AbstractSynapses` view it is given, so it runs on every
storage that has one.

**A connectivity format** is an :class:`AbstractLayout` whose ``build(edges, dt, *, owner,
round_delays, dtype)`` turns an :class:`~brainsim.connect.EdgeList` (:func:`materialise`)
into an :class:`AbstractConnectivity` with its own ``deliver(ring, cursor, spikes)``. A
receptor's ring buffer holds ``D`` rows of ``n_post`` values, flattened; a spike of step
``cursor`` over a lag of ``l`` steps (:func:`delay_steps`) is added to row
``(cursor + l) % D`` (:func:`add_to_ring_row`). Weights must be an array field named
``weights`` to be fitted or made plastic.

**A monitor** subclasses :class:`AbstractMonitor`: ``init(network, n_steps, dtype)`` makes a
carried buffer, ``update(network, buffer, state_before, spikes, k)`` fills it,
``per_step(network, state_before, spikes, k)`` returns a value stacked over steps; read a
population's state only with ``network.population_state(state, name)`` and
``network.receptor_states(state, name)``.

**An injected current** subclasses :class:`AbstractCurrent` (``current(step, dt, key)``), a
spike source :class:`AbstractSpikeSource` (``step(state, step, dt, key)``).

Parameter checks raise the project's errors (``ValueError``/``TypeError`` naming the owner,
the argument, the value given and the fix) at build time and skip traced values, so a model
built inside ``jit`` or ``vmap`` is not refused.
"""

from ._errors import as_parameter as as_parameter
from ._errors import check_finite as check_finite
from ._errors import check_name as check_name
from ._errors import check_nonnegative as check_nonnegative
from ._errors import check_per_neuron as check_per_neuron
from ._errors import check_positive as check_positive
from ._errors import check_positive_int as check_positive_int
from ._errors import check_that as check_that
from ._errors import is_concrete as is_concrete
from ._inputs import AbstractCurrent as AbstractCurrent
from ._integrators import AbstractIntegrator as AbstractIntegrator
from ._monitors import AbstractMonitor as AbstractMonitor
from ._neurons._base import MEMBRANE_FLOOR as MEMBRANE_FLOOR
from ._neurons._base import AbstractNeuron as AbstractNeuron
from ._neurons._base import AbstractSpikeSource as AbstractSpikeSource
from ._neurons._base import Drive as Drive
from ._neurons._base import StateBound as StateBound
from ._neurons._base import check_above as check_above
from ._neurons._base import default_dtype as default_dtype
from ._neurons._base import fire_and_reset as fire_and_reset
from ._neurons._base import next_refractory as next_refractory
from ._neurons._base import reset_membrane as reset_membrane
from ._neurons._base import subtract_threshold as subtract_threshold
from ._phi1 import phi1 as phi1
from ._propagation import AbstractConnectivity as AbstractConnectivity
from ._propagation import AbstractLayout as AbstractLayout
from ._propagation import add_to_ring_row as add_to_ring_row
from ._propagation import delay_steps as delay_steps
from ._propagation import host_to_device as host_to_device
from ._propagation import materialise as materialise
from ._propagation import ring_row as ring_row
from ._surrogate import AbstractSurrogate as AbstractSurrogate
from ._synapses.kinetics import AbstractKinetics as AbstractKinetics
from ._synapses.outputs import AbstractOutput as AbstractOutput
from .plasticity._base import AbstractPlasticity as AbstractPlasticity
from .plasticity._synapses import AbstractSynapses as AbstractSynapses

