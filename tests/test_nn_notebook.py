"""The course notebook's Linear (LN) and CNN model classes (lviv_c.course, the code the notebook
shows), trained for one step at the course sizes (60 images of 36x64, 5335 neurons)."""
import numpy as np

import lviv_c as torch
from lviv_c import optim
from lviv_c.nn import functional as F
# the notebook's classes: their one copy is lviv_c/course.py (notebooks/make_notebook.py writes
# the same source into the notebook; test_notebook checks the .ipynb is current)
from lviv_c.course import CNN, Linear


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
