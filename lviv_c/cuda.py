"""GPU availability and settings. The CUDA backend (lviv_c._cuda) is a separate shared object
loaded only on demand, so `import lviv_c` never needs a GPU, a driver or libcudart.

    lviv_c.cuda.is_available()      # never raises
    lviv_c.cuda.allow_tf32 = True   # TF32 in matmul and conv at once (lviv_c.backends: one each)
    lviv_c.cuda.empty_cache()       # free the backend's caches (cuDNN plans, workspaces, scratch)

``LVIV_CUDA_SYNC=1`` (read when the backend is first used; 0/1, true/false, yes/no, on/off) is a
debug mode: every kernel launch is followed by a synchronisation and a check, so a fault inside a
kernel is reported by the op that launched it (slow; for finding a fault). Without it a fault
shows at the next call that waits for the GPU and is reported as "a CUDA kernel launched earlier
failed: ... (set LVIV_CUDA_SYNC=1 to find which)". Such faults leave the process's CUDA context
unusable: the message says so, and every later CUDA op fails with "CUDA is unusable in this
process since an earlier error ...".

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

_state = {"checked": False, "mod": None, "error": None, "installed": False}

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def env_flag(name, default=False):
    """The boolean environment variable `name` (1/0, true/false, yes/no, on/off; unset: default);
    ValueError naming the variable for anything else."""
    v = os.environ.get(name)
    if v is None:
        return default
    w = v.strip().lower()
    if w in _TRUE:
        return True
    if w in _FALSE:
        return False
    raise ValueError(f"environment variable {name} must be 0 or 1 (or true/false, yes/no, on/off), got {v!r}")


def _apply_env():
    """Push LVIV_CUDA_SYNC into the core's switches (done when the backend is installed)."""
    from . import _C
    _C._set_device_flag("sync_launches", env_flag("LVIV_CUDA_SYNC"))


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

    def empty_cache(self):
        return None

    def runtime_version(self):
        return "emulated"


def emulated():
    """True when LVIV_EMULATE_CUDA=1 put the emulated test device in the GPU's place."""
    return _backend() is not None and getattr(_state["mod"], "emulated", False)


def _backend():
    if not _state["checked"]:
        _state["checked"] = True
        try:
            emulate = env_flag("LVIV_EMULATE_CUDA")
        except ValueError as e:   # said by why_unavailable(); is_available() never raises
            _state["error"] = str(e)
            return None
        if emulate:
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
        _apply_env()
        _C._set_cuda_table(m.table)
        if not getattr(m, "emulated", False):
            import atexit
            atexit.register(m.empty_cache)  # the cuDNN plans, handles and buffers, before the runtime goes
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
    """Wait for all queued GPU work (no-op without a GPU); a fault of a queued kernel is raised
    here as RuntimeError."""
    if _state["installed"]:
        from . import _C
        _C._cuda_synchronize()


def empty_cache():
    """Free the CUDA backend's caches: cuDNN plans and workspace, cuBLAS/cuDNN handles, scratch
    buffers, pinned staging buffers (made again on demand). Tensors are not touched."""
    if _state["installed"]:
        _state["mod"].empty_cache()


class _CudaModule(types.ModuleType):
    @property
    def allow_tf32(self):
        """TF32 tensor cores in matmul (cuBLAS) AND conv2d (cuDNN): True when both are allowed.
        Setting it sets both lviv_c.backends.cuda.matmul.allow_tf32 and
        lviv_c.backends.cudnn.allow_tf32. Off by default so results match the CPU to float32
        precision; True for speed on Ampere/Hopper."""
        from .backends import cuda, cudnn
        return cuda.matmul.allow_tf32 and cudnn.allow_tf32

    @allow_tf32.setter
    def allow_tf32(self, value):
        from .backends import cuda, cudnn
        cuda.matmul.allow_tf32 = value
        cudnn.allow_tf32 = value


sys.modules[__name__].__class__ = _CudaModule
