"""The course notebook's model classes as library code.

``Linear`` (the linear-nonlinear model) and ``CNN`` are the notebook's definitions, unchanged but
for the imports (``lviv_c.nn`` in place of ``torch.nn``). ``SimpleCNN`` answers the notebook's
request for "a simpler implementation of CNN [that] would train just as fast as the simple fully
connected linear model": one convolution layer, average pooling and a fully connected readout.

All three map an image batch (B, 1, H, W) (raw pixels 0..255; the first BatchNorm standardises
them) to strictly positive rates (B, n_neurons) via ELU + 1, and have a ``regularizer()`` that
``lviv_c.trainers.train_model`` adds to the Poisson loss.
"""
from collections import OrderedDict

from . import nn

__all__ = ["Linear", "CNN", "SimpleCNN", "build_course_model", "COURSE_MODELS", "notebook_classes"]


# ------------------------------------------------------------------ the notebook's definitions
class Linear(nn.Module):
    def __init__(
        self,
        input_height,
        input_width,
        n_neurons,
        momentum=0.1,
        init_std=1e-3,
        gamma=0.0,
    ):
        super().__init__()
        self.bn = nn.BatchNorm2d(1, momentum=momentum, affine=False)
        self.linear = nn.Linear(input_height * input_width, n_neurons)
        self.gamma = gamma
        self.init_std = init_std
        self.initialize()

    def initialize(self, std=None):
        if std is None:
            std = self.init_std
        nn.init.normal_(self.linear.weight.data, std=std)

    def forward(self, x):
        x = self.bn(x)
        x = self.linear(x.flatten(1))
        return nn.functional.elu(x) + 1

    def regularizer(self):
        return self.gamma * self.linear.weight.abs().sum()


class CNN(nn.Module):
    def __init__(
        self,
        input_height,
        input_width,
        n_neurons,
        momentum=0.1,
        init_std=1e-3,
        gamma=0.1,
        hidden_channels=8,
    ):
        super(CNN, self).__init__()
        self.init_std = init_std
        self.gamma = gamma

        # CNN core
        self.cnn_core = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(1, hidden_channels, 15, padding=15 // 2, bias=False)),
                    ("bn1", nn.BatchNorm2d(hidden_channels, momentum=momentum)),
                    ("elu1", nn.ELU()),
                    ("conv2", nn.Conv2d(hidden_channels, hidden_channels, 13, padding=13 // 2, bias=False)),
                    ("bn2", nn.BatchNorm2d(hidden_channels, momentum=momentum)),
                    ("elu2", nn.ELU()),
                    ("conv3", nn.Conv2d(hidden_channels, hidden_channels, 13, padding=13 // 2, bias=False)),
                    ("bn3", nn.BatchNorm2d(hidden_channels, momentum=momentum)),
                    ("elu3", nn.ELU()),
                    ("conv4", nn.Conv2d(hidden_channels, hidden_channels, 13, padding=13 // 2, bias=False)),
                    ("bn4", nn.BatchNorm2d(hidden_channels, momentum=momentum)),
                    ("elu4", nn.ELU()),
                ]
            )
        )

        # Fully connected readout
        self.readout = nn.Sequential(
            OrderedDict(
                [
                    ('fc_ro', nn.Linear(input_height * input_width * hidden_channels, n_neurons)),
                    ('bn_ro', nn.BatchNorm1d(n_neurons, momentum=momentum)),
                ]
            )
        )

    def initialize(self, std=None):
        if std is None:
            std = self.init_std
        for m in self.modules():
            if isinstance(m, nn.Conv2d) or isinstance(m, nn.Linear):
                nn.init.normal_(m.weight.data, std=std)

    def forward(self, x):
        x = self.cnn_core(x)
        x = x.view(x.size(0), -1)
        x = self.readout(x)
        return nn.functional.elu(x) + 1

    def regularizer(self):
        return self.readout[0].weight.abs().sum() * self.gamma


# ------------------------------------------------------------------ the simpler CNN
class SimpleCNN(nn.Module):
    """A one-layer CNN that trains about as fast as the LN model and beats it.

    BatchNorm2d(1) standardises the raw image; ``hidden_channels`` filters of size ``kernel``
    ('same' padding, no bias) -> BatchNorm2d -> ELU give rectified, LN-like subunits (their sum
    over positions with both polarities makes complex-cell-like energy detectors); average
    pooling by ``pool`` keeps the readout as small as the LN model's (16 channels on a 9 x 16
    grid = 2304 features for a 36 x 64 image, the LN model's 2304 pixels); a fully connected
    readout (L1 penalty ``gamma``) -> ELU + 1.

    Per image the work is the LN model's matrix product plus one 16 x 13 x 13 convolution, so an
    epoch costs about the same as the LN model's; it learns nonlinear (rectified, phase-invariant)
    responses that the LN model cannot express.
    """

    def __init__(self, input_height, input_width, n_neurons, hidden_channels=16, kernel=13, stride=2,
                 pool=2, momentum=0.1, init_std=1e-3, gamma=0.1):
        super().__init__()
        self.gamma = gamma
        self.init_std = init_std
        self.pool = pool
        self.bn_in = nn.BatchNorm2d(1, momentum=momentum, affine=False)
        self.conv = nn.Conv2d(1, hidden_channels, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(hidden_channels, momentum=momentum)
        self.elu = nn.ELU()
        self.avg = nn.AvgPool2d(pool)
        h = (input_height + 2 * (kernel // 2) - kernel) // stride + 1
        w = (input_width + 2 * (kernel // 2) - kernel) // stride + 1
        n_features = hidden_channels * (h // pool) * (w // pool)
        self.linear = nn.Linear(n_features, n_neurons)
        self.initialize()

    def initialize(self, std=None):
        if std is None:
            std = self.init_std
        nn.init.normal_(self.linear.weight.data, std=std)

    def forward(self, x):
        x = self.bn_in(x)
        x = self.elu(self.bn(self.conv(x)))
        x = self.avg(x)
        x = self.linear(x.flatten(1))
        return nn.functional.elu(x) + 1

    def regularizer(self):
        return self.gamma * self.linear.weight.abs().sum()


def notebook_classes(nn_module):
    """The notebook's ``Linear`` and ``CNN`` (this file's code, not a copy) defined against another
    torch-like ``nn`` module, e.g. ``torch.nn``: benchmarks then compare the same code in both
    frameworks."""
    import inspect
    ns = {"nn": nn_module, "OrderedDict": OrderedDict, "__name__": __name__}
    for cls in (Linear, CNN):
        exec(compile(inspect.getsource(cls), __file__, "exec"), ns)
    return ns["Linear"], ns["CNN"]


# ------------------------------------------------------------------ builders
def _dims(dataloaders):
    """(height, width, n_neurons) from the train loader's first batch."""
    loader = dataloaders["train"] if isinstance(dataloaders, dict) else dataloaders
    images, responses = next(iter(loader))[:2]
    return int(images.shape[2]), int(images.shape[3]), int(responses.shape[1])


#: Course LN / CNN / SimpleCNN as built by the notebook (gamma 0.1 for the LN, as there).
COURSE_MODELS = ("ln", "cnn", "simple-cnn")


def build_course_model(name, dataloaders, seed=None):
    """The notebook's model ``name`` ('ln', 'cnn', 'simple-cnn') sized for ``dataloaders``.

    The notebook passes ``input_height=64, input_width=36`` to these classes; only the product
    matters for the LN model, but the CNN's readout needs the true (36, 64), so the dimensions
    are read from the data here."""
    from .tensor import manual_seed
    if seed is not None:
        manual_seed(seed)
    h, w, n = _dims(dataloaders)
    if name == "ln":
        return Linear(input_height=h, input_width=w, n_neurons=n, gamma=0.1)
    if name == "cnn":
        return CNN(input_height=h, input_width=w, n_neurons=n)
    if name == "simple-cnn":
        return SimpleCNN(input_height=h, input_width=w, n_neurons=n)
    raise ValueError(f"unknown course model {name!r}; expected one of {', '.join(COURSE_MODELS)}")
