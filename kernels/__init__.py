"""brainsim.kernels: event-driven propagation ops with a pure-jnp reference and native kernels.

Each op has the same signature in every implementation; the reference in
:mod:`brainsim.kernels._reference` is the oracle and the portable path. Implementations are
selected per platform at lowering time and can be forced with ``implementation=``.

Besides propagation and plasticity, the ops a simulation loop runs every step and that XLA's
CPU code handles poorly at population size: :func:`clear_ring_row` (in-place ring clearing),
:func:`after` (ordering), :func:`fast_sum` and :func:`segment_sums` (sums of spike vectors
and state arrays); the compacted spike events every event-driven loop reads
(:func:`spike_events`, :func:`for_each_chunk`); and the counter-based hash of procedural connectivity
(:class:`ProceduralRule`, :func:`procedural_synapses`), shared with the host.

This package is the bottom layer of brainsim: it imports nothing from the rest of ``brainsim``,
and ``brainsim`` uses only the names below (``lint-imports`` checks both; contracts in
``pyproject.toml``).
"""

from ._compact import default_capacity as default_capacity
from ._cpu import available as native_cpu_available
from ._cpu import status as native_cpu_status
from ._csr import csr_deliver as csr_deliver
from ._dispatch import Implementation as Implementation
from ._dispatch import auto_implementation as auto_implementation
from ._ell import ell_deliver as ell_deliver
from ._events import SpikeEvents as SpikeEvents
from ._events import cpu_loop_or_single as cpu_loop_or_single
from ._events import for_each_chunk as for_each_chunk
from ._events import spike_events as spike_events
from ._plasticity import csr_post_index as csr_post_index
from ._plasticity import csr_update_post as csr_update_post
from ._plasticity import csr_update_pre as csr_update_pre
from ._plasticity import dense_update_post as dense_update_post
from ._plasticity import dense_update_pre as dense_update_pre
from ._plasticity import ell_post_slots as ell_post_slots
from ._plasticity import ell_update_post as ell_update_post
from ._plasticity import ell_update_pre as ell_update_pre
from ._procedural import procedural_deliver as procedural_deliver
from ._procedural_rng import ProceduralRule as ProceduralRule
from ._procedural_rng import procedural_synapses as procedural_synapses
from ._procedural_rng import procedural_synapses_numpy as procedural_synapses_numpy
from ._ring import after as after
from ._ring import clear_ring_row as clear_ring_row
from ._stdp import TraceDependence as TraceDependence
from ._stdp import dependence_factor as dependence_factor
from ._stdp import ell_trace_update_post as ell_trace_update_post
from ._stdp import ell_trace_update_pre as ell_trace_update_pre
from ._stdp import trace_event as trace_event
from ._sum import fast_sum as fast_sum
from ._sum import segment_sums as segment_sums
from ._warnings import BrainsimWarning as BrainsimWarning

__all__ = [
    "Implementation",
    "auto_implementation",
    "ell_deliver",
    "native_cpu_available",
    "native_cpu_status",
    "csr_deliver",
    "procedural_deliver",
    "ProceduralRule",
    "procedural_synapses",
    "procedural_synapses_numpy",
    "clear_ring_row",
    "after",
    "fast_sum",
    "segment_sums",
    "default_capacity",
    "SpikeEvents",
    "spike_events",
    "for_each_chunk",
    "cpu_loop_or_single",
    "ell_post_slots",
    "ell_update_pre",
    "ell_update_post",
    "dense_update_pre",
    "dense_update_post",
    "csr_post_index",
    "csr_update_pre",
    "csr_update_post",
    "TraceDependence",
    "dependence_factor",
    "trace_event",
    "ell_trace_update_pre",
    "ell_trace_update_post",
    "BrainsimWarning",
]
