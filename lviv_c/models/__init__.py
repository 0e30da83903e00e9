"""Models: the Lurz et al. 2020 encoder (`build_lurz2020_model`), the Sensorium 2022 models
(`build_sensorium_model`, `load_sensorium_checkpoint`) and their parts (neuralpredictors'
SE2dCore / Stacked2dCore, FullGaussian2d / MultipleFullGaussian2d, Laplace regularizers)."""
from . import regularizers  # noqa: F401
from .cores import (  # noqa: F401
    AdaptiveELU, Bias2DLayer, Core, DepthSeparableConv2d, GlobalAvgPool, Scale2DLayer, SE2dCore,
    SqueezeExcitationBlock, Stacked2dCore,
)
from .ensemble import Ensemble  # noqa: F401
from .lurz2020 import Encoder, build_lurz2020_model, get_dims_for_loader_dict, unpack_data_info  # noqa: F401
from .sensorium import (  # noqa: F401
    FiringRateEncoder, MLPShifter, SENSORIUM_2022_CONFIG, build_sensorium_model, load_sensorium_checkpoint,
    stacked_core_full_gauss_readout,
)
from .readouts import (  # noqa: F401
    FullGaussian2d, MultiReadout, MultipleFullGaussian2d, gaussian_readout, get_module_output,
    readout_positions,
)

__all__ = ["build_lurz2020_model", "Encoder", "SE2dCore", "Stacked2dCore", "FullGaussian2d",
           "MultipleFullGaussian2d", "MultiReadout", "regularizers", "gaussian_readout", "readout_positions",
           "build_sensorium_model", "load_sensorium_checkpoint", "FiringRateEncoder", "MLPShifter",
           "Ensemble"]
