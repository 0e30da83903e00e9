"""Fuzz the C .npy reader with mutated headers, truncations and random bytes: it must never
crash or read out of bounds (run under ASan by scripts/asan-test); it returns an array or raises
one of the documented exceptions. When it returns, the result agrees with the bytes on disk."""
import os

import numpy as np
import pytest

from lviv_c import _C

ALLOWED = (ValueError, TypeError, FileNotFoundError, OSError)
N_ITER = int(os.environ.get("LVIV_FUZZ_ITERS", "1500"))


def seeds():
    out = []
    for dt in ["<f4", ">f8", "|i1", "<i8", ">u2", "|b1", "<U5", ">U3"]:
        a = np.arange(6).reshape(2, 3)
        a = a.astype(str).astype(dt) if "U" in dt else a.astype(dt)
        for ver in [(1, 0), (2, 0), (3, 0)]:
            import io
            b = io.BytesIO()
            np.lib.format.write_array(b, a, version=ver)
            out.append(b.getvalue())
    return out


def check_result(f, got):
    """A successful load must describe exactly bytes that exist in the file."""
    size = os.path.getsize(f)
    h = _C.npy_header(f)
    assert got.shape == h["shape"]
    assert h["offset"] + got.nbytes <= size
    if got.dtype.kind != "U":
        c = _C.npy_load_f32(f)
        assert c.shape == got.shape
        with np.errstate(all="ignore"):
            np.testing.assert_array_equal(c, got.astype(np.float32))


def mutate(rng, blob):
    b = bytearray(blob)
    op = rng.integers(7) if len(b) > 12 else 1
    if op == 0:  # flip bytes in the preamble + header
        for _ in range(rng.integers(1, 4)):
            i = rng.integers(min(len(b), 140))
            b[i] = rng.integers(256)
    elif op == 1:  # truncate anywhere
        b = b[:rng.integers(len(b) + 1)]
    elif op == 2:  # header length field set to a random value
        if b[6:7] == b"\x01":
            b[8:10] = int(rng.integers(65536)).to_bytes(2, "little")
        else:
            b[8:12] = int(rng.integers(2**32)).to_bytes(4, "little")
    elif op == 3:  # replace a header character with a header-ish one
        i = int(rng.integers(10, min(len(b), 120)))
        b[i] = ord(rng.choice(list("{}()[],:' \"0123456789LTFU<>|fiubO-\n")))
    elif op == 4:  # grow the shape
        s = bytes(b).replace(b"(2, 3)", f"({rng.integers(0, 2**62)}, 3)".encode(), 1)
        b = bytearray(s)
    elif op == 5:  # random bytes after a valid magic
        b = bytearray(b[:8] + rng.integers(0, 256, size=rng.integers(0, 200)).astype(
            np.uint8).tobytes())
    else:  # change the descr
        d = rng.choice(["<f8", ">f4", "|O", "<U0", "<U99999999", "<i16", "<f", "", "<", "|b2",
                        "<U-1", "?", "=f4"])
        s = bytes(b)
        for old in [b"<f4", b">f8", b"|i1", b"<i8", b">u2", b"|b1", b"<U5", b">U3"]:
            s = s.replace(b"'" + old + b"'", b"'" + d.encode() + b"'", 1)
        b = bytearray(s)
    return bytes(b)


def test_fuzz_npy_headers(tmp_path):
    rng = np.random.default_rng(1234)
    base = seeds()
    f = str(tmp_path / "fz.npy")
    outcomes = {"ok": 0, "err": 0}
    for it in range(N_ITER):
        blob = mutate(rng, base[it % len(base)])
        if rng.random() < 0.3:
            blob = mutate(rng, blob)
        with open(f, "wb") as fh:
            fh.write(blob)
        try:
            got = _C.npy_load(f)
        except ALLOWED as e:
            assert str(e).startswith(f), str(e)
            outcomes["err"] += 1
            continue
        outcomes["ok"] += 1
        check_result(f, got)
    # the loop exercised both paths (most mutations of the header are refused, as by NumPy:
    # anything but padding after the closing brace of the header dict is junk)
    assert outcomes["ok"] > N_ITER // 100 and outcomes["err"] > 200, outcomes


def test_every_truncation(tmp_path):
    f = str(tmp_path / "t.npy")
    for blob in seeds()[::8]:
        for n in range(len(blob)):
            with open(f, "wb") as fh:
                fh.write(blob[:n])
            with pytest.raises(ValueError):
                _C.npy_load(f)


def test_fuzz_folder_loader(tmp_path):
    """Corrupt one file of a folder at a time: the folder loader raises naming that file."""
    rng = np.random.default_rng(7)
    d = tmp_path / "r"
    d.mkdir()
    good = []
    for i in range(12):
        np.save(d / f"{i}.npy", np.full(5, float(i)))
        good.append((d / f"{i}.npy").read_bytes())
    for it in range(150):
        i = int(rng.integers(12))
        blob = mutate(rng, good[i])
        (d / f"{i}.npy").write_bytes(blob)
        try:
            block, _, _ = _C.load_npy_dir(str(d), nthreads=3)
        except ALLOWED as e:
            assert f"{i}.npy" in str(e) or "0.npy" in str(e), str(e)
        else:
            assert block.shape == (12, 5)
        (d / f"{i}.npy").write_bytes(good[i])
