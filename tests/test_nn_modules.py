"""Module system, layers, BatchNorm running statistics, init, state dicts and reprs."""
import copy
import math
import pickle
from collections import OrderedDict

import numpy as np
import pytest

import lviv_c
from lviv_c import nn
from lviv_c.nn import functional as F

import nn_ref as R
from nn_ref import t


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.head = nn.Sequential(OrderedDict([("fc", nn.Linear(2 * 4 * 5, 3)), ("act", nn.ELU())]))
        self.register_buffer("scale", lviv_c.ones(3))
        self.register_buffer("tmp", lviv_c.zeros(1), persistent=False)
        self.gamma = 0.5

    def forward(self, x):
        return self.head(F.elu(self.bn(self.conv(x))).flatten(1)) * self.scale


# ------------------------------------------------------------------ registration / traversal
def test_registration_and_traversal():
    m = Net()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["conv.weight", "bn.weight", "bn.bias", "head.fc.weight", "head.fc.bias"]
    assert [n for n, _ in m.named_buffers()] == ["scale", "tmp", "bn.running_mean", "bn.running_var",
                                                 "bn.num_batches_tracked"]
    assert [n for n, _ in m.named_modules()] == ["", "conv", "bn", "head", "head.fc", "head.act"]
    assert [n for n, _ in m.named_children()] == ["conv", "bn", "head"]
    assert len(list(m.parameters())) == 5 and len(list(m.modules())) == 6
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in m.parameters())
    assert m.gamma == 0.5 and "gamma" not in m._parameters
    assert m.bn.num_batches_tracked.dtype == lviv_c.int64
    with pytest.raises(AttributeError, match="'Net' object has no attribute 'nope'"):
        m.nope
    with pytest.raises(TypeError, match="cannot assign"):
        m.conv = 3
    p = nn.Parameter(lviv_c.zeros(2))
    m.extra = p
    assert m._parameters["extra"] is p
    m.register_parameter("none_param", None)
    assert "none_param" not in dict(m.named_parameters())
    del m.extra
    assert "extra" not in m._parameters
    assert m.get_submodule("head.fc") is m.head.fc


def test_shared_parameters_counted_once():
    lin = nn.Linear(2, 2)
    s = nn.Sequential(lin, lin)
    assert len(list(s.parameters())) == 2
    assert list(s.state_dict().keys()) == ["0.weight", "0.bias", "1.weight", "1.bias"]


def test_train_eval_apply_zero_grad():
    m = Net()
    assert all(x.training for x in m.modules())
    assert m.eval() is m
    assert not any(x.training for x in m.modules())
    m.train()
    assert all(x.training for x in m.modules())
    seen = []
    m.apply(lambda mod: seen.append(type(mod).__name__))
    assert seen == ["Conv2d", "BatchNorm2d", "Linear", "ELU", "Sequential", "Net"]
    out = m(lviv_c.randn(3, 1, 4, 5))
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad(set_to_none=False)
    assert all(float(p.grad.abs().sum()) == 0 for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_devices():
    m = Net()
    assert m.to("cpu") is m and m.cpu() is m
    with pytest.raises(RuntimeError, match="CUDA"):
        m.cuda()
    with pytest.raises(RuntimeError, match="CUDA"):
        m.to("cuda")


def test_forward_hooks():
    m = nn.Linear(2, 2)
    calls = []
    h = m.register_forward_hook(lambda mod, inp, out: calls.append(tuple(out.shape)))
    m(lviv_c.ones(1, 2))
    h.remove()
    m(lviv_c.ones(1, 2))
    assert calls == [(1, 2)]


# ------------------------------------------------------------------ containers
def test_sequential():
    a, b, c = nn.Linear(2, 3), nn.ELU(), nn.Linear(3, 1)
    s = nn.Sequential(a, b, c)
    assert len(s) == 3 and s[0] is a and s[-1] is c and list(s) == [a, b, c]
    sub = s[1:]
    assert isinstance(sub, nn.Sequential) and list(sub) == [b, c]
    assert list(sub._modules) == ["1", "2"]
    x = lviv_c.randn(4, 2)
    np.testing.assert_allclose(np.asarray(s(x).detach()), np.asarray(c(b(a(x))).detach()), rtol=1e-6)
    od = nn.Sequential(OrderedDict([("fc_ro", nn.Linear(4, 2)), ("bn_ro", nn.BatchNorm1d(2))]))
    assert isinstance(od[0], nn.Linear) and od.fc_ro is od[0]
    with pytest.raises(IndexError):
        s[3]
    s.append(nn.Tanh())
    assert len(s) == 4


def test_modulelist_moduledict():
    ml = nn.ModuleList([nn.Linear(1, 1) for _ in range(3)])
    assert len(ml) == 3 and [n for n, _ in ml.named_parameters()][:2] == ["0.weight", "0.bias"]
    ml.append(nn.ReLU())
    assert isinstance(ml[-1], nn.ReLU) and len(ml[1:]) == 3
    md = nn.ModuleDict({"a": nn.Linear(1, 2), "b": nn.ELU()})
    assert list(md.keys()) == ["a", "b"] and "a" in md and len(md) == 2
    assert [n for n, _ in md.named_parameters()] == ["a.weight", "a.bias"]


# ------------------------------------------------------------------ repr
def test_reprs():
    assert repr(nn.Conv2d(1, 8, 15, padding=7, bias=False)) == \
        "Conv2d(1, 8, kernel_size=(15, 15), stride=(1, 1), padding=(7, 7), bias=False)"
    assert repr(nn.Conv2d(64, 64, 13, padding="same", groups=64, bias=False)) == \
        "Conv2d(64, 64, kernel_size=(13, 13), stride=(1, 1), padding=same, groups=64, bias=False)"
    assert repr(nn.Conv2d(2, 4, (3, 5), stride=2, dilation=2)) == \
        "Conv2d(2, 4, kernel_size=(3, 5), stride=(2, 2), dilation=(2, 2))"
    assert repr(nn.BatchNorm2d(8)) == "BatchNorm2d(8, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
    assert repr(nn.BatchNorm2d(1, momentum=None, affine=False)) == \
        "BatchNorm2d(1, eps=1e-05, momentum=None, affine=False, track_running_stats=True)"
    assert repr(nn.BatchNorm1d(5335)) == \
        "BatchNorm1d(5335, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
    assert repr(nn.Linear(2304, 5335)) == "Linear(in_features=2304, out_features=5335, bias=True)"
    assert repr(nn.ELU()) == "ELU(alpha=1.0)"
    assert repr(nn.ReLU()) == "ReLU()"
    assert repr(nn.Flatten()) == "Flatten(start_dim=1, end_dim=-1)"
    assert repr(nn.Dropout(0.2)) == "Dropout(p=0.2, inplace=False)"
    assert repr(nn.AvgPool2d(2)) == "AvgPool2d(kernel_size=2, stride=2, padding=0)"
    assert repr(nn.Identity()) == "Identity()"
    assert repr(Net()) == """Net(
  (conv): Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
  (bn): BatchNorm2d(2, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
  (head): Sequential(
    (fc): Linear(in_features=40, out_features=3, bias=True)
    (act): ELU(alpha=1.0)
  )
)"""
    p = nn.Parameter(lviv_c.tensor([1.0, 2.0]))
    assert repr(p) == "Parameter containing:\ntensor([1., 2.], requires_grad=True)"


# ------------------------------------------------------------------ parameters & init
def test_parameter_shares_storage():
    base = lviv_c.zeros(3)
    p = nn.Parameter(base)
    assert p.requires_grad and not base.requires_grad
    base[1] = 5.0
    assert float(p[1]) == 5.0
    assert isinstance(copy.deepcopy(p), nn.Parameter)
    q = pickle.loads(pickle.dumps(p))
    assert isinstance(q, nn.Parameter) and q.requires_grad and q.tolist() == p.tolist()


def test_default_init_reproducible_and_bounded():
    lviv_c.manual_seed(1)
    a = nn.Conv2d(4, 6, 3)
    lviv_c.manual_seed(1)
    b = nn.Conv2d(4, 6, 3)
    np.testing.assert_array_equal(np.asarray(a.weight.detach()), np.asarray(b.weight.detach()))
    lin = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    w = np.asarray(lin.weight.detach())
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.02 * bound
    bb = np.asarray(lin.bias.detach())
    assert np.abs(bb).max() <= bound and bb.std() > 0.4 * bound


def test_init_functions_in_place():
    lin = nn.Linear(300, 200)
    nn.init.normal_(lin.weight.data, std=1e-3)  # the notebook's form: in place on .data
    w = np.asarray(lin.weight.detach())
    assert abs(w.std() - 1e-3) < 5e-5 and abs(w.mean()) < 5e-5
    nn.init.constant_(lin.bias, 0.25)
    assert np.all(np.asarray(lin.bias.detach()) == 0.25)
    nn.init.zeros_(lin.bias)
    assert np.all(np.asarray(lin.bias.detach()) == 0)
    nn.init.ones_(lin.bias.data)
    assert np.all(np.asarray(lin.bias.detach()) == 1)
    nn.init.xavier_normal_(lin.weight)
    assert abs(np.asarray(lin.weight.detach()).std() - math.sqrt(2 / 500)) < 0.003
    nn.init.xavier_uniform_(lin.weight)
    a = math.sqrt(6 / 500)
    assert np.asarray(lin.weight.detach()).max() <= a
    nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
    assert abs(np.asarray(lin.weight.detach()).std() - math.sqrt(2 / 300)) < 0.004
    nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5))
    assert np.abs(np.asarray(lin.weight.detach())).max() <= 1 / math.sqrt(300)
    nn.init.uniform_(lin.weight, -2, -1)
    assert np.asarray(lin.weight.detach()).max() <= -1
    q = nn.Parameter(lviv_c.empty(3, 5))
    nn.init.orthogonal_(q, gain=2.0)
    Q = np.asarray(q.detach())
    np.testing.assert_allclose(Q @ Q.T, 4 * np.eye(3), atol=1e-5)
    r = lviv_c.empty(2, 2)
    nn.init.orthogonal_(r)
    np.testing.assert_allclose(np.asarray(r).T @ np.asarray(r), np.eye(2), atol=1e-6)


# ------------------------------------------------------------------ layers vs NumPy
def test_conv2d_module_matches_reference():
    conv = nn.Conv2d(2, 4, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    x = np.random.default_rng(0).standard_normal((2, 2, 7, 9))
    out = conv(t(x))
    ref = R.conv2d(x, np.asarray(conv.weight.detach(), np.float64), np.asarray(conv.bias.detach(), np.float64),
                   (2, 1), (1, 2), (1, 2), 2)
    np.testing.assert_allclose(np.asarray(out.detach()), ref, rtol=1e-4, atol=1e-5)


def test_layer_input_errors():
    bn = nn.BatchNorm2d(8)
    with pytest.raises(ValueError, match="expected 4D input"):
        bn(lviv_c.zeros(2, 8))
    with pytest.raises(ValueError, match=r"input has 3 channels, expected 8 \(input shape \(2, 3, 4, 4\)\)"):
        bn(lviv_c.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        nn.BatchNorm1d(3)(lviv_c.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="linear: input has 5 features"):
        nn.Linear(4, 2)(lviv_c.zeros(3, 5))
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)


# ------------------------------------------------------------------ BatchNorm running stats
@pytest.mark.parametrize("momentum", [0.1, 0.7, None])
@pytest.mark.parametrize("shape", [(6, 3, 4, 5), (7, 3), (5, 3, 4)])
def test_batchnorm_running_stats(momentum, shape):
    bn = nn.BatchNorm2d(3, momentum=momentum) if len(shape) == 4 else nn.BatchNorm1d(3, momentum=momentum)
    rng = np.random.default_rng(0)
    rm, rv = np.zeros(3), np.ones(3)
    axes = (0,) + tuple(range(2, len(shape)))
    for step in range(1, 5):
        x = rng.standard_normal(shape) * (step + 1) + step
        out = bn(t(x))
        np.testing.assert_allclose(np.asarray(out.detach()), R.batch_norm_train(x), rtol=1e-4, atol=1e-4)
        f = 1.0 / step if momentum is None else momentum
        rm = (1 - f) * rm + f * x.mean(axis=axes)
        rv = (1 - f) * rv + f * x.var(axis=axes, ddof=1)  # unbiased
        np.testing.assert_allclose(np.asarray(bn.running_mean), rm, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(bn.running_var), rv, rtol=1e-5, atol=1e-6)
        assert int(bn.num_batches_tracked) == step
    bn.eval()
    x = rng.standard_normal(shape)
    out = bn(t(x))
    np.testing.assert_allclose(np.asarray(out.detach()), R.batch_norm_eval(x, rm, rv), rtol=1e-4, atol=1e-5)
    assert int(bn.num_batches_tracked) == 4
    np.testing.assert_allclose(np.asarray(bn.running_mean), rm, rtol=1e-5, atol=1e-6)


def test_batchnorm_no_tracking_and_affine_off():
    bn = nn.BatchNorm2d(2, track_running_stats=False, affine=False)
    assert bn.running_mean is None and list(bn.state_dict().keys()) == []
    x = np.random.default_rng(1).standard_normal((3, 2, 2, 2)) + 3
    bn.eval()  # no running stats: batch statistics even in eval
    np.testing.assert_allclose(np.asarray(bn(t(x))), R.batch_norm_train(x), rtol=1e-4, atol=1e-5)


def test_batchnorm_affine_grads():
    bn = nn.BatchNorm2d(2)
    x = t(np.random.default_rng(2).standard_normal((3, 2, 2, 2)), grad=True)
    bn(x).pow(2).sum().backward()
    assert bn.weight.grad is not None and bn.bias.grad is not None and x.grad is not None


# ------------------------------------------------------------------ state dict
def test_state_dict_round_trip():
    lviv_c.manual_seed(0)
    a = Net()
    a(lviv_c.randn(4, 1, 4, 5))  # move running stats
    sd = a.state_dict()
    assert list(sd.keys()) == ["scale", "conv.weight", "bn.weight", "bn.bias", "bn.running_mean",
                               "bn.running_var", "bn.num_batches_tracked", "head.fc.weight", "head.fc.bias"]
    assert all(isinstance(v, lviv_c.Tensor) and not v.requires_grad for v in sd.values())
    assert sd["bn.num_batches_tracked"].dtype == lviv_c.int64 and int(sd["bn.num_batches_tracked"]) == 1
    # values share storage with the module (like torch)
    assert sd["conv.weight"]._data_ptr == a.conv.weight._data_ptr
    lviv_c.manual_seed(1)
    b = Net()
    w_id = b.conv.weight._data_ptr
    res = b.load_state_dict({k: np.asarray(v) for k, v in sd.items()})  # NumPy values
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert b.conv.weight._data_ptr == w_id  # copied in place
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(np.asarray(v), np.asarray(sd[k]))
    c = Net()
    c.load_state_dict(sd)  # tensor values
    x = lviv_c.randn(2, 1, 4, 5)
    a.eval(), c.eval()
    np.testing.assert_allclose(np.asarray(a(x).detach()), np.asarray(c(x).detach()), rtol=1e-6)


def test_load_state_dict_errors():
    m = Net()
    sd = {k: np.asarray(v) for k, v in m.state_dict().items()}
    bad = dict(sd)
    del bad["bn.running_var"]
    bad["head.fc.extra"] = np.zeros(1)
    with pytest.raises(RuntimeError) as e:
        m.load_state_dict(bad)
    msg = str(e.value)
    assert msg.startswith("Error(s) in loading state_dict for Net:")
    assert 'Missing key(s) in state_dict: "bn.running_var".' in msg
    assert 'Unexpected key(s) in state_dict: "head.fc.extra".' in msg
    res = m.load_state_dict(bad, strict=False)
    assert res.missing_keys == ["bn.running_var"] and res.unexpected_keys == ["head.fc.extra"]
    wrong = dict(sd)
    wrong["conv.weight"] = np.zeros((3, 1, 3, 3), np.float32)
    with pytest.raises(RuntimeError, match=r"size mismatch for conv.weight: copying a param with shape "
                                           r"lviv_c.Size\(\[3, 1, 3, 3\]\) from checkpoint, the shape in current model is "
                                           r"lviv_c.Size\(\[2, 1, 3, 3\]\)"):
        m.load_state_dict(wrong)


def test_deepcopy_and_pickle_model():
    m = Net()
    m2 = copy.deepcopy(m)
    assert all(isinstance(p, nn.Parameter) for p in m2.parameters())
    assert m2.conv.weight._data_ptr != m.conv.weight._data_ptr
    m3 = pickle.loads(pickle.dumps(m))
    x = lviv_c.randn(2, 1, 4, 5)
    m.eval(), m3.eval()
    np.testing.assert_allclose(np.asarray(m(x).detach()), np.asarray(m3(x).detach()), rtol=1e-6)


def test_dropout_module_modes():
    d = nn.Dropout(0.5)
    x = lviv_c.ones(1000)
    assert float((d(x) == 0).sum()) > 300
    d.eval()
    assert d(x) is x


def test_avgpool_flatten_identity_modules():
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 6))
    out = nn.AvgPool2d(2)(t(x))
    np.testing.assert_allclose(np.asarray(out), R.avg_pool2d(x, (2, 2), (2, 2), (0, 0)), rtol=1e-5, atol=1e-6)
    assert tuple(nn.Flatten()(t(x)).shape) == (2, 72)
    assert nn.Identity()(t(x)).shape == (2, 3, 4, 6)
    np.testing.assert_allclose(np.asarray(nn.Tanh()(t(x))), np.tanh(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(nn.Sigmoid()(t(x))), 1 / (1 + np.exp(-x)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(nn.ReLU()(t(x))), np.maximum(x, 0), rtol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_sequential_fuses_batchnorm_elu(training):
    lviv_c.manual_seed(4)
    seq = nn.Sequential(OrderedDict([("conv", nn.Conv2d(2, 3, 3, padding=1)), ("bn", nn.BatchNorm2d(3)),
                                     ("elu", nn.ELU())]))
    seq.bn.weight.data = lviv_c.tensor([1.5, 0.5, -1.0])
    seq.bn.running_mean.data = lviv_c.tensor([0.2, -0.1, 0.0])
    ref = copy.deepcopy(seq)
    seq.train(training), ref.train(training)
    x = np.random.default_rng(5).standard_normal((4, 2, 5, 6)).astype(np.float32)
    xa, xb = t(x, grad=True), t(x, grad=True)
    out = seq(xa)
    assert out.grad_fn == "<BatchNormBackward>"  # the fused op ran
    unfused = ref.elu(ref.bn(ref.conv(xb)))  # module by module
    assert unfused.grad_fn != "<BatchNormBackward>"
    np.testing.assert_allclose(np.asarray(out.detach()), np.asarray(unfused.detach()), rtol=1e-5, atol=1e-6)
    g = t(np.random.default_rng(6).standard_normal(out.shape))
    out.backward(g)
    unfused.backward(g)
    np.testing.assert_allclose(np.asarray(xa.grad), np.asarray(xb.grad), rtol=1e-4, atol=1e-5)
    for (k, p), q in zip(seq.named_parameters(), ref.parameters()):
        np.testing.assert_allclose(np.asarray(p.grad), np.asarray(q.grad), rtol=1e-4, atol=1e-5, err_msg=k)
    for (k, a), b in zip(seq.state_dict().items(), ref.state_dict().values()):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7, err_msg=k)
    # a hook on the ELU must see its call: no fusion then
    seen = []
    seq.elu.register_forward_hook(lambda m, i, o: seen.append(1))
    assert seq(xa).grad_fn != "<BatchNormBackward>" and seen == [1]


@pytest.mark.parametrize("fname", ["state_zip.pt", "state_legacy.pt"])
def test_load_pytorch_checkpoint(fname):
    """A state dict saved by torch.save (tests/data/make_torch_fixtures.py) loads into the same
    architecture built with lviv_c.nn and gives the same keys back."""
    import os

    from lviv_c import serialization
    sd = serialization.load(os.path.join(os.path.dirname(__file__), "data", fname))
    sd = {k: v for k, v in sd.items() if not k.startswith("extra.")}
    m = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.BatchNorm2d(2))
    m.load_state_dict(sd)
    assert list(m.state_dict().keys()) == list(sd.keys())
    np.testing.assert_allclose(np.asarray(m[0].weight.detach()).ravel(), np.arange(18) / 8 - 1)
    np.testing.assert_allclose(np.asarray(m[1].running_var), [2.0, 3.0])
    assert int(m[1].num_batches_tracked) == 7
    m.eval()
    x = np.random.default_rng(0).standard_normal((2, 1, 5, 5))
    ref = R.batch_norm_eval(R.conv2d(x, (np.arange(18) / 8 - 1).reshape(2, 1, 3, 3)), np.array([0.1, 0.2]),
                            np.array([2.0, 3.0]), np.array([1.5, -0.5]), np.array([0.25, 0.125]))
    np.testing.assert_allclose(np.asarray(m(t(x)).detach()), ref, rtol=1e-4, atol=1e-5)


def test_num_batches_tracked_is_0d_int64():
    bn = nn.BatchNorm1d(3)
    assert tuple(bn.num_batches_tracked.shape) == () and bn.num_batches_tracked.dtype == lviv_c.int64
    bn(lviv_c.randn(4, 3))
    assert int(bn.num_batches_tracked) == 1 and tuple(bn.state_dict()["num_batches_tracked"].shape) == ()
