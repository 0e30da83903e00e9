"""torch.nn.init for lviv_c: in-place initialisers on a tensor's storage (a Parameter or its
.data), drawn from lviv_c's seeded generator (lviv_c.manual_seed makes them reproducible)."""
import math

import numpy as np

from .. import _C
from ..tensor import Tensor

__all__ = ["calculate_gain", "uniform_", "normal_", "constant_", "ones_", "zeros_", "eye_",
           "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
           "orthogonal_", "trunc_normal_"]


def _check(t, name):
    if not isinstance(t, Tensor):
        raise TypeError(f"nn.init.{name}: expected a lviv_c Tensor, got {type(t).__name__}")
    return t


def calculate_gain(nonlinearity, param=None):
    linear_fns = ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                  "conv_transpose3d"]
    if nonlinearity in linear_fns or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif not isinstance(param, bool) and isinstance(param, (int, float)):
            slope = param
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _fans(t):
    if t.ndim < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 dimensions")
    rf = 1
    for s in t.shape[2:]:
        rf *= s
    return t.shape[1] * rf, t.shape[0] * rf


def uniform_(tensor, a=0.0, b=1.0):
    _C.fill_(_check(tensor, "uniform_"), 0, float(a), float(b))
    return tensor


def normal_(tensor, mean=0.0, std=1.0):
    _C.fill_(_check(tensor, "normal_"), 1, float(mean), float(std))
    return tensor


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
    _check(tensor, "trunc_normal_")
    n = tensor.numel()
    out = np.empty(0, np.float32)
    while out.size < n:  # rejection sampling with lviv_c's generator
        from ..tensor import randn
        d = np.asarray(randn(max(n, 16))) * std + mean
        out = np.concatenate([out, d[(d >= a) & (d <= b)]])
    _write(tensor, out[:n])
    return tensor


def constant_(tensor, val):
    _C.fill_(_check(tensor, "constant_"), 2, float(val))
    return tensor


def ones_(tensor):
    return constant_(tensor, 1.0)


def zeros_(tensor):
    return constant_(tensor, 0.0)


def eye_(tensor):
    if tensor.ndim != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")
    _write(tensor, np.eye(*tensor.shape, dtype=np.float32))
    return tensor


def _write(tensor, arr):
    np.copyto(np.asarray(memoryview(tensor)), np.asarray(arr, dtype=np.float32).reshape(tuple(tensor.shape)))


def xavier_uniform_(tensor, gain=1.0):
    fan_in, fan_out = _fans(_check(tensor, "xavier_uniform_"))
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    a = math.sqrt(3.0) * std
    return uniform_(tensor, -a, a)


def xavier_normal_(tensor, gain=1.0):
    fan_in, fan_out = _fans(_check(tensor, "xavier_normal_"))
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return normal_(tensor, 0.0, std)


def _kaiming_std(tensor, a, mode, nonlinearity, name):
    _check(tensor, name)
    if 0 in tuple(tensor.shape):
        return None
    mode = mode.lower()
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _fans(tensor)
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    std = _kaiming_std(tensor, a, mode, nonlinearity, "kaiming_uniform_")
    if std is None:
        return tensor
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    std = _kaiming_std(tensor, a, mode, nonlinearity, "kaiming_normal_")
    if std is None:
        return tensor
    return normal_(tensor, 0.0, std)


def orthogonal_(tensor, gain=1):
    """A (semi-)orthogonal matrix (QR of a Gaussian draw, signs fixed by diag(R)), times gain."""
    _check(tensor, "orthogonal_")
    if tensor.ndim < 2:
        raise ValueError("Only tensors with 2 or more dimensions are supported")
    if tensor.numel() == 0:
        return tensor
    rows = tensor.shape[0]
    cols = tensor.numel() // rows
    from ..tensor import randn
    flat = np.asarray(randn(rows, cols), dtype=np.float64)
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    _write(tensor, gain * q)
    return tensor


# deprecated torch aliases
uniform = uniform_
normal = normal_
constant = constant_
xavier_uniform = xavier_uniform_
xavier_normal = xavier_normal_
kaiming_uniform = kaiming_uniform_
kaiming_normal = kaiming_normal_
orthogonal = orthogonal_
