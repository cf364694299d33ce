"""HLOP: Hebbian learning based orthogonal projection for continual learning (Xiao et al., ICLR 2024).

* :class:`Subspace` — lateral subspace neurons :math:`H` (``max_rows × n``) with static-shape
  ``active``/``frozen`` row masks; :func:`grow` adds orthonormal rows for a new task and
  :func:`freeze` fixes them.
* :class:`Oja` — Oja's subspace rule with momentum, clipping and iterations per minibatch;
  :func:`learn` runs it over a data set; :func:`principal_angles` checks the result.
* Projections out of the frozen subspace: :func:`project` (activity/traces),
  :func:`project_gradient` (weight gradients, forward pass unchanged), :func:`trace_update`
  (projected online trace-based update) and :func:`project_updates` (an ``optax`` wrapper).
* Continual learning: :func:`continual_learning` trains a :class:`~brainsim.fit.SpikingRNN`
  on a sequence of :class:`Task` values, plainly or with :class:`HLOP` settings, and
  :func:`multitask` trains it on all tasks at once (the upper bound); both return a
  :class:`ContinualResult` with the accuracy matrix, :func:`acc` and :func:`bwt`.
  :func:`permuted_digits` builds permuted spike-encoded tasks from scikit-learn's bundled 8×8
  digits (scikit-learn is imported only there).
"""

from ._continual import HLOP as HLOP
from ._continual import ContinualResult as ContinualResult
from ._continual import acc as acc
from ._continual import bwt as bwt
from ._continual import continual_learning as continual_learning
from ._continual import evaluate as evaluate
from ._continual import multitask as multitask
from ._oja import Oja as Oja
from ._oja import OjaState as OjaState
from ._oja import learn as learn
from ._oja import principal_angles as principal_angles
from ._subspace import Subspace as Subspace
from ._subspace import freeze as freeze
from ._subspace import grow as grow
from ._subspace import project as project
from ._subspace import project_gradient as project_gradient
from ._subspace import project_updates as project_updates
from ._subspace import trace_update as trace_update
from ._tasks import Task as Task
from ._tasks import permuted_digits as permuted_digits
