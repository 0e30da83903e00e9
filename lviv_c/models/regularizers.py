"""Input-weight regularizers of neuralpredictors (Laplace family), as lviv_c modules.

Every regularizer is a small graph of C ops (conv2d with a fixed filter, square, sums), so it is
captured with the model's loss and replayed by the C trainer."""
import numpy as np

from .. import nn
from ..nn import functional as F
from ..tensor import from_numpy

__all__ = ["laplace", "laplace5x5", "laplace7x7", "gaussian2d", "Laplace", "LaplaceL2", "LaplaceL2norm",
           "LaplaceL1", "GaussianLaplaceL2", "GaussianLaplaceL2Adaptive"]


def laplace():
    """3x3 Laplace filter, shape (1, 1, 3, 3)."""
    return np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], dtype=np.float32)[None, None]


def laplace5x5():
    return np.array([[0, 0, 1, 0, 0], [0, 1, 2, 1, 0], [1, 2, -16, 2, 1], [0, 1, 2, 1, 0], [0, 0, 1, 0, 0]],
                    dtype=np.float32)[None, None]


def laplace7x7():
    return np.array([[0, 0, 1, 1, 1, 0, 0], [0, 1, 3, 3, 3, 1, 0], [1, 3, 0, -7, 0, 3, 1],
                     [1, 3, -7, -24, -7, 3, 1], [1, 3, 0, -7, 0, 3, 1], [0, 1, 3, 3, 3, 1, 0],
                     [0, 0, 1, 1, 1, 0, 0]], dtype=np.float32)[None, None]


def gaussian2d(size, sigma=5, gamma=1, theta=0, center=(0, 0), normalize=True):
    """2-d Gaussian (neuralpredictors' formula), float32 array of shape `size`."""
    sigma_x = sigma
    sigma_y = sigma / gamma
    xmax, ymax = (size, size) if isinstance(size, int) else size
    xmax, ymax = (xmax - 1) / 2, (ymax - 1) / 2
    xmin, ymin = -xmax, -ymax
    (y, x) = np.meshgrid(np.arange(ymin, ymax + 1), np.arange(xmin, xmax + 1))
    y -= center[0]
    x -= center[1]
    x_theta = x * np.cos(theta) + y * np.sin(theta)
    y_theta = -x * np.sin(theta) + y * np.cos(theta)
    g = np.exp(-0.5 * (x_theta ** 2 / sigma_x ** 2 + y_theta ** 2 / sigma_y ** 2))
    if normalize:
        g -= g.min()
        g /= g.max()
    return g.astype(np.float32)


class Laplace(nn.Module):
    """Convolves a stack (N, 1, k, k) with a Laplace filter (buffer `filter`, (1, 1, s, s)); zero
    padding `padding` (None: s // 2)."""

    def __init__(self, padding=None, filter_size=3):
        super().__init__()
        kernels = {3: laplace, 5: laplace5x5, 7: laplace7x7}
        if filter_size not in kernels:
            raise ValueError(f"Laplace: filter_size must be 3, 5 or 7, got {filter_size}")
        self.register_buffer("filter", from_numpy(kernels[filter_size]().copy()))
        self.padding_size = self.filter.shape[-1] // 2 if padding is None else int(padding)

    def forward(self, x):
        return F.conv2d(x, self.filter, None, 1, self.padding_size)


def _flat(x):
    oc, ic, k1, k2 = x.shape
    return x.reshape(oc * ic, 1, k1, k2)


class LaplaceL2(nn.Module):
    """agg(laplace(W)^2) / 2 over all first-layer kernels (agg: mean when avg, else sum)."""

    def __init__(self, padding=None, filter_size=3):
        super().__init__()
        self.laplace = Laplace(padding=padding, filter_size=filter_size)

    def forward(self, x, avg=True):
        lap = self.laplace(_flat(x)).square()
        return (lap.mean() if avg else lap.sum()) * 0.5


class LaplaceL2norm(nn.Module):
    """Normalised Laplace regularizer: agg(laplace(W)^2) / agg(W^2)."""

    def __init__(self, padding=None):
        super().__init__()
        self.laplace = Laplace(padding=padding)

    def forward(self, x, avg=False):
        w = _flat(x)
        lap = self.laplace(w).square()
        w2 = w.square()
        return (lap.mean() / w2.mean()) if avg else (lap.sum() / w2.sum())


class LaplaceL1(nn.Module):
    """agg(|laplace(W)|)."""

    def __init__(self, padding=0):
        super().__init__()
        self.laplace = Laplace(padding=padding)

    def forward(self, x, avg=True):
        lap = self.laplace(_flat(x)).abs()
        return lap.mean() if avg else lap.sum()


class GaussianLaplaceL2(nn.Module):
    """Laplace regularizer with a Gaussian mask (1 - gaussian) for one layer of kernel size `kernel`."""

    def __init__(self, kernel, padding=None):
        super().__init__()
        self.laplace = Laplace(padding=padding)
        self.kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        sigma = min(*self.kernel) / 4
        self.gaussian2d = from_numpy(gaussian2d(size=self.kernel, sigma=sigma))

    def forward(self, x, avg=False):
        w = _flat(x)
        out = self.laplace(w)
        k1, k2 = out.shape[-2:]
        mask = from_numpy(np.ascontiguousarray(1 - np.asarray(self.gaussian2d)[:k1, :k2]).reshape(1, 1, k1, k2))
        if out.is_cuda:  # device placement: the mask follows the weights
            mask = mask.cuda()
        out = (out * mask).square()
        w2 = w.square()
        return (out.mean() / w2.mean()) if avg else (out.sum() / w2.sum())


class GaussianLaplaceL2Adaptive(nn.Module):
    """Like GaussianLaplaceL2 with the Gaussian sized from the weights (sigma: min(k1, k2) / 4)."""

    def __init__(self, padding=None, sigma=None):
        super().__init__()
        self.laplace = Laplace(padding=padding)
        self.sigma = sigma

    def forward(self, x, avg=False):
        oc, ic, k1, k2 = x.shape
        sigma = self.sigma if self.sigma else min(k1, k2) / 4
        w = _flat(x)
        out = self.laplace(w)
        g = gaussian2d(size=(k1, k2), sigma=sigma)
        mask = from_numpy(np.ascontiguousarray(1 - g[:out.shape[-2], :out.shape[-1]]).reshape(1, 1, *out.shape[-2:]))
        if out.is_cuda:  # device placement: the mask follows the weights
            mask = mask.cuda()
        out = (out * mask).square()
        w2 = w.square()
        return (out.mean() / w2.mean()) if avg else (out.sum() / w2.sum())
