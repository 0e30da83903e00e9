"""What a trained model says about the neurons: gradient receptive fields, most exciting inputs
(MEIs) and their cross-activation, on the model's device (CPU or GPU, in place). Gradients come
from the C autograd: the RFs of all neurons from one forward and one backward per chunk of
neurons (lviv_c._C.gradient_rfs); the MEI optimisation loop runs in C over a captured graph
(lviv_c._C.optimize_input), its update steps backend entries (csrc/backend.h)."""
import numpy as np

from . import _C
from .tensor import Tensor, no_grad


class _EvalNoParamGrad:
    """Model in eval mode with parameter gradients off; restores both afterwards. The analysis
    runs where the model is (CPU or GPU): the images go to its device, the results come back."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        m = self.model
        from .capture import model_device
        self.device = model_device(m)
        self.was_training = getattr(m, "training", False)
        if hasattr(m, "eval"):
            m.eval()
        self.params = [p for p in (m.parameters() if hasattr(m, "parameters") else []) if p.requires_grad]
        for p in self.params:
            p.requires_grad = False
        return m

    def __exit__(self, *exc):
        for p in self.params:
            p.requires_grad = True
        if hasattr(self.model, "train"):
            self.model.train(self.was_training)
        return False


def _on(arr, device):
    """A float32 tensor holding a copy of `arr` on `device` (one copy to the GPU)."""
    from .capture import to_device
    return to_device(arr, device)


def _host(t):
    """A NumPy copy of a tensor of either device."""
    return np.array(memoryview(t.detach().cpu() if t.is_cuda else t.detach()), copy=True)


def _image(input_image):
    a = np.asarray(input_image, dtype=np.float32)
    if a.ndim == 2:
        a = a[None, None]
    elif a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[0] != 1:
        raise ValueError(f"input_image: expected one image shaped (H, W), (C, H, W) or (1, C, H, W), got {a.shape}")
    return a


def _neurons(neuron_idx, n_neurons):
    from .tensor import positions
    single = np.ndim(neuron_idx) == 0 and neuron_idx is not None
    if neuron_idx is None:
        return np.arange(n_neurons), single
    if single and isinstance(neuron_idx, (bool, np.bool_)):
        raise IndexError("neuron_idx: expected an int, a list/array of ints or a bool mask, got a bool")
    return positions(neuron_idx, n_neurons, "neuron_idx"), single


def _forward(model, x, data_key=None):
    return model(x) if data_key is None else model(x, data_key=data_key)


def gradient_rf(model, neuron_idx, input_image, device=None, batch_size=64, data_key=None):
    """Gradient receptive field(s): d rate_n / d image at `input_image`, model in eval mode.

    neuron_idx: an int (returns (H, W)), a list/array (returns (len, H, W)) or None for all
    neurons. The image is replicated `batch_size` times and run forward ONCE; the neurons are then
    done `batch_size` at a time, each chunk one backward through that same forward whose seed
    picks a different neuron for each copy (exact in eval mode, where the batch items do not
    interact). Runs on the model's device; only the image goes in and the RFs come out."""
    img = _image(input_image)
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"gradient_rf: batch_size must be a positive int, got {batch_size!r}")
    ev = _EvalNoParamGrad(model)
    with ev:
        dev = ev.device
        with no_grad():
            n_neurons = _forward(model, _on(img, dev), data_key).shape[1]
        idx, single = _neurons(neuron_idx, n_neurons)
        if len(idx):
            # one forward of min(batch_size, neurons) copies of the image, shared by every chunk
            # of neurons: each chunk is one backward through it (lviv_c._C.gradient_rfs)
            x = _on(np.repeat(img, max(1, min(int(batch_size), len(idx))), axis=0), dev)
            x.requires_grad = True
            out = _forward(model, x, data_key)
            out_rf = _C.gradient_rfs(x, out, idx)
            del out, x
        else:
            out_rf = np.empty((0,) + img.shape[1:], dtype=np.float32)
    rf = out_rf[:, 0] if img.shape[1] == 1 else out_rf
    return rf[0] if single else rf


def _mean_std_transform(x, mean, std, eps=1e-4):
    """T(x) = (x - mean(x)) / (std(x) + eps) * std + mean per image (unbiased std)."""
    m = x.mean((1, 2, 3), keepdim=True)
    s = x.std((1, 2, 3), keepdim=True)
    return (x - m) / (s + eps) * std + mean


def generate_mei(model, input_image, neuron_idx, iterations=1000, mean_constr=None, std_constr=None,
                 lr=1.0, momentum=0.9, l2_norm=None, clip=None, blur_sigma=0.0, seeds=None,
                 init_noise=None, device=None, progress=True, data_key=None):
    """Most exciting input(s) by gradient ascent, with the course's semantics.

    Optimises a free image x by SGD (momentum 0.9) on -rate_n(T(x)), where T fixes the image's
    mean and std (`mean_constr`, `std_constr`, unbiased std, eps 1e-4) when given; gradients are
    zeroed every step. Alternatives: `l2_norm=c` (x is rescaled to norm c after every step),
    `clip=(lo, hi)` (x clamped after every step), `blur_sigma` (Gaussian blur of the gradient).
    `neuron_idx` may be a list: one image per neuron, optimised together. `seeds`: several random
    starts per neuron (noise of std `init_noise`, default 1, added to `input_image`).

    Returns (activations, mei): activations (iterations,) per neuron, the rate before each
    step; mei (H, W) for an int neuron_idx, else (len, H, W) (x (len, seeds, H, W) with seeds).
    The loop runs in C with a progress bar."""
    img = _image(input_image)
    single = np.ndim(neuron_idx) == 0
    idx = np.atleast_1d(np.asarray(neuron_idx, dtype=np.int64))
    n_seeds = 1 if seeds is None else len(seeds)
    K = len(idx) * n_seeds
    x0 = np.repeat(img, K, axis=0).copy()
    if seeds is not None:
        for j, sd in enumerate(seeds):
            rng = np.random.default_rng(sd)
            x0[j::n_seeds] += rng.standard_normal(x0[j::n_seeds].shape).astype(np.float32) * (1.0 if init_noise is None else init_noise)
    if l2_norm is not None:
        x0 *= l2_norm / np.sqrt((x0.reshape(K, -1) ** 2).sum(1)).reshape(K, 1, 1, 1)
    neurons = np.repeat(idx, n_seeds)
    constrained = mean_constr is not None or std_constr is not None
    if constrained and (mean_constr is None or std_constr is None):
        raise ValueError("generate_mei: give both mean_constr and std_constr (or neither)")
    ev = _EvalNoParamGrad(model)
    with ev:
        x = _on(x0, ev.device)
        x.requires_grad = True
        with no_grad():
            n_neurons = _forward(model, _on(img, ev.device), data_key).shape[1]
        if neurons.size and (neurons.min() < 0 or neurons.max() >= n_neurons):
            raise IndexError(f"neuron_idx: indices must be in [0, {n_neurons})")
        # the loss picks out[k, neurons[k]] (positions in the flattened output): the gradient of
        # -(out * one_hot).sum() without the (K, neurons) mask and its product and sum per step
        from .tensor import tensor as _tensor
        flat = _tensor(np.arange(K, dtype=np.int64) * n_neurons + neurons, device=ev.device)
        _C.capture_begin()
        try:
            xt = _mean_std_transform(x, float(mean_constr), float(std_constr)) if constrained else x
            out = _forward(model, xt, data_key)
            loss = -out.reshape(-1).index_select(0, flat).sum()
        except BaseException:
            _C.capture_abort()
            raise
        g = _C.capture_end(x, None, out, loss, K)
        bar = None
        if progress:
            from .progress import progress as _progress
            bar = _progress(total=iterations, desc="MEI")
        last = [0]

        def cb(done, total):
            if bar is not None:
                bar.update(done - last[0])
                last[0] = done
        clip_lo, clip_hi = (None, None) if clip is None else clip
        try:
            trace = _C.optimize_input(g, x, neurons, int(iterations), lr=float(lr), momentum=float(momentum),
                                      blur_sigma=float(blur_sigma), clip_lo=clip_lo, clip_hi=clip_hi,
                                      l2_norm=float(l2_norm or 0.0), progress=cb)
        finally:
            if bar is not None:
                bar.close()
        with no_grad():
            final = _mean_std_transform(x, float(mean_constr), float(std_constr)) if constrained else x.detach()
            mei = _host(final)
    x.requires_grad = False
    mei = mei[:, 0] if mei.shape[1] == 1 else mei
    if seeds is not None:
        mei = mei.reshape((len(idx), n_seeds) + mei.shape[1:])
        trace = trace.reshape(len(trace), len(idx), n_seeds)
    if single:
        return trace[:, 0], mei[0]
    return trace, mei


def cross_activation(model, meis, neuron_idx, device=None, data_key=None):
    """Matrix (n_meis, n_neurons): each MEI's predicted response for each chosen neuron, each
    column divided by its maximum (so 1 marks the MEI that drives that neuron most)."""
    m = np.asarray(meis, dtype=np.float32)
    if m.ndim == 3:
        m = m[:, None]
    if m.ndim != 4:
        raise ValueError(f"meis: expected (K, H, W) or (K, C, H, W), got shape {np.shape(meis)}")
    idx = np.atleast_1d(np.asarray(neuron_idx, dtype=np.int64))
    ev = _EvalNoParamGrad(model)
    with ev:
        with no_grad():
            r = _host(_forward(model, _on(m, ev.device), data_key))
    if idx.max() >= r.shape[1]:
        raise IndexError(f"neuron_idx: index {idx.max()} out of range for {r.shape[1]} neurons")
    a = r[:, idx].astype(np.float64)
    mx = a.max(0, keepdims=True)
    return a / np.where(mx == 0, 1, mx)
