"""Tensor core benchmark: matmul GFLOP/s (2048^3 and the course LN shape 60x2304 @ 2304x5335)
next to NumPy's matmul measured in the same run, and an elementwise op in GB/s."""
import sys

import numpy as np

import os  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import machine, median_time, numpy_blas  # noqa: E402

import lviv_c as L  # noqa: E402


def gemm(m, k, n, repeats):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    ta, tb = L.from_numpy(a), L.from_numpy(b)
    flops = 2.0 * m * k * n
    t_np = median_time(lambda: a @ b, repeats)
    t_lv = median_time(lambda: ta @ tb, repeats)
    return flops / t_lv / 1e9, flops / t_np / 1e9


def main():
    print(f"machine: {machine()}; lviv_c threads: {L._C.num_threads()}; NumPy BLAS: {numpy_blas()}")
    rows = []
    for name, (m, k, n), rep in [("2048x2048x2048", (2048, 2048, 2048), 5),
                                 ("LN 60x2304 @ 2304x5335", (60, 2304, 5335), 21)]:
        g_lv, g_np = gemm(m, k, n, rep)
        rows.append((name, g_lv, g_np))
        print(f"matmul {name:>24}: lviv_c {g_lv:7.1f} GFLOP/s   numpy {g_np:7.1f} GFLOP/s   ratio {g_lv / g_np:.2f}")
    x = L.randn(16 * 1024 * 1024)
    y = L.randn(16 * 1024 * 1024)
    xn, yn = np.asarray(x), np.asarray(y)
    nbytes = 3 * 4 * x.numel()
    t_lv = median_time(lambda: x + y, 9)
    t_np = median_time(lambda: xn + yn, 9)
    print(f"elementwise add 16M floats: lviv_c {nbytes / t_lv / 1e9:6.2f} GB/s   numpy {nbytes / t_np / 1e9:6.2f} GB/s")
    t_lv = median_time(lambda: x.exp(), 9)
    t_np = median_time(lambda: np.exp(xn), 9)
    print(f"elementwise exp 16M floats: lviv_c {2 * 4 * x.numel() / t_lv / 1e9:6.2f} GB/s   numpy {2 * 4 * x.numel() / t_np / 1e9:6.2f} GB/s")


if __name__ == "__main__":
    main()
