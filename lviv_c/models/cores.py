"""Convolutional cores of neuralpredictors (Stacked2dCore, SE2dCore) on lviv_c.

Module names, parameter/buffer names and shapes follow neuralpredictors 0.0.x, so state dicts
can be exchanged with PyTorch (`core.features.layer0.conv.weight`, `core.features.layer1.ds_conv.
in_depth_conv.weight`, `core.features.layerK.norm.running_mean`, `core._input_weights_regularizer.
laplace.filter`, ...). BatchNorm followed by the default ELU runs as one fused C op."""
import warnings
from collections import OrderedDict
from collections.abc import Iterable

from .. import nn
from ..nn import functional as F
from ..tensor import Tensor, cat, ones, zeros
from . import regularizers

__all__ = ["AdaptiveELU", "Bias2DLayer", "Scale2DLayer", "DepthSeparableConv2d", "SqueezeExcitationBlock",
           "GlobalAvgPool", "Core", "Stacked2dCore", "SE2dCore"]


class AdaptiveELU(nn.Module):
    """ELU(x - xshift) + yshift."""

    def __init__(self, xshift=0.0, yshift=0.0, **kwargs):
        super().__init__()
        self.xshift = xshift
        self.yshift = yshift

    def forward(self, x):
        if self.xshift:
            x = x - self.xshift
        y = F.elu(x)
        return y + self.yshift if self.yshift else y

    def extra_repr(self):
        return f"xshift={self.xshift}, yshift={self.yshift}"


class Bias2DLayer(nn.Module):
    """Learned per-channel bias, parameter `bias` (1, C, 1, 1)."""

    def __init__(self, channels, initial=0, **kwargs):
        super().__init__()
        self.bias = nn.Parameter(zeros(1, channels, 1, 1) + float(initial))

    def forward(self, x):
        return x + self.bias


class Scale2DLayer(nn.Module):
    """Learned per-channel scale, parameter `scale` (1, C, 1, 1)."""

    def __init__(self, channels, initial=1, **kwargs):
        super().__init__()
        self.scale = nn.Parameter(ones(1, channels, 1, 1) * float(initial))

    def forward(self, x):
        return x * self.scale


class DepthSeparableConv2d(nn.Sequential):
    """1x1 conv (in -> out) -> depthwise conv (k x k, groups=out) -> 1x1 conv (out -> out)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True):
        super().__init__()
        self.add_module("in_depth_conv", nn.Conv2d(in_channels, out_channels, 1, bias=bias))
        self.add_module("spatial_conv", nn.Conv2d(out_channels, out_channels, kernel_size, stride=stride,
                                                  padding=padding, dilation=dilation, bias=bias,
                                                  groups=out_channels))
        self.add_module("out_depth_conv", nn.Conv2d(out_channels, out_channels, 1, bias=bias))


class GlobalAvgPool(nn.Module):
    def forward(self, x):
        return x.reshape(*x.shape[:-2], -1).mean(-1)


class SqueezeExcitationBlock(nn.Module):
    """x * sigmoid(W2 relu(W1 mean_hw(x))) per channel (Hu et al. 2017)."""

    def __init__(self, in_ch, reduction=16):
        super().__init__()
        self.se = nn.Sequential(GlobalAvgPool(), nn.Linear(in_ch, in_ch // reduction), nn.ReLU(inplace=True),
                                nn.Linear(in_ch // reduction, in_ch), nn.Sigmoid())

    def forward(self, x):
        w = self.se(x)
        return x * w.reshape(*w.shape, 1, 1)


class _Layer(nn.Sequential):
    """One core layer (conv -> norm -> nonlin [-> SE block]); a BatchNorm directly followed by a
    plain ELU runs as one fused op (same numbers as the two ops in sequence)."""

    def forward(self, x):
        mods = list(self._modules.values())
        i = 0
        while i < len(mods):
            m = mods[i]
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            if (isinstance(m, nn.BatchNorm2d) and isinstance(nxt, AdaptiveELU) and not nxt.xshift
                    and not nxt.yshift and not m._forward_hooks and not nxt._forward_hooks
                    and not m._forward_pre_hooks and not nxt._forward_pre_hooks):
                use_batch = m.training or (m.running_mean is None and m.running_var is None)
                keep = not m.training or m.track_running_stats
                track = m.training and m.track_running_stats
                x = F._batch_norm(x, m.running_mean if keep else None, m.running_var if keep else None,
                                  m.weight, m.bias, use_batch, m.momentum, m.eps,
                                  num_batches_tracked=m.num_batches_tracked if track else None, fuse_elu=True)
                i += 2
                continue
            x = m(x)
            i += 1
        return x


class Core(nn.Module):
    """Base class of the cores: Xavier-normal conv weights, zero conv biases."""

    def initialize(self):
        self.apply(self.init_conv)

    @staticmethod
    def init_conv(m):
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight.data)
            if m.bias is not None:
                m.bias.data.fill_(0)

    def __repr__(self):
        s = super().__repr__()
        s += f" [{self.__class__.__name__} regularizers: "
        ret = [f"{attr} = {getattr(self, attr)}" for attr in dir(self)
               if ("gamma" in attr or "skip" in attr) and not attr.startswith("__")]
        return s + "|".join(ret) + "]\n"


class Stacked2dCore(Core):
    """Layers of conv -> BatchNorm -> ELU (neuralpredictors Stacked2dCore).

    Input (B, input_channels, H, W); output (B, hidden_channels * len(stack), H', W') where
    H' = H - input_kern + 1 unless pad_input. See neuralpredictors for the arguments; `stack=-1`
    outputs only the last layer, `skip > 1` feeds each layer the concatenation of the previous
    `skip` outputs, `depth_separable` uses 1x1 -> depthwise -> 1x1 convs after the first layer,
    `linear` drops every nonlinearity."""

    def __init__(self, input_channels, hidden_channels, input_kern, hidden_kern, layers=3, gamma_hidden=0,
                 gamma_input=0.0, skip=0, stride=1, final_nonlinearity=True, elu_shift=(0, 0), bias=True,
                 momentum=0.1, pad_input=True, hidden_padding=None, batch_norm=True, batch_norm_scale=True,
                 independent_bn_bias=True, hidden_dilation=1, laplace_padding=0, input_regularizer="LaplaceL2",
                 stack=None, use_avg_reg=True, depth_separable=False, attention_conv=False, linear=False):
        if depth_separable and attention_conv:
            raise ValueError("depth_separable and attention_conv can not both be true")
        if attention_conv:
            raise NotImplementedError("attention_conv cores are not implemented in lviv_c")
        super().__init__()
        if input_regularizer not in _REGULARIZERS:
            raise ValueError(f"unknown input_regularizer {input_regularizer!r}; one of {sorted(_REGULARIZERS)}")
        cfg = dict(padding=laplace_padding, kernel=input_kern) if input_regularizer == "GaussianLaplaceL2" \
            else dict(padding=laplace_padding)
        self._input_weights_regularizer = _REGULARIZERS[input_regularizer](**cfg)
        self.num_layers = layers
        self.gamma_input = gamma_input
        self.gamma_hidden = gamma_hidden
        self.input_channels = input_channels
        self.hidden_channels = hidden_channels
        self.skip = skip
        self.stride = stride
        self.use_avg_reg = use_avg_reg
        self.hidden_padding = hidden_padding
        self.input_kern = input_kern
        self.hidden_kern = hidden_kern
        self.laplace_padding = laplace_padding
        self.hidden_dilation = hidden_dilation
        self.final_nonlinearity = final_nonlinearity
        self.elu_xshift, self.elu_yshift = elu_shift
        self.bias = bias
        self.momentum = momentum
        self.pad_input = pad_input
        self.batch_norm = batch_norm
        self.batch_norm_scale = batch_norm_scale
        self.independent_bn_bias = independent_bn_bias
        if stack is None:
            self.stack = list(range(self.num_layers))
        else:
            self.stack = [*range(self.num_layers)[stack:]] if isinstance(stack, int) else list(stack)
        self.linear = linear
        if depth_separable:
            self.conv_layer_name = "ds_conv"
            self.ConvLayer = DepthSeparableConv2d
            self.ignore_group_sparsity = True
        else:
            self.conv_layer_name = "conv"
            self.ConvLayer = nn.Conv2d
            self.ignore_group_sparsity = False
        if self.ignore_group_sparsity and gamma_hidden > 0:
            warnings.warn("group sparsity can not be calculated for the requested conv type. Hidden channels "
                          "will not be regularized and gamma_hidden is ignored.")
        self.features = nn.Sequential()
        self.add_first_layer()
        self.add_subsequent_layers()
        self.initialize()

    # -- construction (mirrors neuralpredictors, so the module tree and names are the same)
    def add_bn_layer(self, layer):
        if not self.batch_norm:
            return
        if self.independent_bn_bias:
            layer["norm"] = nn.BatchNorm2d(self.hidden_channels, momentum=self.momentum)
            return
        layer["norm"] = nn.BatchNorm2d(self.hidden_channels, momentum=self.momentum,
                                       affine=self.bias and self.batch_norm_scale)
        if self.bias:
            if not self.batch_norm_scale:
                layer["bias"] = Bias2DLayer(self.hidden_channels)
        elif self.batch_norm_scale:
            layer["scale"] = Scale2DLayer(self.hidden_channels)

    def add_activation(self, layer):
        if self.linear:
            return
        if len(self.features) < self.num_layers - 1 or self.final_nonlinearity:
            layer["nonlin"] = AdaptiveELU(self.elu_xshift, self.elu_yshift)

    def add_first_layer(self):
        layer = OrderedDict()
        layer["conv"] = nn.Conv2d(self.input_channels, self.hidden_channels, self.input_kern,
                                  padding=self.input_kern // 2 if self.pad_input else 0,
                                  bias=self.bias and not self.batch_norm)
        self.add_bn_layer(layer)
        self.add_activation(layer)
        self.features.add_module("layer0", _Layer(layer))

    def _hidden_kerns(self):
        if not isinstance(self.hidden_kern, Iterable):
            self.hidden_kern = [self.hidden_kern] * (self.num_layers - 1)
        return self.hidden_kern

    def _hidden_conv(self, l):
        kern = self._hidden_kerns()
        if self.hidden_padding is None:  # computed once, from the first hidden kernel (as neuralpredictors)
            self.hidden_padding = ((kern[l - 1] - 1) * self.hidden_dilation + 1) // 2
        in_ch = self.hidden_channels if not self.skip > 1 else min(self.skip, l) * self.hidden_channels
        if self.ConvLayer is DepthSeparableConv2d:
            return DepthSeparableConv2d(in_ch, self.hidden_channels, kern[l - 1], stride=self.stride,
                                        padding=self.hidden_padding, dilation=self.hidden_dilation, bias=self.bias)
        return nn.Conv2d(in_ch, self.hidden_channels, kern[l - 1], stride=self.stride, padding=self.hidden_padding,
                         dilation=self.hidden_dilation, bias=self.bias)

    def add_subsequent_layers(self):
        for l in range(1, self.num_layers):
            layer = OrderedDict()
            layer[self.conv_layer_name] = self._hidden_conv(l)
            self.add_bn_layer(layer)
            self.add_activation(layer)
            self.features.add_module(f"layer{l}", _Layer(layer))

    # -- computation
    def forward(self, input_):
        ret = []
        for l, feat in enumerate(self.features):
            do_skip = l >= 1 and self.skip > 1
            input_ = feat(input_ if not do_skip else cat(ret[-min(self.skip, l):], dim=1))
            ret.append(input_)
        if len(self.stack) == 1:
            return ret[self.stack[0]]
        return cat([ret[i] for i in self.stack], dim=1)

    def laplace(self):
        """Laplace regularizer of the first-layer filters."""
        return self._input_weights_regularizer(self.features[0].conv.weight, avg=self.use_avg_reg)

    def group_sparsity(self):
        ret = 0
        if self.ignore_group_sparsity:
            return ret
        for feature in list(self.features)[1:]:
            w = feature.conv.weight
            ret = ret + w.square().sum((2, 3)).sqrt().mean()
        return ret / ((self.num_layers - 1) if self.num_layers > 1 else 1)

    def regularizer(self):
        gs = self.group_sparsity()
        reg = self.gamma_input * self.laplace()
        if self.gamma_hidden and isinstance(gs, Tensor):
            reg = reg + gs * self.gamma_hidden
        return reg

    @property
    def outchannels(self):
        return len(self.features) * self.hidden_channels


class SE2dCore(Stacked2dCore):
    """Stacked2dCore with (by default) no bias, the normalised Laplace regularizer summed (not
    averaged) and optional squeeze-and-excitation blocks after the last `n_se_blocks` layers."""

    def __init__(self, input_channels, hidden_channels, input_kern, hidden_kern, bias=False, laplace_padding=None,
                 input_regularizer="LaplaceL2norm", n_se_blocks=0, se_reduction=32, use_avg_reg=False, **kwargs):
        self.__dict__["_se_cfg"] = (n_se_blocks, se_reduction)
        super().__init__(input_channels=input_channels, hidden_channels=hidden_channels, input_kern=input_kern,
                         hidden_kern=hidden_kern, bias=bias, laplace_padding=laplace_padding,
                         input_regularizer=input_regularizer, use_avg_reg=use_avg_reg, **kwargs)
        self.n_se_blocks = n_se_blocks
        self.se_reduction = se_reduction

    def add_subsequent_layers(self):
        n_se, red = self.__dict__["_se_cfg"]
        for l in range(1, self.num_layers):
            layer = OrderedDict()
            layer[self.conv_layer_name] = self._hidden_conv(l)
            self.add_bn_layer(layer)
            self.add_activation(layer)
            if (self.num_layers - l) <= n_se:
                layer["seg_ex_block"] = SqueezeExcitationBlock(in_ch=self.hidden_channels, reduction=red)
            self.features.add_module(f"layer{l}", _Layer(layer))

    def regularizer(self):
        return self.gamma_input * self.laplace()


_REGULARIZERS = {
    "LaplaceL2": regularizers.LaplaceL2,
    "LaplaceL2norm": regularizers.LaplaceL2norm,
    "LaplaceL1": regularizers.LaplaceL1,
    "GaussianLaplaceL2": regularizers.GaussianLaplaceL2,
    "GaussianLaplaceL2Adaptive": regularizers.GaussianLaplaceL2Adaptive,
}
