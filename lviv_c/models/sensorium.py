"""The Sensorium 2022 benchmark models on lviv_c (sensorium's `stacked_core_full_gauss_readout` on
neuralpredictors 0.3.0).

A stacked core (first conv, then depth-separable layers: 1x1 in-depth, k x k depthwise, 1x1
out-depth, each with BatchNorm and ELU unless `linear`), one FullGaussian2d readout per scan with
the cortex grid-mean predictor (source_grid -> Linear -> ELU -> Linear -> Tanh = mean read
position), optionally one MLP shifter per scan (pupil center -> Tanh MLP -> a (dx, dy) added to
every neuron's read position), and the firing-rate head ELU(x + elu_offset) + 1.

Module names, parameter and buffer names and shapes are the reference's, so the published
checkpoints load unchanged::

    model = load_sensorium_checkpoint("sensorium_p_sota_model.pth")
    rates = model(images, data_key="27204-5-13", pupil_center=pupil_center)

`build_sensorium_model(dataloaders, seed, ...)` builds the model for `lviv_c.sensorium_data.
static_loaders` loaders (batches `(images, responses[, behavior][, pupil_center])`).
"""
import copy
import os
import re
import sys

import numpy as np

from .. import nn
from ..nn import functional as F
from ..tensor import Tensor, cat, from_numpy, manual_seed
from .cores import SE2dCore
from .readouts import MultipleFullGaussian2d

__all__ = ["MLP", "MLPShifter", "FiringRateEncoder", "build_sensorium_model", "stacked_core_full_gauss_readout",
           "load_sensorium_checkpoint", "sensorium_config_from_state_dict", "SENSORIUM_2022_CONFIG"]

#: The configuration the published Sensorium 2022 checkpoints were trained with (the sensorium
#: model tutorial); `linear=True, layers=3` for the *_ln_* files, `shifter=True` for the *_p_* ones.
SENSORIUM_2022_CONFIG = dict(
    pad_input=False, stack=-1, layers=4, input_kern=9, gamma_input=6.3831, gamma_readout=0.0076, hidden_kern=7,
    hidden_channels=64, depth_separable=True,
    grid_mean_predictor={"type": "cortex", "input_dimensions": 2, "hidden_layers": 1, "hidden_features": 30,
                         "final_tanh": True},
    init_sigma=0.1, init_mu_range=0.3, gauss_type="full", shifter=False)


class MLP(nn.Module):
    """One scan's shifter: `shift_layers - 1` (Linear -> Tanh) hidden layers of `hidden_channels`,
    then Linear -> 2 -> Tanh. Input (B, input_features) (the pupil center, z-scored), output (B, 2)
    in readout-grid units. Module names `mlp.0`, `mlp.2`, ... as the reference."""

    def __init__(self, input_features=2, hidden_channels=10, shift_layers=1, **kwargs):
        super().__init__()
        if shift_layers < 1:
            raise ValueError(f"shift_layers must be at least 1, got {shift_layers}")
        self.input_features = int(input_features)
        prev = self.input_features
        feat = []
        for _ in range(shift_layers - 1):
            feat.extend([nn.Linear(prev, hidden_channels), nn.Tanh()])
            prev = hidden_channels
        feat.extend([nn.Linear(prev, 2), nn.Tanh()])
        self.mlp = nn.Sequential(*feat)

    def regularizer(self):
        return 0

    def forward(self, pupil_center, trial_idx=None):
        if trial_idx is not None:
            pupil_center = cat([pupil_center, trial_idx], dim=1)
        if pupil_center.ndim != 2 or pupil_center.shape[1] != self.input_features:
            raise ValueError(f"the shifter expects (batch, {self.input_features}) eye positions, got "
                             f"{tuple(pupil_center.shape)}")
        return self.mlp(pupil_center)


class MLPShifter(nn.ModuleDict):
    """One MLP shifter per data key (neuralpredictors' MLPShifter). The Linear layers keep their
    default (PyTorch) initialisation, as the reference's (its xavier re-initialisation never
    matches a layer)."""

    def __init__(self, data_keys, input_channels=2, hidden_channels_shifter=2, shift_layers=1, gamma_shifter=0,
                 **kwargs):
        super().__init__()
        self.gamma_shifter = gamma_shifter
        for k in data_keys:
            self.add_module(k, MLP(input_channels, hidden_channels_shifter, shift_layers))

    def regularizer(self, data_key):
        return self[data_key].regularizer() * self.gamma_shifter


def _as_tensor(x, what):
    if isinstance(x, Tensor):
        return x
    try:
        return from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.float32)))
    except (TypeError, ValueError):
        raise TypeError(f"{what}: expected a tensor or an array, got {type(x).__name__}") from None


class FiringRateEncoder(nn.Module):
    """core -> [shifter] -> readout -> ELU(x + elu_offset) + 1 (neuralpredictors' FiringRateEncoder).

    forward(images, data_key=None, behavior=None, pupil_center=None, trial_idx=None, shift=None,
    detach_core=False): images (B, C, H, W). For the p models C includes the three behavior
    channels (the loaders' `include_behavior=True` adds them); images with only the stimulus
    channels get `behavior` (B, 3) appended as constant channels here. With a shifter,
    `pupil_center` (B, 2) is required; `shift` (B, 2) gives the readout shift directly. data_key
    None: the only scan."""

    def __init__(self, core, readout, shifter=None, modulator=None, elu_offset=0.0, nonlinearity_type="elu"):
        super().__init__()
        if modulator is not None:
            raise NotImplementedError("modulators are not implemented in lviv_c (nor used by the Sensorium models)")
        if nonlinearity_type not in ("elu", "identity"):
            raise ValueError(f"nonlinearity_type must be 'elu' or 'identity', got {nonlinearity_type!r}")
        self.core = core
        self.readout = readout
        self.shifter = shifter
        self.modulator = None
        self.offset = elu_offset
        self.nonlinearity_type = nonlinearity_type

    @property
    def data_keys(self):
        return list(self.readout.keys())

    def _key(self, data_key):
        return self.readout._key(data_key)

    def _with_behavior(self, x, behavior):
        want = getattr(self.core, "input_channels", x.shape[1])
        if x.ndim != 4:
            raise ValueError(f"images must be (batch, channels, height, width), got {tuple(x.shape)}")
        if x.shape[1] == want:
            return x
        if behavior is not None:
            behavior = _as_tensor(behavior, "behavior")
            if behavior.ndim == 2 and behavior.shape[0] == x.shape[0] and x.shape[1] + behavior.shape[1] == want:
                b = behavior.reshape(x.shape[0], behavior.shape[1], 1, 1).expand(
                    x.shape[0], behavior.shape[1], x.shape[2], x.shape[3])
                return cat([x, b], dim=1)
        raise ValueError(f"the core expects {want} input channels, the images have {x.shape[1]}"
                         + ("" if behavior is not None else
                            f"; pass behavior=(batch, {want - x.shape[1]}) to add the behavior channels"))

    def forward(self, inputs, *args, targets=None, data_key=None, behavior=None, pupil_center=None, trial_idx=None,
                shift=None, detach_core=False, **kwargs):
        data_key = self._key(data_key)
        inputs = self._with_behavior(_as_tensor(inputs, "images"), behavior)
        x = self.core(inputs)
        if detach_core:
            x = x.detach()
        if self.shifter:
            if pupil_center is None:
                raise ValueError("pupil_center is not given (this model shifts its readout by the eye position)")
            pc = _as_tensor(pupil_center, "pupil_center")
            if trial_idx is not None:
                trial_idx = _as_tensor(trial_idx, "trial_idx")
            shift = self.shifter[data_key](pc, trial_idx)
        elif shift is not None:
            shift = _as_tensor(shift, "shift")
        # the reference's evaluation passes the whole batch as keywords (images=, responses=, ...):
        # only the readout's own options go on
        ro = {k: kwargs[k] for k in ("sample", "out_idx") if k in kwargs}
        x = self.readout(x, data_key=data_key, shift=shift, **ro)
        if self.nonlinearity_type == "elu":
            return F.elu(x + self.offset) + 1 if self.offset else F.elu(x) + 1
        return x

    def regularizer(self, data_key=None, detach_core=False):
        """The reference trainer's regularizers: core (Laplace on the first layer) + readout
        (L1 of the feature weights) [+ shifter]."""
        data_key = self._key(data_key)
        reg = self.readout.regularizer(data_key)
        if not detach_core:
            reg = self.core.regularizer() + reg
        if self.shifter and self.shifter.gamma_shifter:
            reg = reg + self.shifter.regularizer(data_key)
        return reg

    def predict_mean(self, x, *args, data_key=None, **kwargs):
        return self.forward(x, *args, data_key=data_key, **kwargs)


# ---------------------------------------------------------------------------------------- builder

def _train_loaders(dataloaders):
    if isinstance(dataloaders, dict) and "train" in dataloaders:
        dataloaders = dataloaders["train"]
    if not isinstance(dataloaders, dict) or not dataloaders:
        raise TypeError("build_sensorium_model: expected {'train': {data_key: loader}, ...} or {data_key: loader} "
                        f"(as static_loaders returns), got {type(dataloaders).__name__}")
    return dataloaders


def _first_batch(loader):
    return next(iter(loader))


def _source_grids(grid_mean_predictor, dataloaders):
    if grid_mean_predictor is None:
        return None, None, None
    gmp = copy.deepcopy(grid_mean_predictor)
    gtype = gmp.pop("type")
    if gtype != "cortex":
        raise ValueError(f"grid mean predictor type {gtype!r} is not supported (lviv_c has 'cortex')")
    dim = gmp.pop("input_dimensions", 2)
    grids = {}
    for k, v in dataloaders.items():
        try:
            grids[k] = np.asarray(v.dataset.neurons.cell_motor_coordinates)[:, :dim]
        except (AttributeError, KeyError, FileNotFoundError):
            raise ValueError(f"scan {k}: the cortex grid-mean predictor needs meta/neurons/"
                             "cell_motor_coordinates") from None
    return gmp, gtype, grids


def _reference_readout_init(readout):
    """neuralpredictors 0.3.0's FullGaussian2d initialisation: features 1/C, bias 0, the grid
    predictor's Linear layers with their default initialisation."""
    for r in readout.values():
        r._features.data.fill_(1.0 / r.in_shape[0])
        if r.bias is not None:
            r.bias.data.fill_(0.0)
        if r._predicted_grid:
            for layer in r.mu_transform:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()


def build_sensorium_model(dataloaders, seed, hidden_channels=32, input_kern=13, hidden_kern=3, layers=3,
                          gamma_input=15.5, skip=0, final_nonlinearity=True, momentum=0.9, pad_input=False,
                          batch_norm=True, hidden_dilation=1, laplace_padding=None,
                          input_regularizer="LaplaceL2norm", init_mu_range=0.2, init_sigma=1.0, readout_bias=True,
                          gamma_readout=4, elu_offset=0, stack=None, depth_separable=False, linear=False,
                          gauss_type="full", grid_mean_predictor=None, attention_conv=False, shifter=None,
                          shifter_type="MLP", input_channels_shifter=2, hidden_channels_shifter=5, shift_layers=3,
                          gamma_shifter=0, shifter_bias=True, hidden_padding=None, core_bias=False, data_info=None):
    """sensorium.models.stacked_core_full_gauss_readout with the same arguments and defaults.

    dataloaders: {'train': {data_key: loader}, ...} or {data_key: loader} (static_loaders);
    the first batch of each train loader gives the input channels (images (B, C, H, W) -- with
    `include_behavior` C counts the behavior channels) and the neuron count; the readout's cortex
    grid comes from `loader.dataset.neurons.cell_motor_coordinates`. Or `data_info`
    {data_key: {'input_channels', 'input_dimensions' (B, C, H, W), 'output_dimension',
    'source_grid' (N, 2) when grid_mean_predictor}} without data (load_sensorium_checkpoint).
    `shifter=True`: an MLP shifter per scan (pupil center -> readout shift). Seeded: the same seed
    gives the same parameters. Returns a FiringRateEncoder."""
    if attention_conv:
        raise NotImplementedError("attention_conv cores are not implemented in lviv_c")
    if shifter is True and shifter_type != "MLP":
        raise NotImplementedError(f"shifter_type {shifter_type!r}: lviv_c has the 'MLP' shifter")
    if data_info is not None:
        keys = list(data_info)
        n_neurons = {k: int(v["output_dimension"]) for k, v in data_info.items()}
        in_shapes = {k: tuple(v["input_dimensions"]) for k, v in data_info.items()}
        core_in = int(data_info[keys[0]]["input_channels"])
        gmp, gtype, grids = None, None, None
        if grid_mean_predictor is not None:
            gmp = copy.deepcopy(grid_mean_predictor)
            gtype = gmp.pop("type")
            dim = gmp.pop("input_dimensions", 2)
            grids = {k: np.asarray(v["source_grid"])[:, :dim] for k, v in data_info.items()}
    else:
        loaders = _train_loaders(dataloaders)
        keys = list(loaders)
        firsts = {k: _first_batch(v) for k, v in loaders.items()}
        in_name, out_name = firsts[keys[0]]._fields[:2]
        n_neurons = {k: int(getattr(b, out_name).shape[1]) for k, b in firsts.items()}
        in_shapes = {k: tuple(getattr(b, in_name).shape) for k, b in firsts.items()}
        core_in = in_shapes[keys[0]][1]
        gmp, gtype, grids = _source_grids(grid_mean_predictor, loaders)

    manual_seed(seed)
    np.random.seed(seed)
    core = SE2dCore(input_channels=core_in, hidden_channels=hidden_channels, input_kern=input_kern,
                    hidden_kern=hidden_kern, layers=layers, gamma_input=gamma_input, skip=skip,
                    final_nonlinearity=final_nonlinearity, bias=core_bias, momentum=momentum, pad_input=pad_input,
                    batch_norm=batch_norm, hidden_dilation=hidden_dilation, laplace_padding=laplace_padding,
                    input_regularizer=input_regularizer, stack=stack, depth_separable=depth_separable,
                    linear=linear, hidden_padding=hidden_padding)
    readout = MultipleFullGaussian2d(core, in_shape_dict=in_shapes, n_neurons_dict=n_neurons,
                                     init_mu_range=init_mu_range, bias=readout_bias, init_sigma=init_sigma,
                                     gamma_readout=gamma_readout, gauss_type=gauss_type, grid_mean_predictor=gmp,
                                     grid_mean_predictor_type=gtype, source_grids=grids)
    _reference_readout_init(readout)
    shift_mod = None
    if shifter is True:
        shift_mod = MLPShifter(keys, input_channels=input_channels_shifter,
                               hidden_channels_shifter=hidden_channels_shifter, shift_layers=shift_layers,
                               gamma_shifter=gamma_shifter)
    return FiringRateEncoder(core=core, readout=readout, shifter=shift_mod, elu_offset=elu_offset)


#: the reference's name for the builder
stacked_core_full_gauss_readout = build_sensorium_model


# ---------------------------------------------------------------------------------- checkpoints

_LAYER = re.compile(r"^core\.features\.layer(\d+)\.")


def _shape(v):
    return tuple(int(s) for s in v.shape)


def sensorium_config_from_state_dict(state_dict):
    """(builder kwargs, data_info) of the model a Sensorium state dict belongs to, read from its keys
    and shapes: data keys, neurons, input channels, layers, kernels, hidden channels, depth
    separability, the grid predictor's hidden layers and the shifter. Linearity of the core is not
    in the keys (pass it separately)."""
    sd = state_dict
    if "core.features.layer0.conv.weight" not in sd:
        raise ValueError("not a Sensorium / neuralpredictors stacked-core state dict: no "
                         "'core.features.layer0.conv.weight'")
    w0 = sd["core.features.layer0.conv.weight"]
    hidden, c_in, k_in = _shape(w0)[0], _shape(w0)[1], _shape(w0)[2]
    layer_ids = sorted({int(m.group(1)) for k in sd for m in [_LAYER.match(k)] if m})
    n_layers = max(layer_ids) + 1
    cfg = dict(hidden_channels=hidden, input_kern=k_in, layers=n_layers, stack=-1,
               batch_norm="core.features.layer0.norm.weight" in sd or "core.features.layer0.norm.running_mean" in sd)
    if n_layers > 1:
        if "core.features.layer1.ds_conv.spatial_conv.weight" in sd:
            cfg["depth_separable"] = True
            cfg["hidden_kern"] = _shape(sd["core.features.layer1.ds_conv.spatial_conv.weight"])[2]
        elif "core.features.layer1.conv.weight" in sd:
            cfg["depth_separable"] = False
            cfg["hidden_kern"] = _shape(sd["core.features.layer1.conv.weight"])[2]
    keys = []
    for k in sd:
        if k.startswith("readout.") and k.endswith("._features"):
            keys.append(k[len("readout."):-len("._features")])
    if not keys:
        raise ValueError("the state dict has no readout ('readout.<data_key>._features')")
    k0 = keys[0]
    feat = _shape(sd[f"readout.{k0}._features"])
    if feat[1] == hidden * n_layers and n_layers > 1:
        cfg["stack"] = None
    elif feat[1] != hidden:
        raise ValueError(f"readout {k0} reads {feat[1]} channels; the core has {hidden} per layer")
    cfg["gauss_type"] = {(2, 2): "full", (1, 2): "uncorrelated", (1, 1): "isotropic"}[
        _shape(sd[f"readout.{k0}.sigma"])[2:]]
    cfg["readout_bias"] = f"readout.{k0}.bias" in sd
    if f"readout.{k0}.source_grid" in sd:
        pat = re.compile(rf"^readout\.{re.escape(k0)}\.mu_transform\.(\d+)\.weight$")
        lin = sorted(int(m.group(1)) for k in sd for m in [pat.match(k)] if m)
        hidden_layers = len(lin) - 1
        hf = _shape(sd[f"readout.{k0}.mu_transform.{lin[0]}.weight"])[0] if hidden_layers else 30
        final_tanh = True  # not in the keys (a Tanh has no parameters); the Sensorium models use it
        cfg["grid_mean_predictor"] = {"type": "cortex", "input_dimensions": _shape(sd[f"readout.{k0}.source_grid"])[1],
                                      "hidden_layers": hidden_layers, "hidden_features": hf, "final_tanh": final_tanh}
    else:
        cfg["grid_mean_predictor"] = None
    shifter_keys = [k for k in sd if k.startswith("shifter.")]
    cfg["shifter"] = bool(shifter_keys)
    if shifter_keys:
        lin = sorted(int(m.group(1)) for k in shifter_keys
                     for m in [re.match(rf"^shifter\.{re.escape(k0)}\.mlp\.(\d+)\.weight$", k)] if m)
        cfg["shift_layers"] = len(lin)
        cfg["input_channels_shifter"] = _shape(sd[f"shifter.{k0}.mlp.{lin[0]}.weight"])[1]
        if len(lin) > 1:
            cfg["hidden_channels_shifter"] = _shape(sd[f"shifter.{k0}.mlp.{lin[0]}.weight"])[0]
    data_info = {}
    for k in keys:
        n = _shape(sd[f"readout.{k}._features"])[3]
        info = {"input_channels": c_in, "output_dimension": n, "input_dimensions": (1, c_in, None, None)}
        if f"readout.{k}.source_grid" in sd:
            info["source_grid"] = np.asarray(sd[f"readout.{k}.source_grid"].detach().cpu()
                                             if hasattr(sd[f"readout.{k}.source_grid"], "detach")
                                             else sd[f"readout.{k}.source_grid"], dtype=np.float64)
        data_info[k] = info
    return cfg, data_info


def _readout_input_hw(cfg, image_hw):
    """Spatial size of the core's output for images of image_hw (pad_input=False: the first
    layer shrinks by input_kern - 1; the depth-separable layers pad to keep the size)."""
    h, w = image_hw
    return h - cfg["input_kern"] + 1, w - cfg["input_kern"] + 1


def load_sensorium_checkpoint(path, linear=None, image_shape=(36, 64), device="cpu", verbose=True, **overrides):
    """The model a Sensorium state-dict file belongs to, with its weights, in eval mode.

    The architecture is read from the file's keys and shapes (sensorium_config_from_state_dict);
    the rest is the Sensorium 2022 configuration (SENSORIUM_2022_CONFIG). Whether the core is
    linear is not in the keys: `linear=None` guesses it from the file name (a name with '_ln'
    (e.g. sensorium_p_ln_model.pth) -> linear) and says so on stderr. `image_shape`: (H, W) of the
    images the model reads (36x64 for the published models; the readout only needs the core's
    output size, so another size works if the readout grid still fits). The readout grid comes
    from the stored `source_grid`. `overrides`: builder arguments to change."""
    from ..serialization import load
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    sd = load(path)
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a state dict (a dict of tensors), got {type(sd).__name__}")
    try:
        cfg, data_info = sensorium_config_from_state_dict(sd)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if linear is None:
        name = os.path.basename(path).lower()
        linear = bool(re.search(r"(^|[_\-.])ln([_\-.]|$)", name) or "linear" in name)
        if verbose:
            print(f"lviv_c: {os.path.basename(path)}: linear={linear} (guessed from the file name; "
                  "pass linear= to choose)", file=sys.stderr)
    kw = {k: v for k, v in SENSORIUM_2022_CONFIG.items()}
    kw.update(cfg)
    kw["linear"] = bool(linear)
    kw.update(overrides)
    h, w = image_shape
    for info in data_info.values():
        info["input_dimensions"] = (1, info["input_channels"], int(h), int(w))
    model = build_sensorium_model(None, seed=0, data_info=data_info, **kw)
    missing = [k for k in model.state_dict() if k not in sd]
    extra = [k for k in sd if k not in model.state_dict()]
    if missing or extra:
        raise ValueError(f"{path}: the rebuilt model does not match the file (missing {missing[:3]}, "
                         f"unexpected {extra[:3]})")
    model.load_state_dict(sd)
    if device != "cpu":
        model = model.to(device)
    model.eval()
    return model
