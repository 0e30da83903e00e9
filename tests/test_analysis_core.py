"""Analysis identities on models built from bare tensors: the gradient RF of an LN neuron is its
scaled weight vector; the MEI of a linear neuron under a fixed L2 norm is c w/||w||, under the
mean/std constraint m + s (w - mean w)/std w; cross-activation is column-normalised."""
import numpy as np
import pytest

import lviv_c as L
from lviv_c.analysis import cross_activation, generate_mei, gradient_rf
from lviv_c.tensor import ELU

H, W, N = 6, 8, 5


class LinearModel:
    def __init__(self, seed=0, nonlin=False):
        rng = np.random.default_rng(seed)
        self.w = rng.standard_normal((H * W, N)).astype(np.float32)
        self.W = L.from_numpy(self.w.copy())
        self.W.requires_grad = True
        self.nonlin = nonlin
        self.training = True

    def parameters(self):
        return [self.W]

    def train(self, mode=True):
        self.training = mode

    def eval(self):
        self.training = False

    def __call__(self, x):
        z = x.flatten(1) @ self.W
        return L._C.unary(ELU, z, 1.0) + 1 if self.nonlin else z


def test_gradient_rf_of_ln_is_elu_prime_times_weights():
    m = LinearModel(nonlin=True)
    img = np.random.default_rng(1).standard_normal((H, W)).astype(np.float32) * 0.1
    rf = gradient_rf(m, None, img, batch_size=2)
    z = img.reshape(-1) @ m.w
    elu_prime = np.where(z > 0, 1.0, np.exp(z))
    ref = (m.w * elu_prime).T.reshape(N, H, W)
    assert rf.shape == (N, H, W)
    np.testing.assert_allclose(rf, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gradient_rf(m, 3, img), ref[3], rtol=1e-5, atol=1e-6)
    assert m.training and m.W.requires_grad and m.W.grad is None  # no side effects
    with pytest.raises(IndexError, match="neuron_idx"):
        gradient_rf(m, 9, img)


def test_mei_fixed_l2_norm_is_normalised_weights():
    m = LinearModel(seed=2)
    c = 3.0
    img = np.random.default_rng(3).standard_normal((H, W)).astype(np.float32)
    trace, mei = generate_mei(m, img, [0, 4], iterations=300, lr=0.05, l2_norm=c, progress=False)
    for k, n in enumerate([0, 4]):
        ref = c * m.w[:, n] / np.linalg.norm(m.w[:, n])
        np.testing.assert_allclose(mei[k].reshape(-1), ref, atol=2e-3)
    assert trace.shape == (300, 2)
    assert trace[-1, 0] > trace[0, 0]


def test_mei_mean_std_constraint():
    m = LinearModel(seed=4)
    mean, std = 110.0, 60.0
    img = np.full((H, W), mean, np.float32) + np.random.default_rng(5).standard_normal((H, W)).astype(np.float32)
    trace, mei = generate_mei(m, img, 2, iterations=400, mean_constr=mean, std_constr=std, lr=1.0, progress=False)
    w = m.w[:, 2].astype(np.float64)
    ref = mean + std * (w - w.mean()) / w.std(ddof=1)
    assert mei.shape == (H, W) and trace.shape == (400,)
    np.testing.assert_allclose(mei.reshape(-1), ref, atol=0.05 * std)
    assert np.corrcoef(mei.reshape(-1), ref)[0, 1] > 0.999
    assert abs(mei.mean() - mean) < 1e-2 and abs(mei.std(ddof=1) - std) < 0.1


def test_mei_seeds_blur_clip_shapes():
    m = LinearModel(seed=6)
    img = np.zeros((H, W), np.float32)
    trace, mei = generate_mei(m, img, [1, 2, 3], iterations=20, lr=0.1, seeds=[0, 1], blur_sigma=1.0,
                              clip=(-0.5, 0.5), progress=False)
    assert mei.shape == (3, 2, H, W) and trace.shape == (20, 3, 2)
    assert mei.min() >= -0.5 and mei.max() <= 0.5
    assert not np.allclose(mei[0, 0], mei[0, 1])  # different seeds start differently


def test_cross_activation_normalised():
    m = LinearModel(seed=7)
    meis = np.stack([m.w[:, n].reshape(H, W) / np.linalg.norm(m.w[:, n]) for n in range(N)])
    ca = cross_activation(m, meis, list(range(N)))
    assert ca.shape == (N, N)
    np.testing.assert_allclose(ca.max(0), 1.0)
    assert np.all(np.argmax(ca, 0) == np.arange(N))  # each neuron's own MEI drives it most
