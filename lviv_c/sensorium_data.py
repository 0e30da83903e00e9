"""Loaders for the Sensorium 2022 data layout: several scans, each a FileTreeDataset folder with
``data/{images,responses,behavior,pupil_center}`` and the course scan's meta folders.

``static_loaders(paths, batch_size, ...)`` returns ``{'train': {data_key: loader}, 'validation':
{...}, 'test': {...}}`` with the semantics of ``sensorium.datasets.static_loaders``: every scan is
read into memory once (one C read per data key of the scan), normalised (images z-scored unless
excluded, responses times the per-neuron precision, behavior divided by its std, the pupil
center z-scored), optionally with the behavior appended to the images as constant channels
(``include_behavior``), the eye position kept for the shifter (``include_eye_position``) and the
images downsampled (``scale``, bilinear as skimage's ``rescale``). Batches are named tuples
``(images, responses[, behavior][, pupil_center])`` gathered in C from the transformed blocks.
"""
import os
from collections import OrderedDict

import numpy as np

from .dataset import (DataLoader, FileTreeDataset, NeuroNormalizer, Subsample, SubsetRandomSampler,
                      SubsetSequentialSampler, ToTensor, TIERS, _LazyBlock, select_neurons,
                      select_train_images)

__all__ = ["static_loader", "static_loaders", "ScaleInputs", "AddBehaviorAsChannels",
           "AddPupilCenterAsChannels", "SelectInputChannel", "rescale_bilinear", "sensorium_data_key"]


# ----------------------------------------------------------------------------------- transforms

def _linear_weights(n_in, n_out):
    """(n_out, n_in) bilinear interpolation matrix of skimage's resize (order 1, no
    anti-aliasing): output pixel o reads input coordinate (o + 0.5) * n_in / n_out - 0.5,
    mirrored at the borders (mode='reflect')."""
    c = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    if n_in > 1:
        period = 2 * (n_in - 1)
        c = np.abs(np.mod(c, period))
        c = np.where(c > n_in - 1, period - c, c)
    else:
        c = np.zeros_like(c)
    i0 = np.floor(c).astype(np.int64)
    i0 = np.clip(i0, 0, n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    f = c - i0
    W = np.zeros((n_out, n_in))
    np.add.at(W, (np.arange(n_out), i0), 1 - f)
    np.add.at(W, (np.arange(n_out), i1), f)
    return W


def rescale_bilinear(images, scale, chunk=256):
    """Downsample/upsample (n, C, H, W) images by ``scale`` (a number or (sy, sx)) to
    (round(H sy), round(W sx)) with bilinear interpolation (skimage.transform.rescale with
    order=1, mode='reflect', anti_aliasing=False, preserve_range=True). float32 out."""
    a = np.asarray(images)
    if a.ndim != 4:
        raise ValueError(f"rescale: expected images (n, channels, height, width), got shape {a.shape}")
    sy, sx = (scale, scale) if np.isscalar(scale) else scale
    if sy <= 0 or sx <= 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    n, c, h, w = a.shape
    ho, wo = max(1, int(round(h * sy))), max(1, int(round(w * sx)))
    Wr, Wc = _linear_weights(h, ho), _linear_weights(w, wo)
    out = np.empty((n, c, ho, wo), np.float32)
    for s in range(0, n, chunk):
        blk = a[s:s + chunk].astype(np.float64)
        out[s:s + chunk] = np.einsum("oh,nchw,pw->ncop", Wr, blk, Wc, optimize=True)
    return out


def _replace_block(blocks, key, arr):
    blocks[key] = _LazyBlock(np.ascontiguousarray(arr, dtype=np.float32))


class ScaleInputs:
    """Rescale the images by ``scale`` (bilinear, skimage's ``rescale`` semantics)."""

    def __init__(self, scale, in_name="images"):
        self.scale = scale
        self.in_name = in_name

    def __call__(self, x):
        img = np.asarray(getattr(x, self.in_name))
        return x._replace(**{self.in_name: rescale_bilinear(img[None], self.scale)[0]})

    def apply_blocks(self, blocks):
        if self.in_name in blocks:
            _replace_block(blocks, self.in_name, rescale_bilinear(blocks[self.in_name].materialize(), self.scale))

    def __repr__(self):
        return f"ScaleInputs(scale={self.scale})"


class _AddAsChannels:
    source = None

    def __init__(self, key="images"):
        if key not in ("images",):
            raise ValueError(f"{type(self).__name__}: key must be 'images', got {key!r}")
        self.key = key

    @staticmethod
    def _concat(img, extra):
        img = np.asarray(img, np.float32)
        extra = np.asarray(extra, np.float32)
        full = np.broadcast_to(extra.reshape(*extra.shape, 1, 1), extra.shape + img.shape[-2:])
        return np.concatenate([img, full], axis=-3)

    def __call__(self, x):
        return x._replace(**{self.key: self._concat(getattr(x, self.key), getattr(x, self.source))})

    def apply_blocks(self, blocks):
        if self.source not in blocks:
            raise ValueError(f"{type(self).__name__}: the dataset has no '{self.source}' data key")
        img = blocks[self.key].materialize()
        extra = blocks[self.source].materialize().reshape(len(img), -1)
        _replace_block(blocks, self.key, self._concat(img, extra))

    def __repr__(self):
        return type(self).__name__ + "()"


class AddBehaviorAsChannels(_AddAsChannels):
    """Append the (normalised) behavior (3,) to the images as constant channels."""
    source = "behavior"


class AddPupilCenterAsChannels(_AddAsChannels):
    """Append the (normalised) pupil center (2,) to the images as constant channels."""
    source = "pupil_center"


class SelectInputChannel:
    """Keep image channel(s) ``grab_channel``."""

    def __init__(self, grab_channel):
        self.grab_channel = list(np.atleast_1d(grab_channel))

    def __call__(self, x):
        return x._replace(images=np.asarray(x.images)[self.grab_channel])

    def apply_blocks(self, blocks):
        _replace_block(blocks, "images", blocks["images"].materialize()[:, self.grab_channel])

    def __repr__(self):
        return f"SelectInputChannel({self.grab_channel})"


# -------------------------------------------------------------------------------------- loaders

def sensorium_data_key(path, dataset=None):
    """The data key of a scan folder as sensorium names it: '26872-17-20' for
    'static26872-17-20-GrayImageNet-94c6ff995dac583098847cfecd43e7b6', '20457-5-9-0' for the
    course's 'static20457-5-9-preproc0', else animal-session-scan from meta/neurons."""
    base = os.path.basename(os.path.normpath(os.fspath(path)))
    if "preproc" in base:
        return base.split("static")[-1].split(".")[0].replace("preproc", "").replace("_nobehavior", "")
    for tag in ("-ColorImageNet", "-GrayImageNet"):
        if tag in base:
            return base.split("static")[-1].split(tag)[0]
    if dataset is None:
        raise ValueError(f"{path}: cannot name the scan without its meta/neurons")
    n = dataset.neurons
    return f"{np.asarray(n.animal_ids)[0]}-{np.asarray(n.sessions)[0]}-{np.asarray(n.scan_idx)[0]}"


def _image_info(dat):
    info = dat.trial_info
    for iid, icls in (("image_id", "image_class"), ("colorframeprojector_image_id", "colorframeprojector_image_class"),
                      ("frame_image_id", "frame_image_class")):
        if iid in info:
            return np.asarray(info[iid]), (np.asarray(info[icls]) if icls in info else None)
    raise ValueError(f"{dat.basepath}: meta/trials needs 'image_id', 'colorframeprojector_image_id' or "
                     "'frame_image_id'")


def static_loader(path, batch_size, areas=None, layers=None, tier=None, neuron_ids=None, neuron_n=None,
                  exclude_neuron_n=0, neuron_base_seed=None, image_ids=None, image_n=None, image_base_seed=None,
                  get_key=False, cuda=True, normalize=True, exclude=None, include_behavior=False,
                  add_behavior_as_channels=True, select_input_channel=None, file_tree=True, image_condition=None,
                  inputs_mean=None, inputs_std=None, scale=None, include_eye_position=None,
                  add_eye_pos_as_channels=None, include_trial_info_keys=None, seed=None, allow_nan=False):
    """Loaders of one scan, sensorium's ``static_loader`` semantics (see the module docstring).

    Returns ``{'train', 'validation', 'test'}`` loaders (only ``tier`` when given) or
    ``(data_key, loaders)`` with ``get_key``. ``exclude``: data keys left unnormalised (sensorium's
    default None normalises the images too). ``image_condition``: keep trials whose image class
    is (one of) this. ``seed``: seeds the train loader's shuffling. ``file_tree=False`` (HDF5) is
    not supported."""
    if not file_tree:
        raise NotImplementedError("static_loader: only the FileTreeDataset layout (file_tree=True) is supported")
    if not (image_ids is None or (image_n is None and image_base_seed is None)):
        raise ValueError("image_ids can not be set at the same time with any other image selection criteria")
    if not (neuron_ids is None or (neuron_n is None and neuron_base_seed is None and areas is None
                                   and layers is None and exclude_neuron_n == 0)):
        raise ValueError("neuron_ids can not be set at the same time with any other neuron selection criteria")
    if not (exclude_neuron_n == 0 or neuron_base_seed is not None):
        raise ValueError("neuron_base_seed must be set when exclude_neuron_n is not 0")
    if image_ids is not None and image_condition is not None:
        raise ValueError("either 'image_condition' or 'image_ids' can be passed. They can not both be true.")
    if include_behavior and select_input_channel is not None:
        raise ValueError("Selecting an Input Channel and Adding Behavior can not both be true")
    if tier is not None and tier not in TIERS:
        raise ValueError(f"tier must be one of {', '.join(TIERS)}, got {tier!r}")
    if include_trial_info_keys:
        raise NotImplementedError("include_trial_info_keys is not supported by lviv_c's loaders")

    keys = ["images", "responses"]
    if include_behavior:
        keys.append("behavior")
    if include_eye_position:
        keys.append("pupil_center")
    dat = FileTreeDataset(path, *keys, allow_nan=allow_nan)
    idx = select_neurons(dat, areas, layers, neuron_ids, neuron_n, exclude_neuron_n, neuron_base_seed)

    # the reference's order: normalise, behavior channels, eye-position channels, channel
    # selection, rescaling, neuron subsampling
    more = []
    if normalize:
        more.append(NeuroNormalizer(dat, exclude=exclude, inputs_mean=inputs_mean, inputs_std=inputs_std))
    if include_behavior and add_behavior_as_channels:
        more.append(AddBehaviorAsChannels())
    if add_eye_pos_as_channels:
        if not include_eye_position:
            raise ValueError("add_eye_pos_as_channels needs include_eye_position=True")
        more.append(AddPupilCenterAsChannels())
    if select_input_channel is not None:
        more.append(SelectInputChannel(select_input_channel))
    if scale is not None and scale != 1:
        more.append(ScaleInputs(scale=scale))
    more += [Subsample(idx), ToTensor(cuda)]
    dat.transforms.extend(more)

    data_key = sensorium_data_key(path, dat)
    tier_array = np.asarray(dat.trial_info.tiers)
    image_id_array, image_class = _image_info(dat) if (image_ids is not None or image_condition is not None) \
        else (None, None)
    cond_filter = None
    if image_condition is not None:
        if image_class is None:
            raise ValueError(f"{dat.basepath}: image_condition needs the image class in meta/trials")
        cond_filter = np.isin(image_class, np.atleast_1d(image_condition))
    loaders = {}
    for t in ([tier] if tier else ["train", "validation", "test"]):
        if t == "train" and image_ids is not None:
            subset = select_train_images(dat, image_id_array, tier_array, image_ids)
        elif t == "train" and image_n is not None and cond_filter is None:
            state = np.random.get_state()
            try:
                if image_base_seed is not None:
                    np.random.seed(image_base_seed * image_n)
                subset = np.random.choice(np.flatnonzero(tier_array == "train"), size=image_n, replace=False)
            finally:
                np.random.set_state(state)
        elif cond_filter is not None:
            subset = np.flatnonzero(cond_filter & (tier_array == t))
        else:
            subset = np.flatnonzero(tier_array == t)
        sampler = SubsetRandomSampler(subset, seed) if t == "train" else SubsetSequentialSampler(subset)
        loaders[t] = DataLoader(dat, batch_size=batch_size, sampler=sampler)
    return (data_key, loaders) if get_key else loaders


def static_loaders(paths, batch_size, seed=None, areas=None, layers=None, tier=None, neuron_ids=None,
                   neuron_n=None, exclude_neuron_n=0, neuron_base_seed=None, image_ids=None, image_n=None,
                   image_base_seed=None, cuda=True, normalize=True, include_behavior=False,
                   add_behavior_as_channels=True, exclude=None, select_input_channel=None, file_tree=True,
                   image_condition=None, inputs_mean=None, inputs_std=None, scale=None, include_eye_position=None,
                   add_eye_pos_as_channels=None, include_trial_info_keys=None, overwrite_data_path=False, **kwargs):
    """Loaders of several scans: ``{'train': {data_key: loader}, 'validation': {...}, 'test': {...}}``
    (sensorium.datasets.static_loaders). ``neuron_ids`` / ``image_ids``: one list per path (or
    None). ``seed``: seeds NumPy and lviv_c (as the reference's set_random_seed) and each scan's
    train shuffling. Two paths with the same data key are an error."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("static_loaders: no paths given")
    if seed is not None:
        import random

        from .tensor import manual_seed
        np.random.seed(seed)
        random.seed(seed)
        manual_seed(seed)
    per_path = {}
    for name, val in (("neuron_ids", neuron_ids), ("image_ids", image_ids)):
        vals = [None] * len(paths) if val is None else list(val)
        if len(vals) != len(paths):
            raise ValueError(f"static_loaders: {name} needs one entry per path ({len(paths)}), got {len(vals)}")
        per_path[name] = vals
    dls = OrderedDict((t, OrderedDict()) for t in ([tier] if tier else ["train", "validation", "test"]))
    for i, path in enumerate(paths):
        key, loaders = static_loader(
            path, batch_size, areas=areas, layers=layers, tier=tier, neuron_ids=per_path["neuron_ids"][i],
            neuron_n=neuron_n, exclude_neuron_n=exclude_neuron_n, neuron_base_seed=neuron_base_seed,
            image_ids=per_path["image_ids"][i], image_n=image_n, image_base_seed=image_base_seed, get_key=True,
            cuda=cuda, normalize=normalize, exclude=exclude, include_behavior=include_behavior,
            add_behavior_as_channels=add_behavior_as_channels, select_input_channel=select_input_channel,
            file_tree=file_tree, image_condition=image_condition, inputs_mean=inputs_mean, inputs_std=inputs_std,
            scale=scale, include_eye_position=include_eye_position, add_eye_pos_as_channels=add_eye_pos_as_channels,
            include_trial_info_keys=include_trial_info_keys, seed=None if seed is None else seed + i, **kwargs)
        if key in dls[next(iter(dls))]:
            raise ValueError(f"static_loaders: two scans have the data key {key!r} ({path})")
        for t, loader in loaders.items():
            dls[t][key] = loader
    return dls
