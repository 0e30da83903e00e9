"""Analysis benchmark on the course-config Lurz 2020 model (5335 neurons, 36x64): seconds for the
gradient RFs of all neurons, and for 1000 MEI steps of 100 neurons (timed on --mei-steps steps and
extrapolated, said so), plus the same for the course LN model. For each model the MEI step is set
beside its goal (issue 17): one forward + input-gradient backward of a batch of 100 through a
captured graph (no parameter gradients) against the MEI's C loop alone (capture and setup
excluded), per step, medians of --rounds alternating rounds.

    python bench/bench_analysis.py [--data SCAN] [--rf-neurons N] [--mei-steps 10] [--rounds 3]
"""
import argparse
import os
import statistics
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
    ap.add_argument("--rounds", type=int, default=3)
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
        steps = max(2, a.mei_steps)

        def mei(k):
            """the median time between the C loop's per-step progress calls after its first step
            (lviv_c._C.optimize_input: replay, backward, update; the first step, which allocates
            the engine's gradient buffers, and the capture excluded)"""
            with loop_timer() as t:
                generate_mei(model, img, list(range(100)), iterations=k, mean_constr=mean, std_constr=60.0,
                             progress=False)
            return statistics.median(np.diff(t.stamps[1:]))
        ref = fwd_bwd(model, img, 100)
        tm, tr = [], []
        for _ in range(a.rounds):          # alternating; a step after the first (whose buffer
            # allocation, 0.5-1.5 s, the reference's warm-up replay excludes there too)
            tm.append(mei(steps + 2))
            tr.append(ref(steps) / steps)
        ref.restore()
        dm, dr = statistics.median(tm), statistics.median(tr)
        print(f"{name:10s} MEI step for 100 neurons: {dm * 1e3:7.1f} ms; forward + input-gradient backward "
              f"of a batch of 100: {dr * 1e3:7.1f} ms (MEI / that: {dm / dr:.2f}); 1000 MEI steps: "
              f"{dm * 1000:6.1f} s (medians of {a.rounds} rounds of {steps} steps)")


class loop_timer:
    """Times the calls of lviv_c._C.optimize_input made inside the with-block (the MEI loop):
    `seconds` in all, `stamps` the times of its per-step progress calls (the start first)."""

    def __enter__(self):
        import lviv_c.analysis as A
        self.mod, self.orig, self.seconds, self.stamps = A, A._C, 0.0, []
        outer = self

        class Timed:
            def __getattr__(self, k):
                return getattr(outer.orig, k)

            def optimize_input(self, *args, **kw):
                inner = kw.get("progress")

                def stamp(done, total):
                    outer.stamps.append(time.perf_counter())
                    return inner(done, total) if inner else None
                kw["progress"] = stamp
                t0 = time.perf_counter()
                outer.stamps.append(t0)
                try:
                    return outer.orig.optimize_input(*args, **kw)
                finally:
                    outer.seconds += time.perf_counter() - t0
        A._C = Timed()
        return self

    def __exit__(self, *exc):
        self.mod._C = self.orig
        return False


def fwd_bwd(model, img, k):
    """A function timing n replays of one captured forward + input-gradient backward of k copies
    of img (eval mode, no parameter gradients): the analysis' floor in this engine."""
    from lviv_c import _C
    from lviv_c.tensor import from_numpy
    model.eval()
    for p in model.parameters():
        p.requires_grad = False
    x = from_numpy(np.repeat(img[None, None], k, 0).copy())
    x.requires_grad = True
    _C.capture_begin()
    out = model(x)
    loss = out.sum()
    g = _C.capture_end(x, None, out, loss, k)

    def run(n):
        t0 = time.perf_counter()
        for _ in range(n):
            _C.graph_replay(g)
            loss.backward(retain_graph=True)
        return time.perf_counter() - t0

    def restore():
        for p in model.parameters():
            p.requires_grad = True
        model.train()
    run.restore = restore
    run(1)                     # warm up: the first backward allocates the gradient buffers
    return run

if __name__ == "__main__":
    main()
