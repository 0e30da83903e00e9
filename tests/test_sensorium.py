"""Sensorium 2022: the multi-scan loaders, the models (state-dict structure of the published
checkpoints, forward against an independent float64 NumPy implementation, gradients against
finite differences of it), checkpoint loading, captured replay, multi-scan training and the
measures, on small synthetic Sensorium-layout scans."""
import os

import numpy as np
import pytest

import lviv_c
from lviv_c.capture import write_into
from lviv_c.dataset import FileTreeDataset
from lviv_c.models.sensorium import (build_sensorium_model, load_sensorium_checkpoint,
                                     sensorium_config_from_state_dict)
from lviv_c.sensorium_data import rescale_bilinear, sensorium_data_key, static_loaders
from lviv_c.sensorium_training import MultiScanEngine, sensorium_measures, train_multi
from lviv_c.trainers import train_model
from lviv_c.synthetic_sensorium import load_sensorium_ground_truth, make_sensorium_scans

from conftest import numgrad
from test_readout import ref_bilinear

GMP = {"type": "cortex", "input_dimensions": 2, "hidden_layers": 1, "hidden_features": 30, "final_tanh": True}
#: the published models' configuration (the sensorium model tutorial)
PUBLISHED = dict(pad_input=False, stack=-1, input_kern=9, gamma_input=6.3831, gamma_readout=0.0076, hidden_kern=7,
                 hidden_channels=64, depth_separable=True, grid_mean_predictor=GMP, init_sigma=0.1, init_mu_range=0.3,
                 gauss_type="full")
SMALL = dict(n_trials=160, n_neurons=12, image_shape=(36, 64), n_test_images=6, n_repeats=4, n_validation=20)


def T(a, requires_grad=False):
    t = lviv_c.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    t.requires_grad = requires_grad
    return t


def A(t):
    return np.asarray(t.detach())


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    d = tmp_path_factory.mktemp("sensorium")
    return make_sensorium_scans(d, n_scans=2, seed=3, **SMALL)


def loaders(paths, p=False, batch_size=16, **kw):
    return static_loaders(paths, batch_size, seed=0, include_behavior=p, include_eye_position=p, **kw)


# ------------------------------------------------------------------------------------------ data

def test_rescale_matches_the_bilinear_identities():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 2, 16, 24)).astype(np.float32)
    # scale 1/2: output pixel o reads input coordinate 2o + 0.5 -> mean of pixels 2o, 2o + 1
    half = x.reshape(3, 2, 8, 2, 12, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(rescale_bilinear(x, 0.5), half, rtol=1e-6, atol=1e-6)
    # scale 1/4 (Sensorium's 144x256 -> 36x64): coordinate 4o + 1.5 -> mean of pixels 4o+1, 4o+2
    q = x.reshape(3, 2, 4, 4, 6, 4)[:, :, :, 1:3, :, 1:3].mean(axis=(3, 5))
    np.testing.assert_allclose(rescale_bilinear(x, 0.25), q, rtol=1e-6, atol=1e-6)
    # upsampling keeps constants and mirrors at the border (skimage mode='reflect')
    c = np.full((1, 1, 5, 7), 3.25, np.float32)
    np.testing.assert_allclose(rescale_bilinear(c, 2.0), 3.25, rtol=0, atol=1e-6)
    assert rescale_bilinear(c, 2.0).shape == (1, 1, 10, 14)
    with pytest.raises(ValueError, match="images"):
        rescale_bilinear(x[0], 0.5)


def test_static_loaders_layout_options_and_batches(scans):
    L = loaders(scans, p=True, scale=0.5)
    keys = [sensorium_data_key(p) for p in scans]
    assert keys == ["61000-1-1", "61001-1-1"] and list(L) == ["train", "validation", "test"]
    assert all(list(L[t]) == keys for t in L)
    k = keys[0]
    b = next(iter(L["train"][k]))
    assert b._fields == ("images", "responses", "behavior", "pupil_center")
    assert tuple(b.images.shape) == (16, 4, 18, 32) and tuple(b.responses.shape) == (16, 12)
    assert tuple(b.behavior.shape) == (16, 3) and tuple(b.pupil_center.shape) == (16, 2)
    # behavior channels are the normalised behavior (x / std), constant over the image
    img, beh = np.asarray(b.images), np.asarray(b.behavior)
    np.testing.assert_allclose(img[:, 1:], np.broadcast_to(beh[:, :, None, None], img[:, 1:].shape), rtol=1e-6)
    ds = L["train"][k].dataset
    raw_b = ds.block("behavior")[L["train"][k].indices]
    np.testing.assert_allclose(L["train"][k].blocks["behavior"][L["train"][k].indices],
                               raw_b / np.asarray(ds.statistics.behavior.all.std), rtol=1e-5)
    # pupil center z-scored; images z-scored then halved in size
    pc = ds.block("pupil_center")
    st = ds.statistics.pupil_center.all
    np.testing.assert_allclose(L["train"][k].blocks["pupil_center"], (pc - st.mean) / st.std, rtol=1e-4, atol=1e-5)
    raw = (ds.block("images") - float(ds.statistics.images.all.mean)) / float(ds.statistics.images.all.std)
    np.testing.assert_allclose(L["train"][k].blocks["images"][:, :1], rescale_bilinear(raw, 0.5), rtol=1e-4, atol=1e-4)
    # tiers partition the trials
    n = sum(len(L[t][k].indices) for t in L)
    assert n == SMALL["n_trials"]
    tiers = np.asarray(ds.trial_info.tiers)
    assert set(tiers[L["test"][k].indices]) == {"test"}
    # plain loaders: 1 channel, no behavior fields
    P = loaders(scans)
    assert next(iter(P["train"][k]))._fields == ("images", "responses")
    assert tuple(next(iter(P["train"][k])).images.shape) == (16, 1, 36, 64)


def test_static_loaders_neuron_and_image_selection(scans):
    L = loaders(scans[:1], neuron_n=5, neuron_base_seed=1, tier="train")
    k = list(L["train"])[0]
    assert L["train"][k].responses_block.shape[1] == 5
    assert list(L) == ["train"]
    ids = np.asarray(L["train"][k].dataset.neurons.unit_ids)
    assert len(ids) == 5 and len(set(ids.tolist())) == 5
    ds = L["train"][k].dataset
    tr = np.flatnonzero(np.asarray(ds.trial_info.tiers) == "train")[:7]
    iid = np.asarray(ds.trial_info.frame_image_id)[tr]
    L2 = loaders(scans[:1], image_ids=[iid], tier="train")
    np.testing.assert_array_equal(np.sort(L2["train"][k].indices), np.sort(tr))
    with pytest.raises(ValueError, match="neuron_ids can not be set"):
        loaders(scans[:1], neuron_ids=[[1, 2]], neuron_n=2)
    with pytest.raises(ValueError, match="one entry per path"):
        loaders(scans, neuron_ids=[[1, 2]])
    with pytest.raises(ValueError, match="same data key|data key"):
        loaders([scans[0], scans[0]])
    with pytest.raises(FileNotFoundError):
        loaders([os.path.join(os.path.dirname(scans[0]), "nope")])


def test_synthetic_ground_truth_has_behavior_and_shift_effects(scans):
    gt = load_sensorium_ground_truth(scans[0])
    assert gt["mean_rates"].shape == (SMALL["n_trials"], SMALL["n_neurons"])
    assert gt["shifts_px"].shape == (SMALL["n_trials"], 2)
    assert gt["shifts_px"].std(0).min() > 0.5  # the eye moves
    # the shift is the stated linear map of the z-scored pupil center
    ds = FileTreeDataset(scans[0], "images", "responses", "behavior", "pupil_center")
    pc = ds.block("pupil_center").astype(np.float64)
    z = (pc - pc.mean(0)) / pc.std(0)
    np.testing.assert_allclose(z @ gt["shift_matrix"], gt["shifts_px"], rtol=1e-4, atol=1e-4)
    # running modulates the rates: the log ratio to the behavior-free rates tracks the running speed
    run = ds.block("behavior")[:, 2].astype(np.float64)
    ratio = np.log(gt["mean_rates"].mean(1)) - np.log(gt["mean_rates_no_behavior_no_shift"].mean(1))
    assert np.corrcoef(ratio, run)[0, 1] > 0.5


# ---------------------------------------------------------------------- state-dict structure

def published_structure(key, n, c_in, layers, shifter):
    """(name, shape) of a published Sensorium checkpoint (the reference's key order)."""
    out = [("core._input_weights_regularizer.laplace.filter", (1, 1, 3, 3)),
           ("core.features.layer0.conv.weight", (64, c_in, 9, 9))]
    norm = lambda l: [(f"core.features.layer{l}.norm.{s}", (64,)) for s in  # noqa: E731
                      ("weight", "bias", "running_mean", "running_var")] + \
        [(f"core.features.layer{l}.norm.num_batches_tracked", ())]
    out += norm(0)
    for l in range(1, layers):
        out += [(f"core.features.layer{l}.ds_conv.in_depth_conv.weight", (64, 64, 1, 1)),
                (f"core.features.layer{l}.ds_conv.spatial_conv.weight", (64, 1, 7, 7)),
                (f"core.features.layer{l}.ds_conv.out_depth_conv.weight", (64, 64, 1, 1))] + norm(l)
    r = f"readout.{key}"
    out += [(f"{r}.sigma", (1, n, 2, 2)), (f"{r}._features", (1, 64, 1, n)), (f"{r}.bias", (n,)),
            (f"{r}.source_grid", (n, 2)), (f"{r}.mu_transform.0.weight", (30, 2)), (f"{r}.mu_transform.0.bias", (30,)),
            (f"{r}.mu_transform.2.weight", (2, 30)), (f"{r}.mu_transform.2.bias", (2,))]
    if shifter:
        s = f"shifter.{key}.mlp"
        out += [(f"{s}.0.weight", (5, 2)), (f"{s}.0.bias", (5,)), (f"{s}.2.weight", (5, 5)), (f"{s}.2.bias", (5,)),
                (f"{s}.4.weight", (2, 5)), (f"{s}.4.bias", (2,))]
    return out


@pytest.mark.parametrize("name,layers,linear,p", [("sensorium_sota_model.pth", 4, False, False),
                                                  ("sensorium_p_sota_model.pth", 4, False, True),
                                                  ("sensorium_ln_model.pth", 3, True, False),
                                                  ("sensorium_p_ln_model.pth", 3, True, True)])
def test_builder_reproduces_published_structure_and_checkpoint_roundtrip(scans, tmp_path, capsys, name, layers,
                                                                         linear, p):
    L = loaders(scans[:1], p=p)
    key = list(L["train"])[0]
    m = build_sensorium_model(L, seed=42, layers=layers, linear=linear, shifter=p, **PUBLISHED)
    sd = m.state_dict()
    got = [(k, tuple(v.shape)) for k, v in sd.items()]
    assert got == published_structure(key, SMALL["n_neurons"], 4 if p else 1, layers, p)
    assert sd["core.features.layer0.norm.num_batches_tracked"].dtype == lviv_c.int64
    nonlin = [k for k, _ in m.core.named_modules() if k.endswith("nonlin")]
    assert m.core.linear is linear and len(nonlin) == (0 if linear else layers)
    # the file name's guess, the structure read back from the keys, and the same predictions
    f = tmp_path / name
    lviv_c.save(sd, str(f))
    m2 = load_sensorium_checkpoint(f)
    assert "guessed from the file name" in capsys.readouterr().err
    assert m2.core.linear is linear and not m2.training
    assert [(k, tuple(v.shape)) for k, v in m2.state_dict().items()] == got
    b = next(iter(L["validation"][key]))
    kw = {"pupil_center": b.pupil_center} if p else {}
    m.eval()
    np.testing.assert_array_equal(A(m(b.images, data_key=key, **kw)), A(m2(b.images, data_key=key, **kw)))
    cfg, info = sensorium_config_from_state_dict(sd)
    assert cfg["layers"] == layers and cfg["shifter"] is p and info[key]["input_channels"] == (4 if p else 1)
    # the other linearity on request, without the message
    m3 = load_sensorium_checkpoint(f, linear=not linear)
    assert m3.core.linear is (not linear) and capsys.readouterr().err == ""


def test_checkpoint_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_sensorium_checkpoint(tmp_path / "missing.pth")
    f = tmp_path / "other.pth"
    lviv_c.save({"w": lviv_c.zeros(2)}, str(f))
    with pytest.raises(ValueError, match="other.pth.*layer0"):
        load_sensorium_checkpoint(f)


def test_builder_defaults_and_seeding(scans):
    L = loaders(scans)
    a = build_sensorium_model(L, seed=7)
    b = build_sensorium_model(L, seed=7)
    c = build_sensorium_model(L, seed=8)
    # the reference builder's defaults: 32 channels, 13x13 input kernel, 3x3 hidden, 3 layers, all stacked
    w0 = a.state_dict()["core.features.layer0.conv.weight"]
    assert tuple(w0.shape) == (32, 1, 13, 13) and a.core.stack == [0, 1, 2]
    assert a.shifter is None and a.readout[a.data_keys[0]].in_shape[0] == 96
    assert list(a.readout) == list(L["train"])
    for k in a.state_dict():
        np.testing.assert_array_equal(A(a.state_dict()[k]), A(b.state_dict()[k]))
    assert not np.array_equal(A(w0), A(c.state_dict()["core.features.layer0.conv.weight"]))
    # neuralpredictors 0.3.0 readout initialisation: features 1/C, bias 0
    r = a.readout[a.data_keys[0]]
    np.testing.assert_array_equal(A(r._features), np.full(tuple(r._features.shape), 1 / 96, np.float32))
    np.testing.assert_array_equal(A(r.bias), 0)


# --------------------------------------------------------------- the equations, in NumPy

def np_conv(x, w, pad=0, groups=1):
    """x (B, C, H, W), w (O, C/groups, k, k) -> (B, O, H', W'), stride 1, zero padding."""
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    B, C, H, W = x.shape
    O, cg, k, _ = w.shape
    Ho, Wo = H - k + 1, W - k + 1
    out = np.zeros((B, O, Ho, Wo))
    og = O // groups
    for g in range(groups):
        xs = x[:, g * cg:(g + 1) * cg]
        for i in range(k):
            for j in range(k):
                out[:, g * og:(g + 1) * og] += np.einsum("bchw,oc->bohw", xs[:, :, i:i + Ho, j:j + Wo],
                                                         w[g * og:(g + 1) * og, :, i, j])
    return out


def np_elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def np_model(P, images, pupil_center, key, layers, linear, offset=0.0, hidden_kern=3):
    """Eval-mode forward of the Sensorium model from its float64 state dict P."""
    def bn(x, l):
        p = f"core.features.layer{l}.norm."
        return ((x - P[p + "running_mean"][None, :, None, None]) / np.sqrt(P[p + "running_var"][None, :, None, None]
                                                                            + 1e-5)
                * P[p + "weight"][None, :, None, None] + P[p + "bias"][None, :, None, None])
    act = (lambda v: v) if linear else np_elu
    x = act(bn(np_conv(images, P["core.features.layer0.conv.weight"]), 0))
    for l in range(1, layers):
        q = f"core.features.layer{l}.ds_conv."
        x = np_conv(x, P[q + "in_depth_conv.weight"])
        x = np_conv(x, P[q + "spatial_conv.weight"], pad=(hidden_kern - 1) // 2, groups=x.shape[1])
        x = np_conv(x, P[q + "out_depth_conv.weight"])
        x = act(bn(x, l))
    r = f"readout.{key}."
    g = P[r + "source_grid"]
    h = np_elu(g @ P[r + "mu_transform.0.weight"].T + P[r + "mu_transform.0.bias"])
    mu = np.clip(np.tanh(h @ P[r + "mu_transform.2.weight"].T + P[r + "mu_transform.2.bias"]), -1, 1)
    pos = np.broadcast_to(mu, (len(images),) + mu.shape)
    if pupil_center is not None:
        s = f"shifter.{key}.mlp."
        z = pupil_center
        for i in (0, 2, 4):
            z = np.tanh(z @ P[s + f"{i}.weight"].T + P[s + f"{i}.bias"])
        pos = pos + z[:, None, :]
    feat = P[r + "_features"][0, :, 0, :]
    y = (ref_bilinear(x, pos) * feat[None]).sum(1) + P[r + "bias"][None]
    return np_elu(y + offset) + 1


def randomized(m, rng):
    """Give every parameter and BatchNorm statistic a random value (so that no term is trivial)."""
    sd = m.state_dict()
    for k, v in sd.items():
        if v.dtype != lviv_c.float32 or k.endswith("source_grid") or k.endswith("laplace.filter"):
            continue
        shape = tuple(v.shape)
        if k.endswith("running_var"):
            val = rng.uniform(0.5, 2.0, shape)
        elif k.endswith("_features"):
            val = rng.normal(0, 0.3, shape)
        elif "mu_transform" in k or "shifter" in k:
            val = rng.normal(0, 0.4, shape)
        else:
            val = rng.normal(0, 0.3, shape)
        sd[k] = lviv_c.from_numpy(val.astype(np.float32))
    m.load_state_dict(sd)
    return m


SMALL_MODEL = dict(hidden_channels=4, input_kern=5, hidden_kern=3, layers=3, stack=-1, depth_separable=True,
                   grid_mean_predictor=GMP, gamma_input=1.0, gamma_readout=0.1)


@pytest.mark.parametrize("p,linear,offset", [(True, False, 0.0), (False, False, 0.3), (True, True, 0.0)])
def test_eval_forward_equals_numpy_equations(scans, p, linear, offset):
    rng = np.random.default_rng(5)
    L = loaders(scans[:1], p=p, scale=0.5)
    key = list(L["train"])[0]
    m = randomized(build_sensorium_model(L, seed=1, shifter=p, linear=linear, elu_offset=offset, **SMALL_MODEL), rng)
    m.eval()
    b = next(iter(L["test"][key]))
    kw = {"pupil_center": b.pupil_center} if p else {}
    got = A(m(b.images, data_key=key, **kw))
    P = {k: np.asarray(v, dtype=np.float64) for k, v in m.state_dict().items()}
    want = np_model(P, np.asarray(b.images, np.float64), np.asarray(b.pupil_center, np.float64) if p else None,
                    key, 3, linear, offset)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    # the reference's evaluation calls model(images, data_key=k, **batch._asdict())
    np.testing.assert_array_equal(A(m(b.images, data_key=key, **b._asdict())), got)
    if p:
        # the model can add the behavior channels itself from `behavior`
        got2 = A(m(b.images[:, :1], data_key=key, behavior=b.behavior, **kw))
        np.testing.assert_allclose(got2, got, rtol=1e-6, atol=1e-6)
        with pytest.raises(ValueError, match="pupil_center"):
            m(b.images, data_key=key)
        with pytest.raises(ValueError, match="4 input channels.*behavior"):
            m(b.images[:, :1], data_key=key, **kw)


def test_gradients_of_shifter_behavior_channels_and_grid_predictor(scans):
    """autograd of the new pieces against finite differences of the NumPy equations."""
    rng = np.random.default_rng(11)
    L = loaders(scans[:1], p=True, scale=0.5)
    key = list(L["train"])[0]
    m = randomized(build_sensorium_model(L, seed=2, shifter=True, **SMALL_MODEL), rng)
    m.eval()
    b = next(iter(L["test"][key]))
    img = np.asarray(b.images, np.float64)[:3]
    beh = np.asarray(b.behavior, np.float64)[:3]
    pc = np.asarray(b.pupil_center, np.float64)[:3]
    gout = rng.normal(size=(3, SMALL["n_neurons"]))
    P = {k: np.asarray(v, dtype=np.float64) for k, v in m.state_dict().items()}

    tb, tpc = T(beh, True), T(pc, True)
    out = m(T(img[:, :1]), data_key=key, behavior=tb, pupil_center=tpc)
    (out * T(gout)).sum().backward()
    params = dict(m.named_parameters())

    def loss(name=None, val=None, behavior=beh, pupil=pc):
        Q = dict(P)
        if name is not None:
            Q[name] = val
        full = np.concatenate([img[:, :1], np.broadcast_to(behavior[:, :, None, None], (3, 3) + img.shape[2:])], 1)
        return (np_model(Q, full, pupil, key, 3, False) * gout).sum()

    for name in (f"shifter.{key}.mlp.0.weight", f"shifter.{key}.mlp.4.bias", f"readout.{key}.mu_transform.0.weight",
                 f"readout.{key}.mu_transform.2.weight"):
        fd = numgrad(lambda v: loss(name, v), P[name])
        np.testing.assert_allclose(A(params[name].grad), fd, rtol=2e-3, atol=2e-3, err_msg=name)
    np.testing.assert_allclose(A(tb.grad), numgrad(lambda v: loss(behavior=v), beh), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(A(tpc.grad), numgrad(lambda v: loss(pupil=v), pc), rtol=2e-3, atol=2e-3)
    assert np.abs(A(tpc.grad)).max() > 1e-3  # the shifter matters


# ------------------------------------------------------------------------- capture, training

def test_captured_replay_is_bit_identical_to_eager(scans):
    rng = np.random.default_rng(4)
    L = loaders(scans, p=True, scale=0.5)
    m = randomized(build_sensorium_model(L, seed=3, shifter=True, **SMALL_MODEL), rng)
    eng = MultiScanEngine(m, L["train"])
    m.eval()
    for key, loader in L["validation"].items():
        got = eng.predict(key, loader)
        want = np.concatenate([A(m(bt.images, data_key=key, pupil_center=bt.pupil_center)) for bt in loader])
        np.testing.assert_array_equal(got, want)
    # a captured training step replays the eager one: same loss (same seeded readout draws)
    key = list(L["train"])[0]
    s = eng.scan(key, L["train"][key])
    idx = L["train"][key].indices[:8]
    m.train()
    lviv_c.manual_seed(0)
    le = eng.loss_fn(key, 8)(eng.call(key, s.img_shape)(T(s.X[idx])), T(s.Y[idx]))
    g = eng._train_graph(key, 8)
    write_into(g.x, s.X[idx])
    write_into(g.y, s.Y[idx])
    lviv_c.manual_seed(0)
    g.replay()
    assert float(A(g.loss)) == float(A(le))


def test_multi_scan_training_cycles_scans_and_trains_every_readout(scans):
    L = loaders(scans, p=True, batch_size=32)
    # make the second scan's train loader shorter: its batches start over within the epoch
    k0, k1 = list(L["train"])
    L["train"][k1].sampler.indices = L["train"][k1].sampler.indices[:40]
    L["train"][k1].indices = L["train"][k1].sampler.indices
    m = build_sensorium_model(L, seed=5, shifter=True, **SMALL_MODEL)
    before = {k: A(v).copy() for k, v in m.state_dict().items()}
    eng = MultiScanEngine(m, L["train"])
    batches = eng.epoch_batches()
    n0 = -(-len(L["train"][k0].indices) // 32)
    assert [k for k, _ in batches] == [k0, k1] * n0
    assert [len(i) for k, i in batches if k == k1] == [32, 8] * (n0 // 2) + [32] * (n0 % 2)
    score, out, sd = train_multi(m, L, seed=1, max_iter=2, verbose=False, lr_decay_steps=1, patience=5)
    assert np.isfinite(score) and set(out["validation_corr"]) == {k0, k1}
    assert len(out["epoch_seconds"]) == 2
    for k in (k0, k1):
        for name in (f"readout.{k}._features", f"readout.{k}.mu_transform.0.weight", f"shifter.{k}.mlp.0.weight"):
            assert not np.array_equal(before[name], A(sd[name])), name
    # train_model dispatches multi-scan loaders to the same trainer
    m2 = build_sensorium_model(L, seed=5, shifter=True, **SMALL_MODEL)
    score2, _, _ = train_model(m2, L, seed=1, max_iter=2, verbose=False, lr_decay_steps=1,
                               patience=5)
    assert score2 == score


def test_multi_scan_training_stops_on_a_nan_weight(scans):
    """As for one scan (issue 12): a NaN prediction makes the objective non-finite and training
    stops with an error instead of scoring 0 and going on."""
    L = loaders(scans, p=True, batch_size=32)
    m = build_sensorium_model(L, seed=5, shifter=True, **SMALL_MODEL)
    k0 = list(L["train"])[0]
    getattr(m.readout, k0)._features.data[0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="not finite"):
        train_model(m, L, seed=1, max_iter=2, verbose=False, lr_decay_steps=1, patience=1)


def test_measures_per_scan_and_pooled(scans):
    L = loaders(scans)
    rng = np.random.default_rng(0)
    preds = {}
    for k, loader in L["test"].items():
        y = loader.blocks["responses"][loader.indices].astype(np.float64)
        preds[k] = y + rng.normal(0, 0.5, y.shape)
    M = sensorium_measures(None, L, predictions=preds)
    for k, loader in L["test"].items():
        y = loader.blocks["responses"][loader.indices].astype(np.float64)
        st = [np.corrcoef(y[:, n], preds[k][:, n])[0, 1] for n in range(y.shape[1])]
        assert M["per_scan"][k]["single_trial_correlation"] == pytest.approx(np.mean(st), rel=1e-6)
        ids = np.asarray(loader.dataset.trial_info.frame_image_id)[loader.indices]
        u = np.unique(ids)
        ay = np.stack([y[ids == i].mean(0) for i in u])
        ap = np.stack([preds[k][ids == i].mean(0) for i in u])
        cta = [np.corrcoef(ay[:, n], ap[:, n])[0, 1] for n in range(y.shape[1])]
        assert M["per_scan"][k]["correlation_to_average"] == pytest.approx(np.mean(cta), rel=1e-6)
        # FEVE: 1 - (MSE - noise) / (total - noise)
        tot = y.var(0, ddof=1)
        noise = np.mean([y[ids == i].var(0, ddof=1) for i in u], 0)
        mse = ((y - preds[k]) ** 2).mean(0)
        assert M["per_scan"][k]["feve"] == pytest.approx(np.mean(1 - (mse - noise) / (tot - noise)), rel=1e-6)
    allst = np.hstack([M["per_scan"][k]["per_neuron"]["single_trial_correlation"] for k in preds])
    assert M["all"]["single_trial_correlation"] == pytest.approx(allst.mean())
    # a perfect prediction of the repeat means: correlation to average 1, a higher FEVE
    perfect = {}
    for k, loader in L["test"].items():
        y = loader.blocks["responses"][loader.indices].astype(np.float64)
        ids = np.asarray(loader.dataset.trial_info.frame_image_id)[loader.indices]
        perfect[k] = np.stack([y[ids == i].mean(0) for i in ids])
    P = sensorium_measures(None, L, predictions=perfect)
    assert P["all"]["correlation_to_average"] == pytest.approx(1.0) and P["all"]["feve"] > M["all"]["feve"]
    with pytest.raises(ValueError, match="do not match"):
        sensorium_measures(None, L, predictions={k: v[:, :3] for k, v in preds.items()})


def test_p_model_beats_plain_and_learns_the_eye_shifts(tmp_path):
    """On a synthetic scan where behavior modulates the rates and the eye shifts the receptive
    fields, the p model (behavior channels + shifter) predicts held-out trials better than the
    plain model, and its shifter's output follows the true shifts."""
    path = make_sensorium_scans(tmp_path, n_scans=1, seed=0, n_trials=600, n_neurons=40, n_test_images=20,
                                n_repeats=5, n_validation=100, shift_std_px=2.5)[0]
    cfg = dict(hidden_channels=8, input_kern=9, hidden_kern=7, layers=3, stack=-1, depth_separable=True,
               grid_mean_predictor=GMP, gamma_input=1.0, gamma_readout=0.0076, init_sigma=0.1, init_mu_range=0.3)
    res = {}
    for p in (False, True):
        L = loaders([path], p=p, batch_size=32)
        m = build_sensorium_model(L, seed=42, shifter=p, **cfg)
        train_multi(m, L, seed=1, max_iter=8, verbose=False, lr_decay_steps=1, patience=3)
        res[p] = sensorium_measures(m, L)["all"]["single_trial_correlation"]
        if p:
            key = list(L["test"])[0]
            loader = L["test"][key]
            pc = loader.blocks["pupil_center"][loader.indices]
            with lviv_c.no_grad():
                learned = A(m.shifter[key](T(pc)))
            true = load_sensorium_ground_truth(path)["shifts_px"][loader.indices]
            cx = np.corrcoef(learned[:, 0], true[:, 0])[0, 1]
            cy = np.corrcoef(learned[:, 1], true[:, 1])[0, 1]
    print(f"test single-trial correlation: plain {res[False]:.3f}, p {res[True]:.3f}; "
          f"shift correlation x {cx:.3f}, y {cy:.3f}")
    assert res[True] > res[False] + 0.05
    assert cx > 0.5 and cy > 0.5


# ------------------------------------------------------------------------------ demo and CLI

@pytest.fixture(scope="module")
def course_scan(tmp_path_factory):
    from lviv_c import synthetic
    return synthetic.make_scan(str(tmp_path_factory.mktemp("course")), **synthetic.SMALL, seed=2, progress=False)


def test_demo_table_and_cli_train_evaluate_sensorium(course_scan, tmp_path, capsys):
    from lviv_c import cli, demo
    res = demo.run_demo(data=course_scan, out=str(tmp_path / "out"), max_iter=1, batch_size=32, verbose=False,
                        models=("sensorium",), figures=False)
    text = demo.format_table(res)
    for name in ("sensorium",):
        row = res["models"][name]
        assert demo.MODELS[name] in text and row["epochs"] == 1
        assert all(np.isfinite(row[c]) for c in ("validation_corr", "test_corr", "corr_to_average"))
    with pytest.raises(ValueError, match="own loaders"):
        demo.build_model("sensorium", None)
    out = tmp_path / "sp.pt"
    assert cli.main(["train", "--data", course_scan, "--model", "sensorium-p", "--max-iter", "1", "--batch-size",
                     "64", "--out", str(out), "--quiet"]) == 0
    trained = capsys.readouterr().out
    assert "Sensorium 2022 p (sensorium-p): validation corr" in trained
    assert cli.main(["evaluate", "--data", course_scan, "--model", "sensorium-p", "--weights", str(out)]) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("Sensorium")]
    assert line and line[0] in trained  # the saved weights give the same measures
    # the saved file is a Sensorium checkpoint: the one-line loader rebuilds it
    m = load_sensorium_checkpoint(out, linear=False)
    assert m.shifter is not None and m.core.input_channels == 4


def test_gradient_accumulation_over_the_cycle(scans):
    """loss_accum_batch_n batches are summed before one Adam step; an unfinished accumulation at
    the end of the epoch is dropped (as the reference's zero_grad at the next epoch). The epoch
    runs in one C call; the reference here is one _C.train_epoch call per batch (backward only)
    and Adam steps from Python every 3 batches: the same weights, bit for bit, and not those of
    steps every 2 batches."""
    from lviv_c import _C
    states = {}
    for how in ("engine", 3, 2):
        L = loaders(scans, p=True, batch_size=32)
        m = build_sensorium_model(L, seed=5, shifter=True, **SMALL_MODEL)
        eng = MultiScanEngine(m, L["train"])
        if how == "engine":
            eng.train_epoch(step_every=3)
            assert all(p.grad is None for p in m.parameters())
        else:
            batches = eng.epoch_batches()
            n = len(batches)
            for key, idx in batches:                        # capture first, as the engine does
                eng._train_graph(key, len(idx))
            for b, (key, idx) in enumerate(batches):
                s = eng.scan(key, L["train"][key])
                _C.train_epoch(eng._train_graph(key, len(idx)).handle, None, eng.adam, s.X, s.Y, idx, 0, None)
                if (b + 1) % how == 0:
                    _C.adam_step(eng.adam)
        states[how] = {k: A(v).copy() for k, v in m.state_dict().items()}
    assert n % 3
    for k, v in states[3].items():
        np.testing.assert_array_equal(states["engine"][k], v, err_msg=k)
    assert any(not np.array_equal(states["engine"][k], v) for k, v in states[2].items())


@pytest.mark.parametrize("train", [False, True])
def test_shifted_readout_fused_read_equals_grid_sample_path(train):
    """The eye-position shift on the fused readout op = neuralpredictors' grid + shift through
    grid_sample (positions pushed past the border read zeros), forward and gradients."""
    from lviv_c.models.readouts import FullGaussian2d
    rng = np.random.default_rng(3)
    r = FullGaussian2d((3, 6, 9), 10, bias=True, init_mu_range=0.9, init_sigma=0.2,
                       grid_mean_predictor={"hidden_layers": 1, "hidden_features": 5, "final_tanh": True},
                       source_grid=rng.normal(size=(10, 2)))
    r.train(train)
    x = rng.normal(size=(4, 3, 6, 9))
    shift = np.array([[0.5, -0.3], [-1.2, 0.8], [0.05, 0.0], [0.9, 0.9]])
    outs, grads = [], []
    for generic in (False, True):
        tx, ts = T(x, True), T(shift, True)
        for p in r.parameters():
            p.grad = None
        lviv_c.manual_seed(1)
        y = r._forward_generic(tx, train, ts, None) if generic else r(tx, shift=ts)
        (y * T(np.arange(40).reshape(4, 10) / 40.0)).sum().backward()
        outs.append(A(y))
        grads.append([A(tx.grad), A(ts.grad), A(r.mu_transform[0].weight.grad), A(r._features.grad)])
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="shift must have shape"):
        r(T(x), shift=T(shift[:2]))
