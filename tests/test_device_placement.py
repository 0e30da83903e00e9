"""Device placement on a machine without a usable GPU (always run): Module.to('cuda') /
.cuda() raise the clear RuntimeError and leave the model intact; .cpu() / .to('cpu') keep the
Parameter objects; the in-place storage move and the trainers' device helpers behave on the CPU.
The GPU side of the same features is in test_cuda_ops.py (skipped without a GPU)."""
import numpy as np
import pytest

import lviv_c as L
from lviv_c import _C
from lviv_c.capture import host_copy, model_device, to_device, write_into

HAVE_GPU = L.cuda.is_available()
pytestmark = pytest.mark.cuda  # CI also runs these on the emulated device (make test)
nogpu = pytest.mark.skipif(HAVE_GPU, reason="checks the no-GPU error path")


def _model():
    L.manual_seed(0)
    return L.nn.Sequential(L.nn.Conv2d(1, 3, 3, padding=1), L.nn.BatchNorm2d(3), L.nn.ELU(),
                           L.nn.Flatten(), L.nn.Linear(3 * 4 * 5, 2))


def _snapshot(m):
    return {k: np.array(v.detach().numpy(), copy=True) for k, v in m.state_dict().items()}


@nogpu
@pytest.mark.parametrize("move", [lambda m: m.to("cuda"), lambda m: m.cuda(), lambda m: m.to(device="cuda:0"),
                                  lambda m: m.to(L.device("cuda"))])
def test_module_to_cuda_without_gpu_raises_and_leaves_model_intact(move):
    m = _model()
    m(L.randn(2, 1, 4, 5)).sum().backward()
    params = list(m.parameters())
    grads = [p.grad.numpy().copy() for p in params]
    before = _snapshot(m)
    with pytest.raises(RuntimeError, match="no CUDA GPU is available.*device='cpu'"):
        move(m)
    assert [id(p) for p in m.parameters()] == [id(p) for p in params]
    for k, v in m.state_dict().items():
        assert v.device == "cpu", k
        np.testing.assert_array_equal(v.numpy(), before[k])
    for p, g in zip(params, grads):
        np.testing.assert_array_equal(p.grad.numpy(), g)
    assert m(L.randn(2, 1, 4, 5)).shape == (2, 2)  # still usable


def test_module_cpu_moves_nothing_and_keeps_identity():
    m = _model()
    params = list(m.parameters())
    ptrs = [p._data_ptr for p in params]
    assert m.cpu() is m and m.to("cpu") is m and m.to(L.randn(1)) is m and m.to(L.float32) is m
    assert [id(p) for p in m.parameters()] == [id(p) for p in params]
    assert [p._data_ptr for p in m.parameters()] == ptrs  # no copy when already there
    with pytest.raises(TypeError, match="invalid combination"):
        m.to(3.5)


def test_move_storage_on_cpu_and_errors():
    t = L.randn(3, 4, requires_grad=True)
    ptr = t._data_ptr
    _C._move_storage(t, 0)
    assert t._data_ptr == ptr
    with pytest.raises(RuntimeError, match="leaf"):
        _C._move_storage(t * 2, 0)
    with pytest.raises(ValueError, match="device code"):
        _C._move_storage(t, 7)
    if not _C._cuda_loaded():
        with pytest.raises(RuntimeError, match="CUDA backend not loaded"):
            _C._move_storage(t, 1)
        assert t.device == "cpu" and t._data_ptr == ptr


def test_trainer_device_helpers_on_cpu():
    m = _model()
    assert model_device(m) == "cpu"
    assert model_device(object()) == "cpu"
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = to_device(a, "cpu")
    a[0, 0] = 99  # a copy, not a view
    assert t.numpy()[0, 0] == 0
    np.testing.assert_array_equal(host_copy(t), np.arange(12, dtype=np.float32).reshape(3, 4))
    write_into(t, np.ones((3, 4), np.float32))
    np.testing.assert_array_equal(t.numpy(), 1)


def test_train_epoch_refuses_cpu_tensor_blocks():
    from lviv_c.capture import capture_graph
    F = L.nn.functional
    m = L.nn.Linear(3, 2)
    g = capture_graph(m, np.zeros((4, 3), np.float32), np.zeros((4, 2), np.float32),
                      lambda o, y: F.poisson_loss(F.elu(o) + 1, y), train=True)
    adam = _C.adam_new(list(m.parameters()), 0.1)
    order = np.arange(4, dtype=np.int64)
    with pytest.raises(TypeError, match="float32 CUDA tensor"):
        _C.train_epoch(g.handle, None, adam, L.zeros(4, 3), np.zeros((4, 2), np.float32), order)
    X, Y = np.ones((4, 3), np.float32), np.ones((4, 2), np.float32)
    status, loss = _C.train_epoch(g.handle, None, adam, X, Y, order)  # host blocks still work
    assert status == 0 and np.isfinite(loss)


def test_optimizer_state_on_cpu_params_is_cpu():
    m = L.nn.Linear(3, 2)
    opt = L.optim.Adam(m.parameters(), lr=0.1)
    m(L.randn(4, 3)).sum().backward()
    opt.step()
    assert opt.state[m.weight]["exp_avg"].device == "cpu"
