"""GPU benchmark: seconds per training epoch (batch 60) on the full-size synthetic scan
(5993 trials x 5335 neurons x 36x64 images; an epoch = its train tier, 4471 trials; generated once
into the demo's cache folder, `--cache`), or on a scan folder (`--scan PATH`), or on random arrays of
the course shapes (`--random`, no generation), for the course LN,
the course CNN and the Lurz 2020 model, in lviv_c (train_model's Engine: captured graphs replayed
by the C loop, data resident on the GPU) next to the same
models in PyTorch on the same GPU (when torch is importable). Prints one line per (framework,
model) and writes them to --out. --steps: batches timed (lviv_c rounds up to whole epochs).

Not a test: figures only. Runs in about a minute per framework on an H200."""
import argparse
import math
import sys
import time
import traceback

import os

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from twins import B, Loader, data, lviv_models, scan_data, torch_models  # noqa: E402

#: the same on both sides: the fastest cuDNN algorithms (lviv_c's default is deterministic ones)
SETTINGS = "float32, TF32 off, cudnn.benchmark=True, cudnn.deterministic=False"


def _result(framework, model, s_per_epoch, images_per_s, params):
    """One timed (framework, model): the printed line and the JSON record."""
    msg = f"{s_per_epoch:.3f} s/epoch  ({images_per_s:,.0f} images/s, {params:,} params)"
    return (framework, model, msg, {"s_per_epoch": s_per_epoch, "images_per_s": images_per_s, "params": params})


def bench_torch(X, Y, grid, steps, train):
    import torch
    if not torch.cuda.is_available():
        return [("torch", "-", "torch.cuda.is_available() is False")]
    # the fastest float32 settings on both sides (SETTINGS): TF32 off, cuDNN free to pick
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = False
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    Xd, Yd = torch.as_tensor(X, device=dev), torch.as_tensor(Y, device=dev)
    scale = math.sqrt(len(X) / B)
    out = []
    for name, cls in torch_models(torch, grid).items():
        try:
            torch.manual_seed(0)
            m = cls().to(dev).train()
            opt = torch.optim.Adam(m.parameters(), lr=0.005)
            order = torch.randperm(train, device=dev)

            def step(i):
                idx = order[(i * B) % (train - B):][:B]
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
            out.append(_result("torch", name, dt * math.ceil(train / B), B / dt, nparam))
        except Exception as e:
            out.append(("torch", name, f"failed: {type(e).__name__}: {e}"))
    return out


# ------------------------------------------------------------------ lviv_c
def bench_lviv(X, Y, grid, steps, train):
    """Epochs of train_model's Engine (captured graphs replayed by the C loop, Adam on the
    device, data resident on the GPU): one warm-up epoch, then `epochs` timed ones."""
    import lviv_c as L
    if not L.cuda.is_available():
        return [("lviv_c", "-", f"CUDA unavailable: {L.cuda.why_unavailable()}")]
    from lviv_c.trainers import Engine
    L.backends.cudnn.deterministic, L.backends.cudnn.benchmark = False, True  # as PyTorch's side
    L.backends.cudnn.allow_tf32 = L.backends.cuda.matmul.allow_tf32 = False
    out = []
    dev_blocks = (L.tensor(X, device="cuda"), L.tensor(Y, device="cuda"))
    loader = Loader(X, Y, np.arange(train), dev_blocks)
    builders = lviv_models(L, grid)
    nb = math.ceil(train / B)
    epochs = max(1, steps // nb)
    for name in ("LN", "CNN", "Lurz2020"):
        try:
            L.manual_seed(0)
            b = builders[name]
            m = b()
            m.to("cuda").train()
            eng = Engine(m, loader, lr=0.005)
            order = np.random.default_rng(0).permutation(train).astype(np.int64)
            eng.train_epoch(order)  # capture + warm-up (cuDNN algorithm search)
            L.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(epochs):
                eng.train_epoch(order)
            L.cuda.synchronize()
            dt = (time.perf_counter() - t0) / epochs
            nparam = sum(p.numel() for p in m.parameters())
            out.append(_result("lviv_c", name, dt, train / dt, nparam))
        except Exception as e:
            out.append(("lviv_c", name, f"failed: {type(e).__name__}: {e}"))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", choices=["torch", "lviv_c"], default=None)
    ap.add_argument("--json", default=None, help="write the results as a JSON list to this file")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--scan", default=None, help="a scan folder (course layout) instead of the synthetic scan")
    src.add_argument("--random", action="store_true", help="random arrays of the course shapes (no scan)")
    ap.add_argument("--cache", default=None, help="where the synthetic scan is kept (the demo's cache)")
    a = ap.parse_args()
    if a.random:
        X, Y, grid = data()
        train, source = 4472, "random arrays of the course shapes"
    else:
        path = a.scan
        if path is None:
            from lviv_c.demo import synthetic_scan
            path = synthetic_scan(cache=a.cache)
        X, Y, grid, train = scan_data(path)
        source = f"scan {os.path.basename(os.path.normpath(path))}"
    print(f"data: {source}: {len(X)} trials x {Y.shape[1]} neurons x {X.shape[-2]}x{X.shape[-1]}, "
          f"epoch = {train} train trials; {SETTINGS}", flush=True)
    lines = []
    for fw, fn in (("lviv_c", bench_lviv), ("torch", bench_torch)):
        if a.only and a.only != fw:
            continue
        try:
            if fw == "torch":
                import torch  # noqa: F401
            lines += fn(X, Y, grid, a.steps, train)
        except ImportError as e:
            lines.append((fw, "-", f"not importable: {e}"))
        except Exception:
            lines.append((fw, "-", "failed:\n" + traceback.format_exc()))
    text = "\n".join(f"{r[0]:7s} {r[1]:9s} {r[2]}" for r in lines)
    print(text)
    if a.out:
        with open(a.out, "a") as f:
            f.write(text + "\n")
    if a.json:
        import json
        recs = [{"framework": r[0], "model": r[1], **(r[3] if len(r) > 3 else {"error": r[2]})} for r in lines]
        ratio = {}
        for r in recs:
            if r["framework"] == "lviv_c" and "s_per_epoch" in r:
                t = next((q for q in recs if q["framework"] == "torch" and q["model"] == r["model"]
                          and "s_per_epoch" in q), None)
                if t:
                    ratio[r["model"]] = t["s_per_epoch"] / r["s_per_epoch"]
        with open(a.json + ".tmp", "w") as f:
            json.dump({"steps": a.steps, "settings": SETTINGS, "data": source, "train_trials": train, "results": recs, "torch_over_lviv_c": ratio}, f, indent=1)
        os.replace(a.json + ".tmp", a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
