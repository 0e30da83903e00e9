"""Gaussian readout of neuralpredictors (FullGaussian2d, MultipleFullGaussian2d) on lviv_c.

The read runs as two C ops: `readout_positions` (training: clamp(mu + sigma @ eps, -1, 1) with
eps ~ N(0, I) drawn per image and neuron inside the op, so a replayed graph draws fresh noise;
eval: clamp(mu, -1, 1)) and `gaussian_readout` (bilinear read of every channel at the position,
align_corners=True, zeros outside, times the neuron's feature weights, plus bias). Parameter
names and shapes are neuralpredictors': `_features` (1, C, 1, N), `sigma` (1, N, 2, 2) (full),
`bias` (N), `_mu` (1, N, 1, 2) without a grid-mean predictor, `mu_transform.*` and the buffer
`source_grid` (N, d) with the cortex predictor."""
import numpy as np

from .. import _C, nn
from ..nn import functional as F
from ..tensor import Tensor, empty, from_numpy, no_grad, positions, zeros

__all__ = ["ConfigurationError", "FullGaussian2d", "MultiReadout", "MultipleFullGaussian2d", "get_module_output"]

_GAUSS_TYPES = {"full": 0, "uncorrelated": 1, "isotropic": 2}


class ConfigurationError(Exception):
    pass


def readout_positions(mu, sigma, batch, sample, gauss_type="full", project=0):
    """Read positions: (batch, N, 2) sampled when `sample`, else (N, 2) = clamp(mu, -1, 1)."""
    return _C.readout_positions(mu, sigma, int(batch), bool(sample), _GAUSS_TYPES[gauss_type], int(project))


def gaussian_readout(x, pos, features, bias=None):
    """out[b, n] = sum_c features[c, n] * bilinear(x[b, c], pos[b or -, n]) + bias[n]."""
    return _C.gaussian_readout(x, pos, features, bias)


def _orthogonal2(scale):
    """scale * a random 2x2 orthogonal matrix (Haar: QR of a Gaussian draw with signs fixed)."""
    w = empty(2, 2)
    nn.init.orthogonal_(w)
    return np.asarray(w) * scale


class FullGaussian2d(nn.Module):
    """Per neuron a Gaussian over read positions (mean `mu`, covariance factor `sigma`) and C
    feature weights. Input (B, C, H, W) -> (B, N).

    in_shape: (C, H, W); init_mu_range: mu ~ U(-r, r) (free mu); init_sigma: full: sigma ~
    U(-s, s), else sigma = s; grid_mean_predictor: dict(hidden_layers, hidden_features,
    final_tanh) to predict mu from `source_grid` (N, d) (centred, divided by its largest absolute
    value); init_noise: std of the feature / bias draws; init_transform_scale: the predictor's
    2x2 weight is this times a random orthogonal matrix (no hidden layers)."""

    def __init__(self, in_shape, outdims, bias, init_mu_range=0.1, init_sigma=1, batch_sample=True,
                 align_corners=True, gauss_type="full", grid_mean_predictor=None, shared_features=None,
                 shared_grid=None, source_grid=None, shared_transform=None, init_noise=1e-3,
                 init_transform_scale=0.2, **kwargs):
        super().__init__()
        if init_mu_range > 1.0 or init_mu_range <= 0.0 or init_sigma <= 0.0:
            raise ValueError("either init_mu_range doesn't belong to [0.0, 1.0] or init_sigma_range is non-positive")
        if gauss_type not in _GAUSS_TYPES:
            raise ValueError(f'gauss_type "{gauss_type}" not known')
        if shared_features is not None or shared_grid is not None or shared_transform is not None:
            raise NotImplementedError("FullGaussian2d: shared features / grids / transforms are not implemented in lviv_c")
        self.gauss_type = gauss_type
        self.in_shape = tuple(in_shape)
        self.outdims = int(outdims)
        self.init_noise = init_noise
        self.init_transform_scale = init_transform_scale
        self.batch_sample = batch_sample
        self.grid_shape = (1, self.outdims, 1, 2)
        self._predicted_grid = False
        self._shared_grid = False
        self._original_grid = True
        self._shared_features = False
        self._original_features = True
        if grid_mean_predictor is None:
            self._mu = nn.Parameter(empty(*self.grid_shape))
        else:
            self.init_grid_predictor(source_grid=source_grid, **grid_mean_predictor)
        self.sigma_shape = {"full": (1, self.outdims, 2, 2), "uncorrelated": (1, self.outdims, 1, 2),
                            "isotropic": (1, self.outdims, 1, 1)}[gauss_type]
        self.init_sigma = init_sigma
        self.sigma = nn.Parameter(empty(*self.sigma_shape))
        c = self.in_shape[0]
        self._features = nn.Parameter(empty(1, c, 1, self.outdims))
        if bias:
            self.bias = nn.Parameter(empty(self.outdims))
        else:
            self.register_parameter("bias", None)
        self.init_mu_range = init_mu_range
        self.align_corners = align_corners
        self.initialize()

    # -- parameters
    @property
    def features(self):
        return self._features

    @property
    def shared_features(self):
        return self._features

    @property
    def mu(self):
        """(1, N, 1, 2) mean read positions (predicted from source_grid with a grid-mean predictor)."""
        if self._predicted_grid:
            return self.mu_transform(self.source_grid).reshape(*self.grid_shape)
        return self._mu

    def _mu_values(self):
        """mu as the position op takes it: the free parameter itself (1, N, 1, 2), or the
        predictor's output (N, 2)."""
        if self._predicted_grid:
            return self.mu_transform(self.source_grid)
        return self._mu

    @property
    def grid(self):
        return self.sample_grid(batch_size=1, sample=False)

    def init_grid_predictor(self, source_grid, hidden_features=20, hidden_layers=0, final_tanh=False,
                            shared_transform=None):
        if source_grid is None:
            raise ConfigurationError("a grid_mean_predictor needs a source_grid (neurons x input_dimensions)")
        self._original_grid = False
        source_grid = np.asarray(source_grid, dtype=np.float64)
        layers = [nn.Linear(source_grid.shape[1], hidden_features if hidden_layers > 0 else 2)]
        for i in range(hidden_layers):
            layers.extend([nn.ELU(), nn.Linear(hidden_features, hidden_features if i < hidden_layers - 1 else 2)])
        if final_tanh:
            layers.append(nn.Tanh())
        self.mu_transform = nn.Sequential(*layers)
        source_grid = source_grid - source_grid.mean(axis=0, keepdims=True)
        source_grid = source_grid / np.abs(source_grid).max()
        self.register_buffer("source_grid", from_numpy(np.ascontiguousarray(source_grid, dtype=np.float32)))
        self._predicted_grid = True

    def initialize(self):
        if not self._predicted_grid or self._original_grid:
            self._mu.data.uniform_(-self.init_mu_range, self.init_mu_range)
        if self.gauss_type != "full":
            self.sigma.data.fill_(self.init_sigma)
        else:
            self.sigma.data.uniform_(-self.init_sigma, self.init_sigma)
        self._features.data.normal_(0, self.init_noise)
        if self._predicted_grid:
            for layer in self.mu_transform:
                if isinstance(layer, nn.Linear):
                    layer.bias.data.normal_(0, self.init_noise)
            if len(self.mu_transform) == 1:
                self.mu_transform[0].weight.data.copy_(from_numpy(_orthogonal2(self.init_transform_scale)
                                                                  .astype(np.float32)))
        if self.bias is not None:
            self.bias.data.normal_(0, self.init_noise)

    def feature_l1(self, average=True):
        if average:
            return self._features.abs().mean()
        return self._features.abs().sum()

    # -- reading
    def _project_flags(self):
        flags = 0 if self._predicted_grid else 1  # neuralpredictors clamps its free mu in place
        if self.gauss_type != "full":
            flags |= 2  # and a non-full sigma to >= 0
        return flags

    def sample_grid(self, batch_size, sample=None):
        """Read positions (batch_size, N, 1, 2): sampled around mu in training (or when sample is
        True), else mu, clamped to [-1, 1]."""
        sample = self.training if sample is None else sample
        mu = self._mu_values()
        flags = self._project_flags()
        pos = readout_positions(mu, self.sigma if sample else None, batch_size if sample else 0, sample,
                                self.gauss_type, flags if sample else flags & 1)
        if not sample:
            pos = pos.reshape(1, self.outdims, 1, 2).expand(batch_size, self.outdims, 1, 2)
        return pos.reshape(batch_size, self.outdims, 1, 2)

    def forward(self, x, sample=None, shift=None, out_idx=None):
        """x (B, C, H, W) -> (B, N) (or (B, len(out_idx)))."""
        N, c, w, h = x.shape
        if tuple(self.in_shape) != (c, w, h):
            raise ValueError("the specified feature map dimension is not the readout's expected input dimension "
                             f"(expected {tuple(self.in_shape)}, got {(c, w, h)})")
        sample = self.training if sample is None else sample
        if out_idx is not None or not self.align_corners:
            return self._forward_generic(x, sample, shift, out_idx)
        mu = self._mu_values()
        flags = self._project_flags()
        if sample and self.batch_sample:
            pos = readout_positions(mu, self.sigma, N, True, self.gauss_type, flags)
        elif sample:  # one draw for the whole batch
            pos = readout_positions(mu, self.sigma, 1, True, self.gauss_type, flags).reshape(self.outdims, 2)
        else:
            pos = readout_positions(mu, None, 0, False, self.gauss_type, flags & 1)
        if shift is not None:
            # eye-position shift (B, 2) added to every neuron's (clamped) position, as
            # neuralpredictors adds it to the grid; the read is not clamped again (zeros outside)
            if tuple(shift.shape) != (N, 2):
                raise ValueError(f"shift must have shape (batch, 2) = ({N}, 2), got {tuple(shift.shape)}")
            pos = pos.reshape(-1 if pos.ndim == 3 else 1, self.outdims, 2) + shift.reshape(N, 1, 2)
        return gaussian_readout(x, pos, self._features, self.bias)

    def _forward_generic(self, x, sample, shift, out_idx):
        """grid_sample path (any align_corners, eye-position shifts, neuron subsets)."""
        N, c = x.shape[0], x.shape[1]
        if self.batch_sample:
            grid = self.sample_grid(batch_size=N, sample=sample)
        else:
            grid = self.sample_grid(batch_size=1, sample=sample).expand(N, self.outdims, 1, 2)
        feat = self._features.reshape(1, c, self.outdims)
        bias = self.bias
        outdims = self.outdims
        if out_idx is not None:
            out_idx = positions(out_idx, self.outdims, "out_idx")
            idx = from_numpy(out_idx)
            if feat.is_cuda:  # device placement: the index follows the parameters
                idx = idx.cuda()
            feat = feat.index_select(2, idx)
            grid = grid.index_select(1, idx)
            if bias is not None:
                bias = bias.index_select(0, idx)
            outdims = len(out_idx)
        if shift is not None:
            grid = grid + shift.reshape(N, 1, 1, 2)
        y = F.grid_sample(x, grid, align_corners=self.align_corners)
        y = (y.reshape(N, c, outdims) * feat).sum(1).reshape(N, outdims)
        if bias is not None:
            y = y + bias
        return y

    def __repr__(self):
        c, w, h = self.in_shape
        r = self.gauss_type + " " + self.__class__.__name__ + f" ({c} x {w} x {h} -> {self.outdims})"
        if self.bias is not None:
            r += " with bias"
        if self._predicted_grid:
            r += ", with predicted grid"
        for ch in self.children():
            r += "  -> " + repr(ch) + "\n"
        return r


def get_module_output(model, input_shape):
    """Output shape of `model` for one zero input of shape (1, *input_shape[1:]) (eval, no grad)."""
    was = model.training
    model.eval()
    try:
        with no_grad():
            out = model(zeros(1, *tuple(input_shape)[1:]))
    finally:
        model.train(was)
    return tuple(out.shape)


class MultiReadout:
    """A readout per data key; forward / regularizer dispatch on `data_key` (None: the only one)."""

    def _key(self, data_key):
        if data_key is None:
            if len(self) != 1:
                raise KeyError(f"data_key is needed with {len(self)} readouts ({', '.join(self.keys())})")
            data_key = next(iter(self.keys()))
        return data_key

    def forward(self, *args, data_key=None, **kwargs):
        return self[self._key(data_key)](*args, **kwargs)

    def regularizer(self, data_key=None):
        return self[self._key(data_key)].feature_l1(average=False) * self.gamma_readout


class MultipleFullGaussian2d(MultiReadout, nn.ModuleDict):
    """One FullGaussian2d per data key over a shared core (module names = data keys)."""

    def __init__(self, core, in_shape_dict, n_neurons_dict, init_mu_range, init_sigma, bias, gamma_readout,
                 gauss_type="full", grid_mean_predictor=None, grid_mean_predictor_type=None, source_grids=None,
                 share_features=False, share_grid=False, share_transform=False, shared_match_ids=None,
                 init_noise=1e-3, init_transform_scale=0.2, **kwargs):
        nn.ModuleDict.__init__(self)
        if share_features or share_grid or share_transform:
            raise NotImplementedError("sharing features / grids / transforms between readouts is not implemented in lviv_c")
        for k in n_neurons_dict:
            in_shape = get_module_output(core, in_shape_dict[k])[1:]
            source_grid = None
            if grid_mean_predictor is not None:
                if grid_mean_predictor_type == "cortex":
                    source_grid = source_grids[k]
                else:
                    raise KeyError(f"grid mean predictor {grid_mean_predictor_type} does not exist")
            self.add_module(k, FullGaussian2d(
                in_shape=in_shape, outdims=n_neurons_dict[k], init_mu_range=init_mu_range, bias=bias,
                init_sigma=init_sigma, gauss_type=gauss_type, grid_mean_predictor=grid_mean_predictor,
                source_grid=source_grid, init_noise=init_noise, init_transform_scale=init_transform_scale))
        self.gamma_readout = gamma_readout
