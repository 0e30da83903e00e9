"""Time the raw CPU kernels at the course shapes (batch 60). Not a test: prints figures.

    python bench/bench_kernels.py [--repeats 7]
    python bench/bench_kernels.py --baseline OLD_C.so [--only dw,1x1,...] [--repeats 9]

--baseline loads a second build of the extension (e.g. a copy of lviv_c/_C*.so built from an
older commit) and times its conv kernels against the current build at the course shapes,
interleaved call by call, so that both see the same machine load; it prints medians and the
old/new ratio per kernel.
"""
import argparse
import ctypes
import os
import sys
import time

import numpy as np

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path[:0] = [_ROOT, os.path.join(_ROOT, "tests")]
from kern_ffi import F, I64, P, call, conv_desc, lib  # noqa: E402

REP = 7


def timeit(fn, rep=None):
    fn()
    ts = []
    for _ in range(rep or REP):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def r(*s):
    return np.random.default_rng(0).standard_normal(s).astype(np.float32)


def bench_conv(name, N, Ci, H, W, Co, k, pad, groups=1, need_gx=True):
    d = conv_desc(N, Ci, H, W, Co, k, k, (1, 1), (pad, pad), (1, 1), groups)
    ws = np.empty(lib.lv_conv2d_workspace_floats(ctypes.byref(d)), np.float32)
    x, w = r(N, Ci, H, W), r(Co, Ci // groups, k, k) * 0.1
    y = np.empty((N, Co, d.Ho, d.Wo), np.float32)
    gy, gx, gw = r(*y.shape), np.zeros_like(x), np.zeros_like(w)
    dd = ctypes.byref(d)
    flop = 2.0 * N * Co * d.Ho * d.Wo * (Ci // groups) * k * k
    tf = timeit(lambda: call("lv_conv2d_forward", dd, P(x), P(w), None, P(y), P(ws)))
    tbd = timeit(lambda: call("lv_conv2d_backward_data", dd, P(gy), P(w), P(gx), P(ws))) if need_gx else 0.0
    tbw = timeit(lambda: call("lv_conv2d_backward_weight", dd, P(x), P(gy), P(gw), None, P(ws)))
    gf = lambda t: flop / t / 1e9 if t else float("nan")  # noqa: E731
    print(f"  {name:34s} fwd {tf*1e3:7.2f} ms {gf(tf):6.1f} GF/s | bwd-data "
          f"{tbd*1e3:7.2f} ms {gf(tbd):6.1f} | bwd-w {tbw*1e3:7.2f} ms {gf(tbw):6.1f}")
    return tf, tbd + tbw


def bench_bn_elu(N, C, HW):
    x = r(N, C, HW)
    y = np.empty_like(x)
    g, b = np.ones(C, np.float32), np.zeros(C, np.float32)
    m, s = np.empty(C, np.float32), np.empty(C, np.float32)
    gx, gg, gb = np.zeros_like(x), np.zeros(C, np.float32), np.zeros(C, np.float32)
    tf = timeit(lambda: call("lv_bn_elu_forward_train", N, C, HW, P(x), P(g), P(b), F(1e-5), P(y), P(m), P(s), None))
    tb = timeit(lambda: call("lv_bn_elu_backward_train", N, C, HW, P(x), P(y), P(x), P(g), P(m), P(s), P(gx), P(gg), P(gb)))
    print(f"  bn+elu ({N},{C},{HW}){'':18s} fwd {tf*1e3:7.2f} ms | bwd {tb*1e3:7.2f} ms")
    return tf, tb


def bench_readout(B, C, H, W, Nn, shared=0):
    rng = np.random.default_rng(1)
    x = r(B, C, H, W)
    pos = rng.uniform(-1, 1, (Nn, 2) if shared else (B, Nn, 2)).astype(np.float32)
    feat, bias = r(C, Nn), r(Nn)
    out, go = np.empty((B, Nn), np.float32), r(B, Nn)
    gx, gp, gf, gb = np.zeros_like(x), np.zeros_like(pos), np.zeros_like(feat), np.zeros_like(bias)
    a = (B, C, H, W, Nn, shared)
    tf = timeit(lambda: call("lv_readout_forward", *a, P(x), P(pos), P(feat), P(bias), P(out)))
    tb = timeit(lambda: call("lv_readout_backward", *a, P(x), P(pos), P(feat), P(go), P(gx), P(gp), P(gf), P(gb)))
    print(f"  readout B{B} C{C} {H}x{W} N{Nn} {'shared' if shared else 'per-b '}  fwd {tf*1e3:7.2f} ms | bwd {tb*1e3:7.2f} ms")
    return tf, tb


# name, (N, C_in, H, W, C_out, k, pad, groups, need_gx)
CONV_SHAPES = [
    ("c1_k15", (60, 1, 36, 64, 8, 15, 7, 1, False)),
    ("c8_k13", (60, 8, 36, 64, 8, 13, 6, 1, True)),
    ("c8_k13_half", (60, 8, 18, 32, 8, 13, 6, 1, True)),
    ("l0_k15", (60, 1, 36, 64, 64, 15, 0, 1, False)),
    ("1x1", (60, 64, 22, 50, 64, 1, 0, 1, True)),
    ("dw", (60, 64, 22, 50, 64, 13, 6, 64, True)),
]


def compare(baseline, only, rep):
    old = ctypes.CDLL(os.path.abspath(baseline))
    old.lv_conv2d_workspace_floats.restype = ctypes.c_size_t
    old.lv_error_msg.restype = ctypes.c_char_p
    libs = {"old": old, "new": lib}
    print(f"{'kernel':28s} {'old ms':>9s} {'new ms':>9s} {'old/new':>8s}   (medians of {rep}, interleaved)")
    for name, (N, Ci, H, W, Co, k, pad, g, need_gx) in CONV_SHAPES:
        if only and name not in only:
            continue
        d = conv_desc(N, Ci, H, W, Co, k, k, (1, 1), (pad, pad), (1, 1), g)
        dd = ctypes.byref(d)
        nws = max(int(L.lv_conv2d_workspace_floats(dd)) for L in libs.values())
        ws = {k_: np.empty(nws, np.float32) for k_ in libs}
        x, w = r(N, Ci, H, W), r(Co, Ci // g, k, k) * 0.1
        y = np.empty((N, Co, d.Ho, d.Wo), np.float32)
        gy, gx, gw = r(*y.shape), np.zeros_like(x), np.zeros_like(w)
        ops = [("fwd", "lv_conv2d_forward", lambda L: (dd, P(x), P(w), None, P(y), P(ws[L])))]
        if need_gx:
            ops.append(("bwd-data", "lv_conv2d_backward_data", lambda L: (dd, P(gy), P(w), P(gx), P(ws[L]))))
        ops.append(("bwd-w", "lv_conv2d_backward_weight", lambda L: (dd, P(x), P(gy), P(gw), None, P(ws[L]))))
        for opn, fn, args in ops:
            ts = {k_: [] for k_ in libs}
            for L in libs:  # warm up
                getattr(libs[L], fn)(*args(L))
            for i in range(rep):
                for L in (("old", "new") if i % 2 == 0 else ("new", "old")):
                    a = args(L)
                    t = time.perf_counter()
                    rc = getattr(libs[L], fn)(*a)
                    ts[L].append(time.perf_counter() - t)
                    assert rc == 0, libs[L].lv_error_msg()
            mo, mn = np.median(ts["old"]), np.median(ts["new"])
            print(f"{name + ' ' + opn:28s} {mo*1e3:9.2f} {mn*1e3:9.2f} {mo/mn:8.2f}", flush=True)


def main():
    global REP
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--baseline", help="older build of the extension (.so) to compare the conv kernels against")
    ap.add_argument("--only", default="", help="comma-separated conv shape names for --baseline: "
                    + ",".join(n for n, _ in CONV_SHAPES))
    a = ap.parse_args()
    REP = a.repeats
    if a.baseline:
        compare(a.baseline, set(filter(None, a.only.split(","))), REP)
        return
    print(f"threads: {lib.lv_num_threads()}")
    for (m, k, n) in [(1024, 1024, 1024), (64, 64, 1100), (8, 1352, 2304)]:
        a, b = r(m, k), r(k, n)
        t = timeit(lambda: a @ b)
        print(f"numpy matmul {m}x{k}x{n}: {2*m*k*n/t/1e9:6.1f} GF/s")

    B = 60
    print("\nCourse CNN (batch 60, 36x64):")
    cnn = [bench_conv("conv 1->8 k15 same", B, 1, 36, 64, 8, 15, 7, need_gx=False)]
    for i in range(3):
        cnn.append(bench_conv(f"conv 8->8 k13 same (x3)", B, 8, 36, 64, 8, 13, 6) if i == 0 else cnn[1])
    bn = bench_bn_elu(B, 8, 36 * 64)
    cnn_t = sum(f + b for f, b in cnn) + 4 * sum(bn)
    print(f"  => CNN core step (4 conv + 4 bn-elu, fwd+bwd): {cnn_t*1e3:.1f} ms")

    print("\nLurz core + readout (batch 60, 36x64 -> 64x22x50, 5335 neurons):")
    l0 = bench_conv("conv 1->64 k15 valid", B, 1, 36, 64, 64, 15, 0, need_gx=False)
    c1 = bench_conv("conv 1x1 64->64", B, 64, 22, 50, 64, 1, 0)
    dw = bench_conv("depthwise 64 k13 same", B, 64, 22, 50, 64, 13, 6, groups=64)
    bn = bench_bn_elu(B, 64, 22 * 50)
    ro = bench_readout(B, 64, 22, 50, 5335)
    bench_readout(B, 64, 22, 50, 5335, shared=1)
    core = sum(l0) + 3 * (2 * sum(c1) + sum(dw)) + 4 * sum(bn)
    total = core + sum(ro)
    print(f"  => Lurz core fwd+bwd {core*1e3:.1f} ms; + readout {sum(ro)*1e3:.1f} ms = {total*1e3:.1f} ms per batch")
    print(f"     (forward only: {(l0[0] + 3*(2*c1[0]+dw[0]) + 4*bn[0] + ro[0])*1e3:.1f} ms)")

    n = 440_057
    p, g, m, v = r(n), r(n), np.zeros(n, np.float32), np.zeros(n, np.float32)
    t = timeit(lambda: call("lv_adam_step", I64(n), P(p), P(g), P(m), P(v), F(1e-3), F(0.9), F(0.999), F(1e-8), F(0), I64(1)))
    yh, y, gr = np.abs(r(B, 5335)) + 0.1, np.abs(r(B, 5335)), np.empty((B, 5335), np.float32)
    loss = ctypes.c_double()
    t2 = timeit(lambda: call("lv_poisson_loss", I64(yh.size), P(yh), P(y), F(1e-12), F(1.0), ctypes.byref(loss), P(gr)))
    print(f"\nadam step, 440k params: {t*1e3:.2f} ms; poisson loss+grad 60x5335: {t2*1e3:.2f} ms")


if __name__ == "__main__":
    main()
