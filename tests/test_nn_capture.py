"""The nn ops inside a captured C graph: replays (as the trainer runs them) equal eager forwards,
BatchNorm running statistics advance on every replay, dropout draws fresh masks."""
import copy

import numpy as np

import lviv_c
from lviv_c import nn
from lviv_c.capture import capture_graph
from lviv_c.nn import functional as F


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 4, padding="same", bias=True)
        self.bn = nn.BatchNorm2d(4, momentum=0.3)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
        self.pw = nn.Conv2d(4, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(2, affine=False, momentum=None)
        self.fc = nn.Linear(2 * 4 * 5, 6)
        self.bn_ro = nn.BatchNorm1d(6)

    def forward(self, x):
        x = F.elu(self.bn(self.conv(x)))
        x = F.avg_pool2d(F.pad(x, (1, 1, 0, 0)), 2)
        x = F.elu(self.bn2(self.pw(self.dw(x))))
        x = self.bn_ro(self.fc(x.flatten(1)))
        return F.elu(x) + 1


def _set(t, arr):
    np.asarray(memoryview(t))[...] = arr


def test_train_replay_equals_eager():
    lviv_c.manual_seed(0)
    m = Small()
    ref = copy.deepcopy(m)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((5, 1, 8, 8)).astype(np.float32) for _ in range(3)]
    ys = [rng.gamma(1.0, 1.0, (5, 6)).astype(np.float32) for _ in range(3)]
    g = capture_graph(m, xs[0], ys[0], loss_fn=lambda o, y: F.poisson_loss(o, y), train=True)
    for x, y in zip(xs, ys):
        _set(g.x, x)
        _set(g.y, y)
        g.replay()
        ref.train()
        out = ref(lviv_c.from_numpy(x))
        np.testing.assert_allclose(np.asarray(g.out.detach()), np.asarray(out.detach()), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(float(g.loss), float(F.poisson_loss(out, lviv_c.from_numpy(y))), rtol=1e-5)
        for (k, a), b in zip(m.state_dict().items(), ref.state_dict().values()):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6, err_msg=k)
    assert int(m.bn2.num_batches_tracked) == 3


def test_eval_replay_uses_running_stats_and_dropout_redraws():
    lviv_c.manual_seed(1)
    m = Small()
    m.train()
    m(lviv_c.randn(6, 1, 8, 8))  # non-trivial running stats
    g = capture_graph(m, np.zeros((3, 1, 8, 8), np.float32), train=False)
    x = np.random.default_rng(2).standard_normal((3, 1, 8, 8)).astype(np.float32)
    _set(g.x, x)
    g.replay()
    m.eval()
    with lviv_c.no_grad():
        ref = m(lviv_c.from_numpy(x))
    np.testing.assert_allclose(np.asarray(g.out), np.asarray(ref), rtol=1e-5, atol=1e-6)

    d = nn.Sequential(nn.Linear(20, 200), nn.Dropout(0.5))
    x = np.random.default_rng(3).standard_normal((1, 20)).astype(np.float32)
    gd = capture_graph(d, x, np.ones((1, 200), np.float32), loss_fn=lambda o, y: (o * y).sum(), train=True)
    with lviv_c.no_grad():
        full = np.asarray(d[0](lviv_c.from_numpy(x)))
    gd.replay()
    a = np.asarray(gd.out.detach()).copy()
    gd.replay()
    b = np.asarray(gd.out.detach())
    assert not np.array_equal(a == 0, b == 0)  # a fresh mask per replay
    for r in (a, b):
        keep = r != 0
        assert 0.3 < keep.mean() < 0.7
        np.testing.assert_allclose(r[keep], 2 * full[keep], rtol=1e-5)
