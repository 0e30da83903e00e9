"""The main job: train the course's models on a scan, evaluate them on the test set, write a
results table and figures.

``python -m lviv_c demo [--data PATH] [--quick] [--out DIR] [--max-iter N]`` runs ``run_demo``:

1. the scan: ``--data`` / ``$LVIV_DATA``, else a synthetic scan (``lviv_c.synthetic``) of the
   course scan's size (5993 trials x 5335 neurons, 36x64 images; small with ``--quick``) made
   once into the cache folder (``$LVIV_CACHE`` or ``.cache/`` in the working directory);
2. trains the course LN model, the simpler CNN, the course CNN, the Lurz 2020 model (course
   configuration) and its ``linear=True`` variant with ``train_model`` (the course's recipe);
3. evaluates each on the test set: single-trial validation and test correlation, correlation to
   the average over repeats, fraction of the oracle, FEVE; on a synthetic scan also the
   ground-truth ceiling (the true expected rates scored like a model);
4. prints the table, writes ``<out>/results.json`` and the figures ``<out>/*.png``: correlation
   histograms, model comparisons, a response scatter, oracle plot, training curves, gradient
   RFs and MEIs of the Lurz models' best neurons, and on a synthetic scan their match with the
   ground-truth filters of simple cells.

Everything here is also a library: ``build_model``, ``evaluate``, ``resolve_data`` and
``check_scan`` serve the command line (``lviv_c.cli``) and the notebook.
"""
import json
import math
import os
import sys
import time

import numpy as np

__all__ = ["run_demo", "build_model", "evaluate", "TestSet", "resolve_data", "check_scan",
           "synthetic_scan", "DataPathError", "MODELS", "DEMO_MODELS", "LURZ_COURSE_CONFIG",
           "QUICK_SCAN", "format_table"]

#: Every model the demo and the command line know, with its label.
MODELS = {
    "ln": "course LN",
    "simple-cnn": "simple CNN",
    "cnn": "course CNN",
    "lurz": "Lurz 2020",
    "lurz-linear": "Lurz 2020 linear",
    # Sensorium 2022 (lviv_c.sensorium_training): the scan through static_loaders, the published
    # models' configuration; "-p" adds the behavior channels and the eye-position shifter
    "sensorium": "Sensorium 2022",
    "sensorium-p": "Sensorium 2022 p",
}
DEMO_MODELS = ("ln", "simple-cnn", "cnn", "lurz", "lurz-linear")

#: The course notebook's configuration of build_lurz2020_model.
LURZ_COURSE_CONFIG = {
    "init_mu_range": 0.55,
    "init_sigma": 0.4,
    "input_kern": 15,
    "hidden_kern": 13,
    "gamma_input": 1.0,
    "grid_mean_predictor": {"type": "cortex", "input_dimensions": 2, "hidden_layers": 0,
                            "hidden_features": 0, "final_tanh": False},
    "gamma_readout": 2.439,
}

#: The synthetic scan of ``--quick``: same layout and image size, fewer trials and neurons.
QUICK_SCAN = dict(n_trials=320, n_neurons=100, n_test_images=15, n_repeats=5, n_validation=40)

#: A scan needs these (FileTreeDataset layout, see the README).
_SCAN_PARTS = ("config.json", os.path.join("data", "images"), os.path.join("data", "responses"),
               os.path.join("meta", "trials"))
_SCAN_EXPECTED = ("a scan folder (FileTreeDataset layout, like static20457-5-9-preproc0) with "
                  "config.json, data/images/, data/responses/ and meta/trials/")


class DataPathError(ValueError):
    """A data path that is not a scan; the message is one line naming the path."""


# ----------------------------------------------------------------------------------- the data

def check_scan(path):
    """Raise DataPathError unless ``path`` looks like a scan folder; return the path."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise DataPathError(f"{p}: no such folder; expected {_SCAN_EXPECTED}")
    if not os.path.isdir(p):
        raise DataPathError(f"{p}: not a folder; expected {_SCAN_EXPECTED}")
    missing = [part for part in _SCAN_PARTS if not os.path.exists(os.path.join(p, part))]
    if missing:
        hint = ""
        try:
            subs = sorted(d for d in os.listdir(p)
                          if os.path.isfile(os.path.join(p, d, "config.json")))
        except OSError:
            subs = []
        if subs:
            hint = f" (it contains the scan folder {os.path.join(p, subs[0])}; pass that)"
        raise DataPathError(f"{p}: not a scan folder, no {missing[0]}; expected "
                            f"{_SCAN_EXPECTED}{hint}")
    return p


def cache_dir(cache=None):
    """``cache``, else ``$LVIV_CACHE``, else ``.cache`` in the working directory."""
    return os.fspath(cache or os.environ.get("LVIV_CACHE") or os.path.join(os.getcwd(), ".cache"))


def synthetic_scan(quick=False, cache=None, seed=0, progress=True, **sizes):
    """Path of the synthetic scan in the cache, generated first when it is not complete there.

    Full size (the course scan's 5993 x 5335, 36x64) by default, ``QUICK_SCAN`` with ``quick``;
    ``sizes`` (make_scan's n_trials, n_neurons, ...) override either. The folder
    ``<cache>/synthetic-<trials>x<neurons>-test<images>x<repeats>-val<n>-seed<seed>`` is
    complete once ``ground_truth/params.json`` exists (written last)."""
    from . import synthetic
    params = dict(QUICK_SCAN if quick else synthetic.DEFAULTS)
    params.pop("image_shape", None)
    params.update(sizes)
    # the folder name carries the sizes, so a changed size never reuses an old scan
    tag = (f"{params['n_trials']}x{params['n_neurons']}-test{params['n_test_images']}x"
           f"{params['n_repeats']}-val{params['n_validation']}")
    folder = os.path.join(cache_dir(cache), f"synthetic-{tag}-seed{seed}")
    path = os.path.join(folder, synthetic.scan_name())
    if os.path.isfile(os.path.join(path, "ground_truth", "params.json")):
        return path
    if progress:
        print(f"lviv_c: generating a synthetic scan ({params['n_trials']} trials x "
              f"{params['n_neurons']} neurons) into {path}", file=sys.stderr, flush=True)
    return synthetic.make_scan(folder, seed=seed, progress=progress, overwrite=True, **params)


def resolve_data(data=None, quick=False, cache=None, progress=True, seed=0):
    """(scan path, has ground truth): ``data``, else ``$LVIV_DATA``, else the cached synthetic
    scan (generated when missing)."""
    data = data or os.environ.get("LVIV_DATA") or None
    if data:
        path = check_scan(data)
    else:
        path = synthetic_scan(quick=quick, cache=cache, seed=seed, progress=progress)
    return path, os.path.isfile(os.path.join(path, "ground_truth", "params.json"))


def load_loaders(path, batch_size=30, seed=None, device="auto"):
    """(loaders, repeats loader) of a checked scan: load_dataset's train/validation/test loaders
    (their blocks on the GPU when `device` resolves to it) and the test loader whose batches hold
    all repeats of one image."""
    from .dataset import load_dataset
    check_scan(path)
    loaders = load_dataset(path, batch_size=batch_size, seed=seed, cuda=device != "cpu")
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):   # "Returning only test sampler ..."
        repeats = load_dataset(path, batch_size=batch_size, return_test_sampler=True)["test"]
    return loaders, repeats


# ----------------------------------------------------------------------------------- models

def build_model(name, dataloaders, seed=1234, lurz_config=None):
    """Model ``name`` (a key of MODELS) for ``dataloaders``, seeded. ``lurz_config`` updates
    LURZ_COURSE_CONFIG for the Lurz models."""
    if name in ("ln", "cnn", "simple-cnn"):
        from .course import build_course_model
        return build_course_model(name, dataloaders, seed=seed)
    if name.startswith("sensorium"):
        raise ValueError(f"{name}: Sensorium models read their own loaders; use "
                         "lviv_c.sensorium_training.sensorium_scan_model(name, path)")
    if name in ("lurz", "lurz-linear"):
        from .models import build_lurz2020_model
        cfg = dict(LURZ_COURSE_CONFIG)
        cfg.update(lurz_config or {})
        if name == "lurz-linear":
            cfg["linear"] = True
        return build_lurz2020_model(dataloaders=dataloaders, seed=seed, **cfg)
    raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")


def n_parameters(model):
    return int(sum(int(np.prod(p.shape)) for p in model.parameters() if p.requires_grad))


# ----------------------------------------------------------------------------------- measures

def _corr(a, b):
    """Per-column correlation: lviv_c.utility.measures.corr and its NaN rule (default: NaN -> 0)."""
    from .utility.measures import corr
    return np.asarray(corr(a, b, axis=0), dtype=np.float64)


def _mean(x):
    x = np.asarray(x, dtype=np.float64)
    return float(np.nanmean(x)) if x.size and np.isfinite(x).any() else float("nan")


class TestSet:
    """The validation and test responses of a scan and what does not depend on a model
    (oracle, FEV), so that each model is forwarded once per tier."""

    def __init__(self, loaders, repeats, fev_threshold=0.15):
        from .utility.measures import compute_explainable_var, compute_oracle_corr
        self.loaders = loaders
        self.val = loaders["validation"]
        self.test = loaders["test"]
        Y = loaders["test"].responses_block
        self.y_val = np.asarray(Y[self.val.indices], dtype=np.float64)
        self.y_test = np.asarray(Y[self.test.indices], dtype=np.float64)
        self.groups = [np.asarray(g, dtype=np.int64) for g in repeats.batch_sampler.batches]
        self.groups = [g for g in self.groups if len(g) >= 2]
        row = {int(i): k for k, i in enumerate(self.test.indices)}
        self.group_rows = [np.array([row[int(i)] for i in g]) for g in self.groups]
        self.first_rows = np.array([r[0] for r in self.group_rows], dtype=np.int64)
        self.targets = [self.y_test[r] for r in self.group_rows]
        self.y_avg = np.stack([t.mean(0) for t in self.targets]) if self.targets else None
        self.oracle = compute_oracle_corr(self.targets) if self.targets else None
        self.fev = compute_explainable_var(self.targets) if self.targets else None
        self.fev_threshold = fev_threshold

    def summary(self):
        if self.fev is None:
            return {"oracle": None, "fev": None, "n_fev_selected": 0}
        return {"oracle": _mean(self.oracle), "fev": _mean(self.fev),
                "n_fev_selected": int((self.fev >= self.fev_threshold).sum()),
                "fev_threshold": self.fev_threshold,
                "n_test_images": len(self.groups), "n_test_trials": int(len(self.y_test))}

    def score(self, p_val, p_test):
        """Per-neuron and mean measures of predictions for the validation and test trials
        (rows in loader order)."""
        from .utility.measures import compute_feve, get_fraction_oracles
        p_val = np.asarray(p_val, dtype=np.float64)
        p_test = np.asarray(p_test, dtype=np.float64)
        per = {"validation_corr": _corr(self.y_val, p_val),
               "test_corr": _corr(self.y_test, p_test)}
        out = {}
        if self.targets:
            p_img = p_test[self.first_rows]
            per["corr_to_average"] = _corr(self.y_avg, p_img)
            with np.errstate(all="ignore"):
                fev, feve = compute_feve(self.targets, p_img, return_exp_var=True)
            sel = fev >= self.fev_threshold
            out["fraction_oracle"] = float(get_fraction_oracles(self.oracle, per["test_corr"]))
            out["feve"] = _mean(feve[sel]) if sel.any() else float("nan")
        else:
            out["fraction_oracle"] = out["feve"] = float("nan")
            per["corr_to_average"] = np.full(self.y_test.shape[1], np.nan)
        for k, v in per.items():
            out[k] = _mean(v)
        return out, per


def _response_precision(loaders):
    """The per-neuron factor load_dataset applies to the responses (1 / train std, floored)."""
    for tr in getattr(loaders["train"].dataset, "transforms", []):
        if hasattr(tr, "_response_precision"):
            return np.asarray(tr._response_precision, dtype=np.float64)
    return np.ones(loaders["train"].responses_block.shape[1])


def predict(model, loader):
    """Eval-mode predictions (n_trials, n_neurons) of ``model`` for ``loader``'s trials."""
    from .utility.measures import eval_state, model_predictions
    with eval_state(model):
        _, out = model_predictions(model, loader)
    return out


def evaluate(model, testset):
    """(measures, per-neuron arrays) of a trained model on ``testset`` (a TestSet)."""
    return testset.score(predict(model, testset.val), predict(model, testset.test))


# ----------------------------------------------------------------------------------- table

#: (key, header, format) of the printed table.
COLUMNS = [
    ("validation_corr", "val corr", "{:.3f}"),
    ("test_corr", "test corr", "{:.3f}"),
    ("corr_to_average", "corr avg", "{:.3f}"),
    ("fraction_oracle", "frac oracle", "{:.3f}"),
    ("feve", "FEVE", "{:.3f}"),
    ("fraction_of_ceiling", "of GT ceil", "{:.3f}"),
    ("epochs", "epochs", "{:d}"),
    ("seconds_per_epoch", "s/epoch", "{:.2f}"),
    ("device", "device", "{}"),
]


def _fmt(v, f):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    try:
        return f.format(v)
    except (ValueError, TypeError):
        return str(v)


def format_table(results):
    """The results table as text (one row per model, plus the ground truth when known)."""
    rows = [(r.get("label", k), r) for k, r in results["models"].items()]
    gt = results.get("ground_truth")
    cols = [c for c in COLUMNS if c[0] != "fraction_of_ceiling" or gt]
    if gt:
        rows.append(("ground truth (true rates)", gt))
    head = ["model"] + [h for _, h, _ in cols]
    body = [[name] + [_fmt(r.get(k), f) for k, _, f in cols] for name, r in rows]
    w = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w[0]) if i == 0 else c.rjust(w[i])  # noqa: E731
                                   for i, c in enumerate(cells))
    out = [line(head), "  ".join("-" * x for x in w)] + [line(b) for b in body]
    s = results.get("test_set") or {}
    if s.get("oracle") is not None:
        out.append(f"test set: {s['n_test_images']} images, {s['n_test_trials']} trials; mean "
                   f"jackknife oracle {s['oracle']:.3f}, mean FEV {s['fev']:.3f} "
                   f"({s['n_fev_selected']} neurons with FEV >= {s['fev_threshold']} enter FEVE)")
    if gt:
        out.append("GT ceiling: the test correlation of the true expected rates "
                   f"({gt['test_corr']:.3f}); 'of GT ceil' = test corr / GT ceiling")
    return "\n".join(out)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


# ----------------------------------------------------------------------------------- figures

def _pyplot():
    import matplotlib
    if not os.environ.get("DISPLAY"):
        try:
            matplotlib.use("Agg")
        except Exception:  # pragma: no cover
            pass
    import matplotlib.pyplot as plt
    return plt


def _save(fig, out, name, written):
    path = os.path.join(out, name)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    written.append(name)


def _figures_models(out, results, per_neuron, testset, preds, written):
    from . import plots
    plt = _pyplot()
    names = list(per_neuron)
    labels = {n: results["models"][n]["label"] for n in names}
    fig = plots.correlation_histogram({labels[n]: per_neuron[n]["test_corr"] for n in names},
                                      title="Single-trial test correlation per neuron")
    _save(fig, out, "correlation_histograms.png", written)

    pairs = [(a, b) for a, b in [("ln", "cnn"), ("ln", "simple-cnn"), ("ln", "lurz"),
                                 ("cnn", "lurz"), ("lurz-linear", "lurz")]
             if a in per_neuron and b in per_neuron]
    if pairs:
        fig, axes = plt.subplots(1, len(pairs), figsize=(4.3 * len(pairs), 4.3), squeeze=False)
        for ax, (a, b) in zip(axes[0], pairs):
            plots.model_comparison(per_neuron[a]["test_corr"], per_neuron[b]["test_corr"],
                                   labels[a], labels[b], ax=ax)
        fig.tight_layout()
        _save(fig, out, "model_comparison.png", written)

    best = "lurz" if "lurz" in per_neuron else max(
        names, key=lambda n: results["models"][n]["test_corr"])
    c = per_neuron[best]["test_corr"]
    neuron = int(np.argmax(c))
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.3))
    plots.response_scatter(testset.y_test, preds[best], neuron=neuron, ax=axes[0])
    axes[0].set_title(f"{labels[best]}, neuron {neuron}: single trials "
                      f"(r = {c[neuron]:.3f})", fontsize=9)
    if testset.targets:
        p_img = preds[best][testset.first_rows]
        plots.response_scatter(testset.y_avg, p_img, neuron=neuron, ax=axes[1])
        axes[1].set_xlabel("mean recorded response over repeats")
        axes[1].set_title(f"averaged over repeats (r = {per_neuron[best]['corr_to_average'][neuron]:.3f})",
                          fontsize=9)
    fig.tight_layout()
    _save(fig, out, "scatter.png", written)

    if testset.oracle is not None:
        fig, ax = plt.subplots(figsize=(5, 4.5))
        o = testset.oracle
        for n in names:
            ax.scatter(o, per_neuron[n]["test_corr"], s=3, alpha=0.35,
                       label=f"{labels[n]} ({results['models'][n]['fraction_oracle']:.2f} of oracle)")
        lim = [min(0, o.min()), max(o.max(), 0.1)]
        ax.plot(lim, lim, "k--", lw=1)
        ax.set_xlabel("oracle correlation (jackknife)")
        ax.set_ylabel("test correlation")
        ax.legend(frameon=False, fontsize=7, markerscale=3)
        _save(fig, out, "oracle.png", written)

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for n in names:
        curve = results["models"][n].get("validation_curve") or []
        if curve:
            ax.plot(np.arange(len(curve)), curve, marker="o", ms=3, label=labels[n])
    ax.set_xlabel("evaluation (0 = before training)")
    ax.set_ylabel("validation correlation")
    ax.legend(frameon=False, fontsize=8)
    _save(fig, out, "training_curves.png", written)


def analyse_lurz(models, per_neuron, loaders, out, written, n_neurons=6, mei_iterations=200,
                 ground_truth=None, verbose=True, seed=0):
    """Gradient RFs and MEIs of the Lurz models' best neurons (by the nonlinear model's test
    correlation); on a synthetic scan their correlation with the simple cells' true filters.
    Returns a JSON-able dict."""
    from . import plots
    from .analysis import cross_activation, generate_mei, gradient_rf
    stats = loaders["train"].dataset.statistics
    mean = float(np.asarray(stats["images"]["all"]["mean"]).ravel()[0])
    std = float(np.asarray(stats["images"]["all"]["std"]).ravel()[0])
    h, w = next(iter(loaders["train"]))[0].shape[-2:]   # a batch on either device
    image = np.full((1, h, w), mean, dtype=np.float32)
    # MEIs start from the mean image plus faint noise: the mean/std constraint rescales the
    # image to the data's contrast, so the gradient acts on an image of std ~0.1 and a few
    # dozen steps suffice (starting at the data's contrast, steps of lr 1 barely move it; a
    # uniform start makes the constraint degenerate)
    start = image + np.random.default_rng(seed).normal(0, 0.1, image.shape).astype(np.float32)
    ref = "lurz" if "lurz" in per_neuron else "lurz-linear"
    order = np.argsort(-per_neuron[ref]["test_corr"])
    chosen = [int(i) for i in order[:n_neurons]]
    simple = []
    if ground_truth is not None:
        is_simple = np.asarray(ground_truth["cell_type"]) == "simple"
        simple = [int(i) for i in order if is_simple[i]][:n_neurons]
    info = {"mean_image": mean, "std_constraint": std, "neurons": chosen,
            "mei_iterations": mei_iterations}
    for name in ("lurz", "lurz-linear"):
        if name not in models:
            continue
        model = models[name]
        label = MODELS[name]
        tag = name.replace("-", "_")
        neurons = chosen + [i for i in simple if i not in chosen]
        rfs = gradient_rf(model, neurons, image)
        _, meis = generate_mei(model, start, neurons, iterations=mei_iterations, mean_constr=mean,
                               std_constr=std, progress=verbose)
        rf_of = dict(zip(neurons, rfs))
        mei_of = dict(zip(neurons, meis))
        titles = [f"n{i} r={per_neuron[name]['test_corr'][i]:.2f}" for i in chosen]
        fig = plots.image_grid([rf_of[i] for i in chosen], titles=titles,
                               suptitle=f"{label}: gradient RFs of the best neurons")
        _save(fig, out, f"{tag}_rfs.png", written)
        fig = plots.image_grid([mei_of[i] - mean for i in chosen], titles=titles,
                               suptitle=f"{label}: MEIs (minus the mean pixel)")
        _save(fig, out, f"{tag}_meis.png", written)
        xa = cross_activation(model, np.stack([mei_of[i] for i in chosen]), chosen)
        fig = plots.cross_activation_matrix(xa, chosen)
        fig.axes[0].set_title(f"{label}: MEI cross-activation", fontsize=9)
        _save(fig, out, f"{tag}_cross_activation.png", written)
        entry = {"cross_activation_diagonal_mean": float(np.mean(np.diag(xa)))}
        if simple:
            filt = np.asarray(ground_truth["filters"])[simple].reshape(len(simple), -1)
            rf_c = [float(np.corrcoef(rf_of[i].ravel(), f)[0, 1]) for i, f in zip(simple, filt)]
            mei_c = [float(np.corrcoef(mei_of[i].ravel(), f)[0, 1]) for i, f in zip(simple, filt)]
            entry.update(simple_cells=simple, rf_gt_corr=rf_c, mei_gt_corr=mei_c,
                         rf_gt_corr_mean=float(np.nanmean(rf_c)),
                         mei_gt_corr_mean=float(np.nanmean(mei_c)))
            k = len(simple)
            plt = _pyplot()
            fig, axes = plt.subplots(3, k, figsize=(2.2 * k, 4.6), squeeze=False)
            rows = [("true filter", [f.reshape(h, w) for f in filt], None),
                    ("gradient RF", [rf_of[i] for i in simple], rf_c),
                    ("MEI", [mei_of[i] - mean for i in simple], mei_c)]
            for r, (what, ims, cs) in enumerate(rows):
                for j, im in enumerate(ims):
                    ax = axes[r, j]
                    v = float(np.abs(im).max()) or 1.0
                    ax.imshow(im, cmap="gray", vmin=-v, vmax=v)
                    ax.axis("off")
                    t = f"n{simple[j]} {what}" if cs is None else f"{what} r={cs[j]:.2f}"
                    ax.set_title(t, fontsize=7)
            fig.suptitle(f"{label}: simple cells, ground truth vs model (r: correlation with the "
                         f"true filter)", fontsize=9)
            fig.tight_layout()
            _save(fig, out, f"{tag}_ground_truth.png", written)
        info[name] = entry
    return info


# ----------------------------------------------------------------------------------- the job

CPU_MAX_ITER = 10  # the epoch cap of a CPU demo run with an explicit budget of 0 (no planning)

#: The time budget of ``make demo`` / ``lviv-c demo`` on a CPU when neither ``--max-iter`` nor
#: ``--budget`` is given, in minutes (everything: data, training, evaluation, figures).
CPU_BUDGET_MINUTES = 20.0

#: Epochs each model asks for when models share a budget, in proportion to one another: the
#: course's models need very different numbers of epochs for a fair result (the LN about 25, the
#: course CNN a few). A budget buys every model the same fraction of its ask (at least 1 epoch,
#: at most 200); early stopping still ends a model sooner when its validation score stalls.
PLAN_EPOCHS = {"ln": 24, "simple-cnn": 10, "cnn": 4, "lurz": 10, "lurz-linear": 6}

#: Seconds kept back from training for evaluation, gradient RFs, MEIs and figures.
ANALYSIS_RESERVE_S = 120.0


def probe_epoch_seconds(name, loaders, seed=1234, lurz_config=None, steps=2):
    """Estimated seconds per epoch of ``train_model`` for model ``name`` on ``loaders``: the time
    of ``steps`` training batches (after one batch that captures the graph and warms up),
    times the batches of an epoch, plus two forward passes over the validation tier per epoch
    (early stopping's objective and the tracker), a forward pass taken as a third of a training
    step. The probe trains a separate copy of the model, so the real run is unaffected. The
    Sensorium models (their own multi-scan loaders) are estimated by the Lurz 2020 model, the
    same kind of core and readout."""
    from .tensor import manual_seed
    from .trainers import Engine
    if name.startswith("sensorium"):
        name = "lurz"
    model = build_model(name, loaders, seed=seed, lurz_config=lurz_config)
    train = loaders["train"]
    eng = Engine(model, train)
    B = eng.B
    idx = np.asarray(train.sampler.indices, dtype=np.int64)
    order = np.resize(idx, B * (steps + 1))  # repeats trials when the scan is tiny
    eng.train_epoch(order[:B])
    t0 = time.perf_counter()
    eng.train_epoch(order[B:])
    step = (time.perf_counter() - t0) / steps
    manual_seed(seed)
    n_val = len(loaders["validation"].sampler)
    return math.ceil(len(idx) / B) * step + 2 * math.ceil(n_val / B) * step / 3


def plan_epochs(epoch_seconds, budget_s, asks=None):
    """Epochs per model for a training budget of ``budget_s`` seconds: every model gets the same
    fraction of its ask (``PLAN_EPOCHS``), at least 1 and at most 200 epochs. ``epoch_seconds``:
    {model: estimated seconds per epoch}. Returns {model: epochs}."""
    asks = asks or PLAN_EPOCHS
    cost = sum(asks.get(m, 5) * t for m, t in epoch_seconds.items())
    scale = budget_s / cost if cost > 0 else 1.0
    return {m: int(min(200, max(1, math.floor(asks.get(m, 5) * scale)))) for m in epoch_seconds}


def format_plan(plan, epoch_seconds, budget_s, spent_s):
    lines = [f"plan: {budget_s / 60:.1f} minutes in all ({spent_s:.0f} s spent on data and timing; "
             f"{ANALYSIS_RESERVE_S:.0f} s kept for evaluation and figures)",
             f"  {'model':18s} {'s/epoch (est.)':>14s} {'max epochs':>10s} {'est. seconds':>12s}"]
    total = 0.0
    for m, n in plan.items():
        t = n * epoch_seconds[m]
        total += t
        lines.append(f"  {MODELS[m]:18s} {epoch_seconds[m]:14.1f} {n:10d} {t:12.0f}")
    lines.append(f"  estimate: at most {(spent_s + total + ANALYSIS_RESERVE_S) / 60:.1f} minutes "
                 "(early stopping may end a model sooner)")
    return "\n".join(lines)


def run_demo(data=None, quick=False, out="out", max_iter=None, models=DEMO_MODELS,
             batch_size=30, seed=1234, cache=None, verbose=True, lurz_config=None,
             mei_iterations=None, n_analysis_neurons=None, figures=True, budget=None, device="auto"):
    """Train, evaluate and plot (see the module docstring). Returns the results dict that is
    also written to ``<out>/results.json``.

    ``quick``: the small synthetic scan (QUICK_SCAN), ``max_iter`` 2, 20 MEI iterations and 4
    analysed neurons unless given (else 300 and 6). ``max_iter``: train_model's epoch limit for
    every model (the course's is 200). ``budget``: minutes for the whole run; the epochs of each
    model are then planned from a timed probe of its training step (``plan_epochs``) and the
    plan is printed first. Without ``max_iter`` and ``budget``: on a CPU a budget of
    ``CPU_BUDGET_MINUTES``, on a GPU the course's 200 epochs. ``budget=0``: no planning, at most
    ``CPU_MAX_ITER`` epochs on a CPU.
    ``models``: keys of MODELS. ``lurz_config``: overrides of LURZ_COURSE_CONFIG. ``device``:
    'auto' (the GPU when there is one), 'cpu' or 'cuda' (the CPU, said once, when there is no
    GPU); the table reports the device each model really trained on."""
    from .capture import model_device
    from .trainers import resolve_device, train_model
    device = resolve_device(device, verbose=verbose)
    t_start = time.perf_counter()
    for m in models:
        if m not in MODELS:
            raise ValueError(f"unknown model {m!r}; expected some of {', '.join(MODELS)}")
    if budget is not None and (not isinstance(budget, (int, float)) or budget < 0 or budget != budget):
        raise ValueError(f"budget: expected minutes >= 0, got {budget!r}")
    if max_iter is None:
        if quick:
            max_iter = 2
        elif budget is None and device == "cpu":
            budget = CPU_BUDGET_MINUTES
        elif budget is None:
            max_iter = 200
        if max_iter is None and budget == 0:
            max_iter = 200 if device == "cuda" else CPU_MAX_ITER
    elif budget:
        raise ValueError("give max_iter or budget, not both")
    planned = max_iter is None
    if mei_iterations is None:
        mei_iterations = 20 if quick else 300
    if n_analysis_neurons is None:
        n_analysis_neurons = 4 if quick else 6
    path, synthetic = resolve_data(data, quick=quick, cache=cache, progress=verbose)
    os.makedirs(out, exist_ok=True)
    say = (lambda *a: print(*a, flush=True)) if verbose else (lambda *a: None)
    loaders, repeats = load_loaders(path, batch_size=batch_size, seed=seed, device=device)
    testset = TestSet(loaders, repeats)
    n_trials = len(loaders["train"].dataset)
    n_neurons = int(loaders["train"].responses_block.shape[1])
    say(f"scan {path}: {n_trials} trials, {n_neurons} neurons; train "
        f"{len(loaders['train'].sampler)}, validation {len(loaders['validation'].sampler)}, "
        f"test {len(loaders['test'].sampler)}; device {device}")
    max_iters = {m: max_iter for m in models}
    plan_info = None
    if planned:
        budget_s = 60.0 * budget
        epoch_s = {m: probe_epoch_seconds(m, loaders, seed=seed, lurz_config=lurz_config) for m in models}
        spent = time.perf_counter() - t_start
        max_iters = plan_epochs(epoch_s, budget_s - spent - ANALYSIS_RESERVE_S)
        say(format_plan(max_iters, epoch_s, budget_s, spent))
        plan_info = {"budget_minutes": budget, "epoch_seconds_estimate": epoch_s, "max_epochs": dict(max_iters)}
    results = {"data": path, "synthetic": synthetic, "quick": bool(quick), "device": device,
               "n_trials": n_trials, "n_neurons": n_neurons, "batch_size": batch_size,
               "max_iter": max_iter, "plan": plan_info, "seed": seed, "test_set": testset.summary(),
               "models": {}}
    gt = None
    if synthetic:
        from .synthetic import load_ground_truth
        gt = load_ground_truth(path, mmap=True)
        rates = np.asarray(gt["mean_rates"])
        if rates.shape == (n_trials, n_neurons):
            # in the loaders' units: responses are scaled by the per-neuron precision
            rates = rates * _response_precision(loaders)[None].astype(np.float32)
            gm, gper = testset.score(rates[testset.val.indices], rates[testset.test.indices])
            gm["label"] = "ground truth (true rates)"
            results["ground_truth"] = gm
            results["ground_truth_params"] = gt.get("params")
        else:
            gt = None
    trained, per_neuron, preds = {}, {}, {}
    for k, name in enumerate(models):
        if planned and k:
            # what the models before used less (early stopping) or more goes to the ones left
            left = 60.0 * budget - (time.perf_counter() - t_start) - ANALYSIS_RESERVE_S
            rest = plan_epochs({m: epoch_s[m] for m in models[k:]}, left)
            max_iters.update({m: max(1, n) for m, n in rest.items()})
        say(f"\n=== {MODELS[name]} ({name}){f', at most {max_iters[name]} epochs' if planned else ''} ===")
        if name.startswith("sensorium"):  # its own loaders (behavior, pupil center)
            from .sensorium_training import predict_tier, sensorium_scan_model
            model, s_loaders = sensorium_scan_model(name, path, batch_size=batch_size, seed=seed)
        else:
            model, s_loaders = build_model(name, loaders, seed=seed, lurz_config=lurz_config), None
        t0 = time.perf_counter()
        score, output, _ = train_model(model, s_loaders or loaders, seed=seed, max_iter=max_iters[name],
                                       verbose=verbose, device=device)
        train_s = time.perf_counter() - t0
        if s_loaders is not None:  # same trials, same order and response units as the TestSet's
            preds[name], p_val = (next(iter(predict_tier(model, s_loaders, t).values()))
                                  for t in ("test", "validation"))
        else:
            preds[name], p_val = predict(model, testset.test), predict(model, testset.val)
        measures, per = testset.score(p_val, preds[name])
        secs = output.get("epoch_seconds") or []
        row = {"label": MODELS[name], **measures,
               "epochs": int(output.get("epochs") or len(secs)),
               "seconds_per_epoch": float(np.mean(secs)) if secs else None,
               "train_seconds": train_s, "device": model_device(model), "n_parameters": n_parameters(model),
               "validation_curve": [float(v) for v in output.get("correlation", [])]}
        if results.get("ground_truth"):
            ceil = results["ground_truth"]["test_corr"]
            row["gt_ceiling"] = ceil
            row["fraction_of_ceiling"] = measures["test_corr"] / ceil if ceil else None
        results["models"][name] = row
        trained[name], per_neuron[name] = model, per
        say(f"{MODELS[name]}: validation {row['validation_corr']:.4f}, test "
            f"{row['test_corr']:.4f}, {row['epochs']} epochs, {train_s:.1f} s")
    written = []
    if figures and per_neuron:
        say("\nfigures ...")
        _figures_models(out, results, per_neuron, testset, preds, written)
        if "lurz" in trained or "lurz-linear" in trained:
            results["analysis"] = analyse_lurz(
                trained, per_neuron, loaders, out, written, n_neurons=n_analysis_neurons,
                mei_iterations=mei_iterations, ground_truth=gt, verbose=verbose, seed=seed)
    results["figures"] = written
    results["seconds"] = time.perf_counter() - t_start
    from ._files import atomic_write
    atomic_write(os.path.join(out, "results.json"),
                 lambda f: json.dump(_jsonable(results), f, indent=1, allow_nan=False), mode="w")
    say("\n" + format_table(results))
    a = results.get("analysis") or {}
    for name in ("lurz", "lurz-linear"):
        e = a.get(name) or {}
        if "mei_gt_corr_mean" in e:
            say(f"{MODELS[name]}: correlation with the true filters of {len(e['simple_cells'])} "
                f"simple cells: gradient RF {e['rf_gt_corr_mean']:.3f}, MEI "
                f"{e['mei_gt_corr_mean']:.3f}")
    say(f"\nwrote {os.path.join(out, 'results.json')} and {len(written)} figures to {out} "
        f"({results['seconds']:.0f} s{f' of a {budget:g}-minute budget' if planned else ''})")
    return results
