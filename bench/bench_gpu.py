"""GPU benchmark: seconds per training epoch (batch 60) on full-size synthetic data
(5993 trials x 5335 neurons x 36x64 images; an epoch = the 4472 train trials), for the course LN,
the course CNN and the Lurz 2020 model, in lviv_c (train_model's Engine: captured graphs replayed
by the C loop, data resident on the GPU; Lurz 2020 when lviv_c.models has it) next to the same
models in PyTorch on the same GPU (when torch is importable). Prints one line per (framework,
model) and writes them to --out. --steps: batches timed (lviv_c rounds up to whole epochs).

Not a test: figures only. Runs in about a minute per framework on an H200."""
import argparse
import collections
import math
import sys
import time
import traceback

import os

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TRIALS, TRAIN, NEURONS, H, W, B = 5993, 4472, 5335, 36, 64, 60


def data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 255, (TRIALS, 1, H, W)).astype(np.float32)
    Y = rng.poisson(0.5, (TRIALS, NEURONS)).astype(np.float32)
    grid = rng.uniform(-1, 1, (NEURONS, 2)).astype(np.float32)
    return X, Y, grid


def course_builders(nn):
    """The course LN and CNN: lviv_c/course.py's classes (the notebook's code) defined against
    ``nn`` (torch.nn or lviv_c.nn), so both frameworks run the same model code."""
    from lviv_c.course import notebook_classes
    Linear, CNN = notebook_classes(nn)
    return {"LN": lambda: Linear(H, W, NEURONS, gamma=0.1), "CNN": lambda: CNN(H, W, NEURONS)}


# ------------------------------------------------------------------ PyTorch reference models
def torch_models(torch, grid):
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

    return {**course_builders(nn), "Lurz2020": Lurz}


def bench_torch(X, Y, grid, steps):
    import torch
    if not torch.cuda.is_available():
        return [("torch", "-", "torch.cuda.is_available() is False")]
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    Xd, Yd = torch.as_tensor(X, device=dev), torch.as_tensor(Y, device=dev)
    scale = math.sqrt(TRIALS / B)
    out = []
    for name, cls in torch_models(torch, grid).items():
        try:
            torch.manual_seed(0)
            m = cls().to(dev).train()
            opt = torch.optim.Adam(m.parameters(), lr=0.005)
            order = torch.randperm(TRAIN, device=dev)

            def step(i):
                idx = order[(i * B) % (TRAIN - B):][:B]
                x, y = Xd[idx], Yd[idx]
                yh = m(x)
                loss = scale * (yh - y * torch.log(yh + 1e-12)).sum() + m.regularizer()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            for i in range(5):
                step(i)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for i in range(steps):
                step(i)
            torch.cuda.synchronize()
            dt = (time.perf_counter() - t0) / steps
            nparam = sum(p.numel() for p in m.parameters())
            out.append(("torch", name, f"{dt * math.ceil(TRAIN / B):.3f} s/epoch  ({B / dt:,.0f} images/s, "
                                       f"{nparam:,} params)"))
        except Exception as e:
            out.append(("torch", name, f"failed: {type(e).__name__}: {e}"))
    return out


# ------------------------------------------------------------------ lviv_c
def lviv_models(L, grid):
    """The course LN and CNN in lviv_c.nn (the same code as torch_models above); the Lurz 2020
    model comes from lviv_c.models when that module is part of this build."""
    nn = L.nn
    builders = course_builders(nn)
    try:
        from lviv_c.models import build_lurz2020_model
    except ImportError:
        return builders

    class _NS:
        pass

    Batch = collections.namedtuple("Batch", "images responses")

    class _BuildLoader:
        """What build_lurz2020_model reads: one (images, responses) batch and the neurons' cortex
        coordinates (random here; the benchmark times training, not fit quality)."""

        def __init__(self):
            rng = np.random.default_rng(1)
            self.dataset = _NS()
            self.dataset.neurons = _NS()
            self.dataset.neurons.cell_motor_coordinates = rng.normal(size=(NEURONS, 3)) * 200 + 50
            self.x = rng.uniform(0, 255, (B, 1, H, W)).astype(np.float32)
            self.y = rng.poisson(0.5, (B, NEURONS)).astype(np.float32)

        def __iter__(self):
            yield Batch(L.from_numpy(self.x), L.from_numpy(self.y))

    course = {"init_mu_range": 0.55, "init_sigma": 0.4, "input_kern": 15, "hidden_kern": 13, "gamma_input": 1.0,
              "grid_mean_predictor": {"type": "cortex", "input_dimensions": 2, "hidden_layers": 0,
                                      "hidden_features": 0, "final_tanh": False},
              "gamma_readout": 2.439}
    builders["Lurz2020"] = lambda: build_lurz2020_model({"train": _BuildLoader()}, 0, **course)
    return builders


class _Loader:
    """The attributes of a lviv_c DataLoader that trainers.Engine reads; the blocks are also
    kept on the GPU (as load_dataset(..., cuda=True) does) so batches are gathered there."""

    def __init__(self, X, Y, idx, dev_blocks):
        self.images_block, self.responses_block = X, Y
        self.indices = np.asarray(idx, np.int64)
        self.batch_size = B
        self.dataset = range(len(X))
        self._dev = dev_blocks

    def device_blocks(self):
        return self._dev


def bench_lviv(X, Y, grid, steps):
    """Epochs of train_model's Engine (captured graphs replayed by the C loop, Adam on the
    device, data resident on the GPU): one warm-up epoch, then `epochs` timed ones."""
    import lviv_c as L
    if not L.cuda.is_available():
        return [("lviv_c", "-", f"CUDA unavailable: {L.cuda.why_unavailable()}")]
    from lviv_c.trainers import Engine
    out = []
    dev_blocks = (L.tensor(X, device="cuda"), L.tensor(Y, device="cuda"))
    loader = _Loader(X, Y, np.arange(TRAIN), dev_blocks)
    builders = lviv_models(L, grid)
    nb = math.ceil(TRAIN / B)
    epochs = max(1, steps // nb)
    for name in ("LN", "CNN", "Lurz2020"):
        if name not in builders:
            out.append(("lviv_c", name, "skipped: lviv_c.models.build_lurz2020_model is not in this build"))
            continue
        try:
            L.manual_seed(0)
            b = builders[name]
            m = b()
            m.to("cuda").train()
            eng = Engine(m, loader, lr=0.005)
            order = np.random.default_rng(0).permutation(TRAIN).astype(np.int64)
            eng.train_epoch(order)  # capture + warm-up (cuDNN algorithm search)
            L.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(epochs):
                eng.train_epoch(order)
            L.cuda.synchronize()
            dt = (time.perf_counter() - t0) / epochs
            nparam = sum(p.numel() for p in m.parameters())
            out.append(("lviv_c", name, f"{dt:.3f} s/epoch  ({TRAIN / dt:,.0f} images/s, {nparam:,} params)"))
        except Exception as e:
            out.append(("lviv_c", name, f"failed: {type(e).__name__}: {e}"))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", choices=["torch", "lviv_c"], default=None)
    a = ap.parse_args()
    X, Y, grid = data()
    lines = []
    for fw, fn in (("lviv_c", bench_lviv), ("torch", bench_torch)):
        if a.only and a.only != fw:
            continue
        try:
            if fw == "torch":
                import torch  # noqa: F401
            lines += fn(X, Y, grid, a.steps)
        except ImportError as e:
            lines.append((fw, "-", f"not importable: {e}"))
        except Exception:
            lines.append((fw, "-", "failed:\n" + traceback.format_exc()))
    text = "\n".join(f"{fw:7s} {m:9s} {msg}" for fw, m, msg in lines)
    print(text)
    if a.out:
        with open(a.out, "a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
