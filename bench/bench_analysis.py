"""Analysis benchmark on the course-config Lurz 2020 model (5335 neurons, 36x64): seconds for the
gradient RFs of all neurons, and for 1000 MEI steps of 100 neurons (timed on --mei-steps steps and
extrapolated, said so), plus the same for the course LN model.

    python bench/bench_analysis.py [--data SCAN] [--rf-neurons N] [--mei-steps 10]
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lviv_c as L  # noqa: E402
from common import machine  # noqa: E402
from lviv_c.analysis import generate_mei, gradient_rf  # noqa: E402
from lviv_c.dataset import load_dataset  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None, help="a scan folder (default: $LVIV_DATA, else the demo's "
                    "cached full-size synthetic scan, generated when missing)")
    ap.add_argument("--rf-neurons", type=int, default=0, help="0: all neurons")
    ap.add_argument("--mei-steps", type=int, default=10)
    a = ap.parse_args()
    from lviv_c.demo import resolve_data
    a.data, _ = resolve_data(a.data)
    dl = load_dataset(a.data, batch_size=60, seed=1)
    n = dl["train"].responses_block.shape[1]
    print(f"machine: {machine()}; {n} neurons")
    from bench_train import lurz
    from lviv_c.course import Linear
    mean = float(dl["train"].images_block.mean())
    img = np.full((36, 64), mean, np.float32)
    models = {"course LN": Linear(36, 64, n, gamma=0.1), "Lurz 2020": lurz(dl)}
    for name, model in models.items():
        k = a.rf_neurons or n
        t0 = time.perf_counter()
        rf = gradient_rf(model, list(range(k)), img)
        dt = time.perf_counter() - t0
        note = "" if k == n else f" (extrapolated from {k} neurons in {dt:.1f} s)"
        print(f"{name:10s} gradient RFs of all {n} neurons: {dt * n / k:7.1f} s{note}; shape {rf.shape}")
        steps = a.mei_steps
        t0 = time.perf_counter()
        generate_mei(model, img, list(range(100)), iterations=steps, mean_constr=mean, std_constr=60.0,
                     progress=False)
        dt = time.perf_counter() - t0
        print(f"{name:10s} 1000 MEI steps for 100 neurons: {dt * 1000 / steps:7.1f} s "
              f"(extrapolated from {steps} steps in {dt:.1f} s)")


if __name__ == "__main__":
    main()
