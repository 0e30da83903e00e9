"""Synthetic scans in the Sensorium 2022 layout, with ground truth in which behavior and eye
movements matter.

``make_sensorium_scans(out_dir, n_scans=2, ...)`` writes ``n_scans`` folders named like the
Sensorium data (``static<animal>-<session>-<scan>-GrayImageNet-synthetic``): FileTreeDataset
layout with ``data/{images,responses,behavior,pupil_center}``, ``meta/trials`` (tiers,
frame_image_id, frame_image_class, trial_idx), ``meta/neurons`` (unit_ids, animal_ids, sessions,
scan_idx, area, layer, cell_motor_coordinates) and ``meta/statistics`` for all four keys, plus
``ground_truth/`` (ignored by the readers).

The population is the course generator's (lviv_c.synthetic: Gabor simple and complex cells on a
retinotopic map, some divisively normalised), with two additions:

* eye movements: each trial's pupil center (x, y) maps linearly onto a shift of the whole
  visual field, ``shift_px = (pupil_center - mean) / std @ M`` (``ground_truth/shift_matrix.npy``);
  a neuron whose receptive field sits at r reads the image at r + shift (the shift per trial is
  ``ground_truth/shifts_px.npy``, columns x, y in pixels of the stored image);
* behavior: the expected rate is ``gain(behavior) * (baseline + drive)`` with a per-neuron
  log-gain linear in the z-scored (clipped at +-3) running speed and pupil dilation
  (``ground_truth/behavior_weights.npy``, (n_neurons, 3) over the three behavior columns).

``ground_truth/mean_rates.npy`` is every trial's expected response (trial order = file order);
``ground_truth/mean_rates_no_behavior_no_shift.npy`` the same without both effects.
"""
import json
import os
import shutil

import numpy as np

from .synthetic import (_PIX_MEAN, _PIX_STD, _behavior, _drive, _make_images, _mk, _population, _save, _stats,
                        _write_data)

__all__ = ["make_sensorium_scans", "sensorium_scan_name", "SENSORIUM_SMALL", "load_sensorium_ground_truth"]

#: sizes of a small scan for tests
SENSORIUM_SMALL = dict(n_trials=600, n_neurons=60, image_shape=(36, 64), n_test_images=10, n_repeats=5,
                       n_validation=60)


def sensorium_scan_name(animal_id, session, scan_idx):
    return f"static{animal_id}-{session}-{scan_idx}-GrayImageNet-synthetic"


def _shift_images(x, shifts):
    """x (n, h, w); out[t, y, x] = x[t, y + dy_t, x + dx_t] bilinearly (edge values outside)."""
    n, h, w = x.shape
    yy = np.arange(h)[None, :, None] + shifts[:, 1][:, None, None]
    xx = np.arange(w)[None, None, :] + shifts[:, 0][:, None, None]
    yy = np.clip(yy, 0, h - 1)
    xx = np.clip(xx, 0, w - 1)
    y0 = np.clip(np.floor(yy).astype(np.int64), 0, h - 2)
    x0 = np.clip(np.floor(xx).astype(np.int64), 0, w - 2)
    fy = (yy - y0).astype(np.float32)
    fx = (xx - x0).astype(np.float32)
    t = np.arange(n)[:, None, None]
    y0b = np.broadcast_to(y0, (n, h, w))
    x0b = np.broadcast_to(x0, (n, h, w))
    a = x[t, y0b, x0b]
    b = x[t, y0b, x0b + 1]
    c = x[t, y0b + 1, x0b]
    d = x[t, y0b + 1, x0b + 1]
    return ((a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy).astype(np.float32)


def _one_scan(path, seed, n_trials, n_neurons, image_shape, n_test_images, n_repeats, n_validation, animal_id,
              session, scan_idx, shift_std_px, behavior_strength, noise_scale, pool):
    h, w = image_shape
    ss = np.random.SeedSequence(seed)
    ss_img, ss_pop, ss_model, ss_noise, ss_meta = ss.spawn(5)
    r_pop, r_model, r_noise, r_meta = (np.random.default_rng(s) for s in (ss_pop, ss_model, ss_noise, ss_meta))
    n_test_trials = n_test_images * n_repeats
    n_train = n_trials - n_test_trials - n_validation
    if n_train < 1:
        raise ValueError("need n_trials > n_test_images * n_repeats + n_validation")
    n_u = n_test_images + n_validation + n_train
    u_tier = np.repeat(np.array(["test", "validation", "train"], dtype="<U10"), [n_test_images, n_validation, n_train])
    images_u = _make_images(ss_img, n_u, (h, w), pool)
    per_trial_u = np.concatenate([np.repeat(np.arange(n_test_images), n_repeats), np.arange(n_test_images, n_u)])
    img_of_file = per_trial_u[r_meta.permutation(n_trials)]
    tiers = u_tier[img_of_file]
    behavior, pupil_center = _behavior(r_meta, n_trials)

    # eye movements -> field shift (pixels), a random linear map of the z-scored pupil center
    pcz = (pupil_center - pupil_center.mean(0)) / pupil_center.std(0)
    ang = r_model.uniform(-np.pi / 8, np.pi / 8)
    M = shift_std_px * np.array([[np.cos(ang), np.sin(ang)], [-np.sin(ang), np.cos(ang)]])
    shifts = pcz @ M                                                   # (n_trials, 2): dx, dy

    coords, params, cell_type, normalized, _ = _population(r_pop, n_neurons, (h, w), 0.45, 0.3, 1000.0)
    # keep the receptive fields away from the border so that the shifted reads stay inside
    m = 2 + 2.5 * shift_std_px
    params[:, 0] = np.clip(params[:, 0], m, w - 1 - m)
    params[:, 1] = np.clip(params[:, 1], m, h - 1 - m)
    x = (images_u[img_of_file] - _PIX_MEAN) / _PIX_STD
    child = ss_model.spawn(1)[0]  # the same nonlinearity parameters for both drives
    drive_plain, _, _ = _drive(np.random.default_rng(child), x, params, cell_type, normalized)
    drive, _, _ = _drive(np.random.default_rng(child), _shift_images(x, shifts), params, cell_type, normalized)
    del x
    base = r_model.uniform(0.1, 0.4, n_neurons)
    gain0 = np.exp(r_model.normal(-0.3, 0.4, n_neurons))
    bz = np.clip((behavior - behavior.mean(0)) / behavior.std(0), -3, 3)
    wts = np.zeros((n_neurons, 3))
    wts[:, 0] = r_model.normal(0.0, 0.15, n_neurons) * behavior_strength         # pupil dilation
    wts[:, 2] = np.abs(r_model.normal(0.3, 0.1, n_neurons)) * behavior_strength  # running speed
    log_gain = bz @ wts.T
    rates = (gain0 * np.exp(log_gain) * (base + drive)).astype(np.float32)
    rates_plain = (gain0 * (base + drive_plain)).astype(np.float32)
    # gamma noise, variance = theta * rate (Poisson-like), theta per neuron
    theta = noise_scale * rates.mean(0)
    responses = r_noise.standard_gamma(rates / theta) * theta

    images = images_u[img_of_file][:, None].astype(np.float32)
    with open(os.path.join(_mk(path), "config.json"), "w") as f:
        json.dump({"links": {}}, f)
    _write_data(path, dict(images=images, responses=responses.astype(np.float32),
                           behavior=behavior.astype(np.float32), pupil_center=pupil_center.astype(np.float32)))
    mt = os.path.join(path, "meta", "trials")
    image_ids_u = r_meta.choice(100000, size=n_u, replace=False) + 1
    _save(os.path.join(mt, "tiers.npy"), tiers.astype("<U10"))
    _save(os.path.join(mt, "frame_image_id.npy"), image_ids_u[img_of_file].astype(np.int64))
    _save(os.path.join(mt, "frame_image_class.npy"), np.full(n_trials, "imagenet", dtype="<U16"))
    _save(os.path.join(mt, "trial_idx.npy"), np.arange(n_trials, dtype=np.int64))
    mn = os.path.join(path, "meta", "neurons")
    _save(os.path.join(mn, "unit_ids.npy"), np.arange(1, n_neurons + 1, dtype=np.uint16))
    _save(os.path.join(mn, "animal_ids.npy"), np.full(n_neurons, animal_id, dtype=np.uint16))
    _save(os.path.join(mn, "sessions.npy"), np.full(n_neurons, session, dtype=np.uint8))
    _save(os.path.join(mn, "scan_idx.npy"), np.full(n_neurons, scan_idx, dtype=np.uint8))
    _save(os.path.join(mn, "area.npy"), np.full(n_neurons, "V1", dtype="<U4"))
    _save(os.path.join(mn, "layer.npy"), np.full(n_neurons, "L2/3", dtype="<U4"))
    _save(os.path.join(mn, "cell_motor_coordinates.npy"), coords.astype(np.float64))
    ms = os.path.join(path, "meta", "statistics")
    train = tiers == "train"
    for key, arr, axis in (("images", images, None), ("responses", responses, 0), ("behavior", behavior, 0),
                           ("pupil_center", pupil_center, 0)):
        for src, sel in (("all", slice(None)), ("stimulus_frames", train)):
            for stat, val in _stats(arr[sel], axis).items():
                _save(os.path.join(ms, key, src, stat + ".npy"), np.asarray(val, dtype=np.float64))
    gt = os.path.join(path, "ground_truth")
    _save(os.path.join(gt, "mean_rates.npy"), rates)
    _save(os.path.join(gt, "mean_rates_no_behavior_no_shift.npy"), rates_plain)
    _save(os.path.join(gt, "shifts_px.npy"), shifts.astype(np.float64))
    _save(os.path.join(gt, "shift_matrix.npy"), M)
    _save(os.path.join(gt, "behavior_weights.npy"), wts)
    _save(os.path.join(gt, "gabor_params.npy"), params)
    return path


def make_sensorium_scans(out_dir, n_scans=2, n_trials=2000, n_neurons=500, image_shape=(36, 64), n_test_images=50,
                         n_repeats=10, n_validation=200, seed=0, shift_std_px=2.0, behavior_strength=1.0,
                         noise_scale=0.5, animal_id=61000, overwrite=False):
    """Write ``n_scans`` synthetic Sensorium-layout scans under ``out_dir`` and return their paths.

    Each scan has its own neurons, images, behavior and eye movements (seeded by ``seed`` and the
    scan index); data keys '<animal_id + i>-1-1'. ``shift_std_px``: std of the eye-movement shift
    of the visual field (pixels of the stored images); ``behavior_strength``: scales the
    behavior's effect on the log-gain (0: none); ``noise_scale``: gamma noise variance / rate, in
    units of the neuron's mean rate. ``image_shape`` is the stored size (Sensorium's is 144x256;
    load with ``scale`` to downsample)."""
    if n_scans < 1:
        raise ValueError("n_scans must be at least 1")
    from concurrent.futures import ThreadPoolExecutor
    paths = []
    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        for i in range(n_scans):
            path = os.path.join(os.fspath(out_dir), sensorium_scan_name(animal_id + i, 1, 1))
            if os.path.exists(path):
                if not overwrite:
                    raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
                if os.listdir(path) and not os.path.exists(os.path.join(path, "config.json")):
                    raise FileExistsError(f"{path} is not a scan folder; refusing to replace it")
                shutil.rmtree(path)
            paths.append(_one_scan(path, [seed, i], n_trials, n_neurons, image_shape, n_test_images, n_repeats,
                                   n_validation, animal_id + i, 1, 1, shift_std_px, behavior_strength, noise_scale,
                                   pool))
    return paths


def load_sensorium_ground_truth(scan_path):
    """{name: array} of a synthetic Sensorium scan's ground_truth/ folder."""
    gt = os.path.join(os.fspath(scan_path), "ground_truth")
    if not os.path.isdir(gt):
        raise FileNotFoundError(f"{gt}: no ground truth (not a synthetic scan?)")
    return {f[:-4]: np.load(os.path.join(gt, f)) for f in sorted(os.listdir(gt)) if f.endswith(".npy")}
