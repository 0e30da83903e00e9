"""GPU availability. The CUDA backend (lviv_c._cuda) is a separate shared object loaded only on
demand, so `import lviv_c` never needs a GPU, a driver or libcudart."""
import importlib

_state = {"checked": False, "mod": None, "error": None}


def _backend():
    if not _state["checked"]:
        _state["checked"] = True
        try:
            _state["mod"] = importlib.import_module("lviv_c._cuda")
        except Exception as e:  # missing module, missing libcudart/driver: CPU only
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


def get_device_name(index=0):
    m = _backend()
    if m is None or device_count() == 0:
        raise RuntimeError("no CUDA GPU is available" + (f" ({_state['error']})" if _state["error"] else ""))
    return m.device_name(index)


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
    pass
