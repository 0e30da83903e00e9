"""CUDA backend: CPU-side guarantees (always run) and CUDA-vs-CPU parity of every op, forward
and backward, plus captured training steps on the GPU (skipped without a GPU).

Tolerances (TF32 off, the default): elementwise and shape ops are compared at rtol 1e-6 /
atol 1e-6 (same float32 formulas, possibly different libm ulps); reductions at 1e-5 (double
accumulation on both sides, different order); cuBLAS/cuDNN results at rtol 1e-4 / atol 1e-4
(different summation order over K up to ~10^4); the readout's input gradient uses atomicAdd
(order varies) and is compared at 1e-4."""
import collections
import importlib
import os
import sys

import numpy as np
import pytest

import lviv_c as L
from lviv_c import _C

sys.path.insert(0, os.path.dirname(__file__))
from backend_ffi import backend, run_kernel  # noqa: E402  (the test-only kernel harness)

HAVE_GPU = L.cuda.is_available()
pytestmark = pytest.mark.cuda  # CI also runs these on the emulated device (make test)
gpu = pytest.mark.skipif(not HAVE_GPU, reason="no CUDA GPU (lviv_c.cuda.is_available() is False)")


# ---------------------------------------------------------------- CPU-side: always run
def test_is_available_never_raises_and_is_a_bool():
    v = L.cuda.is_available()
    assert isinstance(v, bool)
    assert isinstance(L.cuda.device_count(), int)
    if not v:
        assert isinstance(L.cuda.why_unavailable(), str) and L.cuda.why_unavailable()


def test_cuda_module_imports_or_fails_with_importerror_only():
    try:
        m = importlib.import_module("lviv_c._cuda")
    except ImportError:
        return
    n = m.device_count()
    assert isinstance(n, int) and n >= 0
    if not HAVE_GPU:
        assert n == 0
    assert m.TABLE_ABI == L._C.BACKEND_ABI
    # the core accepts the backend's table (version, size, every entry filled) without a GPU
    was = L._C._cuda_loaded()
    L._C._set_cuda_table(m.table)
    assert L._C._cuda_loaded()
    t = backend("cuda")  # the layout csrc/backend.h declares, as nvcc compiled it
    assert t.name == b"cuda" and t.device == 1
    assert t.core_set_error and t.core_rng_next  # filled in by the core on install
    if not was:
        L._C._set_cuda_table(None)
    else:  # put back the table lviv_c.cuda had installed (the emulated device's, when emulating)
        L._C._set_cuda_table(L.cuda._require().table)


@pytest.mark.skipif(HAVE_GPU, reason="checks the no-GPU error path")
def test_to_cuda_without_gpu_raises_clear_runtime_error():
    x = L.randn(3, 4)
    for f in (lambda: x.to("cuda"), lambda: x.cuda(), lambda: L.zeros(2, device="cuda"),
              lambda: L.tensor([1.0], device="cuda"), lambda: L.randn(2, device="cuda:0")):
        with pytest.raises(RuntimeError, match="no CUDA GPU is available.*device='cpu'"):
            f()


def test_cpu_device_paths_are_identity():
    x = L.randn(3, 4)
    assert x.cpu() is x and x.to("cpu") is x and x.to(device="cpu") is x
    assert L.zeros(2, device="cpu").device == "cpu"
    assert L.zeros_like(x).device == "cpu"


def test_device_storage_without_backend_is_refused():
    if _C._cuda_loaded():
        pytest.skip("the backend's table is installed in this process")
    with pytest.raises(RuntimeError, match="CUDA backend not loaded"):
        _C._to_device(L.randn(2), 1)


def test_allow_tf32_switch_defaults_off():
    assert L.cuda.allow_tf32 is False
    L.cuda.allow_tf32 = True
    try:
        assert L.cuda.allow_tf32 is True
    finally:
        L.cuda.allow_tf32 = False


def test_op_codes_come_from_the_extension():
    # one op definition (csrc/opdef.h): the codes are the extension's, each family 0..n-1
    import importlib
    T = importlib.import_module("lviv_c.tensor")
    fams = [("ADD SUB MUL DIV POW MAXIMUM MINIMUM EQ NE LT LE GT GE"),
            ("NEG EXP LOG SQRT ABS SIGN ELU RELU TANH SIGMOID CLAMP AFFINE POWS RDIV SQUARE LOG1P SOFTPLUS SIN COS"),
            ("RSUM RMEAN RVAR RSTD RMAX RMIN RARGMAX RARGMIN")]
    for fam in fams:
        names = fam.split()
        assert [getattr(_C, n) for n in names] == list(range(len(names)))
        assert all(getattr(T, n) is getattr(_C, n) for n in names)


def test_kernel_harness_runs_the_cpu_backend_table():
    # the test-only harness (tests/backend_ffi.py) reads the table layout from csrc/backend.h and
    # checks it against the table the CPU backend built; the same harness drives the GPU below
    assert not hasattr(_C, "_nn_kernel")  # no kernel runner in the production module
    t = backend("cpu")
    assert t.name == b"cpu" and t.device == 0 and t.abi == _C.BACKEND_ABI
    rng = np.random.default_rng(0)
    yh = rng.random(50).astype(np.float32) + 0.5
    y = rng.random(50).astype(np.float32)
    loss, g = L.zeros(1), L.zeros(50)
    run_kernel("poisson_loss", [L.tensor(yh), L.tensor(y), loss, g], [], [1e-12, 2.0])
    ref = 2.0 * np.sum(yh - y * np.log(yh + 1e-12))
    np.testing.assert_allclose(float(loss), ref, rtol=1e-6)
    np.testing.assert_allclose(g.numpy(), 2.0 * (1 - y / (yh + 1e-12)), rtol=1e-6, atol=1e-6)
    p, gr, m, v = (L.tensor(rng.random(20).astype(np.float32)) for _ in range(4))
    v = L.zeros(20)
    p0 = p.numpy().copy()
    run_kernel("adam_step", [p, gr, L.zeros(20), v, L.zeros(20)], [1, 1, 0], [0.1, 0.9, 0.999, 1e-8, 0.0])
    np.testing.assert_allclose(p.numpy(), p0 - 0.1 * np.sign(gr.numpy()), rtol=1e-5)  # first step: lr * sign
    with pytest.raises(ValueError, match="unknown kernel"):
        run_kernel("nope", [], [], [])
    with pytest.raises(ValueError, match="expected tensors"):
        run_kernel("poisson_loss", [L.tensor(yh), L.tensor(y), loss], [], [1e-12, 2.0])
    with pytest.raises(TypeError, match="float32"):
        run_kernel("poisson_loss", [L.tensor(yh), L.tensor(y), loss, L.zeros(50, dtype=L.int64)], [], [1e-12, 2.0])
    with pytest.raises(ValueError, match="step"):
        run_kernel("adam_step", [p, gr, m, v, None], [0, 0, 0], [0.1, 0.9, 0.999, 1e-8, 0.0])


# ---------------------------------------------------------------- parity helpers
def _pair(arr, grad=True):
    c = L.tensor(arr, requires_grad=grad)
    g = L.tensor(arr, device="cuda", requires_grad=grad)
    return c, g


def _np(t):
    return t.detach().cpu().numpy()


def _check(fn, arrays, rtol=1e-6, atol=1e-6, grad=True):
    cpu_in, gpu_in = zip(*[_pair(a, grad) for a in arrays])
    oc, og = fn(*cpu_in), fn(*gpu_in)
    assert og.is_cuda
    np.testing.assert_allclose(_np(og), _np(oc), rtol=rtol, atol=atol)
    if grad:
        rng = np.random.default_rng(5)
        w = rng.standard_normal(tuple(oc.shape)).astype(np.float32)
        (oc * L.tensor(w)).sum().backward()
        (og * L.tensor(w, device="cuda")).sum().backward()
        for a, b in zip(cpu_in, gpu_in):
            np.testing.assert_allclose(_np(b.grad), _np(a.grad), rtol=rtol * 10, atol=atol * 10)


R = np.random.default_rng(42)


def rnd(*s, lo=None):
    a = R.standard_normal(s).astype(np.float32)
    return np.abs(a) + lo if lo is not None else a


# ---------------------------------------------------------------- GPU parity
@gpu
def test_roundtrip_and_device_errors():
    a = rnd(3, 5)
    g = L.tensor(a, device="cuda")
    assert g.is_cuda and str(g.device) == "cuda:0"
    np.testing.assert_array_equal(g.cpu().numpy(), a)
    with pytest.raises(TypeError, match=r"\.cpu\(\)"):
        g.numpy()
    with pytest.raises(ValueError, match="cpu.*cuda|cuda.*cpu"):
        g + L.tensor(a)
    with pytest.raises(ValueError, match="cpu.*cuda|cuda.*cpu"):
        L.tensor(a) @ L.tensor(a.T, device="cuda")
    z = L.zeros(4, 6, device="cuda")
    assert float(z.sum().cpu()) == 0.0
    L.manual_seed(3); r1 = L.randn(5)
    L.manual_seed(3); r2 = L.randn(5, device="cuda")
    np.testing.assert_array_equal(r2.cpu().numpy(), r1.numpy())


@gpu
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "pow", "maximum", "minimum"])
@pytest.mark.parametrize("shapes", [((4, 5), (4, 5)), ((4, 5), (5,)), ((3, 1, 5), (4, 1)), ((2, 3), ())])
def test_binary_parity(op, shapes):
    sa, sb = shapes
    a, b = rnd(*sa, lo=0.5), rnd(*sb, lo=0.5) if sb else np.float32(1.7)
    f = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
         "div": lambda x, y: x / y, "pow": lambda x, y: x ** y,
         "maximum": L.maximum, "minimum": L.minimum}[op]
    _check(f, [a, np.asarray(b, np.float32)], rtol=1e-5, atol=1e-6)


@gpu
def test_comparisons_parity():
    a, b = rnd(6, 7), rnd(7)
    for f in (lambda x, y: x > y, lambda x, y: x <= y, lambda x, y: x == x):
        _check(f, [a, b], grad=False)


UNARY = {
    "neg": lambda x: -x, "exp": lambda x: x.exp(), "log": lambda x: (x.abs() + 0.5).log(),
    "sqrt": lambda x: (x.abs() + 0.5).sqrt(), "abs": lambda x: x.abs(), "tanh": lambda x: x.tanh(),
    "sigmoid": lambda x: x.sigmoid(), "relu": lambda x: x.relu(), "elu": lambda x: L.nn_elu(x) if hasattr(L, "nn_elu") else _C.unary(6, x, 1.0, 0.0),
    "clamp": lambda x: x.clamp(-0.5, 0.7), "square": lambda x: x * x, "pows": lambda x: (x.abs() + 0.5) ** 1.5,
    "rdiv": lambda x: 2.0 / (x.abs() + 0.5), "sin": lambda x: x.sin(), "cos": lambda x: x.cos(),
    "log1p": lambda x: (x.abs()).log1p(), "softplus": lambda x: _C.unary(16, x, 0.0, 0.0),
}


@gpu
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_parity(name):
    a = rnd(7, 9)
    a[np.abs(a) < 1e-3] = 0.1  # avoid kinks
    _check(UNARY[name], [a], rtol=1e-5, atol=1e-6)


@gpu
@pytest.mark.parametrize("red", ["sum", "mean", "var", "std", "max", "min"])
@pytest.mark.parametrize("dim", [None, 0, 1, (0, 2)])
def test_reduce_parity(red, dim):
    a = rnd(5, 70, 3)
    def f(x):
        m = getattr(x, red)
        return m() if dim is None else m(dim=dim)
    if red in ("max", "min") and dim is not None:
        def f(x):  # noqa: F811 -- values only (indices are compared below)
            r = getattr(x, red)(dim=dim)
            return r[0] if isinstance(r, tuple) else r
    _check(f, [a], rtol=1e-5, atol=1e-5)


@gpu
def test_argmax_parity():
    a = rnd(6, 40)
    a[2, 5] = a[2, 9] = 10.0  # a tie: the first index wins on both devices
    c, g = L.tensor(a), L.tensor(a, device="cuda")
    np.testing.assert_array_equal(g.argmax(dim=1).cpu().numpy(), c.argmax(dim=1).numpy())


@gpu
@pytest.mark.parametrize("sa,sb", [((7, 33), (33, 5)), ((3, 7, 33), (33, 5)), ((3, 7, 33), (3, 33, 5)),
                                   ((7, 33), (3, 33, 5)), ((60, 2304), (2304, 300))])
def test_matmul_parity(sa, sb):
    _check(lambda x, y: x @ y, [rnd(*sa), rnd(*sb)], rtol=1e-4, atol=1e-4)


@gpu
def test_shape_ops_parity():
    a = rnd(4, 6, 5)
    _check(lambda x: x.permute(2, 0, 1) * 1.0, [a])
    _check(lambda x: x[1:3, ::2, 1:] * 1.0, [a])
    _check(lambda x: x.reshape(24, 5) * 2.0, [a])
    _check(lambda x: x.flatten(1).clone(), [a])
    _check(lambda x: x[:, :1, :].expand(4, 6, 5) * 1.0, [a])
    _check(lambda x, y: L.cat([x, y], dim=1), [a, rnd(4, 2, 5)])
    idx = np.array([0, 3, 3, 1], np.int64)
    c, g = L.tensor(a, requires_grad=True), L.tensor(a, device="cuda", requires_grad=True)
    oc = _C.index_select(c, 1, L.tensor(idx))
    og = _C.index_select(g, 1, L.tensor(idx, device="cuda"))
    np.testing.assert_array_equal(_np(og), _np(oc))
    oc.sum().backward(); og.sum().backward()
    np.testing.assert_allclose(_np(g.grad), _np(c.grad), rtol=1e-6)
    np.testing.assert_array_equal(g.to(L.int64).cpu().numpy(), c.to(L.int64).numpy())


# ---------------------------------------------------------------- NN kernels (kernel level)
def _run_both(name, arrays, ints, floats, outs):
    """arrays: list of numpy arrays or None; outs: indices of outputs to compare."""
    cpu = [None if a is None else L.tensor(a) for a in arrays]
    dev = [None if a is None else L.tensor(a, device="cuda") for a in arrays]
    run_kernel(name, cpu, ints, floats)
    run_kernel(name, dev, ints, floats)
    return [(cpu[i].numpy(), dev[i].cpu().numpy()) for i in outs]


@gpu
@pytest.mark.parametrize("cfg", [
    # N C_in H W C_out kh kw sh sw ph pw dh dw groups
    (6, 1, 36, 64, 8, 15, 15, 1, 1, 7, 7, 1, 1, 1),     # course CNN layer 0 ('same')
    (4, 1, 36, 64, 16, 15, 15, 1, 1, 0, 0, 1, 1, 1),    # Lurz layer 0 (no padding)
    (4, 16, 22, 50, 16, 1, 1, 1, 1, 0, 0, 1, 1, 1),     # 1x1
    (4, 16, 22, 50, 16, 13, 13, 1, 1, 6, 6, 1, 1, 16),  # depthwise
    (2, 4, 11, 9, 6, 3, 3, 2, 2, 1, 1, 1, 1, 2),        # strided, grouped
])
def test_conv2d_kernels_parity(cfg):
    N, Ci, H, W, Co, kh, kw, sh, sw, ph, pw, dh, dw, g = cfg
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    x, w, b = rnd(N, Ci, H, W), rnd(Co, Ci // g, kh, kw) * 0.1, rnd(Co)
    y = np.zeros((N, Co, Ho, Wo), np.float32)
    for c, d in _run_both("conv2d_forward", [x, w, b, y], list(cfg), [], [3]):
        np.testing.assert_allclose(d, c, rtol=1e-4, atol=1e-4)
    gy = rnd(N, Co, Ho, Wo)
    gx0 = rnd(N, Ci, H, W)  # accumulation: results are added to what is there
    for c, d in _run_both("conv2d_backward_data", [gy, w, gx0], list(cfg), [], [2]):
        np.testing.assert_allclose(d, c, rtol=1e-4, atol=1e-3)
    for c, d in _run_both("conv2d_backward_weight", [x, gy, w.copy(), b.copy()], list(cfg), [], [2, 3]):
        np.testing.assert_allclose(d, c, rtol=1e-4, atol=1e-2 * max(1.0, np.abs(c).max() * 1e-3))


@gpu
@pytest.mark.parametrize("elu", [0, 1])
@pytest.mark.parametrize("shape", [(60, 8, 36 * 64), (60, 5335, 1), (60, 1, 2304)])
def test_batchnorm_kernels_parity(elu, shape):
    N, C, HW = shape
    x = rnd(N, C, HW) * 2 + 0.3
    gam, bet = rnd(C, lo=0.5), rnd(C)
    z = lambda *s: np.zeros(s, np.float32)
    out = _run_both("bn_forward_train", [x, gam, bet, z(N, C, HW), z(C), z(C), z(C)], [N, C, HW, elu], [1e-5],
                    [3, 4, 5, 6])
    for c, d in out:
        np.testing.assert_allclose(d, c, rtol=1e-4, atol=1e-5)
    y, mean, inv = out[0][0], out[1][0], out[2][0]
    gy = rnd(N, C, HW)
    for c, d in _run_both("bn_backward_train", [x, y, gy, gam, mean, inv, z(N, C, HW), z(C), z(C)],
                          [N, C, HW, elu], [], [6, 7, 8]):
        np.testing.assert_allclose(d, c, rtol=1e-4, atol=1e-4)
    rm, rv = rnd(C), rnd(C, lo=0.5)
    out = _run_both("bn_forward_eval", [x, gam, bet, rm, rv, z(N, C, HW)], [N, C, HW, elu], [1e-5], [5])
    np.testing.assert_allclose(out[0][1], out[0][0], rtol=1e-5, atol=1e-5)
    ye = out[0][0]
    for c, d in _run_both("bn_backward_eval", [x, ye, gy, gam, rm, rv, z(N, C, HW), z(C), z(C)],
                          [N, C, HW, elu], [1e-5], [6, 7, 8]):
        np.testing.assert_allclose(d, c, rtol=1e-4, atol=1e-4)
    # affine=False (the course LN's BatchNorm2d(1, affine=False))
    for c, d in _run_both("bn_forward_train", [x, None, None, z(N, C, HW), z(C), z(C), None], [N, C, HW, elu],
                          [1e-5], [3]):
        np.testing.assert_allclose(d, c, rtol=1e-4, atol=1e-5)


@gpu
@pytest.mark.parametrize("shared", [0, 1])
def test_readout_kernels_parity(shared):
    B, C, H, W, Nn = 6, 16, 22, 50, 300
    x = rnd(B, C, H, W)
    pos = (R.random((Nn, 2) if shared else (B, Nn, 2)).astype(np.float32) * 2.2 - 1.1)  # some outside
    feat, bias = rnd(C, Nn) * 0.1, rnd(Nn)
    z = lambda *s: np.zeros(s, np.float32)
    ints = [B, C, H, W, Nn, shared]
    for c, d in _run_both("readout_forward", [x, pos, feat, bias, z(B, Nn)], ints, [], [4]):
        np.testing.assert_allclose(d, c, rtol=1e-5, atol=1e-5)
    gout = rnd(B, Nn)
    outs = _run_both("readout_backward", [x, pos, feat, gout, z(B, C, H, W), z(*pos.shape), z(C, Nn), z(Nn)],
                     ints, [], [4, 5, 6, 7])
    for c, d in outs:
        np.testing.assert_allclose(d, c, rtol=1e-4, atol=1e-4)


@gpu
def test_poisson_and_adam_kernels_parity():
    n = 60 * 5335
    yh, y = rnd(n, lo=0.05), np.abs(rnd(n))
    z = lambda *s: np.zeros(s, np.float32)
    (lc, ld), (gc, gd) = _run_both("poisson_loss", [yh, y, z(1), z(n)], [], [1e-12, 3.5], [2, 3])
    np.testing.assert_allclose(ld, lc, rtol=1e-6)
    np.testing.assert_allclose(gd, gc, rtol=1e-6, atol=1e-6)
    p, g, m, v = rnd(1000), rnd(1000), rnd(1000) * 0.1, np.abs(rnd(1000)) * 0.1
    for c, d in _run_both("adam_step", [p, g, m, v, None], [7, 0, 0], [0.005, 0.9, 0.999, 1e-8, 0.01], [0, 2, 3]):
        np.testing.assert_allclose(d, c, rtol=1e-6, atol=1e-7)
    for ints in ([0, 0, 1], [1, 0, 0], [0, 1, 0]):  # first step, nesterov, maximize
        for c, d in _run_both("sgd_step", [p, g, m], ints, [0.1, 0.9, 0.0, 0.01], [0, 2]):
            np.testing.assert_allclose(d, c, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- captured training on the GPU
class _LN:
    def __init__(self, d, n, device):
        L.manual_seed(0)
        self.W = (L.randn(d, n, device=device) * 0.01).detach()
        self.W.requires_grad = True
        self.b = L.zeros(n, device=device, requires_grad=True)

    def params(self):
        return [self.W, self.b]

    def __call__(self, x):
        z = x.flatten(1) @ self.W + self.b
        return _C.unary(6, z, 1.0, 0.0) + 1  # ELU + 1


def _train(device, X, Y, order, B, epochs):
    m = _LN(X[0].size, Y.shape[1], device)
    graphs = []
    for nb in (B, len(order) % B):
        if nb == 0:
            graphs.append(None)
            continue
        x = L.tensor(X[:nb], device=device)
        y = L.tensor(Y[:nb], device=device)
        _C.capture_begin()
        try:
            out = m(x)
            rate = out
            loss = (rate - y * (rate + 1e-12).log()).sum() + m.W.abs().sum() * 0.01
        except BaseException:
            _C.capture_abort()
            raise
        graphs.append(_C.capture_end(x, y, out, loss, nb))
    adam = _C.adam_new(m.params(), 0.01)
    losses = [_C.train_epoch(graphs[0], graphs[1], adam, X, Y, order) for _ in range(epochs)]
    return m, losses


@gpu
def test_captured_training_steps_gpu_match_cpu():
    rng = np.random.default_rng(0)
    n, N = 230, 40
    X = rng.standard_normal((n, 1, 6, 8)).astype(np.float32)
    Y = rng.poisson(1.0, (n, N)).astype(np.float32)
    order = rng.permutation(200).astype(np.int64)  # 200 = 6 x 32 + 8: a short last batch
    mc, lc = _train("cpu", X, Y, order, 32, 3)
    mg, lg = _train("cuda", X, Y, order, 32, 3)
    np.testing.assert_allclose(np.asarray(lg, float), np.asarray(lc, float), rtol=1e-4)
    np.testing.assert_allclose(_np(mg.W), _np(mc.W), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(_np(mg.b), _np(mc.b), rtol=1e-3, atol=1e-5)


# ---------------------------------------------------------------- nn op layer (csrc/ops/nn_ops.c)
F = L.nn.functional


@gpu
@pytest.mark.parametrize("shape", [(7, 33), (3, 5, 33)])
def test_linear_op_parity(shape):
    _check(lambda x, w, b: F.linear(x, w, b), [rnd(*shape), rnd(11, 33) * 0.2, rnd(11)], rtol=1e-4, atol=1e-4)
    _check(lambda x, w: F.linear(x, w), [rnd(*shape), rnd(11, 33) * 0.2], rtol=1e-4, atol=1e-4)


@gpu
@pytest.mark.parametrize("cfg", [  # x shape, w shape, stride, padding, groups, bias
    ((4, 1, 18, 20), (8, 1, 5, 5), 1, 2, 1, False),
    ((3, 6, 11, 9), (6, 3, 3, 3), 2, 1, 2, True),
    ((2, 8, 10, 12), (8, 1, 7, 7), 1, 3, 8, False),  # depthwise
])
def test_conv2d_op_parity(cfg):
    xs, ws, st, pd, g, bias = cfg
    arrays = [rnd(*xs), rnd(*ws) * 0.2] + ([rnd(ws[0])] if bias else [])
    _check(lambda x, w, *b: F.conv2d(x, w, b[0] if b else None, stride=st, padding=pd, groups=g), arrays,
           rtol=1e-4, atol=1e-4)


def _bn_pair(C, affine, device, momentum):
    bn = L.nn.BatchNorm2d(C, affine=affine, momentum=momentum)
    if affine:
        _C.copy_into(bn.weight, L.tensor(R.random(C).astype(np.float32) + 0.5))
        _C.copy_into(bn.bias, L.tensor(R.standard_normal(C).astype(np.float32)))
    return bn.to(device)


@gpu
@pytest.mark.parametrize("elu", [False, True])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_op_parity_with_running_stats(elu, affine, momentum):
    C = 5
    x = rnd(6, C, 7, 9) * 2 + 0.3
    bc = _bn_pair(C, affine, "cpu", momentum)
    bg = L.nn.BatchNorm2d(C, affine=affine, momentum=momentum)
    bg.load_state_dict(bc.state_dict())
    bg.to("cuda")
    assert bg.running_mean.is_cuda and bg.num_batches_tracked.is_cuda
    for step in range(3):  # training forwards update running stats and num_batches_tracked
        f = (lambda m: (lambda t: m._forward(t, fuse_elu=True) if elu else m(t)))
        xc, xg = L.tensor(x + step, requires_grad=True), L.tensor(x + step, device="cuda", requires_grad=True)
        oc, og = f(bc)(xc), f(bg)(xg)
        np.testing.assert_allclose(_np(og), _np(oc), rtol=1e-4, atol=1e-5)
        w = R.standard_normal(tuple(oc.shape)).astype(np.float32)
        (oc * L.tensor(w)).sum().backward()
        (og * L.tensor(w, device="cuda")).sum().backward()
        np.testing.assert_allclose(_np(xg.grad), _np(xc.grad), rtol=1e-3, atol=1e-4)
        if affine:
            np.testing.assert_allclose(_np(bg.weight.grad), _np(bc.weight.grad), rtol=1e-3, atol=1e-4)
            np.testing.assert_allclose(_np(bg.bias.grad), _np(bc.bias.grad), rtol=1e-3, atol=1e-4)
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(_np(getattr(bg, name)), _np(getattr(bc, name)), rtol=1e-5, atol=1e-6)
    assert int(bg.num_batches_tracked.cpu().item()) == int(bc.num_batches_tracked.item()) == 3
    bc.eval(); bg.eval()  # eval: running statistics, forward and backward
    _check_modules(bc, bg, x, rtol=1e-4, atol=1e-5)


def _check_modules(mc, mg, x, rtol, atol):
    xc, xg = L.tensor(x, requires_grad=True), L.tensor(x, device="cuda", requires_grad=True)
    oc, og = mc(xc), mg(xg)
    np.testing.assert_allclose(_np(og), _np(oc), rtol=rtol, atol=atol)
    w = R.standard_normal(tuple(oc.shape)).astype(np.float32)
    (oc * L.tensor(w)).sum().backward()
    (og * L.tensor(w, device="cuda")).sum().backward()
    np.testing.assert_allclose(_np(xg.grad), _np(xc.grad), rtol=rtol * 10, atol=atol * 10)


@gpu
@pytest.mark.parametrize("align", [False, True])
def test_grid_sample_op_parity(align):
    x = rnd(3, 4, 9, 11)
    grid = (R.random((3, 5, 7, 2)).astype(np.float32) * 2.4 - 1.2)  # some samples outside
    _check(lambda a, g: F.grid_sample(a, g, align_corners=align), [x, grid], rtol=1e-4, atol=1e-4)


@gpu
@pytest.mark.parametrize("cfg", [((4, 3, 10, 12), 2, None, 0), ((4, 3, 11, 9), 3, 2, 1), ((3, 10, 12), (2, 3), 1, 0)])
def test_avg_pool2d_op_parity(cfg):
    shape, k, s, p = cfg
    _check(lambda x: F.avg_pool2d(x, k, s, p), [rnd(*shape)], rtol=1e-5, atol=1e-6)


@gpu
@pytest.mark.parametrize("pads", [(1, 2), (0, 3, 2, 1), (1, 1, 0, 2, 3, 0)])
def test_pad_op_parity(pads):
    _check(lambda x: F.pad(x, pads, value=0.5), [rnd(2, 3, 4, 5)])


@gpu
def test_dropout_op_on_gpu():
    x = rnd(40, 50)
    xg = L.tensor(x, device="cuda", requires_grad=True)
    L.manual_seed(0)
    y = F.dropout(xg, 0.3)
    m = _np(y) / np.where(x == 0, 1, x)
    kept = np.isclose(m, 1 / 0.7, rtol=1e-5)
    assert np.all(kept | np.isclose(_np(y), 0))
    assert 0.6 < kept.mean() < 0.8  # 2000 draws of Bernoulli(0.7)
    g = rnd(40, 50)
    y.backward(L.tensor(g, device="cuda"))
    np.testing.assert_allclose(_np(xg.grad), g * np.where(kept, 1 / 0.7, 0), rtol=1e-5, atol=1e-6)
    L.manual_seed(0); y2 = F.dropout(L.tensor(x, device="cuda"), 0.3)
    np.testing.assert_array_equal(_np(y2), _np(y))  # reproducible under a seed
    y3 = F.dropout(L.tensor(x, device="cuda"), 0.3)
    assert not np.array_equal(_np(y3), _np(y))  # a new draw


@gpu
@pytest.mark.parametrize("avg", [False, True])
def test_poisson_loss_op_parity(avg):
    yh, y = rnd(30, 70, lo=0.05), np.abs(rnd(30, 70))
    _check(lambda a, b: F.poisson_loss(a, b, avg=avg) * 1.5, [yh, y], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- Module.to('cuda') semantics
@gpu
def test_module_to_cuda_keeps_parameter_identity_and_values():
    L.manual_seed(0)
    m = L.nn.Sequential(L.nn.Conv2d(1, 4, 3, padding=1), L.nn.BatchNorm2d(4), L.nn.ELU(), L.nn.Flatten(),
                        L.nn.Linear(4 * 6 * 7, 5))
    params = list(m.parameters())
    before = {k: v.detach().cpu().numpy().copy() for k, v in m.state_dict().items()}
    assert m.to("cuda") is m
    assert [id(p) for p in m.parameters()] == [id(p) for p in params]
    for k, v in m.state_dict().items():
        assert v.is_cuda, k
        np.testing.assert_array_equal(v.cpu().numpy(), before[k])
    out = m(L.randn(2, 1, 6, 7, device="cuda"))
    assert out.is_cuda
    out.sum().backward()
    assert all(p.grad is not None and p.grad.is_cuda for p in m.parameters())
    m.cpu()
    assert all(not p.is_cuda and not p.grad.is_cuda for p in m.parameters())
    assert m.cuda() is m and all(p.is_cuda for p in m.parameters())


@gpu
def test_optimizer_state_on_parameter_device_matches_cpu():
    x_host = rnd(16, 20)  # one input for both runs

    def run(device):
        L.manual_seed(0)
        m = L.nn.Linear(20, 7).to(device)
        opt = L.optim.Adam(m.parameters(), lr=0.01, weight_decay=0.01)
        x = L.tensor(x_host, device=device)
        for _ in range(5):
            opt.zero_grad()
            F.poisson_loss(F.elu(m(x)) + 1, L.tensor(np.ones((16, 7), np.float32), device=device)).backward()
            opt.step()
        return m, opt
    mc, oc = run("cpu")
    mg, og = run("cuda")
    st = og.state[mg.weight]
    assert st["exp_avg"].is_cuda and st["exp_avg_sq"].is_cuda
    np.testing.assert_allclose(_np(mg.weight), _np(mc.weight), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_np(mg.bias), _np(mc.bias), rtol=1e-4, atol=1e-5)
    sd = og.state_dict()  # round trip of CUDA optimizer state
    og.load_state_dict(sd)
    assert og.state[mg.weight]["exp_avg"].is_cuda


# ---------------------------------------------------------------- course LN / CNN: train steps
class CourseLN(L.nn.Module):
    def __init__(self, h, w, n):
        super().__init__()
        self.bn = L.nn.BatchNorm2d(1, affine=False)
        self.fc = L.nn.Linear(h * w, n)
        L.nn.init.normal_(self.fc.weight, 0, 1e-3)

    def forward(self, x):
        return F.elu(self.fc(self.bn(x).flatten(1))) + 1

    def regularizer(self):
        return 0.1 * self.fc.weight.abs().sum()


class CourseCNN(L.nn.Module):
    def __init__(self, h, w, n, c=4, ks=(7, 5)):
        super().__init__()
        layers, ci = [], 1
        for k in ks:
            layers += [L.nn.Conv2d(ci, c, k, padding=k // 2, bias=False), L.nn.BatchNorm2d(c), L.nn.ELU()]
            ci = c
        self.core = L.nn.Sequential(*layers)
        self.fc = L.nn.Linear(h * w * c, n)
        self.bn = L.nn.BatchNorm1d(n)

    def forward(self, x):
        return F.elu(self.bn(self.fc(self.core(x).flatten(1)))) + 1

    def regularizer(self):
        return 0.1 * self.fc.weight.abs().sum()


class _Loader:
    """The attributes of a lviv_c DataLoader that trainers.Engine uses."""

    def __init__(self, X, Y, idx, B, device_blocks=None):
        self.images_block, self.responses_block = X, Y
        self.indices = np.asarray(idx, np.int64)
        self.batch_size = B
        self.dataset = range(len(X))
        self._dev = device_blocks

    def device_blocks(self):
        return self._dev


def _engine_run(cls, device, X, Y, order, B, epochs, dev_blocks=False):
    from lviv_c.trainers import Engine
    L.manual_seed(0)
    m = cls(X.shape[2], X.shape[3], Y.shape[1]).to(device)
    db = (L.tensor(X, device="cuda"), L.tensor(Y, device="cuda")) if dev_blocks else None
    eng = Engine(m, _Loader(X, Y, np.arange(len(X)), B, db), lr=0.005)
    losses = [eng.train_epoch(order) for _ in range(epochs)]
    val = _Loader(X, Y, np.arange(len(X))[:50], B, db)
    return m, eng, losses, eng.predict(val)


@gpu
@pytest.mark.parametrize("cls", [CourseLN, CourseCNN])
@pytest.mark.parametrize("dev_blocks", [False, True])
def test_course_models_train_steps_gpu_match_cpu(cls, dev_blocks):
    rng = np.random.default_rng(1)
    n, N = 130, 23
    X = rng.standard_normal((n, 1, 9, 12)).astype(np.float32)
    Y = rng.poisson(1.0, (n, N)).astype(np.float32)
    order = rng.permutation(100).astype(np.int64)  # 3 x 32 + 4: a short last batch
    mc, ec, lc, pc = _engine_run(cls, "cpu", X, Y, order, 32, 2)
    mg, eg, lg, pg = _engine_run(cls, "cuda", X, Y, order, 32, 2, dev_blocks)
    assert eg.device == "cuda" and all(p.is_cuda for p in mg.parameters())
    np.testing.assert_allclose(np.asarray(lg), np.asarray(lc), rtol=1e-3)
    for (k, a), (_, b) in zip(mc.state_dict().items(), mg.state_dict().items()):
        if cls is CourseCNN and k == "fc.bias":
            # fc's bias feeds a training-mode BatchNorm1d, which removes it: its gradient is
            # rounding noise, which Adam turns into steps of about +-lr whose signs differ between
            # devices. Only the bound holds: each of the 2 x 4 steps moves it by at most ~lr.
            assert np.abs(b.cpu().numpy() - a.numpy()).max() <= 2 * 0.005 * 8 * 1.01, k
            continue
        np.testing.assert_allclose(b.cpu().numpy(), a.numpy(), rtol=2e-3, atol=2e-4, err_msg=k)
    np.testing.assert_allclose(pg, pc, rtol=2e-3, atol=2e-4)
    st = eg.get_state()  # state round trip on the device
    eg.set_state(st)
    np.testing.assert_allclose(eg.get_state()[next(iter(st))], st[next(iter(st))])


@gpu
def test_capture_on_model_device_restores_buffers():
    from lviv_c.capture import capture_graph
    m = CourseCNN(9, 12, 5).to("cuda")
    before = {k: v.cpu().numpy().copy() for k, v in m.state_dict().items()}
    x = R.standard_normal((4, 1, 9, 12)).astype(np.float32) + 2.0
    g = capture_graph(m, x, np.ones((4, 5), np.float32), lambda o, y: F.poisson_loss(o, y), train=True)
    assert g.x.is_cuda and g.y.is_cuda and g.out.is_cuda and g.loss.is_cuda
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v.cpu().numpy(), before[k])


# ---------------------------------------------------------------- Lurz 2020: readout ops, model
def _ro():
    from lviv_c.models.readouts import gaussian_readout, readout_positions
    return readout_positions, gaussian_readout


@gpu
@pytest.mark.parametrize("project", [0, 1])
def test_readout_positions_eval_parity(project):
    readout_positions, _ = _ro()
    mu = R.random((37, 2)).astype(np.float32) * 2.6 - 1.3  # some outside [-1, 1]
    if project:  # in-place projection of a leaf: compare on copies, then the clamped values
        mc, mg = L.tensor(mu), L.tensor(mu, device="cuda")
        oc, og = readout_positions(mc, None, 0, False, "full", 1), readout_positions(mg, None, 0, False, "full", 1)
        np.testing.assert_array_equal(_np(og), _np(oc))
        np.testing.assert_array_equal(_np(mg), _np(mc))
        return
    _check(lambda m: readout_positions(m, None, 0, False, "full", 0) * 1.0, [mu])


@gpu
@pytest.mark.parametrize("gauss", ["full", "uncorrelated", "isotropic"])
def test_readout_positions_sampling_on_gpu(gauss):
    readout_positions, _ = _ro()
    N, B = 50, 400
    mu = (R.random((N, 2)).astype(np.float32) - 0.5) * 0.5
    per = {"full": (N, 2, 2), "uncorrelated": (N, 2), "isotropic": (N,)}[gauss]
    sg = np.full(per, 0.05, np.float32)
    if gauss == "full":
        sg[:, 0, 1] = sg[:, 1, 0] = 0.0
    m = L.tensor(mu, device="cuda", requires_grad=True)
    s = L.tensor(sg, device="cuda", requires_grad=True)
    L.manual_seed(3)
    pos = readout_positions(m, s, B, True, gauss, 0)
    p = _np(pos)
    assert pos.is_cuda and p.shape == (B, N, 2)
    np.testing.assert_allclose(p.mean(0), mu, atol=0.05 * 5 / np.sqrt(B))  # all inside: no clamping
    np.testing.assert_allclose(p.std(0), 0.05, rtol=0.2)
    L.manual_seed(3)
    np.testing.assert_array_equal(_np(readout_positions(m, s, B, True, gauss, 0)), p)  # seeded
    assert not np.array_equal(_np(readout_positions(m, s, B, True, gauss, 0)), p)  # fresh draw
    g = R.standard_normal((B, N, 2)).astype(np.float32)
    L.manual_seed(3)
    readout_positions(m, s, B, True, gauss, 0).backward(L.tensor(g, device="cuda"))
    np.testing.assert_allclose(_np(m.grad), g.sum(0), rtol=1e-4, atol=1e-4)  # mask all ones
    eps = (p - mu) / 0.05  # the draws, recovered from the positions (diagonal sigma)
    ref = {"full": np.einsum("bnc,bnd->ncd", g, eps),  # d pos_c / d sigma[n, c, d] = eps_d
           "uncorrelated": np.einsum("bnc,bnc->nc", g, eps),
           "isotropic": np.einsum("bnc,bnc->n", g, eps)}[gauss]
    np.testing.assert_allclose(_np(s.grad), ref, rtol=1e-3, atol=1e-2)


@gpu
@pytest.mark.parametrize("shared", [False, True])
def test_gaussian_readout_op_parity(shared):
    _, gaussian_readout = _ro()
    B, C, H, W, N = 5, 6, 9, 13, 40
    pos = R.random((N, 2) if shared else (B, N, 2)).astype(np.float32) * 2.2 - 1.1
    _check(lambda x, p, f, b: gaussian_readout(x, p, f, b), [rnd(B, C, H, W), pos, rnd(C, N) * 0.3, rnd(N)],
           rtol=1e-4, atol=1e-4)


def _lurz_small(device):
    from lviv_c.models import build_lurz2020_model
    rng = np.random.default_rng(0)

    class NS:
        pass

    Batch = collections.namedtuple("Batch", "images responses")

    class FakeLoader:  # what build_lurz2020_model reads from a loader
        def __init__(self):
            self.dataset = NS()
            self.dataset.neurons = NS()
            self.dataset.neurons.cell_motor_coordinates = rng.normal(size=(30, 3)) * 200 + 50
            self.x = rng.uniform(0, 255, size=(4, 1, 18, 24)).astype(np.float32)
            self.y = rng.gamma(1.0, size=(4, 30)).astype(np.float32)

        def __iter__(self):
            yield Batch(L.from_numpy(self.x), L.from_numpy(self.y))
    cfg = {"init_mu_range": 0.55, "init_sigma": 0.4, "input_kern": 5, "hidden_kern": 3, "gamma_input": 1.0,
           "hidden_channels": 8, "layers": 3, "gamma_readout": 2.439,
           "grid_mean_predictor": {"type": "cortex", "input_dimensions": 2, "hidden_layers": 0,
                                   "hidden_features": 0, "final_tanh": False}}
    return build_lurz2020_model({"train": FakeLoader()}, 7, **cfg).to(device)


@gpu
def test_lurz_model_eval_parity_and_gpu_training():
    mc, mg = _lurz_small("cpu"), _lurz_small("cuda")
    assert all(p.is_cuda for p in mg.parameters()) and all(b.is_cuda for b in mg.buffers())
    mc.eval(); mg.eval()
    x = np.random.default_rng(1).uniform(0, 255, (6, 1, 18, 24)).astype(np.float32)
    oc, og = mc(L.tensor(x)), mg(L.tensor(x, device="cuda"))
    np.testing.assert_allclose(_np(og), _np(oc), rtol=1e-3, atol=1e-4)
    (oc.sum() + mc.regularizer()).backward()
    (og.sum() + mg.regularizer()).backward()
    for (k, a), (_, b) in zip(mc.named_parameters(), mg.named_parameters()):
        if a.grad is None:
            assert b.grad is None, k
            continue
        np.testing.assert_allclose(_np(b.grad), _np(a.grad), rtol=2e-3, atol=2e-4, err_msg=k)
    # training on the GPU through the Engine (sampled positions: draws differ from the CPU's)
    from lviv_c.trainers import Engine
    rng = np.random.default_rng(2)
    X = rng.uniform(0, 255, (70, 1, 18, 24)).astype(np.float32)
    Y = rng.gamma(1.0, size=(70, 30)).astype(np.float32)
    mg.train()
    before = {k: v.cpu().numpy().copy() for k, v in mg.state_dict().items()}
    eng = Engine(mg, _Loader(X, Y, np.arange(70), 16, (L.tensor(X, device="cuda"), L.tensor(Y, device="cuda"))))
    losses = [eng.train_epoch(rng.permutation(70).astype(np.int64)) for _ in range(2)]
    assert all(np.isfinite(losses))
    assert any(not np.array_equal(v.cpu().numpy(), before[k]) for k, v in mg.state_dict().items())
    assert np.isfinite(eng.predict(_Loader(X, Y, np.arange(20), 16))).all()


@gpu
def test_inplace_fills_of_cuda_tensors_match_cpu_draws():
    for fill in (lambda t: t.normal_(), lambda t: t.uniform_(-1, 2), lambda t: t.fill_(3.5), lambda t: t.zero_()):
        g, c = L.empty(4, 5, device="cuda"), L.empty(4, 5)
        L.manual_seed(11); fill(g)
        L.manual_seed(11); fill(c)
        assert g.is_cuda
        np.testing.assert_array_equal(g.cpu().numpy(), c.numpy())
    m = L.nn.Linear(3, 2).cuda()
    m(L.randn(4, 3, device="cuda")).sum().backward()
    m.zero_grad(set_to_none=False)
    assert float(m.weight.grad.abs().sum().cpu()) == 0.0
    bn = L.nn.BatchNorm2d(3).cuda()
    bn(L.randn(4, 3, 2, 2, device="cuda"))
    bn.reset_running_stats()
    assert int(bn.num_batches_tracked.cpu().item()) == 0 and float(bn.running_var.sum().cpu()) == 3.0
