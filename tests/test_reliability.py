"""Regression tests of the reliability issue: each case once returned wrong data silently, hung,
or failed with a misleading or path-less message."""
import numpy as np
import pytest

import lviv_c as L


# ----------------------------------------------------------------------------- tensor indexing

def test_bool_mask_selects_and_is_shape_checked():
    t = L.arange(10)
    m = L.tensor([True, False] * 5)
    assert m.dtype == L.bool and not m.is_floating_point()
    assert t[m].tolist() == [0, 2, 4, 6, 8]                 # was ten values of 1/0
    assert (t > 6).dtype == L.bool
    assert t[t > 6].tolist() == [7, 8, 9]
    assert t[np.arange(10) % 3 == 0].tolist() == [0, 3, 6, 9]
    assert t[[True, False] * 5].tolist() == [0, 2, 4, 6, 8]
    with pytest.raises(IndexError, match=r"shape of the mask \[3\] at index 0 does not match"):
        t[L.tensor([True, False, True])]
    with pytest.raises(IndexError, match="mask"):
        t[np.array([True, False])]
    # a 2-d mask over a 2-d tensor (PyTorch: the selected values, flat)
    x = L.arange(12).reshape(3, 4)
    assert x[x > 8].tolist() == [9, 10, 11]
    assert x[L.tensor([False, True, True])].tolist() == [[4, 5, 6, 7], [8, 9, 10, 11]]
    assert x[:, L.tensor([True, False, False, True])].tolist() == [[0, 3], [4, 7], [8, 11]]


def test_float_index_raises_and_positions_are_bounds_checked():
    t = L.arange(10)
    with pytest.raises(IndexError, match="long, int, byte or bool"):
        t[L.tensor([1.0, 2.0])]                              # was taken as a mask
    with pytest.raises(IndexError, match="valid indices"):
        t[np.array([0.5, 1.0])]
    with pytest.raises(IndexError, match="long, int, byte or bool"):
        t[1.0]
    with pytest.raises(IndexError, match="index 10 is out of bounds for dimension 0 with size 10"):
        t[L.tensor([0, 10])]
    with pytest.raises(IndexError, match="index -11 is out of bounds"):
        t[[-11]]
    assert t[L.tensor([-1, 0])].tolist() == [9, 0]
    with pytest.raises(IndexError, match="long, int, byte or bool"):
        t[L.tensor([1.0])] = 5
    with pytest.raises(RuntimeError, match="index_select"):
        t.index_select(0, L.tensor([1.0]))


def test_several_and_multi_dim_integer_indices_follow_pytorch():
    a = np.arange(24).reshape(2, 3, 4)
    x = L.tensor(a)
    # several advanced indices broadcast together (was an outer product)
    assert x[[0, 1], [1, 2]].tolist() == a[[0, 1], [1, 2]].tolist()
    assert x[:, [0, 2], [1, 3]].tolist() == a[:, [0, 2], [1, 3]].tolist()
    # a 2-d index keeps its shape (was flattened)
    assert x[:, [[0], [2]]].shape == a[:, [[0], [2]]].shape
    np.testing.assert_array_equal(np.asarray(x[:, [[0], [2]]]), a[:, [[0], [2]]])
    with pytest.raises(IndexError, match="could not be broadcast"):
        x[[0, 1], [0, 1, 2]]
    # gradients flow through a combined index
    w = L.tensor(a.astype(np.float32), requires_grad=True)
    w[[0, 1, 1], [2, 0, 0]].sum().backward()
    g = np.zeros_like(a, dtype=np.float32)
    np.add.at(g, ([0, 1, 1], [2, 0, 0]), 1)
    np.testing.assert_array_equal(np.asarray(w.grad), g)


def test_masks_survive_shape_ops_and_convert_like_pytorch():
    t = L.arange(6).float()
    m = (t > 2).reshape(2, 3)
    assert m.dtype == L.bool and m.t().dtype == L.bool and m.clone().dtype == L.bool
    assert m.float().dtype == L.float32 and m.float().sum().item() == 3
    assert m.long().dtype == L.int64 and m.long().tolist() == [[0, 0, 0], [1, 1, 1]]
    assert m.tolist() == [[False, False, False], [True, True, True]]
    assert (t > 2).float() is not (t > 2)
    f = (t > 2).float()
    f[0] = 7.0          # the float copy is not the mask
    assert L.arange(6).bool().tolist() == [False] + [True] * 5
    np.testing.assert_array_equal(np.asarray(L.where(t > 2, t, -1.0)), [-1, -1, -1, 3, 4, 5])
    assert L.cat([t > 2, t > 4]).dtype == L.bool


# ----------------------------------------------------------------------------- NaN training

import os  # noqa: E402
import shutil  # noqa: E402

from lviv_c.dataset import load_dataset  # noqa: E402
from lviv_c.synthetic import make_scan  # noqa: E402
from lviv_c.trainers import train_model  # noqa: E402
from lviv_c.utility import measures as M  # noqa: E402


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return make_scan(tmp_path_factory.mktemp("rel"), n_trials=240, n_neurons=20,
                     image_shape=(18, 32), n_test_images=8, n_repeats=4, n_validation=40,
                     seed=3, progress=False)


@pytest.fixture
def scan_copy(scan, tmp_path):
    dst = tmp_path / os.path.basename(scan)
    shutil.copytree(scan, dst)
    return str(dst)


def _linear():
    from test_nn_notebook import Linear
    L.manual_seed(0)
    return Linear(18, 32, 20, gamma=0.1)


def test_one_correlation_with_one_nan_rule():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(30, 4))
    p = y + rng.normal(size=(30, 4))
    p[:, 1] = 2.0                        # a constant prediction: 0 (eps), as in the course
    p[3, 2] = np.nan                     # a NaN prediction
    assert M.corr(y, p, axis=0)[1] == 0.0 and M.corr(y, p, axis=0)[2] == 0.0
    kept = M.corr(y, p, axis=0, nan="propagate")
    assert kept[1] == 0.0 and np.isnan(kept[2]) and np.isfinite(kept[[0, 3]]).all()
    with pytest.warns(UserWarning, match="NaNs will be set to Zero"):
        M.corr(y, p, axis=0, nan="warn")
    assert np.isnan(M.corr(y, p, axis=0, eps=0.0, nan="propagate")[1])   # eps=0: NaN
    # the trainer and the synthetic scan use this one function
    from lviv_c import synthetic, trainers
    np.testing.assert_array_equal(trainers._corr_per_neuron(y, p), kept)
    np.testing.assert_array_equal(synthetic._corr_cols(y, p),
                                  M.corr(y, p, axis=0, eps=0.0, nan="propagate"))
    with pytest.raises(ValueError, match="nan must be one of"):
        M.corr(y, p, nan="ignore")


def test_nan_weight_stops_training_with_an_error(scan):
    dl = load_dataset(scan, batch_size=40, seed=1)
    m = _linear()
    m.linear.weight.data[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="not finite.*no finite state"):
        train_model(m, dl, seed=1, max_iter=3, verbose=False)


def test_nan_mid_training_restores_the_best_finite_state(scan, monkeypatch):
    import lviv_c.trainers as T
    dl = load_dataset(scan, batch_size=40, seed=1)
    m = _linear()
    calls = {"n": 0}
    real = T._progress_bar

    def poisoning_bar(total, desc, verbose):
        calls["n"] += 1
        if calls["n"] == 3:                       # a NaN weight appears in the third epoch
            m.linear.weight.data[0, 0] = float("nan")
        return real(total, desc, False)
    monkeypatch.setattr(T, "_progress_bar", poisoning_bar)
    with pytest.raises(FloatingPointError, match=r"not finite at epoch 3; the model holds the best "
                                                 r"finite state \(epoch [0-2],"):
        train_model(m, dl, seed=1, max_iter=10, verbose=False)
    w = np.asarray(m.linear.weight.detach())
    assert np.isfinite(w).all()
    assert calls["n"] == 3                        # stopped at once, no NaN epochs after


@pytest.mark.parametrize("values, match", [
    (lambda s: np.zeros_like(s), "every responses std is 0"),
    (lambda s: np.where(np.arange(s.size) == 3, np.nan, s), "NaN/inf"),
    (lambda s: s[:-2], "values, expected 1 or 20"),
])
def test_bad_response_statistics_are_named(scan_copy, values, match):
    f = os.path.join(scan_copy, "meta", "statistics", "responses", "all", "std.npy")
    np.save(f, values(np.load(f)))
    with pytest.raises(ValueError, match=match) as ei:
        load_dataset(scan_copy, batch_size=40, seed=1)
    assert f in str(ei.value)


def test_bad_image_statistics_are_named(scan_copy):
    f = os.path.join(scan_copy, "meta", "statistics", "images", "all", "std.npy")
    np.save(f, np.zeros_like(np.load(f)))
    with pytest.raises(ValueError, match="std must be > 0") as ei:
        load_dataset(scan_copy, batch_size=40, seed=1, exclude=None)
    assert f in str(ei.value)


def test_small_response_std_uses_the_course_threshold(scan_copy):
    f = os.path.join(scan_copy, "meta", "statistics", "responses", "all", "std.npy")
    s = np.load(f)
    s[4] = 0.0
    np.save(f, s)
    dl = load_dataset(scan_copy, batch_size=40, seed=1)
    y = np.concatenate([np.asarray(b.responses) for b in dl["train"]])
    assert np.isfinite(y).all()


# ----------------------------------------------------------------------------- CLI output paths

import subprocess  # noqa: E402
import sys  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, timeout=600):
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("LVIV_DATA", None)
    return subprocess.run([sys.executable, "-m", "lviv_c", *args], capture_output=True,
                          text=True, cwd=ROOT, env=e, timeout=timeout)


def one_line_error(r, *words):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.mark.parametrize("out, why", [
    ("/proc/lviv_c_x.pt", "cannot write the output there"),
    ("/dev/full", "character device"),
    ("{file}/x.pt", "regular file"),
    ("{tmp}", "folder"),
])
def test_train_checks_its_output_before_training(scan, tmp_path, out, why):
    (tmp_path / "file").write_text("x")
    out = out.format(file=tmp_path / "file", tmp=tmp_path)
    r = run_cli("train", "--data", scan, "--model", "ln", "--max-iter", "1", "--out", out)
    one_line_error(r, "--out", out, why)
    assert "Epoch" not in r.stdout + r.stderr and "test corr" not in r.stdout   # nothing trained


def test_synthesize_checks_its_folder_and_names_the_flag(tmp_path):
    one_line_error(run_cli("synthesize", "/proc/lviv_c_scan", "--small", "--quiet"),
                   "/proc/lviv_c_scan", "cannot write")
    (tmp_path / "f").write_text("x")
    one_line_error(run_cli("synthesize", str(tmp_path / "f" / "s"), "--small", "--quiet"),
                   "cannot write")
    assert run_cli("synthesize", str(tmp_path), "--small", "--quiet", "--n-neurons", "5"
                   ).returncode == 0
    line = one_line_error(run_cli("synthesize", str(tmp_path), "--small", "--quiet",
                                  "--n-neurons", "5"), "exists", "--overwrite")
    assert "overwrite=True" not in line


def test_a_failed_final_write_keeps_the_weights(scan, tmp_path, monkeypatch, capsys):
    import tempfile

    from lviv_c import cli, serialization
    real = serialization.save
    calls = []

    def full_disk(obj, f, **kw):
        calls.append(str(f))
        if len(calls) == 1:
            raise OSError(28, "No space left on device", str(f))
        return real(obj, f, **kw)
    monkeypatch.setattr(serialization, "save", full_disk)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "keep"))
    os.makedirs(tmp_path / "keep")
    out = str(tmp_path / "w.pt")
    rc = cli.main(["train", "--data", scan, "--model", "ln", "--max-iter", "1", "--out", out,
                   "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left on device" in err and "saved to" in err, err
    kept = calls[1]
    assert kept in err and os.path.dirname(kept) == str(tmp_path / "keep")
    state = serialization.load(kept)
    assert state["linear.weight"].shape == (20, 18 * 32)
    assert not os.path.exists(out)


# ----------------------------------------------------------------------------- hangs, empty tiers

def test_a_fifo_named_like_a_trial_is_refused_not_waited_on(scan_copy):
    from memlimit import run_capped
    f = os.path.join(scan_copy, "data", "responses", "7.npy")
    os.unlink(f)
    os.mkfifo(f)
    code = f"""
    from lviv_c.dataset import load_dataset
    try:
        load_dataset({scan_copy!r}, batch_size=40)
    except (OSError, ValueError) as e:
        print(json.dumps(str(e)))
    """
    rc, out, err, res = run_capped(code, timeout=120)      # a hang fails here (TimeoutExpired)
    assert res is not None and f in res and "FIFO" in res, (out, err[-2000:])


def test_an_empty_validation_tier_is_named(scan_copy):
    f = os.path.join(scan_copy, "meta", "trials", "tiers.npy")
    tiers = np.load(f)
    np.save(f, np.where(tiers == "validation", "train", tiers).astype(tiers.dtype))
    dl = load_dataset(scan_copy, batch_size=40, seed=1)
    with pytest.raises(ValueError, match="'validation' loader has no trials.*tiers.npy"):
        train_model(_linear(), dl, seed=1, max_iter=1, verbose=False)


# ----------------------------------------------------------------------------- messages

def test_dim_and_size_arguments_are_checked():
    x = L.ones(2, 3, 4)
    with pytest.raises(IndexError, match=r"Dimension out of range \(expected to be in range of "
                                         r"\[-3, 2\], but got 9\)"):
        x.transpose(0, 9)
    with pytest.raises(IndexError, match="Dimension out of range"):
        x.unsqueeze(4)                       # was taken modulo 4
    with pytest.raises(IndexError, match="Dimension out of range"):
        x.squeeze(3)
    with pytest.raises(IndexError, match="Dimension out of range"):
        x.flatten(0, 5)
    with pytest.raises(RuntimeError, match="duplicate dims"):
        x.permute(0, 0, 1)
    assert x.unsqueeze(-1).shape == (2, 3, 4, 1) and x.transpose(-1, 0).shape == (4, 3, 2)
    with pytest.raises(TypeError, match=r"zeros\(\): argument 'size' must be tuple of ints, but "
                                        r"found element of type float at pos 0"):
        L.zeros(2.5)                         # was shape (2,)
    with pytest.raises(TypeError, match="found element of type float"):
        x.view(4.0, 6)
    with pytest.raises(RuntimeError, match="negative dimension"):
        L.ones(2, -1)
    assert L.zeros((2, 3)).shape == (2, 3) and L.zeros(np.int64(2)).shape == (2,)


def test_second_backward_through_a_spent_graph_raises():
    x = L.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time.*retain_graph"):
        y.backward()                         # used to add 2x to the gradient again
    np.testing.assert_array_equal(np.asarray(x.grad), [2, 4])
    z = (x * x).sum()
    z.backward(retain_graph=True)
    z.backward()
    np.testing.assert_array_equal(np.asarray(x.grad), [2 + 4, 4 + 8])
    w = x * 3                                # a shared part of two graphs is spent too
    w.sum().backward()
    with pytest.raises(RuntimeError, match="second time"):
        (w * 2).sum().backward()


def test_in_place_on_a_tracked_non_leaf_says_what_to_do():
    x = L.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    for f in (lambda: y.add_(1), lambda: y.__setitem__(0, 5.0), lambda: y.mul_(2)):
        with pytest.raises(RuntimeError) as ei:
            f()
        assert "leaf Variable" not in str(ei.value) and "out-of-place" in str(ei.value)
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad"):
        x.add_(1)
    with L.no_grad():
        y.add_(1)                            # allowed without grad recording
    np.testing.assert_array_equal(np.asarray(y.detach()), [3, 5])


def test_deeply_nested_config_json_is_named(scan_copy):
    cfg = os.path.join(scan_copy, "config.json")
    with open(cfg, "w") as fh:
        fh.write("[" * 100000 + "]" * 100000)
    with pytest.raises(ValueError, match="nested too deeply") as ei:
        load_dataset(scan_copy, batch_size=40)
    assert cfg in str(ei.value)


# ----------------------------------------------------------------------------- also

def test_importing_the_source_folder_says_what_to_do(tmp_path):
    src = tmp_path / "lviv_c"
    shutil.copytree(os.path.join(ROOT, "lviv_c"), src,
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    e = dict(os.environ)
    e.pop("PYTHONPATH", None)
    r = subprocess.run([sys.executable, "-c", "import lviv_c"], cwd=tmp_path, env=e,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "compiled extension lviv_c._C is missing" in r.stderr and "build_ext --inplace" in r.stderr
    assert "circular import" not in r.stderr


def test_the_binding_checks_codes_from_python():
    from lviv_c import _C
    x = L.ones(3)
    with pytest.raises(ValueError, match="bad reduction op"):
        _C.reduce(99, x, 0, False)
    with pytest.raises(ValueError, match="bad reduction op"):
        _C.reduce(-1, x, 0, False)
    with pytest.raises(IndexError):
        _C.reduce(0, x, 1 << 40, False)
    with pytest.raises(ValueError, match="unknown dtype code"):
        _C.empty((2,), 7)
    with pytest.raises(ValueError, match="unknown dtype code"):
        _C.to_dtype(x, 5)
    with pytest.raises(ValueError, match="unknown kind"):
        _C.fill_(x, 9, 0.0)
    with pytest.raises(ValueError, match="bad unary op"):
        _C.unary(1000, x)


def test_npy_header_junk_after_the_dict_is_refused(tmp_path):
    import io
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.arange(3, dtype=np.float32), version=(1, 0))
    raw = bytearray(buf.getvalue())
    end = raw.index(b"}")
    raw[end + 1:end + 4] = b"xyz"            # inside the space padding: the header length stays
    f = tmp_path / "j.npy"
    f.write_bytes(bytes(raw))
    with pytest.raises(ValueError):
        np.load(f)                           # NumPy refuses it
    from lviv_c import _C
    with pytest.raises(ValueError, match=r"unexpected 'x' after the closing"):
        _C.npy_load(str(f))
    with pytest.raises(ValueError, match="after the closing"):
        _C.npy_header(str(f))


def test_a_failed_synthesize_keeps_the_old_scan_and_leaves_no_partial_one(tmp_path, monkeypatch):
    from lviv_c import synthetic
    kw = dict(n_trials=60, n_neurons=5, image_shape=(8, 8), n_test_images=4, n_repeats=2,
              n_validation=10, progress=False)
    path = synthetic.make_scan(tmp_path, seed=1, **kw)
    before = open(os.path.join(path, "data", "responses", "0.npy"), "rb").read()

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(synthetic, "_write_data", disk_full)
    with pytest.raises(OSError):
        synthetic.make_scan(tmp_path, seed=2, overwrite=True, **kw)
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(path)]      # no partial folder
    assert open(os.path.join(path, "data", "responses", "0.npy"), "rb").read() == before
    monkeypatch.undo()
    synthetic.make_scan(tmp_path, seed=2, overwrite=True, **kw)          # a complete replace
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(path)]
    assert open(os.path.join(path, "data", "responses", "0.npy"), "rb").read() != before
    assert (os.stat(path).st_mode & 0o777) == (0o777 & ~_umask())


def _umask():
    old = os.umask(0)
    os.umask(old)
    return old


def test_neuron_indices_in_analysis_and_readout_follow_the_indexing_rules():
    from lviv_c.analysis import _neurons
    np.testing.assert_array_equal(_neurons([True, False, True, False], 4)[0], [0, 2])  # was 1,0,1,0
    np.testing.assert_array_equal(_neurons(L.arange(4) > 1, 4)[0], [2, 3])
    np.testing.assert_array_equal(_neurons([-1, 0], 4)[0], [3, 0])
    with pytest.raises(IndexError, match="mask"):
        _neurons([True, False], 4)
    with pytest.raises(IndexError, match="valid indices"):
        _neurons([1.5], 4)                                                   # was 1
    with pytest.raises(IndexError, match="out of bounds"):
        _neurons([4], 4)
    from lviv_c.tensor import positions
    np.testing.assert_array_equal(positions(L.tensor([True, False, True]), 3), [0, 2])
    with pytest.raises(IndexError, match="long, int, byte or bool"):
        positions(L.tensor([0.0, 2.0]), 3)


def test_evaluate_refuses_weights_with_nan(scan, tmp_path):
    from lviv_c import serialization
    from lviv_c.demo import build_model, load_loaders
    loaders, _ = load_loaders(scan, batch_size=40)
    sd = {k: np.array(v) for k, v in build_model("ln", loaders).state_dict().items()}
    sd["linear.weight"][0, 0] = np.nan
    w = tmp_path / "nan.pt"
    serialization.save(sd, w)
    r = run_cli("evaluate", "--data", scan, "--model", "ln", "--weights", str(w))
    one_line_error(r, str(w), "linear.weight", "NaN")
