"""Placement with train_model(device='cuda') and the analysis of a GPU model, on a GPU or (in CI)
on the emulated device (LVIV_EMULATE_CUDA=1: the CPU kernels behind the CUDA storage tag; it
checks the dispatch and the placement, not the CUDA kernels). Skipped when neither is there."""
import time

import numpy as np
import pytest

import lviv_c as L
from lviv_c import _C

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not L.cuda.is_available(), reason="no CUDA GPU and no emulated device")]


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    from lviv_c import synthetic
    return synthetic.make_scan(str(tmp_path_factory.mktemp("place")), **synthetic.SMALL, seed=2, progress=False)


def _loaders(scan, batch_size=16):
    from lviv_c.dataset import load_dataset
    return load_dataset(scan, batch_size=batch_size, seed=1, cuda=True)


def _train(scan, device, max_iter=2, batch_size=16):
    from lviv_c.course import build_course_model
    from lviv_c.trainers import train_model
    dl = _loaders(scan, batch_size)
    m = build_course_model("cnn", dl, seed=1)
    score, out, state = train_model(m, dl, seed=1, device=device, max_iter=max_iter, verbose=False,
                                    lr_decay_steps=1, patience=100)
    return m, dl, score, state


def test_train_model_on_cuda_places_model_and_data_and_matches_the_cpu(scan):
    mg, dl, sg, stg = _train(scan, "cuda")
    assert all(p.is_cuda for p in mg.parameters())
    assert all(v.is_cuda for v in mg.state_dict().values())          # parameters and buffers
    x, y = dl["train"].device_blocks()                               # the scan's blocks live there
    assert x.is_cuda and y.is_cuda
    mc, _, sc, stc = _train(scan, "cpu")
    assert all(not p.is_cuda for p in mc.parameters())
    if L.cuda.emulated():                                            # the same kernels: the same numbers
        assert sg == sc
        for k in stc:
            np.testing.assert_array_equal(stg[k].cpu().numpy(), stc[k].numpy(), err_msg=k)
    else:
        assert abs(sg - sc) < 1e-3


def test_optimizer_moments_follow_the_model_to_the_device(scan):
    from lviv_c.course import build_course_model
    from lviv_c.trainers import Engine
    dl = _loaders(scan)
    m = build_course_model("ln", dl, seed=1).to("cuda")
    eng = Engine(m, dl["train"])
    eng.train_epoch(dl["train"].sampler.order())
    opt = L.optim.Adam(m.parameters(), lr=1e-3)
    m(L.randn(4, 1, 36, 64, device="cuda")).sum().backward()
    opt.step()
    for p in m.parameters():
        st = opt.state[p]
        assert st["exp_avg"].is_cuda and st["exp_avg_sq"].is_cuda


@pytest.mark.skipif(not L.cuda.emulated(), reason="transfer counters exist on the emulated device only")
def test_nothing_is_copied_back_per_batch(scan):
    """Host <- device copies in a captured epoch: only the summed loss (one double), read for the
    progress report at most every 0.1 s and at the end, never per batch or per parameter."""
    from lviv_c.course import build_course_model
    from lviv_c.trainers import Engine

    def d2h_per_epoch(batch_size):
        dl = _loaders(scan, batch_size)
        m = build_course_model("ln", dl, seed=1).to("cuda")
        eng = Engine(m, dl["train"])
        order = dl["train"].sampler.order()
        eng.train_epoch(order)                                       # capture
        before = _C._emulated_transfers()
        t0 = time.perf_counter()
        eng.train_epoch(order)
        elapsed = time.perf_counter() - t0
        after = _C._emulated_transfers()
        return (after["d2h"] - before["d2h"], after["d2h_bytes"] - before["d2h_bytes"], len(order) // batch_size,
                elapsed)
    n, nbytes, nb, elapsed = d2h_per_epoch(4)
    # the first batch, then at most one read per 0.1 s, and the last: bounded by time, not batches
    # (a loaded machine may take longer than 0.1 s per batch)
    assert nb >= 20 and 1 <= n <= 2 + elapsed / 0.1
    if elapsed < 0.05 * nb:       # a batch well under 0.1 s: far fewer reads than batches
        assert n < nb / 2
    assert nbytes == 8 * n


def test_analysis_of_a_gpu_model_matches_the_cpu_and_leaves_it_there(scan):
    from lviv_c.analysis import gradient_rf, generate_mei
    from lviv_c.course import build_course_model
    dl = _loaders(scan)
    img = np.full((36, 64), 100.0, np.float32)
    mc = build_course_model("cnn", dl, seed=3)
    rf_c = gradient_rf(mc, [0, 1], img)
    _, mei_c = generate_mei(mc, img, [0, 1], iterations=3, mean_constr=100.0, std_constr=20.0, progress=False)
    mg = build_course_model("cnn", dl, seed=3).to("cuda")
    params = [id(p) for p in mg.parameters()]
    rf_g = gradient_rf(mg, [0, 1], img)
    _, mei_g = generate_mei(mg, img, [0, 1], iterations=3, mean_constr=100.0, std_constr=20.0, progress=False)
    assert all(p.is_cuda for p in mg.parameters()) and [id(p) for p in mg.parameters()] == params
    np.testing.assert_allclose(rf_g, rf_c, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(mei_g, mei_c, rtol=1e-5, atol=1e-5)


def test_measures_take_cpu_batches_for_a_gpu_model(scan):
    from lviv_c.course import build_course_model
    from lviv_c.dataset import load_dataset
    from lviv_c.utility.measures import get_correlations
    dl_cpu = load_dataset(scan, batch_size=16, seed=1, cuda=False)
    m = build_course_model("ln", dl_cpu, seed=1)
    m.eval()
    c_cpu = get_correlations(m, dl_cpu["validation"], per_neuron=True)
    m.to("cuda")
    c_gpu = get_correlations(m, dl_cpu["validation"], per_neuron=True)
    np.testing.assert_allclose(c_gpu, c_cpu, rtol=1e-5, atol=1e-6)


def test_save_of_cuda_tensors_writes_host_tensors(tmp_path):
    t = L.tensor(np.arange(6, dtype=np.float32).reshape(2, 3), device="cuda")
    L.save({"w": t}, str(tmp_path / "w.pt"))
    back = L.load(str(tmp_path / "w.pt"))["w"]
    assert not getattr(back, "is_cuda", False)
    np.testing.assert_array_equal(np.asarray(back), np.arange(6, dtype=np.float32).reshape(2, 3))


def test_cli_train_device_cuda_matches_device_cpu(scan, tmp_path):
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    outs = {}
    for dev in ("cuda", "cpu"):
        out = str(tmp_path / f"{dev}.pt")
        r = subprocess.run([sys.executable, "-m", "lviv_c", "train", "--data", scan, "--model", "ln",
                            "--max-iter", "1", "--device", dev, "--out", out, "--quiet"],
                           capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr
        assert f"trained on {dev}" in r.stdout
        outs[dev] = L.load(out)
    for k in outs["cpu"]:
        if L.cuda.emulated():
            np.testing.assert_array_equal(np.asarray(outs["cuda"][k]), np.asarray(outs["cpu"][k]), err_msg=k)
        else:
            np.testing.assert_allclose(np.asarray(outs["cuda"][k]), np.asarray(outs["cpu"][k]), rtol=1e-3, atol=1e-4)


def test_demo_reports_the_device_it_trained_on(scan, tmp_path):
    from lviv_c import demo
    res = demo.run_demo(data=scan, out=str(tmp_path / "out"), models=("ln", "lurz"), max_iter=1, batch_size=32,
                        verbose=False, figures=True, device="cuda", mei_iterations=2, n_analysis_neurons=2)
    assert res["device"] == "cuda" and res["models"]["ln"]["device"] == "cuda"
    assert res["models"]["lurz"]["device"] == "cuda"
    assert "lurz" in res["analysis"]   # the RF / MEI analysis of the GPU model, from CUDA batches
    res = demo.run_demo(data=scan, out=str(tmp_path / "out2"), models=("ln",), max_iter=1, batch_size=32,
                        verbose=False, figures=False, device="cpu")
    assert res["device"] == "cpu" and res["models"]["ln"]["device"] == "cpu"


# ----------------------------------------------------------------- multi-scan (Sensorium) training

SENS_SMALL = dict(n_trials=96, n_neurons=10, image_shape=(36, 64), n_test_images=4, n_repeats=3, n_validation=16)
SENS_MODEL = dict(hidden_channels=4, input_kern=5, hidden_kern=3, layers=2, stack=-1, depth_separable=True,
                  grid_mean_predictor={"type": "cortex", "input_dimensions": 2, "hidden_layers": 0,
                                       "hidden_features": 0, "final_tanh": False},
                  gamma_input=1.0, gamma_readout=0.1)


@pytest.fixture(scope="module")
def sens_scans(tmp_path_factory):
    from lviv_c.synthetic_sensorium import make_sensorium_scans
    return make_sensorium_scans(tmp_path_factory.mktemp("sens_place"), n_scans=2, seed=4, **SENS_SMALL)


def _sens_loaders(paths, batch_size=16):
    from lviv_c.sensorium_data import static_loaders
    return static_loaders(paths, batch_size, seed=0, include_behavior=True, include_eye_position=True)


def _sens_model(dl):
    from lviv_c.models.sensorium import build_sensorium_model
    return build_sensorium_model(dl, seed=5, shifter=True, **SENS_MODEL)


def test_multi_scan_training_on_cuda_places_everything_and_matches_the_cpu(sens_scans):
    from lviv_c.trainers import train_model
    out = {}
    for dev in ("cuda", "cpu"):
        dl = _sens_loaders(sens_scans)
        m = _sens_model(dl)
        score, res, sd = train_model(m, dl, seed=1, device=dev, max_iter=2, verbose=False, lr_decay_steps=1,
                                     patience=100, track_training=False)
        assert all(v.is_cuda == (dev == "cuda") for v in m.state_dict().values())  # parameters and buffers
        out[dev] = score, res, sd
    sg, rg, sdg = out["cuda"]
    sc, rc, sdc = out["cpu"]
    assert rg["epochs"] == rc["epochs"] == 2
    if L.cuda.emulated():                                            # the same kernels: the same numbers
        assert sg == sc and rg["validation_corr"] == rc["validation_corr"]
        for k in sdc:
            np.testing.assert_array_equal(sdg[k].cpu().numpy(), sdc[k].numpy(), err_msg=k)
    else:
        assert abs(sg - sc) < 1e-3


def test_multi_scan_engine_keeps_moments_and_blocks_on_the_device(sens_scans):
    from lviv_c.sensorium_training import MultiScanEngine
    dl = _sens_loaders(sens_scans)
    m = _sens_model(dl).to("cuda")
    eng = MultiScanEngine(m, dl["train"])
    eng.train_epoch()
    assert _C.adam_moment_devices(eng.adam) == ["cuda"] * len(eng.params)
    assert all(p.is_cuda for p in m.parameters())
    for s in eng.scans.values():
        X, Y = s.blocks("cuda")
        assert X.is_cuda and Y.is_cuda and tuple(X.shape) == s.X.shape and tuple(Y.shape) == s.Y.shape
    # a CPU model keeps its moments and blocks on the host
    mc = _sens_model(dl)
    ec = MultiScanEngine(mc, dl["train"])
    assert _C.adam_moment_devices(ec.adam) == ["cpu"] * len(ec.params)


@pytest.mark.skipif(not L.cuda.emulated(), reason="transfer counters exist on the emulated device only")
def test_multi_scan_training_copies_back_only_the_loss(sens_scans):
    """Host <- device copies in a multi-scan epoch on the device (one C call cycling the scans):
    the summed loss (one double) at the end, nothing per batch or per parameter; host -> device
    only the batch indices (the blocks are uploaded once, in the first epoch)."""
    from lviv_c.sensorium_training import MultiScanEngine
    dl = _sens_loaders(sens_scans, batch_size=8)
    m = _sens_model(dl).to("cuda")
    eng = MultiScanEngine(m, dl["train"])
    eng.train_epoch()                                                # capture, upload the blocks
    nb = len(eng.epoch_batches())
    before = _C._emulated_transfers()
    eng.train_epoch()
    after = _C._emulated_transfers()
    n, nbytes = after["d2h"] - before["d2h"], after["d2h_bytes"] - before["d2h_bytes"]
    assert nb >= 10 and n == 1 and nbytes == 8
    # uploads: per batch the gather indices of images and responses (int64 each), no data rows
    idx_bytes = 2 * 8 * sum(len(i) for _, i in eng.epoch_batches())
    assert after["h2d_bytes"] - before["h2d_bytes"] == idx_bytes


def test_multi_scan_epoch_in_one_c_call_equals_the_per_batch_calls(sens_scans):
    """_C.train_multi_epoch (the scans cycled in C) against one _C.train_epoch call per batch and
    Adam steps from Python (the loop it replaced): the same losses and weights, bit for bit. (The
    graphs are captured first in both: a capture's train-mode forward draws the readout's random
    grid samples, so capturing lazily between batches would shift the random stream.)"""
    from lviv_c.sensorium_training import MultiScanEngine
    states = {}
    for how in ("one call", "per batch"):
        dl = _sens_loaders(sens_scans, batch_size=8)
        m = _sens_model(dl).to("cuda")
        eng = MultiScanEngine(m, dl["train"])
        batches = eng.epoch_batches()
        step_every = 4
        for key, idx in batches:
            eng._train_graph(key, len(idx))
        if how == "one call":
            total = eng._captured_epoch(batches, step_every, None)
        else:
            total = 0.0
            for b, (key, idx) in enumerate(batches):
                X, Y = eng.scan(key, dl["train"][key]).blocks("cuda")
                total += _C.train_epoch(eng._train_graph(key, len(idx)).handle, None, eng.adam, X, Y, idx, 0, None)[1]
                if (b + 1) % step_every == 0:
                    _C.adam_step(eng.adam)
        states[how] = total, {k: v.cpu().numpy() for k, v in m.state_dict().items()}
    assert len(batches) % 4 and states["one call"][0] == states["per batch"][0]
    for k, v in states["per batch"][1].items():
        np.testing.assert_array_equal(states["one call"][1][k], v, err_msg=k)
