"""The course notebook's Linear (LN) and CNN model classes, copied verbatim except for the imports,
trained for one step at the course sizes (60 images of 36x64, 5335 neurons)."""
from collections import OrderedDict

import numpy as np

import lviv_c as torch
from lviv_c import nn, optim
from lviv_c.nn import functional as F  # noqa: F401  (the notebook imports it)


# ---------------------------------------------------------------- copied from the notebook
class Linear(nn.Module):
    def __init__(
        self,
        input_height,
        input_width,
        n_neurons,
        momentum=0.1,
        init_std=1e-3,
        gamma=0.0,
    ):
        super().__init__()
        self.bn = nn.BatchNorm2d(1, momentum=momentum, affine=False)
        self.linear = nn.Linear(input_height * input_width, n_neurons)
        self.gamma = gamma
        self.init_std = init_std
        self.initialize()

    def initialize(self, std=None):
        if std is None:
            std = self.init_std
        nn.init.normal_(self.linear.weight.data, std=std)

    def forward(self, x):
        x = self.bn(x)
        x = self.linear(x.flatten(1))
        return nn.functional.elu(x) + 1

    def regularizer(self):
        return self.gamma * self.linear.weight.abs().sum()


class CNN(nn.Module):
    def __init__(
        self,
        input_height,
        input_width,
        n_neurons,
        momentum=0.1,
        init_std=1e-3,
        gamma=0.1,
        hidden_channels=8,
    ):
        super(CNN, self).__init__()
        self.init_std = init_std
        self.gamma = gamma

        # CNN core
        self.cnn_core = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(1, hidden_channels, 15, padding=15 // 2, bias=False)),
                    ("bn1", nn.BatchNorm2d(hidden_channels, momentum=momentum)),
                    ("elu1", nn.ELU()),
                    ("conv2", nn.Conv2d(hidden_channels, hidden_channels, 13, padding=13 // 2, bias=False)),
                    ("bn2", nn.BatchNorm2d(hidden_channels, momentum=momentum)),
                    ("elu2", nn.ELU()),
                    ("conv3", nn.Conv2d(hidden_channels, hidden_channels, 13, padding=13 // 2, bias=False)),
                    ("bn3", nn.BatchNorm2d(hidden_channels, momentum=momentum)),
                    ("elu3", nn.ELU()),
                    ("conv4", nn.Conv2d(hidden_channels, hidden_channels, 13, padding=13 // 2, bias=False)),
                    ("bn4", nn.BatchNorm2d(hidden_channels, momentum=momentum)),
                    ("elu4", nn.ELU()),
                ]
            )
        )

        # Fully connected readout
        self.readout = nn.Sequential(
            OrderedDict(
                [
                    ('fc_ro', nn.Linear(input_height * input_width * hidden_channels, n_neurons)),
                    ('bn_ro', nn.BatchNorm1d(n_neurons, momentum=momentum)),
                ]
            )
        )

    def initialize(self, std=None):
        if std is None:
            std = self.init_std
        for m in self.modules():
            if isinstance(m, nn.Conv2d) or isinstance(m, nn.Linear):
                nn.init.normal_(m.weight.data, std=std)

    def forward(self, x):
        x = self.cnn_core(x)
        x = x.view(x.size(0), -1)
        x = self.readout(x)
        return nn.functional.elu(x) + 1

    def regularizer(self):
        return self.readout[0].weight.abs().sum() * self.gamma
# ---------------------------------------------------------------- end of the notebook's code


N_NEURONS = 5335


def batch(seed=0):
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.uniform(0, 255, size=(60, 1, 36, 64)).astype(np.float32))
    responses = torch.from_numpy(rng.gamma(1.0, 1.0, size=(60, N_NEURONS)).astype(np.float32))
    return images, responses


def one_step(model):
    images, responses = batch()
    params_before = {k: np.asarray(v).copy() for k, v in model.state_dict().items()}
    opt = optim.Adam(model.parameters(), lr=0.005)
    model.train()
    out = model(images)
    assert tuple(out.shape) == (60, N_NEURONS)
    assert float(out.min()) > 0  # ELU + 1
    loss = F.poisson_loss(out, responses) + model.regularizer()
    assert np.isfinite(float(loss))
    opt.zero_grad()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and tuple(p.grad.shape) == tuple(p.shape), name
        assert np.all(np.isfinite(np.asarray(p.grad))), name
    opt.step()
    after = model.state_dict()
    for name, _ in model.named_parameters():
        assert not np.array_equal(params_before[name], np.asarray(after[name])), f"{name} did not change"
    return params_before, after


def test_course_ln_model_one_step():
    torch.manual_seed(0)
    # the notebook passes height and width swapped; the flattened size is the same
    model = Linear(input_height=64, input_width=36, n_neurons=N_NEURONS, gamma=0.1)
    assert tuple(model.linear.weight.shape) == (N_NEURONS, 2304)
    w = np.asarray(model.linear.weight.detach())
    assert abs(w.std() - 1e-3) < 2e-5  # initialize(): normal_(weight.data, std=1e-3) in place
    assert list(model.state_dict().keys()) == ["bn.running_mean", "bn.running_var", "bn.num_batches_tracked",
                                               "linear.weight", "linear.bias"]
    before, after = one_step(model)
    assert int(after["bn.num_batches_tracked"]) == 1
    assert not np.allclose(before["bn.running_mean"], np.asarray(after["bn.running_mean"]))
    # eval forward uses the running stats and works under no_grad
    model.eval()
    with torch.no_grad():
        out = model(batch(1)[0])
    assert tuple(out.shape) == (60, N_NEURONS) and out.grad_fn is None


def test_course_cnn_model_one_step():
    torch.manual_seed(0)
    model = CNN(input_height=64, input_width=36, n_neurons=N_NEURONS)
    model.initialize()
    assert sum(p.numel() for p in model.parameters()) == (
        8 * 15 * 15 + 3 * 8 * 8 * 13 * 13 + 4 * 2 * 8 + 2304 * 8 * N_NEURONS + N_NEURONS + 2 * N_NEURONS)
    assert repr(model.readout[0]) == "Linear(in_features=18432, out_features=5335, bias=True)"
    assert "bn_ro.num_batches_tracked" in "".join(model.state_dict().keys())
    one_step(model)
