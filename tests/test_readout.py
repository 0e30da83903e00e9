"""Gaussian readout ops (readout_positions, gaussian_readout) and FullGaussian2d: forward against a
float64 NumPy reference, gradients against finite differences of that reference, the sampling
statistics and seeding, eval reads at clamp(mu), and the op path against the grid_sample path."""
import numpy as np
import pytest

import lviv_c
from lviv_c import nn
from lviv_c.models.readouts import FullGaussian2d, gaussian_readout, readout_positions

from conftest import numgrad


def T(a, requires_grad=False):
    t = lviv_c.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    t.requires_grad = requires_grad
    return t


def A(t):
    return np.asarray(t.detach())


# ----------------------------------------------------------------------------- NumPy reference
def ref_bilinear(x, pos):
    """x (B, C, H, W) float64, pos (B, N, 2) -> (B, C, N): align_corners=True, zeros outside."""
    B, C, H, W = x.shape
    ix = (pos[..., 0] + 1) * 0.5 * (W - 1)
    iy = (pos[..., 1] + 1) * 0.5 * (H - 1)
    x0, y0 = np.floor(ix).astype(int), np.floor(iy).astype(int)
    tx, ty = ix - x0, iy - y0
    out = np.zeros((B, C, pos.shape[1]))
    for dx, dy, w in ((0, 0, (1 - tx) * (1 - ty)), (1, 0, tx * (1 - ty)), (0, 1, (1 - tx) * ty), (1, 1, tx * ty)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
        for b in range(B):
            v = x[b][:, np.clip(yi[b], 0, H - 1), np.clip(xi[b], 0, W - 1)]  # (C, N)
            out[b] += v * (w[b] * ok[b])[None]
    return out


def ref_readout(x, pos, feat, bias):
    """pos (B, N, 2) or (N, 2); feat (C, N); bias (N) or None -> (B, N)."""
    if pos.ndim == 2:
        pos = np.broadcast_to(pos, (x.shape[0],) + pos.shape)
    y = (ref_bilinear(x, pos) * feat[None]).sum(1)
    return y + bias[None] if bias is not None else y


def interior_positions(rng, shape, H, W, margin=0.08):
    """Positions in [-1, 1] that stay `margin` pixels away from pixel boundaries (FD-safe)."""
    p = rng.uniform(-1, 1, size=shape)
    for k, S in ((0, W), (1, H)):
        pix = (p[..., k] + 1) * 0.5 * (S - 1)
        frac = pix - np.floor(pix)
        frac = np.clip(frac, margin, 1 - margin)
        p[..., k] = (np.floor(pix) + frac) / (0.5 * (S - 1)) - 1
    return np.clip(p, -1 + 1e-3, 1 - 1e-3)


# ----------------------------------------------------------------------------- gaussian_readout
@pytest.mark.parametrize("shared", [False, True])
def test_readout_forward_matches_reference(rng, shared):
    B, C, H, W, N = 3, 5, 6, 9, 17
    x = rng.normal(size=(B, C, H, W))
    pos = rng.uniform(-1, 1, size=(N, 2) if shared else (B, N, 2))
    pos[0] = [-1, -1] if shared else pos[0]
    if not shared:
        pos[0, 0] = [1.0, 1.0]
        pos[1, 1] = [-1.0, 0.3]
    else:
        pos[1] = [1.0, -1.0]
    feat = rng.normal(size=(C, N))
    bias = rng.normal(size=N)
    y = gaussian_readout(T(x), T(pos), T(feat.reshape(1, C, 1, N)), T(bias))
    assert tuple(y.shape) == (B, N)
    np.testing.assert_allclose(A(y), ref_readout(x, pos, feat, bias), rtol=1e-5, atol=1e-5)
    y0 = gaussian_readout(T(x), T(pos), T(feat), None)
    np.testing.assert_allclose(A(y0), ref_readout(x, pos, feat, None), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shared", [False, True])
def test_readout_gradients_match_finite_differences(rng, shared):
    B, C, H, W, N = 2, 3, 5, 7, 6
    x = rng.normal(size=(B, C, H, W))
    pos = interior_positions(rng, (N, 2) if shared else (B, N, 2), H, W)
    feat = rng.normal(size=(C, N))
    bias = rng.normal(size=N)
    gout = rng.normal(size=(B, N))

    tx, tp, tf, tb = T(x, True), T(pos, True), T(feat, True), T(bias, True)
    y = gaussian_readout(tx, tp, tf, tb)
    (y * T(gout)).sum().backward()

    def loss(**kw):
        a = dict(x=x, pos=pos, feat=feat, bias=bias)
        a.update(kw)
        return (ref_readout(a["x"], a["pos"], a["feat"], a["bias"]) * gout).sum()

    np.testing.assert_allclose(A(tx.grad), numgrad(lambda v: loss(x=v), x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(A(tf.grad), numgrad(lambda v: loss(feat=v), feat), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(A(tb.grad), numgrad(lambda v: loss(bias=v), bias), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(A(tp.grad), numgrad(lambda v: loss(pos=v), pos, eps=1e-7), rtol=1e-3, atol=1e-3)


def test_readout_rejects_bad_shapes(rng):
    x = T(rng.normal(size=(2, 3, 4, 5)))
    with pytest.raises(ValueError, match="positions"):
        gaussian_readout(x, T(np.zeros((3, 6, 2))), T(np.zeros((3, 6))), None)
    with pytest.raises(ValueError, match="features"):
        gaussian_readout(x, T(np.zeros((6, 2))), T(np.zeros((2, 6))), None)
    with pytest.raises(ValueError, match="bias"):
        gaussian_readout(x, T(np.zeros((6, 2))), T(np.zeros((3, 6))), T(np.zeros(5)))


# ----------------------------------------------------------------------------- readout_positions
def test_positions_eval_is_clamped_mu(rng):
    mu = rng.uniform(-1.5, 1.5, size=(40, 2)).astype(np.float32)
    tm = T(mu, True)
    p = readout_positions(tm, None, 0, False)
    assert tuple(p.shape) == (40, 2)
    np.testing.assert_allclose(A(p), np.clip(mu, -1, 1), rtol=0, atol=0)
    g = rng.normal(size=(40, 2))
    (p * T(g)).sum().backward()
    np.testing.assert_allclose(A(tm.grad), g * (np.abs(mu) <= 1), rtol=1e-6)


@pytest.mark.parametrize("gauss_type,sshape", [("full", (1, 30, 2, 2)), ("uncorrelated", (1, 30, 1, 2)),
                                               ("isotropic", (1, 30, 1, 1))])
def test_positions_sampling_gradients(rng, gauss_type, sshape):
    """pos = clamp(mu + sigma @ eps): with the same seed the draws repeat, so the op is a
    deterministic piecewise-linear function of mu and sigma; check its gradients by central
    differences (exact for a linear function up to float32 rounding)."""
    N, B = 30, 4
    mu = rng.uniform(-0.9, 0.9, size=(N, 2))
    mu[:3] = [[0.999, 0.0], [-0.999, 0.5], [0.2, 0.999]]  # some draws get clamped
    sigma = rng.uniform(-0.3, 0.3, size=sshape)
    if gauss_type != "full":
        sigma = np.abs(sigma)
    w = rng.normal(size=(B, N, 2))

    def draw(m, s):
        lviv_c.manual_seed(7)
        return A(readout_positions(T(m), T(s), B, True, gauss_type)).astype(np.float64)

    def fd(arr, which, h=1e-3):
        """central differences of sum(w * pos); an element whose +-h evaluations clamp a
        different set of entries (a kink between them) is skipped (NaN)."""
        g = np.full(arr.shape, np.nan)
        for i in np.ndindex(arr.shape):
            a1, a2 = arr.copy(), arr.copy()
            a1[i] += h
            a2[i] -= h
            p1 = draw(a1, sigma) if which == "mu" else draw(mu, a1)
            p2 = draw(a2, sigma) if which == "mu" else draw(mu, a2)
            if ((np.abs(p1) == 1) != (np.abs(p2) == 1)).any():
                continue
            g[i] = ((p1 - p2) * w).sum() / (2 * h)
        return g

    lviv_c.manual_seed(7)
    tm, ts = T(mu, True), T(sigma, True)
    p = readout_positions(tm, ts, B, True, gauss_type)
    assert tuple(p.shape) == (B, N, 2)
    pa = A(p)
    assert pa.min() >= -1 and pa.max() <= 1 and (np.abs(pa) == 1).any()
    (p * T(w)).sum().backward()
    for got, want in ((A(tm.grad), fd(mu.astype(np.float32), "mu")), (A(ts.grad), fd(sigma.astype(np.float32), "sigma"))):
        ok = ~np.isnan(want)
        assert ok.mean() > 0.9
        np.testing.assert_allclose(got[ok], want[ok], rtol=2e-3, atol=2e-3)


def test_positions_sampling_statistics_and_seeding():
    """eps ~ N(0, I) per image and neuron: recover eps = sigma^-1 (pos - mu) and check moments;
    the same seed repeats the draws, successive calls (replays) draw fresh ones."""
    N, B = 500, 64
    rng = np.random.default_rng(1)
    mu = rng.uniform(-0.3, 0.3, size=(N, 2))
    sig = np.tile(np.array([[0.05, 0.02], [-0.01, 0.04]]), (N, 1, 1))
    lviv_c.manual_seed(3)
    p1 = A(readout_positions(T(mu), T(sig), B, True))
    p2 = A(readout_positions(T(mu), T(sig), B, True))
    lviv_c.manual_seed(3)
    p3 = A(readout_positions(T(mu), T(sig), B, True))
    np.testing.assert_array_equal(p1, p3)
    assert not np.allclose(p1, p2)
    eps = np.einsum("cd,bnd->bnc", np.linalg.inv(sig[0]), p1 - mu[None])
    e = eps.reshape(-1, 2)
    assert np.abs(e.mean(0)).max() < 0.03
    cov = np.cov(e.T)
    np.testing.assert_allclose(cov, np.eye(2), atol=0.03)
    # independent across images and neurons
    assert abs(np.corrcoef(eps[:-1, :, 0].ravel(), eps[1:, :, 0].ravel())[0, 1]) < 0.03


# ----------------------------------------------------------------------------- FullGaussian2d
def make_readout(rng, N=12, C=4, H=6, W=8, predictor=True, **kw):
    lviv_c.manual_seed(0)
    gmp = dict(hidden_layers=0, hidden_features=0, final_tanh=False) if predictor else None
    src = rng.normal(size=(N, 2)) * 50 if predictor else None
    return FullGaussian2d((C, H, W), N, True, init_mu_range=0.5, init_sigma=0.3, grid_mean_predictor=gmp,
                          source_grid=src, init_transform_scale=0.6, **kw)


def test_fullgaussian_init_and_shapes(rng):
    ro = make_readout(rng, N=300)
    assert tuple(ro._features.shape) == (1, 4, 1, 300)
    assert tuple(ro.sigma.shape) == (1, 300, 2, 2)
    assert tuple(ro.source_grid.shape) == (300, 2)
    sg = A(ro.source_grid)
    np.testing.assert_allclose(sg.mean(0), 0, atol=1e-6)
    assert np.isclose(np.abs(sg).max(), 1.0)
    s = A(ro.sigma)
    assert s.min() >= -0.3 and s.max() <= 0.3 and s.std() > 0.1
    w = A(ro.mu_transform[0].weight)
    np.testing.assert_allclose(w @ w.T, 0.36 * np.eye(2), atol=1e-5)
    assert np.abs(A(ro._features)).max() < 0.01
    free = make_readout(rng, N=300, predictor=False)
    m = A(free._mu)
    assert m.shape == (1, 300, 1, 2) and np.abs(m).max() <= 0.5 and m.std() > 0.2
    assert {k for k, _ in free.named_parameters()} == {"_mu", "sigma", "_features", "bias"}


def test_fullgaussian_eval_reads_at_mu_and_grid_predictor_gradient(rng):
    """Eval: out = readout at clamp(W g + b); FD of the NumPy reference w.r.t. the grid
    predictor's weight and bias, the features and the feature map."""
    N, C, H, W = 10, 3, 6, 8
    ro = make_readout(rng, N=N, C=C, H=H, W=W)
    ro.eval()
    x = rng.normal(size=(2, C, H, W))
    g = A(ro.source_grid).astype(np.float64)
    Wt = A(ro.mu_transform[0].weight).astype(np.float64)
    bt = A(ro.mu_transform[0].bias).astype(np.float64)
    feat = A(ro._features).reshape(C, N).astype(np.float64)
    bias = A(ro.bias).astype(np.float64)
    gout = rng.normal(size=(2, N))

    def ref(Wt=Wt, bt=bt, feat=feat, x=x):
        mu = np.clip(g @ Wt.T + bt, -1, 1)
        return ref_readout(x, mu, feat, bias)

    tx = T(x, True)
    y = ro(tx)
    np.testing.assert_allclose(A(y), ref(), rtol=1e-5, atol=1e-6)
    (y * T(gout)).sum().backward()
    L = lambda **kw: (ref(**kw) * gout).sum()  # noqa: E731
    np.testing.assert_allclose(A(ro.mu_transform[0].weight.grad), numgrad(lambda v: L(Wt=v), Wt, eps=1e-7),
                               rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(A(ro.mu_transform[0].bias.grad), numgrad(lambda v: L(bt=v), bt, eps=1e-7),
                               rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(A(ro._features.grad).reshape(C, N), numgrad(lambda v: L(feat=v), feat),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(A(tx.grad), numgrad(lambda v: L(x=v), x), rtol=1e-4, atol=1e-5)
    assert ro.sigma.grad is None or np.abs(A(ro.sigma.grad)).max() == 0


@pytest.mark.parametrize("predictor", [True, False])
def test_fullgaussian_op_path_equals_grid_sample_path(rng, predictor):
    """The fused C readout equals grid_sample + channel sum (neuralpredictors' formula), in eval
    and, with the same seed, in training (forward and gradients)."""
    ro = make_readout(rng, predictor=predictor)
    x = rng.normal(size=(3, 4, 6, 8))
    for training in (False, True):
        ro.train(training)
        outs, grads = [], []
        for generic in (False, True):
            for p in ro.parameters():
                p.grad = None
            lviv_c.manual_seed(11)
            tx = T(x)
            y = ro._forward_generic(tx, training, None, None) if generic else ro(tx)
            y.sum().backward()
            outs.append(A(y))
            grads.append({k: A(p.grad).copy() for k, p in ro.named_parameters() if p.grad is not None})
        np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)
        assert grads[0].keys() == grads[1].keys()
        for k in grads[0]:
            np.testing.assert_allclose(grads[0][k], grads[1][k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_free_mu_is_projected_like_neuralpredictors(rng):
    ro = make_readout(rng, predictor=False)
    ro._mu.data.copy_(T(np.full((1, 12, 1, 2), 1.7)))
    ro.eval()
    ro(T(rng.normal(size=(1, 4, 6, 8))))
    np.testing.assert_array_equal(A(ro._mu), 1.0)


def test_readout_regularizer_is_l1_of_features(rng):
    from lviv_c.models.readouts import MultipleFullGaussian2d
    ro = make_readout(rng)
    assert np.isclose(float(ro.feature_l1(average=False)), np.abs(A(ro._features)).sum(), rtol=1e-5)
    assert np.isclose(float(ro.feature_l1()), np.abs(A(ro._features)).mean(), rtol=1e-5)
    assert issubclass(MultipleFullGaussian2d, nn.ModuleDict)
