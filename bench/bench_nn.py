"""Images/s of one eager training step (forward, Poisson loss + regularizer, backward, Adam) and
of inference, for the course LN and the course CNN at the course sizes (batch 60, 1x36x64 images,
5335 neurons). Medians of several repeats; PyTorch figures alongside when torch is installed.

    python bench/bench_nn.py [--repeats 7] [--batch 60] [--neurons 5335] [--models ln,cnn]
"""
import argparse
import math
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

N_TRIALS = 5993  # course scan: len(dataset) in the loss scale


def build(nn, kind, n_neurons):
    """The notebook's classes (lviv_c/course.py's code, defined against lviv_c.nn or torch.nn)."""
    from lviv_c.course import notebook_classes
    Linear, CNN = notebook_classes(nn)
    if kind == "ln":
        return Linear(64, 36, n_neurons, gamma=0.1)
    return CNN(64, 36, n_neurons)


def median_time(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def bench_lib(lib, kind, args, images, responses):
    if lib == "lviv_c":
        import lviv_c as T
        from lviv_c import nn, optim
        from lviv_c.nn import functional as F
        x, y = T.from_numpy(images), T.from_numpy(responses)

        def loss_fn(out, y):
            return F.poisson_loss(out, y, eps=1e-12)
    else:
        import torch as T
        from torch import nn, optim
        T.set_num_threads(os.cpu_count())
        x, y = T.from_numpy(images), T.from_numpy(responses)

        def loss_fn(out, y):
            return (out - y * T.log(out + 1e-12)).sum()
    T.manual_seed(0)
    model = build(nn, kind, args.neurons)
    opt = optim.Adam(model.parameters(), lr=0.005)
    scale = math.sqrt(N_TRIALS / args.batch)

    def step():
        model.train()
        opt.zero_grad()
        out = model(x)
        loss = scale * loss_fn(out, y) + model.regularizer()
        loss.backward()
        opt.step()

    def infer():
        model.eval()
        with T.no_grad():
            model(x)

    t_train = median_time(step, args.repeats)
    t_inf = median_time(infer, args.repeats)
    return args.batch / t_train, args.batch / t_inf


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=60)
    ap.add_argument("--neurons", type=int, default=5335)
    ap.add_argument("--models", default="ln,cnn")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(args.batch, 1, 36, 64)).astype(np.float32)
    responses = rng.gamma(1.0, 1.0, size=(args.batch, args.neurons)).astype(np.float32)
    libs = ["lviv_c"]
    try:
        import torch  # noqa: F401
        libs.append("torch")
    except ImportError:
        pass
    import lviv_c
    print(f"batch {args.batch}, 1x36x64 images, {args.neurons} neurons, {args.repeats} repeats (median), "
          f"{os.cpu_count()} CPUs, lviv_c threads {lviv_c._C.num_threads()}")
    print(f"{'model':6s} {'library':8s} {'train img/s':>12s} {'infer img/s':>12s}")
    res = {}
    for kind in args.models.split(","):
        for lib in libs:
            tr, inf = bench_lib(lib, kind, args, images, responses)
            res[(kind, lib)] = (tr, inf)
            print(f"{kind:6s} {lib:8s} {tr:12.1f} {inf:12.1f}", flush=True)
        if (kind, "torch") in res:
            a, b = res[(kind, "lviv_c")], res[(kind, "torch")]
            print(f"{kind:6s} {'ratio':8s} {a[0] / b[0]:11.2f}x {a[1] / b[1]:11.2f}x  (lviv_c / torch)")


if __name__ == "__main__":
    main()
