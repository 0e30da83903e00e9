"""Training and evaluating a model on several scans at once (the Sensorium layout).

``train_multi(model, dataloaders, ...)`` is what ``lviv_c.trainers.train_model`` runs when its
loaders are keyed by scan (``{'train': {data_key: loader}, 'validation': {...}}``, as
``lviv_c.sensorium_data.static_loaders`` returns): the recipe of sensorium's
``standard_trainer``. Each epoch cycles through the scans batch by batch (scan 1, scan 2, ...,
scan 1, ...; ``max(len(loader))`` rounds, the shorter loaders start over), each batch through
the scan's own readout and shifter; the gradients of ``loss_accum_batch_n`` batches (default:
one per scan) are summed before one Adam step. Loss per batch: sqrt(len(dataset) / B) *
Poisson(yhat, y) + core and readout regularizers of that scan.

Every (scan, batch size) gets its own captured C graph (lviv_c.capture): the graph's input is a
row of the images (C*H*W values) followed by the pupil center when the model has a shifter, so
the C loop gathers a batch with one copy and replays forward, loss and backward without Python.
An epoch is one C call (``_C.train_multi_epoch``): Python lists the batches (scan, trial indices)
in the cycling order and the C loop runs them, stepping Adam every ``loss_accum_batch_n`` batches.

Device: training runs where the model is (``train_model(..., device='cuda')`` moves it, as for one
scan). On the GPU the parameters, buffers, Adam's moments and the graphs live there, each scan's
image and response blocks are uploaded once (``_Scan.blocks``) and batches are gathered on the
device; per epoch only the summed loss (one double) comes back to the host, plus one read per
progress report when a progress bar is shown.

``sensorium_measures(model, dataloaders, tier='test')``: the Sensorium 2022 measures per scan and
over all neurons: single-trial correlation, correlation to average (responses and predictions
averaged over the repeats of each image) and FEVE.
"""
import math
import sys

import numpy as np

from . import _C
from .capture import CaptureError, capture_graph, host_copy, model_device, to_device
from .tensor import Tensor, manual_seed, no_grad
from .trainers import StateMixin, _corr_per_neuron, _raise_not_finite, run_epoch
from .utility.measures import compute_feve, corr

__all__ = ["train_multi", "MultiScanEngine", "sensorium_measures", "is_multi_scan", "SENSORIUM_MODELS",
           "sensorium_scan_model", "predict_tier"]


def is_multi_scan(dataloaders):
    """True for {'train': {data_key: loader}, ...} loaders."""
    return isinstance(dataloaders, dict) and isinstance(dataloaders.get("train"), dict)


def _poisson(avg):
    def loss(out, y):
        l = out - y * (out + 1e-12).log()
        return l.mean() if avg else l.sum()
    return loss


class _Scan:
    """One scan's blocks: x rows = images (C*H*W) [+ pupil center (2)], y rows = responses."""

    def __init__(self, key, loader, with_pc):
        try:
            blocks = loader.blocks
        except AttributeError:
            raise TypeError(f"scan {key}: not a lviv_c loader (needs .blocks); build it with "
                            "lviv_c.sensorium_data.static_loaders") from None
        img = blocks["images"]
        self.key = key
        self.img_shape = tuple(img.shape[1:])
        self.with_pc = with_pc
        x = img.reshape(len(img), -1)
        if with_pc:
            if "pupil_center" not in blocks:
                raise ValueError(f"scan {key}: the model has a shifter but the loader has no pupil_center "
                                 "(load with include_eye_position=True)")
            x = np.concatenate([x, blocks["pupil_center"].reshape(len(img), -1)], axis=1)
        self.X = np.ascontiguousarray(x, dtype=np.float32)
        self.Y = np.ascontiguousarray(blocks["responses"], dtype=np.float32)
        self._dev = None

    def blocks(self, device):
        """(X, Y) for the C loops on `device`: the host arrays, or on 'cuda' device tensors
        uploaded once (batches are then gathered on the device, no per-batch host copy)."""
        if device != "cuda":
            return self.X, self.Y
        if self._dev is None:
            self._dev = (to_device(self.X, "cuda"), to_device(self.Y, "cuda"))
        return self._dev


class MultiScanEngine(StateMixin):
    """Captured graphs of one model over several scans and the loops that run them."""

    def __init__(self, model, train_loaders, avg_loss=False, scale_loss=True, lr=0.005, capture=True,
                 detach_core=False):
        self.model = model
        self.keys = list(train_loaders)
        self.train_loaders = train_loaders
        self.with_pc = bool(getattr(model, "shifter", None))
        self.scans = {}
        self.avg_loss, self.scale_loss, self.detach_core = avg_loss, scale_loss, detach_core
        self._init_params(model, lr)
        self.device = model_device(model)
        self.capture = capture
        self._fallback_reason = None
        self._train_graphs, self._eval_graphs = {}, {}
        self.version = 0
        self._pred_cache = {}

    @classmethod
    def for_eval(cls, model, capture=True):
        """An engine that only predicts (no optimizer)."""
        eng = cls.__new__(cls)
        eng.model, eng.with_pc, eng.scans = model, bool(getattr(model, "shifter", None)), {}
        eng.device, eng.capture, eng._fallback_reason = model_device(model), capture, None
        eng._eval_graphs, eng._pred_cache, eng.version = {}, {}, 0
        return eng

    def scan(self, key, loader):
        s = self.scans.get((key, id(loader.dataset)))
        if s is None:
            s = self.scans[(key, id(loader.dataset))] = _Scan(key, loader, self.with_pc)
        return s

    def call(self, key, img_shape):
        model, with_pc = self.model, self.with_pc
        C, H, W = img_shape
        chw = C * H * W

        def run(x):
            B = x.shape[0]
            if with_pc:
                return model(x[:, :chw].reshape(B, C, H, W), data_key=key, pupil_center=x[:, chw:])
            return model(x.reshape(B, C, H, W), data_key=key)
        return run

    def loss_fn(self, key, bsz):
        base = _poisson(self.avg_loss)
        n = len(self.train_loaders[key].dataset)
        scale = math.sqrt(n / bsz) if self.scale_loss else 1.0
        model, detach = self.model, self.detach_core

        def loss(out, y):
            l = base(out, y)
            if scale != 1.0:
                l = l * scale
            reg = getattr(model, "regularizer", None)
            if reg is not None:
                l = l + reg(key, detach_core=detach) if detach else l + reg(key)
            return l
        return loss

    # -- graphs
    def _train_graph(self, key, bsz):
        g = self._train_graphs.get((key, bsz))
        if g is None:
            s = self.scan(key, self.train_loaders[key])
            idx = self.train_loaders[key].indices[:bsz]
            g = capture_graph(self.model, s.X[idx], s.Y[idx], self.loss_fn(key, bsz), train=True,
                              call=self.call(key, s.img_shape))
            self._train_graphs[(key, bsz)] = g
        return g

    def _eval_graph(self, key, bsz, s):
        gk = (key, bsz, id(s))
        g = self._eval_graphs.get(gk)
        if g is None:
            g = capture_graph(self.model, s.X[:bsz], train=False, call=self.call(key, s.img_shape))
            self._eval_graphs[gk] = g
        return g

    # -- training
    def set_lr(self, lr):
        _C.adam_set_lr(self.adam, float(lr))

    def epoch_batches(self):
        """[(data_key, index array)] of one epoch in the reference's cycling order."""
        per = {}
        for k in self.keys:
            loader = self.train_loaders[k]
            order = np.ascontiguousarray(loader.sampler.order(), dtype=np.int64)
            B = int(loader.batch_size)
            if len(order) > B and len(order) % B == 1:
                order = order[:-1]  # a lone last trial cannot train BatchNorm
            per[k] = [order[i:i + B] for i in range(0, len(order), B)]
        n = max(len(v) for v in per.values())
        return [(k, per[k][i % len(per[k])]) for i in range(n) for k in self.keys]

    def train_epoch(self, step_every=None, progress=None):
        step_every = step_every or len(self.keys)
        batches = self.epoch_batches()
        self.version += 1
        total = self._captured_epoch(batches, step_every, progress)
        eager = batches if total is None else ()
        total = total or 0.0
        for b, (key, idx) in enumerate(eager):  # the Python forward per batch (capture failed)
            total += self._batch(key, idx)
            if (b + 1) % step_every == 0:
                _C.adam_step(self.adam)
            if progress is not None:
                progress(b + 1, len(batches), total)
        if len(batches) % step_every:
            # the reference zeroes the gradients of an unfinished accumulation at the next epoch
            for p in self.params:
                p.grad = None
        return total

    def _captured_epoch(self, batches, step_every, progress):
        """The epoch in one C call (_C.train_multi_epoch): every batch through the captured graph
        of its (scan, batch size), Adam every `step_every` batches. None when capture fails."""
        if not self.capture or self._fallback_reason is not None:
            return None
        kinds, kind_of, kind, start, pos = [], {}, [], [], 0
        try:
            for key, idx in batches:
                k = kind_of.get((key, len(idx)))
                if k is None:
                    g = self._train_graph(key, len(idx))
                    X, Y = self.scan(key, self.train_loaders[key]).blocks(self.device)
                    k = kind_of[(key, len(idx))] = len(kinds)
                    kinds.append((g.handle, X, Y))
                kind.append(k)
                start.append(pos)
                pos += len(idx)
        except CaptureError as e:
            self._fallback_reason = str(e)
            print(f"lviv_c: training with the Python forward per batch: {e}", file=sys.stderr)
            return None
        if not batches:
            return 0.0
        order = np.concatenate([idx for _, idx in batches]).astype(np.int64, copy=False)
        _, loss = _C.train_multi_epoch(kinds, np.asarray(kind, np.int32), np.asarray(start, np.int64),
                                       np.ascontiguousarray(order), self.adam, int(step_every), progress)
        return loss

    def _batch(self, key, idx):
        s = self.scan(key, self.train_loaders[key])
        self.model.train()
        x, y = to_device(s.X[idx], self.device), to_device(s.Y[idx], self.device)
        loss = self.loss_fn(key, len(idx))(self.call(key, s.img_shape)(x), y)
        loss.backward()
        return float(loss.detach().item())

    # -- evaluation
    def predict(self, key, loader, idx=None):
        """Eval-mode predictions (n, N) of scan `key` for the loader's trials (or rows idx)."""
        s = self.scan(key, loader)
        idx = np.ascontiguousarray(loader.indices if idx is None else idx, dtype=np.int64)
        ck = (key, id(loader), self.version, idx.tobytes() if idx is not loader.indices else None)
        if ck in self._pred_cache:
            return self._pred_cache[ck]
        n = len(idx)
        bsz = min(int(getattr(loader, "batch_size", None) or 64), n)
        out = None
        if self.capture and self._fallback_reason is None:
            try:
                full = self._eval_graph(key, bsz, s)
                rem = self._eval_graph(key, n % bsz, s) if n % bsz and n > bsz else None
                out = _C.predict(full.handle, rem.handle if rem else None, s.blocks(self.device)[0], idx, None)
            except CaptureError as e:
                self._fallback_reason = str(e)
        if out is None:
            was = self.model.training
            self.model.eval()
            call = self.call(key, s.img_shape)
            with no_grad():
                out = np.concatenate([host_copy(call(to_device(s.X[idx[i:i + bsz]], self.device)))
                                      for i in range(0, n, bsz)], 0)
            self.model.train(was)
        self._pred_cache[ck] = out
        return out

    def correlations(self, loaders):
        """{data_key: per-neuron single-trial correlation} over the loaders' trials."""
        out = {}
        for k, loader in loaders.items():
            s = self.scan(k, loader)
            out[k] = _corr_per_neuron(s.Y[loader.indices], self.predict(k, loader))
        return out

    def poisson_loss(self, loaders, eps=1e-12):
        total = 0.0
        for k, loader in loaders.items():
            s = self.scan(k, loader)
            y = s.Y[loader.indices].astype(np.float64)
            p = self.predict(k, loader).astype(np.float64)
            total += float(np.sum(p - y * np.log(p + eps)))
        return total

    # -- state
    def _state_tensors(self):
        return [(k, v) for k, v in self.model.state_dict().items() if isinstance(v, Tensor)]



def train_multi(model, dataloaders, seed=None, avg_loss=False, scale_loss=True, loss_accum_batch_n=None,
                verbose=True, interval=1, patience=5, epoch=0, lr_init=0.005, max_iter=200, maximize=True,
                tolerance=1e-6, restore_best=True, lr_decay_steps=3, lr_decay_factor=0.3, min_lr=1e-4, cb=None,
                track_training=False, detach_core=False, return_test_score=False, capture=True, device=None,
                **kwargs):
    """sensorium's standard_trainer on lviv_c (see the module docstring). Returns (score, output,
    state_dict): score = mean validation correlation over all neurons of all scans; output holds
    'validation_corr' (per scan, {data_key: mean}), per-epoch tracks with track_training,
    'epochs' and 'epoch_seconds'. `device` ('cpu', 'cuda', 'auto'; None: where the model is)
    moves the model there first; training runs on the model's device."""
    from .training_loop import early_stopping_loop

    train, val = dataloaders["train"], dataloaders.get("validation", dataloaders["train"])
    if not isinstance(val, dict) or set(val) != set(train):
        raise ValueError("train_model: the validation loaders must have the same data keys as the train loaders "
                         f"({sorted(train)})")
    missing = [k for k in train if k not in model.readout]
    if missing:
        raise ValueError(f"train_model: the model has no readout for the scans {missing}")
    if device is not None:
        from .trainers import resolve_device
        dev = resolve_device(device, verbose)
        if hasattr(model, "to") and model_device(model) != dev:
            model.to(dev)
    if seed is not None:
        manual_seed(seed)
        np.random.seed(seed)
        for i, loader in enumerate(train.values()):
            if hasattr(loader.sampler, "manual_seed"):
                loader.sampler.manual_seed(seed + i)
    eng = MultiScanEngine(model, train, avg_loss=avg_loss, scale_loss=scale_loss, lr=lr_init, capture=capture,
                          detach_core=detach_core)
    stats = {"epoch_seconds": []}

    def objective():
        return float(np.mean(np.hstack(list(eng.correlations(val).values()))))

    def train_epoch(ep):
        run_epoch(ep, len(eng.epoch_batches()) if verbose else 0, verbose,
                  lambda prog: eng.train_epoch(loss_accum_batch_n, prog), stats)

    tracker = None
    if track_training:
        tracker = {"correlation": objective, "poisson_loss": lambda: eng.poisson_loss(val)}
    rec = early_stopping_loop(
        objective, train_epoch, eng.get_state, eng.set_state, set_lr=eng.set_lr, lr_init=lr_init, interval=interval,
        patience=patience, epoch=epoch, max_iter=max_iter, maximize=maximize, tolerance=tolerance,
        restore_best=restore_best, lr_decay_steps=lr_decay_steps, lr_decay_factor=lr_decay_factor, min_lr=min_lr,
        verbose=verbose, print=(lambda *a, **k: print(*a, **k)) if verbose else (lambda *a, **k: None),
        tracker=tracker, cb=cb)
    model.eval()
    if rec.stop_reason == "not_finite":  # a NaN prediction or loss: the same error as one scan's
        _raise_not_finite(rec, eng, val)
    per_scan = {k: float(np.mean(v)) for k, v in eng.correlations(val).items()}
    output = {k: list(v) for k, v in (getattr(rec, "tracker", None) or {}).items()} if track_training else {}
    output["validation_corr"] = per_scan
    output["epochs"] = rec.epoch
    output["epoch_seconds"] = stats["epoch_seconds"]
    if return_test_score and "test" in dataloaders:
        score = float(np.mean(np.hstack(list(eng.correlations(dataloaders["test"]).values()))))
    else:
        score = objective()
    return score, output, model.state_dict()


# --------------------------------------------------------------------------------------- measures

def _repeat_groups(loader):
    ids = np.asarray(loader.dataset.trial_info.frame_image_id)[loader.indices]
    _, inv = np.unique(ids, return_inverse=True)
    inv = inv.reshape(-1)
    order = np.argsort(inv, kind="stable")
    bounds = np.flatnonzero(np.diff(inv[order])) + 1
    return [g for g in np.split(order, bounds) if len(g) >= 2]


def sensorium_measures(model, dataloaders, tier="test", predictions=None, capture=True):
    """The Sensorium 2022 measures of `model` on `dataloaders[tier]` ({data_key: loader}).

    Returns {'per_scan': {data_key: {...}}, 'all': {...}} with, per scan and pooled over all
    neurons of all scans: 'single_trial_correlation' (per-neuron correlation over the tier's
    trials, mean), 'correlation_to_average' (responses and predictions averaged over the repeats
    of each image, then correlated; NaN without repeats), 'feve' (1 - (MSE - noise) / (total -
    noise) over the repeated trials, per-trial predictions); and 'per_neuron' arrays for each.
    `predictions`: {data_key: (n_trials, N)} to score instead of running the model."""
    loaders = dataloaders[tier] if tier in dataloaders else dataloaders
    eng = None if predictions is not None else MultiScanEngine.for_eval(model, capture=capture)
    per_scan, pooled = {}, {"single_trial_correlation": [], "correlation_to_average": [], "feve": []}
    for k, loader in loaders.items():
        y = np.asarray(loader.blocks["responses"], dtype=np.float64)[loader.indices]
        p = np.asarray(predictions[k] if predictions is not None else eng.predict(k, loader), dtype=np.float64)
        if p.shape != y.shape:
            raise ValueError(f"scan {k}: predictions {p.shape} do not match the responses {y.shape}")
        st = corr(y, p, axis=0)
        groups = _repeat_groups(loader)
        if groups:
            avg_y = np.stack([y[g].mean(0) for g in groups])
            avg_p = np.stack([p[g].mean(0) for g in groups])
            cta = corr(avg_y, avg_p, axis=0)
            with np.errstate(all="ignore"):
                feve = compute_feve([y[g] for g in groups], [p[g] for g in groups])
        else:
            cta = feve = np.full(y.shape[1], np.nan)
        per_scan[k] = {"single_trial_correlation": float(np.mean(st)),
                       "correlation_to_average": float(np.nanmean(cta)) if groups else float("nan"),
                       "feve": float(np.nanmean(feve)) if groups else float("nan"),
                       "per_neuron": {"single_trial_correlation": st, "correlation_to_average": cta, "feve": feve}}
        pooled["single_trial_correlation"].append(st)
        pooled["correlation_to_average"].append(cta)
        pooled["feve"].append(feve)
    allm = {}
    for name, parts in pooled.items():
        v = np.hstack(parts) if parts else np.zeros(0)
        allm[name] = float(np.nanmean(v)) if v.size and np.isfinite(v).any() else float("nan")
    return {"per_scan": per_scan, "all": allm}


# ------------------------------------------------------------------------- demo / command line

#: the Sensorium models the demo and the command line know, with their labels
SENSORIUM_MODELS = {"sensorium": "Sensorium 2022", "sensorium-p": "Sensorium 2022 p (behavior, shifter)"}


def sensorium_scan_model(name, paths, batch_size=128, seed=42, config=None):
    """(model, loaders) of a Sensorium model ('sensorium' or 'sensorium-p') for the scan(s) at
    `paths` (a folder or a list): static_loaders (images normalised; with '-p' the behavior as
    image channels and the pupil center for the shifter) and build_sensorium_model with the
    published models' configuration (SENSORIUM_2022_CONFIG) updated by `config`."""
    from .models.sensorium import SENSORIUM_2022_CONFIG, build_sensorium_model
    from .sensorium_data import static_loaders
    if name not in SENSORIUM_MODELS:
        raise ValueError(f"unknown Sensorium model {name!r}; expected one of {', '.join(SENSORIUM_MODELS)}")
    p = name.endswith("-p")
    loaders = static_loaders(paths, batch_size, seed=seed, include_behavior=p, include_eye_position=p)
    cfg = dict(SENSORIUM_2022_CONFIG, shifter=p)
    cfg.update(config or {})
    return build_sensorium_model(loaders, seed=seed, **cfg), loaders


def predict_tier(model, loaders, tier):
    """{data_key: eval-mode predictions (n_trials, N)} for loaders[tier] (trials in loader order)."""
    eng = MultiScanEngine.for_eval(model)
    return {k: eng.predict(k, loader) for k, loader in loaders[tier].items()}
