"""FileTreeDataset reader and load_dataset loaders on tiny scans written with np.save."""
import json
import os
import shutil

import numpy as np
import pytest

from lviv_c import _C
from lviv_c.dataset import (Batch, DataLoader, FileTreeDataset, SubsetSequentialSampler,
                            load_dataset)

N_NEURONS = 7
H, W = 36, 64


def make_scan(root, name="static20457-5-9-preproc0", n_train=24, n_val=6, n_test_images=4,
              repeats=3, n_neurons=N_NEURONS, seed=0):
    """A scan in the exact course layout. Returns (path, dict of the arrays written)."""
    rng = np.random.default_rng(seed)
    path = os.path.join(str(root), name)
    tiers = ["train"] * n_train + ["validation"] * n_val + ["test"] * (n_test_images * repeats)
    n = len(tiers)
    perm = rng.permutation(n)
    tiers = np.array(tiers, dtype="<U10")[perm]
    image_ids = np.concatenate([np.arange(100, 100 + n_train + n_val),
                                np.repeat(np.arange(10, 10 + n_test_images), repeats)])[perm]
    image_ids = image_ids.astype(np.int64)
    images = rng.integers(0, 256, size=(n, 1, H, W)).astype(np.float32)
    responses = rng.gamma(0.5, 1.0, size=(n, n_neurons))
    responses[:, 2] = 0.25  # constant neuron: std 0 -> the 0.01 * mean(std) floor applies
    behavior = rng.normal(size=(n, 3))
    pupil = rng.normal(size=(n, 2))
    for key, arr in [("images", images), ("responses", responses), ("behavior", behavior),
                     ("pupil_center", pupil)]:
        d = os.path.join(path, "data", key)
        os.makedirs(d)
        for i in range(n):
            np.save(os.path.join(d, f"{i}.npy"), arr[i])
    with open(os.path.join(path, "config.json"), "w") as fh:
        json.dump({"links": {"targets": "responses", "inputs": "images"}}, fh)
    trials = {
        "tiers": tiers,
        "frame_image_id": image_ids,
        "frame_image_class": np.array(["imagenet"] * n, dtype="<U64"),
        "condition_hash": np.array([f"h{i:04d}" for i in image_ids], dtype="<U64"),
        "trial_idx": np.arange(n, dtype=np.int64)[::-1].copy(),
        "frame_presentation_time": rng.normal(size=n),
        "frame_trial_ts": np.array([f"ts{i}" for i in range(n)], dtype="<U32"),
    }
    neurons = {
        "unit_ids": (np.arange(n_neurons) * 3 + 1).astype(np.uint16),
        "animal_ids": np.full(n_neurons, 20457, dtype=np.uint16),
        "area": np.array(["V1", "LM"] * n_neurons, dtype="<U2")[:n_neurons],
        "layer": np.array(["L2/3", "L4", "L2/3"] * n_neurons, dtype="<U4")[:n_neurons],
        "cell_motor_coordinates": rng.normal(size=(n_neurons, 3)) * 100,
    }
    for group, fields in [("trials", trials), ("neurons", neurons)]:
        d = os.path.join(path, "meta", group)
        os.makedirs(d)
        for k, v in fields.items():
            np.save(os.path.join(d, k + ".npy"), v)
    train = tiers == "train"
    stats = {"images": images[train].astype(np.float64), "responses": responses[train],
             "behavior": behavior[train], "pupil_center": pupil[train]}
    for key, arr in stats.items():
        scalar = key == "images"
        for src in ("all", "stimulus_frame"):
            d = os.path.join(path, "meta", "statistics", key, src)
            os.makedirs(d)
            for fn in ("mean", "std", "min", "max", "median"):
                f = getattr(np, fn)
                v = f(arr) if scalar else f(arr, axis=0)
                np.save(os.path.join(d, fn + ".npy"), np.asarray(v, np.float32 if scalar else
                                                                  np.float64))
    return path, dict(images=images, responses=responses, behavior=behavior, pupil=pupil,
                      trials=trials, neurons=neurons, n=n)


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return make_scan(tmp_path_factory.mktemp("scan"))


@pytest.fixture
def scan_copy(scan, tmp_path):
    path, arrays = scan
    dst = os.path.join(str(tmp_path), os.path.basename(path))
    shutil.copytree(path, dst)
    return dst, arrays


def arr(x):
    return np.asarray(x)


# ------------------------------------------------------------------------------ the reader

def test_roundtrip_blocks_match_per_file_numpy(scan):
    path, a = scan
    ds = FileTreeDataset(path, "images", "responses", "behavior")
    n = a["n"]
    assert len(ds) == n
    assert ds.data_keys == ("images", "responses", "behavior")
    ref_img = np.stack([np.load(os.path.join(path, "data/images", f"{i}.npy")) for i in range(n)])
    ref_rsp = np.stack([np.load(os.path.join(path, "data/responses", f"{i}.npy"))
                        for i in range(n)])
    assert ds.block("images").dtype == np.float32 and ds.block("images").shape == (n, 1, H, W)
    np.testing.assert_array_equal(ds.block("images"), ref_img)
    assert ds.block("responses").shape == (n, N_NEURONS)
    np.testing.assert_array_equal(ds.block("responses"), ref_rsp.astype(np.float32))
    np.testing.assert_array_equal(ds.block("behavior"), a["behavior"].astype(np.float32))
    x = ds[5]
    assert x._fields == ("images", "responses", "behavior")
    np.testing.assert_array_equal(x.images, ref_img[5])
    np.testing.assert_array_equal(x.responses, ref_rsp[5].astype(np.float32))
    np.testing.assert_array_equal(ds[-1].responses, ref_rsp[-1].astype(np.float32))
    with pytest.raises(IndexError):
        ds[n]


def test_repr_and_default_keys(scan):
    path, a = scan
    ds = FileTreeDataset(path, "images", "responses")
    assert repr(ds) == f"FileTreeDataset {path} (n={a['n']} items)\n\timages, responses"
    assert FileTreeDataset(path).data_keys == ("images", "responses")


def test_links_resolve_targets(scan):
    path, a = scan
    ds = FileTreeDataset(path, "inputs", "targets")
    np.testing.assert_array_equal(ds.block("targets"), a["responses"].astype(np.float32))
    np.testing.assert_array_equal(ds.statistics.targets.all.std,
                                  ds.statistics.responses.all.std)


def test_trial_info_neurons_statistics(scan):
    path, a = scan
    ds = FileTreeDataset(path, "images", "responses")
    ti = ds.trial_info
    assert ti._cache == {}  # lazy: nothing read yet
    assert ti.keys() == sorted(a["trials"])
    for k, v in a["trials"].items():
        got = ti[k]
        assert got.dtype == v.dtype, k
        np.testing.assert_array_equal(got, v)
        np.testing.assert_array_equal(getattr(ti, k), v)
    assert ti.tiers.dtype == np.dtype("<U10")
    assert (ti["tiers"] == "test").sum() == 12
    assert "frame_image_id" in ti and "nope" not in ti
    with pytest.raises(AttributeError, match="nope"):
        ti.nope
    with pytest.raises(KeyError):
        ti["nope"]
    nr = ds.neurons
    assert nr.unit_ids.dtype == np.uint16
    np.testing.assert_array_equal(nr.unit_ids, a["neurons"]["unit_ids"])
    assert nr.area.dtype == np.dtype("<U2") and nr.layer.dtype == np.dtype("<U4")
    assert nr.cell_motor_coordinates.shape == (N_NEURONS, 3)
    assert nr.cell_motor_coordinates.dtype == np.float64
    st = ds.statistics
    train = a["trials"]["tiers"] == "train"
    assert st.images.all.mean.shape == ()
    np.testing.assert_allclose(st.images.all.mean, a["images"][train].mean(), rtol=1e-6)
    np.testing.assert_allclose(st["images"]["all"]["std"], a["images"][train].std(), rtol=1e-6)
    np.testing.assert_allclose(st.responses.stimulus_frame.std, a["responses"][train].std(0))
    assert st.keys() == ["behavior", "images", "pupil_center", "responses"]
    assert st.images.keys() == ["all", "stimulus_frame"]


def test_metadata_is_read_only(scan):
    path, _ = scan
    ds = FileTreeDataset(path, "images", "responses")
    with pytest.raises(ValueError):
        ds.trial_info.frame_image_id[0] = 3


# ------------------------------------------------------------------------------ bad input

def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such dataset folder"):
        FileTreeDataset(str(tmp_path / "nope"), "images", "responses")


def test_missing_data_key(scan):
    path, _ = scan
    with pytest.raises(FileNotFoundError, match=r"data/eyes: no such folder"):
        FileTreeDataset(path, "images", "eyes")


def test_missing_file_in_numbering(scan_copy):
    path, _ = scan_copy
    os.remove(os.path.join(path, "data/responses/3.npy"))
    with pytest.raises(FileNotFoundError, match=r"data/responses/3\.npy: missing"):
        FileTreeDataset(path, "images", "responses")


def test_count_mismatch_between_keys(scan_copy):
    path, a = scan_copy
    n = a["n"]
    np.save(os.path.join(path, f"data/responses/{n}.npy"), np.zeros(N_NEURONS))
    with pytest.raises(ValueError) as e:
        FileTreeDataset(path, "images", "responses")
    msg = str(e.value)
    assert f"data/images has {n}" in msg and f"data/responses has {n + 1}" in msg


def test_shape_mismatch_in_trial_17(scan_copy):
    path, _ = scan_copy
    f = os.path.join(path, "data/responses/17.npy")
    np.save(f, np.zeros(N_NEURONS - 1, dtype=np.float32))
    with pytest.raises(ValueError) as e:
        FileTreeDataset(path, "images", "responses")
    assert str(e.value) == (f"{path}/data/responses/17.npy: expected float64 ({N_NEURONS},), "
                            f"found float32 ({N_NEURONS - 1},)")


def test_dtype_mismatch_reports_lowest_index(scan_copy):
    path, _ = scan_copy
    for i in (29, 11):
        np.save(os.path.join(path, f"data/images/{i}.npy"), np.zeros((1, H, W), np.float64))
    with pytest.raises(ValueError, match=r"images/11\.npy: expected float32 \(1, 36, 64\), "
                                         r"found float64 \(1, 36, 64\)"):
        FileTreeDataset(path, "images", "responses")


def test_truncated_and_corrupt_files(scan_copy):
    path, _ = scan_copy
    f = os.path.join(path, "data/responses/4.npy")
    data = open(f, "rb").read()
    open(f, "wb").write(data[:-5])
    with pytest.raises(ValueError, match=r"responses/4\.npy: truncated \.npy data"):
        FileTreeDataset(path, "images", "responses")
    open(f, "wb").write(data[:30])
    with pytest.raises(ValueError, match=r"responses/4\.npy: truncated \.npy header"):
        FileTreeDataset(path, "images", "responses")
    open(f, "wb").write(b"garbage" * 10)
    with pytest.raises(ValueError, match=r"responses/4\.npy: not an \.npy file"):
        FileTreeDataset(path, "images", "responses")


def test_nan_in_responses(scan_copy):
    path, a = scan_copy
    r = a["responses"][8].copy()
    r[3] = np.nan
    np.save(os.path.join(path, "data/responses/8.npy"), r)
    with pytest.raises(ValueError, match=r"responses/8\.npy: 1 non-finite value .*index 3.*"
                                         r"allow_nan=True"):
        FileTreeDataset(path, "images", "responses")
    ds = FileTreeDataset(path, "images", "responses", allow_nan=True)
    assert np.isnan(ds.block("responses")[8, 3])
    assert np.isfinite(np.delete(ds.block("responses")[8], 3)).all()


def test_float64_overflow_to_inf_is_caught(scan_copy):
    path, a = scan_copy
    r = a["responses"][2].copy()
    r[0] = 1e300
    np.save(os.path.join(path, "data/responses/2.npy"), r)
    with pytest.raises(ValueError, match=r"responses/2\.npy: 1 non-finite"):
        FileTreeDataset(path, "images", "responses")


def test_bad_tier_value(scan_copy):
    path, a = scan_copy
    t = a["trials"]["tiers"].copy()
    t[5] = "trian"
    f = os.path.join(path, "meta/trials/tiers.npy")
    np.save(f, t)
    ds = FileTreeDataset(path, "images", "responses")
    with pytest.raises(ValueError) as e:
        ds.trial_info.tiers
    assert str(e.value) == (f"{f}: tier 'trian' at trial 5 is not one of train, validation, "
                            f"test, final_test")
    with pytest.raises(ValueError, match="trian"):
        load_dataset(path, 4)


def test_trial_field_with_wrong_length(scan_copy):
    path, a = scan_copy
    np.save(os.path.join(path, "meta/trials/frame_image_id.npy"),
            a["trials"]["frame_image_id"][:-1])
    ds = FileTreeDataset(path, "images", "responses")
    with pytest.raises(ValueError, match=rf"frame_image_id\.npy: {a['n'] - 1} entries, "
                                         rf"expected {a['n']} \(one per trial\)"):
        ds.trial_info.frame_image_id


def test_bad_config(scan_copy):
    path, _ = scan_copy
    open(os.path.join(path, "config.json"), "w").write("{links")
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        FileTreeDataset(path, "images", "responses")


def test_object_array_in_meta_is_rejected(scan_copy):
    path, _ = scan_copy
    f = os.path.join(path, "meta/trials/frame_image_class.npy")
    np.save(f, np.array(["a", None] * 21, dtype=object)[:42], allow_pickle=True)
    ds = FileTreeDataset(path, "images", "responses")
    with pytest.raises(ValueError, match=r"frame_image_class\.npy: object arrays .*pickled"):
        ds.trial_info.frame_image_class


def test_gather_rows():
    block = np.arange(5 * 6, dtype=np.float32).reshape(5, 2, 3)
    idx = np.array([4, 0, 4, 2])
    out = _C.gather_rows(block, idx)
    np.testing.assert_array_equal(out, block[idx])
    buf = np.empty((4, 2, 3), np.float32)
    assert _C.gather_rows(block, [4, 0, 4, 2], out=buf) is buf
    np.testing.assert_array_equal(buf, block[idx])
    assert _C.gather_rows(block, np.zeros(0, np.int64)).shape == (0, 2, 3)
    with pytest.raises(IndexError, match="index 5 .*position 1.*5 rows"):
        _C.gather_rows(block, [0, 5])
    with pytest.raises(IndexError, match="index -1"):
        _C.gather_rows(block, [-1])
    with pytest.raises(TypeError, match="float32"):
        _C.gather_rows(block.astype(np.float64), idx)
    with pytest.raises(ValueError, match="wrong shape"):
        _C.gather_rows(block, idx, out=np.empty((3, 2, 3), np.float32))


def test_affine_cols():
    b = np.arange(12, dtype=np.float32).reshape(3, 4) + 1
    out = _C.affine_cols(b, [3, 1], None, [2.0, 0.5])
    np.testing.assert_array_equal(out, b[:, [3, 1]] * np.array([2.0, 0.5], np.float32))
    out = _C.affine_cols(b, None, 1.0, 4.0, divide=True)
    np.testing.assert_array_equal(out, (b - 1) / 4)
    with pytest.raises(IndexError):
        _C.affine_cols(b, [4], None, 1.0)
    with pytest.raises(ValueError, match="3 parameters for 2 columns"):
        _C.affine_cols(b, [0, 1], None, [1.0, 2.0, 3.0])


# ------------------------------------------------------------------------------ loaders

def expected_precision(s):
    thr = 0.01 * s.mean()
    return np.where(s > thr, 1.0 / np.where(s > 0, s, 1), 1.0 / thr)


def collect(loader):
    imgs, rsps = [], []
    for b in loader:
        imgs.append(arr(b.images))
        rsps.append(arr(b.responses))
    return np.concatenate(imgs), np.concatenate(rsps)


def test_load_dataset_tiers_and_batches(scan):
    path, a = scan
    tiers = a["trials"]["tiers"]
    dl = load_dataset(path, batch_size=5, seed=1)
    assert list(dl) == ["train", "validation", "test"]
    for t, n_t in [("train", 24), ("validation", 6), ("test", 12)]:
        ld = dl[t]
        assert isinstance(ld, DataLoader)
        assert len(ld.sampler) == n_t
        assert len(ld) == -(-n_t // 5)
        assert ld.batch_size == 5
        assert len(ld.dataset) == a["n"]
        np.testing.assert_array_equal(np.sort(ld.indices), np.flatnonzero(tiers == t))
    b = next(iter(dl["train"]))
    assert isinstance(b, Batch) and b._fields == ("images", "responses")
    assert arr(b.images).shape == (5, 1, H, W) and arr(b.images).dtype == np.float32
    assert arr(b.responses).shape == (5, N_NEURONS) and arr(b.responses).dtype == np.float32
    sizes = [arr(b.images).shape[0] for b in dl["train"]]
    assert sizes == [5, 5, 5, 5, 4]
    assert dl["validation"].dataset is dl["train"].dataset


def test_validation_order_and_normalization(scan):
    path, a = scan
    tiers = a["trials"]["tiers"]
    dl = load_dataset(path, batch_size=4)
    val = np.flatnonzero(tiers == "validation")
    imgs, rsps = collect(dl["validation"])
    np.testing.assert_array_equal(imgs, a["images"][val])  # exclude="images": raw 0..255
    s = np.load(os.path.join(path, "meta/statistics/responses/all/std.npy"))
    assert s[2] == 0  # the floor applies to the constant neuron
    prec = expected_precision(s)
    np.testing.assert_allclose(rsps, (a["responses"][val].astype(np.float32) * prec)
                               .astype(np.float32), rtol=1e-6)
    assert abs(rsps[:, 2] - 0.25 / (0.01 * s.mean())).max() < 1e-3
    # the whole normalized blocks are exposed for C loops
    ld = dl["validation"]
    assert ld.responses_block.shape == (a["n"], N_NEURONS)
    np.testing.assert_allclose(ld.responses_block[val], rsps, rtol=0)
    np.testing.assert_array_equal(ld.images_block, a["images"])
    assert ld.images_block.flags.c_contiguous and ld.responses_block.dtype == np.float32
    np.testing.assert_array_equal(ld.indices, val)
    # per-item access applies the same transforms
    x = ld.dataset[int(val[1])]
    np.testing.assert_allclose(arr(x.responses), rsps[1], rtol=1e-6)


def test_image_zscore_and_no_normalize(scan):
    path, a = scan
    tiers = a["trials"]["tiers"]
    test = np.flatnonzero(tiers == "test")
    m = float(np.load(os.path.join(path, "meta/statistics/images/all/mean.npy")))
    sd = float(np.load(os.path.join(path, "meta/statistics/images/all/std.npy")))
    imgs, _ = collect(load_dataset(path, 5, exclude=None, tier="test")["test"])
    np.testing.assert_allclose(imgs, (a["images"][test] - m) / sd, rtol=1e-5, atol=1e-6)
    imgs, rsps = collect(load_dataset(path, 5, normalize=False, tier="test")["test"])
    np.testing.assert_array_equal(imgs, a["images"][test])
    np.testing.assert_array_equal(rsps, a["responses"][test].astype(np.float32))
    # the course quirk: exclude is tested with `in`, so for a string it is a substring test
    imgs, _ = collect(load_dataset(path, 5, exclude="images_and_more", tier="test")["test"])
    assert np.allclose(imgs, a["images"][test])  # "images" in "images_and_more" is True
    imgs, _ = collect(load_dataset(path, 5, exclude="img", tier="test")["test"])
    assert not np.allclose(imgs, a["images"][test])


def test_train_shuffle_reseeded_per_epoch_and_deterministic(scan):
    path, a = scan
    train = set(np.flatnonzero(a["trials"]["tiers"] == "train"))

    def epochs(seed, k=3):
        ld = load_dataset(path, 6, seed=seed, tier="train")["train"]
        rows = ld.responses_block
        out = []
        for _ in range(k):
            order = []
            for b in ld:
                r = arr(b.responses)
                # find each row's trial index through the (unique) responses
                for row in r:
                    hit = np.flatnonzero((rows == row).all(1))
                    assert len(hit) == 1
                    order.append(int(hit[0]))
            out.append(order)
        return out

    e1 = epochs(7)
    for order in e1:
        assert sorted(order) == sorted(train) and len(order) == len(train)
    assert e1[0] != e1[1] and e1[1] != e1[2]
    assert epochs(7) == e1
    assert epochs(8)[0] != e1[0]


def test_batch_indices_and_seeded_generator(scan):
    path, _ = scan
    ld = load_dataset(path, 10, seed=3, tier="train")["train"]
    g = np.random.default_rng(3)
    expect = g.permutation(ld.indices)
    got = np.concatenate(ld.batch_indices())
    np.testing.assert_array_equal(got, expect)
    assert [len(i) for i in ld.batch_indices()] == [10, 10, 4]


def test_get_key_and_single_tier(scan):
    path, _ = scan
    key, dl = load_dataset(path, 8, get_key=True, tier="validation")
    assert key == "20457-5-9-0"
    assert list(dl) == ["validation"]
    with pytest.raises(ValueError, match="tier must be one of"):
        load_dataset(path, 8, tier="training")


def test_test_sampler_groups_repeats(scan, capsys):
    path, a = scan
    tiers, ids = a["trials"]["tiers"], a["trials"]["frame_image_id"]
    key, dl = load_dataset(path, 8, return_test_sampler=True, get_key=True)
    assert "Returning only test sampler with repeats" in capsys.readouterr().out
    assert key == "20457-5-9-0" and list(dl) == ["test"]
    ld = dl["test"]
    assert len(ld) == 4
    batches = ld.batch_indices()
    assert [int(ids[b[0]]) for b in batches] == [10, 11, 12, 13]
    for b, batch in zip(batches, ld):
        assert len(b) == 3 and len(set(ids[b])) == 1
        assert (tiers[b] == "test").all()
        assert list(b) == sorted(b)
        np.testing.assert_array_equal(arr(batch.images), a["images"][b])
        assert arr(batch.responses).shape == (3, N_NEURONS)
    assert sorted(np.concatenate(batches)) == list(np.flatnonzero(tiers == "test"))
    assert len(ld.sampler) == 12
    assert len(load_dataset(path, 8, return_test_sampler=True, oracle_condition=[1])["test"]) == 0


def test_neuron_n_selection(scan):
    path, a = scan
    unit_ids = a["neurons"]["unit_ids"]
    state = np.random.get_state()
    dl = load_dataset(path, 8, neuron_n=3, neuron_base_seed=5, exclude_neuron_n=2,
                      tier="validation")
    np.testing.assert_equal(np.random.get_state()[1], state[1])  # global RNG untouched
    np.random.seed(5 * 3)
    chosen = np.random.choice(unit_ids, size=5, replace=False)[2:]
    idx = [int(np.flatnonzero(unit_ids == u)[0]) for u in chosen]
    ld = dl["validation"]
    ds = ld.dataset
    np.testing.assert_array_equal(ds.neurons.unit_ids, chosen)
    np.testing.assert_array_equal(ds.neurons.cell_motor_coordinates,
                                  a["neurons"]["cell_motor_coordinates"][idx])
    assert ds.n_neurons == 3
    val = np.flatnonzero(a["trials"]["tiers"] == "validation")
    _, rsps = collect(ld)
    s = np.load(os.path.join(path, "meta/statistics/responses/all/std.npy"))
    np.testing.assert_allclose(rsps, (a["responses"][val][:, idx].astype(np.float32)
                                      * expected_precision(s)[idx]), rtol=1e-6)
    assert ld.responses_block.shape == (a["n"], 3)
    with pytest.raises(ValueError, match="there are not 7 neurons left"):
        load_dataset(path, 8, neuron_n=7, neuron_base_seed=1, exclude_neuron_n=1)
    with pytest.raises(ValueError, match="neuron_base_seed must be set"):
        load_dataset(path, 8, neuron_n=2, exclude_neuron_n=1)


def test_area_layer_and_neuron_ids(scan):
    path, a = scan
    nr = a["neurons"]
    dl = load_dataset(path, 8, areas=["V1"], layers=["L2/3"], tier="test")
    sel = np.flatnonzero((nr["area"] == "V1") & (nr["layer"] == "L2/3"))
    assert len(sel) not in (0, N_NEURONS)
    ds = dl["test"].dataset
    np.testing.assert_array_equal(ds.neurons.unit_ids, nr["unit_ids"][sel])
    assert arr(next(iter(dl["test"])).responses).shape[1] == len(sel)
    ids = [nr["unit_ids"][6], nr["unit_ids"][1]]
    dl = load_dataset(path, 8, neuron_ids=ids, tier="test", normalize=False)
    test = np.flatnonzero(a["trials"]["tiers"] == "test")
    _, rsps = collect(dl["test"])
    np.testing.assert_array_equal(rsps, a["responses"][test][:, [6, 1]].astype(np.float32))
    with pytest.raises(ValueError, match="neuron id 2 is not in"):
        load_dataset(path, 8, neuron_ids=[2])
    with pytest.raises(ValueError, match="neuron_ids can not be set"):
        load_dataset(path, 8, neuron_ids=ids, areas=["V1"])


def test_image_n_and_image_ids(scan):
    path, a = scan
    tiers, ids = a["trials"]["tiers"], a["trials"]["frame_image_id"]
    dl = load_dataset(path, 4, image_n=5, image_base_seed=2, tier="train")
    np.random.seed(10)
    expect = np.random.choice(np.flatnonzero(tiers == "train"), size=5, replace=False)
    np.testing.assert_array_equal(dl["train"].indices, expect)
    assert len(dl["train"].sampler) == 5 and len(dl["train"]) == 2
    train_ids = ids[tiers == "train"][:3]
    dl = load_dataset(path, 4, image_ids=train_ids)
    np.testing.assert_array_equal(ids[dl["train"].indices], train_ids)
    assert len(dl["validation"].sampler) == 6  # only the train tier is restricted
    with pytest.raises(ValueError, match="contain validation or test images"):
        load_dataset(path, 4, image_ids=[ids[tiers == "test"][0]])


def test_cuda_flag_is_harmless_and_user_loader(scan):
    path, a = scan
    dl = load_dataset(path, 3, cuda=True, tier="validation")
    assert dl["validation"].device in ("cpu", "cuda")
    next(iter(dl["validation"]))
    ds = FileTreeDataset(path, "images", "responses")
    ld = DataLoader(ds, batch_size=16, sampler=SubsetSequentialSampler([3, 1]))
    b = next(iter(ld))
    np.testing.assert_array_equal(arr(b.responses), a["responses"][[3, 1]].astype(np.float32))


def test_user_transform_runs_per_batch(scan):
    path, a = scan
    dl = load_dataset(path, 4, normalize=False, tier="validation")
    ld = dl["validation"]

    class Double:
        def __call__(self, x):
            return x._replace(responses=np.asarray(x.responses) * 2)

    ld.dataset.transforms.insert(0, Double())
    val = np.flatnonzero(a["trials"]["tiers"] == "validation")
    _, rsps = collect(ld)
    np.testing.assert_allclose(rsps, a["responses"][val].astype(np.float32) * 2)


def test_neuron_field_length_and_nan_policy_per_key(scan_copy):
    path, a = scan_copy
    np.save(os.path.join(path, "meta/neurons/area.npy"), a["neurons"]["area"][:-2])
    b = a["behavior"][3].copy()
    b[1] = np.nan  # behaviour traces may hold NaNs: only images/responses are checked
    np.save(os.path.join(path, "data/behavior/3.npy"), b)
    ds = FileTreeDataset(path, "images", "responses", "behavior")
    assert np.isnan(ds.block("behavior")[3, 1])
    with pytest.raises(ValueError, match=rf"area\.npy: {N_NEURONS - 2} entries, expected "
                                         rf"{N_NEURONS} \(one per neuron\)"):
        ds.neurons.area
