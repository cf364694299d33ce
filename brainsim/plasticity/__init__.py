"""Long-term plasticity and homeostasis: pure ``init``/``update`` rules, composable with
:func:`chain`, that run inside a network's compiled simulation (``Projection(...,
plasticity=rule)``) on dense, sparse (ELL) and CSR connectivity.

See :mod:`brainsim.plasticity._stdp` for the same-step ordering convention.
"""

from ._base import AbstractPlasticity as AbstractPlasticity
from ._base import AbstractWeightDependence as AbstractWeightDependence
from ._base import Additive as Additive
from ._base import Chain as Chain
from ._base import Gutig as Gutig
from ._base import Multiplicative as Multiplicative
from ._base import chain as chain
from ._homeostasis import AdaptiveThreshold as AdaptiveThreshold
from ._homeostasis import Normalization as Normalization
from ._homeostasis import RateSensor as RateSensor
from ._homeostasis import SynapticScaling as SynapticScaling
from ._network import PlasticState as PlasticState
from ._network import at_boundary as at_boundary
from ._network import synapses_for as synapses_for
from ._stdp import EligibilityState as EligibilityState
from ._stdp import PairSTDP as PairSTDP
from ._stdp import PairTraces as PairTraces
from ._stdp import PowerLawSTDP as PowerLawSTDP
from ._stdp import RewardModulatedSTDP as RewardModulatedSTDP
from ._stdp import SymmetricSTDP as SymmetricSTDP
from ._stdp import TripletSTDP as TripletSTDP
from ._stdp import TripletTraces as TripletTraces
from ._synapses import AbstractSynapses as AbstractSynapses
from ._synapses import CsrSynapses as CsrSynapses
from ._synapses import DenseSynapses as DenseSynapses
from ._synapses import EllSynapses as EllSynapses
