"""The C training loop's fused Linear-weight Adam step (csrc/fuse.c, lv_linear_adam_step): where a
weight is used only by one Linear layer (and optionally an L1 term w.abs().sum()), the loop computes
its gradient tile by tile inside the Adam pass. It must train exactly as the unfused loop does, and
must not be applied to a weight used in any other way (shared by two layers, an L2 term, ...)."""
import numpy as np
import pytest

import lviv_c as L
from lviv_c import nn
from lviv_c.course import CNN, Linear
from lviv_c.trainers import Engine

H, W, N = 8, 32, 40  # 256 pixels: the LN's weight rows are whole sum segments (LV_SUM_SEG)


class _Loader:
    """What trainers.Engine reads from a lviv_c loader."""

    def __init__(self, X, Y, batch_size):
        self.images_block, self.responses_block = X, Y
        self.indices = np.arange(len(X), dtype=np.int64)
        self.batch_size = batch_size
        self.dataset = range(len(X))


def _data(n_trials=67, h=H, w=W, n=N, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 255, (n_trials, 1, h, w)).astype(np.float32)
    Y = rng.poisson(1.0, (n_trials, n)).astype(np.float32)
    return X, Y


def _train(build, fused, X, Y, batch=20, epochs=3, accum=1, profile=False):
    """Train a fresh model for a few epochs (the last batch of each is short: its own graph);
    returns the losses, the state dict (NumPy), the op profile of the last epoch and the number of
    fused weight steps taken."""
    old = L._C.fused_updates(fused)
    n0 = L._C.fused_steps()
    try:
        L.manual_seed(0)
        model = build()
        eng = Engine(model, _Loader(X, Y, batch), lr=0.01)
        rng = np.random.default_rng(1)
        losses, prof = [], {}
        for e in range(epochs):
            order = rng.permutation(len(X)).astype(np.int64)
            if profile and e == epochs - 1:
                L._C.profile(True)
            losses.append(eng.train_epoch(order, accum=accum))
            if profile and e == epochs - 1:
                prof = L._C.profile(None)
                L._C.profile(False)
        state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
        return losses, state, prof, L._C.fused_steps() - n0
    finally:
        L._C.fused_updates(old)


def _assert_same_training(a, b, rtol=1e-6):
    np.testing.assert_allclose(a[0], b[0], rtol=rtol)
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        np.testing.assert_allclose(a[1][k], b[1][k], rtol=rtol, atol=1e-9, err_msg=k)


FUSED = "Linear+Adam (fused)"


@pytest.mark.parametrize("what", ["ln", "cnn", "ln-odd"])
def test_fused_training_matches_unfused(what):
    if what == "ln":
        X, Y = _data()
        build = lambda: Linear(H, W, N, gamma=0.1)  # noqa: E731
    elif what == "ln-odd":  # rows that are not whole sum segments: the regularizer summed directly
        X, Y = _data(h=7, w=13)
        build = lambda: Linear(7, 13, N, gamma=0.1)  # noqa: E731
    else:
        X, Y = _data(n_trials=45, h=8, w=16)
        build = lambda: CNN(8, 16, N)  # noqa: E731
    fused = _train(build, True, X, Y, profile=True)
    plain = _train(build, False, X, Y, profile=True)
    assert FUSED in fused[2] and FUSED not in plain[2]
    assert fused[3] == 3 * -(-len(X) // 20) and plain[3] == 0  # one fused step per batch
    assert all(np.isfinite(fused[0]))
    # the same arithmetic element by element: the same bits where the BLAS kernel computes each
    # dot product as one FMA chain (as OpenBLAS's x86-64 kernels do); a tight tolerance elsewhere
    _assert_same_training(fused, plain)
    # and the model did train: its weights moved from their initialisation
    L.manual_seed(0)
    init = build().state_dict()
    key = "linear.weight" if what != "cnn" else "readout.fc_ro.weight"
    assert np.abs(fused[1][key] - init[key].numpy()).max() > 1e-3


class _TwoLayers(nn.Module):
    """Two Linear layers with their own weights and L1 terms: both fuse."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(1, affine=False)
        self.hidden = nn.Linear(H * W, 32)
        self.out = nn.Linear(32, N)

    def forward(self, x):
        h = nn.functional.elu(self.hidden(self.bn(x).flatten(1)))
        return nn.functional.elu(self.out(h)) + 1

    def regularizer(self):
        return 0.01 * self.hidden.weight.abs().sum() + self.out.weight.abs().sum() * 0.01


def test_two_fused_layers_match_unfused():
    X, Y = _data()
    fused = _train(_TwoLayers, True, X, Y, profile=True)
    plain = _train(_TwoLayers, False, X, Y)
    assert fused[3] == 2 * 3 * -(-len(X) // 20)  # both weights, every batch of 3 epochs
    _assert_same_training(fused, plain)


def test_fused_training_is_bit_identical_run_to_run():
    X, Y = _data()
    build = lambda: Linear(H, W, N, gamma=0.1)  # noqa: E731
    a, b = _train(build, True, X, Y), _train(build, True, X, Y)
    assert a[0] == b[0]
    for k in a[1]:
        assert a[1][k].tobytes() == b[1][k].tobytes(), k


class _Shared(nn.Module):
    """One weight used by two Linear layers: its gradient has two Linear terms."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(H * W, N)
        self.b = nn.Linear(H * W, N)
        self.b.weight = self.a.weight
        nn.init.normal_(self.a.weight.data, std=1e-3)

    def forward(self, x):
        x = x.flatten(1) / 255.0
        return nn.functional.elu(self.a(x) + self.b(x * 0.5)) + 1

    def regularizer(self):
        return 0.1 * self.a.weight.abs().sum()


class _L2(nn.Module):
    """A Linear weight with an L2 term besides the L1 term."""

    def __init__(self, l1=True):
        super().__init__()
        self.l1 = l1
        self.linear = nn.Linear(H * W, N)
        nn.init.normal_(self.linear.weight.data, std=1e-3)

    def forward(self, x):
        return nn.functional.elu(self.linear(x.flatten(1) / 255.0)) + 1

    def regularizer(self):
        w = self.linear.weight
        return (0.1 * w.abs().sum() if self.l1 else 0) + 0.5 * (w * w).sum()


class _Mean(_L2):
    """An L1 term as a mean: not the sum the fused step reproduces."""

    def regularizer(self):
        return 10.0 * self.linear.weight.abs().mean()


class _Reads(_L2):
    """The abs of the weight is also used in the forward (the L1 term alone in the regularizer)."""

    def forward(self, x):
        w = self.linear.weight
        return nn.functional.elu(self.linear(x.flatten(1) / 255.0) + w.abs().sum() * 1e-3) + 1

    def regularizer(self):
        return 0.1 * self.linear.weight.abs().sum()


@pytest.mark.parametrize("build", [_Shared, _L2, lambda: _L2(l1=False), _Mean, _Reads],
                         ids=["shared-weight", "l1+l2", "l2", "l1-mean", "abs-in-forward"])
def test_no_fusion_where_the_weight_is_used_otherwise(build):
    X, Y = _data()
    on = _train(build, True, X, Y, profile=True)
    off = _train(build, False, X, Y, profile=True)
    assert FUSED not in on[2] and on[3] == 0
    for k in on[1]:
        assert on[1][k].tobytes() == off[1][k].tobytes(), k


def test_no_fusion_with_gradient_accumulation():
    X, Y = _data()
    build = lambda: Linear(H, W, N, gamma=0.1)  # noqa: E731
    on = _train(build, True, X, Y, accum=2, profile=True)
    off = _train(build, False, X, Y, accum=2)
    assert FUSED not in on[2] and on[3] == 0
    for k in on[1]:
        assert on[1][k].tobytes() == off[1][k].tobytes(), k


def test_full_sum_order_is_the_documented_one():
    """Full sums run in one fixed order (csrc/cpu/kernels.h, lv_sum_f64: segments of 256, 16
    lanes each): the fused step reproduces it for the regularizer, so it must not drift."""
    rng = np.random.default_rng(4)
    for n in (5, 256, 1000, 70001):
        x = (rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 6, n)).astype(np.float32)
        expect = 0.0
        for s in range(0, n, 256):
            seg = x[s:s + 256].astype(np.float64)
            lanes = [0.0] * 16
            for k, v in enumerate(seg):
                lanes[k % 16] += float(v)
            for step in (8, 4, 2):
                for j in range(step):
                    lanes[j] += lanes[j + step]
            expect += lanes[0] + lanes[1]
        got = L.tensor(x).sum().item()
        assert np.float32(got) == np.float32(expect), n
        assert L.tensor(x.reshape(-1, 1)).abs().sum().item() == np.float32(
            L.tensor(np.abs(x)).sum().item())
