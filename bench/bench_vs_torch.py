"""lviv_c against PyTorch on the CPU, side by side in one process: milliseconds per training step
(batch 60, course shapes: 36x64 images, 5335 neurons) of the course LN, the course CNN and the
Lurz 2020 model, an MEI step for 100 neurons and the gradient RFs of 256 neurons of Lurz 2020.
Rounds alternate between the two (lviv_c, PyTorch, lviv_c, ...) so that both see the same
machine; medians over rounds. Both use --threads threads (default 2).

Each model's floor on this machine is printed beside it: its GEMM/convolution FLOPs (forward,
weight gradient, input gradient where an input gradient is needed) at the GEMM rate measured in
the same run (a 2048^3 lviv_c matmul), plus the least memory traffic per parameter (the forward
reads it, the update reads and writes it and its two Adam moments: 28 bytes) at the streaming
rate measured in the same run (an eager lviv_c Adam step over 16M parameters, which streams 28
bytes per parameter with every thread). The step's share of its floor is floor / step.

    python bench/bench_vs_torch.py [--rounds 5] [--steps 4] [--threads 2] [--only LN,CNN,...] [--json FILE]

PyTorch is for benchmarking only, never a dependency of lviv_c: install it into a separate
environment (`pip install torch numpy`) and run this file with that environment's Python with
lviv_c's build on PYTHONPATH. When torch is not importable the script says so and exits 0.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from twins import B, H, W, Loader, data, lviv_models, torch_models  # noqa: E402

TRIALS = 600  # enough distinct batches for the timed steps; the step cost does not depend on it


# ------------------------------------------------------------------ floors
def model_flops(name, n):
    """Multiply-adds x 2 of one training step at batch B: forward + weight gradient, + input
    gradient for every layer whose input needs one (not the image)."""
    def conv(cin, cout, k, h, w, groups=1):
        return 2 * B * cout * (cin // groups) * k * k * h * w
    if name == "LN":
        return 2 * (2 * B * H * W * n)
    if name == "CNN":
        f0 = conv(1, 8, 15, H, W)
        fs = 3 * conv(8, 8, 13, H, W)
        fc = 2 * B * H * W * 8 * n
        return 2 * f0 + 3 * fs + 3 * fc
    if name == "Lurz2020":
        h, w = H - 14, W - 14
        f0 = conv(1, 64, 15, h, w)
        layer = 2 * conv(64, 64, 1, h, w) + conv(64, 64, 13, h, w, groups=64)
        readout = 2 * B * 64 * n * 3  # bilinear taps and feature weights, forward + two gradients
        return 2 * f0 + 3 * 3 * layer + readout
    raise KeyError(name)


def machine_rates(L):
    """GEMM rate (FLOP/s) of a 2048^3 matmul and streaming memory rate (bytes/s) of an eager Adam
    step over 16M parameters (reads parameter, gradient and both moments, writes three back: 28
    bytes per parameter, every thread, no allocation), medians of 5, lviv_c in this run."""
    a, b = L.randn(2048, 2048), L.randn(2048, 2048)
    n = 1 << 24
    p = L.nn.Parameter(L.randn(n))
    p.grad = L.randn(n)
    opt = L.optim.Adam([p], lr=1e-3)
    opt.step()  # the moments exist and their pages are touched before timing

    from common import median_time
    gemm = 2 * 2048 ** 3 / median_time(lambda: a @ b, repeats=5)
    bw = 28 * n / median_time(opt.step, repeats=5)
    return gemm, bw


# ------------------------------------------------------------------ one side each
class LvivSide:
    def __init__(self, L, X, Y, grid, builders):
        self.L, self.X, self.Y = L, X, Y
        self.builders = builders
        self.engines = {}

    def step_fn(self, name):
        from lviv_c.trainers import Engine
        L = self.L
        L.manual_seed(0)
        m = self.builders[name]()
        m.train()
        eng = Engine(m, Loader(self.X, self.Y, np.arange(len(self.X))), lr=0.005)
        rng = np.random.default_rng(0)
        eng.train_epoch(rng.permutation(len(self.X))[:2 * B].astype(np.int64))  # capture + warm-up
        self.engines[name] = (m, eng)

        def run(steps):
            eng.train_epoch(rng.permutation(len(self.X))[:steps * B].astype(np.int64))
        return run, sum(p.numel() for p in m.parameters() if p.requires_grad)

    def analysis_fns(self, model, img):
        from lviv_c.analysis import generate_mei, gradient_rf

        def mei(steps):
            generate_mei(model, img, list(range(100)), iterations=steps, mean_constr=float(img.mean()),
                         std_constr=60.0, progress=False)

        def rf():
            gradient_rf(model, list(range(256)), img)
        return mei, rf


class TorchSide:
    def __init__(self, torch, X, Y, grid):
        self.torch = torch
        self.X, self.Y = torch.as_tensor(X), torch.as_tensor(Y)
        self.classes = torch_models(torch, grid)
        self.models = {}

    def step_fn(self, name):
        torch = self.torch
        torch.manual_seed(0)
        m = self.classes[name]().train()
        opt = torch.optim.Adam(m.parameters(), lr=0.005)
        scale = math.sqrt(len(self.X) / B)
        gen = torch.Generator().manual_seed(0)

        def one():
            idx = torch.randint(0, len(self.X), (B,), generator=gen)
            x, y = self.X[idx], self.Y[idx]
            yh = m(x)
            loss = scale * (yh - y * torch.log(yh + 1e-12)).sum() + m.regularizer()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        one()
        one()
        self.models[name] = m

        def run(steps):
            for _ in range(steps):
                one()
        return run, sum(p.numel() for p in m.parameters() if p.requires_grad)

    def analysis_fns(self, model, img):
        torch = self.torch
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        x0 = torch.as_tensor(img)[None, None]
        mean, std = float(img.mean()), 60.0
        idx = torch.arange(100)

        def mei(steps):
            x = x0.repeat(100, 1, 1, 1).clone().requires_grad_(True)
            opt = torch.optim.SGD([x], lr=1.0, momentum=0.9)
            for _ in range(steps):
                xt = (x - x.mean((1, 2, 3), keepdim=True)) / (x.std((1, 2, 3), keepdim=True) + 1e-4) * std + mean
                act = model(xt)[idx, idx]
                opt.zero_grad()
                (-act.sum()).backward()
                opt.step()

        def rf():
            # lviv_c's scheme (gradient_rf): one forward of 64 copies of the image, then one
            # backward through it per chunk of 64 neurons (retain_graph)
            x = x0.repeat(64, 1, 1, 1).clone().requires_grad_(True)
            out = model(x)
            for s in range(0, 256, 64):
                seed = torch.zeros_like(out)
                seed[torch.arange(64), torch.arange(s, s + 64)] = 1
                torch.autograd.grad(out, x, seed, retain_graph=True)
        return mei, rf


def timed(fn, *a):
    t0 = time.perf_counter()
    fn(*a)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4, help="training steps timed per round and model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="LN,CNN,Lurz2020,MEI,RF")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import lviv_c as L
    # the machine's rates first: once torch is loaded, its runtime slows lviv_c's large eager
    # ops in this process (fresh 64 MB buffers fault their pages in; 2.6 vs 13 GB/s measured)
    gemm, bw = machine_rates(L)
    try:
        import torch
    except ImportError:
        print("bench_vs_torch: torch is not importable here; install it into a separate environment "
              "(pip install torch numpy) and run this file with that Python. Nothing measured.")
        return 0
    torch.set_num_threads(a.threads)
    from common import machine

    only = a.only.split(",")
    X, Y, grid = data(0, trials=TRIALS)
    n = Y.shape[1]
    lv, tc = LvivSide(L, X, Y, grid, lviv_models(L, grid)), TorchSide(torch, X, Y, grid)
    print(f"machine: {machine()}; torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"GEMM {gemm / 1e9:.1f} GFLOP/s, memory {bw / 1e9:.1f} GB/s (lviv_c, this run)")
    rows = []
    for name in ("LN", "CNN", "Lurz2020"):
        if name not in only and not (name == "Lurz2020" and ("MEI" in only or "RF" in only)):
            continue
        fl, ft = lv.step_fn(name), tc.step_fn(name)
        if name not in only:
            continue
        (run_l, np_l), (run_t, np_t) = fl, ft
        assert np_l == np_t, f"{name}: {np_l} parameters in lviv_c, {np_t} in the PyTorch twin"
        tl, tt = [], []
        for _ in range(a.rounds):
            tl.append(timed(run_l, a.steps) / a.steps)
            tt.append(timed(run_t, a.steps) / a.steps)
        ml, mt = statistics.median(tl), statistics.median(tt)
        floor = model_flops(name, n) / gemm + 28 * np_l / bw
        rows.append({"work": f"{name}, training step", "lviv_c_ms": ml * 1e3, "torch_ms": mt * 1e3,
                     "ratio": mt / ml, "floor_ms": floor * 1e3, "share_of_floor": floor / ml, "params": np_l})
    if "MEI" in only or "RF" in only:
        img = np.full((H, W), float(X.mean()), np.float32)
        mei_l, rf_l = lv.analysis_fns(lv.engines["Lurz2020"][0], img)
        mei_t, rf_t = tc.analysis_fns(tc.models["Lurz2020"], img)
        if "MEI" in only:
            k = max(2, a.steps)
            # the marginal cost of a step: (k + 1 steps) - (1 step), so per-call setup is excluded
            tl = [(timed(mei_l, k + 1) - timed(mei_l, 1)) / k for _ in range(a.rounds)]
            tt = [(timed(mei_t, k + 1) - timed(mei_t, 1)) / k for _ in range(a.rounds)]
            ml, mt = statistics.median(tl), statistics.median(tt)
            rows.append({"work": "MEI step, 100 neurons, Lurz 2020", "lviv_c_ms": ml * 1e3, "torch_ms": mt * 1e3,
                         "ratio": mt / ml})
        if "RF" in only:
            tl, tt = [], []
            for _ in range(a.rounds):
                tl.append(timed(rf_l))
                tt.append(timed(rf_t))
            ml, mt = statistics.median(tl), statistics.median(tt)
            rows.append({"work": "gradient RFs of 256 neurons, Lurz 2020", "lviv_c_ms": ml * 1e3,
                         "torch_ms": mt * 1e3, "ratio": mt / ml})
    print(f"\n{'work':42s} {'lviv_c':>10s} {'PyTorch':>10s} {'PT/lviv_c':>9s} {'floor':>9s} {'of floor':>8s}")
    for r in rows:
        fl = f"{r['floor_ms']:7.1f}ms {100 * r['share_of_floor']:6.0f}%" if "floor_ms" in r else ""
        print(f"{r['work']:42s} {r['lviv_c_ms']:8.1f}ms {r['torch_ms']:8.1f}ms {r['ratio']:8.2f}x {fl}")
    print(f"(medians of {a.rounds} alternating rounds; training steps: {a.steps} per round)")
    if a.json:
        with open(a.json + ".tmp", "w") as f:
            json.dump({"machine": machine(), "torch": torch.__version__, "threads": a.threads,
                       "gemm_flops": gemm, "bandwidth_bytes": bw, "rows": rows}, f, indent=1)
        os.replace(a.json + ".tmp", a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
