"""The analysis loops against a plain reference: gradient RFs (one forward shared by every chunk of
neurons, lviv_c._C.gradient_rfs) against one eager forward + backward per chunk, as the analysis
did before; the C MEI loop (backend entries: momentum step, clipping, per-image L2
renormalisation, Gaussian blur of the gradient, the activation trace) against the same loop
written in NumPy over eager forward/backward passes. Bit for bit on the CPU: the arithmetic is
the same, in the same order. On the (emulated or real) GPU: the same answers, the model left on
the device, and only the image, the neuron indices/mask and the results crossing."""
import numpy as np
import pytest

import lviv_c as L
from lviv_c import _C
from lviv_c.analysis import cross_activation, generate_mei, gradient_rf
from lviv_c.tensor import from_numpy, no_grad

LURZ = dict(init_mu_range=0.55, init_sigma=0.4, input_kern=5, hidden_kern=3, gamma_input=1.0, layers=3,
            hidden_channels=8, gamma_readout=2.439,
            grid_mean_predictor={"type": "cortex", "input_dimensions": 2, "hidden_layers": 0,
                                 "hidden_features": 0, "final_tanh": False})


@pytest.fixture(scope="module")
def loaders(tmp_path_factory):
    from lviv_c.dataset import load_dataset
    from lviv_c.synthetic import make_scan
    scan = make_scan(str(tmp_path_factory.mktemp("paths")), n_trials=60, n_neurons=20, n_test_images=3,
                     n_repeats=2, n_validation=10, seed=0, progress=False)
    return load_dataset(scan, batch_size=16, seed=1, cuda=False)


def _lurz(loaders):
    from lviv_c.models import build_lurz2020_model
    return build_lurz2020_model(dataloaders=loaders, seed=5, **LURZ)


IMG = (np.random.default_rng(0).standard_normal((36, 64)) * 10 + 100).astype(np.float32)


def _rf_per_chunk(model, neurons, img, batch_size):
    """The previous gradient_rf: per chunk, a forward of the chunk's copies and one backward."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad = False
    try:
        out_rf = []
        for s in range(0, len(neurons), batch_size):
            chunk = neurons[s:s + batch_size]
            x = from_numpy(np.repeat(img[None, None], len(chunk), 0).copy())
            x.requires_grad = True
            out = model(x)
            seed = np.zeros((len(chunk), out.shape[1]), np.float32)
            seed[np.arange(len(chunk)), chunk] = 1
            out.backward(from_numpy(seed))
            out_rf.append(np.array(memoryview(x.grad))[:, 0])
        return np.concatenate(out_rf)
    finally:
        for p in params:
            p.requires_grad = True
        model.train()


def _blur(g, sigma):
    """The separable Gaussian blur of lv_optimize_input (zero padding; taps summed in order)."""
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * np.arange(-r, r + 1) ** 2 / sigma ** 2).astype(np.float32)
    k = (k / k.astype(np.float64).sum()).astype(np.float32)
    H, W = g.shape[-2:]

    def along(a, axis, n):
        acc = np.zeros_like(a)
        for i in range(-r, r + 1):
            sh = np.zeros_like(a)
            src = [slice(None)] * a.ndim
            dst = [slice(None)] * a.ndim
            if i >= 0:
                src[axis], dst[axis] = slice(i, n), slice(0, n - i)
            else:
                src[axis], dst[axis] = slice(0, n + i), slice(-i, n)
            sh[tuple(dst)] = a[tuple(src)]
            valid = np.zeros(n, bool)
            valid[max(0, -i):min(n, n - i)] = True
            term = k[i + r] * sh
            shape = [1] * a.ndim
            shape[axis] = n
            acc = np.where(valid.reshape(shape), acc + term, acc)
        return acc
    return along(along(g, g.ndim - 1, W), g.ndim - 2, H)


def _mei_numpy(model, img, neurons, iterations, lr, momentum, clip=None, l2=None, blur=0.0):
    """generate_mei's loop (no mean/std transform) with eager passes and NumPy updates."""
    model.eval()
    for p in model.parameters():
        p.requires_grad = False
    K = len(neurons)
    x = np.repeat(img[None, None], K, 0).copy()
    if l2 is not None:
        x *= l2 / np.sqrt((x.reshape(K, -1) ** 2).sum(1)).reshape(K, 1, 1, 1)
    buf = np.zeros_like(x)
    trace = []
    for _ in range(iterations):
        xt = from_numpy(x.copy())
        xt.requires_grad = True
        out = model(xt)
        o = np.array(memoryview(out.detach()))
        trace.append(o[np.arange(K), neurons])
        mask = np.zeros_like(o)
        mask[np.arange(K), neurons] = 1
        (-(out * from_numpy(mask)).sum()).backward()
        g = np.array(memoryview(xt.grad))
        if blur > 0:
            g = _blur(g, blur)
        buf = np.float32(momentum) * buf + g
        x = x - np.float32(lr) * buf
        if clip is not None:
            x = np.clip(x, np.float32(clip[0]), np.float32(clip[1]))
        if l2 is not None:
            s = np.cumsum(x.reshape(K, -1).astype(np.float64) ** 2, axis=1)[:, -1]   # in order
            f = np.where(s > 0, (l2 / np.sqrt(s)).astype(np.float32), np.float32(1))
            x = x * f.reshape(K, 1, 1, 1)
    for p in model.parameters():
        p.requires_grad = True
    model.train()
    return np.array(trace), x[:, 0]


@pytest.mark.parametrize("batch_size", [6, 64])
def test_gradient_rfs_share_one_forward_and_equal_the_per_chunk_path(loaders, batch_size):
    m = _lurz(loaders)
    neurons = np.array([3, 0, 19, 7, 7, 11, 2, 15, 4, 1, 9, 13, 18])   # repeats, unsorted, a short last chunk
    ref = _rf_per_chunk(m, neurons, IMG, batch_size)
    rf = gradient_rf(m, neurons, IMG, batch_size=batch_size)
    assert rf.shape == (len(neurons), 36, 64) and np.abs(rf).max() > 0
    np.testing.assert_array_equal(rf, ref)
    np.testing.assert_array_equal(gradient_rf(m, neurons, IMG, batch_size=batch_size), rf)   # run to run
    assert m.training                                      # the model's mode restored
    with pytest.raises(ValueError, match="batch_size"):
        gradient_rf(m, neurons, IMG, batch_size=0)


@pytest.mark.parametrize("opts", [dict(lr=20.0, momentum=0.9),
                                  dict(lr=50.0, momentum=0.8, clip=(-200.0, 400.0), l2=3000.0, blur=1.5)])
def test_mei_loop_equals_the_numpy_loop(loaders, opts):
    m = _lurz(loaders)
    neurons = np.array([1, 2, 17])
    tr_ref, mei_ref = _mei_numpy(m, IMG, neurons, 4, **opts)
    kw = dict(lr=opts["lr"], momentum=opts["momentum"], clip=opts.get("clip"), l2_norm=opts.get("l2"),
              blur_sigma=opts.get("blur", 0.0))
    tr, mei = generate_mei(m, IMG, neurons, iterations=4, progress=False, **kw)
    np.testing.assert_array_equal(tr, tr_ref)
    if opts.get("blur"):
        # the NumPy blur rounds like the C one except where a tap sum meets zero padding
        np.testing.assert_allclose(mei, mei_ref, rtol=2e-6, atol=1e-3)
    else:
        np.testing.assert_array_equal(mei, mei_ref)
    assert not np.array_equal(mei, np.repeat(IMG[None], 3, 0))
    tr2, mei2 = generate_mei(m, IMG, neurons, iterations=4, progress=False, **kw)     # run to run
    np.testing.assert_array_equal(tr2, tr)
    np.testing.assert_array_equal(mei2, mei)


@pytest.mark.cuda
@pytest.mark.skipif(not L.cuda.is_available(), reason="no CUDA GPU and no emulated device")
def test_analysis_on_the_gpu_in_place_with_only_images_and_results_crossing(loaders):
    mc = _lurz(loaders)
    neurons = [4, 0, 9, 13, 2]
    rf_c = gradient_rf(mc, neurons, IMG, batch_size=3)
    kw = dict(iterations=3, lr=40.0, l2_norm=3000.0, clip=(-200.0, 400.0), blur_sigma=1.0, progress=False)
    tr_c, mei_c = generate_mei(mc, IMG, neurons, **kw)
    mg = _lurz(loaders)
    mg.load_state_dict(mc.state_dict())      # (the readout bias starts from a loader batch)
    mg.to("cuda")
    params = [id(p) for p in mg.parameters()]
    emulated = L.cuda.emulated()
    if emulated:
        before = _C._emulated_transfers()
    rf_g = gradient_rf(mg, neurons, IMG, batch_size=3)
    if emulated:
        mid = _C._emulated_transfers()
    tr_g, mei_g = generate_mei(mg, IMG, neurons, **kw)
    if emulated:
        after = _C._emulated_transfers()
    xa_c = cross_activation(mc, mei_c, neurons)
    xa_g = cross_activation(mg, mei_c, neurons)
    np.testing.assert_allclose(xa_g, xa_c, rtol=1e-5, atol=1e-6)
    assert all(p.is_cuda for p in mg.parameters()) and [id(p) for p in mg.parameters()] == params
    assert all(b.is_cuda for b in mg.buffers())
    if emulated:      # the same CPU kernels behind the device tag: the same bits
        np.testing.assert_array_equal(rf_g, rf_c)
        np.testing.assert_array_equal(tr_g, tr_c)
        np.testing.assert_array_equal(mei_g, mei_c)
        img_b, n, K = 36 * 64 * 4, len(neurons), len(neurons)
        # RFs: the probe image, the 3 copies of the image, the neuron indices in; the RFs out
        assert mid["h2d_bytes"] - before["h2d_bytes"] == img_b + 3 * img_b + 8 * n
        assert mid["d2h_bytes"] - before["d2h_bytes"] == n * img_b
        # MEIs: the K start images, the probe image, the flat positions of the chosen outputs
        # and the neuron indices in; the trace (iterations x K) and the K MEIs out
        assert after["h2d_bytes"] - mid["h2d_bytes"] == K * img_b + img_b + 8 * K + 8 * K
        # (and the flat positions once, when index_select checks their range at capture)
        assert after["d2h_bytes"] - mid["d2h_bytes"] == 4 * 3 * K + K * img_b + 8 * K
    else:
        np.testing.assert_allclose(rf_g, rf_c, rtol=1e-4, atol=1e-6 * np.abs(rf_c).max())
        np.testing.assert_allclose(mei_g, mei_c, rtol=1e-4, atol=1e-2)


@pytest.mark.cuda
@pytest.mark.skipif(not L.cuda.is_available(), reason="no CUDA GPU and no emulated device")
def test_analysis_entries_of_the_cuda_table_match_the_cpu_table():
    """The four entries called directly in both tables (through the test-only ctypes harness):
    on a GPU this checks the CUDA kernels (cuda/analysis.cu), on the emulated device the dispatch."""
    import ctypes
    import sys
    import os
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from backend_ffi import backend
    P, I64, I, F, D = (ctypes.POINTER(ctypes.c_float), ctypes.c_int64, ctypes.c_int, ctypes.c_float,
                       ctypes.c_double)
    sig = {"index_cols": ctypes.CFUNCTYPE(I, I64, I64, P, ctypes.c_void_p, P, I),
           "blur_planes": ctypes.CFUNCTYPE(I, I64, I64, I64, I, P, P, P),
           "momentum_step": ctypes.CFUNCTYPE(I, I64, P, P, P, F, F, I, F, F),
           "renorm_rows": ctypes.CFUNCTYPE(I, I64, I64, P, D),
           "synchronize": ctypes.CFUNCTYPE(I)}
    rng = np.random.default_rng(3)
    K, Hh, Ww = 3, 9, 11
    x0 = rng.standard_normal((K, Hh * Ww)).astype(np.float32) * 5
    g0 = rng.standard_normal((K, Hh * Ww)).astype(np.float32)
    b0 = rng.standard_normal((K, Hh * Ww)).astype(np.float32)
    idx = np.array([4, 0, 98], np.int64)
    r = 3
    taps = np.exp(-0.5 * np.arange(-r, r + 1) ** 2 / 1.2 ** 2).astype(np.float32)
    taps /= taps.sum()
    res = {}
    for dev in ("cpu", "cuda"):
        ts = {k: L.tensor(v.copy(), device=dev) for k, v in (("x", x0), ("g", g0), ("b", b0))}
        t = backend(dev)          # (after the first device tensor: the table is installed lazily)
        f = {k: s(getattr(t, k)) for k, s in sig.items()}
        it = L.tensor(idx, device=dev)
        vec, tmp = L.zeros(K, device=dev), L.zeros(K * Hh * Ww, device=dev)
        p = lambda a: ctypes.cast(ctypes.c_void_p(a._data_ptr), P)   # noqa: E731
        assert f["index_cols"](K, Hh * Ww, p(ts["x"]), ctypes.c_void_p(it._data_ptr), p(vec), 0) == 0
        assert f["blur_planes"](K, Hh, Ww, r, taps.ctypes.data_as(P), p(ts["g"]), p(tmp)) == 0
        assert f["momentum_step"](K * Hh * Ww, p(ts["x"]), p(ts["g"]), p(ts["b"]), 0.5, 0.9, 1, -6.0, 7.0) == 0
        assert f["renorm_rows"](K, Hh * Ww, p(ts["x"]), 30.0) == 0
        ones = L.ones(K, device=dev)
        assert f["index_cols"](K, Hh * Ww, p(ts["b"]), ctypes.c_void_p(it._data_ptr), p(ones), 1) == 0
        assert f["synchronize"]() == 0
        res[dev] = {k: _host_np(v) for k, v in ts.items()} | {"vec": _host_np(vec)}
    c, g = res["cpu"], res["cuda"]
    np.testing.assert_array_equal(c["vec"], x0[np.arange(K), idx])
    assert np.all(c["g"] == 0) and np.all(c["b"][np.arange(K), idx] == 1)
    np.testing.assert_allclose(np.sqrt((c["x"].astype(np.float64) ** 2).sum(1)), 30.0, rtol=1e-5)
    for k in c:
        np.testing.assert_allclose(g[k], c[k], rtol=1e-5, atol=1e-5, err_msg=k)


def _host_np(t):
    return np.array(memoryview(t.cpu() if t.is_cuda else t), copy=True)


@pytest.mark.parametrize("fused", [False, True])
def test_batchnorm_eval_input_gradient_alone_equals_the_full_backward(fused):
    """The eval-mode BatchNorm(+ELU) backward for the input only (the analysis' case: frozen
    parameters, one vectorised pass) gives the input gradient of the full backward (which also
    sums the parameter gradients), and d/dx matches finite differences."""
    from lviv_c.nn import functional as F
    rng = np.random.default_rng(7)
    C, n = 5, 37                                   # a plane length that is not a multiple of 8
    x0 = (rng.standard_normal((3, C, n)) * 2).astype(np.float32)
    rm, rv = L.tensor(rng.standard_normal(C).astype(np.float32)), L.tensor(rng.uniform(0.5, 2, C).astype(np.float32))
    w0, b0 = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    gy = L.tensor(rng.standard_normal(x0.shape).astype(np.float32))
    f = F.batch_norm_elu if fused else F.batch_norm

    def grad_x(params_grad):
        x = L.tensor(x0, requires_grad=True)
        w, b = L.tensor(w0, requires_grad=params_grad), L.tensor(b0, requires_grad=params_grad)
        f(x, rm, rv, w, b, training=False).backward(gy)
        return np.array(memoryview(x.grad))
    alone, full = grad_x(False), grad_x(True)
    np.testing.assert_array_equal(alone, full)
    e, i = 1e-2, (1, 3, 30)

    def loss(xv):
        with no_grad():
            return float((f(L.tensor(xv), rm, rv, L.tensor(w0), L.tensor(b0), training=False) * gy).sum())
    xp, xm = x0.copy(), x0.copy()
    xp[i] += e
    xm[i] -= e
    np.testing.assert_allclose(alone[i], (loss(xp) - loss(xm)) / (2 * e), rtol=2e-2, atol=1e-3)


def _elu1_fast_np(z):
    """lv_f_elu1_fast (csrc/formulas.h) in float32 NumPy, operation by operation."""
    f = np.float32
    z = z.astype(np.float32)
    u = np.where(z < 0, z, f(0))
    u = np.where(u < f(-87), f(-87), u)
    t = u * f(1.44269504088896341)
    n = (t - f(0.5)).astype(np.int32)
    fn = n.astype(np.float32)
    r = u - fn * f(0.693359375) + fn * f(2.12194440e-4)
    p = f(1.9875691500E-4)
    for c in (1.3981999507E-3, 8.3334519073E-3, 4.1665795894E-2, 1.6666665459E-1, 5.0000001201E-1):
        p = p * r + f(c)
    p = p * r * r + r + f(1)
    sc = ((n + 127) << 23).astype(np.int32).view(np.float32)
    return np.where(z > 0, z, p * sc - f(1))


def test_batchnorm_elu_eval_forward_is_the_scalar_formula():
    """The vectorised eval BatchNorm+ELU (vector lanes and a scalar tail) gives lv_f_elu1_fast's
    values over the whole range: positive, zero, around the -87 clamp, far below it (to the
    rounding of the fused multiply-adds the compiler may use in the vector loop)."""
    from lviv_c.nn import functional as F
    rng = np.random.default_rng(11)
    C, n = 4, 61
    x = np.concatenate([rng.standard_normal(3 * C * n - 8) * 30,
                        [0.0, -0.0, -86.9, -87.0, -87.1, -300.0, 1e-30, -1e-30]]).astype(np.float32)
    x = rng.permutation(x).reshape(3, C, n)
    rm, rv = rng.standard_normal(C).astype(np.float32), rng.uniform(0.5, 2, C).astype(np.float32)
    w, b = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    with no_grad():
        y = F.batch_norm_elu(L.tensor(x), L.tensor(rm), L.tensor(rv), L.tensor(w), L.tensor(b), training=False)
    is_ = (1.0 / np.sqrt(rv.astype(np.float64) + np.float32(1e-5))).astype(np.float32)
    a = (w * is_).astype(np.float32)
    bb = (b - rm * a).astype(np.float32)
    z = x * a[None, :, None] + bb[None, :, None]
    got, want = np.array(memoryview(y)), _elu1_fast_np(z)
    np.testing.assert_allclose(got, want, rtol=3e-6, atol=2e-6)
    assert np.array_equal(got <= -1 + 1e-6, want <= -1 + 1e-6) and np.array_equal(got > 0, want > 0)
