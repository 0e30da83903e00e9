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
    x_np = np.ascontiguousarray(np.asarray(x_example, dtype=np.float32)).copy()
    x = from_numpy(x_np)
    y = None
    if y_example is not None:
        y = from_numpy(np.ascontiguousarray(np.asarray(y_example, dtype=np.float32)).copy())
    bufs = _buffers(model)
    saved = [np.array(memoryview(b), copy=True) for b in bufs]
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
            np.asarray(memoryview(b))[...] = s
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
        ref = np.array(out, copy=True)
        g.replay()
        if not np.allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-5, equal_nan=True):
            raise CaptureError("replaying the captured forward does not reproduce the eager output; "
                               "the forward depends on something outside the recorded ops")
    return g
