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

from . import _C  # noqa: E402

__version__ = "0.1.0"
