"""Datasets and loaders: the FileTreeDataset reader (C) and ``load_dataset`` (course semantics).

A scan folder (``static20457-5-9-preproc0``) holds ``data/<key>/<i>.npy`` per trial and
``meta/{trials,neurons,statistics}`` arrays. ``FileTreeDataset`` reads every trial of each data
key into one contiguous float32 block with C threads (``.npy`` headers parsed in C, no pickle);
metadata arrays are read lazily on first access. ``load_dataset`` returns loaders whose batches
are gathered from normalized in-memory blocks in C, with no per-item Python work.
"""
import json
import os
import random
from collections import namedtuple

import numpy as np

import lviv_c as _lv
from . import _C

__all__ = ["FileTreeDataset", "load_dataset", "DataLoader", "Batch", "NeuroNormalizer",
           "Subsample", "ToTensor", "SubsetRandomSampler", "SubsetSequentialSampler",
           "RepeatsBatchSampler", "npy_load", "TIERS"]

TIERS = ("train", "validation", "test", "final_test")

#: the batch type of the course loaders: ``Batch(images, responses)``
Batch = namedtuple("Batch", ["images", "responses"])
_BATCH_TYPES = {("images", "responses"): Batch}

# keys whose data must be finite unless allow_nan=True (behaviour / pupil traces may hold NaNs)
_FINITE_KEYS = ("images", "responses", "inputs", "targets")


def npy_load(path):
    """Read an ``.npy`` file with the C parser (file dtype, no pickle). See ``_C.npy_load``."""
    return _C.npy_load(os.fspath(path))


def _batch_type(fields):
    fields = tuple(fields)
    t = _BATCH_TYPES.get(fields)
    if t is None:
        t = _BATCH_TYPES[fields] = namedtuple("Batch", fields)
    return t


def _to_tensor(a, device="cpu"):
    """float32 numpy array -> lviv_c tensor (zero-copy); numpy itself while from_numpy is absent."""
    conv = getattr(_lv, "from_numpy", None)
    if conv is None:
        return a
    t = conv(np.ascontiguousarray(a, dtype=np.float32))
    if device != "cpu" and hasattr(t, "to"):
        t = t.to(device)
    return t


def _cuda_available():
    cuda = getattr(_lv, "cuda", None)
    try:
        return bool(cuda is not None and cuda.is_available())
    except Exception:  # pragma: no cover - a broken CUDA backend means "no GPU" here
        return False


# ----------------------------------------------------------------------------------- metadata

class _Meta:
    """Lazy, read-only view of a folder of ``.npy`` files: ``m.field``, ``m['field']``,
    ``m.keys()``; sub-folders are nested views (``statistics.images.all.mean``). Arrays come back
    with the file's dtype (strings as NumPy unicode), read once and then cached (read-only)."""

    def __init__(self, path, links=None, check=None):
        self._path = path
        self._links = links or {}
        self._check = check  # check(name, file, array) -> raises on bad content
        self._cache = {}

    def _resolve(self, name):
        if not isinstance(name, str):
            raise KeyError(name)
        real = self._links.get(name, name)
        f = os.path.join(self._path, real + ".npy")
        if os.path.isfile(f):
            return f, False
        d = os.path.join(self._path, real)
        if os.path.isdir(d):
            return d, True
        return None, False

    def __getitem__(self, name):
        hit = self._cache.get(name)
        if hit is not None:
            return hit
        where, is_dir = self._resolve(name)
        if where is None:
            raise KeyError(f"{name!r}: no {os.path.join(self._path, str(name))}.npy "
                           f"(available: {', '.join(self.keys())})")
        if is_dir:
            val = _Meta(where, self._links)
        else:
            val = _C.npy_load(where)
            if self._check is not None:
                self._check(name, where, val)
            val.flags.writeable = False
        self._cache[name] = val
        return val

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(e.args[0]) from None

    def keys(self):
        """Field names (sorted): ``<name>.npy`` files and sub-folders."""
        try:
            entries = os.listdir(self._path)
        except FileNotFoundError:
            return []
        out = []
        for e in entries:
            if e.endswith(".npy") and os.path.isfile(os.path.join(self._path, e)):
                out.append(e[:-4])
            elif os.path.isdir(os.path.join(self._path, e)):
                out.append(e)
        return sorted(out)

    def __contains__(self, name):
        return self._resolve(name)[0] is not None

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self.keys())

    def __dir__(self):
        return self.keys()

    def __repr__(self):
        return f"<metadata {self._path}: {', '.join(self.keys())}>"


class _Neurons:
    """``ds.neurons``: meta/neurons arrays (first axis: neurons, checked against the responses)
    subsampled like the responses by the Subsample transforms in ``ds.transforms``."""

    def __init__(self, ds, meta):
        self._ds = ds
        self._meta = meta

    def __getitem__(self, name):
        arr = self._meta[name]
        idx = self._ds._neuron_index()
        if idx is not None and arr.ndim >= 1:
            arr = arr[idx]
        return arr

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(e.args[0]) from None

    def keys(self):
        return self._meta.keys()

    def __contains__(self, name):
        return name in self._meta

    def __iter__(self):
        return iter(self.keys())

    def __dir__(self):
        return self.keys()

    def __repr__(self):
        return repr(self._meta)


# ---------------------------------------------------------------------------------- transforms

class _LazyBlock:
    """A block plus a pending per-column affine map and column selection, materialized in one C
    pass: out[:, j] = (raw[:, cols[j]] - offset[j]) * factor[j]  (or / factor[j])."""

    def __init__(self, raw):
        self.raw = raw
        self.cols = None
        self.offset = None
        self.factor = None
        self.divide = False

    @property
    def ncols(self):
        return self.raw[0].size if self.cols is None else len(self.cols)

    def pending(self):
        return self.cols is not None or self.factor is not None

    def materialize(self):
        if not self.pending():
            return self.raw
        factor = self.factor if self.factor is not None else np.ones(1)
        return _C.affine_cols(self.raw, self.cols, self.offset, factor, self.divide)

    def set_affine(self, offset, factor, divide):
        if self.factor is not None:  # already has one: apply it first
            self.raw, self.cols = self.materialize(), None
        self.offset = None if offset is None else np.atleast_1d(np.asarray(offset, np.float64))
        self.factor = np.atleast_1d(np.asarray(factor, np.float64))
        self.divide = divide
        if self.cols is not None:  # parameters are per original column: select them too
            for name in ("offset", "factor"):
                p = getattr(self, name)
                if p is not None and p.size > 1:
                    setattr(self, name, p[self.cols])

    def select(self, idx):
        if self.cols is None and self.factor is None and self.raw.ndim == 2 and \
                len(idx) == self.raw.shape[1] and np.array_equal(idx, np.arange(len(idx))):
            return  # identity selection: nothing to do
        if self.raw.ndim != 2:
            self.raw, self.cols, self.factor, self.offset = self.materialize(), None, None, None
            self.raw = self.raw.reshape(len(self.raw), -1)
        if self.cols is None:
            self.cols = np.asarray(idx, np.int64)
        else:
            self.cols = self.cols[idx]
        for name in ("offset", "factor"):
            p = getattr(self, name)
            if p is not None and p.size > 1:
                setattr(self, name, p[idx])


class NeuroNormalizer:
    """Normalize a data point (course / neuralpredictors semantics).

    images: ``(x - mean) / std`` with the scalar image statistics; responses: ``x * precision``,
    precision = 1/std per neuron, or ``1 / (0.01 * mean(std))`` where std <= that threshold;
    behavior: ``x / std``; pupil_center: ``(x - mean) / std`` (when their statistics exist).
    Keys ``k`` with ``k in exclude`` stay raw -- with ``exclude="images"`` that is a substring
    test, the course's quirk. Computed in float64, rounded once to float32."""

    def __init__(self, data, stats_source="all", exclude=None, inputs_mean=None, inputs_std=None):
        self.exclude = exclude or []
        stats = data.statistics
        in_name = "images" if "images" in stats else "inputs"
        out_name = "responses" if "responses" in stats else "targets"
        src = stats_source
        shapes = {}
        blocks = getattr(data, "_blocks", {})
        for key, blk in blocks.items():
            shapes[key] = blk.shape[1:]

        def stat(name, what, divisor=False, given=None):
            """A statistics array, checked: finite (an error naming the file for NaN/inf),
            one value per column of the data it normalises, and > 0 when divided by."""
            if given is not None:
                v, where = np.asarray(given, np.float64), f"{what} (argument)"
            else:
                meta = stats[name][src]
                v = np.asarray(meta[what], np.float64)
                where = os.path.join(getattr(meta, "_path", ""), what + ".npy")
            if v.size == 0 or not np.all(np.isfinite(v)):
                raise ValueError(f"{where}: the {name} statistics contain NaN/inf or nothing "
                                 f"({v.size} values); expected finite numbers")
            cols = shapes.get(name) if name != in_name else None
            if cols is not None and v.size > 1 and v.reshape(-1).size != int(np.prod(cols[-1:])):
                raise ValueError(f"{where}: {v.size} values, expected 1 or {int(np.prod(cols[-1:]))}"
                                 f" (one per column of data/{name})")
            if divisor and np.any(v <= 0):
                raise ValueError(f"{where}: {name} std must be > 0 (it divides the data), "
                                 f"found {float(v.min())}")
            return v, where

        self._inputs_mean = float(stat(in_name, "mean", given=inputs_mean)[0].reshape(-1)[0])
        self._inputs_std = float(stat(in_name, "std", True, given=inputs_std)[0].reshape(-1)[0])
        s, where = stat(out_name, "std")
        # the course's rule: std at or below 1% of the mean std is replaced by that threshold
        threshold = 0.01 * np.nanmean(s)
        if not threshold > 0:
            raise ValueError(f"{where}: every {out_name} std is 0; expected per-neuron standard "
                             f"deviations (stds of at most 1% of their mean are floored there)")
        precision = np.ones_like(s) / threshold
        ok = s > threshold
        precision[ok] = 1.0 / s[ok]
        self._response_precision = precision
        # name -> (offset or None, factor, divide)
        self._params = {in_name: (self._inputs_mean, self._inputs_std, True),
                        out_name: (None, precision, False)}
        if "behavior" in stats:
            self._params["behavior"] = (None, stat("behavior", "std", True)[0], True)
        if "pupil_center" in stats:
            self._params["pupil_center"] = (stat("pupil_center", "mean")[0],
                                            stat("pupil_center", "std", True)[0], True)

    def _active(self, fields):
        return [k for k in fields if k in self._params and k not in self.exclude]

    def __call__(self, x):
        upd = {}
        for k in self._active(x._fields):
            off, fac, div = self._params[k]
            v = np.asarray(getattr(x, k), np.float64)
            if off is not None:
                v = v - off
            v = v / fac if div else v * fac
            upd[k] = v.astype(np.float32)
        return x._replace(**upd)

    def apply_blocks(self, blocks):
        for k in self._active(list(blocks)):
            off, fac, div = self._params[k]
            blocks[k].set_affine(off, fac, div)

    def __repr__(self):
        return f"NeuroNormalizer(exclude={self.exclude!r})"


class Subsample:
    """Keep the neurons ``idx`` (positions into the responses' last axis)."""

    def __init__(self, idx, target="responses"):
        self.idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        self.target = target

    def _key(self, fields):
        if self.target in fields:
            return self.target
        return "targets" if "targets" in fields else None

    def __call__(self, x):
        k = self._key(x._fields)
        if k is None:
            return x
        return x._replace(**{k: np.asarray(getattr(x, k))[..., self.idx]})

    def apply_blocks(self, blocks):
        k = self._key(list(blocks))
        if k is not None:
            blocks[k].select(self.idx)

    def __repr__(self):
        return f"Subsample(n={len(self.idx)})"


class ToTensor:
    """Convert a data point's arrays to lviv_c tensors (float32). ``cuda=True`` puts them on the
    GPU when lviv_c has one and is a no-op otherwise."""

    def __init__(self, cuda=False):
        self.cuda = bool(cuda)

    @property
    def device(self):
        return "cuda" if self.cuda and _cuda_available() else "cpu"

    def __call__(self, x):
        dev = self.device
        return x.__class__(*[_to_tensor(np.asarray(v, np.float32), dev) for v in x])

    def apply_blocks(self, blocks):
        pass

    def __repr__(self):
        return f"ToTensor(cuda={self.cuda})"


# ------------------------------------------------------------------------------------- dataset

def _check_tiers(name, f, arr):
    ok = np.isin(arr, TIERS)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise ValueError(f"{f}: tier {str(arr[i])!r} at trial {i} is not one of "
                         f"{', '.join(TIERS)}")


class FileTreeDataset:
    """A scan in the FileTreeDataset layout, all trials of each data key in memory.

    ``FileTreeDataset(path, *data_keys, allow_nan=False, nthreads=0)`` reads
    ``path/data/<key>/0.npy .. <n-1>.npy`` for every key (default ``images, responses``) into
    one float32 block per key, shape ``(n, *file_shape)``, using C threads (``nthreads`` 0: a
    default). Every file must have the dtype and shape of ``0.npy`` and every key the same
    number of files; NaN/inf in images or responses is an error unless ``allow_nan=True``.
    Errors name the path: FileNotFoundError (missing folder/file), ValueError (count, shape,
    dtype mismatch, corrupt header, bad tier value).

    ``len(ds)``; ``ds[i]`` -> named tuple of the data keys after ``ds.transforms``;
    ``ds.trial_info`` / ``ds.neurons`` / ``ds.statistics``: lazy metadata (attribute and item
    access, ``.keys()``); ``ds.neurons`` is subsampled like the responses; ``ds.block(key)`` the
    raw float32 block (read-only).
    """

    def __init__(self, path, *data_keys, allow_nan=False, nthreads=0):
        self.basepath = os.fspath(path)
        if not os.path.isdir(self.basepath):
            raise FileNotFoundError(f"{self.basepath}: no such dataset folder")
        cfg = os.path.join(self.basepath, "config.json")
        self.config = {"links": {}}
        if os.path.isfile(cfg):
            try:
                with open(cfg) as fh:
                    self.config = json.load(fh)
            except (ValueError, UnicodeDecodeError) as e:
                raise ValueError(f"{cfg}: not valid JSON ({e})") from None
            except RecursionError:
                raise ValueError(f"{cfg}: JSON nested too deeply; expected an object like "
                                 '{"links": {...}}') from None
            if not isinstance(self.config, dict):
                raise ValueError(f"{cfg}: expected a JSON object")
        links = self.config.get("links", {}) or {}
        if not isinstance(links, dict):
            raise ValueError(f"{cfg}: 'links' must be an object")
        self.links = {str(k): str(v) for k, v in links.items()}
        self.data_keys = tuple(data_keys) if data_keys else ("images", "responses")
        self.allow_nan = bool(allow_nan)
        self.transforms = []
        self._data_point = _batch_type(self.data_keys)
        self._trial_meta = _Meta(os.path.join(self.basepath, "meta", "trials"), self.links,
                                 self._check_trial_field)
        self._neuron_meta = _Meta(os.path.join(self.basepath, "meta", "neurons"), self.links,
                                  self._check_neuron_field)
        self.statistics = _Meta(os.path.join(self.basepath, "meta", "statistics"), self.links)
        self._blocks, self._descr = {}, {}
        self._loader_cache = None

        # count first (cheap), then load the big blocks
        counts = {}
        for key in self.data_keys:
            folder = self.resolve_data_path(key)
            if folder is None:
                continue  # a trials field used as data key (read from meta/trials)
            counts[key] = _C.count_npy_files(folder)
        if not counts:
            raise ValueError(f"{self.basepath}: none of the data keys {self.data_keys} has a "
                             f"data/<key> folder")
        vals = set(counts.values())
        if len(vals) > 1:
            desc = ", ".join(f"data/{self.links.get(k, k)} has {c}" for k, c in counts.items())
            raise ValueError(f"{self.basepath}: the data keys have different numbers of files "
                             f"({desc})")
        self._len = vals.pop()
        for key in counts:
            check = not self.allow_nan and (key in _FINITE_KEYS or
                                            self.links.get(key, key) in _FINITE_KEYS)
            block, descr, _shape = _C.load_npy_dir(self.resolve_data_path(key), self._len,
                                                   check, nthreads)
            block.flags.writeable = False
            self._blocks[key] = block
            self._descr[key] = descr

    # -- paths and metadata
    def resolve_data_path(self, key):
        """Folder of a data key (config links applied), or None for a meta/trials field."""
        real = self.links.get(key, key)
        folder = os.path.join(self.basepath, "data", real)
        if os.path.isdir(folder):
            return folder
        if os.path.isfile(os.path.join(self.basepath, "meta", "trials", real + ".npy")):
            return None
        raise FileNotFoundError(f"{folder}: no such folder (data key {key!r})")

    def _check_trial_field(self, name, f, arr):
        if arr.ndim < 1 or len(arr) != self._len:
            raise ValueError(f"{f}: {arr.shape[0] if arr.ndim else 0} entries, expected "
                             f"{self._len} (one per trial)")
        if name == "tiers":
            _check_tiers(name, f, arr)

    def _n_neurons(self):
        for key in ("responses", "targets"):
            if key in self._blocks:
                return int(np.prod(self._blocks[key].shape[1:]))
        return None

    def _check_neuron_field(self, name, f, arr):
        n = self._n_neurons()
        if n is not None and (arr.ndim < 1 or len(arr) != n):
            raise ValueError(f"{f}: {arr.shape[0] if arr.ndim else 0} entries, expected {n} "
                             f"(one per neuron)")

    @property
    def trial_info(self):
        """meta/trials arrays (one entry per trial; ``tiers`` is checked on first access)."""
        return self._trial_meta

    @property
    def neurons(self):
        """meta/neurons arrays, subsampled like the responses by Subsample transforms."""
        return _Neurons(self, self._neuron_meta)

    def _neuron_index(self):
        idx = None
        for tr in self.transforms:
            if isinstance(tr, Subsample):
                idx = tr.idx if idx is None else idx[tr.idx]
        return idx

    def block(self, key):
        """Raw float32 block of a data key, shape (n, *file_shape), read-only."""
        return self._blocks[key]

    @property
    def n_neurons(self):
        """Number of neurons after the Subsample transforms."""
        idx = self._neuron_index()
        return len(idx) if idx is not None else self._n_neurons()

    # -- items
    def __len__(self):
        return self._len

    def _raw(self, key, item):
        if key in self._blocks:
            return np.array(self._blocks[key][item])
        return np.asarray(self.trial_info[key])[item:item + 1] if np.ndim(item) == 0 else \
            np.asarray(self.trial_info[key])[item]

    def __getitem__(self, item):
        if isinstance(item, slice):
            item = np.arange(self._len)[item]
        elif not np.isscalar(item):
            item = np.asarray(item, dtype=np.int64)
        if np.ndim(item) == 0:
            item = int(item)
            if item < -self._len or item >= self._len:
                raise IndexError(f"index {item} is out of range for {self._len} items")
            item %= self._len
        else:
            if item.size and (item.min() < -self._len or item.max() >= self._len):
                raise IndexError(f"indices out of range for {self._len} items")
            item = item % self._len if item.size else item
        x = self._data_point(*[self._raw(k, item) for k in self.data_keys])
        for tr in self.transforms:
            x = tr(x)
        return x

    def __repr__(self):
        return "{} {} (n={} items)\n\t{}".format(self.__class__.__name__, self.basepath,
                                                 self._len, ", ".join(self.data_keys))

    # -- blocks for the loaders
    def _loader_blocks(self):
        """(blocks, batch_transforms, device): every data key's block with the transforms that
        know how to act on whole blocks applied once (cached while ``transforms`` is unchanged);
        the remaining transforms (user-defined ones and all after them) run per batch."""
        sig = tuple(id(t) for t in self.transforms)
        if self._loader_cache is not None and self._loader_cache[0] == sig:
            return self._loader_cache[1]
        lazy = {k: _LazyBlock(self._blocks[k]) for k in self.data_keys if k in self._blocks}
        batch_tr, device = [], "cpu"
        for i, tr in enumerate(self.transforms):
            if isinstance(tr, ToTensor):
                device = tr.device
                continue
            if not hasattr(tr, "apply_blocks"):
                batch_tr = [t for t in self.transforms[i:] if not isinstance(t, ToTensor)]
                break
            tr.apply_blocks(lazy)
        blocks = {}
        for k, lb in lazy.items():
            b = lb.materialize()
            if b is not lb.raw or not b.flags.c_contiguous:
                b = np.ascontiguousarray(b)
            blocks[k] = b
        out = (blocks, batch_tr, device)
        self._loader_cache = (sig, out)
        return out

    def _device_blocks(self):
        """The blocks of ``_loader_blocks`` copied once to the GPU (a dict key -> float32 CUDA
        tensor), kept while the blocks are unchanged; None when the loaders' device is 'cpu'.
        Batches are then gathered on the device (``DataLoader.__iter__``, the C training loop)."""
        blocks, _, device = self._loader_blocks()
        if device != "cuda":
            return None
        sig = tuple((k, b.__array_interface__["data"][0], b.shape) for k, b in blocks.items())
        cache = getattr(self, "_device_cache", None)
        if cache is not None and cache[0] == sig:
            return cache[1]
        dev = {k: _to_tensor(b, "cuda") for k, b in blocks.items()}
        self._device_cache = (sig, dev)
        return dev


# ------------------------------------------------------------------------------------ samplers

class SubsetRandomSampler:
    """Trial indices in a fresh random order every epoch, from a NumPy Generator seeded with
    ``seed`` (None: unpredictable). ``manual_seed(s)`` reseeds."""

    def __init__(self, indices, seed=None):
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        self.generator = np.random.default_rng(seed)

    def manual_seed(self, seed):
        self.generator = np.random.default_rng(seed)

    def order(self):
        return self.generator.permutation(self.indices)

    def __iter__(self):
        return iter(self.order().tolist())

    def __len__(self):
        return len(self.indices)


class SubsetSequentialSampler:
    """Trial indices in the given (file-index) order."""

    def __init__(self, indices):
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)

    def order(self):
        return self.indices

    def __iter__(self):
        return iter(self.indices.tolist())

    def __len__(self):
        return len(self.indices)


class RepeatsBatchSampler:
    """One batch per distinct key among ``subset_index`` (all its repeats, file-index order);
    batches ordered by key value. ``len()`` is the number of batches."""

    def __init__(self, keys, subset_index=None):
        keys = np.asarray(keys)
        if subset_index is None:
            subset_index = np.arange(len(keys))
        self.subset_index = np.asarray(subset_index, dtype=np.int64).reshape(-1)
        _, inv = np.unique(keys[self.subset_index], return_inverse=True)
        inv = inv.reshape(-1)
        order = np.argsort(inv, kind="stable")
        bounds = np.flatnonzero(np.diff(inv[order])) + 1
        self.batches = [self.subset_index[g] for g in np.split(order, bounds)] \
            if len(order) else []

    def __iter__(self):
        return iter([b.tolist() for b in self.batches])

    def __len__(self):
        return len(self.batches)


# ------------------------------------------------------------------------------------- loaders

class DataLoader:
    """Batches of a FileTreeDataset gathered in C from in-memory blocks.

    Iterating yields named tuples of the data keys (``Batch(images, responses)`` for the course
    loaders: images float32 (B, 1, 36, 64), responses float32 (B, N)) as lviv_c tensors. Train
    loaders (SubsetRandomSampler) reshuffle every epoch; others keep their order; the last batch
    may be short.

    Attributes for C code that gathers batches itself:
      ``blocks``          dict key -> float32 C-contiguous array (n_trials, ...): the whole
                          scan with the dataset's transforms applied (normalized, neurons
                          subsampled); row i is trial i (file i.npy).
      ``images_block``    ``blocks['images']``, (n_trials, 1, 36, 64) float32.
      ``responses_block`` ``blocks['responses']``, (n_trials, N) float32.
      ``indices``         int64 array of this loader's trials (the tier's file indices in
                          file order; for a repeats loader the groups concatenated).
      ``batch_indices()`` the int64 index arrays of one epoch (draws a new shuffle for train).
      ``device``          'cuda' or 'cpu' (where batches are put).
    ``sampler``, ``batch_sampler``, ``batch_size``, ``dataset`` as in torch.
    """

    def __init__(self, dataset, batch_size=1, sampler=None, batch_sampler=None):
        self.dataset = dataset
        if batch_sampler is not None:
            self.batch_sampler = batch_sampler
            self.batch_size = None
            self.sampler = SubsetSequentialSampler(
                np.concatenate(batch_sampler.batches) if len(batch_sampler) else
                np.zeros(0, np.int64))
        else:
            if batch_size is None or int(batch_size) < 1:
                raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
            self.batch_size = int(batch_size)
            self.batch_sampler = None
            self.sampler = sampler if sampler is not None else \
                SubsetSequentialSampler(np.arange(len(dataset)))
        self.indices = np.asarray(self.sampler.indices, dtype=np.int64)

    @property
    def blocks(self):
        return self.dataset._loader_blocks()[0]

    @property
    def images_block(self):
        b = self.blocks
        return b["images"] if "images" in b else b.get("inputs")

    @property
    def responses_block(self):
        b = self.blocks
        return b["responses"] if "responses" in b else b.get("targets")

    @property
    def device(self):
        return self.dataset._loader_blocks()[2]

    def device_blocks(self):
        """(images, responses) as GPU-resident float32 tensors (uploaded once per dataset) when
        the loader's device is 'cuda' (``load_dataset(..., cuda=True)`` with a GPU), else None."""
        dev = self.dataset._device_blocks()
        if dev is None:
            return None
        x = dev["images"] if "images" in dev else dev.get("inputs")
        y = dev["responses"] if "responses" in dev else dev.get("targets")
        return x, y

    def batch_indices(self):
        if self.batch_sampler is not None:
            return list(self.batch_sampler.batches)
        order = np.asarray(self.sampler.order(), dtype=np.int64)
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def __len__(self):
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self):
        blocks, batch_tr, device = self.dataset._loader_blocks()
        keys = self.dataset.data_keys
        point = _batch_type(keys)
        if device == "cuda" and not batch_tr and all(k in blocks for k in keys):
            # device-resident blocks: the batch is an index_select on the GPU
            dev = self.dataset._device_blocks()
            for idx in self.batch_indices():
                ix = _lv.tensor(np.asarray(idx, np.int64), device="cuda")
                yield point(*[_C.index_select(dev[k], 0, ix) for k in keys])
            return
        for idx in self.batch_indices():
            vals = []
            for k in keys:
                if k in blocks:
                    vals.append(_C.gather_rows(blocks[k], idx))
                else:
                    vals.append(np.asarray(self.dataset.trial_info[k])[idx])
            x = point(*vals)
            for tr in batch_tr:
                x = tr(x)
            yield point(*[_to_tensor(np.asarray(v, np.float32), device) for v in x])

    def __repr__(self):
        return (f"<lviv_c DataLoader: {len(self.sampler)} trials, {len(self)} batches, "
                f"batch_size={self.batch_size}>")


# -------------------------------------------------------------------------------- load_dataset

def _data_key(path):
    base = os.path.basename(os.path.normpath(os.fspath(path)))
    return base.split("static")[-1].split(".")[0].replace("preproc", "").replace("_nobehavior", "")


def _oracle_loader(dat, oracle_condition=None):
    info = dat.trial_info
    if "frame_image_id" not in info:
        raise ValueError(f"{dat.basepath}: meta/trials/frame_image_id.npy is needed to group the "
                         f"test repeats")
    ids = np.asarray(info.frame_image_id).astype(np.int64)
    if "frame_image_class" in info:
        _, class_idx = np.unique(np.asarray(info.frame_image_class), return_inverse=True)
        class_idx = class_idx.reshape(-1)
    else:
        class_idx = np.zeros(len(ids), dtype=np.int64)
    max_idx = (ids.max() + 1) if len(ids) else 1
    identifiers = ids + class_idx * max_idx
    test = np.asarray(info.tiers) == "test"
    if oracle_condition is not None:
        test &= np.isin(class_idx, np.atleast_1d(oracle_condition))
    sampler = RepeatsBatchSampler(identifiers, np.flatnonzero(test))
    return DataLoader(dat, batch_sampler=sampler)


def _first_positions(ids, wanted, kind, path):
    """The position of the first entry of ``ids`` equal to each of ``wanted``; ValueError naming
    the file ``path`` for a ``kind`` id that is not there."""
    pos = []
    for u in np.atleast_1d(wanted):
        hit = np.flatnonzero(ids == u)
        if not len(hit):
            raise ValueError(f"{kind} id {u} is not in {path}")
        pos.append(hit[0])
    return np.asarray(pos, dtype=np.int64)


def select_train_images(dat, image_id_array, tier_array, image_ids):
    """Trial positions of the given ``image_ids`` (the first trial showing each), all of which must
    be training images (neuralpredictors' image_ids rule)."""
    subset = _first_positions(image_id_array, image_ids, "image",
                              os.path.join(dat.basepath, "meta", "trials", "frame_image_id"))
    if np.any(tier_array[subset] != "train"):
        raise ValueError("image_ids contain validation or test images")
    return subset


def select_neurons(dat, areas, layers, neuron_ids, neuron_n, exclude_neuron_n, neuron_base_seed):
    """Positions of the selected neurons of a scan, neuralpredictors' rules: by ``areas`` and
    ``layers``; ``neuron_n`` random unit ids after skipping ``exclude_neuron_n`` (NumPy's global
    generator seeded with ``neuron_base_seed * neuron_n``, its state restored); or the given
    ``neuron_ids``. Used by load_dataset and by the Sensorium static_loaders."""
    nrn = dat.neurons
    unit_ids = np.asarray(nrn.unit_ids)
    conds = np.ones(len(unit_ids), dtype=bool)
    if areas is not None:
        conds &= np.isin(np.asarray(nrn.area), areas)
    if layers is not None:
        conds &= np.isin(np.asarray(nrn.layer), layers)
    idx = np.flatnonzero(conds)
    if neuron_n is not None:
        if len(unit_ids) < exclude_neuron_n + neuron_n:
            raise ValueError(f"{dat.basepath}: after excluding {exclude_neuron_n} neurons, there are not "
                             f"{neuron_n} neurons left")
        state = np.random.get_state()
        try:
            if neuron_base_seed is not None:
                np.random.seed(neuron_base_seed * neuron_n)
            neuron_ids = np.random.choice(unit_ids, size=exclude_neuron_n + neuron_n,
                                          replace=False)[exclude_neuron_n:]
        finally:
            np.random.set_state(state)
    if neuron_ids is not None:
        idx = _first_positions(unit_ids, neuron_ids, "neuron", os.path.join(dat.basepath, "meta", "neurons", "unit_ids"))
    return idx


def load_dataset(path, batch_size, areas=None, layers=None, tier=None, neuron_ids=None,
                 neuron_n=None, exclude_neuron_n=0, neuron_base_seed=None, image_ids=None,
                 image_n=None, image_base_seed=None, get_key=False, cuda=True, normalize=True,
                 exclude="images", return_test_sampler=False, oracle_condition=None, seed=None):
    """Loaders for one scan, with the course's (``lviv.dataset.load_dataset``) semantics.

    Returns ``{'train', 'validation', 'test'}`` DataLoaders (only ``tier`` when given), or
    ``(data_key, loaders)`` with ``get_key`` (data key: ``'20457-5-9-0'`` for a folder named
    ``static20457-5-9-preproc0``). Batches are ``Batch(images, responses)``: images float32
    (B, 1, 36, 64), responses float32 (B, N).

    - train: shuffled every epoch by a NumPy Generator seeded with ``seed``; validation/test:
      file-index order; the last batch may be short. ``seed`` also seeds ``np.random`` and
      ``random`` (and lviv_c's generator when it has ``manual_seed``), as the course does.
    - neurons: ``areas`` / ``layers`` (meta/neurons area, layer), ``neuron_n`` drawn with
      ``np.random.seed(neuron_base_seed * neuron_n)`` after skipping ``exclude_neuron_n``
      draws, or ``neuron_ids`` (unit_ids). ``image_n`` (seed ``image_base_seed * image_n``) or
      ``image_ids`` restrict the train tier.
    - ``normalize``: responses * per-neuron precision (train std, floor 0.01*mean(std)); images
      z-scored unless ``"images"`` is in ``exclude`` (a substring test, as in the course).
    - ``return_test_sampler``: ``{'test': loader}`` with one batch per test image (all its
      repeats); ``oracle_condition``: image-class indices to keep.
    - ``cuda``: on the GPU when lviv_c has one; harmless otherwise.
    """
    if seed is not None:
        np.random.seed(seed)
        random.seed(seed)
        ms = getattr(_lv, "manual_seed", None)
        if ms is not None:
            ms(seed)
    if not (image_ids is None or (image_n is None and image_base_seed is None)):
        raise ValueError("image_ids can not be set at the same time with any other image "
                         "selection criteria")
    if not (neuron_ids is None or (neuron_n is None and neuron_base_seed is None and
                                   areas is None and layers is None and exclude_neuron_n == 0)):
        raise ValueError("neuron_ids can not be set at the same time with any other neuron "
                         "selection criteria")
    if not (exclude_neuron_n == 0 or neuron_base_seed is not None):
        raise ValueError("neuron_base_seed must be set when exclude_neuron_n is not 0")
    if tier is not None and tier not in TIERS:
        raise ValueError(f"tier must be one of {', '.join(TIERS)}, got {tier!r}")

    data_key = _data_key(path)
    dat = FileTreeDataset(path, "images", "responses")

    idx = select_neurons(dat, areas, layers, neuron_ids, neuron_n, exclude_neuron_n, neuron_base_seed)

    more = [Subsample(idx), ToTensor(cuda)]
    if normalize:
        more.insert(0, NeuroNormalizer(dat, exclude=exclude))
    dat.transforms.extend(more)

    if return_test_sampler:
        print("Returning only test sampler with repeats...")
        loader = _oracle_loader(dat, oracle_condition)
        return (data_key, {"test": loader}) if get_key else {"test": loader}

    loaders = {}
    tier_array = np.asarray(dat.trial_info.tiers)
    keys = [tier] if tier else ["train", "validation", "test"]
    for t in keys:
        if t == "train" and image_ids is not None:
            subset = select_train_images(dat, np.asarray(dat.trial_info.frame_image_id), tier_array, image_ids)
        elif t == "train" and image_n is not None:
            state = np.random.get_state()
            try:
                if image_base_seed is not None:
                    np.random.seed(image_base_seed * image_n)
                subset = np.random.choice(np.flatnonzero(tier_array == "train"), size=image_n,
                                          replace=False)
            finally:
                np.random.set_state(state)
        else:
            subset = np.flatnonzero(tier_array == t)
        sampler = SubsetRandomSampler(subset, seed) if t == "train" else \
            SubsetSequentialSampler(subset)
        loaders[t] = DataLoader(dat, batch_size=batch_size, sampler=sampler)
    return (data_key, loaders) if get_key else loaders


# the Sensorium 2022 layout (several scans, behavior and eye position): lviv_c.sensorium_data,
# re-exported lazily (it imports this module: importing it first must work too)
def __getattr__(name):
    if name in ("static_loader", "static_loaders"):
        from . import sensorium_data
        return getattr(sensorium_data, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
