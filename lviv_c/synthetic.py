"""Synthetic mouse V1 scans in the course's on-disk layout, with known ground truth.

``make_scan(out_dir)`` writes one scan folder laid out exactly like the course scan
``static20457-5-9-preproc0`` (FileTreeDataset layout: ``config.json``, ``data/<key>/<i>.npy``,
``meta/trials``, ``meta/neurons``, ``meta/statistics``), with the same dtypes, field names, tiers
and statistics, plus a ``ground_truth/`` folder that the dataset reader ignores.

The stimuli are natural-like images (dead leaves mixed with 1/f noise, whole numbers 0..255,
mean ~110, std ~60). The responses come from a ground-truth V1 population:

* simple cells: one oriented, zero-mean Gabor filter, rectified and raised to a power;
* complex cells: energy model of a quadrature Gabor pair (even + odd), raised to a power;
* a fraction of both types is divisively normalised by the local RMS contrast around the
  receptive field, so a nonlinear (CNN) model beats a linear-nonlinear one;
* receptive-field centres follow a smooth (affine) retinotopic map of the neurons' cortical
  positions (``cell_motor_coordinates``, a ~1 mm patch) plus a small scatter;
* expected rate = gain * (baseline + drive), with a log-normal gain (spread of firing rates)
  and a per-neuron baseline (spontaneous rate);
* trial noise is gamma (Poisson-like: variance proportional to the mean rate, non-negative,
  continuous, many near-zero values) plus a rare tiny jitter (tiny negatives occur). Its scale
  is set per neuron so that corr(true rate, single trial) over the image set equals a per-neuron
  ceiling drawn from a Beta distribution (default mean 0.45, which gives a jackknife oracle
  correlation of ~0.37 with 10 repeats; the course scan's is 0.38).

Behaviour and pupil centre are smooth random processes in time order; they do not affect the
responses, so ``ground_truth/mean_rates.npy`` is the full expected response of every trial.

The module needs only NumPy and runs standalone::

    python -m lviv_c.synthetic OUT_DIR [--small] [--n-trials N] [--n-neurons N] [--seed S]
"""
import argparse
import io
import json
import os
import shutil
import sys
import time

import numpy as np

try:
    from .utility.measures import corr
except ImportError:  # run as a file (standalone, NumPy only): the measures module by its path
    import importlib.util as _ilu
    _spec = _ilu.spec_from_file_location(
        "_lviv_c_measures", os.path.join(os.path.dirname(os.path.abspath(__file__)), "utility",
                                         "measures.py"))
    _measures = _ilu.module_from_spec(_spec)
    _spec.loader.exec_module(_measures)
    corr = _measures.corr

__all__ = ["make_scan", "load_ground_truth", "gabor_filters", "scan_name", "data_key",
           "DEFAULTS", "SMALL", "GABOR_PARAM_COLUMNS"]

#: The course scan's size (5993 trials, 5335 neurons, 36x64 images, 100 test images x 10).
DEFAULTS = dict(n_trials=5993, n_neurons=5335, image_shape=(36, 64), n_test_images=100,
                n_repeats=10, n_validation=522)

#: A small scan for tests (generates in well under a second).
SMALL = dict(n_trials=300, n_neurons=50, image_shape=(36, 64), n_test_images=10, n_repeats=5,
             n_validation=40)

#: Columns of ``ground_truth/gabor_params.npy``: centre column (x, pixels), centre row (y, pixels),
#: orientation (radians), spatial frequency (cycles/pixel), phase (radians), envelope sigma
#: (pixels), aspect ratio (envelope width along the stripes / across them, <= 1 means elongated).
GABOR_PARAM_COLUMNS = ("x", "y", "theta", "sf", "phase", "sigma", "aspect")

# Fixed standardisation of the pixels that the model neurons see (close to the image statistics).
_PIX_MEAN = 110.0
_PIX_STD = 60.0
# Block size (images, trials) for the chunked, threaded generation steps. Part of the recipe:
# changing it changes the random numbers drawn for a seed.
_BLOCK = 512


def scan_name(animal_id=60000, session=1, scan_idx=1):
    """Folder name of a scan, like the course's ``static20457-5-9-preproc0``."""
    return f"static{animal_id}-{session}-{scan_idx}-preproc0"


def data_key(path):
    """Data key of a scan folder: ``static20457-5-9-preproc0`` -> ``'20457-5-9-0'``."""
    base = os.path.basename(os.path.normpath(str(path)))
    head, _, pre = base.partition("-preproc")
    return head.replace("static", "", 1) + "-" + pre


# --------------------------------------------------------------------------------------------
# Stimuli
# --------------------------------------------------------------------------------------------

def _pink_noise(rng, n, h, w):
    """n images of 1/f^alpha-amplitude noise (alpha ~ U(0.9, 1.3)), each z-scored. float32."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fy ** 2 + fx ** 2)
    f[0, 0] = 1.0
    alpha = rng.uniform(0.9, 1.3, size=(n, 1, 1))
    amp = f[None] ** (-alpha)
    amp[:, 0, 0] = 0.0
    spec = (rng.standard_normal((n, h, w // 2 + 1)) + 1j * rng.standard_normal((n, h, w // 2 + 1)))
    img = np.fft.irfft2(spec * amp, s=(h, w), axes=(1, 2))
    img -= img.mean(axis=(1, 2), keepdims=True)
    img /= img.std(axis=(1, 2), keepdims=True) + 1e-12
    return img.astype(np.float32)


def _dead_leaves(rng, n, h, w, n_leaves=36, rmin=1.5, rmax=24.0):
    """n dead-leaves images: discs with power-law radii (p(r) ~ r^-3), painted back to front."""
    img = rng.standard_normal((n, 1, 1)).astype(np.float32) * np.ones((1, h, w), np.float32)
    yy = np.arange(h, dtype=np.float32)[None, :, None]
    xx = np.arange(w, dtype=np.float32)[None, None, :]
    # inverse-CDF sampling of p(r) ~ r^-3 on [rmin, rmax]
    u = rng.random((n_leaves, n))
    r = 1.0 / np.sqrt(u * (1.0 / rmax ** 2) + (1.0 - u) * (1.0 / rmin ** 2))
    cx = rng.uniform(-4, w + 4, (n_leaves, n)).astype(np.float32)
    cy = rng.uniform(-4, h + 4, (n_leaves, n)).astype(np.float32)
    val = rng.standard_normal((n_leaves, n)).astype(np.float32)
    r2 = (r ** 2).astype(np.float32)
    for k in range(n_leaves):  # loop over layers, each one vectorised over all images
        d2 = (xx - cx[k][:, None, None]) ** 2 + (yy - cy[k][:, None, None]) ** 2
        np.copyto(img, val[k][:, None, None], where=d2 < r2[k][:, None, None])
    return img


def _make_image_block(rng, n, shape):
    """n natural-like images, float32 whole numbers 0..255, shape (n, h, w)."""
    h, w = shape
    pink = _pink_noise(rng, n, h, w)
    leaves = _dead_leaves(rng, n, h, w)
    leaves -= leaves.mean(axis=(1, 2), keepdims=True)
    leaves /= leaves.std(axis=(1, 2), keepdims=True) + 1e-6
    mix = rng.uniform(0.35, 0.8, size=(n, 1, 1)).astype(np.float32)
    z = mix * leaves + np.sqrt(1 - mix ** 2) * pink
    z /= z.std(axis=(1, 2), keepdims=True) + 1e-6
    # mild positive skew, like natural luminance histograms
    z = z + 0.12 * (z ** 2 - 1.0)
    mean = rng.normal(112.0, 16.0, size=(n, 1, 1))
    std = rng.uniform(42.0, 82.0, size=(n, 1, 1))
    return np.clip(np.rint(mean + std * z), 0, 255).astype(np.float32)


def _make_images(seed_seq, n, shape, pool):
    """n distinct natural-like images (n, h, w) float32. Generated in fixed blocks of _BLOCK
    images, each from its own child seed, on a thread pool: the result depends only on the seed."""
    h, w = shape
    starts = list(range(0, n, _BLOCK))
    seeds = seed_seq.spawn(len(starts) + 1)
    img = np.empty((n, h, w), dtype=np.float32)

    def block(k):
        s = starts[k]
        img[s:s + _BLOCK] = _make_image_block(np.random.default_rng(seeds[k]),
                                              min(_BLOCK, n - s), shape)
    list(pool.map(block, range(len(starts))))
    # distinctness (duplicates are astronomically unlikely; re-draw them if they ever occur)
    extra = np.random.default_rng(seeds[-1])
    while True:
        flat = np.ascontiguousarray(img.reshape(n, -1)).view(np.dtype((np.void, h * w * 4)))
        _, first = np.unique(flat.ravel(), return_index=True)
        if len(first) == n:
            return img
        dup = np.setdiff1d(np.arange(n), first)
        img[dup] = _make_image_block(extra, len(dup), shape)


# --------------------------------------------------------------------------------------------
# Ground-truth population
# --------------------------------------------------------------------------------------------

def gabor_filters(params, shape, phase_offset=0.0, chunk=512):
    """Zero-mean, unit-norm Gabor filters, float32 (n, h, w), from ``params`` (n, 7) with the
    columns ``GABOR_PARAM_COLUMNS``. ``phase_offset=np.pi / 2`` gives the quadrature (odd)
    partners of the stored even filters; a sequence of offsets returns a list of filter sets."""
    offsets = np.atleast_1d(np.asarray(phase_offset, dtype=np.float64))
    params = np.asarray(params, dtype=np.float64)
    h, w = shape
    outs = [np.empty((len(params), h, w), dtype=np.float32) for _ in offsets]
    yy = np.arange(h, dtype=np.float32)[None, :, None]
    xx = np.arange(w, dtype=np.float32)[None, None, :]
    for s in range(0, len(params), chunk):
        p = params[s:s + chunk]
        cx, cy, th, sf, ph, sg, asp = (p[:, j].astype(np.float32)[:, None, None]
                                       for j in range(7))
        dx, dy = xx - cx, yy - cy
        c, sn = np.cos(th), np.sin(th)
        xr = dx * c + dy * sn        # across the stripes
        yr = dy * c - dx * sn        # along the stripes
        env = np.exp(-(xr * xr + (asp * yr) ** 2) / (2 * sg * sg))
        arg = (2 * np.pi) * sf * xr + ph
        esum = env.sum(axis=(1, 2), keepdims=True)
        for out, off in zip(outs, offsets):
            g = env * np.cos(arg + np.float32(off))
            g -= env * (g.sum(axis=(1, 2), keepdims=True) / esum)
            g /= np.sqrt((g * g).sum(axis=(1, 2), keepdims=True)) + np.float32(1e-12)
            out[s:s + chunk] = g
    return outs[0] if np.ndim(phase_offset) == 0 else outs


def _gauss_blur(x, sigma):
    """Gaussian blur of (n, h, w) float32 images, zero outside the image: separable, as two
    large matrix products."""
    n, h, w = x.shape
    gy = np.exp(-0.5 * ((np.arange(h)[:, None] - np.arange(h)[None]) / sigma) ** 2)
    gx = np.exp(-0.5 * ((np.arange(w)[:, None] - np.arange(w)[None]) / sigma) ** 2)
    gy = (gy / gy.sum(axis=1, keepdims=True).max()).astype(np.float32)
    gx = (gx / gx.sum(axis=1, keepdims=True).max()).astype(np.float32)
    y = (x.reshape(n * h, w) @ gx.T).reshape(n, h, w)                # along rows
    y = gy @ np.ascontiguousarray(y.transpose(1, 0, 2)).reshape(h, n * w)   # along columns
    return y.reshape(h, n, w).transpose(1, 0, 2)


def _local_contrast(x, centers_rc, window_sigmas, window_index):
    """RMS contrast of standardised images x (n_img, h, w) in a Gaussian window around each
    neuron's (row, col) centre; window_sigmas lists the few window sizes, window_index picks one
    per neuron. Returns (n_img, n_neurons)."""
    h, w = x.shape[1:]
    out = np.empty((x.shape[0], len(centers_rc)), dtype=np.float64)
    ones = np.ones((1, h, w), dtype=np.float32)
    x = x.astype(np.float32, copy=False)
    r = np.clip(np.rint(centers_rc[:, 0]).astype(int), 0, h - 1)
    c = np.clip(np.rint(centers_rc[:, 1]).astype(int), 0, w - 1)
    for k, s in enumerate(window_sigmas):
        sel = np.flatnonzero(window_index == k)
        if len(sel) == 0:
            continue
        norm = _gauss_blur(ones, s)[0]  # corrects the window weight lost at the borders
        m1 = _gauss_blur(x, s) / norm
        m2 = _gauss_blur(x * x, s) / norm
        var = np.maximum(m2 - m1 ** 2, 0.0)
        out[:, sel] = np.sqrt(var[:, r[sel], c[sel]])
    return out


def _population(rng, n, shape, simple_fraction, normalized_fraction, patch_um):
    """Draw the neurons: cortical positions, retinotopic RF centres, Gabor parameters, types."""
    h, w = shape
    # cortical positions (microns): a patch of ~1 mm, three imaging planes in L2/3
    origin = np.array([rng.uniform(-1500, 1500), rng.uniform(-1500, 1500)])
    pos_xy = origin + rng.uniform(0, patch_um, size=(n, 2))
    planes = 200.0 + 30.0 * np.arange(3) + rng.uniform(-20, 20)
    pos_z = planes[rng.integers(0, 3, n)]
    coords = np.column_stack([pos_xy, pos_z])
    # smooth retinotopic map: affine function of cortical position + scatter (pixels)
    rel = (pos_xy - origin - patch_um / 2) / patch_um              # in [-0.5, 0.5]
    ang = rng.uniform(-np.pi / 6, np.pi / 6)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    scale = np.diag([0.5 * w, 0.5 * h])                               # 1 mm ~ half the image
    center = np.array([w / 2 + rng.uniform(-0.08, 0.08) * w, h / 2 + rng.uniform(-0.08, 0.08) * h])
    rf_xy = center + rel @ (scale @ rot).T + rng.normal(0, 1.2, size=(n, 2))
    rf_xy[:, 0] = np.clip(rf_xy[:, 0], 2, w - 3)
    rf_xy[:, 1] = np.clip(rf_xy[:, 1], 2, h - 3)
    retinotopy = dict(origin_um=origin.tolist(), patch_um=patch_um, angle_rad=float(ang),
                      scale_px_per_patch=[0.5 * w, 0.5 * h], center_px=center.tolist(),
                      scatter_px=1.2)
    # Gabor parameters
    sigma = rng.uniform(2.0, 4.5, n)
    sf = rng.uniform(0.22, 0.45, n) / sigma
    params = np.column_stack([rf_xy[:, 0], rf_xy[:, 1], rng.uniform(0, np.pi, n), sf,
                              rng.uniform(0, 2 * np.pi, n), sigma, rng.uniform(0.5, 1.0, n)])
    cell_type = np.where(rng.random(n) < simple_fraction, "simple", "complex").astype("<U8")
    normalized = rng.random(n) < normalized_fraction
    return coords, params, cell_type, normalized, retinotopy


def _drive(rng, x, params, cell_type, normalized):
    """Stimulus-driven part of the responses (n_img, n_neurons) float32, mean 1 per neuron, to
    standardised images x (n_img, h, w); also the even filters and the nonlinearity parameters."""
    n_img, h, w = x.shape
    n = len(params)
    X = x.reshape(n_img, h * w).astype(np.float32, copy=False)
    cplx = np.flatnonzero(cell_type == "complex")
    simp = np.flatnonzero(cell_type == "simple")
    even = np.empty((n, h, w), dtype=np.float32)
    even[simp] = gabor_filters(params[simp], (h, w))
    even[cplx], odd = gabor_filters(params[cplx], (h, w), phase_offset=(0.0, np.pi / 2))
    thr = rng.uniform(-0.4, 0.6, n).astype(np.float32)
    expo_s = rng.uniform(1.0, 2.0, n).astype(np.float32)
    expo_c = rng.uniform(0.5, 1.0, n).astype(np.float32)
    c50 = rng.uniform(0.2, 1.0, n).astype(np.float32)
    out = np.empty((n_img, n), dtype=np.float32)
    # simple cells: rectified power of the linear drive, threshold in units of the drive's sd
    if len(simp):
        d = X @ even[simp].reshape(len(simp), h * w).T
        d /= d.std(axis=0) + np.float32(1e-12)
        d -= thr[simp]
        np.maximum(d, 0, out=d)
        out[:, simp] = d ** expo_s[simp]
        del d
    # complex cells: energy of the quadrature pair, to a power
    if len(cplx):
        e = X @ even[cplx].reshape(len(cplx), h * w).T
        e *= e
        o = X @ odd.reshape(len(cplx), h * w).T
        o *= o
        e += o
        del o
        e /= e.mean(axis=0) + np.float32(1e-12)
        out[:, cplx] = e ** expo_c[cplx]
        del e
    # divisive normalisation by the local RMS contrast (window ~2x the RF size)
    windows = (4.0, 6.0, 9.0)
    widx = np.abs(2.0 * params[:, 5][:, None] - np.array(windows)[None]).argmin(axis=1)
    sel = np.flatnonzero(normalized)
    if len(sel):
        rms = _local_contrast(x, params[sel][:, [1, 0]], windows, widx[sel]).astype(np.float32)
        rms /= np.median(rms, axis=0) + np.float32(1e-12)
        rms += c50[sel]
        out[:, sel] /= rms
        del rms
    out /= out.mean(axis=0) + np.float32(1e-12)
    extra = dict(threshold=np.where(cell_type == "simple", thr, np.nan),
                 exponent=np.where(cell_type == "simple", expo_s, expo_c),
                 c50=np.where(normalized, c50, np.nan))
    return out, even, extra


def _rates_and_noise(rng, drive, ceiling, shape_range=(0.3, 1.0)):
    """Turn the drive (mean 1 per neuron) into expected rates = gain * (baseline + drive) and a
    per-neuron gamma scale theta (noise variance = theta * rate).

    theta is set so that corr(rate, single trial) over the images equals ``ceiling`` exactly in
    expectation: E[noise var] = theta * mean(rate) = var(rate) * (1 / ceiling^2 - 1). The
    baseline (spontaneous rate) is chosen per neuron so that the mean gamma shape
    mean(rate) / theta is near a target in ``shape_range`` (low-ceiling neurons get a weak
    modulation on a higher baseline instead of extremely heavy-tailed noise), floored at 0.02.
    """
    n = drive.shape[1]
    gain = np.exp(rng.normal(-0.5, 0.7, n))
    k = rng.uniform(*shape_range, n)
    c2 = ceiling ** 2
    cv_drive = drive.std(axis=0, dtype=np.float64)          # the drive has mean 1
    cv_need = np.sqrt(c2 / (k * (1.0 - c2)))
    base = np.maximum(cv_drive / cv_need - 1.0, 0.02)
    rates = drive + base.astype(np.float32)
    rates *= gain.astype(np.float32)
    s = rates.var(axis=0, dtype=np.float64)
    m = rates.mean(axis=0, dtype=np.float64)
    theta = s * (1.0 / c2 - 1.0) / np.maximum(m, 1e-12)
    return rates, theta, dict(gain=gain, baseline=base * gain, noise_shape_mean=m / theta)


def _trial_noise(seed_seq, mean_rates, theta, pool):
    """Single-trial responses, float64 (n_trials, n): theta * Gamma(shape=rate/theta), plus a
    jitter of ~2-3e-3 theta on ~5% of the entries (tiny negatives occur). Drawn in fixed blocks
    of _BLOCK trials, each from its own child seed, on a thread pool, so the result depends
    only on the seed."""
    n = len(mean_rates)
    starts = list(range(0, n, _BLOCK))
    seeds = seed_seq.spawn(len(starts))
    out = np.empty(mean_rates.shape, dtype=np.float64)
    jit = (1e-3 * theta).astype(np.float32)

    def block(k):
        s = starts[k]
        rng = np.random.default_rng(seeds[k])
        y = rng.standard_gamma(mean_rates[s:s + _BLOCK] / theta)
        y *= theta
        j = rng.standard_normal(y.shape, dtype=np.float32)
        j[np.abs(j) < 2.0] = 0.0          # nudge ~5% of the entries by ~2-3e-3 theta
        j *= jit
        y += j
        out[s:s + _BLOCK] = y
    list(pool.map(block, range(len(starts))))
    return out


def _corr_cols(a, b):
    """Pearson correlation per column (lviv_c.utility.measures.corr with eps=0): NaN where a
    column is constant, so the ceilings average (nanmean) over neurons that respond."""
    return corr(a, b, axis=0, eps=0.0, nan="propagate")


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

def _npy_header(row):
    bio = io.BytesIO()
    np.lib.format.write_array_header_1_0(bio, np.lib.format.header_data_from_array_1_0(row))
    return bio.getvalue()


def _write_rows(folder, arr, start=0, stop=None):
    """Write arr[i] to folder/<i>.npy for i in [start, stop): valid .npy files (the header is
    built once; one open/write/close per file)."""
    os.makedirs(folder, exist_ok=True)
    header = _npy_header(arr[0])
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
    stop = len(arr) if stop is None else stop
    for i in range(start, stop):
        fd = os.open(os.path.join(folder, f"{i}.npy"), flags, 0o644)
        try:
            os.write(fd, header + arr[i].tobytes())
        finally:
            os.close(fd)


def _write_data(path, arrays, n_threads=8):
    """Write every data/<key>/<i>.npy with a few threads (file creation is syscall-bound and
    releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor
    jobs = []
    for key, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        folder = os.path.join(path, "data", key)
        os.makedirs(folder, exist_ok=True)
        step = max(1, -(-len(arr) // n_threads))
        jobs += [(folder, arr, s, min(len(arr), s + step)) for s in range(0, len(arr), step)]
    with ThreadPoolExecutor(n_threads) as ex:
        for f in [ex.submit(_write_rows, *j) for j in jobs]:
            f.result()


def _save(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, arr, allow_pickle=False)


def _stats(arr, axis):
    arr = np.asarray(arr, dtype=np.float64)
    return dict(mean=arr.mean(axis=axis), std=arr.std(axis=axis), min=arr.min(axis=axis),
                max=arr.max(axis=axis), median=np.median(arr, axis=axis))


def _condition_hashes(rng, n):
    """n distinct 20-character base64-like strings (like the real condition_hash), <U64."""
    alphabet = np.frombuffer(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", dtype=np.uint8)
    while True:
        codes = alphabet[rng.integers(0, 64, size=(n, 20))].astype("<u4")
        s = np.ascontiguousarray(codes).view("<U20").reshape(n).astype("<U64")
        if len(np.unique(s)) == n:
            return s


def _behavior(rng, n):
    """Smooth behaviour traces in time order: pupil dilation, its derivative, running speed;
    and the pupil centre (x, y)."""
    def ar1(shape, rho):
        e = rng.standard_normal(shape)
        # AR(1) by a geometric-decay FFT convolution (vectorised, no loop over trials)
        L = shape[0]
        k = rho ** np.arange(L)
        nfft = 1 << int(np.ceil(np.log2(2 * L)))
        y = np.fft.irfft(np.fft.rfft(e, nfft, axis=0) * np.fft.rfft(k, nfft)[:, None], nfft,
                         axis=0)[:L]
        return y * np.sqrt(1 - rho ** 2)
    slow = ar1((n, 3), 0.97)
    pupil = np.clip(18.0 + 6.0 * slow[:, 0], 3.0, None)
    dpupil = np.gradient(pupil)
    running = np.maximum(8.0 * slow[:, 1] - 2.0, 0.0) ** 1.3 + rng.normal(0, 0.02, n)
    behavior = np.column_stack([pupil, dpupil, running])
    pc = np.column_stack([320.0 + 4.0 * ar1((n, 1), 0.9)[:, 0] + 0.3 * slow[:, 2],
                          240.0 + 3.0 * ar1((n, 1), 0.9)[:, 0]])
    return behavior.astype(np.float64), pc.astype(np.float64)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

def make_scan(out_dir, n_trials=5993, n_neurons=5335, image_shape=(36, 64), n_test_images=100,
              n_repeats=10, n_validation=522, seed=0, name=None, progress=True, *,
              simple_fraction=0.45, normalized_fraction=0.3, ceiling_mean=0.45,
              ceiling_concentration=10.0, patch_um=1000.0, animal_id=60000, session=1,
              scan_idx=1, ground_truth=True, overwrite=False):
    """Write a synthetic scan folder ``<out_dir>/<name>`` and return its path.

    Tiers: ``test`` = ``n_test_images`` images x ``n_repeats`` trials of the identical image,
    ``validation`` = ``n_validation`` unique images, ``train`` = the remaining trials (unique
    images). No image is shared between tiers; file indices are shuffled across tiers.

    ``ceiling_mean`` / ``ceiling_concentration``: per-neuron noise ceilings
    corr(true rate, single trial) ~ Beta(mean, concentration). ``simple_fraction``: fraction of
    simple cells (the rest are complex). ``normalized_fraction``: fraction (of both types) that is
    divisively normalised. ``ground_truth=False`` skips ``ground_truth/`` (faster, smaller).
    ``overwrite=True`` replaces an existing scan folder of the same name.
    """
    t0 = time.perf_counter()

    def say(msg):
        if progress:
            print(f"[synthetic {time.perf_counter() - t0:6.2f}s] {msg}", file=sys.stderr,
                  flush=True)

    h, w = image_shape
    n_test_trials = n_test_images * n_repeats
    n_train = n_trials - n_test_trials - n_validation
    if n_train < 1 or n_test_images < 1 or n_repeats < 1 or n_validation < 0:
        raise ValueError("need n_trials > n_test_images * n_repeats + n_validation")
    if not 1 <= n_neurons <= 65535:
        raise ValueError("n_neurons must fit uint16 unit ids (1..65535)")
    if not (0 <= animal_id <= 65535 and 0 <= session <= 255 and 0 <= scan_idx <= 255):
        raise ValueError("animal_id must fit uint16, session and scan_idx uint8 (neurons meta)")
    name = name or scan_name(animal_id, session, scan_idx)
    path = os.path.join(str(out_dir), name)
    if os.path.exists(path):
        if not overwrite:
            raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
        if os.listdir(path) and not os.path.exists(os.path.join(path, "config.json")):
            raise FileExistsError(f"{path} is not a scan folder; refusing to replace it")
    # written into a hidden sibling folder and renamed into place when complete: a failure or
    # Ctrl-C leaves neither a partial scan nor a lost old one
    final = path
    os.makedirs(str(out_dir), exist_ok=True)
    import tempfile
    path = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=str(out_dir))
    old_umask = os.umask(0)
    os.umask(old_umask)
    os.chmod(path, 0o777 & ~old_umask)

    ss = np.random.SeedSequence(seed)
    ss_img, ss_pop, ss_model, ss_noise, ss_meta = ss.spawn(5)
    r_pop, r_model, r_noise, r_meta = (np.random.default_rng(s)
                                       for s in (ss_pop, ss_model, ss_noise, ss_meta))
    from concurrent.futures import ThreadPoolExecutor
    pool = ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)))
    try:
        # --- unique images: [0, n_test_images) test, then validation, then train
        n_u = n_test_images + n_validation + n_train
        u_tier = np.repeat(np.array(["test", "validation", "train"], dtype="<U10"),
                           [n_test_images, n_validation, n_train])
        images_u = _make_images(ss_img, n_u, (h, w), pool)
        say(f"{n_u} images")

        # --- trials: a time order (trial_idx) and a shuffled file order
        per_trial_u = np.concatenate([np.repeat(np.arange(n_test_images), n_repeats),
                                      np.arange(n_test_images, n_u)])
        time_order_u = per_trial_u[r_meta.permutation(n_trials)]     # image shown at time t
        trial_idx = r_meta.permutation(n_trials).astype(np.int64)    # file i -> time position
        img_of_file = time_order_u[trial_idx]
        tiers = u_tier[img_of_file]

        # --- population and expected rates to every unique image
        coords, params, cell_type, normalized, retino = _population(
            r_pop, n_neurons, (h, w), simple_fraction, normalized_fraction, patch_um)
        x = (images_u - _PIX_MEAN) / _PIX_STD
        drive_u, even, extra = _drive(r_model, x, params, cell_type, normalized)
        del x
        say(f"{n_neurons} neurons, expected rates")

        # --- noise: gamma with per-neuron scale theta, set by the per-neuron ceiling
        a = ceiling_mean * ceiling_concentration
        b = (1 - ceiling_mean) * ceiling_concentration
        ceiling = np.clip(r_noise.beta(a, b, n_neurons), 0.02, 0.97)
        rates_u, theta, extra2 = _rates_and_noise(r_model, drive_u, ceiling)
        extra.update(extra2)
        del drive_u
        mean_rates = rates_u[img_of_file]                              # (n_trials, n) float32
        responses = _trial_noise(ss_noise, mean_rates, theta, pool)    # (n_trials, n) float64
        say("responses")

        images = images_u[img_of_file][:, None]                            # (n_trials, 1, h, w)
        beh_t, pc_t = _behavior(r_meta, n_trials)
        behavior, pupil_center = beh_t[trial_idx], pc_t[trial_idx]

        # --- data
        with open(os.path.join(_mk(path), "config.json"), "w") as f:
            json.dump({"links": {"targets": "responses", "inputs": "images"}}, f)
        _write_data(path, dict(images=images, responses=responses, behavior=behavior,
                               pupil_center=pupil_center))
        say("data files")

        # --- meta/trials
        image_ids_u = (r_meta.choice(max(20 * n_u, 100000), size=n_u, replace=False) + 1)
        hashes_u = _condition_hashes(r_meta, n_u)
        pre_blank_t = np.round(r_meta.uniform(0.3, 0.5, n_trials), 3)
        present = 0.5
        gap_t = r_meta.uniform(0.01, 0.05, n_trials)
        t_on = np.cumsum(pre_blank_t + present + gap_t) - present - gap_t   # stimulus onset (s)
        flips_t = (12345 + np.rint(t_on * 60.0)).astype(np.int64)
        start = np.datetime64("2019-05-14T10:21:07.000000")
        ts_t = np.char.replace(np.datetime_as_string(
            start + np.rint(t_on * 1e6).astype("timedelta64[us]"), unit="us"), "T", " ")
        trials = dict(
            tiers=tiers.astype("<U10"),
            frame_image_id=image_ids_u[img_of_file].astype(np.int64),
            frame_image_class=np.full(n_trials, "imagenet", dtype="<U64"),
            condition_hash=hashes_u[img_of_file].astype("<U64"),
            trial_idx=trial_idx,
            animal_id=np.full(n_trials, animal_id, dtype=np.int64),
            session=np.full(n_trials, session, dtype=np.int64),
            scan_idx=np.full(n_trials, scan_idx, dtype=np.int64),
            frame_last_flip=flips_t[trial_idx],
            frame_pre_blank_period=pre_blank_t[trial_idx].astype(np.float64),
            frame_presentation_time=np.full(n_trials, present, dtype=np.float64),
            frame_trial_ts=ts_t[trial_idx].astype("<U32"),
        )
        for k, v in trials.items():
            _save(os.path.join(path, "meta", "trials", k + ".npy"), v)

        # --- meta/neurons
        top = min(65535, max(n_neurons, int(np.ceil(1.1 * n_neurons))))
        unit_ids = np.sort(r_meta.choice(top, size=n_neurons, replace=False) + 1).astype(np.uint16)
        neurons = dict(
            unit_ids=unit_ids,
            animal_ids=np.full(n_neurons, animal_id, dtype=np.uint16),
            sessions=np.full(n_neurons, session, dtype=np.uint8),
            scan_idx=np.full(n_neurons, scan_idx, dtype=np.uint8),
            area=np.full(n_neurons, "V1", dtype="<U2"),
            layer=np.full(n_neurons, "L2/3", dtype="<U4"),
            cell_motor_coordinates=coords.astype(np.float64),
        )
        for k, v in neurons.items():
            _save(os.path.join(path, "meta", "neurons", k + ".npy"), v)

        # --- meta/statistics (train tier only; `all` and `stimulus_frame` agree)
        tr = tiers == "train"
        stats = dict(images=_stats(images[tr], axis=None), responses=_stats(responses[tr], axis=0),
                     behavior=_stats(behavior[tr], axis=0),
                     pupil_center=_stats(pupil_center[tr], axis=0))
        for key, st in stats.items():
            for sub in ("all", "stimulus_frame"):
                for stat, v in st.items():
                    _save(os.path.join(path, "meta", "statistics", key, sub, stat + ".npy"),
                          np.asarray(v, dtype=np.float64))
        say("meta")

        # --- ground truth and achieved ceilings
        ceil_tier = {}
        for tier in ("train", "validation", "test"):
            m = tiers == tier
            if m.sum() > 2:
                ceil_tier[tier] = float(np.nanmean(_corr_cols(mean_rates[m], responses[m])))
        # jackknife oracle on the test tier (leave-one-repeat-out mean of the other repeats)
        te = np.flatnonzero(tiers == "test")
        te = te[np.argsort(img_of_file[te], kind="stable")]
        y = responses[te].reshape(n_test_images, n_repeats, n_neurons)
        oracle = None
        if n_repeats > 1:
            loo = (y.sum(axis=1, keepdims=True) - y) / (n_repeats - 1)
            oracle = float(np.nanmean(_corr_cols(y.reshape(-1, n_neurons),
                                                 loo.reshape(-1, n_neurons))))
        info = dict(
            generator="lviv_c.synthetic", seed=seed, name=name, data_key=data_key(final),
            n_trials=n_trials, n_neurons=n_neurons, image_shape=[h, w],
            n_test_images=n_test_images, n_repeats=n_repeats, n_validation=n_validation,
            n_train=int(n_train), simple_fraction=simple_fraction,
            normalized_fraction=normalized_fraction, ceiling_mean=ceiling_mean,
            ceiling_concentration=ceiling_concentration, patch_um=patch_um,
            pixel_standardisation=dict(mean=_PIX_MEAN, std=_PIX_STD), retinotopy=retino,
            gabor_param_columns=list(GABOR_PARAM_COLUMNS),
            n_simple=int((cell_type == "simple").sum()),
            n_complex=int((cell_type == "complex").sum()),
            n_normalized=int(normalized.sum()),
            noise=("responses = theta * Gamma(shape=rate/theta) + 1e-3 theta * z * (|z| > 2), "
                   "z ~ N(0, 1); rate = gain * (baseline + drive)"),
            target_ceiling_mean=float(ceiling.mean()),
            ceiling_per_tier=ceil_tier,
            test_oracle_jackknife=oracle,
            behavior_affects_responses=False,
        )
        if ground_truth:
            gt = os.path.join(path, "ground_truth")
            _save(os.path.join(gt, "mean_rates.npy"), mean_rates.astype(np.float32))
            _save(os.path.join(gt, "filters.npy"), even.astype(np.float32))
            _save(os.path.join(gt, "cell_type.npy"), cell_type.astype("<U8"))
            _save(os.path.join(gt, "normalized.npy"), normalized)
            _save(os.path.join(gt, "rf_center.npy"), params[:, :2].astype(np.float64))
            _save(os.path.join(gt, "gabor_params.npy"), params.astype(np.float64))
            _save(os.path.join(gt, "ceiling.npy"), ceiling.astype(np.float64))
            _save(os.path.join(gt, "noise_scale.npy"), theta.astype(np.float64))
            for k, v in extra.items():
                _save(os.path.join(gt, k + ".npy"), np.asarray(v, dtype=np.float64))
            with open(os.path.join(gt, "params.json"), "w") as f:
                json.dump(info, f, indent=1)
        _publish(path, final)
        path = None
        say(f"done: {final}  ceilings {ceil_tier}  test oracle {oracle}")
        return final
    finally:
        pool.shutdown()
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)


def _publish(tmp, final):
    """Rename the complete scan ``tmp`` to ``final``, replacing an old scan there."""
    old = None
    if os.path.exists(final):
        old = os.path.join(os.path.dirname(final), "." + os.path.basename(final) + ".old-" +
                           os.path.basename(tmp).rsplit("-", 1)[-1])
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        if old is not None:
            os.rename(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _mk(path):
    os.makedirs(path, exist_ok=True)
    return path


def load_ground_truth(scan_path, mmap=False):
    """Read ``<scan>/ground_truth/``: a dict of its arrays (``mean_rates`` (n_trials, n_neurons)
    float32 in file-index order, ``filters`` (n_neurons, h, w) float32 even Gabors,
    ``cell_type`` <U8 'simple'/'complex', ``normalized`` bool, ``rf_center`` (n, 2) as (x=column,
    y=row) pixels, ``gabor_params`` (n, 7), ``ceiling`` (n,) target corr(true rate, trial),
    ``noise_scale`` ...) plus ``params`` (the generation parameters and achieved ceilings)."""
    gt = os.path.join(str(scan_path), "ground_truth")
    if not os.path.isdir(gt):
        raise FileNotFoundError(f"no ground_truth/ folder in {scan_path}")
    out = {}
    for fn in sorted(os.listdir(gt)):
        if fn.endswith(".npy"):
            out[fn[:-4]] = np.load(os.path.join(gt, fn), allow_pickle=False,
                                   mmap_mode="r" if mmap else None)
    with open(os.path.join(gt, "params.json")) as f:
        out["params"] = json.load(f)
    return out


def make_sensorium_scans(out_dir, n_scans=2, **kwargs):
    """Synthetic scans in the Sensorium 2022 layout: several scans, behavior that modulates the
    true rates, eye movements that shift the receptive fields, with ground truth. See
    ``lviv_c.synthetic_sensorium.make_sensorium_scans`` for the arguments."""
    from .synthetic_sensorium import make_sensorium_scans as make
    return make(out_dir, n_scans=n_scans, **kwargs)


def _main(argv=None):
    p = argparse.ArgumentParser(prog="python -m lviv_c.synthetic",
                                description="Write a synthetic mouse V1 scan (course layout).")
    p.add_argument("out_dir")
    p.add_argument("--small", action="store_true", help="small scan (tests, demos)")
    p.add_argument("--n-trials", type=int)
    p.add_argument("--n-neurons", type=int)
    p.add_argument("--n-test-images", type=int)
    p.add_argument("--n-repeats", type=int)
    p.add_argument("--n-validation", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name")
    p.add_argument("--no-ground-truth", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    kw = dict(SMALL if a.small else DEFAULTS)
    for k in ("n_trials", "n_neurons", "n_test_images", "n_repeats", "n_validation"):
        if getattr(a, k) is not None:
            kw[k] = getattr(a, k)
    path = make_scan(a.out_dir, seed=a.seed, name=a.name, progress=not a.quiet,
                     ground_truth=not a.no_ground_truth, overwrite=a.overwrite, **kw)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
