"""GPU availability and settings. The CUDA backend (lviv_c._cuda) is a separate shared object
loaded only on demand, so `import lviv_c` never needs a GPU, a driver or libcudart.

    lviv_c.cuda.is_available()      # never raises
    lviv_c.cuda.allow_tf32 = True   # opt in to TF32 tensor cores in matmul/conv (default False)

``LVIV_EMULATE_CUDA=1`` (read at the first use) replaces the GPU by the emulated device, a TEST
DEVICE ONLY: a second backend with its own storage and explicit copies in and out, named 'cuda',
that computes with the CPU kernels (csrc/cpu/emulated.c). CI runs the CUDA tests on it so the
dispatch, the placement and the tests themselves run on every commit; it proves nothing about the
CUDA kernels, which only a GPU runs (scripts/gpu-check).
"""
import importlib
import os
import sys
import types

_state = {"checked": False, "mod": None, "error": None, "installed": False, "tf32": False}


class _EmulatedDevice:
    """The module-level interface of lviv_c._cuda, for the emulated device (test device only)."""

    emulated = True
    TABLE_ABI = None

    def __init__(self):
        from . import _C
        self.table = _C._emulated_cuda_table()
        self.TABLE_ABI = _C.BACKEND_ABI

    def device_count(self):
        return 1

    def device_name(self, index=0):
        return "emulated CUDA device (CPU kernels; a test device, not a GPU)"

    def get_device_capability(self, index=0):
        return (0, 0)

    def mem_info(self):
        return (0, 0)

    def synchronize(self):
        return None

    def set_allow_tf32(self, value):
        return None

    def runtime_version(self):
        return "emulated"


def emulated():
    """True when LVIV_EMULATE_CUDA=1 put the emulated test device in the GPU's place."""
    return _backend() is not None and getattr(_state["mod"], "emulated", False)


def _backend():
    if not _state["checked"]:
        _state["checked"] = True
        if os.environ.get("LVIV_EMULATE_CUDA", "") not in ("", "0"):
            try:
                _state["mod"] = _EmulatedDevice()
            except Exception as e:
                _state["error"] = f"LVIV_EMULATE_CUDA is set but the emulated device failed: {type(e).__name__}: {e}"
            return _state["mod"]
        try:
            _state["mod"] = importlib.import_module("lviv_c._cuda")
        except Exception as e:  # missing module, missing libcublas/libcudnn/driver: CPU only
            _state["error"] = f"{type(e).__name__}: {e}"
    return _state["mod"]


def is_available():
    """True when the CUDA backend was built, loads, and sees at least one GPU. Never raises."""
    try:
        m = _backend()
        return bool(m is not None and m.device_count() > 0)
    except Exception:
        return False


def device_count():
    try:
        m = _backend()
        return int(m.device_count()) if m is not None else 0
    except Exception:
        return 0


def _require():
    """The loaded backend with its op table installed in the C core; RuntimeError otherwise."""
    if not is_available():
        raise RuntimeError(
            "a CUDA tensor was requested but no CUDA GPU is available "
            f"({why_unavailable()}; lviv_c.cuda.is_available() is False); use device='cpu'")
    m = _state["mod"]
    if not _state["installed"]:
        from . import _C
        _C._set_cuda_table(m.table)
        m.set_allow_tf32(_state["tf32"])
        _state["installed"] = True
    return m


def get_device_name(index=0):
    m = _backend()
    if m is None or device_count() == 0:
        raise RuntimeError("no CUDA GPU is available" + (f" ({_state['error']})" if _state["error"] else ""))
    return m.device_name(index)


def get_device_capability(index=0):
    return _require().get_device_capability(index)


def mem_info():
    """(free, total) bytes of GPU 0."""
    return _require().mem_info()


def why_unavailable():
    """A human-readable reason why is_available() is False (or None)."""
    if is_available():
        return None
    m = _backend()
    if m is None:
        return _state["error"] or "the CUDA backend was not built"
    return "the CUDA backend loaded but sees no GPU"


def manual_seed(seed):
    from . import tensor
    tensor.manual_seed(seed)


def synchronize():
    """Wait for all queued GPU work (no-op without a GPU)."""
    if _state["installed"]:
        _state["mod"].synchronize()


class _CudaModule(types.ModuleType):
    @property
    def allow_tf32(self):
        """TF32 tensor cores in matmul (cuBLAS) and conv2d (cuDNN). Off by default so results
        match the CPU to float32 precision; set True for speed on Ampere/Hopper."""
        return _state["tf32"]

    @allow_tf32.setter
    def allow_tf32(self, value):
        _state["tf32"] = bool(value)
        if _state["installed"]:
            _state["mod"].set_allow_tf32(bool(value))


sys.modules[__name__].__class__ = _CudaModule
