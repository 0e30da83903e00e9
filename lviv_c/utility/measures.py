"""Measures of model quality: correlations, Poisson loss, oracles, explainable variance, FEVE.

The names and signatures are those of the course package ``lviv`` and of ``neuralpredictors`` /
``nnvision`` (``utility.measures``), so notebook code runs unchanged. All arithmetic is NumPy,
vectorised over neurons and trials; a model is anything callable on a batch of images that
returns something ``np.asarray`` understands (an ``lviv_c.Tensor``, a NumPy array, ...).

Conventions shared by every function here
-----------------------------------------
* ``dataloaders`` is either one loader, or a dict ``{data_key: loader}`` (several scans). With a
  dict, the model is called as ``model(images, data_key=key)`` when its ``forward`` accepts a
  ``data_key`` argument, per-neuron results of the scans are concatenated (``np.hstack``) unless
  ``as_dict=True``. With a single loader the model is called as ``model(images)`` and
  ``as_dict=True`` returns ``{None: result}``.
* Functions that need repeated presentations of an image (``get_avg_correlations``,
  ``get_oracles*``, ``get_explainable_var``, ``get_feve``) also accept the whole
  ``{'train', 'validation', 'test'}`` dict and use its ``'test'`` entry, as neuralpredictors
  does. Their loader must yield one image per batch with all of its repeats
  (``load_dataset(..., return_test_sampler=True)``).
* ``get_correlations``, ``get_poisson_loss``, ``get_avg_correlations`` and ``get_feve`` switch
  the model to eval mode for the evaluation and restore its previous mode afterwards (as
  neuralpredictors' ``eval_state`` does); ``model_predictions`` leaves the mode to the caller.
* ``device`` is accepted everywhere and not used: the model decides where it runs; results are
  always NumPy arrays on the host.
* Statistics are computed in float64 (inputs are float32).
"""
import contextlib
import inspect
import warnings
from collections.abc import Mapping

import numpy as np

__all__ = [
    "corr", "eval_state", "model_predictions", "model_predictions_repeats",
    "get_correlations", "get_poisson_loss", "get_avg_correlations", "get_repeats",
    "compute_oracle_corr", "compute_oracle_corr_corrected", "get_oracles",
    "get_oracles_corrected", "compute_explainable_var", "get_fev", "get_explainable_var",
    "compute_feve", "get_feve", "get_FEV", "get_fraction_oracles",
]


# ----------------------------------------------------------------------------- basic statistics

def _corr_raw(y1, y2, axis=-1, eps=1e-8, **kwargs):
    # mean(z1 * z2) with z = (y - mean) / (std + eps), written as
    # mean(d1 * d2) / ((std1 + eps) * (std2 + eps)) to save temporaries (same value).
    y1 = np.asarray(y1, dtype=np.float64)
    y2 = np.asarray(y2, dtype=np.float64)
    d1 = y1 - y1.mean(axis=axis, keepdims=True)
    d2 = y2 - y2.mean(axis=axis, keepdims=True)
    s1 = np.sqrt(np.mean(np.square(d1), axis=axis, keepdims=True))
    s2 = np.sqrt(np.mean(np.square(d2), axis=axis, keepdims=True))
    prod = d1 * d2
    prod /= (s1 + eps) * (s2 + eps)
    return prod.mean(axis=axis, **kwargs)


def _nan_to_zero(x, warn=False, what=""):
    x = np.asarray(x, dtype=np.float64)
    bad = np.isnan(x)
    if bad.any():
        if warn:
            warnings.warn("{}% NaNs {}, NaNs will be set to Zero.".format(bad.mean() * 100, what),
                          stacklevel=3)
        x = np.where(bad, 0.0, x)
    return x if x.ndim else x[()]


_NAN_RULES = ("zero", "warn", "propagate")


def corr(y1, y2, axis=-1, eps=1e-8, nan="zero", **kwargs):
    """Pearson correlation of ``y1`` and ``y2`` along ``axis``: the one correlation of lviv_c
    (the measures, ``train_model``'s objective and the synthetic scan's ceilings use it).

    The mean of the products of z-scores (population std, ``ddof=0``), with ``eps`` added to
    each standard deviation. ``kwargs`` go to the final mean (e.g. ``keepdims``).

    NaN rule (documented once, here):

    * A constant ``y1`` or ``y2`` (zero variance) gives 0, not NaN: the eps in the denominators
      (the course's / neuralpredictors' convention). With ``eps=0`` it gives NaN instead.
    * A NaN or inf in an input gives NaN for its column; ``nan`` decides what is returned:
      ``"zero"`` (default, the course's ``corr``): set to 0; ``"warn"``: set to 0 with a warning
      giving the percentage (neuralpredictors' ``get_correlations``); ``"propagate"``: kept, so
      a NaN prediction surfaces (``train_model``'s objective: a model that predicts NaN stops
      training with an error instead of scoring 0 forever).

    Shapes: ``y1``, ``y2`` broadcastable, e.g. (trials, neurons) with ``axis=0`` -> (neurons,).
    """
    if nan not in _NAN_RULES:
        raise ValueError("corr: nan must be one of {}, got {!r}".format(_NAN_RULES, nan))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        r = _corr_raw(y1, y2, axis=axis, eps=eps, **kwargs)
    if nan == "propagate":
        r = np.asarray(r, dtype=np.float64)
        return r if r.ndim else r[()]
    return _nan_to_zero(r, warn=nan == "warn")


# ----------------------------------------------------------------------------- model plumbing

@contextlib.contextmanager
def eval_state(model):
    """Put ``model`` in eval mode for the block, then back in the mode it had (if it has modes)."""
    if not (hasattr(model, "training") and callable(getattr(model, "eval", None))
            and callable(getattr(model, "train", None))):
        yield model
        return
    was_training = bool(model.training)
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _no_grad():
    """``lviv_c.no_grad()`` where the package has it, else a no-op context."""
    try:
        import lviv_c
    except ImportError:  # pragma: no cover - only when used outside the package
        return contextlib.nullcontext()
    ng = getattr(lviv_c, "no_grad", None)
    return ng() if ng is not None else contextlib.nullcontext()


def _accepts_data_key(model):
    fn = getattr(model, "forward", model)
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "data_key" or p.kind == p.VAR_KEYWORD for p in params)


def _on_model_device(model, images):
    """The batch's images on the model's device (the course's ``images.to(device)``)."""
    from ..capture import model_device
    dev = model_device(model)
    if isinstance(images, np.ndarray):
        if dev == "cpu":
            return images
        from ..tensor import tensor
        return tensor(np.asarray(images, np.float32), device=dev)
    on_cuda = bool(getattr(images, "is_cuda", False))
    if on_cuda == (dev == "cuda") or not callable(getattr(images, "to", None)):
        return images
    return images.to(dev)


def _call_model(model, images, data_key):
    images = _on_model_device(model, images)
    if data_key is not None and _accepts_data_key(model):
        return model(images, data_key=data_key)
    return model(images)


def _to_numpy(x, dtype=np.float32):
    """Host NumPy copy of a model output / batch entry (Tensor, ndarray, torch tensor, list)."""
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError, RuntimeError, BufferError):  # BufferError: a CUDA tensor
        for meth in ("detach", "cpu", "numpy"):
            if callable(getattr(x, meth, None)):
                x = getattr(x, meth)()
        return np.asarray(x, dtype=dtype)


def _split_batch(batch):
    """(images, responses) of a batch: a named pair / tuple, or a dict."""
    if isinstance(batch, Mapping):
        images = batch["inputs"] if "inputs" in batch else batch["images"]
        responses = batch["targets"] if "targets" in batch else batch["responses"]
        return images, responses
    return batch[0], batch[1]


def _loaders(dataloaders, dataloader=None, use_test=False):
    """[(data_key, loader)] from one loader or a dict of loaders (see module docstring)."""
    if dataloaders is None:
        dataloaders = dataloader
    if dataloaders is None:
        raise TypeError("no dataloader given")
    if isinstance(dataloaders, Mapping):
        if use_test and "test" in dataloaders:
            return _loaders(dataloaders["test"])
        return list(dataloaders.items())
    return [(None, dataloaders)]


def _collect(results, as_dict, per_neuron, reduce=np.mean):
    if as_dict:
        return results
    stacked = np.hstack([np.atleast_1d(v) for v in results.values()])
    return stacked if per_neuron else reduce(stacked)


def model_predictions(model, dataloader, data_key=None, device="cpu"):
    """Run ``model`` over every batch of ``dataloader`` (under ``no_grad``).

    Returns ``(target, output)``: float32 arrays (n_trials, n_neurons), in loader order. The
    model's train/eval mode is left as it is.
    """
    targets, outputs = [], []
    with _no_grad():
        for batch in dataloader:
            images, responses = _split_batch(batch)
            outputs.append(_to_numpy(_call_model(model, images, data_key)))
            targets.append(_to_numpy(responses))
    if not targets:
        raise ValueError("model_predictions: the dataloader yielded no batches")
    return np.concatenate(targets, axis=0), np.concatenate(outputs, axis=0)


def _squeeze_repeat_batch(images, responses):
    if images.ndim == 5:  # (1, repeats, c, h, w) from a batch_size=1 loader over repeat groups
        images, responses = images[0], responses[0]
    return images, responses


def _check_same_image(images, index):
    if images.shape[0] > 1 and not np.all(images == images[:1]):
        raise ValueError(
            "batch {} holds different images: the oracle / repeat measures need a loader whose "
            "batches hold all repeats of one image (load_dataset(..., return_test_sampler=True))"
            .format(index))


def model_predictions_repeats(model, dataloader, data_key=None, device="cpu",
                              broadcast_to_target=False):
    """Predictions for a loader whose batches hold all repeats of one image.

    Each image is forwarded once (the first row of its batch, under ``no_grad``; mode left to
    the caller). Returns ``(target, output)``: ``target`` a list of (repeats_i, n_neurons)
    arrays, ``output`` an (n_images, n_neurons) array, or with ``broadcast_to_target`` a list of
    arrays shaped like ``target``.
    """
    targets, outputs = [], []
    with _no_grad():
        for i, batch in enumerate(dataloader):
            images, responses = _split_batch(batch)
            img_np = _to_numpy(images)
            resp = _to_numpy(responses)
            if img_np.ndim == 5:
                img_np, resp = img_np[0], resp[0]
                images = images[0]
            _check_same_image(img_np, i)
            outputs.append(_to_numpy(_call_model(model, images[0:1], data_key)).reshape(-1))
            targets.append(resp)
    if not targets:
        raise ValueError("model_predictions_repeats: the dataloader yielded no batches")
    output = np.stack(outputs, axis=0)
    if broadcast_to_target:
        output = [np.broadcast_to(o, t.shape) for o, t in zip(output, targets)]
    return targets, output


# ----------------------------------------------------------------------------- model measures

def get_correlations(model, dataloaders=None, device="cpu", as_dict=False, per_neuron=True,
                     dataloader=None, **kwargs):
    """Single-trial correlation per neuron between responses and predictions over all trials.

    Per neuron array (scans concatenated), its mean over neurons with ``per_neuron=False``, or
    a dict per data key with ``as_dict=True``. NaNs are set to 0 with a warning.
    """
    results = {}
    with eval_state(model):
        for key, loader in _loaders(dataloaders, dataloader):
            target, output = model_predictions(model, loader, data_key=key, device=device)
            results[key] = corr(target, output, axis=0, nan="warn")
    return _collect(results, as_dict, per_neuron)


def get_poisson_loss(model, dataloaders=None, device="cpu", as_dict=False, avg=False,
                     per_neuron=True, eps=1e-12, dataloader=None):
    """Poisson loss ``output - target * log(output + eps)`` per neuron, summed over trials (mean
    with ``avg=True``); ``per_neuron=False`` sums (averages with ``avg``) over neurons too."""
    results = {}
    with eval_state(model):
        for key, loader in _loaders(dataloaders, dataloader):
            target, output = model_predictions(model, loader, data_key=key, device=device)
            target = target.astype(np.float64)
            output = output.astype(np.float64)
            loss = output - target * np.log(output + eps)
            results[key] = loss.mean(axis=0) if avg else loss.sum(axis=0)
    return _collect(results, as_dict, per_neuron, reduce=np.mean if avg else np.sum)


def get_avg_correlations(model, dataloaders=None, device="cpu", as_dict=False, per_neuron=True,
                         dataloader=None, **kwargs):
    """Correlation per neuron between the mean response over the repeats of each test image and
    the prediction for that image (test loader with repeat batches; see module docstring)."""
    results = {}
    with eval_state(model):
        for key, loader in _loaders(dataloaders, dataloader, use_test=True):
            target, output = model_predictions_repeats(model, loader, data_key=key, device=device)
            target_mean = np.stack([t.mean(axis=0, dtype=np.float64) for t in target])
            results[key] = corr(target_mean, output, axis=0, nan="warn")
    return _collect(results, as_dict, per_neuron)


# ----------------------------------------------------------------------------- repeats, oracles

def get_repeats(dataloader, min_repeats=2):
    """Images and responses of a loader whose batches hold all repeats of one image.

    Returns ``(inputs, outputs)``: two lists, one entry per image with at least ``min_repeats``
    repeats: ``inputs[i]`` (repeats_i, 1, h, w), ``outputs[i]`` (repeats_i, n_neurons), float32.
    (neuralpredictors returns ``np.array`` of these lists, which is ragged when images have
    different numbers of repeats; lists work for both.) Raises ``ValueError`` when a batch
    mixes different images.
    """
    inputs, outputs = [], []
    for i, batch in enumerate(dataloader):
        images, responses = _split_batch(batch)
        images, responses = _squeeze_repeat_batch(_to_numpy(images), _to_numpy(responses))
        if responses.shape[0] < min_repeats:
            continue
        _check_same_image(images, i)
        inputs.append(images)
        outputs.append(responses)
    return inputs, outputs


def _stack_repeats(repeated_outputs):
    """(R (T, N) float64, counts (G,), starts (G,)) from a list of (r_i, N) or a (G, r, N) array."""
    if isinstance(repeated_outputs, np.ndarray) and repeated_outputs.dtype != object \
            and repeated_outputs.ndim == 3:
        g, r, n = repeated_outputs.shape
        R = repeated_outputs.reshape(g * r, n).astype(np.float64)
        counts = np.full(g, r, dtype=np.int64)
    else:
        parts = [np.asarray(x, dtype=np.float64) for x in repeated_outputs]
        if not parts:
            raise ValueError("no images with repeats")
        parts = [p.reshape(p.shape[0], -1) for p in parts]
        R = np.concatenate(parts, axis=0)
        counts = np.array([p.shape[0] for p in parts], dtype=np.int64)
    if np.any(counts < 1):
        raise ValueError("an image has no repeats")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return R, counts, starts


def _group_means(R, counts, starts):
    return np.add.reduceat(R, starts, axis=0) / counts[:, None]


def compute_oracle_corr(repeated_outputs):
    """Jackknife (leave-one-out) oracle correlation per neuron.

    Each trial is predicted by the mean of the other repeats of its image; the oracle is the
    correlation over all trials between responses and these predictors. ``repeated_outputs``:
    list of (repeats_i, n_neurons) arrays (repeats_i >= 2) or a (images, repeats, neurons) array.
    """
    R, counts, starts = _stack_repeats(repeated_outputs)
    sums = np.add.reduceat(R, starts, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        oracle = (np.repeat(sums, counts, axis=0) - R) / (np.repeat(counts, counts)[:, None] - 1)
    oracle = _nan_to_zero(oracle, warn=True, what="when calculating the oracle")
    oracle[~np.isfinite(oracle)] = 0.0
    return corr(R, oracle, axis=0)


def compute_oracle_corr_corrected(repeated_outputs):
    """Noise-corrected oracle ``var_mean / sqrt(var_mean * (var_mean + var_noise))`` per neuron,
    with ``var_noise`` the mean over images of the repeat variance and ``var_mean`` the variance
    over images of the repeat means (both ``ddof=0``, as in neuralpredictors). NaN -> 0."""
    R, counts, starts = _stack_repeats(repeated_outputs)
    means = _group_means(R, counts, starts)
    dev = R - np.repeat(means, counts, axis=0)
    var_noise = (np.add.reduceat(dev * dev, starts, axis=0) / counts[:, None]).mean(axis=0)
    var_mean = means.var(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = var_mean / np.sqrt(var_mean * (var_mean + var_noise))
    return _nan_to_zero(out)


def _oracles(fn, dataloaders, as_dict, per_neuron, dataloader=None):
    results = {}
    for key, loader in _loaders(dataloaders, dataloader, use_test=True):
        _, outputs = get_repeats(loader)
        results[key] = fn(outputs)
    return _collect(results, as_dict, per_neuron)


def get_oracles(dataloaders=None, as_dict=False, per_neuron=True, dataloader=None):
    """Jackknife oracle correlation per neuron (see ``compute_oracle_corr``) of the test loader."""
    return _oracles(compute_oracle_corr, dataloaders, as_dict, per_neuron, dataloader)


def get_oracles_corrected(dataloaders=None, as_dict=False, per_neuron=True, dataloader=None):
    """Noise-corrected oracle per neuron (see ``compute_oracle_corr_corrected``)."""
    return _oracles(compute_oracle_corr_corrected, dataloaders, as_dict, per_neuron, dataloader)


# ----------------------------------------------------------------------------- explainable variance

def _variances(R, counts, starts):
    """total variance over all trials and mean within-image (noise) variance, both ddof=1."""
    if R.shape[0] < 2:
        raise ValueError("explainable variance needs at least two trials")
    if np.any(counts < 2):
        raise ValueError("explainable variance needs at least two repeats of every image")
    total = R.var(axis=0, ddof=1)
    means = _group_means(R, counts, starts)
    dev = R - np.repeat(means, counts, axis=0)
    noise = (np.add.reduceat(dev * dev, starts, axis=0) / (counts - 1)[:, None]).mean(axis=0)
    return total, noise, means


def compute_explainable_var(responses_per_image, eps=0.0):
    """Fraction of explainable variance per neuron: ``(total - noise) / (total + eps)``.

    ``total``: variance of all trials (ddof 1); ``noise``: mean over images of the variance of
    its repeats (ddof 1). ``responses_per_image``: list of (repeats_i, n_neurons) arrays or an
    (images, repeats, neurons) array. Neurons without any variance get 0.
    """
    R, counts, starts = _stack_repeats(responses_per_image)
    total, noise, _ = _variances(R, counts, starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        fev = (total - noise) / (total + eps)
    return _nan_to_zero(fev)


def get_fev(responses_per_image, eps=0.0):
    """Fraction of explainable variance (FEV) per neuron of repeated responses; see
    ``compute_explainable_var``. (For the model's FEVE use ``get_feve``.)"""
    return compute_explainable_var(responses_per_image, eps=eps)


def get_explainable_var(dataloaders=None, as_dict=False, per_neuron=True, dataloader=None, **kwargs):
    """FEV per neuron of the test loader (repeat batches); mean over neurons with
    ``per_neuron=False``."""
    return _oracles(compute_explainable_var, dataloaders, as_dict, per_neuron, dataloader)


def compute_feve(targets, outputs, return_exp_var=False):
    """Fraction of explainable variance explained per neuron.

    ``FEVE = 1 - (MSE - noise) / (total - noise)``, with ``MSE`` the mean over all trials of
    ``(response - prediction)^2`` and ``total``, ``noise`` as in ``compute_explainable_var``.
    ``targets``: list of (repeats_i, n_neurons); ``outputs``: one prediction per image, either
    an (images, n_neurons) array or a list shaped like ``targets``. Returns ``FEVE`` or, with
    ``return_exp_var``, ``(FEV, FEVE)``. Neurons with ``total == noise`` get NaN FEVE.
    """
    R, counts, starts = _stack_repeats(targets)
    if isinstance(outputs, np.ndarray) and outputs.dtype != object and outputs.ndim == 2 \
            and outputs.shape[0] == len(counts) and outputs.shape[0] != R.shape[0]:
        O = np.repeat(outputs.astype(np.float64), counts, axis=0)
    elif isinstance(outputs, np.ndarray) and outputs.dtype != object and outputs.ndim == 2:
        O = outputs.astype(np.float64)
    else:
        O = np.concatenate([np.broadcast_to(np.asarray(o, dtype=np.float64),
                                            (c, R.shape[1])) for o, c in zip(outputs, counts)])
    if O.shape != R.shape:
        raise ValueError("compute_feve: predictions {} do not match responses {}".format(
            O.shape, R.shape))
    total, noise, _ = _variances(R, counts, starts)
    mse = ((R - O) ** 2).mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        fev = _nan_to_zero((total - noise) / total)
        feve = 1.0 - (mse - noise) / (total - noise)
    return (fev, feve) if return_exp_var else feve


def get_feve(model, dataloaders=None, device="cpu", as_dict=False, per_neuron=True,
             threshold=0.15, dataloader=None):
    """FEVE of ``model`` on the test loader (repeat batches), over the neurons whose FEV is at
    least ``threshold`` (all neurons with ``threshold=None``).

    ``per_neuron=True``: the FEVE of the selected neurons (concatenated over scans; the selection
    is ``get_explainable_var(...) >= threshold``); ``per_neuron=False``: their mean.
    """
    results = {}
    with eval_state(model):
        for key, loader in _loaders(dataloaders, dataloader, use_test=True):
            targets, outputs = model_predictions_repeats(model, loader, data_key=key,
                                                         device=device)
            fev, feve = compute_feve(targets, outputs, return_exp_var=True)
            results[key] = feve if threshold is None else feve[fev >= threshold]
    return _collect(results, as_dict, per_neuron)


def get_FEV(model, dataloaders=None, device="cpu", as_dict=False, per_neuron=True, threshold=None,
            dataloader=None):
    """nnvision's name for the model's FEVE (no threshold by default); see ``get_feve``."""
    return get_feve(model, dataloaders, device=device, as_dict=as_dict, per_neuron=per_neuron,
                    threshold=threshold, dataloader=dataloader)


def get_fraction_oracles(oracles, test_correlation=None, device="cpu", corrected=False):
    """Fraction of the oracle reached: least-squares slope through the origin of the test
    correlation against the oracle over neurons, ``sum(o * c) / sum(o * o)``.

    Either ``get_fraction_oracles(oracles, test_correlation)`` with two per-neuron arrays, or
    ``get_fraction_oracles(model, dataloaders, corrected=False)`` (nnvision's form), which
    computes both on the test loader: single-trial test correlation against the (corrected)
    oracle.
    """
    if callable(oracles) and not isinstance(oracles, np.ndarray):
        model, loaders = oracles, test_correlation
        if isinstance(loaders, Mapping) and "test" in loaders:
            loaders = loaders["test"]
        o = (get_oracles_corrected if corrected else get_oracles)(loaders)
        c = get_correlations(model, loaders, device=device)
    else:
        o, c = oracles, test_correlation
    o = np.ravel(np.asarray(o, dtype=np.float64))
    c = np.ravel(np.asarray(c, dtype=np.float64))
    if o.shape != c.shape:
        raise ValueError("get_fraction_oracles: {} oracles but {} correlations".format(
            o.size, c.size))
    denom = np.dot(o, o)
    return float(np.dot(o, c) / denom) if denom > 0 else float("nan")
