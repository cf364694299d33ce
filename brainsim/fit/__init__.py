"""Gradient-based fitting and training.

* What trains: :class:`Trainable` selects leaves of any model value and maps them through
  bijections (:class:`Identity`, :class:`Positive`, :class:`Interval`); the rest is frozen.
* Losses on voltage traces, spike trains, rates and classes (:func:`voltage_mse`,
  :func:`van_rossum_loss`, :func:`spike_time_loss`, :func:`rate_regularizer`,
  :func:`rate_cross_entropy`, :func:`membrane_cross_entropy`, ...), and :class:`SpikeTrain`,
  the recording that keeps spike gradients.
* :func:`fit`: an ``optax`` loop with progress, history, early stopping, seeded minibatches
  and ``batched=True`` for many independent fits in one ``vmap``.
* Online learning: :class:`SpikingRNN` and :func:`eprop_loss` (e-prop eligibility traces,
  memory independent of the number of steps).

* Learnable delays: the :class:`brainsim.LearnableDelays` layout (real-valued delays, linear
  interpolation over lags) and :func:`brainsim.round_learned_delays` for event-driven inference.

Memory-bounded gradients of long runs: ``simulate(..., checkpoint=brainsim.Checkpointing())``.
"""

from ._bijections import AbstractBijection as AbstractBijection
from ._bijections import Identity as Identity
from ._bijections import Interval as Interval
from ._bijections import Positive as Positive
from ._driver import EarlyStopping as EarlyStopping
from ._driver import FitResult as FitResult
from ._driver import fit as fit
from ._losses import accuracy as accuracy
from ._losses import firing_rates as firing_rates
from ._losses import membrane_cross_entropy as membrane_cross_entropy
from ._losses import rate_cross_entropy as rate_cross_entropy
from ._losses import rate_error as rate_error
from ._losses import rate_regularizer as rate_regularizer
from ._losses import spike_count_error as spike_count_error
from ._losses import spike_counts as spike_counts
from ._losses import spike_time_loss as spike_time_loss
from ._losses import spike_times as spike_times
from ._losses import van_rossum_distance as van_rossum_distance
from ._losses import van_rossum_loss as van_rossum_loss
from ._losses import voltage_mse as voltage_mse
from ._online import SpikingRNN as SpikingRNN
from ._online import bptt_loss as bptt_loss
from ._online import eprop_loss as eprop_loss
from ._params import Trainable as Trainable
from ._recording import SpikeTrain as SpikeTrain
from ._recording import Trace as Trace
