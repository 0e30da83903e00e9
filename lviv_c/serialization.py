"""Read and write PyTorch state-dict files (``.pt`` / ``.pth``) without PyTorch.

``load(path)`` returns what ``torch.load`` would, with every tensor replaced by a NumPy array:
usually an ``OrderedDict`` ``{name: ndarray}`` (its ``_metadata`` attribute, which
``load_state_dict`` reads for version numbers, is kept). ``save(state_dict, path)`` writes a dict
of arrays so that ``torch.load`` (also with ``weights_only=True``) reads it back as tensors.

Security: ``load`` never runs code from the file. The pickle is read by an ``Unpickler`` whose
``find_class`` knows only the few names a state dict refers to (``collections.OrderedDict``, the
``torch._utils._rebuild_*`` functions, the ``torch.*Storage`` types, ``torch.Size``, torch dtypes,
``_codecs.encode``), each mapped to a NumPy implementation here; any other global (``os.system``,
``builtins.eval``, a pickled ``nn.Module`` class, ...) raises ``pickle.UnpicklingError`` naming it.
Tensor views are bounds-checked against their storage before they are materialised.

File formats
------------
Zip format (``torch.save`` since PyTorch 1.6), an uncompressed ("stored") zip archive whose
entries all sit in one top-level folder (PyTorch names it after the file; ``save`` uses
``archive``)::

    archive/data.pkl       the object, pickle protocol 2; a tensor is
                           torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
                                                           requires_grad, backward_hooks)
                           and ``storage`` is a persistent id
                           ('storage', torch.FloatStorage, '<key>', 'cpu', numel)
    archive/byteorder      b'little' (optional; b'big' means the storages are big-endian)
    archive/data/<key>     the raw bytes of storage <key>: numel * element size
    archive/version        b'3\\n' (newer PyTorch also writes .format_version,
                           .storage_alignment, .data/serialization_id; all optional)

Every entry's data starts at a multiple of 64 bytes from the start of the file: the local file
header carries an extra field with id ``b'FB'`` whose payload is ``b'Z'`` padding (what PyTorch's
writer does, so storages can be memory-mapped). Sizes and CRC-32 are in the local headers (no
data descriptors), no ZIP64: files up to 4 GiB.

Legacy format (``torch.save(..., _use_new_zipfile_serialization=False)`` and PyTorch < 1.6): a
plain concatenation of pickles and raw storages::

    pickle  0x1950a86a20f9469cfc6c              magic number
    pickle  1001                                protocol version
    pickle  {'protocol_version': 1001, 'little_endian': True, 'type_sizes': {...}}
    pickle  the object; storages are persistent ids
            ('storage', torch.FloatStorage, '<key>', location, numel, view_metadata)
            with view_metadata None or (view_key, offset, numel) for a view into storage <key>
    pickle  [keys of the storages that follow, in file order]
    per key: int64 little-endian numel, then numel * element size raw bytes

The even older tar-based format (PyTorch < 0.4) is not read.
"""
import codecs
import collections
import io
import os
import pickle
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Mapping

import numpy as np

__all__ = ["load", "save", "atomic_write"]

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001
_ALIGN = 64
_MAX_EXPANDED_BYTES = 1 << 30  # a stride-0 (expanded) tensor larger than its storage: cap

# storage type name -> NumPy dtype of its elements (little-endian); bfloat16 is read as uint16
# and widened to float32.
_STORAGES = {
    "DoubleStorage": np.dtype("<f8"), "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"), "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"), "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"), "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"), "BoolStorage": np.dtype("?"),
    "UntypedStorage": np.dtype("u1"),
}
_STORAGE_OF_DTYPE = {
    np.dtype("float64"): "DoubleStorage", np.dtype("float32"): "FloatStorage",
    np.dtype("float16"): "HalfStorage", np.dtype("int64"): "LongStorage",
    np.dtype("int32"): "IntStorage", np.dtype("int16"): "ShortStorage",
    np.dtype("int8"): "CharStorage", np.dtype("uint8"): "ByteStorage",
    np.dtype("bool"): "BoolStorage",
}
# torch dtype names (as pickled for _rebuild_tensor_v3) -> storage type names
_TORCH_DTYPES = {
    "float64": "DoubleStorage", "double": "DoubleStorage", "float32": "FloatStorage",
    "float": "FloatStorage", "float16": "HalfStorage", "half": "HalfStorage",
    "bfloat16": "BFloat16Storage", "int64": "LongStorage", "long": "LongStorage",
    "int32": "IntStorage", "int": "IntStorage", "int16": "ShortStorage", "short": "ShortStorage",
    "int8": "CharStorage", "uint8": "ByteStorage", "bool": "BoolStorage",
}


# ============================================================================ reading

class _StorageType:
    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGES[name]


class _TorchDType:
    def __init__(self, name):
        self.storage = _TORCH_DTYPES[name]


class _Storage:
    """A flat storage: ``array`` is 1-D with the storage's element dtype (None while scanning)."""

    def __init__(self, stype, numel, array=None):
        self.stype, self.numel, self.array = stype, int(numel), array


def _err(msg):
    return pickle.UnpicklingError("lviv_c.load: " + msg)


def _finish(arr, stype_name, big_endian):
    """Storage elements (read with their file byte order) -> native array; bfloat16 widened
    to float32."""
    if big_endian and arr.dtype.itemsize > 1:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if stype_name == "BFloat16Storage":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr


def _view(storage, offset, size, stride, dtype_storage=None):
    """Materialise the strided view (offset, size, stride in elements) of ``storage``."""
    if storage.array is None:      # scanning pass of the legacy reader
        return None
    try:
        size = tuple(int(s) for s in size)
        stride = tuple(int(s) for s in stride)
        offset = int(offset)
    except (TypeError, ValueError):
        raise _err("malformed tensor size/stride") from None
    arr = storage.array
    if dtype_storage is not None and dtype_storage != storage.stype.name:
        # _rebuild_tensor_v3: untyped bytes reinterpreted as the tensor's dtype
        raw = arr.view(np.uint8)
        dt = _STORAGES[dtype_storage]
        if raw.size % dt.itemsize:
            raise _err("storage of {} bytes is not a whole number of {}".format(raw.size, dt))
        arr = _finish(raw.view(dt), dtype_storage, False)
    if len(size) != len(stride):
        raise _err("tensor size {} and stride {} differ in length".format(size, stride))
    if any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0:
        raise _err("negative size, stride or offset in tensor ({}, {}, {})".format(
            size, stride, offset))
    n = int(np.prod(size, dtype=np.int64)) if size else 1
    if n == 0:
        return np.empty(size, dtype=arr.dtype)
    last = offset + sum((s - 1) * t for s, t in zip(size, stride))
    if last >= arr.size:
        raise _err("tensor view (offset {}, size {}, stride {}) reaches element {} of a storage "
                   "of {} elements".format(offset, size, stride, last, arr.size))
    if n > arr.size and n * arr.dtype.itemsize > _MAX_EXPANDED_BYTES:
        raise _err("expanded tensor of {} elements from a storage of {}: refused".format(
            n, arr.size))
    item = arr.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(arr[offset:], shape=size,
                                           strides=tuple(t * item for t in stride))
    return np.array(view, copy=True)


def _rebuild_tensor(storage, storage_offset, size, stride, *rest):
    if not isinstance(storage, _Storage):
        raise _err("tensor rebuilt from something that is not a storage")
    return _view(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    if not isinstance(storage, _Storage) or not isinstance(dtype, _TorchDType):
        raise _err("malformed _rebuild_tensor_v3 call")
    return _view(storage, storage_offset, size, stride, dtype_storage=dtype.storage)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data


class _Fresh:
    """A fresh callable per ``find_class`` hit, so a BUILD opcode in a hostile pickle can only
    mutate a throwaway object, never a function of this module."""
    __slots__ = ("fn", "__dict__")

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)


def _torch_size(*args):
    return tuple(*args)


_ALLOWED_FUNCS = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): _torch_size,
    ("_codecs", "encode"): codecs.encode,   # protocol-2 pickles spell bytes this way
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, storage_loader):
        super().__init__(file, encoding="utf-8")
        self._storage_loader = storage_loader

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGES:
            return _StorageType(name)
        if module == "torch.storage" and name in ("UntypedStorage", "_LegacyStorage"):
            return _StorageType("UntypedStorage")
        if module == "torch" and name in _TORCH_DTYPES:
            return _TorchDType(name)
        fn = _ALLOWED_FUNCS.get((module, name))
        if fn is not None:
            return _Fresh(fn)
        raise _err("global '{}.{}' is not allowed: only state dicts (tensors, numbers, strings "
                   "in dicts/lists/tuples) can be loaded; to load a whole pickled model use "
                   "PyTorch and save its state_dict() instead".format(module, name))

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid:
            raise _err("unexpected persistent id {!r}".format(pid))
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            raise _err("persistent id of kind {!r} (a pickled module's source?) is not "
                       "supported".format(kind))
        return self._storage_loader(pid[1:])


def _storage_args(args):
    if len(args) < 4:
        raise _err("malformed storage id {!r}".format(args))
    stype, key, _location, numel = args[:4]
    if isinstance(stype, _TorchDType):
        stype = _StorageType(stype.storage)
    if not isinstance(stype, _StorageType):
        raise _err("storage id names no storage type: {!r}".format(args))
    if isinstance(key, bytes):
        key = key.decode("ascii")
    try:
        numel = int(numel)
    except (TypeError, ValueError):
        raise _err("malformed storage size {!r}".format(numel)) from None
    if numel < 0:
        raise _err("negative storage size")
    return stype, str(key), numel, (args[4] if len(args) > 4 else None)


def _load_zip(data):
    zf = zipfile.ZipFile(io.BytesIO(data))
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if not pkl:
        raise _err("zip file without a <archive>/data.pkl record: not a PyTorch file")
    prefix = pkl[0][: -len("data.pkl")]
    big_endian = False
    if prefix + "byteorder" in names:
        order = zf.read(prefix + "byteorder")
        if order not in (b"little", b"big"):
            raise _err("unknown byteorder {!r}".format(order))
        big_endian = order == b"big"
    cache = {}

    def storage_loader(args):
        stype, key, numel, _ = _storage_args(args)
        if key not in cache:
            name = prefix + "data/" + key
            if name not in names:
                raise _err("missing storage record {!r}".format(name))
            raw = zf.read(name)
            dt = stype.dtype.newbyteorder(">") if big_endian else stype.dtype
            if len(raw) != numel * dt.itemsize:
                raise _err("storage {} holds {} bytes, expected {} x {}".format(
                    key, len(raw), numel, dt.itemsize))
            arr = np.frombuffer(raw, dtype=dt)
            cache[key] = _Storage(stype, numel, _finish(arr, stype.name, big_endian))
        return cache[key]

    return _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), storage_loader).load()


def _load_legacy(data):
    f = io.BytesIO(data)

    def no_storage(args):
        raise _err("storage in a legacy header")

    def header():
        return _RestrictedUnpickler(f, no_storage).load()

    try:
        magic = header()
    except Exception as e:  # not a pickle at all
        raise _err("not a PyTorch file (neither zip nor legacy pickle): {}".format(e)) from None
    if magic != _LEGACY_MAGIC:
        raise _err("invalid magic number: not a PyTorch file")
    if header() != _LEGACY_PROTOCOL:
        raise _err("unsupported legacy protocol version")
    sys_info = header()
    little = True if not isinstance(sys_info, dict) else sys_info.get("little_endian", True)
    start = f.tell()

    # pass 1: run through the main pickle to reach the storages that follow it
    declared = {}

    def scan_loader(args):
        stype, key, numel, view = _storage_args(args)
        declared.setdefault(key, (stype, numel))
        return _Storage(stype, numel)

    _RestrictedUnpickler(f, scan_loader).load()
    keys = _RestrictedUnpickler(f, no_storage).load()
    if not isinstance(keys, list):
        raise _err("malformed storage key list")
    roots = {}
    for key in keys:
        key = key.decode("ascii") if isinstance(key, bytes) else str(key)
        if key not in declared:
            raise _err("storage {!r} in the file is not referenced".format(key))
        stype, numel = declared[key]
        head = f.read(8)
        if len(head) != 8:
            raise _err("file ends inside storage {!r}".format(key))
        (n,) = struct.unpack("<q" if little else ">q", head)
        if n != numel:
            raise _err("storage {!r} has {} elements, expected {}".format(key, n, numel))
        dt = stype.dtype if little else stype.dtype.newbyteorder(">")
        raw = f.read(n * dt.itemsize)
        if len(raw) != n * dt.itemsize:
            raise _err("file ends inside storage {!r}".format(key))
        roots[key] = _Storage(stype, n, _finish(np.frombuffer(raw, dtype=dt), stype.name,
                                                not little))

    # pass 2: the main pickle again, now with the storages at hand
    views = {}

    def loader(args):
        stype, key, numel, view = _storage_args(args)
        if key not in roots:
            raise _err("missing storage {!r}".format(key))
        root = roots[key]
        if view is None:
            return root
        try:
            view_key, off, vsize = view
            off, vsize = int(off), int(vsize)
        except (TypeError, ValueError):
            raise _err("malformed storage view {!r}".format(view)) from None
        if off < 0 or vsize < 0 or off + vsize > root.numel:
            raise _err("storage view {!r} outside storage {!r}".format(view, key))
        if view_key not in views:
            views[view_key] = _Storage(stype, vsize, root.array[off:off + vsize])
        return views[view_key]

    f.seek(start)
    return _RestrictedUnpickler(f, loader).load()


def load(f, map_location=None, weights_only=True, **kwargs):
    """Read a PyTorch file (zip or legacy format) saved with ``torch.save``.

    ``f``: a path or a binary file object. Returns the saved object with tensors as NumPy arrays
    (float32/float64/float16/int64/int32/int16/int8/uint8/bool keep their dtype, bfloat16 becomes
    float32); views are materialised as contiguous copies. ``map_location`` (and other
    ``torch.load`` keywords) are accepted and ignored: every array lives in host memory.
    Raises ``pickle.UnpicklingError`` for anything that is not plain data (see module doc).
    """
    if hasattr(f, "read"):
        data = f.read()
    else:
        with open(os.fspath(f), "rb") as fh:
            data = fh.read()
    if data[:4] == b"PK\x03\x04":
        return _load_zip(data)
    if len(data) >= 512:
        try:
            is_tar = tarfile.is_tarfile(io.BytesIO(data))
        except Exception:  # pragma: no cover
            is_tar = False
        if is_tar:
            raise _err("tar-based PyTorch files (PyTorch < 0.4) are not supported; re-save "
                       "with a newer PyTorch")
    return _load_legacy(data)


# ============================================================================ writing

class _PickleWriter:
    """Emits a protocol-2 pickle opcode by opcode (no memo) for state-dict shaped objects."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")        # PROTO 2
        self.storages = []                       # [(key, bytes)]
        self._ids = {}

    def glob(self, module, name):
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"   # GLOBAL

    def int_(self, v):
        if 0 <= v < 256:
            self.out += b"K" + bytes([v])                                    # BININT1
        elif 0 <= v < 65536:
            self.out += b"M" + struct.pack("<H", v)                          # BININT2
        elif -2 ** 31 <= v < 2 ** 31:
            self.out += b"J" + struct.pack("<i", v)                          # BININT
        else:
            n = (v.bit_length() + 8) // 8
            self.out += b"\x8a" + bytes([n]) + v.to_bytes(n, "little", signed=True)  # LONG1

    def str_(self, s):
        b = s.encode("utf-8")
        self.out += b"X" + struct.pack("<I", len(b)) + b                     # BINUNICODE

    def tuple_(self, items):
        if not items:
            self.out += b")"                                                 # EMPTY_TUPLE
            return
        self.out += b"("                                                     # MARK
        for it in items:
            self.obj(it)
        self.out += b"t"                                                     # TUPLE

    def items_(self, mapping):
        if mapping:
            self.out += b"("
            for k, v in mapping.items():
                self.obj(k)
                self.obj(v)
            self.out += b"u"                                                 # SETITEMS

    def ordered_dict(self):
        self.glob("collections", "OrderedDict")
        self.out += b")R"                                                    # () REDUCE

    def tensor(self, arr):
        arr = np.asarray(arr)
        native = np.dtype(arr.dtype.name) if arr.dtype.kind in "biuf" else arr.dtype
        stype = _STORAGE_OF_DTYPE.get(native)
        if stype is None:
            raise TypeError("lviv_c.save: unsupported dtype {} (float64/32/16, int64/32/16/8, "
                            "uint8, bool)".format(arr.dtype))
        data = np.ascontiguousarray(arr).astype(native.newbyteorder("<"), copy=False).tobytes()
        key = str(len(self.storages))
        self.storages.append((key, data))
        size = arr.shape
        stride, acc = [], 1
        for s in reversed(size):
            stride.append(acc)
            acc *= max(s, 1)
        stride = tuple(reversed(stride))
        self.glob("torch._utils", "_rebuild_tensor_v2")
        self.out += b"("
        self.out += b"("                                       # persistent id tuple
        self.str_("storage")
        self.glob("torch", stype)
        self.str_(key)
        self.str_("cpu")
        self.int_(arr.size)
        self.out += b"t" + b"Q"                                # TUPLE, BINPERSID
        self.int_(0)                                           # storage offset
        self.tuple_(tuple(int(s) for s in size))
        self.tuple_(stride)
        self.out += b"\x89"                                    # requires_grad = NEWFALSE
        self.ordered_dict()                                    # backward_hooks
        self.out += b"t" + b"R"                                # TUPLE, REDUCE

    def obj(self, o):
        if o is None:
            self.out += b"N"
        elif o is True:
            self.out += b"\x88"
        elif o is False:
            self.out += b"\x89"
        elif isinstance(o, (int, np.integer)) and not isinstance(o, np.ndarray):
            self.int_(int(o))
        elif isinstance(o, (float, np.floating)) and not isinstance(o, np.ndarray):
            self.out += b"G" + struct.pack(">d", float(o))               # BINFLOAT
        elif isinstance(o, str):
            self.str_(o)
        elif isinstance(o, np.ndarray) or hasattr(o, "__array__"):
            self.tensor(o)
        elif isinstance(o, tuple):
            self.tuple_(o)
        elif isinstance(o, list):
            self.out += b"]"                                             # EMPTY_LIST
            if o:
                self.out += b"("
                for it in o:
                    self.obj(it)
                self.out += b"e"                                         # APPENDS
        elif isinstance(o, Mapping):
            if type(o) is dict:
                self.out += b"}"                                         # EMPTY_DICT
            else:
                self.ordered_dict()
            self.items_(o)
            meta = getattr(o, "_metadata", None)
            if isinstance(meta, Mapping) and type(o) is not dict:
                self.out += b"}"
                self.str_("_metadata")
                self.obj(meta)
                self.out += b"sb"                                        # SETITEM, BUILD
        else:
            raise TypeError("lviv_c.save: cannot save an object of type {}".format(
                type(o).__name__))


def _zip_bytes(records):
    """A stored zip of ``records`` [(name, bytes)], every entry's data 64-byte aligned.

    Local header (30 bytes, little-endian): signature 0x04034b50, version needed 20, flags 0,
    method 0 (stored), time 0, date 1980-01-01, CRC-32, compressed size, size, name length,
    extra length; then the name, then the extra field b'FB' + uint16 n + n x b'Z' with n chosen
    so the data starts at a multiple of 64; then the data. After the last entry: the central
    directory (one 46-byte record + name per entry) and the 22-byte end record.
    """
    out = bytearray()
    central = bytearray()
    for name, data in records:
        nb = name.encode("utf-8")
        crc = zlib.crc32(data) & 0xFFFFFFFF
        base = len(out) + 30 + len(nb) + 4
        pad = (-base) % _ALIGN
        extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
        offset = len(out)
        if len(data) > 0xFFFFFFFF or offset > 0xFFFFFFFF:
            raise ValueError("lviv_c.save: files over 4 GiB (ZIP64) are not supported")
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, crc, len(data),
                           len(data), len(nb), len(extra))
        out += nb + extra
        assert len(out) % _ALIGN == 0
        out += data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0x21, crc,
                               len(data), len(data), len(nb), 0, 0, 0, 0, 0, offset)
        central += nb
    cd_offset = len(out)
    out += central
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(records), len(records), len(central),
                       cd_offset, 0)
    return bytes(out)


def save(obj, f, **kwargs):
    """Write ``obj`` (typically a state dict ``{name: array}``) in PyTorch's zip format.

    Arrays are NumPy arrays or anything with ``__array__`` (``lviv_c.Tensor``); dtypes
    float64/32/16, int64/32/16/8, uint8, bool. Dicts, ``OrderedDict`` (with its
    ``_metadata``), lists, tuples, str, int, float, bool and None may be nested around them.
    ``f``: a path or a writable binary file. Every array gets its own storage (no sharing).
    """
    w = _PickleWriter()
    if isinstance(obj, Mapping) and type(obj) not in (dict, collections.OrderedDict):
        obj = collections.OrderedDict(obj)
    w.obj(obj)
    w.out += b"."                                                        # STOP
    records = [("archive/data.pkl", bytes(w.out)), ("archive/byteorder", b"little")]
    records += [("archive/data/" + key, data) for key, data in w.storages]
    records.append(("archive/version", b"3\n"))
    blob = _zip_bytes(records)
    if hasattr(f, "write"):
        f.write(blob)
    else:
        atomic_write(f, blob)


def atomic_write(path, data):
    """Replace the file ``path`` by ``data`` (bytes or str) atomically: a temporary file in the
    same folder, fsync, os.replace, fsync of the folder. A reader (or a crash) sees the old file
    or the new one, never a part. Returns the path."""
    import tempfile
    path = os.fspath(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return path
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dfd)
    return path
