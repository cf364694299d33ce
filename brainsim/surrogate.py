"""Surrogate spike functions (Heaviside forward, smooth derivative backward)."""

from ._surrogate import AbstractSurrogate as AbstractSurrogate
from ._surrogate import Arctan as Arctan
from ._surrogate import Exponential as Exponential
from ._surrogate import FastSigmoid as FastSigmoid
from ._surrogate import Rectangular as Rectangular
from ._surrogate import Sigmoid as Sigmoid
from ._surrogate import Triangle as Triangle
