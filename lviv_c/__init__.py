"""lviv_c: predict mouse V1 responses to natural images, with tensors, kernels, training loops and
the dataset reader in C (CPU) and CUDA (GPU), under a torch-like / lviv-like Python surface."""
import ctypes as _ctypes
import os as _os

# OpenBLAS (scipy-openblas32) is loaded before the extension so its soname resolves wherever
# the wheel was installed.
try:
    import scipy_openblas32 as _sob
    _d = _sob.get_lib_dir()
    for _f in _os.listdir(_d):
        if _f.startswith("lib" + _sob.get_library()) and ".so" in _f:
            _ctypes.CDLL(_os.path.join(_d, _f), mode=_ctypes.RTLD_GLOBAL)
            break
except ImportError:  # pragma: no cover - the build requires it
    pass

try:
    from . import _C  # noqa: E402
except ImportError as _e:  # the source folder without its compiled extension (as NumPy explains)
    _here = _os.path.dirname(_os.path.abspath(__file__))
    if any(_f.startswith("_C.") and _f.endswith((".so", ".pyd")) for _f in _os.listdir(_here)):
        raise
    raise ImportError(
        f"lviv_c: the compiled extension lviv_c._C is missing from {_here}. You are importing the "
        f"lviv_c source folder (probably because Python was started in the repository root, which "
        f"comes first on sys.path) rather than a built or installed lviv_c. Either start Python "
        f"from another folder to use the installed package, or build the extension in place: "
        f"`python setup.py build_ext --inplace` (or `make build`).") from None
from . import backends, cuda  # noqa: E402,F401
from .tensor import (  # noqa: E402,F401
    Size, Tensor, allclose, amax, amin, arange, argmax, argmin, as_tensor, abs, cat, clamp, clip,
    concatenate, cos, device, dtype, empty, empty_like, enable_grad, exp, flatten, float32, from_numpy,
    full, full_like, index_select, inference_mode, int64, is_grad_enabled, is_tensor, linspace, log,
    log1p, long, manual_seed, matmul, max, maximum, mean, min, minimum, mm, neg, no_grad, norm, numel,
    ones, ones_like, permute, rand, rand_like, randn, randn_like, relu, reshape, set_grad_enabled,
    sigmoid, sign, sin, sqrt, square, squeeze, stack, std, sum, t, tanh, tensor, transpose, unsqueeze,
    var, where, zeros, zeros_like,
)
from .tensor import float  # noqa: E402,F401,A004
from .tensor import bool_ as bool  # noqa: E402,F401,A004

from . import nn, optim  # noqa: E402,F401
from .serialization import load, save  # noqa: E402,F401

__version__ = "0.1.0"
