"""Captured C graphs: replaying the recorded forward/backward in the C loop must equal running the
Python forward per batch, bit for bit; uncapturable forwards are refused clearly."""
import numpy as np
import pytest

import lviv_c as L
from lviv_c.capture import CaptureError, capture_graph
from lviv_c.tensor import ELU
from lviv_c.trainers import Engine


class FakeLoader:
    def __init__(self, X, Y, idx, B):
        self.images_block, self.responses_block, self.indices, self.batch_size = X, Y, np.asarray(idx, np.int64), B
        self.dataset = list(range(len(X)))


class TinyLN:
    """A linear-nonlinear model written with bare tensors (no nn), plus a 'running' buffer."""

    def __init__(self, d, n, seed=0):
        L.manual_seed(seed)
        self.W = (L.randn(d, n) * 0.01).detach()
        self.W.requires_grad = True
        self.b = L.zeros(n, requires_grad=True)
        self.running = L.zeros(1)
        self.training = True

    def parameters(self):
        return [self.W, self.b]

    def buffers(self):
        return [self.running]

    def train(self, mode=True):
        self.training = mode

    def eval(self):
        self.training = False

    def __call__(self, x):
        z = x.flatten(1) @ self.W + self.b
        return L._C.unary(ELU, z, 1.0) + 1

    def regularizer(self):
        return self.W.abs().sum() * 0.01


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    n, N = 230, 40
    X = rng.standard_normal((n, 1, 6, 8)).astype(np.float32)
    Wt = rng.standard_normal((48, N)).astype(np.float32) * 0.3
    Y = rng.poisson(np.log1p(np.exp(X.reshape(n, -1) @ Wt))).astype(np.float32)
    return X, Y


def test_captured_epochs_equal_eager_epochs(data):
    X, Y = data
    ld = FakeLoader(X, Y, np.arange(200), 32)   # 200 = 6 x 32 + 8: a short last batch
    order = np.random.default_rng(1).permutation(200)
    finals = []
    for cap in (True, False):
        m = TinyLN(48, 40)
        e = Engine(m, ld, capture=cap, lr=0.01)
        losses = [e.train_epoch(order) for _ in range(3)]
        finals.append((np.array(m.W, copy=True), np.array(m.b, copy=True), losses))
    np.testing.assert_array_equal(finals[0][0], finals[1][0])
    np.testing.assert_array_equal(finals[0][1], finals[1][1])
    assert finals[0][2] == finals[1][2]
    assert finals[0][2][2] < finals[0][2][0]  # it learns
    assert not np.array_equal(finals[0][0], TinyLN(48, 40).W.detach().numpy())


def test_loss_accumulation_steps_less_often(data):
    X, Y = data
    ld = FakeLoader(X, Y, np.arange(192), 32)
    order = np.arange(192)
    w = []
    for accum in (1, 3):
        m = TinyLN(48, 40)
        e = Engine(m, ld, lr=0.01)
        e.train_epoch(order, accum=accum)
        w.append(np.array(m.W, copy=True))
    assert not np.array_equal(w[0], w[1])


def test_eval_predictions_match_python_forward(data):
    X, Y = data
    m = TinyLN(48, 40)
    ld = FakeLoader(X, Y, np.arange(200, 230), 7)
    e = Engine(m, FakeLoader(X, Y, np.arange(200), 32))
    p = e.predict(ld)
    with L.no_grad():
        ref = np.asarray(m(L.from_numpy(X[200:230])))
    np.testing.assert_allclose(p, ref, rtol=1e-6, atol=1e-6)
    c = e.correlation(ld, per_neuron=True)
    assert c.shape == (40,) and np.all(np.abs(c) <= 1)


def test_capture_restores_buffers_and_records_ops(data):
    X, Y = data
    m = TinyLN(48, 40)

    def fwd(x):
        L._C.copy_into(m.running, m.running + 1)  # a buffer update the capture must undo
        return m(x)
    g = capture_graph(m, X[:4], train=False, call=fwd)
    assert float(m.running.sum()) == 0.0
    assert "matmul" in g.ops and "reshape" in g.ops


def test_data_dependent_forward_is_refused_and_falls_back(data, capsys):
    X, Y = data
    m = TinyLN(48, 40)

    def branchy(x):
        out = m(x)
        if out.mean() > 0:   # a Python decision on a tensor value
            return out
        return out * 2
    with pytest.raises(CaptureError, match="reads tensor values in Python"):
        capture_graph(m, X[:4], train=False, call=branchy)
    assert not L._C.capture_active()
    w0 = np.array(m.W, copy=True)
    e = Engine(m, FakeLoader(X, Y, np.arange(64), 32), call=branchy)
    e.train_epoch(np.arange(64))
    assert "Python forward per batch" in capsys.readouterr().err
    assert not np.array_equal(w0, np.asarray(m.W))  # the eager fallback trained


def test_stale_gradients_are_overwritten_not_accumulated(data):
    # after an optimizer step the next backward overwrites .grad (no zeroing pass needed)
    X, Y = data
    m = TinyLN(48, 40)
    e = Engine(m, FakeLoader(X, Y, np.arange(32), 32))
    g = e._train_graph(32)
    L._C.graph_replay(g.handle)
    g.loss.backward()
    g1 = np.array(m.W.grad, copy=True)
    L._C.adam_step(e.adam)           # marks gradients stale
    w_after = np.array(m.W, copy=True)
    L._C.graph_replay(g.handle)
    g.loss.backward()
    # fresh gradient at the new weights, not g1 + it: recompute eagerly to compare
    m2 = TinyLN(48, 40)
    m2.W.data = L.from_numpy(w_after.copy())
    m2.b.data = L.from_numpy(np.array(m.b, copy=True))
    x, y = L.from_numpy(X[:32].copy()), L.from_numpy(Y[:32].copy())
    out = m2(x)
    loss = (out - y * (out + 1e-12).log()).sum() * float(np.sqrt(len(X) / 32)) + m2.regularizer()
    loss.backward()
    np.testing.assert_allclose(np.asarray(m.W.grad), np.asarray(m2.W.grad), rtol=1e-4, atol=1e-3)
    assert not np.allclose(np.asarray(m.W.grad), g1 + np.asarray(m2.W.grad), atol=1e-3)


def test_progress_callback_and_interrupt(data):
    X, Y = data
    m = TinyLN(48, 40)
    e = Engine(m, FakeLoader(X, Y, np.arange(200), 8))
    seen = []

    def prog(done, total, loss):
        seen.append((done, total))
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        e.train_epoch(np.arange(200), progress=prog)
    assert seen and seen[0][1] == 25 and seen[0][0] < 25


def test_lone_last_trial_is_skipped(data):
    X, Y = data
    m = TinyLN(48, 40)
    e = Engine(m, FakeLoader(X, Y, np.arange(65), 32))
    e.train_epoch(np.arange(65))            # 65 = 2 x 32 + 1: no graph for a batch of one
    assert sorted(e._train_graphs) == [32]


def test_train_epoch_rejects_bad_indices(data):
    X, Y = data
    m = TinyLN(48, 40)
    e = Engine(m, FakeLoader(X, Y, np.arange(64), 32))
    e.train_epoch(np.arange(64))
    with pytest.raises(IndexError, match="out of range"):
        e.train_epoch(np.array([0, 1, 10**6] + list(range(61))))
