"""The tensor API on CUDA tensors, each feature against the same code on the CPU: Python scalars
and 0-d CPU tensors in ops (PyTorch's scalar rule), masks and index assignment, repr / tolist /
pickle, `.to()` across devices keeping the graph, SGD and Adam (moments following a model moved
after some steps), poisson_loss with a NumPy target, nn.init. Runs on a GPU, and in CI on the
emulated device (LVIV_EMULATE_CUDA=1), which checks the dispatch and the copies, not the kernels."""
import copy
import pickle

import numpy as np
import pytest

import lviv_c as L

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not L.cuda.is_available(), reason="no CUDA device (real or emulated)")]

X = np.arange(-3, 9, dtype=np.float32).reshape(3, 4) / 2


def both(fn):
    """fn on the CPU tensor and on its CUDA copy -> (cpu result, cuda result as NumPy)."""
    c, g = L.tensor(X), L.tensor(X, device="cuda")
    rc, rg = fn(c), fn(g)
    assert rg.is_cuda, "the result left the device"
    return rc.detach().numpy(), rg.detach().cpu().numpy()


@pytest.mark.parametrize("name,fn", [
    ("gt", lambda x: x > 1.0), ("le", lambda x: x <= 0), ("eq", lambda x: x == 0.5),
    ("where", lambda x: L.where(x > 0, x, 0.0)), ("where_scalar_first", lambda x: L.where(x > 0, -1.0, x)),
    ("div0", lambda x: x / 0), ("rdiv", lambda x: 1 / (x + 10)), ("rpow", lambda x: 2 ** x),
    ("rsub", lambda x: 3 - x), ("zero_d_cpu", lambda x: x * L.tensor(2.5)),
    ("zero_d_cpu_left", lambda x: L.tensor(2.5) - x), ("numpy_scalar", lambda x: x + np.float32(1.5)),
    ("mask_index", lambda x: x[x > 0]), ("list_index", lambda x: x[:, [0, 3]]),
    ("maximum", lambda x: L.maximum(x, L.tensor(0.0)))])
def test_scalar_and_index_ops_match_the_cpu(name, fn):
    rc, rg = both(fn)
    assert rc.shape == rg.shape and rc.dtype == rg.dtype, name
    np.testing.assert_array_equal(rg, rc)


def test_a_cpu_tensor_with_dimensions_still_names_both_devices():
    with pytest.raises(ValueError, match=r"same device.*cuda.*cpu.*x.to\(device\)"):
        L.tensor(X, device="cuda") + L.tensor(X)


def test_index_assignment_matches_the_cpu_and_reaches_views():
    # (an indexed slice such as y[2] is a copy on both devices: tensors are contiguous here)
    def assign(x):
        y = x.clone()
        y[0, 1] = 5.0
        y[y > 3] = -1.0
        y[:, 2] = L.tensor([7.0, 8.0, 9.0], device="cuda" if x.is_cuda else "cpu")
        row = y.view(-1)  # a view: assigning into it changes y
        row[8] = 42.0
        return y
    rc, rg = both(assign)
    np.testing.assert_array_equal(rg, rc)
    assert rc[2, 0] == 42.0 and rc[0, 1] == -1.0


def test_repr_tolist_and_numpy():
    g = L.tensor(X, device="cuda")
    r = repr(g)
    assert "device='cuda:0'" in r and "3.5" in r
    assert g.tolist() == X.tolist()
    assert (g > 0).tolist() == (X > 0).tolist()
    with pytest.raises(TypeError, match=r"cuda:0.*Tensor.cpu\(\)"):
        g.numpy()
    with pytest.raises(TypeError, match=r"Tensor.cpu\(\)"):
        np.asarray(g)


def test_pickle_and_deepcopy_stay_on_the_device():
    g = L.tensor(X, device="cuda", requires_grad=True)
    for h in (pickle.loads(pickle.dumps(g)), copy.deepcopy(g)):
        assert h.is_cuda and h.requires_grad and h.is_leaf
        np.testing.assert_array_equal(h.detach().cpu().numpy(), X)


@pytest.mark.parametrize("src,dst", [("cpu", "cuda"), ("cuda", "cpu")])
def test_to_across_devices_keeps_the_graph(src, dst):
    a = L.tensor(X, device=src, requires_grad=True)
    b = a.to(dst)
    assert b.device.type == dst and b.grad_fn is not None and not b.is_leaf
    (b * b * 3).sum().backward()
    assert a.grad is not None and a.grad.device.type == src
    np.testing.assert_allclose(a.grad.cpu().numpy(), 6 * X, rtol=1e-6)
    # a factory call with device= still makes a leaf
    c = L.tensor(X, device=dst, requires_grad=True)
    assert c.is_leaf and c.grad_fn is None


def _fit(opt_cls, device, move_after=None, **kw):
    L.manual_seed(0)
    m = L.nn.Linear(4, 3)
    if device == "cuda" and move_after is None:
        m.to("cuda")
    opt = opt_cls(m.parameters(), **kw)
    x, y = L.tensor(X), L.tensor(X[:, :3] * 0.5)
    for step in range(4):
        if move_after is not None and step == move_after:
            m.to("cuda")   # after the optimizer made its state on the CPU
        dev = "cuda" if any(p.is_cuda for p in m.parameters()) else "cpu"
        loss = ((m(x.to(dev)) - y.to(dev)) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for st in opt.state.values():
        for v in st.values():
            if isinstance(v, L.Tensor):
                assert v.device.type == ("cuda" if device == "cuda" else "cpu"), "a moment did not follow"
    return [p.detach().cpu().numpy() for p in m.parameters()]


@pytest.mark.parametrize("opt_cls,kw", [
    (L.optim.SGD, dict(lr=0.01)), (L.optim.SGD, dict(lr=0.01, momentum=0.9, weight_decay=0.01)),
    (L.optim.SGD, dict(lr=0.01, momentum=0.9, nesterov=True)), (L.optim.SGD, dict(lr=0.01, momentum=0.5, maximize=True)),
    (L.optim.Adam, dict(lr=0.01, amsgrad=True)), (L.optim.Adam, dict(lr=0.01, maximize=True, weight_decay=0.1))])
def test_optimizers_on_the_device_match_the_cpu(opt_cls, kw):
    ref = _fit(opt_cls, "cpu", **kw)
    for got in (_fit(opt_cls, "cuda", **kw), _fit(opt_cls, "cuda", move_after=2, **kw)):
        for a, b in zip(got, ref):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_poisson_loss_with_a_numpy_target_and_init_on_the_device():
    F = L.nn.functional
    rc, rg = both(lambda x: F.poisson_loss(x.abs() + 0.1, np.abs(X) * 2))
    np.testing.assert_allclose(rg, rc, rtol=1e-6)
    w = {}
    for dev in ("cpu", "cuda"):
        L.manual_seed(3)
        lin = L.nn.Linear(5, 4).to(dev)
        L.nn.init.xavier_uniform_(lin.weight)
        L.nn.init.constant_(lin.bias, 0.25)
        assert lin.weight.is_cuda == (dev == "cuda")
        w[dev] = (lin.weight.detach().cpu().numpy(), lin.bias.detach().cpu().numpy())
    np.testing.assert_array_equal(w["cuda"][0], w["cpu"][0])
    np.testing.assert_array_equal(w["cuda"][1], 0.25)
