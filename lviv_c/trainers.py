"""train_model: the course's training routine, with the epochs running in C.

The model's forward and loss are captured once into C graphs (lviv_c.capture); each epoch is
one call into C that gathers batches from the in-memory scan, replays forward, loss and
backward and steps Adam, with the GIL released. Python only runs the early-stopping /
learning-rate schedule between epochs (lviv_c.training_loop), evaluates validation
correlation through a captured eval graph, and draws the progress bar."""
import math
import sys
import time

import numpy as np

from . import _C
from . import cuda as _cuda
from .capture import CaptureError, capture_graph, host_copy, model_device, to_device, write_into
from .tensor import Tensor, manual_seed, no_grad
from .utility.measures import corr

_warned_cpu = {"done": False}


def resolve_device(device, verbose=True):
    """'cuda' (and 'auto') means the GPU when there is one; without one lviv_c runs on the CPU
    and says so once. Returns 'cuda' or 'cpu'."""
    dev = str(device or "cpu")
    if dev == "auto":
        dev = "cuda"
    if not (dev == "cpu" or dev.startswith("cuda")):
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda', got {device!r}")
    if dev.startswith("cuda") and not _cuda.is_available():
        if verbose and not _warned_cpu["done"]:
            print("lviv_c: no CUDA GPU available, running on the CPU", file=sys.stderr)
            _warned_cpu["done"] = True
        return "cpu"
    return "cuda" if dev.startswith("cuda") else "cpu"


def _loaders(dataloader):
    if isinstance(dataloader, dict):
        if "train" not in dataloader:
            raise ValueError(f"train_model: dataloader dict needs a 'train' loader, has {sorted(dataloader)}")
        return dataloader
    raise TypeError("train_model: expected a dict of loaders {'train', 'validation', 'test'} "
                    f"as returned by load_dataset, got {type(dataloader).__name__}")


def _check_not_empty(loaders):
    """train_model needs trials in the train tier and in the validation tier (the course's early
    stopping evaluates the validation correlation every epoch)."""
    for tier in ("train", "validation"):
        ld = loaders.get(tier)
        idx = getattr(ld, "indices", None)
        if ld is not None and idx is not None and len(idx) == 0:
            raise ValueError(f"train_model: the {tier!r} loader has no trials (no trial of the scan "
                             f"has tiers == {tier!r}); the course trains on 'train' and stops early on "
                             f"the correlation over the 'validation' trials, so both tiers need trials "
                             f"(meta/trials/tiers.npy)")


def _blocks(loader, what):
    try:
        xb, yb = loader.images_block, loader.responses_block
    except AttributeError:
        raise TypeError(f"train_model: the {what} loader is not a lviv_c loader (needs images_block/"
                        "responses_block); build it with lviv_c.dataset.load_dataset") from None
    return np.ascontiguousarray(xb, dtype=np.float32), np.ascontiguousarray(yb, dtype=np.float32)


def _corr_per_neuron(y, yhat):
    """Single-trial correlation per neuron: lviv_c.utility.measures.corr (constant -> 0) with
    NaN kept, so a model that predicts NaN makes the objective non-finite and stops training."""
    return corr(y, yhat, axis=0, nan="propagate")


def poisson_loss_fn(avg=False, eps=1e-12):
    def loss(out, y):
        l = out - y * (out + eps).log()
        return l.mean() if avg else l.sum()
    return loss


class StateMixin:
    """get_state / set_state of an engine over ``self._state_tensors()`` [(name, tensor)]: host
    copies out, written back in place (the same Parameter objects); ``version`` counts the
    changes so cached predictions are dropped."""

    def _init_params(self, model, lr):
        """The parameters that require grad, their gradients cleared, and the C Adam over them."""
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("train_model: the model has no parameters that require grad")
        for p in self.params:
            p.grad = None
        self.adam = _C.adam_new(self.params, float(lr))

    def get_state(self):
        return {k: host_copy(v) for k, v in self._state_tensors()}

    def set_state(self, state):
        for k, v in self._state_tensors():
            if k in state:
                write_into(v, state[k])
        self.version += 1


class Engine(StateMixin):
    """Captured train/eval graphs of one model over one scan, and the C loops that run them."""

    def __init__(self, model, train_loader, eval_loaders=(), scale_loss=True, avg_loss=False,
                 lr=0.005, capture=True, call=None):
        self.model = model
        self.call = call or model
        self.train_loader = train_loader
        self.X, self.Y = _blocks(train_loader, "train")
        self.B = int(train_loader.batch_size)
        self.n_dataset = len(train_loader.dataset)
        self.scale_loss = scale_loss
        self.avg_loss = avg_loss
        self._init_params(model, lr)
        # device placement: graphs live on the model's device; with the model on the GPU the C
        # loop gathers batches from GPU-resident blocks (load_dataset(..., cuda=True)) or, when
        # the loader is on the CPU, from the host blocks through pinned staging
        self.device = model_device(model)
        self._dev_blocks = {}
        dev_xy = self._device_blocks(train_loader)
        self.XL, self.YL = dev_xy if dev_xy is not None else (self.X, self.Y)
        self.lr = float(lr)
        self.capture = capture
        self._train_graphs = {}
        self._eval_graphs = {}
        self._fallback_reason = None
        self.version = 0
        self._pred_cache = {}

    def _device_blocks(self, loader):
        """(images, responses) device tensors of a loader when the model is on the GPU and the
        loader keeps its blocks there; None otherwise. Remembered by the host block's address."""
        if self.device != "cuda" or not hasattr(loader, "device_blocks"):
            return None
        xy = loader.device_blocks()
        if xy is not None:
            self._dev_blocks[loader.images_block.__array_interface__["data"][0]] = xy[0]
        return xy

    # -- graphs
    def _loss_fn(self, bsz):
        base = poisson_loss_fn(self.avg_loss)
        scale = math.sqrt(self.n_dataset / bsz) if self.scale_loss else 1.0
        reg = getattr(self.model, "regularizer", None)

        def loss(out, y):
            l = base(out, y)
            if scale != 1.0:
                l = l * scale
            if reg is not None:
                r = reg()
                l = l + r
            return l
        return loss

    def _train_graph(self, bsz):
        g = self._train_graphs.get(bsz)
        if g is None:
            idx = self.train_loader.indices[:bsz]
            g = capture_graph(self.model, self.X[idx], self.Y[idx], self._loss_fn(bsz), train=True, call=self.call)
            self._train_graphs[bsz] = g
        return g

    def _eval_graph(self, bsz, X):
        key = (bsz, X.__array_interface__["data"][0])
        g = self._eval_graphs.get(key)
        if g is None:
            g = capture_graph(self.model, X[:bsz], train=False, call=self.call)
            self._eval_graphs[key] = g
        return g

    # -- training
    def set_lr(self, lr):
        self.lr = float(lr)
        _C.adam_set_lr(self.adam, self.lr)

    def train_epoch(self, order, accum=1, progress=None):
        """One epoch over `order` (int64 trial indices). Returns the summed batch loss."""
        order = np.ascontiguousarray(order, dtype=np.int64)
        if len(order) > self.B and len(order) % self.B == 1:
            # a last batch of one trial cannot train BatchNorm (PyTorch raises there); skip it.
            # The order is reshuffled every epoch, so a different trial sits out each time.
            order = order[:-1]
        n = len(order)
        self.version += 1
        if self.capture and self._fallback_reason is None:
            try:
                full = self._train_graph(min(self.B, n))
                rem = self._train_graph(n % self.B) if n % self.B and n > self.B else None
            except CaptureError as e:
                self._fallback_reason = str(e)
                print(f"lviv_c: training with the Python forward per batch: {e}", file=sys.stderr)
            else:
                status, loss = _C.train_epoch(full.handle, rem.handle if rem else None, self.adam,
                                              self.XL, self.YL, order, int(accum or 1), progress)
                return loss
        return self._eager_epoch(order, accum, progress)

    def _eager_epoch(self, order, accum, progress):
        self.model.train()
        total, since = 0.0, 0
        nb = -(-len(order) // self.B)
        for b in range(nb):
            idx = order[b * self.B:(b + 1) * self.B]
            x, y = to_device(self.X[idx], self.device), to_device(self.Y[idx], self.device)
            loss = self._loss_fn(len(idx))(self.call(x), y)
            total += float(loss.detach().item())
            loss.backward()
            since += 1
            if since == (accum or 1) or b == nb - 1:
                _C.adam_step(self.adam)
                since = 0
            if progress is not None:
                progress(b + 1, nb, total)
        return total

    # -- evaluation
    def predict(self, loader=None, X=None, idx=None, progress=None):
        """Eval-mode predictions (n, N) for a loader's trials (or rows idx of block X)."""
        if loader is not None:
            X, _ = _blocks(loader, "evaluation")
            idx = loader.indices
            self._device_blocks(loader)
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        key = (id(loader), self.version) if loader is not None else None
        if key is not None and key in self._pred_cache:
            return self._pred_cache[key]
        n = len(idx)
        if n == 0:
            raise ValueError("predict: the loader has no trials (an empty tier of the scan?)")
        bsz = int(getattr(loader, "batch_size", None) or self.B)
        bsz = min(bsz, n)
        if self.capture and self._fallback_reason is None:
            try:
                full = self._eval_graph(bsz, X)
                rem = self._eval_graph(n % bsz, X) if n % bsz and n > bsz else None
                XB = self._dev_blocks.get(X.__array_interface__["data"][0], X)
                out = _C.predict(full.handle, rem.handle if rem else None, XB, idx, progress)
            except CaptureError as e:
                self._fallback_reason = str(e)
                out = self._eager_predict(X, idx, bsz)
        else:
            out = self._eager_predict(X, idx, bsz)
        if key is not None:
            self._pred_cache = {key: out}
        return out

    def _eager_predict(self, X, idx, bsz):
        was = getattr(self.model, "training", False)
        self.model.eval()
        outs = []
        with no_grad():
            for s in range(0, len(idx), bsz):
                outs.append(host_copy(self.call(to_device(X[idx[s:s + bsz]], self.device))))
        self.model.train(was)
        return np.concatenate(outs, 0)

    def correlation(self, loader, per_neuron=False):
        _, Y = _blocks(loader, "evaluation")
        c = _corr_per_neuron(Y[loader.indices], self.predict(loader))
        return c if per_neuron else float(c.mean())

    def poisson_loss(self, loader, eps=1e-12):
        _, Y = _blocks(loader, "evaluation")
        y = Y[loader.indices].astype(np.float64)
        p = self.predict(loader).astype(np.float64)
        return float(np.sum(p - y * np.log(p + eps)))

    # -- state
    def _state_tensors(self):
        items = []
        if hasattr(self.model, "state_dict"):
            for k, v in self.model.state_dict().items():
                if isinstance(v, Tensor):
                    items.append((k, v))
        else:
            items = [(str(i), p) for i, p in enumerate(self.params)]
        return items



def _progress_bar(total, desc, verbose):
    from .progress import progress
    return progress(total=total, desc=desc, disable=not verbose)


def run_epoch(ep, n_batches, verbose, run, stats):
    """One training epoch of either trainer: run(progress) trains it (progress is None unless
    verbose, so that a quiet epoch reads no loss back before its end), with its progress bar;
    its seconds go to stats['epoch_seconds']; a non-finite summed loss raises FloatingPointError."""
    bar = _progress_bar(n_batches, f"Epoch {ep}", verbose)
    last = [0]

    def prog(done, total, loss):
        bar.update(done - last[0])
        last[0] = done
    t0 = time.perf_counter()
    try:
        loss = run(prog if verbose else None)
    finally:
        bar.close()
    stats["epoch_seconds"].append(time.perf_counter() - t0)
    if loss is not None and not math.isfinite(float(loss)):
        raise FloatingPointError(f"Training loss is not finite ({float(loss)}) in epoch {ep}.")


def _raise_not_finite(rec, eng, val):
    """train_model stopped on a non-finite loss or objective: say what and what the model holds."""
    what = next((l for l in reversed(rec.lines) if "not finite" in l.lower()), "")
    why = ("the training loss" if what.startswith("Training loss") else
           "the validation correlation (the model predicts NaN/inf for some neurons)")
    cause = ("look for NaN/inf in the model's weights or inputs, or lower lr_init")
    from .training_loop import _finite
    if rec.best_objective is not None and _finite(rec.best_objective):
        held = (f"the model holds the best finite state (epoch {rec.best_epoch}, validation "
                f"correlation {float(rec.best_objective):.6f})")
    else:
        held = "no finite state was reached (the model was not finite before training)"
    raise FloatingPointError(f"train_model: {why} is not finite at epoch {rec.epoch}; {held}; "
                             f"{cause}")


def _reporting_cb(cb, report, objective):
    """The loop's cb() (called before each epoch) that first passes report(epochs trained so far,
    validation correlation) for every epoch after the first; the correlation was just computed
    by the loop, so it comes from the engine's prediction cache."""
    calls = [0]

    def wrapped():
        calls[0] += 1
        if calls[0] > 1:
            report(calls[0] - 1, objective())
        if cb is not None:
            cb()
    return wrapped


def train_model(model, dataloader, seed=None, avg_loss=False, scale_loss=True, loss_accum_batch_n=None,
                device="cuda", verbose=True, interval=1, patience=5, epoch=0, lr_init=0.005,
                max_iter=200, maximize=True, tolerance=1e-6, restore_best=True, lr_decay_steps=3,
                lr_decay_factor=0.3, min_lr=1e-4, cb=None, track_training=True,
                return_test_score=False, capture=True, **kwargs):
    """Train `model` on the loaders of `load_dataset` with the course's recipe.

    Loss per batch: sqrt(len(dataset) / B) * sum(yhat - y log(yhat + 1e-12)) + model.regularizer();
    Adam (lr_init); reduce-on-plateau on the validation correlation; early stopping in
    `lr_decay_steps` rounds restoring the best state. Returns (score, output, state_dict) where
    score is the mean validation correlation (test with return_test_score), output holds the
    per-epoch 'correlation' and 'poisson_loss' and 'validation_corr'. The model is left in eval
    mode with the best weights. A last training batch of a single trial is skipped (BatchNorm cannot
    train on one sample). Loaders keyed by scan ({'train': {data_key: loader}, ...}, e.g.
    lviv_c.sensorium_data.static_loaders) train on all scans at once, cycling through them batch by
    batch as sensorium's trainer does (lviv_c.sensorium_training.train_multi). `capture=False` runs
    the Python forward per batch instead of the captured C graphs (for models whose forward cannot
    be captured).

    A non-finite training loss or validation correlation (a model that predicts NaN) stops
    training with ``FloatingPointError``, after restoring the best finite state when there is
    one (the course prints "Objective is not Finite. Stopping training" and returns; here the
    correlation keeps NaN so that stop fires, and the caller is told). ``report=fn`` (keyword)
    calls fn(epochs trained, validation correlation) before each next epoch; an exception
    derived from KeyboardInterrupt raised there stops training with the best state restored."""
    from .training_loop import early_stopping_loop

    from .sensorium_training import is_multi_scan, train_multi
    if is_multi_scan(dataloader):  # {'train': {data_key: loader}, ...}: cycle through the scans
        # on the model's device, moved there as for one scan
        return train_multi(model, dataloader, seed=seed, avg_loss=avg_loss, scale_loss=scale_loss,
                           loss_accum_batch_n=loss_accum_batch_n, verbose=verbose, interval=interval,
                           patience=patience, epoch=epoch, lr_init=lr_init, max_iter=max_iter,
                           maximize=maximize, tolerance=tolerance, restore_best=restore_best,
                           lr_decay_steps=lr_decay_steps, lr_decay_factor=lr_decay_factor, min_lr=min_lr,
                           cb=cb, track_training=track_training, return_test_score=return_test_score,
                           capture=capture, device=device, **kwargs)
    loaders = _loaders(dataloader)
    _check_not_empty(loaders)
    # the course's train_model moves the model to the device; here parameters, buffers, the
    # optimizer's moments (made below, on the parameters' device) and the captured graphs follow
    # it, and batches are gathered on the device from the loaders' device-resident blocks
    # (load_dataset(..., cuda=True)) or staged from their host blocks
    dev = resolve_device(device, verbose)
    if hasattr(model, "to") and model_device(model) != dev:
        model.to(dev)
    if seed is not None:
        manual_seed(seed)
        np.random.seed(seed)
        sampler = getattr(loaders["train"], "sampler", None)
        if hasattr(sampler, "manual_seed"):
            sampler.manual_seed(seed)
    val = loaders.get("validation", loaders["train"])
    eng = Engine(model, loaders["train"], scale_loss=scale_loss, avg_loss=avg_loss, lr=lr_init,
                 capture=capture)
    stats = {"epoch_seconds": []}

    def objective():
        return eng.correlation(val)

    def train_epoch(ep):
        order = loaders["train"].sampler.order()
        run_epoch(ep, -(-len(order) // eng.B), verbose,
                  lambda prog: eng.train_epoch(order, loss_accum_batch_n or 1, prog), stats)

    report = kwargs.pop("report", None)
    if report is not None:   # report(epoch, validation corr) before each next epoch (lviv_c.sweep)
        cb = _reporting_cb(cb, report, objective)
    tracker = None
    if track_training:
        tracker = {"correlation": lambda: eng.correlation(val),
                   "poisson_loss": lambda: eng.poisson_loss(val)}
    rec = early_stopping_loop(
        objective, train_epoch, eng.get_state, eng.set_state, set_lr=eng.set_lr, lr_init=lr_init,
        interval=interval, patience=patience, epoch=epoch, max_iter=max_iter, maximize=maximize,
        tolerance=tolerance, restore_best=restore_best, lr_decay_steps=lr_decay_steps,
        lr_decay_factor=lr_decay_factor, min_lr=min_lr, verbose=verbose,
        print=(lambda *a, **k: print(*a, **k)) if verbose else (lambda *a, **k: None),
        tracker=tracker, cb=cb)
    if hasattr(model, "eval"):
        model.eval()
    if rec.stop_reason == "not_finite":
        _raise_not_finite(rec, eng, val)
    validation_corr = eng.correlation(val)
    output = {k: list(v) for k, v in (getattr(rec, "tracker", None) or {}).items()} if track_training else {}
    output["validation_corr"] = validation_corr
    output["epochs"] = getattr(rec, "epoch", None)
    output["epoch_seconds"] = stats["epoch_seconds"]
    if return_test_score and "test" in loaders:
        score = eng.correlation(loaders["test"])
    else:
        score = validation_corr
    state = model.state_dict() if hasattr(model, "state_dict") else None
    return score, output, state
