"""Shared helpers for the benchmarks: medians of repeated timings and machine info."""
import os
import platform
import statistics
import time


def median_time(fn, repeats=7, warmup=1):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def machine():
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def numpy_blas():
    try:
        import numpy as np
        cfg = np.show_config(mode="dicts")
        b = cfg["Build Dependencies"]["blas"]
        return f"{b.get('name')} {b.get('version', '')}".strip()
    except Exception:
        return "unknown"
