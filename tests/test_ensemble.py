"""lviv_c.models.Ensemble: the mean of its members wherever a model goes, and on a synthetic scan
with ground truth an ensemble of 5 seeds beats its best member on the test tier."""
import numpy as np
import pytest

import lviv_c
from lviv_c import sweep, synthetic
from lviv_c.analysis import generate_mei, gradient_rf
from lviv_c.demo import build_model, load_loaders, predict
from lviv_c.models import Ensemble
from lviv_c.trainers import _corr_per_neuron, train_model
from lviv_c.utility.measures import get_correlations


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return synthetic.make_scan(str(tmp_path_factory.mktemp("scan")), progress=False, **synthetic.SMALL)


@pytest.fixture(scope="module")
def loaders(scan):
    return load_loaders(scan)


def _members(loaders, names=("ln", "simple-cnn", "lurz"), seeds=(1, 2, 3)):
    out = []
    for name, seed in zip(names, seeds):
        kw = {"lurz_config": {"hidden_channels": 4, "layers": 1}} if name == "lurz" else {}
        m = build_model(name, loaders[0], seed=seed, **kw)
        train_model(m, loaders[0], seed=seed, max_iter=1, verbose=False, device="cpu")
        out.append(m)
    return out


@pytest.fixture(scope="module")
def trio(loaders):
    return _members(loaders)


def test_predictions_are_the_members_mean(scan, loaders, trio):
    ens = Ensemble(trio).eval()
    val = loaders[0]["validation"]
    each = [predict(m, val) for m in trio]
    np.testing.assert_allclose(predict(ens, val), np.mean(each, 0), rtol=1e-5, atol=1e-6)
    # measures see one model
    y = val.responses_block[val.indices]
    key = list(trio[2].readout.keys())[0]      # the Lurz member's data key
    c = get_correlations(ens, {key: val}, per_neuron=True)
    np.testing.assert_allclose(c, _corr_per_neuron(y, np.mean(each, 0)), atol=1e-5)
    assert len(ens) == 3 and ens[1] is trio[1]


def test_train_model_evaluates_an_ensemble(loaders, trio):
    ens = Ensemble(trio)
    val = loaders[0]["validation"]
    expect = float(_corr_per_neuron(val.responses_block[val.indices],
                                    np.mean([predict(m, val) for m in trio], 0)).mean())
    score, out, _ = train_model(ens, loaders[0], max_iter=0, verbose=False, device="cpu")
    assert score == pytest.approx(expect, abs=1e-5)
    # and training it (jointly, on the averaged prediction) moves every member
    ens2 = Ensemble(_members(loaders, names=("ln", "ln"), seeds=(4, 5)))
    before = [m.linear.weight.detach().numpy().copy() for m in ens2.members]
    score2, out2, _ = train_model(ens2, loaders[0], max_iter=2, verbose=False, device="cpu")
    after = [m.linear.weight.detach().numpy() for m in ens2.members]
    assert all(np.abs(a - b).max() > 0 for a, b in zip(after, before))
    assert np.isfinite(score2) and out2["epochs"] == 2


def test_regularizer_is_the_members_mean(trio):
    ens = Ensemble(trio)
    r = float(ens.regularizer().item())
    assert r == pytest.approx(np.mean([float(m.regularizer().item()) for m in trio]), rel=1e-5)


def test_gradient_rf_is_the_members_mean(loaders, trio):
    img = np.asarray(next(iter(loaders[0]["train"]))[0])[0]
    ens = Ensemble(trio)
    neurons = [0, 3, 7]
    rf = gradient_rf(ens, neurons, img)
    each = np.mean([gradient_rf(m, neurons, img) for m in trio], 0)
    np.testing.assert_allclose(rf, each, rtol=1e-4, atol=1e-6 * np.abs(each).max())


def test_generate_mei_of_an_ensemble(loaders, trio):
    img = np.asarray(next(iter(loaders[0]["train"]))[0])[0]
    ens = Ensemble(trio).eval()
    acts, mei = generate_mei(ens, img, 5, iterations=15, mean_constr=110.0, std_constr=60.0,
                             progress=False)
    assert mei.shape == img.shape[-2:] and acts.shape == (15,)
    assert acts[-1] > acts[0]
    # the activations are the ensemble's rate (the mean of its members')
    x = lviv_c.from_numpy(np.ascontiguousarray(mei[None, None], dtype=np.float32))
    with lviv_c.no_grad():
        r = float(ens(x).numpy()[0, 5])
        rs = [float(m(x).numpy()[0, 5]) for m in trio]
    assert r == pytest.approx(np.mean(rs), rel=1e-5)
    assert r >= acts[-1] * 0.99


def test_state_dict_round_trip(tmp_path, loaders, trio):
    ens = Ensemble(trio).eval()
    path = str(tmp_path / "ens.pt")
    lviv_c.save(ens.state_dict(), path)
    state = lviv_c.load(path)
    assert any(k.startswith("members.2.") for k in state)
    fresh = Ensemble(_members(loaders, seeds=(7, 8, 9))).eval()
    val = loaders[0]["validation"]
    assert not np.allclose(predict(fresh, val), predict(ens, val))
    fresh.load_state_dict(state)
    np.testing.assert_allclose(predict(fresh, val), predict(ens, val), rtol=1e-6, atol=1e-7)
    with pytest.raises((RuntimeError, KeyError, ValueError)):
        Ensemble(trio[:2]).load_state_dict(state)


def test_bad_members():
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])
    with pytest.raises(TypeError, match="member 1"):
        Ensemble([lviv_c.nn.Linear(2, 2), "model"])


def test_ensemble_of_five_seeds_beats_its_best_member(tmp_path):
    """Five seeds of the LN model, a few epochs each, on a scan with ground truth: the ensemble's
    single-trial test correlation and its correlation with the true rates of the test images are
    at least its best member's."""
    path = synthetic.make_scan(str(tmp_path / "scan"), n_trials=2000, n_neurons=60,
                               n_test_images=60, n_repeats=5, n_validation=150, seed=3,
                               progress=False)
    out = str(tmp_path / "sweep")
    cfg = {"model": "ln", "seeds": [1, 2, 3, 4, 5], "train": {"max_iter": 5}, "early_stop": False}
    recs = sweep.run(cfg, data=path, out=out, use_ray=False, verbose=False)
    assert [r["status"] for r in recs] == ["ok"] * 5
    ens, rep = sweep.ensemble(out, top=5, verbose=False)
    best = max(m["test_corr"] for m in rep["members"])
    assert rep["ensemble"]["test_corr"] >= best
    loaders, _ = load_loaders(path)
    test = loaders["test"]
    truth = synthetic.load_ground_truth(path)["mean_rates"][test.indices]

    def gt_corr(m):
        return float(_corr_per_neuron(truth, predict(m, test)).mean())
    assert gt_corr(ens) >= max(gt_corr(m) for m in ens.members)
