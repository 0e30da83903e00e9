"""torch.nn.functional for lviv_c: every function is one C op (with its backward in C)."""
import numbers

import numpy as np

from .. import _C
from ..tensor import ELU, RELU, SIGMOID, TANH, Tensor, _to_tensor

__all__ = ["elu", "relu", "tanh", "sigmoid", "linear", "conv2d", "batch_norm", "grid_sample",
           "pad", "avg_pool2d", "dropout", "poisson_loss"]


def _pair(v, name):
    if isinstance(v, numbers.Integral):
        return (int(v), int(v))
    v = tuple(int(a) for a in v)
    if len(v) == 1:
        return (v[0], v[0])
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {v}")
    return v


def _tensor(x, name):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a lviv_c Tensor, got {type(x).__name__}")
    return x


# ------------------------------------------------------------------ activations
def elu(input, alpha=1.0, inplace=False):
    """ELU(x) = x if x > 0 else alpha * (exp(x) - 1), elementwise."""
    return _C.unary(ELU, _tensor(input, "elu"), float(alpha))


def relu(input, inplace=False):
    return _C.unary(RELU, _tensor(input, "relu"))


def tanh(input):
    return _C.unary(TANH, _tensor(input, "tanh"))


def sigmoid(input):
    return _C.unary(SIGMOID, _tensor(input, "sigmoid"))


# ------------------------------------------------------------------ layers
def linear(input, weight, bias=None):
    """input (..., in_features) @ weight(out_features, in_features)^T + bias(out_features)."""
    return _C.nn_linear(_tensor(input, "linear"), weight, bias)


def _same_padding(kernel, dilation):
    """PyTorch's 'same': total d*(k-1) per dim, left = total // 2, the rest on the right."""
    left, extra = [], []
    for k, d in zip(kernel, dilation):
        total = d * (k - 1)
        left.append(total // 2)
        extra.append(total - 2 * (total // 2))
    return tuple(left), tuple(extra)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-d cross-correlation. input (N, C_in, H, W), weight (C_out, C_in/groups, kh, kw).
    padding: int, pair, 'valid' or 'same' (stride 1; even kernels pad one more on the right)."""
    input = _tensor(input, "conv2d")
    if input.ndim == 3:  # unbatched (C, H, W)
        return conv2d(input.unsqueeze(0), weight, bias, stride, padding, dilation, groups).squeeze(0)
    sh, sw = _pair(stride, "stride")
    dh, dw = _pair(dilation, "dilation")
    if isinstance(padding, str):
        if padding == "valid":
            ph = pw = 0
        elif padding == "same":
            if (sh, sw) != (1, 1):
                raise ValueError("conv2d: padding='same' is not supported for strided convolutions")
            if weight.ndim != 4:
                raise ValueError(f"conv2d: weight must be 4-d, got shape {tuple(weight.shape)}")
            (ph, pw), (eh, ew) = _same_padding(weight.shape[2:], (dh, dw))
            if eh or ew:
                input = pad(input, (0, ew, 0, eh))
        else:
            raise ValueError(f"conv2d: invalid padding string {padding!r}, should be one of {{'valid', 'same'}}")
    else:
        ph, pw = _pair(padding, "padding")
    return _C.nn_conv2d(input, weight, bias, sh, sw, ph, pw, dh, dw, int(groups))


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalisation over dim 1 of (N, C, ...). training (or no running stats): batch
    statistics, and running_mean / running_var (unbiased) are updated in place with `momentum`."""
    return _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


def _batch_norm(input, running_mean, running_var, weight, bias, use_batch_stats, momentum, eps,
                num_batches_tracked=None, fuse_elu=False):
    input = _tensor(input, "batch_norm")
    use_batch = bool(use_batch_stats) or (running_mean is None and running_var is None)
    mom = -1.0 if momentum is None else float(momentum)
    return _C.nn_batch_norm(input, weight, bias, running_mean, running_var, num_batches_tracked,
                            use_batch, mom, float(eps), bool(fuse_elu))


def batch_norm_elu(input, running_mean, running_var, weight=None, bias=None, training=False,
                   momentum=0.1, eps=1e-5):
    """elu(batch_norm(...)) in one fused op (same semantics as the two ops in sequence)."""
    return _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps,
                       fuse_elu=True)


def grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=None):
    """Sample input (N, C, H, W) at grid (N, H_out, W_out, 2) (x, y in [-1, 1]) bilinearly;
    zeros outside. align_corners=True: -1 and 1 are the centres of the edge pixels."""
    if mode != "bilinear":
        raise ValueError(f"grid_sample: only mode='bilinear' is supported, got {mode!r}")
    if padding_mode != "zeros":
        raise ValueError(f"grid_sample: only padding_mode='zeros' is supported, got {padding_mode!r}")
    return _C.nn_grid_sample(_tensor(input, "grid_sample"), _tensor(grid, "grid_sample grid"),
                             bool(align_corners))


def pad(input, pad, mode="constant", value=None):
    """Constant padding; pad = (left, right, top, bottom, ...) starting from the last dim."""
    if mode != "constant":
        raise ValueError(f"pad: only mode='constant' is supported, got {mode!r}")
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2:
        raise ValueError(f"pad: padding length must be divisible by 2, got {len(pad)}")
    return _C.nn_pad(_tensor(input, "pad"), pad, 0.0 if value is None else float(value))


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Average pooling over (N, C, H, W) or (C, H, W) (count_include_pad, floor mode)."""
    if ceil_mode or not count_include_pad or divisor_override is not None:
        raise ValueError("avg_pool2d: only ceil_mode=False, count_include_pad=True, divisor_override=None are supported")
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = (kh, kw) if stride is None or (not isinstance(stride, numbers.Integral) and len(stride) == 0) else _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    return _C.nn_avg_pool2d(_tensor(input, "avg_pool2d"), kh, kw, sh, sw, ph, pw)


def dropout(input, p=0.5, training=True, inplace=False):
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p)."""
    if p < 0 or p > 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0:
        return input
    return _C.nn_dropout(_tensor(input, "dropout"), float(p))


def poisson_loss(output, target, eps=1e-12, avg=False, reduction=None):
    """Poisson negative log likelihood without the constant: sum(output - target*log(output+eps)).
    avg=True or reduction='mean' averages; reduction='none' keeps the elementwise loss."""
    output = _tensor(output, "poisson_loss")
    target = _to_tensor(target, output)
    if reduction is None:
        reduction = "mean" if avg else "sum"
    if reduction == "none":
        return output - target * (output + eps).log()
    if reduction not in ("sum", "mean"):
        raise ValueError(f"poisson_loss: reduction must be 'sum', 'mean' or 'none', got {reduction!r}")
    return _C.nn_poisson_loss(output, target, float(eps), reduction == "mean")


def _np(x):
    return np.asarray(x)
