"""GPU availability and settings. The CUDA backend (lviv_c._cuda) is a separate shared object
loaded only on demand, so `import lviv_c` never needs a GPU, a driver or libcudart.

    lviv_c.cuda.is_available()      # never raises
    lviv_c.cuda.allow_tf32 = True   # opt in to TF32 tensor cores in matmul/conv (default False)
"""
import importlib
import sys
import types

_state = {"checked": False, "mod": None, "error": None, "installed": False, "tf32": False}


def _backend():
    if not _state["checked"]:
        _state["checked"] = True
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
