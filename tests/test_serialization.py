"""lviv_c.serialization: PyTorch .pt files without PyTorch.

tests/data/*.pt were written by PyTorch (tests/data/make_torch_fixtures.py); the values follow
formulas recomputed here. Tests that need PyTorch itself skip when it is not installed.
"""
import collections
import io
import os
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

from lviv_c import serialization as S

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def expected_state():
    bf16 = np.array([1.0, -3.5, 0.15625], dtype=np.float32)
    return collections.OrderedDict([
        ("0.weight", (np.arange(18, dtype=np.float32).reshape(2, 1, 3, 3) / 8 - 1)),
        ("1.weight", np.array([1.5, -0.5], np.float32)),
        ("1.bias", np.array([0.25, 0.125], np.float32)),
        ("1.running_mean", np.array([0.1, 0.2], np.float32)),
        ("1.running_var", np.array([2.0, 3.0], np.float32)),
        ("1.num_batches_tracked", np.array(7, np.int64)),
        ("extra.f64", np.arange(4, dtype=np.float64) * 0.1),
        ("extra.f16", np.array([1.5, -2.25, 65504.0], np.float16)),
        ("extra.bf16", bf16),
        ("extra.i32", np.array([-7, 0, 2 ** 31 - 1], np.int32)),
        ("extra.i16", np.array([-300, 300], np.int16)),
        ("extra.i8", np.array([-128, 127], np.int8)),
        ("extra.u8", np.array([0, 200, 255], np.uint8)),
        ("extra.bool", np.array([True, False, True])),
        ("extra.big_i64", np.array([-2 ** 40, 2 ** 62], np.int64)),
        ("extra.scalar", np.array(3.25, np.float32)),
        ("extra.empty", np.zeros((0, 3), np.float32)),
    ])


def expected_views():
    base = np.arange(20, dtype=np.float32).reshape(4, 5)
    return {"base": base, "t": base.T, "slice": base[1:, ::2], "row": base[2],
            "expanded": np.broadcast_to(np.array([1.0, 2.0, 3.0], np.float32), (4, 3))}


def assert_same(got, want):
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert got[k].shape == want[k].shape, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


# ----------------------------------------------------------------------------- files from PyTorch

@pytest.mark.parametrize("name", ["state_zip.pt", "state_legacy.pt"])
def test_reads_pytorch_state_dicts(name):
    sd = S.load(os.path.join(DATA, name))
    assert isinstance(sd, collections.OrderedDict)
    assert_same(sd, expected_state())
    # the module metadata load_state_dict uses (BatchNorm's version 2) is kept
    assert sd._metadata == {"": {"version": 1}, "0": {"version": 1}, "1": {"version": 2}}
    assert sd["0.weight"].flags.c_contiguous and sd["0.weight"].flags.writeable


@pytest.mark.parametrize("name", ["views_zip.pt", "views_legacy.pt"])
def test_reads_pytorch_views(name):
    d = S.load(os.path.join(DATA, name), map_location="cpu")
    assert_same(d, expected_views())
    d["t"][0, 0] = 99  # views are materialised: no aliasing between entries
    assert d["base"][0, 0] == 0


def test_reads_file_objects_and_map_location():
    with open(os.path.join(DATA, "state_zip.pt"), "rb") as fh:
        sd = S.load(fh, map_location=lambda storage, loc: storage)
    assert_same(sd, expected_state())


# ----------------------------------------------------------------------------- save

def test_round_trip_and_layout(tmp_path):
    sd = expected_state()
    sd._metadata = collections.OrderedDict([("", {"version": 1}), ("1", {"version": 2})])
    sd["noncontig"] = np.arange(12, dtype=np.float32).reshape(3, 4).T       # a view in
    sd["bigendian"] = np.arange(3, dtype=">f8")
    sd["nested"] = {"a": [1, 2.5, "x", None, True], "b": (np.ones(2, np.int64),)}
    path = tmp_path / "rt.pt"
    S.save(sd, path)
    back = S.load(path)
    assert type(back) is collections.OrderedDict
    assert back._metadata == sd._metadata
    assert back["nested"]["a"] == [1, 2.5, "x", None, True]
    np.testing.assert_array_equal(back["nested"]["b"][0], [1, 1])
    np.testing.assert_array_equal(back["noncontig"], sd["noncontig"])
    assert back["bigendian"].dtype == np.float64
    np.testing.assert_array_equal(back["bigendian"], [0.0, 1.0, 2.0])
    want = expected_state()
    want["extra.bf16"] = want["extra.bf16"]  # written as float32 (no bfloat16 in NumPy)
    for k in want:
        np.testing.assert_array_equal(back[k], want[k])
        assert back[k].dtype == want[k].dtype

    raw = path.read_bytes()
    zf = zipfile.ZipFile(io.BytesIO(raw))
    assert zf.testzip() is None
    names = zf.namelist()
    assert names[0] == "archive/data.pkl" and "archive/version" in names
    assert zf.read("archive/version") == b"3\n" and zf.read("archive/byteorder") == b"little"
    assert sum(n.startswith("archive/data/") for n in names) == len(sd) - 1 + 1  # nested array
    for info in zf.infolist():
        assert info.compress_type == zipfile.ZIP_STORED
        nlen, elen = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
        start = info.header_offset + 30 + nlen + elen
        assert start % 64 == 0, info.filename
        assert raw[info.header_offset + 30 + nlen:][:2] == b"FB"
    first = zf.read("archive/data/0")
    assert first == sd["0.weight"].tobytes()


def test_save_accepts_array_likes_and_refuses_others(tmp_path):
    class FakeTensor:
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return self.a if dtype is None else self.a.astype(dtype)

    buf = io.BytesIO()
    S.save({"w": FakeTensor(np.eye(2, dtype=np.float32))}, buf)
    back = S.load(io.BytesIO(buf.getvalue()))
    assert type(back) is dict
    np.testing.assert_array_equal(back["w"], np.eye(2))
    with pytest.raises(TypeError, match="complex64"):
        S.save({"c": np.zeros(2, np.complex64)}, io.BytesIO())
    with pytest.raises(TypeError, match="set"):
        S.save({"s": {1, 2}}, io.BytesIO())


# ----------------------------------------------------------------------------- hand-made legacy file

@pytest.fixture
def fake_torch(monkeypatch):
    """Stand-in 'torch' modules so the stdlib Pickler writes the globals a real file holds."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    class LongStorage:
        pass

    def _rebuild_tensor_v2(*a):
        raise AssertionError("never called")

    for obj, mod in [(FloatStorage, torch), (LongStorage, torch), (_rebuild_tensor_v2, utils)]:
        obj.__module__ = mod.__name__
        obj.__qualname__ = obj.__name__
        setattr(mod, obj.__name__, obj)
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


class _T:
    """A tensor placeholder that pickles like torch's: _rebuild_tensor_v2(storage, ...)."""

    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return (sys.modules["torch._utils"]._rebuild_tensor_v2, self.args)


class _St:
    def __init__(self, stype, key, numel, view=None):
        self.pid = ("storage", stype, key, "cpu", numel, view)


def legacy_bytes(obj, storages, little=True):
    """storages: [(key, ndarray)] written after the object like torch's legacy _save."""
    f = io.BytesIO()
    order = "<" if little else ">"
    for header in (0x1950a86a20f9469cfc6c, 1001,
                   {"protocol_version": 1001, "little_endian": little,
                    "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(header, f, protocol=2)

    class P(pickle.Pickler):
        def persistent_id(self, o):
            return o.pid if isinstance(o, _St) else None

    P(f, protocol=2).dump(obj)
    pickle.dump([k for k, _ in storages], f, protocol=2)
    for _, arr in storages:
        f.write(struct.pack(order + "q", arr.size))
        f.write(arr.astype(arr.dtype.newbyteorder(order)).tobytes())
    return f.getvalue()


@pytest.mark.parametrize("little", [True, False])
def test_hand_crafted_legacy_file(fake_torch, little):
    root = np.arange(24, dtype=np.float32)
    longs = np.array([5, -6], np.int64)
    s_root = _St(fake_torch.FloatStorage, "140001", 24)
    s_view = _St(fake_torch.FloatStorage, "140001", 24, ("140002", 10, 8))  # old storage view
    s_long = _St(fake_torch.LongStorage, "140003", 2)
    obj = collections.OrderedDict([
        ("w", _T(s_root, 2, (3, 4), (1, 3))),            # column-major view, offset 2
        ("v", _T(s_view, 1, (2, 3), (3, 1))),            # inside the view: root[11:17]
        ("n", _T(s_long, 1, (), ())),
        ("meta", {"epoch": 3, "name": "ln"}),
    ])
    data = legacy_bytes(obj, [("140001", root), ("140003", longs)], little=little)
    got = S.load(io.BytesIO(data))
    np.testing.assert_array_equal(got["w"], np.lib.stride_tricks.as_strided(
        root[2:], (3, 4), (4, 12)))
    np.testing.assert_array_equal(got["v"], root[11:17].reshape(2, 3))
    assert got["n"].dtype == np.int64 and got["n"] == -6
    assert got["meta"] == {"epoch": 3, "name": "ln"}


def test_out_of_bounds_views_are_refused(fake_torch):
    root = np.arange(4, dtype=np.float32)
    s = _St(fake_torch.FloatStorage, "1", 4)
    for args in [(0, (5,), (1,)), (2, (2, 2), (1, 1)), (0, (2,), (-1,)), (-1, (1,), (1,))]:
        data = legacy_bytes({"x": _T(s, *args)}, [("1", root)])
        with pytest.raises(pickle.UnpicklingError):
            S.load(io.BytesIO(data))
    # the storage header must agree with the declared size
    bad = legacy_bytes({"x": _T(_St(fake_torch.FloatStorage, "1", 5), 0, (4,), (1,))},
                       [("1", root)])
    with pytest.raises(pickle.UnpicklingError, match="elements"):
        S.load(io.BytesIO(bad))


# ----------------------------------------------------------------------------- hostile files

def zip_with_pickle(pkl):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/version", b"3\n")
    return buf.getvalue()


def test_malicious_globals_are_rejected(tmp_path):
    marker = tmp_path / "pwned"
    cmd = "touch {}".format(marker).encode()
    evil = b"\x80\x02cos\nsystem\nq\x00X" + struct.pack("<I", len(cmd)) + cmd + b"\x85R."
    with pytest.raises(pickle.UnpicklingError, match=r"os\.system"):
        S.load(io.BytesIO(zip_with_pickle(evil)))

    class Evil:
        def __reduce__(self):
            return (eval, ("__import__('os').system('touch {}')".format(marker),))

    payload = pickle.dumps({"w": Evil()}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"(__builtin__|builtins)\.eval"):
        S.load(io.BytesIO(zip_with_pickle(payload)))
    # the legacy path uses the same unpickler, for the headers too
    legacy = pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2) + pickle.dumps(1001, protocol=2) \
        + pickle.dumps({}, protocol=2) + payload
    with pytest.raises(pickle.UnpicklingError, match=r"(__builtin__|builtins)\.eval"):
        S.load(io.BytesIO(legacy))
    with pytest.raises(pickle.UnpicklingError, match=r"(__builtin__|builtins)\.eval"):
        S.load(io.BytesIO(payload))
    assert not marker.exists()


def test_module_persistent_ids_and_junk_are_rejected():
    class P(pickle.Pickler):
        def persistent_id(self, o):
            return ("module", "Linear", "source code") if o == "mod" else None

    f = io.BytesIO()
    P(f, protocol=2).dump({"m": "mod"})
    with pytest.raises(pickle.UnpicklingError, match="module"):
        S.load(io.BytesIO(zip_with_pickle(f.getvalue())))
    with pytest.raises(pickle.UnpicklingError):
        S.load(io.BytesIO(b"this is not a pytorch file at all"))
    with pytest.raises(pickle.UnpicklingError, match="data.pkl"):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("x/other", b"")
        S.load(io.BytesIO(buf.getvalue()))


# ----------------------------------------------------------------------------- with PyTorch

def test_pytorch_reads_what_save_writes(tmp_path):
    torch = pytest.importorskip("torch")
    sd = expected_state()
    del sd["extra.bf16"]
    sd["noncontig"] = np.arange(12, dtype=np.float32).reshape(3, 4).T
    path = tmp_path / "ours.pt"
    S.save(sd, path)
    back = torch.load(str(path), weights_only=True)
    assert list(back) == list(sd)
    for k, v in sd.items():
        t = back[k]
        assert tuple(t.shape) == v.shape and str(t.dtype).replace("torch.", "") == v.dtype.name
        np.testing.assert_array_equal(t.numpy(), v)
    # and a real module accepts it
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, bias=False), torch.nn.BatchNorm2d(2))
    S.save(collections.OrderedDict((k, sd[k]) for k in m.state_dict()), path)
    m.load_state_dict(torch.load(str(path)))
    np.testing.assert_array_equal(m[0].weight.detach().numpy(), sd["0.weight"])
