"""Paper reproductions built on brainsim's public API, kept apart from the library core.

* :mod:`brainsim.examples.hlop` — Hebbian learning based orthogonal projection for continual
  learning (Xiao et al., ICLR 2024).
* ``pattern_detector_*`` — supervised spatial-pattern detectors learned with pair STDP and
  weight normalisation (Davies et al., Neurocomputing 2025); see
  :func:`pattern_detector_network`.

They are examples of what the library does, not part of it: nothing in the core imports them
(``import brainsim`` does not load this package), and they use only ``brainsim``'s public names,
as a user's code would. ``lint-imports`` checks the first rule (contracts in ``pyproject.toml``).
"""

from . import hlop as hlop
from ._pattern_detector import PatternDetectorEvaluation as PatternDetectorEvaluation
from ._pattern_detector import PatternDetectorParameters as PatternDetectorParameters
from ._pattern_detector import PatternDetectorTraining as PatternDetectorTraining
from ._pattern_detector import pattern_detector_evaluate as pattern_detector_evaluate
from ._pattern_detector import pattern_detector_network as pattern_detector_network
from ._pattern_detector import pattern_detector_overlap_sweep as pattern_detector_overlap_sweep
from ._pattern_detector import pattern_detector_patterns as pattern_detector_patterns
from ._pattern_detector import pattern_detector_responses as pattern_detector_responses
from ._pattern_detector import pattern_detector_rule as pattern_detector_rule
from ._pattern_detector import pattern_detector_spikes as pattern_detector_spikes
from ._pattern_detector import pattern_detector_train as pattern_detector_train
