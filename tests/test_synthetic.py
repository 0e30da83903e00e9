"""Tests of the synthetic scan generator (lviv_c.synthetic): layout, dtypes, tiers, statistics,
determinism, ground truth and that the ground-truth population has the intended structure."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE_PATH = os.path.join(ROOT, "lviv_c", "synthetic.py")

try:  # the package needs its C extension; the generator itself needs only NumPy
    from lviv_c import synthetic as S
except ImportError:  # pragma: no cover - unbuilt checkout
    _spec = importlib.util.spec_from_file_location("lviv_c_synthetic_standalone", MODULE_PATH)
    S = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(S)

SMALL = dict(S.SMALL)
N_TRAIN = SMALL["n_trials"] - SMALL["n_test_images"] * SMALL["n_repeats"] - SMALL["n_validation"]

TRIAL_DTYPES = {
    "tiers": "<U10", "frame_image_id": "int64", "frame_image_class": "<U64",
    "condition_hash": "<U64", "trial_idx": "int64", "animal_id": "int64", "session": "int64",
    "scan_idx": "int64", "frame_last_flip": "int64", "frame_pre_blank_period": "float64",
    "frame_presentation_time": "float64", "frame_trial_ts": "<U32",
}
NEURON_DTYPES = {
    "unit_ids": "uint16", "animal_ids": "uint16", "sessions": "uint8", "scan_idx": "uint8",
    "area": "<U2", "layer": "<U4", "cell_motor_coordinates": "float64",
}
DATA = {"images": ("float32", (1, 36, 64)), "responses": ("float64", (SMALL["n_neurons"],)),
        "behavior": ("float64", (3,)), "pupil_center": ("float64", (2,))}


def load(path):
    return np.load(path, allow_pickle=False)


def read_key(scan, key):
    n = len(os.listdir(os.path.join(scan, "data", key)))
    return np.stack([load(os.path.join(scan, "data", key, f"{i}.npy")) for i in range(n)])


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return S.make_scan(tmp_path_factory.mktemp("small"), seed=3, progress=False, **SMALL)


@pytest.fixture(scope="module")
def arrays(scan):
    return {k: read_key(scan, k) for k in DATA}


@pytest.fixture(scope="module")
def trials(scan):
    d = os.path.join(scan, "meta", "trials")
    return {f[:-4]: load(os.path.join(d, f)) for f in os.listdir(d)}


# ------------------------------------------------------------------------------------ layout

def test_folder_name_and_data_key(scan):
    assert os.path.basename(scan) == "static60000-1-1-preproc0"
    assert S.data_key(scan) == "60000-1-1-0"
    assert S.data_key("/x/static20457-5-9-preproc0") == "20457-5-9-0"


def test_config(scan):
    with open(os.path.join(scan, "config.json")) as f:
        assert json.load(f) == {"links": {"targets": "responses", "inputs": "images"}}
    assert sorted(os.listdir(scan)) == ["config.json", "data", "ground_truth", "meta"]


def test_data_files_layout_and_dtypes(scan, arrays):
    n = SMALL["n_trials"]
    for key, (dtype, shape) in DATA.items():
        names = os.listdir(os.path.join(scan, "data", key))
        assert sorted(names) == sorted(f"{i}.npy" for i in range(n))
        a = load(os.path.join(scan, "data", key, "7.npy"))
        assert a.dtype == np.dtype(dtype) and a.shape == shape, key
        assert arrays[key].shape == (n,) + shape


def test_images_are_whole_numbers_0_255(arrays):
    im = arrays["images"]
    assert np.all(im == np.round(im)) and im.min() >= 0 and im.max() <= 255
    assert 95 < im.mean() < 130 and 45 < im.std() < 75


def test_images_natural_like_spectrum(arrays):
    im = arrays["images"][:, 0].astype(np.float64)
    im = im - im.mean(axis=(1, 2), keepdims=True)
    amp = np.abs(np.fft.fft2(im)).mean(axis=0)
    fy = np.fft.fftfreq(36)[:, None]
    fx = np.fft.fftfreq(64)[None, :]
    f = np.sqrt(fy ** 2 + fx ** 2)
    sel = (f > 0.03) & (f < 0.4)
    slope = np.polyfit(np.log(f[sel]), np.log(amp[sel]), 1)[0]
    assert -1.8 < slope < -0.7, slope  # ~1/f amplitude spectrum


def test_trials_meta(trials):
    n = SMALL["n_trials"]
    assert set(trials) == set(TRIAL_DTYPES)
    for k, dt in TRIAL_DTYPES.items():
        assert trials[k].dtype == np.dtype(dt), k
        assert trials[k].shape == (n,), k
    assert sorted(trials["trial_idx"]) == list(range(n))
    assert np.all(trials["frame_presentation_time"] > 0)
    # time order: flips and timestamps increase with trial_idx
    order = np.argsort(trials["trial_idx"])
    assert np.all(np.diff(trials["frame_last_flip"][order]) > 0)
    ts = trials["frame_trial_ts"][order]
    assert np.all(ts[1:] > ts[:-1])


def test_neurons_meta(scan):
    d = os.path.join(scan, "meta", "neurons")
    neurons = {f[:-4]: load(os.path.join(d, f)) for f in os.listdir(d)}
    n = SMALL["n_neurons"]
    assert set(neurons) == set(NEURON_DTYPES)
    for k, dt in NEURON_DTYPES.items():
        assert neurons[k].dtype == np.dtype(dt), k
        assert len(neurons[k]) == n, k
    assert neurons["cell_motor_coordinates"].shape == (n, 3)
    assert len(np.unique(neurons["unit_ids"])) == n
    assert set(neurons["area"]) == {"V1"} and set(neurons["layer"]) == {"L2/3"}
    xy = neurons["cell_motor_coordinates"][:, :2]
    assert np.all(np.ptp(xy, axis=0) < 1000) and np.all(np.ptp(xy, axis=0) > 500)


def test_no_object_arrays_anywhere(scan):
    for root, _, files in os.walk(scan):
        for f in files:
            if f.endswith(".npy"):
                assert load(os.path.join(root, f)).dtype != object, f  # allow_pickle=False


# ------------------------------------------------------------------------------------- tiers

def test_tier_counts_and_shuffled_file_order(trials):
    tiers = trials["tiers"]
    n_test = SMALL["n_test_images"] * SMALL["n_repeats"]
    assert (tiers == "test").sum() == n_test
    assert (tiers == "validation").sum() == SMALL["n_validation"]
    assert (tiers == "train").sum() == N_TRAIN
    test_idx = np.flatnonzero(tiers == "test")
    assert test_idx[-1] - test_idx[0] + 1 > n_test  # interleaved with the other tiers


def test_test_repeats_share_image_and_id(trials, arrays):
    tiers, ids = trials["tiers"], trials["frame_image_id"]
    test_ids = ids[tiers == "test"]
    u, counts = np.unique(test_ids, return_counts=True)
    assert len(u) == SMALL["n_test_images"] and np.all(counts == SMALL["n_repeats"])
    for i in u:
        idx = np.flatnonzero(ids == i)
        assert np.all(tiers[idx] == "test")
        assert np.all(arrays["images"][idx] == arrays["images"][idx[0]])
        assert len(set(trials["condition_hash"][idx])) == 1


def test_no_image_shared_across_tiers_and_train_val_unique(trials, arrays):
    tiers, ids = trials["tiers"], trials["frame_image_id"]
    sets = {t: set(ids[tiers == t]) for t in ("train", "validation", "test")}
    assert not (sets["train"] & sets["validation"]) and not (sets["train"] & sets["test"])
    assert not (sets["validation"] & sets["test"])
    assert len(sets["train"]) == N_TRAIN and len(sets["validation"]) == SMALL["n_validation"]
    # pixel content: one distinct image per frame_image_id, none identical across ids
    flat = arrays["images"].reshape(len(ids), -1)
    rows = {r.tobytes() for r in flat}
    assert len(rows) == len(np.unique(ids))
    assert len(set(trials["condition_hash"])) == len(np.unique(ids))


# -------------------------------------------------------------------------------- statistics

def test_statistics_equal_recomputation_over_train_files(scan, trials, arrays):
    tr = trials["tiers"] == "train"
    for key in ("images", "responses", "behavior", "pupil_center"):
        a = arrays[key][tr].astype(np.float64)
        axis = None if key == "images" else 0
        want = dict(mean=a.mean(axis=axis), std=a.std(axis=axis), min=a.min(axis=axis),
                    max=a.max(axis=axis), median=np.median(a, axis=axis))
        for sub in ("all", "stimulus_frame"):
            for stat, v in want.items():
                got = load(os.path.join(scan, "meta", "statistics", key, sub, stat + ".npy"))
                assert got.shape == np.shape(v), (key, sub, stat)
                np.testing.assert_allclose(got, v, rtol=1e-10, atol=1e-12,
                                           err_msg=f"{key}/{sub}/{stat}")
    # and they differ from the statistics over all trials (i.e. really train only)
    m_all = arrays["responses"].mean(axis=0)
    assert not np.allclose(load(os.path.join(scan, "meta/statistics/responses/all/mean.npy")),
                           m_all)


def test_responses_nonnegative_up_to_tiny_jitter(arrays):
    r = arrays["responses"]
    sd = r.std(axis=0)
    assert np.all(sd > 0)
    assert np.all(r >= -0.02 * sd)  # tiny negatives only
    assert (r < 0).mean() < 0.05
    rate = r.mean(axis=0)
    assert rate.max() / rate.min() > 5  # spread of firing rates across neurons


# ----------------------------------------------------------------------------- determinism

def _all_bytes(scan):
    out = {}
    for root, _, files in os.walk(scan):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, scan)] = fh.read()
    return out


def test_deterministic_for_a_seed(tmp_path, scan):
    again = S.make_scan(tmp_path / "a", seed=3, progress=False, **SMALL)
    a, b = _all_bytes(scan), _all_bytes(again)
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a)
    other = S.make_scan(tmp_path / "b", seed=4, progress=False, **SMALL)
    c = _all_bytes(other)
    assert c["data/responses/0.npy"] != a["data/responses/0.npy"]
    assert c["data/images/0.npy"] != a["data/images/0.npy"]


def test_refuses_to_overwrite(tmp_path):
    S.make_scan(tmp_path, seed=1, progress=False, **SMALL)
    with pytest.raises(FileExistsError):
        S.make_scan(tmp_path, seed=1, progress=False, **SMALL)
    S.make_scan(tmp_path, seed=2, progress=False, overwrite=True, **SMALL)


def test_cli_small(tmp_path):
    r = subprocess.run([sys.executable, MODULE_PATH, str(tmp_path), "--small", "--quiet",
                        "--n-neurons", "20", "--seed", "5"], capture_output=True, text=True,
                       check=True)
    path = r.stdout.strip().splitlines()[-1]
    assert os.path.isdir(path)
    assert load(os.path.join(path, "data", "responses", "0.npy")).shape == (20,)
    assert len(os.listdir(os.path.join(path, "data", "images"))) == SMALL["n_trials"]


# ------------------------------------------------------------------------------ ground truth

def test_ground_truth_files(scan, trials):
    gt = S.load_ground_truth(scan)
    n, t = SMALL["n_neurons"], SMALL["n_trials"]
    assert gt["mean_rates"].dtype == np.float32 and gt["mean_rates"].shape == (t, n)
    assert gt["filters"].dtype == np.float32 and gt["filters"].shape == (n, 36, 64)
    assert gt["cell_type"].dtype == np.dtype("<U8")
    assert set(gt["cell_type"]) == {"simple", "complex"}
    assert gt["rf_center"].shape == (n, 2)
    assert np.all(gt["mean_rates"] > 0)
    # repeats of a test image share the true rate
    ids = trials["frame_image_id"]
    test_ids = np.unique(ids[trials["tiers"] == "test"])
    idx = np.flatnonzero(ids == test_ids[0])
    assert np.all(gt["mean_rates"][idx] == gt["mean_rates"][idx[0]])
    # the stored filters are reproducible from the stored Gabor parameters
    np.testing.assert_allclose(S.gabor_filters(gt["gabor_params"], (36, 64)), gt["filters"],
                               atol=1e-6)
    np.testing.assert_allclose((gt["filters"] ** 2).sum(axis=(1, 2)), 1.0, rtol=1e-4)


def test_rf_centres_follow_retinotopic_map(scan):
    gt = S.load_ground_truth(scan)
    pos = load(os.path.join(scan, "meta", "neurons", "cell_motor_coordinates.npy"))[:, :2]
    A = np.c_[pos, np.ones(len(pos))]
    rf = gt["rf_center"]
    resid = rf - A @ np.linalg.lstsq(A, rf, rcond=None)[0]
    r2 = 1 - resid.var(axis=0) / rf.var(axis=0)
    assert np.all(r2 > 0.7), r2
    assert np.all((rf[:, 0] >= 0) & (rf[:, 0] < 64) & (rf[:, 1] >= 0) & (rf[:, 1] < 36))


def _corr(a, b):
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    return (a * b).sum(axis=0) / np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))


def test_ceilings_in_range_and_match_files(scan, trials, arrays):
    gt = S.load_ground_truth(scan)
    p = gt["params"]
    c = p["ceiling_per_tier"]
    for tier in ("validation", "test"):
        assert 0.25 <= c[tier] <= 0.65, (tier, c[tier])  # 50 neurons, 10 test images: loose
        m = trials["tiers"] == tier
        got = np.nanmean(_corr(gt["mean_rates"][m].astype(np.float64), arrays["responses"][m]))
        assert abs(got - c[tier]) < 1e-6
    assert 0.05 < p["test_oracle_jackknife"] < c["test"]


def test_default_ceiling_gives_course_like_oracle(tmp_path):
    """With the course's 100 test images x 10 repeats (and enough neurons to average), the
    ceilings are near the default 0.45 and the mean jackknife oracle near the real scan's 0.38."""
    path = S.make_scan(tmp_path, n_trials=1300, n_neurons=300, n_test_images=100, n_repeats=10,
                       n_validation=100, seed=0, progress=False)
    p = S.load_ground_truth(path)["params"]
    for tier in ("validation", "test"):
        assert 0.38 <= p["ceiling_per_tier"][tier] <= 0.52, p["ceiling_per_tier"]
    y = read_key(path, "responses")
    tr = load(os.path.join(path, "meta", "trials", "tiers.npy")) == "test"
    ids = load(os.path.join(path, "meta", "trials", "frame_image_id.npy"))[tr]
    y = y[tr][np.argsort(ids, kind="stable")].reshape(100, 10, -1)
    loo = (y.sum(axis=1, keepdims=True) - y) / 9
    oracle = np.nanmean(_corr(y.reshape(1000, -1), loo.reshape(1000, -1)))
    assert 0.3 < oracle < 0.45, oracle
    assert abs(oracle - p["test_oracle_jackknife"]) < 1e-9


# ------------------------------------------------------- structure of the ground-truth model

@pytest.fixture(scope="module")
def model_scan(tmp_path_factory):
    """Enough training images for ridge regression, and a high noise ceiling so the structural
    difference between cell types (not the noise) decides the comparison."""
    p = S.make_scan(tmp_path_factory.mktemp("model"), n_trials=700, n_neurons=40,
                    n_test_images=10, n_repeats=5, n_validation=150, seed=11, progress=False,
                    ceiling_mean=0.8)
    tiers = load(os.path.join(p, "meta", "trials", "tiers.npy"))
    return p, read_key(p, "images")[:, 0].astype(np.float64), read_key(p, "responses"), tiers


def _ridge_val_corr(F, Y, tr, va, lam):
    mu, sd = F[tr].mean(axis=0), F[tr].std(axis=0) + 1e-9
    F = (F - mu) / sd
    A, y = F[tr], Y[tr] - Y[tr].mean(axis=0)
    W = A.T @ np.linalg.solve(A @ A.T + lam * np.eye(len(A)), y)  # dual form: few samples
    return _corr(F[va] @ W, Y[va])


def test_linear_model_works_for_simple_cells_not_complex(model_scan):
    p, X, Y, tiers = model_scan
    gt = S.load_ground_truth(p)
    ct = gt["cell_type"]
    tr, va = tiers == "train", tiers == "validation"
    # ridge on 2x2-pooled pixels (an LN-like linear readout)
    Xd = X.reshape(len(X), 18, 2, 32, 2).mean(axis=(2, 4)).reshape(len(X), -1)
    c_pix = _ridge_val_corr(Xd, Y, tr, va, lam=1e3)
    # the quadrature-pair energy (the complex cells' nonlinearity), one feature per neuron
    even, odd = S.gabor_filters(gt["gabor_params"], (36, 64), phase_offset=(0.0, np.pi / 2))
    Xs = ((X - 110.0) / 60.0).reshape(len(X), -1)
    energy = np.sqrt((Xs @ even.reshape(len(even), -1).T) ** 2
                     + (Xs @ odd.reshape(len(odd), -1).T) ** 2)
    c_energy = _corr(energy[va], Y[va])
    simple, cplx = ct == "simple", ct == "complex"
    assert simple.sum() >= 5 and cplx.sum() >= 5
    assert np.nanmean(c_pix[simple]) > 0.25                        # linear works for simple
    assert np.nanmean(c_pix[cplx]) < 0.5 * np.nanmean(c_pix[simple])  # ... much less for complex
    assert np.nanmean(c_energy[cplx]) > np.nanmean(c_pix[cplx]) + 0.3  # energy model wins


def test_divisive_normalization_present(model_scan):
    p, X, Y, tiers = model_scan
    gt = S.load_ground_truth(p)
    assert 0 < gt["normalized"].sum() < len(gt["normalized"])
    assert np.all(np.isfinite(gt["c50"][gt["normalized"]]))
    assert np.all(np.isnan(gt["c50"][~gt["normalized"]]))
