"""Figures people would rather look at than read. matplotlib is imported only when a plot is
made (with the Agg backend when there is no display); every function returns the Figure."""
import os

import numpy as np


def _plt():
    import matplotlib
    if not os.environ.get("DISPLAY") and "inline" not in matplotlib.get_backend().lower() \
            and "ipykernel" not in matplotlib.get_backend():
        try:
            matplotlib.use("Agg")
        except Exception:
            pass
    import matplotlib.pyplot as plt
    return plt


def correlation_histogram(correlations, label=None, bins=50, ax=None, title="Single-trial correlation"):
    """Histogram of per-neuron correlations with the mean marked (several models: a dict)."""
    plt = _plt()
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 4))
    series = correlations if isinstance(correlations, dict) else {label or "model": correlations}
    for name, c in series.items():
        c = np.asarray(c, dtype=np.float64)
        line = ax.hist(c, bins=bins, alpha=0.5, label=f"{name} (mean {c.mean():.3f})")[2][0]
        ax.axvline(c.mean(), color=line.get_facecolor(), ls="--", lw=2)
    ax.set_xlabel("correlation")
    ax.set_ylabel("neurons")
    ax.set_title(title)
    ax.legend(frameon=False)
    return fig


def response_scatter(actual, predicted, neuron=None, ax=None):
    """Model prediction against the recorded response of one neuron over trials."""
    plt = _plt()
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(4.5, 4.5))
    a, p = np.asarray(actual, np.float64), np.asarray(predicted, np.float64)
    if neuron is not None:
        a, p = a[:, neuron], p[:, neuron]
    ax.scatter(a, p, s=6, alpha=0.5)
    r = np.corrcoef(a, p)[0, 1] if a.std() > 0 and p.std() > 0 else 0.0
    lim = [min(a.min(), p.min()), max(a.max(), p.max())]
    ax.plot(lim, lim, "k--", lw=1)
    ax.set_xlabel("recorded response")
    ax.set_ylabel("predicted response")
    ax.set_title(f"neuron {neuron}: r = {r:.3f}" if neuron is not None else f"r = {r:.3f}")
    return fig


def model_comparison(corr_a, corr_b, name_a="model A", name_b="model B", ax=None):
    """Per-neuron correlation of one model against another's, with the diagonal."""
    plt = _plt()
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(4.5, 4.5))
    a, b = np.asarray(corr_a, np.float64), np.asarray(corr_b, np.float64)
    ax.scatter(a, b, s=4, alpha=0.4)
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel(f"{name_a} correlation (mean {a.mean():.3f})")
    ax.set_ylabel(f"{name_b} correlation (mean {b.mean():.3f})")
    ax.set_title(f"{name_b} better for {np.mean(b > a) * 100:.0f}% of neurons")
    return fig


def image_grid(images, titles=None, ncols=6, cmap="gray", symmetric=True, suptitle=None):
    """A grid of images (RFs, MEIs): (K, H, W). Symmetric colour limits around 0 for RFs."""
    plt = _plt()
    ims = np.asarray(images, dtype=np.float64)
    if ims.ndim == 2:
        ims = ims[None]
    if ims.ndim == 4:
        ims = ims[:, 0]
    k = len(ims)
    ncols = max(1, min(ncols, k))
    nrows = -(-k // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols, 1.5 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= k:
            continue
        im = ims[i]
        if symmetric:
            v = np.abs(im).max() or 1.0
            ax.imshow(im, cmap=cmap, vmin=-v, vmax=v)
        else:
            ax.imshow(im, cmap=cmap)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def activation_trace(trace, labels=None, ax=None):
    """Activation of the optimised neuron(s) over MEI iterations."""
    plt = _plt()
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.5))
    t = np.asarray(trace, np.float64)
    if t.ndim == 1:
        t = t[:, None]
    t = t.reshape(len(t), -1)
    for j in range(t.shape[1]):
        ax.plot(t[:, j], label=None if labels is None else str(labels[j]))
    ax.set_xlabel("iteration")
    ax.set_ylabel("predicted rate")
    if labels is not None:
        ax.legend(frameon=False, fontsize=8)
    return fig


def cross_activation_matrix(matrix, neuron_idx=None, ax=None):
    """MEI x neuron matrix of normalised responses."""
    plt = _plt()
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5, 4.5))
    m = np.asarray(matrix, np.float64)
    im = ax.imshow(m, cmap="viridis", vmin=min(0, m.min()), vmax=1)
    ax.set_xlabel("neuron")
    ax.set_ylabel("MEI of neuron")
    if neuron_idx is not None and len(neuron_idx) <= 20:
        ax.set_xticks(range(len(neuron_idx)))
        ax.set_xticklabels(neuron_idx, rotation=90, fontsize=7)
        ax.set_yticks(range(len(neuron_idx)))
        ax.set_yticklabels(neuron_idx, fontsize=7)
    fig.colorbar(im, ax=ax, label="response / column max")
    return fig


def training_curves(output, ax=None, title=None):
    """Validation correlation per epoch from train_model's output."""
    plt = _plt()
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.5))
    c = output.get("correlation") if isinstance(output, dict) else None
    if c:
        ax.plot(np.arange(len(c)), c, marker="o", ms=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation correlation")
    if title:
        ax.set_title(title)
    return fig
