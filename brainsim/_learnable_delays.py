r"""Learnable synaptic delays: real-valued delays, differentiable through linear interpolation.

A synapse ``s`` with real delay :math:`d_s` (in steps of ``dt``, :math:`0 \le d_s \le D - 1`)
has the real lag :math:`d_s + 1` (a whole-step delay acts as in every other layout: a spike of
step ``k`` is first integrated in step :math:`k + d_s + 1`, :mod:`brainsim._timing`) and
spreads its weight over the two neighbouring integer lags (a two-tap kernel, the linear
variant of DCLS, Hammouamri et al. 2024):

.. math::
    \ell_s = \min(\lfloor d_s + 1 \rfloor, D - 1), \qquad f_s = d_s + 1 - \ell_s \in [0, 1], \\
    \text{a spike of step } k \text{ adds } (1 - f_s)\, w_s \text{ to row } k + \ell_s
    \text{ and } f_s\, w_s \text{ to row } k + \ell_s + 1 \text{ of the receptor's ring.}

The delivered input is linear in :math:`f_s`, so its derivative with respect to the delay is
:math:`w_s\,(\text{row } \ell_s + 1 - \text{row } \ell_s)`: defined everywhere (the right
derivative at whole steps, where the kernel has a kink) and exactly the derivative of the
simulated model, which is what finite differences measure. At whole-step delays the kernel is
a single tap, so the interpolated network *is* the event-driven one with those delays: rounding
(:func:`round_learned_delays`) is then exact, and otherwise changes each delay by at most half
a step.

Why two taps rather than a Gaussian over all lags: it costs two scatters per synapse and step
(a Gaussian costs ``D``), and rounding is lossless once the delays have settled on whole steps.
Its gradient sees only the neighbouring lag, so delays move by following the slope of the
postsynaptic response; a smooth synaptic kernel (time constant of a few steps) keeps that
slope informative.

Delays are stored in ms as a float array leaf ``delays`` (one per synapse), next to the
per-synapse ``weights``; train them with :class:`brainsim.fit.Trainable`, e.g. with
``fit.Interval(0.0, max_delay)`` so they stay in range without a clip (outside
``[0, max_delay]`` they are clipped, and the gradient there is zero).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ._errors import check_positive
from ._propagation import AbstractConnectivity, AbstractLayout, materialise, placed_window
from .connect import EdgeList

if TYPE_CHECKING:
    from ._network import Network


class LearnableDelays(AbstractLayout):
    """Store a projection with real-valued, trainable delays (linear interpolation over lags).

    Arguments:
        max_delay: the longest delay (ms) a synapse may reach during training; the receptor's
            ring buffer gets ``max_delay / dt + 1`` rows. At least one step.

    Each synapse keeps its own weight and delay (initial values from the edge list: delays in
    ms, ``None`` = 0; they need not be multiples of ``dt``). Delivery is a dense jnp
    scatter over all synapses every step (not event-driven): use it to train, then turn the
    projection into an event-driven one with :func:`round_learned_delays`.

    Example:
        >>> rec = {"e": bs.Receptor(bs.ExponentialSynapse(3.0), bs.CurrentBased())}
        >>> net = bs.Network(
        ...     [bs.Population("in", 2, bs.SpikeGenerator([1.0, 5.0], [0, 1])),
        ...      bs.Population("out", 2, bs.LIF(), receptors=rec)],
        ...     [bs.Projection("in", "out", bs.connect.all_to_all(2, 2, weight=100.0, delay=3.0),
        ...                    receptor="e", layout=bs.LearnableDelays(max_delay=10.0))],
        ...     dt=1.0)
        >>> tr = bs.fit.Trainable(net, lambda n: n.projections[0].connectivity.delays,
        ...                       bs.fit.Interval(0.0, 10.0))   # delays in ms, kept in range
        >>> # ... fit ..., then for event-driven inference:
        >>> fast = bs.round_learned_delays(tr.build(tr.init()))
    """

    max_delay: float = eqx.field(static=True)

    def __init__(self, max_delay: float):
        check_positive("max_delay", max_delay, owner="LearnableDelays", unit="ms")
        self.max_delay = float(max_delay)

    def build(self, edges, dt, *, owner, round_delays, dtype):
        edges = materialise(edges, owner)
        max_steps = int(np.floor(self.max_delay / dt + 1e-9))
        if max_steps < 1:
            raise ValueError(
                f"{owner}: LearnableDelays(max_delay={self.max_delay}) is shorter than one step "
                f"of dt = {dt} ms; interpolation needs at least two lags. Raise `max_delay`."
            )
        n = edges.n_synapses
        delay = 0.0 if edges.delay is None else edges.delay
        delays = np.broadcast_to(np.asarray(delay, dtype=float), (n,))
        high = max_steps * dt * (1 + 1e-9)
        bad = ~((delays >= 0) & (delays <= high))
        if np.any(bad):
            raise ValueError(
                f"{owner}: initial delay {delays[bad][0]} ms is outside [0, max_delay] = "
                f"[0, {max_steps * dt}] ms of LearnableDelays; raise `max_delay` or shorten "
                "the delays."
            )
        return LearnableDelayConnectivity(
            jnp.asarray(edges.pre, jnp.int32),
            jnp.asarray(edges.post, jnp.int32),
            jnp.asarray(edges.weights_per_edge(), dtype),
            jnp.asarray(np.clip(delays, 0.0, max_steps * dt), dtype),
            float(dt),
            edges.n_pre,
            edges.n_post,
            max_steps + 1,
            n,
        )


class LearnableDelayConnectivity(AbstractConnectivity):
    """Synapses as a list (``pre``, ``post``) with per-synapse ``weights`` and real ``delays``
    (ms, array leaves: both trainable); ``max_delay`` is the ring length in steps (the longest
    lag, the longest delay plus one step).

    ``post`` indexes the postsynaptic population (``size`` neurons). Placed (:meth:`placed`),
    synapse ``s`` adds into column ``post[s] + post_offset`` of a ring ``n_post`` neurons wide,
    and nowhere when that column lies outside ``[0, n_post)``; unplaced, ``post_offset = 0``
    and ``n_post = size``.
    """

    pre: Int[Array, " n_synapses"]
    post: Int[Array, " n_synapses"]
    weights: Float[Array, " n_synapses"]
    delays: Float[Array, " n_synapses"]
    dt: float = eqx.field(static=True)
    size: int = eqx.field(static=True)
    """Neurons of the postsynaptic population (the range of ``post``)."""
    post_offset: int = eqx.field(static=True)
    """Ring column of neuron 0 of the population (:meth:`placed`)."""

    def __init__(
        self,
        pre,
        post,
        weights,
        delays,
        dt,
        n_pre,
        n_post,
        max_delay,
        n_synapses,
        size=None,
        post_offset=0,
    ):
        self.pre = pre
        self.post = post
        self.weights = weights
        self.delays = delays
        self.dt = dt
        self.n_pre = n_pre
        self.n_post = n_post
        self.max_delay = max_delay
        self.n_synapses = n_synapses
        self.size = n_post if size is None else size
        self.post_offset = post_offset

    def taps(self):
        """Lower lag (steps, int) and the fraction ``f`` of the weight sent one step later."""
        lag = jnp.clip(self.delays / self.dt, 0.0, float(self.max_delay - 1)) + 1.0
        lower = jnp.minimum(jnp.floor(lag), self.max_delay - 1)
        return lower.astype(jnp.int32), lag - lower

    def _columns(self):
        """Ring columns of the synapses and, where the window can cut the population, which
        of them lie in the ring (``None``: all)."""
        if self.post_offset == 0:
            columns = self.post
        else:
            columns = self.post + self.post_offset
        if 0 <= self.post_offset and self.post_offset + self.size <= self.n_post:
            return columns, None
        return columns, (columns >= 0) & (columns < self.n_post)

    def deliver(self, ring, cursor, spikes):
        n_ring = ring.shape[0] // self.n_post
        lower, frac = self.taps()
        w = spikes.astype(self.weights.dtype)[self.pre] * self.weights
        row = (cursor + lower) % n_ring
        columns, inside = self._columns()
        first = row * self.n_post + columns
        second = ((row + 1) % n_ring) * self.n_post + columns
        slots = jnp.concatenate([first, second])
        if inside is not None:  # outside the window: past the end, dropped
            slots = jnp.where(jnp.concatenate([inside, inside]), slots, ring.shape[0])
        values = jnp.concatenate([w * (1 - frac), w * frac]).astype(ring.dtype)
        return ring.at[slots].add(values, mode="drop")


    def placed(self, offset, width):
        if offset == 0 and width == self.n_post:
            return self
        post_offset, width = placed_window(self, self.size, offset, width)
        return LearnableDelayConnectivity(
            self.pre,
            self.post,
            self.weights,
            self.delays,
            self.dt,
            self.n_pre,
            width,
            self.max_delay,
            self.n_synapses,
            self.size,
            post_offset,
        )

    def to_dense(self):
        """Summed weights in ring columns, ``(n_pre, n_post)``."""
        columns, inside = self._columns()
        w = self.weights if inside is None else jnp.where(inside, self.weights, 0)
        if inside is not None:
            columns = jnp.where(inside, columns, self.n_post)
        dense = jnp.zeros((self.n_pre, self.n_post), self.weights.dtype)
        return dense.at[self.pre, columns].add(w, mode="drop")

    def rounded_edges(self) -> EdgeList:
        """The synapses as an :class:`~brainsim.connect.EdgeList` with the current weights and
        each delay rounded to the nearest whole step (ms)."""
        steps = np.clip(np.rint(np.asarray(self.delays, float) / self.dt), 0, self.max_delay - 1)
        return EdgeList(
            np.asarray(self.pre),
            np.asarray(self.post),
            np.asarray(self.weights, float),
            steps * self.dt,
            self.n_pre,
            self.size,
        )


def round_learned_delays(network: Network, layout: AbstractLayout | None = None) -> Network:
    """The network with every :class:`LearnableDelays` projection turned into an ordinary one
    (delays rounded to whole steps, current weights) stored in ``layout``.

    Arguments:
        network: a built :class:`~brainsim.Network`.
        layout: the storage of the rounded projections (default :class:`~brainsim.Sparse`,
            event-driven; :class:`~brainsim.Dense` needs one delay per pair of neurons).

    Returns:
        A :class:`~brainsim.Network` with the same populations and other projections. Where the
        learned delays are whole steps it simulates exactly as the original; otherwise each
        delay moves by at most half a step.
    """
    from ._network import Network, Projection  # noqa: F811 (runtime import: no cycle)
    from ._propagation import Sparse

    if not isinstance(network, Network):
        raise TypeError(
            f"round_learned_delays: expected a brainsim.Network; got {type(network).__name__}."
        )
    layout = Sparse() if layout is None else layout
    if not isinstance(layout, AbstractLayout) or isinstance(layout, LearnableDelays):
        raise TypeError(
            "round_learned_delays: `layout` must be an integer-delay layout such as "
            f"brainsim.Sparse() or brainsim.Dense(); got {layout!r}."
        )
    projections = []
    for proj in network.projections:
        conn = proj.connectivity
        if isinstance(conn, LearnableDelayConnectivity):
            built = layout.build(
                conn.rounded_edges(),
                network.dt,
                owner=f"Projection {proj.name!r}",
                round_delays=True,
                dtype=conn.weights.dtype,
            )
            proj = Projection(
                proj.pre,
                proj.post,
                built,
                receptor=proj.receptor,
                layout=layout,
                stp=proj.stp,
                name=proj.name,
            )
        projections.append(proj)
    return eqx.tree_at(lambda n: n.projections, network, tuple(projections))
