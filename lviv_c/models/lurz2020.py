"""The Lurz et al. 2020 model (SE2dCore + FullGaussian2d with a cortex grid-mean predictor), built
like `lviv.models.build_lurz2020_model` / neuralpredictors 0.0.x."""
import copy

import numpy as np

from .. import nn
from ..nn import functional as F
from ..tensor import Tensor, manual_seed
from .cores import SE2dCore
from .readouts import MultipleFullGaussian2d

__all__ = ["Encoder", "build_lurz2020_model", "get_dims_for_loader_dict", "unpack_data_info"]


class Encoder(nn.Module):
    """core + readout (one per data key): rate = ELU(readout(core(x)) + elu_offset) + 1."""

    def __init__(self, core, readout, elu_offset):
        super().__init__()
        self.core = core
        self.readout = readout
        self.offset = elu_offset

    def forward(self, x, data_key=None, detach_core=False, **kwargs):
        """x (B, C, H, W) -> rates (B, N) of the scan `data_key` (None: the only one)."""
        if data_key is None and len(self.readout) == 1:
            data_key = list(self.readout.keys())[0]
        x = self.core(x)
        if detach_core:
            x = x.detach()
        if "sample" in kwargs:
            x = self.readout(x, data_key=data_key, sample=kwargs["sample"])
        else:
            x = self.readout(x, data_key=data_key)
        if self.offset:
            x = x + self.offset
        return F.elu(x) + 1

    def regularizer(self, data_key=None):
        """Core (Laplace on the first-layer filters) + readout (L1 of the feature weights)."""
        if data_key is None and len(self.readout) == 1:
            data_key = list(self.readout.keys())[0]
        return self.core.regularizer() + self.readout.regularizer(data_key)


def _first_batch(loader):
    return next(iter(loader))


def get_dims_for_loader_dict(dataloaders):
    """{data_key: {field: shape of the first batch's field}}."""
    out = {}
    for k, loader in dataloaders.items():
        b = _first_batch(loader)
        out[k] = {f: tuple(getattr(b, f).shape) for f in b._fields}
    return out


def unpack_data_info(data_info):
    in_shapes_dict = {k: v["input_dimensions"] for k, v in data_info.items()}
    input_channels = [v["input_channels"] for k, v in data_info.items()]
    n_neurons_dict = {k: v["output_dimension"] for k, v in data_info.items()}
    return n_neurons_dict, in_shapes_dict, input_channels


def _source_grid(loader, input_dim, seed):
    neurons = loader.dataset.neurons
    ids = getattr(neurons, "animal_ids", None) if _has(neurons, "animal_ids") else None
    if ids is not None and len(ids) and ids[0] == 0 and _has(neurons, "center"):
        # simulated data (neuralpredictors' convention): a random non-degenerate linear transform
        # of the true positions
        rng = np.random.default_rng(seed)
        true = np.asarray(neurons.center)[:, :input_dim]
        grid_bias = rng.random(2) * 3
        det, loops = 0.0, 0
        while det < 5.0 and loops < 100:
            matrix = rng.random((2, 2)) * 3
            det = np.linalg.det(matrix)
            loops += 1
        if det <= 5.0:
            raise ValueError("Did not find a non-degenerate matrix")
        return (matrix @ true.T).T + grid_bias
    return np.asarray(neurons.cell_motor_coordinates)[:, :input_dim]


def _has(obj, name):
    try:
        getattr(obj, name)
        return True
    except (AttributeError, KeyError, FileNotFoundError):
        return False


def build_lurz2020_model(dataloaders, seed, elu_offset=0, data_info=None, transfer_state_dict=None,
                         # core args
                         hidden_channels=64, input_kern=9, hidden_kern=7, layers=4, gamma_input=6.3831, skip=0,
                         bias=False, final_nonlinearity=True, momentum=0.9, pad_input=False, batch_norm=True,
                         hidden_dilation=1, laplace_padding=None, input_regularizer="LaplaceL2norm", stack=-1,
                         se_reduction=32, n_se_blocks=0, depth_separable=True, linear=False,
                         # readout args
                         init_mu_range=0.3, init_sigma=0.1, readout_bias=True, gamma_readout=0.0076,
                         gauss_type="full",
                         grid_mean_predictor={"type": "cortex", "input_dimensions": 2, "hidden_layers": 0,  # noqa: B006
                                              "hidden_features": 30, "final_tanh": True},
                         share_features=False, share_grid=False, share_transform=False, init_noise=1e-3,
                         init_transform_scale=0.2):
    """SE2dCore + one FullGaussian2d per scan (Lurz et al. 2020), seeded: the same seed gives the
    same parameters.

    dataloaders: {'train': loader or {data_key: loader}, ...}, a {data_key: loader} dict, or one
    loader (its readout is then called 'dataset'); loaders yield named tuples (images, responses)
    and expose `.dataset.neurons.cell_motor_coordinates` for the cortex grid-mean predictor. The
    readout bias starts at the mean response of one training batch. Returns an Encoder."""
    if transfer_state_dict is not None:
        print("Transfer state_dict given. This will only have an effect in the bayesian hypersearch. "
              "See: TrainedModelBayesianTransfer ")
    if share_features or share_grid or share_transform:
        raise NotImplementedError("share_features / share_grid / share_transform are not implemented in lviv_c")

    if data_info is not None:
        n_neurons_dict, in_shapes_dict, input_channels = unpack_data_info(data_info)
    else:
        if isinstance(dataloaders, dict) and "train" in dataloaders:
            dataloaders = dataloaders["train"]
        if not isinstance(dataloaders, dict):
            dataloaders = dict(dataset=dataloaders)
        in_name, out_name = _first_batch(list(dataloaders.values())[0])._fields
        session_shape_dict = get_dims_for_loader_dict(dataloaders)
        n_neurons_dict = {k: v[out_name][1] for k, v in session_shape_dict.items()}
        in_shapes_dict = {k: v[in_name] for k, v in session_shape_dict.items()}
        input_channels = [v[in_name][1] for v in session_shape_dict.values()]

    core_input_channels = list(input_channels.values())[0] if isinstance(input_channels, dict) else input_channels[0]

    source_grids = None
    grid_mean_predictor_type = None
    if grid_mean_predictor is not None:
        grid_mean_predictor = copy.deepcopy(grid_mean_predictor)
        grid_mean_predictor_type = grid_mean_predictor.pop("type")
        if grid_mean_predictor_type == "cortex":
            input_dim = grid_mean_predictor.pop("input_dimensions", 2)
            if data_info is not None:
                raise ValueError("the cortex grid-mean predictor needs dataloaders (cell_motor_coordinates); "
                                 "with data_info, pass grid_mean_predictor=None")
            source_grids = {k: _source_grid(v, input_dim, seed) for k, v in dataloaders.items()}
        elif grid_mean_predictor_type == "shared":
            raise NotImplementedError("the 'shared' grid-mean predictor is not implemented in lviv_c")
        else:
            raise ValueError(f"Grid mean predictor type {grid_mean_predictor_type} not understood.")

    manual_seed(seed)

    core = SE2dCore(input_channels=core_input_channels, hidden_channels=hidden_channels, input_kern=input_kern,
                    hidden_kern=hidden_kern, layers=layers, gamma_input=gamma_input, skip=skip,
                    final_nonlinearity=final_nonlinearity, bias=bias, momentum=momentum, pad_input=pad_input,
                    batch_norm=batch_norm, hidden_dilation=hidden_dilation, laplace_padding=laplace_padding,
                    input_regularizer=input_regularizer, stack=stack, se_reduction=se_reduction,
                    n_se_blocks=n_se_blocks, depth_separable=depth_separable, linear=linear)

    readout = MultipleFullGaussian2d(core, in_shape_dict=in_shapes_dict, n_neurons_dict=n_neurons_dict,
                                     init_mu_range=init_mu_range, bias=readout_bias, init_sigma=init_sigma,
                                     gamma_readout=gamma_readout, gauss_type=gauss_type,
                                     grid_mean_predictor=grid_mean_predictor,
                                     grid_mean_predictor_type=grid_mean_predictor_type, source_grids=source_grids,
                                     init_noise=init_noise, init_transform_scale=init_transform_scale)

    if readout_bias and data_info is None:
        for key, value in dataloaders.items():
            _, targets = _first_batch(value)
            if not isinstance(targets, Tensor):
                targets = Tensor(np.asarray(targets, dtype=np.float32))
            readout[key].bias.data.copy_(targets.mean(0).detach())

    return Encoder(core, readout, elu_offset)
