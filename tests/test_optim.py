"""Adam / SGD against NumPy references of PyTorch's formulas; param_groups; state dicts;
ReduceLROnPlateau."""
import numpy as np
import pytest

import lviv_c
from lviv_c import nn, optim
from lviv_c.optim.lr_scheduler import ReduceLROnPlateau


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    return [nn.Parameter(lviv_c.from_numpy(rng.standard_normal(s).astype(np.float32))) for s in [(3, 4), (5,)]]


def grads_for(step, shapes):
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def set_grads(params, gs):
    for p, g in zip(params, gs):
        p.grad = lviv_c.from_numpy(g.copy())


def adam_ref(p, gs_per_step, lr, b1, b2, eps, wd, amsgrad=False, maximize=False):
    p = p.astype(np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    vmax = np.zeros_like(p)
    for k, g in enumerate(gs_per_step, start=1):
        g = -g if maximize else g.astype(np.float64)
        if wd:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        bc1, bc2 = 1 - b1 ** k, 1 - b2 ** k
        if amsgrad:
            vmax = np.maximum(vmax, v)
            denom = np.sqrt(vmax) / np.sqrt(bc2) + eps
        else:
            denom = np.sqrt(v) / np.sqrt(bc2) + eps
        p = p - lr / bc1 * m / denom
    return p


def sgd_ref(p, gs_per_step, lr, momentum, dampening, wd, nesterov):
    p = p.astype(np.float64).copy()
    buf = None
    for g in gs_per_step:
        d = g.astype(np.float64)
        if wd:
            d = d + wd * p
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
        p = p - lr * d
    return p


@pytest.mark.parametrize("kw", [dict(), dict(weight_decay=0.1), dict(betas=(0.8, 0.99), eps=1e-6, lr=0.05),
                                dict(amsgrad=True, weight_decay=0.01), dict(maximize=True)])
def test_adam_matches_reference(kw):
    params = make_params()
    init = [np.asarray(p.detach()).copy() for p in params]
    opt = optim.Adam(params, **{"lr": 0.01, **kw})
    steps = 6
    all_g = [grads_for(s, [p.shape for p in params]) for s in range(steps)]
    for s in range(steps):
        opt.zero_grad()
        set_grads(params, all_g[s])
        opt.step()
    b1, b2 = kw.get("betas", (0.9, 0.999))
    for i, p in enumerate(params):
        ref = adam_ref(init[i], [g[i] for g in all_g], kw.get("lr", 0.01), b1, b2, kw.get("eps", 1e-8),
                       kw.get("weight_decay", 0), kw.get("amsgrad", False), kw.get("maximize", False))
        np.testing.assert_allclose(np.asarray(p.detach()), ref, rtol=1e-5, atol=1e-6)
        assert opt.state[p]["step"] == steps


@pytest.mark.parametrize("kw", [dict(), dict(momentum=0.9), dict(momentum=0.9, dampening=0.3),
                                dict(momentum=0.9, nesterov=True, weight_decay=0.05), dict(weight_decay=0.2)])
def test_sgd_matches_reference(kw):
    params = make_params(1)
    init = [np.asarray(p.detach()).copy() for p in params]
    opt = optim.SGD(params, lr=0.1, **kw)
    all_g = [grads_for(s, [p.shape for p in params]) for s in range(5)]
    for g in all_g:
        set_grads(params, g)
        opt.step()
    for i, p in enumerate(params):
        ref = sgd_ref(init[i], [g[i] for g in all_g], 0.1, kw.get("momentum", 0), kw.get("dampening", 0),
                      kw.get("weight_decay", 0), kw.get("nesterov", False))
        np.testing.assert_allclose(np.asarray(p.detach()), ref, rtol=1e-5, atol=1e-6)


def test_param_groups_lr_change_and_skip_no_grad():
    a, b = make_params(2)
    a0, b0 = np.asarray(a.detach()).copy(), np.asarray(b.detach()).copy()
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[1]["lr"] == 1.0
    assert opt.param_groups[0]["momentum"] == 0
    a.grad = lviv_c.ones(*a.shape)
    opt.step()  # b has no grad: untouched
    np.testing.assert_allclose(np.asarray(a.detach()), a0 - 0.1, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(b.detach()), b0)
    opt.param_groups[0]["lr"] = 0.5
    opt.step()
    np.testing.assert_allclose(np.asarray(a.detach()), a0 - 0.6, rtol=1e-6)
    opt.zero_grad()
    assert a.grad is None


def test_adam_state_dict_round_trip():
    params = make_params(3)
    opt = optim.Adam(params, lr=0.01)
    for s in range(3):
        set_grads(params, grads_for(s, [p.shape for p in params]))
        opt.step()
    sd = opt.state_dict()
    assert sd["param_groups"][0]["params"] == [0, 1] and sd["state"][0]["step"] == 3
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    clones = [nn.Parameter(p.detach().clone()) for p in params]
    opt2 = optim.Adam(clones, lr=0.5)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 0.01
    g = grads_for(9, [p.shape for p in params])
    set_grads(params, g)
    set_grads(clones, g)
    opt.step()
    opt2.step()
    for p, q in zip(params, clones):
        np.testing.assert_allclose(np.asarray(p.detach()), np.asarray(q.detach()), rtol=1e-6)
    # state tensors in the dict are copies
    sd["state"][0]["exp_avg"].zero_()
    assert float(opt.state[params[0]]["exp_avg"].abs().sum()) > 0


def test_optimizer_argument_errors():
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(ValueError, match="Invalid learning rate"):
        optim.Adam(make_params(), lr=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD(make_params(), lr=0.1, nesterov=True)
    with pytest.raises(TypeError):
        optim.SGD(lviv_c.zeros(3), lr=0.1)


def test_reduce_lr_on_plateau_max_abs():
    p = make_params()
    opt = optim.Adam(p, lr=1.0)
    sch = ReduceLROnPlateau(opt, mode="max", factor=0.3, patience=2, threshold=1e-6, threshold_mode="abs",
                            min_lr=0.05)
    lrs = []
    for metric in [0.1, 0.2, 0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.5, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]:
        sch.step(metric)
        lrs.append(round(opt.param_groups[0]["lr"], 10))
    # best 0.2 at step 2; bad epochs 3,4,5 -> >2 at the 5th value: reduce
    assert lrs[:4] == [1.0] * 4
    assert lrs[4] == 0.3
    assert lrs[7] == 0.09  # three more bad epochs
    assert lrs[8:11] == [0.09] * 3  # new best 0.5 resets
    assert lrs[11] == 0.05  # floor min_lr
    assert lrs[-1] == 0.05


def test_reduce_lr_on_plateau_min_rel_cooldown():
    opt = optim.SGD(make_params(), lr=1.0)
    sch = ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=0, threshold=0.1, cooldown=1)
    sch.step(1.0)   # best
    sch.step(0.95)  # not better by 10 %: bad -> reduce (patience 0), cooldown 1
    assert opt.param_groups[0]["lr"] == 0.5
    sch.step(0.95)  # in cooldown: no reduction
    assert opt.param_groups[0]["lr"] == 0.5
    sch.step(0.95)
    assert opt.param_groups[0]["lr"] == 0.25
    sch.step(0.5)  # improvement
    assert opt.param_groups[0]["lr"] == 0.25
    assert sch.get_last_lr() == [0.25]
    with pytest.raises(ValueError):
        ReduceLROnPlateau(opt, factor=1.5)
