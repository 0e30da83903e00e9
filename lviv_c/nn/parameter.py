"""nn.Parameter: a Tensor that a Module registers as trainable."""
import numpy as np

from .. import _C
from ..tensor import Tensor, empty


def _rebuild_parameter(arr, requires_grad):
    return Parameter(_C.from_numpy(np.ascontiguousarray(arr)), requires_grad)


class Parameter(Tensor):
    """A Tensor that is a module parameter (requires_grad=True by default).

    `Parameter(t)` shares t's storage (like torch: no copy)."""

    def __new__(cls, data=None, requires_grad=True):
        if data is None:
            data = empty(0)
        if not isinstance(data, Tensor):
            data = Tensor(data)
        obj = Tensor.__new__(cls, data)
        obj.requires_grad = requires_grad
        return obj

    def __init__(self, data=None, requires_grad=True):
        pass

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        p = Parameter(_C.clone(_C.detach(self)), self.requires_grad)
        memo[id(self)] = p
        return p

    def __reduce_ex__(self, proto):
        return (_rebuild_parameter, (np.array(memoryview(self)), self.requires_grad))
