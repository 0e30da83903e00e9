"""Capture a model's forward (and loss) once into a C graph that the C loops replay.

`capture_graph` runs the Python forward on a placeholder batch with recording on: every op the
forward calls becomes a node of a C graph (inputs, parameters and buffers are shared storage).
Replaying the graph after writing a new batch into the placeholder recomputes the same
computation in C, without Python. Train and eval modes are separate captures (BatchNorm
statistics, readout sampling); random ops draw fresh numbers on every replay.

A forward that reads tensor values in Python (`.item()`, `bool(t)`, `.numpy()`, in-place writes)
cannot be replayed faithfully; such a forward raises CaptureError during capture, and the
trainer then falls back to running the Python forward for every batch."""
import numpy as np

from . import _C
from .tensor import Tensor, from_numpy, no_grad


class CaptureError(RuntimeError):
    """The model's forward cannot be recorded into a replayable C graph."""


def _guard(what):
    if _C.capture_active():
        raise CaptureError(
            f"{what} reads tensor values in Python while the model's forward is being captured into a "
            "C graph; the graph could not replay that decision for other batches. Keep data-dependent "
            "Python control flow out of forward(), or train with capture=False (eager Python loop).")


def _buffers(model):
    if hasattr(model, "buffers"):
        return [b for b in model.buffers() if isinstance(b, Tensor)]
    return []


# ---- device placement: graphs are built on the model's device (its first parameter's) ----
def model_device(model):
    """'cuda' when the model's parameters live on the GPU, else 'cpu'."""
    params = getattr(model, "parameters", None)
    if params is not None:
        for p in params():
            return "cuda" if p.is_cuda else "cpu"
    return "cpu"


def to_device(arr, device):
    """A fresh float32 tensor holding a copy of `arr` on `device` (a placeholder)."""
    t = from_numpy(np.ascontiguousarray(np.asarray(arr, dtype=np.float32)).copy())
    return _C._to_device(t, 1) if device == "cuda" else t


def host_copy(t):
    """A NumPy copy of a tensor's values on either device."""
    return np.array(t.detach().cpu() if t.is_cuda else memoryview(t), copy=True)


def write_into(t, arr):
    """Overwrite tensor t (either device) with the values of arr (same number of elements)."""
    if t.is_cuda:
        dt = np.float32 if t._dtype_code == 0 else np.int64
        _C.copy_into(t, from_numpy(np.ascontiguousarray(np.asarray(arr).reshape(tuple(t.shape)), dtype=dt)))
    else:
        np.asarray(memoryview(t))[...] = arr


class Graph:
    """A captured computation: `x` (and `y`) placeholders in, `out` (and `loss`) out."""

    def __init__(self, handle, x, y, out, loss, batch):
        self.handle, self.x, self.y, self.out, self.loss, self.batch = handle, x, y, out, loss, batch

    @property
    def ops(self):
        return _C.graph_info(self.handle)

    def replay(self):
        _C.graph_replay(self.handle)


def capture_graph(model, x_example, y_example=None, loss_fn=None, train=False, call=None):
    """Record `model(x)` (and `loss_fn(out, y)`) on a copy of the example batch.

    The model's buffers (BatchNorm running statistics) are restored after the capture forward,
    so capturing does not change the model. Returns a Graph."""
    dev = model_device(model)
    x = to_device(x_example, dev)
    y = None
    if y_example is not None:
        y = to_device(y_example, dev)
    bufs = _buffers(model)
    saved = [host_copy(b) for b in bufs]
    was_training = getattr(model, "training", None)
    if hasattr(model, "train"):
        model.train(train)
    call = call or model
    _C.capture_begin()
    try:
        if train:
            out = call(x)
            loss = loss_fn(out, y) if loss_fn is not None else None
        else:
            with no_grad():
                out = call(x)
            loss = None
    except BaseException:
        _C.capture_abort()
        raise
    finally:
        for b, s in zip(bufs, saved):
            write_into(b, s)
        if was_training is not None and hasattr(model, "train"):
            model.train(was_training)
    if not isinstance(out, Tensor):
        _C.capture_abort()
        raise CaptureError(f"the model's forward returned {type(out).__name__}, expected a Tensor")
    if out.ndim != 2 or out.shape[0] != x.shape[0]:
        _C.capture_abort()
        raise CaptureError(f"the model's output has shape {tuple(out.shape)}, expected (batch, neurons) "
                           f"with batch {x.shape[0]}")
    if train:
        if loss is None or loss.numel() != 1:
            _C.capture_abort()
            raise CaptureError("training capture needs a scalar loss")
        if not loss.requires_grad:
            _C.capture_abort()
            raise CaptureError("the loss does not depend on any parameter that requires grad")
    h = _C.capture_end(x, y, out, loss, x.shape[0])
    g = Graph(h, x, y, out, loss, x.shape[0])
    if not train:
        # sanity check: a replay on the same batch reproduces the eager output
        ref = host_copy(out)
        g.replay()
        if not np.allclose(host_copy(out), ref, rtol=1e-4, atol=1e-5, equal_nan=True):
            raise CaptureError("replaying the captured forward does not reproduce the eager output; "
                               "the forward depends on something outside the recorded ops")
    return g
