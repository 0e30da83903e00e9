"""Forward (vs float64 NumPy) and finite-difference gradient checks of every nn op."""
import numpy as np
import pytest

import lviv_c
from lviv_c.nn import functional as F

import nn_ref as R
from nn_ref import check_grad, t


def rnd(*shape, seed=0, scale=1.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale


# ------------------------------------------------------------------ linear
@pytest.mark.parametrize("bias", [True, False])
def test_linear_grad(bias):
    x, w, b = rnd(3, 5, seed=1), rnd(4, 5, seed=2), rnd(4, seed=3)
    ins = [x, w, b if bias else None]
    check_grad(lambda x, w, b: F.linear(x, w, b), lambda x, w, b: x @ w.T + (b if b is not None else 0),
               ins, check=[0, 1, 2] if bias else [0, 1])


def test_linear_3d_input():
    x, w, b = rnd(2, 3, 5, seed=1), rnd(4, 5, seed=2), rnd(4, seed=3)
    check_grad(lambda x, w, b: F.linear(x, w, b), lambda x, w, b: x @ w.T + b, [x, w, b], check=[0, 1, 2])


# ------------------------------------------------------------------ conv2d
CONV_CASES = [
    dict(C=2, O=3, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, bias=True),
    dict(C=2, O=2, k=(3, 2), stride=(2, 1), padding=(0, 1), dilation=(1, 1), groups=1, bias=False),
    dict(C=2, O=4, k=(3, 3), stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2, bias=True),
    dict(C=3, O=3, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=3, bias=False),  # depthwise
    dict(C=3, O=6, k=(5, 5), stride=(1, 1), padding=(2, 2), dilation=(1, 1), groups=3, bias=False),  # depth multiplier 2
    dict(C=3, O=2, k=(1, 1), stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, bias=True),  # 1x1
    dict(C=2, O=2, k=(1, 1), stride=(2, 2), padding=(1, 0), dilation=(1, 1), groups=1, bias=False),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_grad(case):
    c = case
    x = rnd(2, c["C"], 6, 7, seed=4)
    w = rnd(c["O"], c["C"] // c["groups"], *c["k"], seed=5)
    b = rnd(c["O"], seed=6) if c["bias"] else None
    kw = dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"])
    check_grad(lambda x, w, b: F.conv2d(x, w, b, **kw), lambda x, w, b: R.conv2d(x, w, b, **kw),
               [x, w, b], check=[0, 1, 2] if c["bias"] else [0, 1])


@pytest.mark.parametrize("k", [(3, 3), (4, 4), (2, 5), (4, 3)])
@pytest.mark.parametrize("dil", [1, 2])
def test_conv2d_same_padding(k, dil):
    x = rnd(1, 2, 7, 8, seed=7)
    w = rnd(2, 2, *k, seed=8)
    out = F.conv2d(t(x), t(w), padding="same", dilation=dil)
    assert tuple(out.shape) == (1, 2, 7, 8)
    # PyTorch: total = d*(k-1), left = total//2, right = total - left
    pads = [(dil * (kk - 1) // 2, dil * (kk - 1) - dil * (kk - 1) // 2) for kk in k]
    xp = np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]))
    ref = R.conv2d(xp, w, dilation=(dil, dil))
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-4)


def test_conv2d_same_grad_even_kernel():
    x, w = rnd(1, 2, 5, 6, seed=9), rnd(3, 2, 4, 2, seed=10)

    def ref(x, w):
        return R.conv2d(np.pad(x, ((0, 0), (0, 0), (1, 2), (0, 1))), w)
    check_grad(lambda x, w: F.conv2d(x, w, padding="same"), ref, [x, w], check=[0, 1])


def test_conv2d_errors():
    x = lviv_c.zeros(60, 3, 36, 64)
    w = lviv_c.zeros(8, 1, 15, 15)
    with pytest.raises(ValueError, match=r"conv2d: input has 3 channels, weight expects 1 \(input shape \(60, 3, 36, 64\)"):
        F.conv2d(x, w)
    with pytest.raises(ValueError, match="4-d input"):
        F.conv2d(lviv_c.zeros(3, 4), w)
    with pytest.raises(ValueError, match="larger than the padded input"):
        F.conv2d(lviv_c.zeros(1, 1, 5, 5), w)
    with pytest.raises(ValueError, match="bias"):
        F.conv2d(lviv_c.zeros(1, 1, 20, 20), w, lviv_c.zeros(3))
    with pytest.raises(ValueError, match="strided"):
        F.conv2d(lviv_c.zeros(1, 1, 20, 20), w, stride=2, padding="same")


# ------------------------------------------------------------------ batch norm
@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 5), (3, 2, 3, 4)])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_train_grad(shape, affine):
    C = shape[1]
    x = rnd(*shape, seed=11) * 2 + 0.5
    g, b = (rnd(C, seed=12), rnd(C, seed=13)) if affine else (None, None)
    rm, rv = lviv_c.zeros(C), lviv_c.ones(C)

    def lv(x, g, b):
        return F.batch_norm(x, rm, rv, g, b, training=True, momentum=0.1, eps=1e-5)
    check_grad(lv, lambda x, g, b: R.batch_norm_train(x, g, b), [x, g, b],
               check=[0, 1, 2] if affine else [0], rtol=5e-3)


@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_eval_grad(affine):
    x = rnd(3, 2, 3, 4, seed=14)
    g, b = (rnd(2, seed=12), rnd(2, seed=13)) if affine else (None, None)
    rm_np, rv_np = np.array([0.3, -0.2]), np.array([1.5, 0.7])
    rm, rv = t(rm_np), t(rv_np)
    check_grad(lambda x, g, b: F.batch_norm(x, rm, rv, g, b, training=False),
               lambda x, g, b: R.batch_norm_eval(x, rm_np, rv_np, g, b), [x, g, b],
               check=[0, 1, 2] if affine else [0])
    # eval must not touch the running stats
    np.testing.assert_allclose(np.asarray(rm), rm_np, rtol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_elu_fused_grad(training):
    x = rnd(3, 2, 3, 4, seed=15) * 2
    g, b = rnd(2, seed=16), rnd(2, seed=17)
    rm_np, rv_np = np.array([0.1, -0.2]), np.array([1.2, 0.8])
    rm, rv = t(rm_np), t(rv_np)

    def ref(x, g, b):
        z = R.batch_norm_train(x, g, b) if training else R.batch_norm_eval(x, rm_np, rv_np, g, b)
        return R.elu(z)
    check_grad(lambda x, g, b: F.batch_norm_elu(x, rm, rv, g, b, training=training), ref, [x, g, b],
               check=[0, 1, 2], rtol=5e-3)


def test_batch_norm_no_running_stats_uses_batch():
    x = rnd(4, 3, seed=18)
    out = F.batch_norm(t(x), None, None, training=False)
    np.testing.assert_allclose(np.asarray(out), R.batch_norm_train(x), rtol=1e-4, atol=1e-5)


def test_batch_norm_errors():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(lviv_c.zeros(1, 3), None, None, training=True)
    with pytest.raises(ValueError, match=r"weight has shape \(2,\), expected \(3,\)"):
        F.batch_norm(lviv_c.zeros(4, 3), None, None, lviv_c.ones(2), training=True)


# ------------------------------------------------------------------ elu & co
def test_elu_grad():
    x = rnd(3, 4, seed=19)
    x[np.abs(x) < 0.05] = 0.3
    check_grad(lambda x: F.elu(x), R.elu, [x], check=[0])
    check_grad(lambda x: F.elu(x, alpha=0.5), lambda x: R.elu(x, 0.5), [x], check=[0])


# ------------------------------------------------------------------ grid_sample
def _grid(N, Ho, Wo, H, W, seed, align):
    g = np.random.default_rng(seed).uniform(-1.15, 1.15, size=(N, Ho, Wo, 2))
    # keep sampling positions away from integer pixel coordinates (kinks of bilinear)
    for d, size in ((0, W), (1, H)):
        pix = (g[..., d] + 1) / 2 * (size - 1) if align else ((g[..., d] + 1) * size - 1) / 2
        frac = pix - np.floor(pix)
        pix = np.where(frac < 0.1, pix + 0.2, np.where(frac > 0.9, pix - 0.2, pix))
        g[..., d] = pix / (size - 1) * 2 - 1 if align else (2 * pix + 1) / size - 1
    return g


@pytest.mark.parametrize("align", [True, False])
def test_grid_sample_grad(align):
    x = rnd(2, 3, 4, 5, seed=20)
    g = _grid(2, 3, 4, 4, 5, seed=21, align=align)
    check_grad(lambda x, g: F.grid_sample(x, g, align_corners=align),
               lambda x, g: R.grid_sample(x, g, align), [x, g], check=[0, 1])


def test_grid_sample_corners():
    x = np.arange(12, dtype=np.float32).reshape(1, 1, 3, 4)
    g = np.array([[[[-1, -1], [1, 1], [1, -1], [-1, 1]]]], dtype=np.float32)
    out = np.asarray(F.grid_sample(t(x), t(g), align_corners=True)).ravel()
    np.testing.assert_allclose(out, [0, 11, 3, 8])
    out = np.asarray(F.grid_sample(t(x), t(g), align_corners=False)).ravel()
    np.testing.assert_allclose(out, [0, 11 / 4, 3 / 4, 8 / 4])  # outer edges: a quarter of the corner pixel


# ------------------------------------------------------------------ avg_pool2d, pad
@pytest.mark.parametrize("k,s,p", [((2, 2), (2, 2), (0, 0)), ((3, 2), (1, 2), (1, 1)), ((3, 3), (2, 2), (1, 0))])
def test_avg_pool2d_grad(k, s, p):
    x = rnd(2, 2, 6, 7, seed=22)
    check_grad(lambda x: F.avg_pool2d(x, k, s, p), lambda x: R.avg_pool2d(x, k, s, p), [x], check=[0])


def test_avg_pool2d_default_stride_and_3d():
    x = rnd(2, 4, 6, seed=23)
    out = F.avg_pool2d(t(x), 2)
    np.testing.assert_allclose(np.asarray(out), R.avg_pool2d(x, (2, 2), (2, 2), (0, 0)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pads", [(1, 2), (0, 1, 2, 0), (1, 1, 0, 2, 1, 0)])
def test_pad_grad(pads):
    x = rnd(2, 3, 4, seed=24)
    npp = [(0, 0)] * (3 - len(pads) // 2) + [(pads[2 * i], pads[2 * i + 1]) for i in reversed(range(len(pads) // 2))]
    check_grad(lambda x: F.pad(x, pads, value=0.5), lambda x: np.pad(x, npp, constant_values=0.5), [x], check=[0])


# ------------------------------------------------------------------ dropout
def test_dropout_mask_consistency():
    lviv_c.manual_seed(3)
    x = t(rnd(50, 40, seed=25) + 5.0, grad=True)  # no zeros in x
    y = F.dropout(x, p=0.3, training=True)
    y.backward(lviv_c.ones(50, 40))
    ratio = np.asarray(y.detach()) / np.asarray(x.detach())
    g = np.asarray(x.grad)
    np.testing.assert_allclose(ratio, g, rtol=1e-5, atol=1e-6)  # the forward mask is the backward mask
    vals = np.unique(np.round(g, 5))
    np.testing.assert_allclose(vals, [0.0, round(1 / 0.7, 5)], rtol=1e-5)
    assert 0.25 < np.mean(g == 0) < 0.35
    assert F.dropout(x, 0.3, training=False) is x


def test_dropout_reproducible():
    lviv_c.manual_seed(7)
    a = np.asarray(F.dropout(lviv_c.ones(100), 0.5))
    lviv_c.manual_seed(7)
    b = np.asarray(F.dropout(lviv_c.ones(100), 0.5))
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ poisson loss
def test_poisson_loss_grad():
    yhat = np.exp(rnd(4, 6, seed=26) * 0.5)
    y = np.abs(rnd(4, 6, seed=27))
    check_grad(lambda a, b: F.poisson_loss(a, b), lambda a, b: R.poisson_loss(a, b), [yhat, y], check=[0, 1])
    out = F.poisson_loss(t(yhat), t(y), avg=True)
    np.testing.assert_allclose(float(out), R.poisson_loss(yhat, y) / y.size, rtol=1e-5)
    none = F.poisson_loss(t(yhat), t(y), reduction="none")
    np.testing.assert_allclose(np.asarray(none), yhat - y * np.log(yhat + 1e-12), rtol=1e-5, atol=1e-6)


def test_poisson_loss_shape_error():
    with pytest.raises(ValueError, match=r"output shape \(2, 3\) and target shape \(3, 2\)"):
        F.poisson_loss(lviv_c.ones(2, 3), lviv_c.ones(3, 2))


def test_ops_reject_int_and_non_tensor():
    with pytest.raises(TypeError):
        F.conv2d(np.zeros((1, 1, 3, 3)), lviv_c.zeros(1, 1, 1, 1))
    with pytest.raises(TypeError):
        F.linear(lviv_c.zeros(2, 3, dtype=lviv_c.int64), lviv_c.zeros(2, 3))


def test_empty_and_degenerate_shapes():
    out = F.linear(lviv_c.zeros(4, 0), lviv_c.zeros(2, 0), lviv_c.tensor([1.5, -2.0]))
    np.testing.assert_array_equal(np.asarray(out), [[1.5, -2.0]] * 4)
    assert tuple(F.linear(lviv_c.zeros(0, 3), lviv_c.zeros(2, 3)).shape) == (0, 2)
    assert tuple(F.conv2d(lviv_c.zeros(0, 1, 5, 5), lviv_c.zeros(2, 1, 3, 3)).shape) == (0, 2, 3, 3)
    assert tuple(F.batch_norm(lviv_c.zeros(0, 3), lviv_c.zeros(3), lviv_c.ones(3)).shape) == (0, 3)
    assert tuple(F.avg_pool2d(lviv_c.zeros(0, 2, 4, 4), 2).shape) == (0, 2, 2, 2)
    assert float(F.poisson_loss(lviv_c.zeros(0), lviv_c.zeros(0))) == 0.0
    with pytest.raises(ValueError, match="too large for a 1-d input"):
        F.pad(lviv_c.zeros(3), (1, 1, 1, 1))
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.dropout(lviv_c.zeros(3), 2.0)
