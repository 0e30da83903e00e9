"""The C .npy parser against np.load: every dtype, version, byte order and memory order, and
every malformed-input case with its exception type and message."""
import io
import os
import struct

import numpy as np
import pytest

from lviv_c import _C

DTYPES = ["f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1", "U1", "U7"]
VERSIONS = [(1, 0), (2, 0), (3, 0)]


def sample(dt, shape=(3, 4)):
    rng = np.random.default_rng(abs(hash(dt)) % 1000)
    n = int(np.prod(shape))
    if dt.startswith("U"):
        words = ["", "a", "V1", "L2/3", "train", "ünï", "test\u2603x"]
        width = int(dt[1:])
        return np.array([words[i % len(words)][:width] for i in range(n)],
                        dtype="<" + dt).reshape(shape)
    if dt == "b1":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dt[0] == "f":
        return rng.normal(size=shape).astype(dt) * 1e3
    info = np.iinfo(np.dtype(dt))
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=np.dtype(dt))


def write(path, a, version=None):
    with open(path, "wb") as fh:
        np.lib.format.write_array(fh, a, version=version, allow_pickle=False)
    return str(path)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("version", VERSIONS)
def test_npy_load_matches_np_load(tmp_path, dt, order, version):
    a = sample(dt).astype(np.dtype(dt).newbyteorder(order))
    f = write(tmp_path / "a.npy", a, version)
    ref = np.load(f)
    got = _C.npy_load(f)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    assert got.dtype.byteorder == ref.dtype.byteorder
    np.testing.assert_array_equal(got, ref)
    if dt.startswith("U"):
        with pytest.raises(TypeError, match="string"):
            _C.npy_load_f32(f)
    else:
        c = _C.npy_load_f32(f)
        assert c.dtype == np.float32 and c.flags.c_contiguous
        np.testing.assert_array_equal(c, ref.astype(np.float32))


@pytest.mark.parametrize("dt", ["f4", "f8", "i2", "u8", "U3", "b1"])
def test_fortran_order(tmp_path, dt):
    a = np.asfortranarray(sample(dt, (3, 4, 5)).astype(">" + dt if dt != "b1" else dt))
    f = write(tmp_path / "f.npy", a)
    assert _C.npy_header(f)["fortran_order"] is True
    got = _C.npy_load(f)
    np.testing.assert_array_equal(got, np.load(f))
    assert got.flags.f_contiguous
    if not dt.startswith("U"):
        c = _C.npy_load_f32(f)
        assert c.flags.c_contiguous
        np.testing.assert_array_equal(c, a.astype(np.float32))


@pytest.mark.parametrize("shape", [(), (0,), (5,), (3, 0), (2, 1, 3, 1), (1, 1, 1, 1, 1, 1, 1, 1, 2)])
def test_shapes(tmp_path, shape):
    a = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    f = write(tmp_path / "s.npy", a)
    got = _C.npy_load(f)
    assert got.shape == shape
    np.testing.assert_array_equal(got, a)
    np.testing.assert_array_equal(_C.npy_load_f32(f), a.astype(np.float32))


def test_header_info(tmp_path):
    f = write(tmp_path / "h.npy", np.zeros((5335,), ">f8"))
    h = _C.npy_header(f)
    assert h == {"descr": ">f8", "dtype": "float64", "shape": (5335,), "fortran_order": False,
                 "offset": 128}
    f = write(tmp_path / "u.npy", np.array(["train"], "<U10"), version=(3, 0))
    h = _C.npy_header(f)
    assert h["descr"] == "<U10" and h["dtype"] == "<U10" and h["offset"] % 64 == 0


def test_pathlike_and_special_values(tmp_path):
    a = np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45, 3.4e38, 1e300], dtype="<f8")
    p = tmp_path / "v.npy"
    write(p, a)
    np.testing.assert_array_equal(_C.npy_load(p), a)  # os.PathLike accepted
    with np.errstate(over="ignore"):
        ref = a.astype(np.float32)
    np.testing.assert_array_equal(_C.npy_load_f32(p), ref)


def test_int64_extremes_to_float32(tmp_path):
    a = np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max, -1, 2**53 + 1], ">i8")
    f = write(tmp_path / "i.npy", a)
    np.testing.assert_array_equal(_C.npy_load_f32(f), a.astype(np.float32))
    a = np.array([np.iinfo(np.uint64).max, 0, 7], "<u8")
    f = write(tmp_path / "u.npy", a)
    np.testing.assert_array_equal(_C.npy_load_f32(f), a.astype(np.float32))


def test_load_f32_expectations(tmp_path):
    f = write(tmp_path / "r.npy", np.zeros(5334, np.float32))
    assert _C.npy_load_f32(f, dtype="float32", shape=(5334,)).shape == (5334,)
    with pytest.raises(ValueError) as e:
        _C.npy_load_f32(f, dtype=np.float64, shape=(5335,))
    assert str(e.value) == f"{f}: expected float64 (5335,), found float32 (5334,)"
    with pytest.raises(ValueError, match=r"expected float32 \(2, 2667\), found float32 \(5334,\)"):
        _C.npy_load_f32(f, shape=(2, 2667))
    # byte order does not matter for the expectation
    f = write(tmp_path / "b.npy", np.ones(3, ">f8"))
    np.testing.assert_array_equal(_C.npy_load_f32(f, dtype="<f8", shape=[3]), np.ones(3))


# ------------------------------------------------------------------------- malformed files

def raw_npy(header, data=b"", version=(1, 0), magic=b"\x93NUMPY", hlen=None):
    h = header.encode("latin1")
    if hlen is None:
        hlen = len(h)
    if version[0] == 1:
        pre = magic + bytes(version) + struct.pack("<H", hlen)
    else:
        pre = magic + bytes(version) + struct.pack("<I", hlen)
    return pre + h + data


def put(tmp_path, blob, name="bad.npy"):
    p = tmp_path / name
    p.write_bytes(blob)
    return str(p)


GOOD = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }"


def test_raw_writer_is_right(tmp_path):
    f = put(tmp_path, raw_npy(GOOD, np.arange(2.0).tobytes()))
    np.testing.assert_array_equal(_C.npy_load(f), [0.0, 1.0])
    np.testing.assert_array_equal(np.load(f), [0.0, 1.0])
    # dict keys in any order, double quotes, Python-2 longs, no trailing comma
    f = put(tmp_path, raw_npy('{"shape": (1L, 2L), "fortran_order": False, "descr": "<i4"}\n',
                              np.arange(2, dtype="<i4").tobytes()))
    np.testing.assert_array_equal(_C.npy_load(f), [[0, 1]])


BAD = [
    # (blob, exception, message regex)
    (b"", ValueError, r"not an \.npy file \(expected the \\x93NUMPY magic, file has 0 bytes\)"),
    (b"PK\x03\x04" + b"\0" * 40, ValueError, "not an .npy file"),
    (b"\x93NUMPY\x01", ValueError, "not an .npy file"),
    (raw_npy(GOOD, version=(4, 0)), ValueError, r"unsupported \.npy format version 4\.0"),
    (raw_npy(GOOD, version=(2, 0))[:11], ValueError, "truncated .npy header"),
    (raw_npy(GOOD, hlen=5000), ValueError, r"truncated \.npy header: it claims 5000 bytes"),
    (raw_npy(GOOD, version=(2, 0), hlen=0xFFFFFFFF), ValueError, "truncated .npy header"),
    (raw_npy(GOOD, b"\0" * 15), ValueError,
     r"truncated \.npy data: header says float64 \(2,\) = 16 bytes, the file has 15"),
    (raw_npy("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", b"\0" * 16), ValueError,
     r"object arrays \('\|O'\) hold pickled Python objects"),
    (raw_npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }"), ValueError,
     "structured dtypes are not supported"),
    (raw_npy("{'descr': '<c16', 'fortran_order': False, 'shape': (2,), }"), ValueError,
     "unsupported dtype '<c16'"),
    (raw_npy("{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }"), ValueError,
     "unsupported dtype '<f2'"),
    (raw_npy("{'descr': '|S5', 'fortran_order': False, 'shape': (2,), }"), ValueError,
     "unsupported dtype '|S5'"),
    (raw_npy("{'descr': '<i3', 'fortran_order': False, 'shape': (2,), }"), ValueError,
     "unsupported dtype '<i3'"),
    (raw_npy("{'descr': '<f8', 'fortran_order': Maybe, 'shape': (2,), }"), ValueError,
     "fortran_order must be True or False"),
    (raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (-2,), }"), ValueError,
     "shape must be a tuple of non-negative integers"),
    (raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': [2], }"), ValueError,
     r"expected '\(' to open the shape tuple"),
    (raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,), }"),
     ValueError, "shape entry too large"),
    (raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }"),
     ValueError, r"shape \(4294967296, 4294967296\) is too large"),
    (raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3037000499, 3037000499), }"),
     ValueError, "the data would be too large|truncated .npy data|is too large"),
    (raw_npy("{'descr': '<U0', 'fortran_order': False, 'shape': (0, 4294967296, 4294967296), }"),
     ValueError, r"shape \(0, 4294967296, 4294967296\) is too large"),
    (raw_npy("{'descr': '<f8', 'fortran_order': False, }"), ValueError, "missing 'shape'"),
    (raw_npy("{'descr': '<f8', 'shape': (2,), }"), ValueError, "missing 'fortran_order'"),
    (raw_npy("{'fortran_order': False, 'shape': (2,)}"), ValueError, "missing 'descr'"),
    (raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), 'extra': 1}"), ValueError,
     "unexpected key 'extra'"),
    (raw_npy("{'descr': '<f8' 'fortran_order': False}"), ValueError, "expected ',' or '}'"),
    (raw_npy("{'descr: '<f8', 'fortran_order': False, 'shape': (2,), }"), ValueError,
     "malformed .npy header"),
    (raw_npy("'descr': '<f8'"), ValueError, r"expected '\{'"),
    (raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2,"), ValueError,
     "malformed .npy header"),
    (raw_npy("{'descr': '<f8\\n', 'fortran_order': False, 'shape': (2,), }"), ValueError,
     "unsupported descr string"),
    (raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (" + "1," * 40 + "), }"),
     ValueError, "more than 32 dimensions"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_files(tmp_path, case):
    blob, exc, msg = BAD[case]
    f = put(tmp_path, blob)
    with pytest.raises(exc, match=msg) as e:
        _C.npy_load(f)
    assert str(e.value).startswith(f + ": ")
    with pytest.raises(exc, match=msg):
        _C.npy_header(f)
    with pytest.raises(exc, match=msg):
        _C.npy_load_f32(f)


def test_object_array_from_np_save(tmp_path):
    p = str(tmp_path / "o.npy")
    np.save(p, np.array([1, "a", None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickled"):
        _C.npy_load(p)


def test_missing_and_unreadable(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.npy: no such file"):
        _C.npy_load(str(tmp_path / "nope.npy"))
    with pytest.raises(FileNotFoundError):
        _C.npy_load(str(tmp_path / "nodir" / "x.npy"))
    with pytest.raises(OSError, match="not a regular file"):
        _C.npy_load(str(tmp_path))
    with pytest.raises(TypeError):
        _C.npy_load(3)


def test_trailing_bytes_are_ignored_like_np_load(tmp_path):
    buf = io.BytesIO()
    np.save(buf, np.arange(3, dtype="<i2"))
    f = put(tmp_path, buf.getvalue() + b"junk")
    np.testing.assert_array_equal(_C.npy_load(f), np.load(f))


# ------------------------------------------------------------------------- folder loads

def test_load_npy_dir(tmp_path):
    d = tmp_path / "resp"
    d.mkdir()
    rows = np.random.default_rng(0).normal(size=(70, 9))
    for i, r in enumerate(rows):
        np.save(d / f"{i}.npy", r.astype(">f8" if i % 3 else "<f8"))
    (d / "notes.txt").write_text("ignored")
    (d / "07.npy").write_bytes(b"ignored: not a canonical index")
    assert _C.count_npy_files(str(d)) == 70
    block, descr, shape = _C.load_npy_dir(str(d))
    assert descr == "<f8" and shape == (9,)
    np.testing.assert_array_equal(block, rows.astype(np.float32))
    block, _, _ = _C.load_npy_dir(str(d), n=5, nthreads=1)
    np.testing.assert_array_equal(block, rows[:5].astype(np.float32))
    with pytest.raises(FileNotFoundError, match=r"resp/70\.npy: no such file"):
        _C.load_npy_dir(str(d), n=71)
    e = tmp_path / "empty"
    e.mkdir()
    with pytest.raises(FileNotFoundError, match="no .npy files"):
        _C.load_npy_dir(str(e))
    s = tmp_path / "str"
    s.mkdir()
    np.save(s / "0.npy", np.array(["a"]))
    with pytest.raises(TypeError, match="string"):
        _C.load_npy_dir(str(s))
