"""build_lurz2020_model: parameter count of the course configuration, architecture and output
shapes, the Laplace regularizer against NumPy, seeding, state-dict keys and round trip through a
PyTorch-format file, multi-scan readouts, BatchNorm momentum convention, and (on a small synthetic
scan) that training with train_model beats the course LN model."""
import collections
import os

import numpy as np
import pytest

import lviv_c
from lviv_c import nn, serialization
from lviv_c.models import build_lurz2020_model
from lviv_c.models.cores import AdaptiveELU, SqueezeExcitationBlock
from lviv_c.models.regularizers import LaplaceL2, LaplaceL2norm

Batch = collections.namedtuple("Batch", "images responses")

COURSE = {"init_mu_range": 0.55, "init_sigma": 0.4, "input_kern": 15, "hidden_kern": 13, "gamma_input": 1.0,
          "grid_mean_predictor": {"type": "cortex", "input_dimensions": 2, "hidden_layers": 0,
                                  "hidden_features": 0, "final_tanh": False},
          "gamma_readout": 2.439}


class _NS:
    pass


class FakeLoader:
    """What build_lurz2020_model reads from a loader: iteration yields (images, responses)
    batches; `.dataset.neurons.cell_motor_coordinates`."""

    def __init__(self, n_neurons, B=4, H=36, W=64, seed=0):
        rng = np.random.default_rng(seed)
        self.dataset = _NS()
        self.dataset.neurons = _NS()
        self.dataset.neurons.cell_motor_coordinates = rng.normal(size=(n_neurons, 3)) * 200 + 50
        self.x = rng.uniform(0, 255, size=(B, 1, H, W)).astype(np.float32)
        self.y = rng.gamma(1.0, size=(B, n_neurons)).astype(np.float32)

    def __iter__(self):
        yield Batch(lviv_c.from_numpy(self.x), lviv_c.from_numpy(self.y))


def A(t):
    return np.asarray(t.detach())


def small(**kw):
    cfg = dict(COURSE, hidden_channels=8, input_kern=5, hidden_kern=3, layers=3)
    cfg.update(kw)
    return cfg


# --------------------------------------------------------------------------- architecture
def test_course_config_parameter_count_and_state_dict_keys():
    m = build_lurz2020_model({"train": FakeLoader(5335, B=2)}, 1234, **COURSE)
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) == 440057
    sd = m.state_dict()
    expected = ["core._input_weights_regularizer.laplace.filter", "core.features.layer0.conv.weight"]
    for l in range(4):
        if l:
            expected += [f"core.features.layer{l}.ds_conv.{c}.weight"
                         for c in ("in_depth_conv", "spatial_conv", "out_depth_conv")]
        expected += [f"core.features.layer{l}.norm.{k}"
                     for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    expected += ["readout.dataset.sigma", "readout.dataset._features", "readout.dataset.bias",
                 "readout.dataset.source_grid", "readout.dataset.mu_transform.0.weight",
                 "readout.dataset.mu_transform.0.bias"]
    assert list(sd.keys()) == expected
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["core.features.layer0.conv.weight"] == (64, 1, 15, 15)
    assert shapes["core.features.layer2.ds_conv.spatial_conv.weight"] == (64, 1, 13, 13)
    assert shapes["readout.dataset._features"] == (1, 64, 1, 5335)
    assert shapes["readout.dataset.sigma"] == (1, 5335, 2, 2)
    assert shapes["readout.dataset.source_grid"] == (5335, 2)
    np.testing.assert_array_equal(A(sd["core._input_weights_regularizer.laplace.filter"])[0, 0],
                                  [[0, -1, 0], [-1, 4, -1], [0, -1, 0]])
    # BN momentum as given (PyTorch convention), ELUs after every layer
    assert m.core.features.layer0.norm.momentum == 0.9
    assert all(isinstance(getattr(m.core.features, f"layer{l}").nonlin, AdaptiveELU) for l in range(4))
    assert m.core.features.layer0.conv.padding == (0, 0)
    assert m.core.features.layer1.ds_conv.spatial_conv.groups == 64
    assert m.core.features.layer1.ds_conv.spatial_conv.padding == (6, 6)
    # readout bias = mean response of the first training batch
    loader = FakeLoader(5335, B=2)
    np.testing.assert_allclose(A(m.readout["dataset"].bias), loader.y.mean(0), rtol=1e-6)


@pytest.mark.parametrize("input_kern,pad_input,hw", [(15, False, (22, 50)), (15, True, (36, 64)),
                                                     (9, False, (28, 56)), (9, True, (36, 64))])
def test_core_and_model_output_shapes(input_kern, pad_input, hw):
    ch = 64 if (input_kern, pad_input) == (15, False) else 8
    m = build_lurz2020_model(FakeLoader(30, B=2), 0, **small(input_kern=input_kern, pad_input=pad_input,
                                                             hidden_channels=ch, layers=2, hidden_kern=3))
    x = lviv_c.from_numpy(FakeLoader(30, B=2).x)
    with lviv_c.no_grad():
        assert tuple(m.core(x).shape) == (2, ch) + hw
        assert tuple(m(x).shape) == (2, 30)
    assert m.readout["dataset"].in_shape == (ch,) + hw
    assert float(A(m(x)).min()) > 0  # ELU + 1 is strictly positive


def test_defaults_architecture_variants():
    m = build_lurz2020_model(FakeLoader(20), 0, hidden_channels=8)  # every default
    assert m.core.features.layer0.conv.weight.shape == (8, 1, 9, 9)
    assert isinstance(m.readout["dataset"].mu_transform[-1], nn.Tanh)  # final_tanh default True
    lin = build_lurz2020_model(FakeLoader(20), 0, **small(linear=True))
    assert not any(isinstance(mod, (AdaptiveELU, nn.ELU)) for mod in lin.core.modules())
    assert sum(isinstance(mod, nn.BatchNorm2d) for mod in lin.core.modules()) == 3
    se = build_lurz2020_model(FakeLoader(20), 0, **small(n_se_blocks=1, se_reduction=4))
    assert isinstance(se.core.features.layer2.seg_ex_block, SqueezeExcitationBlock)
    assert "seg_ex_block" not in se.core.features.layer1._modules
    stacked = build_lurz2020_model(FakeLoader(20), 0, **small(stack=-2, skip=2, depth_separable=False))
    assert stacked.core.features.layer2.conv.weight.shape == (8, 16, 3, 3)
    x = lviv_c.from_numpy(FakeLoader(20).x)
    with lviv_c.no_grad():
        assert tuple(stacked.core(x).shape)[1] == 16
        for mm in (lin, se, stacked):
            assert tuple(mm(x).shape) == (4, 20)
    free = build_lurz2020_model(FakeLoader(20), 0, **small(grid_mean_predictor=None))
    assert tuple(free.readout["dataset"]._mu.shape) == (1, 20, 1, 2)
    assert np.abs(A(free.readout["dataset"]._mu)).max() <= 0.55
    dil = build_lurz2020_model(FakeLoader(20), 0, **small(hidden_dilation=2, pad_input=True))
    with lviv_c.no_grad():
        assert tuple(dil.core(x).shape) == (4, 8, 36, 64)


def test_seeding_gives_identical_parameters():
    a = build_lurz2020_model(FakeLoader(40), 5, **small())
    b = build_lurz2020_model(FakeLoader(40), 5, **small())
    c = build_lurz2020_model(FakeLoader(40), 6, **small())
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    for k in sa:
        np.testing.assert_array_equal(A(sa[k]), A(sb[k]), err_msg=k)
    assert not np.array_equal(A(sa["core.features.layer0.conv.weight"]), A(sc["core.features.layer0.conv.weight"]))
    assert not np.array_equal(A(sa["readout.dataset.sigma"]), A(sc["readout.dataset.sigma"]))
    w = A(sa["readout.dataset.mu_transform.0.weight"])
    np.testing.assert_allclose(w @ w.T, 0.04 * np.eye(2), atol=1e-6)  # 0.2 * orthogonal
    # Xavier-normal conv init: std sqrt(2 / (fan_in + fan_out))
    big = build_lurz2020_model(FakeLoader(40), 5, **small(hidden_channels=32, input_kern=15))
    w0 = A(big.core.features.layer0.conv.weight)
    assert abs(w0.std() / np.sqrt(2.0 / (225 + 32 * 225)) - 1) < 0.05


# --------------------------------------------------------------------------- regularizers
def np_laplace_l2norm(w, gamma, avg=False):
    L = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], dtype=np.float64)
    w = w.reshape(-1, *w.shape[-2:]).astype(np.float64)
    k1, k2 = w.shape[1:]
    p = np.pad(w, ((0, 0), (1, 1), (1, 1)))
    out = np.zeros_like(w)
    for i in range(3):
        for j in range(3):
            out += L[i, j] * p[:, i:i + k1, j:j + k2]
    agg = np.mean if avg else np.sum
    return gamma * agg(out ** 2) / agg(w ** 2), out


def test_laplace_regularizer_matches_numpy(rng):
    m = build_lurz2020_model(FakeLoader(25), 3, **small(input_kern=7, gamma_input=2.5, gamma_readout=0.3))
    w0 = A(m.core.features.layer0.conv.weight)
    want, lap = np_laplace_l2norm(w0, 2.5)
    assert np.isclose(float(m.core.regularizer()), want, rtol=1e-5)
    feats = A(m.readout["dataset"]._features)
    assert np.isclose(float(m.regularizer()), want + 0.3 * np.abs(feats).sum(), rtol=1e-5)
    assert np.isclose(float(m.readout.regularizer("dataset")), 0.3 * np.abs(feats).sum(), rtol=1e-5)
    # gradient of the Laplace term: d/dW [sum(lap^2) / sum(W^2)]
    W = m.core.features.layer0.conv.weight
    W.grad = None
    m.core.regularizer().backward()
    s2, l2 = (w0.astype(np.float64) ** 2).sum(), (lap ** 2).sum()
    L = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], dtype=np.float64)
    k = w0.shape[-1]
    pl = np.pad(lap, ((0, 0), (1, 1), (1, 1)))
    back = np.zeros_like(lap)
    for i in range(3):
        for j in range(3):
            back += L[i, j] * pl[:, i:i + k, j:j + k]  # adjoint of the symmetric filter
    g = 2.5 * (2 * back / s2 - 2 * l2 * w0.reshape(lap.shape) / s2 ** 2)
    np.testing.assert_allclose(A(W.grad).reshape(g.shape), g, rtol=1e-4, atol=1e-6)
    # the other variants
    x = lviv_c.from_numpy(rng.normal(size=(4, 2, 5, 5)).astype(np.float32))
    v, lp = np_laplace_l2norm(np.asarray(x), 1.0, avg=True)
    assert np.isclose(float(LaplaceL2norm()(x, avg=True)), v, rtol=1e-5)
    assert np.isclose(float(LaplaceL2()(x, avg=False)), (lp ** 2).sum() / 2, rtol=1e-5)


# --------------------------------------------------------------------------- state dicts
def test_state_dict_round_trip_through_pytorch_file(tmp_path):
    m = build_lurz2020_model(FakeLoader(30), 1, **small())
    x = lviv_c.from_numpy(FakeLoader(30).x)
    m.train()
    for _ in range(2):  # move BN running stats and num_batches_tracked away from their init
        m(x)
    m.eval()
    with lviv_c.no_grad():
        want = A(m(x)).copy()
    path = os.path.join(tmp_path, "lurz.pt")
    serialization.save({k: np.asarray(v) for k, v in m.state_dict().items()}, path)
    sd = serialization.load(path)
    assert int(np.asarray(sd["core.features.layer1.norm.num_batches_tracked"]).reshape(-1)[0]) == 2
    m2 = build_lurz2020_model(FakeLoader(30), 99, **small())
    m2.load_state_dict(sd)
    m2.eval()
    with lviv_c.no_grad():
        np.testing.assert_array_equal(A(m2(x)), want)


def test_loads_zero_dim_num_batches_tracked():
    m = build_lurz2020_model(FakeLoader(30), 1, **small())
    sd = {k: np.asarray(v) for k, v in m.state_dict().items()}
    sd = {k: (np.array(7, dtype=np.int64) if k.endswith("num_batches_tracked") else v) for k, v in sd.items()}
    m.load_state_dict(sd)
    assert tuple(m.core.features.layer0.norm.num_batches_tracked.shape) == ()


def test_batchnorm_momentum_is_pytorch_convention():
    m = build_lurz2020_model(FakeLoader(30), 1, **small())
    x = lviv_c.from_numpy(FakeLoader(30).x)
    m.train()
    with lviv_c.no_grad():
        conv = A(m.core.features.layer0.conv(x))
        m(x)
    bn = m.core.features.layer0.norm
    np.testing.assert_allclose(A(bn.running_mean), 0.9 * conv.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(A(bn.running_var), 0.1 + 0.9 * conv.var((0, 2, 3), ddof=1), rtol=1e-4)


# --------------------------------------------------------------------------- multiple scans
def test_multi_scan_readouts_share_the_core():
    loaders = {"train": {"a-1-1-0": FakeLoader(30, seed=1), "b-2-2-0": FakeLoader(45, seed=2)}}
    m = build_lurz2020_model(loaders, 0, **small())
    assert list(m.readout.keys()) == ["a-1-1-0", "b-2-2-0"]
    keys = m.state_dict().keys()
    assert "readout.b-2-2-0._features" in keys and "readout.a-1-1-0.source_grid" in keys
    x = lviv_c.from_numpy(FakeLoader(30).x)
    m.eval()
    with lviv_c.no_grad():
        assert tuple(m(x, data_key="a-1-1-0").shape) == (4, 30)
        assert tuple(m(x, data_key="b-2-2-0").shape) == (4, 45)
    with pytest.raises(KeyError):
        m(x)
    ra, rb = float(m.regularizer("a-1-1-0")), float(m.regularizer("b-2-2-0"))
    core = float(m.core.regularizer())
    assert np.isclose(ra - core, 2.439 * np.abs(A(m.readout["a-1-1-0"]._features)).sum(), rtol=1e-4)
    assert np.isclose(rb - core, 2.439 * np.abs(A(m.readout["b-2-2-0"]._features)).sum(), rtol=1e-4)
    np.testing.assert_allclose(A(m.readout["b-2-2-0"].bias), FakeLoader(45, seed=2).y.mean(0), rtol=1e-6)
    # data_info instead of loaders (no grid predictor: it needs the neurons' coordinates)
    info = {"k": {"input_dimensions": (4, 1, 36, 64), "input_channels": 1, "output_dimension": 12}}
    m2 = build_lurz2020_model(None, 0, data_info=info, **small(grid_mean_predictor=None))
    with lviv_c.no_grad():
        assert tuple(m2(x).shape) == (4, 12)

