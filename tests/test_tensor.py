"""Tensor core: forward of each op against NumPy, backward against float64 finite differences,
broadcasting, views sharing memory, autograd semantics and error messages."""
import numpy as np
import pytest

import lviv_c as L
from conftest import numgrad


def T(a, rg=False):
    return L.tensor(np.asarray(a, dtype=np.float32), requires_grad=rg)


def check_grad(op_lv, op_np, *arrays, atol=2e-3, rtol=2e-3, weights_seed=1):
    """Compare the C backward of sum(w * op(x...)) with finite differences of the NumPy op."""
    rng = np.random.default_rng(weights_seed)
    ts = [T(a, True) for a in arrays]
    out = op_lv(*ts)
    w = rng.standard_normal(out.shape).astype(np.float32)
    (out * T(w)).sum().backward()
    for k, a in enumerate(arrays):
        def f(xk, k=k):
            args = [np.asarray(b, np.float64) for b in arrays]
            args[k] = xk
            return float(np.sum(w.astype(np.float64) * op_np(*args)))
        ng = numgrad(f, np.asarray(a, np.float64))
        np.testing.assert_allclose(np.asarray(ts[k].grad), ng, atol=atol, rtol=rtol)


# ---------------------------------------------------------------- creation / interop
def test_creation_shapes_and_dtypes():
    assert L.zeros(2, 3).shape == (2, 3)
    assert np.all(np.asarray(L.ones((4,))) == 1)
    assert L.empty(5).shape == (5,)
    assert np.all(np.asarray(L.full((2, 2), 7.5)) == 7.5)
    assert L.arange(5).dtype == L.int64 and list(np.asarray(L.arange(5))) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(np.asarray(L.linspace(-2, 2, 5)), [-2, -1, 0, 1, 2])
    x = L.tensor([[1, 2], [3, 4]])
    assert x.dtype == L.int64
    y = L.tensor([[1, 2], [3, 4]], dtype=L.float32, requires_grad=True)
    assert y.dtype == L.float32 and y.requires_grad and y.is_leaf
    assert L.zeros_like(y).shape == (2, 2) and not L.zeros_like(y).requires_grad
    assert L.Tensor(np.linspace(0, 1, 3)).dtype == L.float32  # torch.Tensor(ndarray) copies to float32
    assert L.Tensor(2, 3).shape == (2, 3)
    assert L.ones(2, 3).size() == (2, 3) and L.ones(2, 3).size(1) == 3 and L.ones(2, 3).dim() == 2


def test_rand_reproducible_and_distributed():
    L.manual_seed(3)
    a = np.asarray(L.randn(20000)).copy()
    L.manual_seed(3)
    b = np.asarray(L.randn(20000)).copy()
    assert np.array_equal(a, b)
    assert abs(a.mean()) < 0.03 and abs(a.std() - 1) < 0.03
    u = np.asarray(L.rand(20000))
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.02


def test_numpy_interop_zero_copy():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = L.from_numpy(arr)
    arr[0, 0] = 42
    assert np.asarray(t)[0, 0] == 42  # shares memory
    n = t.numpy()
    n[1, 2] = -1
    assert np.asarray(t)[1, 2] == -1
    assert np.shares_memory(np.asarray(t), arr)
    # non-contiguous input is copied
    t2 = L.from_numpy(arr.T)
    assert t2.shape == (3, 2) and np.array_equal(np.asarray(t2), arr.T)
    with pytest.raises(TypeError, match="float32 or int64"):
        L._C.from_numpy(np.zeros(3, dtype=np.complex64))
    with pytest.raises(RuntimeError, match="detach"):
        T([1.0], True).numpy()


def test_tensor_outlives_numpy_owner():
    t = L.from_numpy(np.ones(1000, dtype=np.float32) * 3)
    import gc
    gc.collect()
    assert float(t.sum()) == 3000


# ---------------------------------------------------------------- views
def test_views_share_storage():
    x = L.arange(24).float()
    v = x.view(2, 3, 4)
    f = v.flatten(1)
    u = x.reshape(4, -1).unsqueeze(0).squeeze(0)
    assert v._storage_id == x._storage_id == f._storage_id == u._storage_id
    np.asarray(v)[1, 2, 3] = -5
    assert np.asarray(x)[23] == -5 and np.asarray(f)[1, 11] == -5
    d = x.detach()
    assert d._storage_id == x._storage_id
    assert x.data._storage_id == x._storage_id
    c = x.clone()
    assert c._storage_id != x._storage_id
    with pytest.raises(ValueError, match="invalid for input of size 24"):
        x.view(5, 5)


# ---------------------------------------------------------------- elementwise
BIN = [
    ("add", lambda a, b: a + b, lambda a, b: a + b),
    ("sub", lambda a, b: a - b, lambda a, b: a - b),
    ("mul", lambda a, b: a * b, lambda a, b: a * b),
    ("div", lambda a, b: a / b, lambda a, b: a / b),
    ("maximum", lambda a, b: L.maximum(a, b), np.maximum),
    ("minimum", lambda a, b: L.minimum(a, b), np.minimum),
    ("pow", lambda a, b: a ** b, lambda a, b: a ** b),
]
SHAPES = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1,), (2, 3)), ((), (2, 2))]


@pytest.mark.parametrize("name,f_lv,f_np", BIN)
@pytest.mark.parametrize("sa,sb", SHAPES)
def test_binary_forward_backward_broadcast(name, f_lv, f_np, sa, sb, rng):
    a = rng.uniform(0.5, 2.0, sa).astype(np.float32)
    b = rng.uniform(0.5, 2.0, sb).astype(np.float32)
    if name in ("maximum", "minimum"):
        b = b + 0.1 * np.sign(rng.standard_normal(sb)).astype(np.float32) + 0.013  # avoid ties
    out = f_lv(T(a), T(b))
    np.testing.assert_allclose(np.asarray(out), f_np(a.astype(np.float64), b.astype(np.float64)), rtol=1e-5, atol=1e-6)
    check_grad(f_lv, f_np, a, b)


def test_scalar_operands_both_sides(rng):
    a = rng.uniform(0.5, 2, (3, 2)).astype(np.float32)
    for f_lv, f_np in [
        (lambda x: x + 2, lambda x: x + 2), (lambda x: 2 + x, lambda x: 2 + x),
        (lambda x: x - 3, lambda x: x - 3), (lambda x: 3 - x, lambda x: 3 - x),
        (lambda x: x * 1.5, lambda x: x * 1.5), (lambda x: 1.5 * x, lambda x: 1.5 * x),
        (lambda x: x / 4, lambda x: x / 4), (lambda x: 4 / x, lambda x: 4 / x),
        (lambda x: x ** 3, lambda x: x ** 3), (lambda x: 2 ** x, lambda x: 2.0 ** x),
        (lambda x: -x, lambda x: -x),
    ]:
        np.testing.assert_allclose(np.asarray(f_lv(T(a))), f_np(a.astype(np.float64)), rtol=1e-5)
        check_grad(f_lv, f_np, a)


UN = [
    ("exp", lambda x: x.exp(), np.exp, (-2, 2)),
    ("log", lambda x: x.log(), np.log, (0.2, 3)),
    ("sqrt", lambda x: x.sqrt(), np.sqrt, (0.2, 3)),
    ("abs", lambda x: x.abs(), np.abs, (0.2, 3)),
    ("tanh", lambda x: x.tanh(), np.tanh, (-2, 2)),
    ("sigmoid", lambda x: x.sigmoid(), lambda x: 1 / (1 + np.exp(-x)), (-3, 3)),
    ("relu", lambda x: x.relu(), lambda x: np.maximum(x, 0), (-2, 2)),
    ("clamp", lambda x: x.clamp(-0.5, 0.7), lambda x: np.clip(x, -0.5, 0.7), (-2, 2)),
    ("square", lambda x: x.square(), np.square, (-2, 2)),
    ("pow", lambda x: x.pow(2.5), lambda x: x ** 2.5, (0.2, 2)),
]


@pytest.mark.parametrize("name,f_lv,f_np,rng_", UN)
def test_unary(name, f_lv, f_np, rng_, rng):
    a = rng.uniform(*rng_, (4, 5)).astype(np.float32)
    if name in ("relu", "clamp"):
        a[np.abs(a) < 0.05] = 0.3
        a[np.abs(a + 0.5) < 0.05] = -0.8
        a[np.abs(a - 0.7) < 0.05] = 0.9
    np.testing.assert_allclose(np.asarray(f_lv(T(a))), f_np(a.astype(np.float64)), rtol=1e-5, atol=1e-6)
    check_grad(f_lv, f_np, a)


def test_sign_and_comparisons():
    a = T([-2.0, 0.0, 3.0])
    assert list(np.asarray(a.sign())) == [-1, 0, 1]
    assert list(np.asarray(a > 0)) == [0, 0, 1]
    assert list(np.asarray(a <= 0)) == [1, 1, 0]
    assert list(np.asarray(a == T([-2.0, 1.0, 3.0]))) == [1, 0, 1]
    assert not (T([1.0], True) > 0).requires_grad


# ---------------------------------------------------------------- reductions
RED = [
    ("sum", lambda x, d, k: x.sum(d, keepdim=k), lambda x, d, k: x.sum(axis=d, keepdims=k)),
    ("mean", lambda x, d, k: x.mean(d, keepdim=k), lambda x, d, k: x.mean(axis=d, keepdims=k)),
    ("var", lambda x, d, k: x.var(d, keepdim=k), lambda x, d, k: x.var(axis=d, ddof=1, keepdims=k)),
    ("std", lambda x, d, k: x.std(d, keepdim=k), lambda x, d, k: x.std(axis=d, ddof=1, keepdims=k)),
    ("amax", lambda x, d, k: x.amax(d, keepdim=k), lambda x, d, k: x.max(axis=d, keepdims=k)),
    ("amin", lambda x, d, k: x.amin(d, keepdim=k), lambda x, d, k: x.min(axis=d, keepdims=k)),
]


@pytest.mark.parametrize("name,f_lv,f_np", RED)
@pytest.mark.parametrize("dim", [None, 0, 1, -1, (0, 2)])
@pytest.mark.parametrize("keepdim", [False, True])
def test_reductions(name, f_lv, f_np, dim, keepdim, rng):
    a = rng.standard_normal((3, 4, 5)).astype(np.float32)
    if dim is None and keepdim:
        return
    out = f_lv(T(a), dim, keepdim)
    ref = f_np(a.astype(np.float64), dim, keepdim)
    assert out.shape == np.shape(ref)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-5)
    check_grad(lambda x: f_lv(x, dim, keepdim), lambda x: f_np(x, dim, keepdim), a)


def test_max_min_argmax_with_dim(rng):
    a = rng.standard_normal((4, 6)).astype(np.float32)
    v, i = T(a).max(1)
    np.testing.assert_array_equal(np.asarray(v), a.max(1))
    np.testing.assert_array_equal(np.asarray(i), a.argmax(1))
    assert i.dtype == L.int64
    assert T(a).max(0).values.shape == (6,) and T(a).min(dim=0).indices.shape == (6,)
    assert int(T(a).argmax()) == a.argmax()
    assert float(T(a).max()) == a.max()
    np.testing.assert_array_equal(np.asarray(T(a).argmin(0)), a.argmin(0))
    unbiased_false = T(a).var(unbiased=False)
    np.testing.assert_allclose(float(unbiased_false), a.astype(np.float64).var(), rtol=1e-5)


def test_reduction_errors():
    with pytest.raises(IndexError, match="Dimension out of range"):
        L.ones(2, 3).sum(2)


# ---------------------------------------------------------------- matmul
@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)),
                                   ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)), ((1, 3, 4), (2, 4, 2))])
def test_matmul(sa, sb, rng):
    a = rng.standard_normal(sa).astype(np.float32)
    b = rng.standard_normal(sb).astype(np.float32)
    out = T(a) @ T(b)
    ref = np.matmul(a.astype(np.float64), b.astype(np.float64))
    assert out.shape == ref.shape
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-4)
    check_grad(lambda x, y: x @ y, np.matmul, a, b)


def test_matmul_errors():
    with pytest.raises(ValueError, match=r"matmul: shapes \(3, 4\) and \(5, 2\) cannot be multiplied"):
        L.ones(3, 4) @ L.ones(5, 2)
    with pytest.raises(ValueError, match="cannot be broadcast"):
        L.ones(3, 4) + L.ones(5)


def test_matmul_large_matches_numpy(rng):
    a = rng.standard_normal((60, 2304)).astype(np.float32)
    b = rng.standard_normal((2304, 300)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(T(a) @ T(b)), a @ b, rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------- shape ops and indexing
def test_indexing_forward_and_grad(rng):
    a = rng.standard_normal((4, 5, 3)).astype(np.float32)
    cases = [
        (lambda x: x[1], lambda x: x[1]),
        (lambda x: x[0:1], lambda x: x[0:1]),
        (lambda x: x[:, [0, 2, 2]], lambda x: x[:, [0, 2, 2]]),
        (lambda x: x[1:4:2, ::2, -1], lambda x: x[1:4:2, ::2, -1]),
        (lambda x: x[..., 1], lambda x: x[..., 1]),
        (lambda x: x[None, 2], lambda x: x[None, 2]),
        (lambda x: x[L.tensor([3, 0])], lambda x: x[[3, 0]]),
        (lambda x: x[np.array([True, False, True, False])], lambda x: x[np.array([True, False, True, False])]),
    ]
    for f_lv, f_np in cases:
        out = f_lv(T(a))
        ref = f_np(a)
        assert out.shape == ref.shape
        np.testing.assert_array_equal(np.asarray(out), ref)
        check_grad(f_lv, f_np, a)
    with pytest.raises(IndexError, match="out of bounds"):
        T(a)[7]
    with pytest.raises(IndexError, match="too many indices"):
        T(a)[0, 0, 0, 0]


def test_permute_transpose_cat_stack_expand(rng):
    a = rng.standard_normal((2, 3, 4)).astype(np.float32)
    b = rng.standard_normal((2, 5, 4)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(T(a).permute(2, 0, 1)), a.transpose(2, 0, 1))
    np.testing.assert_array_equal(np.asarray(T(a).transpose(0, 2)), a.swapaxes(0, 2))
    check_grad(lambda x: x.permute(1, 2, 0), lambda x: x.transpose(1, 2, 0), a)
    np.testing.assert_array_equal(np.asarray(L.cat([T(a), T(b)], 1)), np.concatenate([a, b], 1))
    check_grad(lambda x, y: L.cat([x, y], 1), lambda x, y: np.concatenate([x, y], 1), a, b)
    np.testing.assert_array_equal(np.asarray(L.stack([T(a), T(a)], 1)), np.stack([a, a], 1))
    parts = [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(7)]
    np.testing.assert_array_equal(np.asarray(L.cat([T(p) for p in parts], 0)), np.concatenate(parts, 0))
    c = rng.standard_normal((3, 1)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(T(c).expand(2, 3, 4)), np.broadcast_to(c, (2, 3, 4)))
    check_grad(lambda x: x.expand(2, 3, 4), lambda x: np.broadcast_to(x, (2, 3, 4)), c)
    with pytest.raises(ValueError, match="cat: tensor 1 has shape"):
        L.cat([T(a), L.ones(3, 3, 3)], 1)
    with pytest.raises(ValueError, match="stack expects each tensor to be equal size"):
        L.stack([T(a), T(b)])


def test_index_errors_name_op():
    with pytest.raises(IndexError, match="index 9 is out of bounds for dimension 0 with size 3"):
        L.ones(3, 2).index_select(0, L.tensor([9]))


# ---------------------------------------------------------------- autograd semantics
def test_grad_accumulates_and_zeroing():
    x = T([1.0, 2.0, 3.0], True)
    (x * x).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(np.asarray(x.grad), [2 + 3, 4 + 3, 6 + 3])
    x.grad = None
    (x.sum()).backward()
    np.testing.assert_allclose(np.asarray(x.grad), [1, 1, 1])


def test_backward_with_gradient_argument_and_errors():
    x = T([[1.0, 2.0], [3.0, 4.0]], True)
    y = x * 2
    y.backward(L.tensor([[1.0, 0.0], [0.5, 2.0]]))
    np.testing.assert_allclose(np.asarray(x.grad), [[2, 0], [1, 4]])
    with pytest.raises(RuntimeError, match="only for scalar outputs"):
        (x * 2).backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        L.ones(2).sum().backward()
    with pytest.raises(ValueError, match="backward: gradient has shape"):
        (x * 2).backward(L.ones(3))


def test_shared_subexpression_diamond():
    x = T([0.5, -1.0, 2.0], True)
    y = x.exp()
    z = (y * y + y).sum()
    z.backward()
    e = np.exp(np.array([0.5, -1.0, 2.0]))
    np.testing.assert_allclose(np.asarray(x.grad), 2 * e * e + e, rtol=1e-5)


def test_no_grad_and_detach():
    x = T([1.0, 2.0], True)
    with L.no_grad():
        y = x * 2
    assert not y.requires_grad and y.grad_fn is None
    z = (x * 2).detach()
    assert not z.requires_grad
    w = x * 2
    assert w.requires_grad and not w.is_leaf and w.grad_fn is not None

    @L.no_grad()
    def f(t):
        return t + 1
    assert not f(x).requires_grad
    assert L.is_grad_enabled()


def test_item_and_scalars():
    assert L.tensor([2.5]).item() == 2.5
    with pytest.raises(ValueError, match="one element"):
        L.ones(2).item()
    assert float(L.ones(1) * 3) == 3.0
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(L.ones(2))


def test_data_assignment_and_inplace_init():
    w = T(np.zeros((3, 2)), True)
    w.data.normal_(0, 1)   # in place on the shared storage, like nn.init on .data
    assert np.asarray(w).std() > 0
    w.data = L.ones(3, 2)
    assert np.all(np.asarray(w) == 1)
    with pytest.raises(RuntimeError, match="in-place"):
        w.add_(1)
    with L.no_grad():
        w.add_(1)
    assert np.all(np.asarray(w) == 2)


def test_long_chain_backward_no_recursion_limit():
    x = T([1.0], True)
    y = x
    for _ in range(20000):
        y = y * 1.0
    y.sum().backward()
    assert float(x.grad) == 1.0


def test_dtype_errors():
    with pytest.raises(TypeError, match="float32"):
        L._C.unary(0, L.arange(3))
    with pytest.raises(RuntimeError, match="only float32"):
        L.arange(3).requires_grad = True


def test_cuda_unavailable_is_clear():
    assert L.cuda.is_available() is False
    with pytest.raises(RuntimeError, match="no CUDA GPU is available"):
        L.zeros(3, device="cuda")
    with pytest.raises(RuntimeError, match="no CUDA GPU is available"):
        L.ones(2).to("cuda")


# ---------------------------------------------------------------- where
def test_where_selects_never_blends():
    x = T([-1.0, -2.0, 2.0, 3.0], True)
    y = L.where(x > 0, x.log(), 0.0)       # log of the negatives is NaN, and stays out
    np.testing.assert_array_equal(np.asarray(y.detach()), [0.0, 0.0, np.log(2.0, dtype=np.float32),
                                                           np.log(3.0, dtype=np.float32)])
    y.sum().backward()
    np.testing.assert_allclose(np.asarray(x.grad), [0.0, 0.0, 0.5, 1 / 3], rtol=1e-6)
    z = L.where(x > 0, x, float("-inf"))
    np.testing.assert_array_equal(np.asarray(z.detach()), [-np.inf, -np.inf, 2.0, 3.0])


def test_where_broadcasts_and_its_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    c = rng.random((3, 1)) > 0.5
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4,))
    got = L.where(L.tensor(c), T(a), T(b))
    assert tuple(got.shape) == (3, 4)
    np.testing.assert_array_equal(np.asarray(got), np.where(c, a, b).astype(np.float32))
    check_grad(lambda p, q: L.where(L.tensor(c), p, q), lambda p, q: np.where(c, p, q), a, b)
    with pytest.raises(ValueError, match="where: shapes"):
        L.where(L.tensor(c), T(a), T(np.ones(5)))


# ---------------------------------------------------------------- basic indexing views
def test_contiguous_basic_indexing_is_a_view_as_in_pytorch():
    x = L.zeros(3, 4)
    x[2][0] = 42.0                      # x[2] is a view: the write reaches x
    r = x[0:2]
    r[1, 3] = 7.0
    x[0, 1:3].fill_(5.0)
    want = np.zeros((3, 4), np.float32)
    want[2, 0], want[1, 3], want[0, 1:3] = 42.0, 7.0, 5.0
    np.testing.assert_array_equal(np.asarray(x), want)
    c = x[:, 1]                          # strided: a copy here (tensors are contiguous)
    c[0] = -1.0
    assert float(x[0, 1]) == 5.0
    # the view's gradient lands in its block of the base
    w = L.tensor(np.arange(12, dtype=np.float32).reshape(3, 4), requires_grad=True)
    (w[1] * w[1]).sum().backward()
    g = np.zeros((3, 4), np.float32)
    g[1] = 2 * np.arange(4, 8)
    np.testing.assert_array_equal(np.asarray(w.grad), g)
    check_grad(lambda a: a[1:3] * 3, lambda a: a[1:3] * 3, np.arange(24.0).reshape(4, 6))
