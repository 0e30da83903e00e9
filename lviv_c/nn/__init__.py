"""torch.nn for lviv_c: Module, Parameter, containers, layers, functional, init."""
from . import functional, init  # noqa: F401
from .layers import (  # noqa: F401
    ELU, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Identity, Linear,
    PoissonLoss, ReLU, Sigmoid, Tanh,
)
from .module import Module, ModuleDict, ModuleList, Sequential  # noqa: F401
from .parameter import Parameter  # noqa: F401

__all__ = ["Module", "Sequential", "ModuleList", "ModuleDict", "Parameter", "Identity", "Linear",
           "Conv2d", "BatchNorm1d", "BatchNorm2d", "ELU", "ReLU", "Tanh", "Sigmoid", "Flatten",
           "Dropout", "AvgPool2d", "PoissonLoss", "functional", "init"]
