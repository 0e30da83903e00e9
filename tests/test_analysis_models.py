"""Analysis on real lviv_c models: the course LN's gradient RF identity, and ground truth on a
synthetic scan — the gradient RFs and MEIs of a trained Lurz 2020 model for its best-predicted
simple cells correlate with the true Gabor filters."""
import os
import sys

import numpy as np
import pytest

import lviv_c as L
from lviv_c.analysis import cross_activation, generate_mei, gradient_rf
from lviv_c.dataset import load_dataset
from lviv_c.models import build_lurz2020_model
from lviv_c.synthetic import load_ground_truth, make_scan
from lviv_c.trainers import Engine, train_model

sys.path.insert(0, os.path.dirname(__file__))
from test_nn_notebook import Linear  # noqa: E402


def _pattern_corr(a, b):
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def test_course_ln_gradient_rf_identity():
    L.manual_seed(0)
    m = Linear(36, 64, 50, gamma=0.1)
    nn_init_w = np.random.default_rng(0).standard_normal((50, 36 * 64)).astype(np.float32) * 0.01
    m.linear.weight.data = L.from_numpy(nn_init_w)
    # give BatchNorm non-trivial running statistics, then go to eval mode
    m.bn.running_mean.data = L.tensor([100.0])
    m.bn.running_var.data = L.tensor([3000.0])
    m.eval()
    img = np.random.default_rng(1).uniform(0, 255, (36, 64)).astype(np.float32)
    rf = gradient_rf(m, None, img)
    xn = (img.reshape(-1) - 100.0) / np.sqrt(3000.0 + 1e-5)
    z = nn_init_w @ xn + np.asarray(m.linear.bias)
    elu_prime = np.where(z > 0, 1.0, np.exp(z))
    ref = (elu_prime[:, None] * nn_init_w / np.sqrt(3000.0 + 1e-5)).reshape(50, 36, 64)
    np.testing.assert_allclose(rf, ref, rtol=1e-4, atol=1e-8)
    assert not m.training


@pytest.fixture(scope="module")
def trained_lurz(tmp_path_factory):
    path = make_scan(tmp_path_factory.mktemp("gt"), n_trials=2000, n_neurons=100, image_shape=(18, 32),
                     n_test_images=20, n_repeats=5, n_validation=200, seed=5, progress=False,
                     simple_fraction=0.9, normalized_fraction=0.0)
    dl = load_dataset(path, batch_size=60, seed=1)
    cfg = dict(hidden_channels=16, layers=3, input_kern=7, hidden_kern=5, gamma_input=1.0,
               gamma_readout=0.5, init_mu_range=0.55, init_sigma=0.4,
               grid_mean_predictor={"type": "cortex", "input_dimensions": 2, "hidden_layers": 0,
                                    "hidden_features": 0, "final_tanh": False})
    model = build_lurz2020_model(dataloaders=dl, seed=1234, **cfg)
    train_model(model, dl, seed=1, verbose=False, max_iter=6)
    return model, dl, load_ground_truth(path)


def _best_simple(model, dl, gt, k):
    c = Engine(model, dl["train"]).correlation(dl["validation"], per_neuron=True)
    simple = np.where(gt["cell_type"] == "simple")[0]
    return simple[np.argsort(-c[simple])][:k]


def test_lurz_rfs_and_meis_match_true_filters(trained_lurz):
    model, dl, gt = trained_lurz
    best = _best_simple(model, dl, gt, 6)
    mean = float(dl["train"].images_block.mean())
    img = np.full((18, 32), mean, np.float32)
    rf = gradient_rf(model, list(best), img)
    rf_corr = _pattern_corr(rf, gt["filters"][best])
    trace, mei = generate_mei(model, img, list(best), iterations=150, mean_constr=mean, std_constr=20.0,
                              lr=1.0, blur_sigma=1.0, progress=False)
    mei_corr = _pattern_corr(mei, gt["filters"][best])
    print(f"median correlation with the true filters: RF {np.median(rf_corr):.2f}, MEI {np.median(mei_corr):.2f}")
    assert np.median(rf_corr) > 0.7, rf_corr
    assert np.median(mei_corr) > 0.7, mei_corr
    assert np.all(trace[-1] > trace[0])                  # the optimisation raised every neuron's rate
    np.testing.assert_allclose(mei.reshape(len(best), -1).mean(1), mean, atol=0.05)
    ca = cross_activation(model, mei, list(best))
    assert np.mean(np.argmax(ca, 0) == np.arange(len(best))) >= 0.8   # own MEI drives each neuron most
