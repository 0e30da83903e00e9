"""lviv_c.utility.measures against plain NumPy references (loops written out in the tests)."""
import contextlib
from collections import namedtuple

import numpy as np
import pytest

import lviv_c
from lviv_c.utility import measures as M

Batch = namedtuple("Batch", ["images", "responses"])


def ref_corr(a, b):
    """Per-column Pearson correlation, written with np.corrcoef."""
    return np.array([np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(a.shape[1])])


class LinearModel:
    """rate = exp(images.flat @ W) * scale; has train/eval modes like an nn.Module."""

    def __init__(self, W, scale=1.0):
        self.W = W
        self.scale = scale
        self.training = True
        self.calls = []

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def __call__(self, x):
        self.calls.append(self.training)
        x = np.asarray(x, dtype=np.float64)
        return np.exp(x.reshape(x.shape[0], -1) @ self.W) * self.scale


class KeyedModel:
    """A multi-scan model: forward(x, data_key=...) picks the weights of that scan."""

    def __init__(self, Ws):
        self.Ws = Ws

    def forward(self, x, data_key=None):
        x = np.asarray(x, dtype=np.float64)
        return x.reshape(x.shape[0], -1) @ self.Ws[data_key]

    def __call__(self, x, data_key=None):
        return self.forward(x, data_key=data_key)


def make_loader(images, responses, batch_size):
    return [Batch(images[i:i + batch_size], responses[i:i + batch_size])
            for i in range(0, len(images), batch_size)]


def make_repeat_data(rng, n_images=12, n_neurons=7, repeats=(3, 5, 4), noise=1.0, hw=(2, 3)):
    """Repeat batches: one image per batch, a variable number of repeats, signal + noise."""
    imgs = rng.normal(size=(n_images, 1) + hw).astype(np.float32)
    signal = rng.gamma(2.0, 1.0, size=(n_images, n_neurons))
    batches, per_image = [], []
    for i in range(n_images):
        r = repeats[i % len(repeats)]
        resp = (signal[i] + noise * rng.normal(size=(r, n_neurons))).astype(np.float32)
        batches.append(Batch(np.repeat(imgs[i:i + 1], r, axis=0), resp))
        per_image.append(resp)
    return imgs, signal, batches, per_image


# ----------------------------------------------------------------------------- corr

def test_corr_matches_corrcoef_and_conventions():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 6))
    b = 0.5 * a + rng.normal(size=(50, 6))
    np.testing.assert_allclose(M.corr(a, b, axis=0), ref_corr(a, b), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(M.corr(a.T, b.T), ref_corr(a, b), rtol=1e-6, atol=1e-7)  # axis=-1
    # eps sits in the denominators: a tiny-variance input is damped, not blown up
    c = np.ones((50, 1)) + 1e-9 * rng.normal(size=(50, 1))
    assert abs(M.corr(c, a[:, :1], axis=0)[0]) < 0.2
    # constant columns give 0, NaN inputs give 0
    a2 = a.copy()
    a2[:, 2] = 3.0
    a2[5, 4] = np.nan
    r = M.corr(a2, b, axis=0)
    assert r[2] == 0.0 and r[4] == 0.0
    np.testing.assert_allclose(r[[0, 1, 3, 5]], ref_corr(a, b)[[0, 1, 3, 5]], rtol=1e-6)
    # exact value with the eps: mean(z1*z2) where z = (x - mean) / (std + eps)
    x, y = np.array([0.0, 1.0, 2.0]), np.array([0.0, 2.0, 1.0])
    s = np.sqrt(2.0 / 3.0)
    expect = np.mean((x - 1) / (s + 1e-8) * (y - 1) / (s + 1e-8))
    assert M.corr(x, y) == pytest.approx(expect, rel=1e-12)


# ----------------------------------------------------------------------------- predictions

def test_model_predictions_order_modes_and_no_grad(monkeypatch):
    rng = np.random.default_rng(1)
    imgs = rng.normal(size=(23, 1, 2, 3)).astype(np.float32)
    W = 0.3 * rng.normal(size=(6, 4))
    resp = rng.poisson(2.0, size=(23, 4)).astype(np.float32)
    loader = make_loader(imgs, resp, 5)  # last batch short
    model = LinearModel(W)

    entered = []

    @contextlib.contextmanager
    def fake_no_grad():
        entered.append(True)
        yield

    monkeypatch.setattr(lviv_c, "no_grad", fake_no_grad, raising=False)
    target, output = M.model_predictions(model, loader)
    assert target.dtype == np.float32 and output.dtype == np.float32
    np.testing.assert_array_equal(target, resp)
    np.testing.assert_allclose(output, np.exp(imgs.reshape(23, -1) @ W), rtol=1e-5)
    assert entered, "model_predictions must run under lviv_c.no_grad when it exists"
    assert model.calls == [True] * 5, "model_predictions leaves the mode to the caller"

    # get_correlations evaluates in eval mode and restores the previous mode
    model.calls.clear()
    c = M.get_correlations(model, loader)
    assert model.calls == [False] * 5 and model.training is True
    np.testing.assert_allclose(c, ref_corr(resp.astype(np.float64), output.astype(np.float64)),
                               rtol=1e-5, atol=1e-6)
    assert M.get_correlations(model, loader, per_neuron=False) == pytest.approx(c.mean())
    model.eval()
    M.get_correlations(model, loader)
    assert model.training is False


def test_dict_batches_and_plain_function_model():
    rng = np.random.default_rng(2)
    imgs = rng.normal(size=(10, 1, 2, 2)).astype(np.float32)
    resp = rng.normal(size=(10, 3)).astype(np.float32)
    loader = [{"inputs": imgs[i:i + 4], "targets": resp[i:i + 4]} for i in range(0, 10, 4)]

    def model(x):
        return np.asarray(x).reshape(len(x), -1)[:, :3] * 2.0

    target, output = M.model_predictions(model, loader)
    np.testing.assert_array_equal(target, resp)
    np.testing.assert_allclose(output, imgs.reshape(10, -1)[:, :3] * 2.0)
    with pytest.raises(ValueError, match="no batches"):
        M.model_predictions(model, [])


def test_multiple_data_keys():
    rng = np.random.default_rng(3)
    Ws = {"a": rng.normal(size=(4, 3)), "b": rng.normal(size=(4, 5))}
    loaders, refs = {}, {}
    for k, W in Ws.items():
        imgs = rng.normal(size=(30, 1, 2, 2)).astype(np.float32)
        resp = (imgs.reshape(30, -1) @ W + rng.normal(size=(30, W.shape[1]))).astype(np.float32)
        loaders[k] = make_loader(imgs, resp, 7)
        refs[k] = ref_corr(resp.astype(np.float64), imgs.reshape(30, -1).astype(np.float64) @ W)
    model = KeyedModel(Ws)
    d = M.get_correlations(model, loaders, as_dict=True)
    assert list(d) == ["a", "b"]
    for k in Ws:
        np.testing.assert_allclose(d[k], refs[k], rtol=1e-4, atol=1e-5)
    flat = M.get_correlations(model, loaders)
    assert flat.shape == (8,)
    np.testing.assert_allclose(flat, np.hstack([refs["a"], refs["b"]]), rtol=1e-4, atol=1e-5)
    assert M.get_correlations(model, loaders, per_neuron=False) == pytest.approx(flat.mean())


def test_poisson_loss():
    rng = np.random.default_rng(4)
    imgs = rng.normal(size=(17, 1, 2, 3)).astype(np.float32)
    W = 0.2 * rng.normal(size=(6, 5))
    resp = rng.poisson(1.5, size=(17, 5)).astype(np.float32)
    loader = make_loader(imgs, resp, 4)
    model = LinearModel(W)
    out = np.exp(imgs.reshape(17, -1).astype(np.float64) @ W).astype(np.float32).astype(np.float64)
    loss = out - resp * np.log(out + 1e-12)
    np.testing.assert_allclose(M.get_poisson_loss(model, loader), loss.sum(0), rtol=1e-5)
    np.testing.assert_allclose(M.get_poisson_loss(model, loader, avg=True), loss.mean(0), rtol=1e-5)
    assert M.get_poisson_loss(model, loader, per_neuron=False) == pytest.approx(loss.sum(), rel=1e-5)
    assert M.get_poisson_loss(model, loader, avg=True, per_neuron=False) == \
        pytest.approx(loss.mean(), rel=1e-5)
    # the lviv keyword spelling
    np.testing.assert_allclose(M.get_poisson_loss(model, dataloader=loader), loss.sum(0), rtol=1e-5)


# ----------------------------------------------------------------------------- repeats / oracles

def test_get_repeats_and_mixed_batches():
    rng = np.random.default_rng(5)
    imgs, _, batches, per_image = make_repeat_data(rng, repeats=(1, 3, 4))
    inputs, outputs = M.get_repeats(batches)
    kept = [p for p in per_image if len(p) >= 2]
    assert len(outputs) == len(kept) == 8
    for a, b in zip(outputs, kept):
        np.testing.assert_array_equal(a, b)
    assert all(x.shape[1:] == (1, 2, 3) and np.all(x == x[:1]) for x in inputs)
    # a 5-d batch (batch_size 1 over repeat groups) is squeezed
    inputs5, outputs5 = M.get_repeats([Batch(b.images[None], b.responses[None]) for b in batches])
    assert len(outputs5) == 8 and outputs5[0].ndim == 2
    # an ordinary test loader mixes images: refused with a pointer to the right loader
    flat_imgs = np.concatenate([b.images for b in batches])
    flat_resp = np.concatenate([b.responses for b in batches])
    with pytest.raises(ValueError, match="return_test_sampler"):
        M.get_repeats(make_loader(flat_imgs, flat_resp, 6))


def ref_oracle(per_image):
    rows, preds = [], []
    for resp in per_image:
        r = len(resp)
        for t in range(r):
            rows.append(resp[t])
            preds.append(np.mean(np.delete(resp, t, axis=0), axis=0))
    return ref_corr(np.array(rows, dtype=np.float64), np.array(preds, dtype=np.float64))


def test_oracles_against_loops():
    rng = np.random.default_rng(6)
    _, _, batches, per_image = make_repeat_data(rng)
    np.testing.assert_allclose(M.get_oracles(batches), ref_oracle(per_image), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(M.get_oracles({"train": [], "test": batches}), ref_oracle(per_image),
                               rtol=1e-6, atol=1e-7)
    assert M.get_oracles(batches, per_neuron=False) == pytest.approx(ref_oracle(per_image).mean())
    # equal repeat counts as a 3-d array give the same numbers
    _, _, b2, p2 = make_repeat_data(rng, repeats=(4,))
    np.testing.assert_allclose(M.compute_oracle_corr(np.stack(p2)), ref_oracle(p2), rtol=1e-6)

    # corrected oracle: var of means / sqrt(var of means * (var of means + mean repeat var))
    var_noise = np.mean([p.astype(np.float64).var(axis=0) for p in per_image], axis=0)
    var_mean = np.var([p.astype(np.float64).mean(axis=0) for p in per_image], axis=0)
    np.testing.assert_allclose(M.get_oracles_corrected(batches),
                               var_mean / np.sqrt(var_mean * (var_mean + var_noise)), rtol=1e-6)


def test_noise_free_oracle_is_one():
    rng = np.random.default_rng(7)
    _, _, batches, per_image = make_repeat_data(rng, noise=0.0)
    np.testing.assert_allclose(M.get_oracles(batches), 1.0, atol=1e-6)


def ref_fev_feve(per_image, pred_per_image):
    allr = np.vstack(per_image).astype(np.float64)
    total = allr.var(axis=0, ddof=1)
    noise = np.mean([p.astype(np.float64).var(axis=0, ddof=1) for p in per_image], axis=0)
    mse = np.vstack([(p - o) ** 2 for p, o in zip(per_image, pred_per_image)]).mean(axis=0)
    return (total - noise) / total, 1 - (mse - noise) / (total - noise)


def test_fev_and_feve_formulas_and_threshold():
    rng = np.random.default_rng(8)
    imgs, signal, batches, per_image = make_repeat_data(rng, n_images=20, n_neurons=9, noise=1.5)
    W = 0.3 * rng.normal(size=(6, 9))
    model = LinearModel(W)
    pred = np.exp(imgs.reshape(20, -1).astype(np.float64) @ W).astype(np.float32)
    fev_ref, feve_ref = ref_fev_feve(per_image, pred)
    np.testing.assert_allclose(M.get_fev(per_image), fev_ref, rtol=1e-6)
    np.testing.assert_allclose(M.get_explainable_var(batches), fev_ref, rtol=1e-6)
    fev, feve = M.compute_feve(per_image, pred, return_exp_var=True)
    np.testing.assert_allclose(fev, fev_ref, rtol=1e-6)
    np.testing.assert_allclose(feve, feve_ref, rtol=1e-5)
    # get_feve: the model's FEVE over neurons with FEV >= 0.15, computed in eval mode
    keep = fev_ref >= 0.15
    assert 0 < keep.sum() < 9 or keep.all()
    np.testing.assert_allclose(M.get_feve(model, {"test": batches}), feve_ref[keep], rtol=1e-5)
    np.testing.assert_allclose(M.get_feve(model, batches, threshold=None), feve_ref, rtol=1e-5)
    assert M.get_feve(model, batches, per_neuron=False) == pytest.approx(feve_ref[keep].mean(),
                                                                         rel=1e-5)
    assert model.training is True and set(model.calls) == {False}
    # threshold is inclusive (>=): put one neuron exactly on it
    thr = float(fev_ref[0])
    assert M.get_feve(model, batches, threshold=thr).size == int((fev_ref >= thr).sum())


def test_feve_of_the_true_signal_is_near_one():
    rng = np.random.default_rng(9)
    _, signal, batches, per_image = make_repeat_data(rng, n_images=200, n_neurons=5,
                                                     repeats=(10,), noise=0.5)
    feve = M.compute_feve(per_image, signal)
    np.testing.assert_allclose(feve, 1.0, atol=0.05)
    # a model that predicts a constant explains nothing: FEVE ~ 1 - total/(total - noise) < 0
    assert np.all(M.compute_feve(per_image, np.tile(signal.mean(0), (200, 1))) < 0.05)


def test_avg_correlations():
    rng = np.random.default_rng(10)
    imgs, _, batches, per_image = make_repeat_data(rng, n_images=15, n_neurons=6)
    W = 0.3 * rng.normal(size=(6, 6))
    model = LinearModel(W)
    pred = np.exp(imgs.reshape(15, -1).astype(np.float64) @ W).astype(np.float32)
    means = np.array([p.astype(np.float64).mean(0) for p in per_image])
    ref = ref_corr(means, pred.astype(np.float64))
    np.testing.assert_allclose(M.get_avg_correlations(model, batches), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(M.get_avg_correlations(model, {"test": batches}), ref, rtol=1e-5,
                               atol=1e-6)
    assert model.training is True
    model.calls.clear()
    M.get_avg_correlations(model, batches)
    assert model.calls == [False] * 15, "each test image is forwarded once, in eval mode"
    t, o = M.model_predictions_repeats(model, batches, broadcast_to_target=True)
    assert all(a.shape == b.shape for a, b in zip(t, o))


def test_fraction_oracles():
    rng = np.random.default_rng(11)
    o = rng.uniform(0.1, 0.6, size=40)
    assert M.get_fraction_oracles(o, 0.4 * o) == pytest.approx(0.4)
    c = 0.4 * o + 0.01 * rng.normal(size=40)
    slope = np.linalg.lstsq(o[:, None], c, rcond=None)[0][0]
    assert M.get_fraction_oracles(o, c) == pytest.approx(slope)
    with pytest.raises(ValueError):
        M.get_fraction_oracles(o, c[:-1])
    # nnvision form: (model, dataloaders)
    imgs, _, batches, per_image = make_repeat_data(rng, n_images=15, n_neurons=6)
    model = LinearModel(0.3 * rng.normal(size=(6, 6)))
    expect = M.get_fraction_oracles(M.get_oracles(batches), M.get_correlations(model, batches))
    assert M.get_fraction_oracles(model, {"test": batches}) == pytest.approx(expect)
