"""lviv_c.load on hostile and corrupt files: every allocation is bounded by what the file can
hold (checked in a child process with a capped address space, see tests/memlimit.py), every
malformed file raises LoadError (a pickle.UnpicklingError) naming the file, and save is atomic."""
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from lviv_c import serialization as S
from memlimit import run_capped


def pickled_tensor(key, numel, offset, size, stride, stype="FloatStorage"):
    """A protocol-2 pickle of {'x': _rebuild_tensor_v2(storage, offset, size, stride, ...)}
    with any (also hostile) size and stride."""
    w = S._PickleWriter()
    w.out += b"}("
    w.str_("x")
    w.glob("torch._utils", "_rebuild_tensor_v2")
    w.out += b"(("
    w.str_("storage")
    w.glob("torch", stype)
    w.str_(key)
    w.str_("cpu")
    w.int_(numel)
    w.out += b"tQ"
    w.int_(offset)
    w.tuple_(tuple(size))
    w.tuple_(tuple(stride))
    w.out += b"\x89"
    w.ordered_dict()
    w.out += b"tRu."
    return bytes(w.out)


def pt_file(pkl, storages=(), compress=None):
    """A zip like torch.save's; ``compress``: {record name: zlib-compressed payload bytes}."""
    records = [("archive/data.pkl", pkl), ("archive/byteorder", b"little")]
    records += [("archive/data/" + k, v) for k, v in storages]
    records.append(("archive/version", b"3\n"))
    return S._zip_bytes(records)


def load_capped(tmp_path, blob, extra_mb=384):
    """Load ``blob`` in a capped child: returns ('ok', None) / ('LoadError', msg) / (other
    exception name, msg)."""
    f = tmp_path / "bomb.pt"
    f.write_bytes(blob)
    code = f"""
    from lviv_c import serialization as S
    try:
        S.load({str(f)!r})
        print(json.dumps(["ok", None]))
    except S.LoadError as e:
        print(json.dumps(["LoadError", str(e)]))
    except BaseException as e:
        print(json.dumps([type(e).__name__, str(e)]))
    """
    rc, out, err, res = run_capped(code, extra_mb=extra_mb)
    assert res is not None, (rc, out, err[-2000:])
    return res


# ----------------------------------------------------------------------------- memory bombs

def test_memo_index_bomb_is_refused_under_a_memory_cap(tmp_path):
    # LONG_BINPUT 0x04000000: the C unpickler would size its memo to 2**26+ entries (the issue's
    # 10-byte file grew the process to 1 GB)
    kind, msg = load_capped(tmp_path, b"\x80\x02K\x01r\x00\x00\x00\x04.", extra_mb=256)
    assert kind == "LoadError" and "memo index" in msg and "bomb.pt" in msg, msg
    # also inside a zip file
    kind, msg = load_capped(tmp_path, pt_file(b"\x80\x02}r\xff\xff\xff\x7f."), extra_mb=256)
    assert kind == "LoadError" and "memo index" in msg, msg


def test_stride_zero_view_cannot_expand_beyond_the_cap(tmp_path):
    six = np.arange(6, dtype=np.float32).tobytes()          # a 24-byte storage
    # 2**27 floats = 512 MB from 24 bytes
    blob = pt_file(pickled_tensor("0", 6, 0, (1 << 27,), (0,)), [("0", six)])
    kind, msg = load_capped(tmp_path, blob, extra_mb=384)
    assert kind == "LoadError" and "refused" in msg, msg
    # sizes whose int64 product wraps around (2**33 * 2**31 = 2**64 -> 0) must not slip through
    blob = pt_file(pickled_tensor("0", 6, 0, (1 << 33, 1 << 31), (0, 0)), [("0", six)])
    kind, msg = load_capped(tmp_path, blob, extra_mb=384)
    assert kind == "LoadError", msg
    # many tensors each within the cap, together beyond it
    inner = pickled_tensor("0", 6, 0, (1 << 22,), (0,))   # 16 MB each
    body = inner[2:inner.index(b"u.")]                      # the "(X..x..R" items
    blob = pt_file(b"\x80\x02}(" + body.lstrip(b"(") * 40 + b"u.", [("0", six)])
    kind, msg = load_capped(tmp_path, blob, extra_mb=384)
    assert kind == "LoadError" and "refused" in msg, msg


def test_a_stride_zero_view_within_the_cap_still_loads(tmp_path):
    six = np.arange(6, dtype=np.float32).tobytes()
    got = S.load(io.BytesIO(pt_file(pickled_tensor("0", 6, 2, (4, 3), (0, 1)),
                                    [("0", six)])))
    np.testing.assert_array_equal(got["x"], np.broadcast_to(np.arange(2, 5, dtype=np.float32),
                                                            (4, 3)))


def test_deflate_bomb_is_refused_before_decompression(tmp_path):
    # a ~0.5 MB zip whose storage record inflates to 512 MB; the cap leaves 256 MB
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        out.writestr("archive/data.pkl", pickled_tensor("0", 1 << 27, 0, (1 << 27,), (1,)))
        out.writestr("archive/version", b"3\n")
        info = zipfile.ZipInfo("archive/data/0")
        info.compress_type = zipfile.ZIP_DEFLATED
        with out.open(info, "w", force_zip64=True) as fh:
            z = bytes(16 << 20)
            for _ in range(32):
                fh.write(z)
    blob = buf.getvalue()
    assert len(blob) < (4 << 20)
    kind, msg = load_capped(tmp_path, blob, extra_mb=256)
    assert kind == "LoadError" and "compressed" in msg, msg


def test_record_sizes_are_checked_against_the_directory():
    # a storage record shorter than the storage it should hold
    blob = pt_file(pickled_tensor("0", 100, 0, (100,), (1,)), [("0", b"\0" * 8)])
    with pytest.raises(S.LoadError, match="holds 8 bytes, expected 400"):
        S.load(io.BytesIO(blob))
    # a directory entry that claims more bytes than the file has
    blob = bytearray(pt_file(pickled_tensor("0", 2, 0, (2,), (1,)), [("0", b"\0" * 8)]))
    cd = blob.index(b"archive/data/0", blob.index(b"PK\x01\x02")) - 46
    blob[cd + 20:cd + 28] = (1 << 31).to_bytes(4, "little") * 2
    with pytest.raises(S.LoadError, match="claims"):
        S.load(io.BytesIO(bytes(blob)))


# ----------------------------------------------------------------------------- one error type

@pytest.mark.parametrize("blob, what", [
    (b"", "empty file"),                                        # EOFError('') before
    (b"\x80\x02}q\x00(X\x01\x00\x00", "truncated pickle"),      # EOFError
    (b"PK\x03\x04" + b"\0" * 40, "zip without directory"),      # BadZipFile
    (b"\x80\x02X\x02\x00\x00\x00\xff\xfe.", "bad utf-8"),       # UnicodeDecodeError
    (b"\x80\x02L" + b"9" * 5000 + b"L\n.", "huge decimal long"),  # ValueError
    (b"\x80\x02\xff.", "unknown opcode"),                       # UnpicklingError w/o name
    (b"\x80\x02ctorch\nSize\n)\x85R.", "Size of nothing"),     # TypeError
    (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x04\x00\x00\x00zlib\x86R.",
     "codec other than latin1"),
])
def test_every_malformed_file_raises_load_error_naming_it(tmp_path, blob, what):
    f = tmp_path / "bad.pt"
    f.write_bytes(blob)
    with pytest.raises(pickle.UnpicklingError) as ei:
        S.load(str(f))
    assert isinstance(ei.value, S.LoadError), what
    assert str(ei.value).startswith("lviv_c.load: " + str(f) + ": "), str(ei.value)
    assert len(str(ei.value)) > len("lviv_c.load: " + str(f) + ": ") + 5


def test_bad_crc_and_infinite_sizes():
    blob = bytearray(pt_file(pickled_tensor("0", 2, 0, (2,), (1,)), [("0", b"\1" * 8)]))
    i = blob.index(b"\1" * 8)
    blob[i] = 2                                       # CRC mismatch -> BadZipFile before
    with pytest.raises(S.LoadError, match="BadZipFile"):
        S.load(io.BytesIO(bytes(blob)))
    pkl = pickled_tensor("0", 2, 0, (2,), (1,))
    assert b"(K\x02t(K\x01t" in pkl
    pkl = pkl.replace(b"(K\x02t(K\x01t", b"(G\x7f\xf0" + b"\0" * 6 + b"t(K\x01t")  # (inf,)
    with pytest.raises(S.LoadError, match="malformed tensor size"):
        S.load(io.BytesIO(pt_file(pkl, [("0", b"\1" * 8)])))


def test_load_refuses_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "weights.pt"
    os.mkfifo(fifo)
    code = f"""
    from lviv_c import serialization as S
    try:
        S.load({str(fifo)!r})
    except ValueError as e:
        print(json.dumps(str(e)))
    """
    rc, out, err, res = run_capped(code, timeout=60)
    assert res is not None and "FIFO" in res and str(fifo) in res, (out, err)


# ----------------------------------------------------------------------------- atomic save

def _save_under_fsize_limit(path, limit):
    code = f"""
    import resource, signal
    from lviv_c import serialization as S
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
    try:
        S.save({{"w": np.ones(100000, np.float32)}}, {str(path)!r})
        print(json.dumps("saved"))
    except OSError as e:
        print(json.dumps("OSError: " + str(e)))
    """
    rc, out, err, res = run_capped(code, timeout=120)
    assert res is not None, (out, err)
    return res


def test_save_is_atomic_when_the_write_fails(tmp_path):
    path = tmp_path / "ckpt.pt"
    old = {"w": np.arange(5, dtype=np.float32)}
    S.save(old, path)
    before = path.read_bytes()
    res = _save_under_fsize_limit(path, 64 * 1024)      # the new file needs ~400 KB
    assert res.startswith("OSError"), res
    assert path.read_bytes() == before                   # the old checkpoint is intact
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]   # and no temporary file is left
    np.testing.assert_array_equal(S.load(path)["w"], old["w"])
    # a successful save replaces the file and keeps its permissions
    os.chmod(path, 0o640)
    S.save({"w": np.zeros(3, np.float32)}, path)
    assert (os.stat(path).st_mode & 0o777) == 0o640
    np.testing.assert_array_equal(S.load(path)["w"], np.zeros(3))
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]


def test_save_refuses_special_files_and_folders(tmp_path):
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="FIFO"):
        S.save({"w": np.ones(2, np.float32)}, fifo)
    assert os.path.exists(fifo) and not os.path.isfile(fifo)
    with pytest.raises(IsADirectoryError):
        S.save({"w": np.ones(2, np.float32)}, tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        S.save({"w": np.ones(2, np.float32)}, tmp_path / "file" / "w.pt")
    # a symlink is written through, as open(path, 'wb') would
    target = tmp_path / "real.pt"
    S.save({"w": np.ones(2, np.float32)}, target)
    link = tmp_path / "link.pt"
    os.symlink(target, link)
    S.save({"w": np.zeros(2, np.float32)}, link)
    assert os.path.islink(link)
    np.testing.assert_array_equal(S.load(target)["w"], [0, 0])
