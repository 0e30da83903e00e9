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


def op_profile(run, steps, top=8):
    """The op profile (_C.profile) of one call of run() covering `steps` training steps: lines
    'op fwd ms bwd ms' per step, the largest shares first."""
    from lviv_c import _C
    _C.profile(True)
    try:
        run()
        prof = _C.profile(None)
    finally:
        _C.profile(False)
    tot = sum(f + b for f, b, _ in prof.values()) or 1.0
    lines = []
    for name, (f, b, _) in sorted(prof.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:top]:
        lines.append(f"{name:<18s} fwd {f / steps * 1e3:7.1f}  bwd {b / steps * 1e3:7.1f} ms/step "
                     f"({(f + b) / tot:4.0%})")
    return lines
