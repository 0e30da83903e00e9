"""Training-loop benchmark on the full-size synthetic scan (batch 60): seconds per epoch of the
course LN, the course CNN and the Lurz 2020 model in the C training loop, images/s, and the share of
time spent outside the forward/backward kernels (gather, optimizer, engine), from the per-op
profile. Large models are timed on `--steps` batches and extrapolated to the epoch (said so).

    python bench/bench_train.py [--data SCAN] [--models ln,cnn,lurz] [--steps 10]
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lviv_c as L  # noqa: E402
from common import machine  # noqa: E402
from lviv_c.dataset import load_dataset  # noqa: E402
from lviv_c.trainers import Engine  # noqa: E402


def course_models(n):
    from lviv_c.course import CNN, Linear
    return {"ln": lambda: Linear(36, 64, n, gamma=0.1), "cnn": lambda: CNN(36, 64, n)}


def lurz(dl):
    from lviv_c.models import build_lurz2020_model
    from lviv_c.demo import LURZ_COURSE_CONFIG
    return build_lurz2020_model(dataloaders=dl, seed=1234, **LURZ_COURSE_CONFIG)


def run(name, model, dl, steps, repeats):
    eng = Engine(model, dl["train"])
    order = dl["train"].sampler.order()
    n_epoch = len(order)
    B = eng.B
    sub = order[: steps * B] if steps else order
    eng.train_epoch(order[:B])                      # capture + warm up
    times, outside = [], []
    for _ in range(repeats):
        L._C.profile(True)
        t0 = time.perf_counter()
        eng.train_epoch(sub)
        dt = time.perf_counter() - t0
        prof = L._C.profile(None)
        L._C.profile(False)
        ops = sum(f + b for f, b, _ in prof.values())   # kernels incl. Adam and gradient zeroing
        times.append(dt)
        adam = prof.get("Adam", (0, 0, 0))[1]
        outside.append(max(0.0, dt - ops) / dt)
    dt = statistics.median(times)
    per_img = dt / len(sub)
    epoch = per_img * n_epoch
    t0 = time.perf_counter()
    eng.predict(dl["validation"])
    t_eval = time.perf_counter() - t0
    extrap = "" if len(sub) == n_epoch else f" (extrapolated from {len(sub)} trials in {dt:.1f} s)"
    print(f"{name:5s} epoch {epoch:8.1f} s{extrap}  train {1 / per_img:7.1f} img/s  "
          f"outside kernels {100 * statistics.median(outside):4.1f}% (Adam {100 * adam / dt:.0f}%)  validation pass {t_eval:5.2f} s "
          f"({len(dl['validation'].indices) / t_eval:.0f} img/s)")
    return epoch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None, help="a scan folder (default: $LVIV_DATA, else the demo's "
                    "cached full-size synthetic scan, generated when missing)")
    ap.add_argument("--models", default="ln,cnn,lurz")
    ap.add_argument("--steps", type=int, default=10, help="batches timed for cnn/lurz (0: full epoch)")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    from lviv_c.demo import resolve_data
    a.data, _ = resolve_data(a.data)
    dl = load_dataset(a.data, batch_size=60, seed=1)
    n = dl["train"].responses_block.shape[1]
    print(f"machine: {machine()}; scan {a.data}: {len(dl['train'].indices)} train trials, {n} neurons")
    ms = course_models(n)
    for name in a.models.split(","):
        L.manual_seed(0)
        if name == "lurz":
            run(name, lurz(dl), dl, a.steps, a.repeats)
        else:
            run(name, ms[name](), dl, 0 if name == "ln" else a.steps, a.repeats)


if __name__ == "__main__":
    main()
