"""Training speed of the Lurz 2020 model in the course configuration at full size (36x64 images,
5335 neurons, batch 60): captured-graph training steps (forward + loss + backward + Adam, as
train_model runs them), seconds per epoch of 4472 trials, and a per-op forward/backward
breakdown. Random data of the right shapes; repeats give medians (the machine may be shared).

    python bench/bench_lurz.py [--steps 8] [--repeats 3]
"""
import argparse
import collections
import math
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lviv_c  # noqa: E402
from lviv_c import _C  # noqa: E402
from lviv_c.capture import capture_graph  # noqa: E402
from lviv_c.demo import LURZ_COURSE_CONFIG  # noqa: E402
from lviv_c.models import build_lurz2020_model  # noqa: E402
from lviv_c.trainers import poisson_loss_fn  # noqa: E402

N_TRAIN, N_ALL, N_NEURONS, B = 4472, 5993, 5335, 60
Batch = collections.namedtuple("Batch", "images responses")


class _NS:
    pass


class RandomLoader:
    def __init__(self, rng):
        self.dataset = _NS()
        self.dataset.neurons = _NS()
        self.dataset.neurons.cell_motor_coordinates = rng.normal(size=(N_NEURONS, 3)) * 200
        self.x = rng.uniform(0, 255, size=(B, 1, 36, 64)).astype(np.float32)
        self.y = rng.gamma(0.5, size=(B, N_NEURONS)).astype(np.float32)

    def __iter__(self):
        yield Batch(lviv_c.from_numpy(self.x), lviv_c.from_numpy(self.y))


def median_time(fn, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), ts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8, help="training steps per timing")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    loader = RandomLoader(rng)
    model = build_lurz2020_model(loader, 1234, **LURZ_COURSE_CONFIG)
    n_par = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"Lurz 2020 course config: {n_par:,} parameters, batch {B}, {N_NEURONS} neurons, "
          f"{os.cpu_count()} CPUs")

    scale = math.sqrt(N_ALL / B)
    base = poisson_loss_fn(False)

    def loss_fn(out, y):
        return base(out, y) * scale + model.regularizer()

    params = [p for p in model.parameters() if p.requires_grad]
    g = capture_graph(model, loader.x, loader.y, loss_fn, train=True)
    adam = _C.adam_new(params, 0.005)
    X = np.ascontiguousarray(rng.uniform(0, 255, size=(args.steps * B, 1, 36, 64)), dtype=np.float32)
    Y = np.ascontiguousarray(rng.gamma(0.5, size=(args.steps * B, N_NEURONS)), dtype=np.float32)
    order = np.arange(args.steps * B, dtype=np.int64)

    def run():  # what train_model runs per epoch: gather, replay forward+loss, backward, Adam
        _C.train_epoch(g.handle, None, adam, X, Y, order, 1, None)

    run()  # warm-up (buffers, first-touch)
    t_s, ts = median_time(run, args.repeats)
    per = t_s / args.steps
    print(f"training step (C loop): {per * 1e3:.0f} ms median "
          f"(runs: {', '.join(f'{t / args.steps * 1e3:.0f}' for t in ts)} ms per step)")
    print(f"  {B / per:.1f} images/s; epoch of {N_TRAIN} trials ({math.ceil(N_TRAIN / B)} batches): "
          f"{per * math.ceil(N_TRAIN / B):.1f} s")

    # per-op breakdown of the captured steps
    if hasattr(_C, "profile"):
        _C.profile(True)
        run()
        prof = _C.profile(None)
        _C.profile(False)
        tot_f = sum(v[0] for v in prof.values())
        tot_b = sum(v[1] for v in prof.values())
        print(f"per op over {args.steps} steps (ms per step): forward {tot_f / args.steps * 1e3:.0f}, "
              f"backward {tot_b / args.steps * 1e3:.0f}")
        for name, (f, b, calls) in sorted(prof.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
            if f + b < 1e-4 * args.steps:
                continue
            print(f"  {name:<22s} fwd {f / args.steps * 1e3:8.1f}  bwd {b / args.steps * 1e3:8.1f}  "
                  f"calls/step {calls / args.steps:.0f}")

    # eager Python-driven forward / backward for comparison
    x, y = lviv_c.from_numpy(loader.x), lviv_c.from_numpy(loader.y)
    model.train()

    def fwd():
        with lviv_c.no_grad():
            model(x)

    def fwd_bwd():
        for p in params:
            p.grad = None
        loss_fn(model(x), y).backward()

    t_f, _ = median_time(fwd, args.repeats)
    t_fb, _ = median_time(fwd_bwd, args.repeats)
    print(f"eager (Python-driven): forward {t_f * 1e3:.0f} ms, forward+backward {t_fb * 1e3:.0f} ms per batch")


if __name__ == "__main__":
    main()
