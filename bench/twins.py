"""The benchmark models, once for every benchmark that compares lviv_c with PyTorch
(bench_gpu.py on a GPU, bench_vs_torch.py on the CPU): the course LN, the course CNN and the Lurz
2020 model (course config) as PyTorch twins written from the architecture in the project's spec,
the lviv_c side taken from the library itself (lviv_c.course, lviv_c.models), random data of the
course scan's shapes, and the loader attributes trainers.Engine reads. The course LN and CNN are
lviv_c/course.py's classes in both frameworks (course.notebook_classes). `scan_data` reads a
real or synthetic scan folder instead of the random data."""
import collections

import numpy as np

TRIALS, TRAIN, NEURONS, H, W, B = 5993, 4472, 5335, 36, 64, 60


def data(seed=0, trials=TRIALS, neurons=NEURONS):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 255, (trials, 1, H, W)).astype(np.float32)
    Y = rng.poisson(0.5, (trials, neurons)).astype(np.float32)
    grid = rng.uniform(-1, 1, (neurons, 2)).astype(np.float32)
    return X, Y, grid


def scan_data(path):
    """The images and responses of a scan folder (course layout) ordered train tier first, its
    neurons' cortex coordinates scaled to [-1, 1] as the grid, and the number of train trials:
    ``(X, Y, grid, n_train)``. The benchmarks time the first ``n_train`` rows as the epoch."""
    from lviv_c.dataset import FileTreeDataset
    ds = FileTreeDataset(path)
    tiers = np.asarray(ds.trial_info.tiers).astype(str)
    order = np.concatenate([np.flatnonzero(tiers == "train"), np.flatnonzero(tiers != "train")])
    X = np.ascontiguousarray(ds.block("images")[order], dtype=np.float32)
    Y = np.ascontiguousarray(ds.block("responses")[order], dtype=np.float32)
    xy = np.asarray(ds.neurons.cell_motor_coordinates, np.float64)[:, :2]
    lo, hi = xy.min(0), xy.max(0)
    grid = (2 * (xy - lo) / np.where(hi > lo, hi - lo, 1) - 1).astype(np.float32)
    return X, Y, grid, int((tiers == "train").sum())


def course_builders(nn, n):
    """The course LN and CNN: lviv_c/course.py's classes (the notebook's own code) defined against
    ``nn`` (torch.nn or lviv_c.nn), so both frameworks run the same model code."""
    from lviv_c.course import notebook_classes
    Linear, CNN = notebook_classes(nn)
    return {"LN": lambda: Linear(H, W, n, gamma=0.1), "CNN": lambda: CNN(H, W, n)}


# ------------------------------------------------------------------ PyTorch reference models
def torch_models(torch, grid):
    NEURONS = len(grid)
    nn, F = torch.nn, torch.nn.functional

    class Lurz(nn.Module):
        """Lurz 2020 course config: 64 channels, k=15 then 3 depth-separable k=13 layers, Gaussian
        readout (cortex grid predictor), 440,057 parameters for 5335 neurons."""

        def __init__(self):
            super().__init__()
            C = 64
            self.l0 = nn.Sequential(nn.Conv2d(1, C, 15, bias=False), nn.BatchNorm2d(C, momentum=0.9), nn.ELU())
            self.ls = nn.ModuleList()
            for _ in range(3):
                self.ls.append(nn.Sequential(nn.Conv2d(C, C, 1, bias=False),
                                             nn.Conv2d(C, C, 13, padding=6, groups=C, bias=False),
                                             nn.Conv2d(C, C, 1, bias=False), nn.BatchNorm2d(C, momentum=0.9),
                                             nn.ELU()))
            self.register_buffer("grid", torch.as_tensor(grid))
            self.mu = nn.Linear(2, 2)
            self.sigma = nn.Parameter(torch.empty(NEURONS, 2, 2).uniform_(-0.4, 0.4))
            self.features = nn.Parameter(torch.randn(C, NEURONS) * 1e-3)
            self.bias = nn.Parameter(torch.zeros(NEURONS))
            lap = torch.tensor([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], dtype=torch.float32)
            self.register_buffer("lap", lap.view(1, 1, 3, 3))

        def forward(self, x):
            z = self.l0(x)
            for l in self.ls:
                z = l(z)
            mu = self.mu(self.grid)  # (N, 2)
            if self.training:
                eps = torch.randn(x.shape[0], NEURONS, 2, device=x.device)
                pos = (mu + torch.einsum("nij,bnj->bni", self.sigma, eps)).clamp(-1, 1)
            else:
                pos = mu.clamp(-1, 1).expand(x.shape[0], NEURONS, 2)
            s = F.grid_sample(z, pos.unsqueeze(2), align_corners=True).squeeze(-1)  # (B, C, N)
            return F.elu((s * self.features).sum(1) + self.bias) + 1

        def regularizer(self):
            w = self.l0[0].weight
            lw = F.conv2d(w.view(-1, 1, 15, 15), self.lap, padding=1)
            return 1.0 * lw.pow(2).sum() / w.pow(2).sum() + 2.439 * self.features.abs().sum()

    return {**course_builders(nn, len(grid)), "Lurz2020": Lurz}


# ------------------------------------------------------------------ lviv_c


def lviv_models(L, grid):
    """The same three models in lviv_c: the course classes of lviv_c.course (the notebook's own
    definitions) and build_lurz2020_model with the course config."""
    from lviv_c.demo import LURZ_COURSE_CONFIG
    from lviv_c.models import build_lurz2020_model
    n = len(grid)

    class _NS:
        pass

    Batch = collections.namedtuple("Batch", "images responses")

    class _BuildLoader:
        """What build_lurz2020_model reads: one (images, responses) batch and the neurons' cortex
        coordinates (random here; the benchmarks time training, not fit quality)."""

        def __init__(self):
            rng = np.random.default_rng(1)
            self.dataset = _NS()
            self.dataset.neurons = _NS()
            self.dataset.neurons.cell_motor_coordinates = rng.normal(size=(n, 3)) * 200 + 50
            self.x = rng.uniform(0, 255, (B, 1, H, W)).astype(np.float32)
            self.y = rng.poisson(0.5, (B, n)).astype(np.float32)

        def __iter__(self):
            yield Batch(L.from_numpy(self.x), L.from_numpy(self.y))

    return {**course_builders(L.nn, n),
            "Lurz2020": lambda: build_lurz2020_model({"train": _BuildLoader()}, 0, **LURZ_COURSE_CONFIG)}


class Loader:
    """The attributes of a lviv_c DataLoader that trainers.Engine reads; `dev_blocks` (GPU copies
    of the blocks, as load_dataset(..., cuda=True) keeps them) makes batches gather there."""

    def __init__(self, X, Y, idx, dev_blocks=None, batch_size=B):
        self.images_block, self.responses_block = X, Y
        self.indices = np.asarray(idx, np.int64)
        self.batch_size = batch_size
        self.dataset = range(len(X))
        self._dev = dev_blocks

    def device_blocks(self):
        return self._dev
