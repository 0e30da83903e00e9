"""train_model end to end on small synthetic scans: the course LN reaches a good share of the
ground-truth ceiling, the course CNN beats the LN, runs are reproducible, output and printing follow
the course, and Ctrl-C restores the best state."""
import re
import sys
import os

import numpy as np
import pytest

import lviv_c as L
from lviv_c.dataset import load_dataset
from lviv_c.synthetic import load_ground_truth, make_scan
from lviv_c.trainers import train_model

sys.path.insert(0, os.path.dirname(__file__))
from test_nn_notebook import CNN, Linear  # noqa: E402  (the notebook's classes, verbatim)


def _ceiling(dl, path):
    gt = load_ground_truth(path)
    vi = dl["validation"].indices
    y, r = dl["validation"].responses_block[vi], gt["mean_rates"][vi]
    y = (y - y.mean(0)) / (y.std(0) + 1e-8)
    r = (r - r.mean(0)) / (r.std(0) + 1e-8)
    return float((y * r).mean(0).mean())


@pytest.fixture(scope="module")
def simple_scan(tmp_path_factory):
    # mostly simple cells: an LN model can explain much of them
    return make_scan(tmp_path_factory.mktemp("s"), n_trials=2000, n_neurons=100, image_shape=(18, 32),
                     n_test_images=20, n_repeats=5, n_validation=200, seed=5, progress=False,
                     simple_fraction=0.9, normalized_fraction=0.0)


@pytest.fixture(scope="module")
def mixed_scan(tmp_path_factory):
    # the default population: 45% simple, 55% complex cells, 30% divisively normalised
    return make_scan(tmp_path_factory.mktemp("m"), n_trials=1500, n_neurons=120, image_shape=(18, 32),
                     n_test_images=20, n_repeats=5, n_validation=150, seed=3, progress=False)


def test_ln_reaches_half_the_ceiling_on_simple_cells(simple_scan):
    dl = load_dataset(simple_scan, batch_size=60, seed=1)
    ceiling = _ceiling(dl, simple_scan)
    assert 0.35 < ceiling < 0.6
    L.manual_seed(0)
    model = Linear(18, 32, 100, gamma=0.1)
    score, output, state = train_model(model, dl, seed=1, verbose=False)
    assert score > 0.5 * ceiling, (score, ceiling)
    assert not model.training                       # left in eval mode
    assert output["validation_corr"] == pytest.approx(score)
    assert len(output["correlation"]) == len(output["poisson_loss"]) >= 5
    assert max(output["correlation"]) == pytest.approx(score, abs=1e-6)   # best state restored
    assert set(state) == set(model.state_dict())


@pytest.fixture(scope="module")
def mixed_scores(mixed_scan):
    """Test-set correlation of the course LN, the course CNN, the Lurz 2020 model and its linear
    variant trained on the same mixed scan (narrow models and few epochs so the test stays short)."""
    from lviv_c.models import build_lurz2020_model
    from lviv_c.trainers import Engine
    dl = load_dataset(mixed_scan, batch_size=60, seed=1)
    lurz_cfg = dict(hidden_channels=16, layers=3, input_kern=7, hidden_kern=5, gamma_input=1.0,
                    gamma_readout=0.5, init_mu_range=0.55, init_sigma=0.4,
                    grid_mean_predictor={"type": "cortex", "input_dimensions": 2, "hidden_layers": 0,
                                         "hidden_features": 0, "final_tanh": False})
    makers = {
        "ln": (lambda: Linear(18, 32, 120, gamma=0.1), 200),
        "cnn": (lambda: CNN(18, 32, 120, hidden_channels=4), 6),
        "lurz": (lambda: build_lurz2020_model(dataloaders=dl, seed=1234, **lurz_cfg), 20),
        "lurz_linear": (lambda: build_lurz2020_model(dataloaders=dl, seed=1234, linear=True, **lurz_cfg), 20),
    }
    scores = {}
    for name, (make, max_iter) in makers.items():
        L.manual_seed(0)
        model = make()
        val, _, _ = train_model(model, dl, seed=1, verbose=False, max_iter=max_iter)
        scores[name] = (val, Engine(model, dl["train"]).correlation(dl["test"]))
    print("validation / test correlation:", {k: (round(v, 3), round(t, 3)) for k, (v, t) in scores.items()})
    return scores


def test_cnn_beats_ln_on_complex_cells(mixed_scores):
    assert mixed_scores["cnn"][0] > mixed_scores["ln"][0] + 0.03, mixed_scores


def test_lurz_beats_cnn_and_ln_and_linear_variant_sits_between(mixed_scores):
    test = {k: t for k, (v, t) in mixed_scores.items()}
    assert test["lurz"] > test["cnn"] and test["lurz"] > test["ln"], test
    assert test["ln"] < test["lurz_linear"] < test["lurz"], test


def test_same_seed_gives_identical_state_dicts(simple_scan):
    states = []
    for _ in range(2):
        dl = load_dataset(simple_scan, batch_size=60, seed=1)
        L.manual_seed(0)
        m = Linear(18, 32, 100, gamma=0.1)
        _, _, sd = train_model(m, dl, seed=7, verbose=False, max_iter=3)
        states.append({k: np.array(v, copy=True) for k, v in sd.items()})
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        np.testing.assert_array_equal(states[0][k], states[1][k])


def test_course_log_lines_and_silence(simple_scan, capsys):
    dl = load_dataset(simple_scan, batch_size=60, seed=1)
    L.manual_seed(0)
    train_model(Linear(18, 32, 100, gamma=0.1), dl, seed=1, max_iter=4, lr_decay_steps=1)
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert any(re.fullmatch(r"\[00[1-4]\|0[0-5]/05\] (--->|-/->) [-0-9.e]+", ln) for ln in lines), lines
    assert any(ln.startswith("Restoring best model! ") for ln in lines)
    assert "Epoch 1" in out.err                                   # the progress bar
    train_model(Linear(18, 32, 100, gamma=0.1), dl, seed=1, max_iter=2, verbose=False)
    quiet = capsys.readouterr()
    assert "--->" not in quiet.out and "Epoch 1" not in quiet.err


def test_ctrl_c_restores_best_state(simple_scan, monkeypatch, capsys):
    import lviv_c.trainers as T
    dl = load_dataset(simple_scan, batch_size=60, seed=1)
    L.manual_seed(0)
    model = Linear(18, 32, 100, gamma=0.1)
    calls = {"n": 0}
    real = T._progress_bar

    def interrupting_bar(total, desc, verbose):
        bar = real(total, desc, False)
        calls["n"] += 1
        if calls["n"] == 3:                       # Ctrl-C during the third epoch
            def boom(n=1):
                raise KeyboardInterrupt
            bar.update = boom
        return bar
    monkeypatch.setattr(T, "_progress_bar", interrupting_bar)
    score, output, state = train_model(model, dl, seed=1, verbose=True)
    assert calls["n"] == 3
    assert len(output["correlation"]) <= 3
    # the model holds the best state seen, and it is finite
    assert np.isfinite(score) and score == pytest.approx(max([score] + list(output["correlation"])), abs=1e-6)
    assert "nterrupt" in capsys.readouterr().out
