"""brainsim: differentiable brain-dynamics simulation in JAX.

Models are frozen ``equinox`` modules with pure ``init``/``step`` functions; a network is one
value with one step; :func:`simulate` runs it in a compiled ``lax.scan``. Units: ms, mV, pF,
nS, pA, Hz.
"""

from . import connect as connect
from . import init as init
from . import surrogate as surrogate
from ._compile import jit as jit
from ._errors import BrainsimWarning as BrainsimWarning
from ._errors import SimulationError as SimulationError
from ._inputs import AbstractCurrent as AbstractCurrent
from ._inputs import ConstantCurrent as ConstantCurrent
from ._inputs import PoissonSource as PoissonSource
from ._inputs import SpikeGenerator as SpikeGenerator
from ._inputs import StepCurrent as StepCurrent
from ._inputs import TimedArray as TimedArray
from ._integrators import RK2 as RK2
from ._integrators import RK4 as RK4
from ._integrators import AbstractIntegrator as AbstractIntegrator
from ._integrators import Euler as Euler
from ._integrators import Exact as Exact
from ._integrators import ExponentialEuler as ExponentialEuler
from ._integrators import Heun as Heun
from ._monitors import AbstractMonitor as AbstractMonitor
from ._monitors import PopulationRate as PopulationRate
from ._monitors import SpikeList as SpikeList
from ._monitors import SpikeRaster as SpikeRaster
from ._monitors import StateTrace as StateTrace
from ._network import Network as Network
from ._network import NetworkState as NetworkState
from ._network import Population as Population
from ._network import Projection as Projection
from ._network import Receptor as Receptor
from ._neurons._base import AbstractNeuron as AbstractNeuron
from ._neurons._base import AbstractSpikeSource as AbstractSpikeSource
from ._neurons._base import Drive as Drive
from ._neurons.lif import LIF as LIF
from ._neurons.lif import LIFState as LIFState
from ._propagation import AbstractConnectivity as AbstractConnectivity
from ._propagation import AbstractLayout as AbstractLayout
from ._propagation import Dense as Dense
from ._propagation import DenseConnectivity as DenseConnectivity
from ._propagation import EllConnectivity as EllConnectivity
from ._propagation import Sparse as Sparse
from ._simulate import Faults as Faults
from ._simulate import SimulationResult as SimulationResult
from ._simulate import simulate as simulate
from ._synapses.kinetics import AbstractKinetics as AbstractKinetics
from ._synapses.kinetics import AlphaSynapse as AlphaSynapse
from ._synapses.kinetics import DualExponentialSynapse as DualExponentialSynapse
from ._synapses.kinetics import ExponentialSynapse as ExponentialSynapse
from ._synapses.outputs import NMDA as NMDA
from ._synapses.outputs import AbstractOutput as AbstractOutput
from ._synapses.outputs import ConductanceBased as ConductanceBased
from ._synapses.outputs import CurrentBased as CurrentBased
from ._synapses.stp import TsodyksMarkram as TsodyksMarkram
from ._version import __version__ as __version__
