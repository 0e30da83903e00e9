"""Sweep throughput: trials per hour in this process (no Ray) and on a local Ray instance with 1
and 2 worker processes (1 CPU each), and where a trial's time goes: start (Ray scheduling, worker
start, argument and result transfer), data load, model build, training, test-tier evaluation,
state-dict serialisation and the driver's result write.

    python bench/bench_sweep.py [--data SCAN] [--model lurz] [--args JSON] [--trials 6] [--max-iter 3]

Default: a synthetic scan of 2000 trials x 500 neurons (36x64) in the cache, and a small Lurz 2020
model (8 hidden channels, 2 layers). Every mode runs the same trials (seeds) into a fresh folder;
wall time includes starting Ray. The in-process mode's C kernels use OpenMP over all cores
(OMP_NUM_THREADS to change); a Ray worker uses its 1 CPU.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import machine  # noqa: E402
from lviv_c import sweep  # noqa: E402
from lviv_c.demo import synthetic_scan  # noqa: E402

PARTS = ("load", "build", "train", "evaluate", "serialize", "write")


def run_mode(name, cfg, data, use_ray, workers):
    out = tempfile.mkdtemp(prefix="bench-sweep-")
    try:
        t0 = time.perf_counter()
        recs = sweep.run(cfg, data=data, out=out, use_ray=use_ray, workers=workers, verbose=False)
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    bad = [r for r in recs if r["status"] != "ok"]
    if bad:
        sys.exit(f"{name}: {len(bad)} trials failed: {bad[0]['error']}")
    n = len(recs)
    per = {k: statistics.median(r["timing"].get(k, 0.0) for r in recs) for k in PARTS}
    inside = sum(r["timing"]["total"] for r in recs) + sum(r["timing"]["write"] for r in recs)
    # what the wall time holds beyond the trials' own work, per trial and worker
    start = max(0.0, (wall * (workers or 1) - inside) / n)
    return {"mode": name, "trials": n, "wall": wall, "per_hour": 3600.0 * n / wall,
            "start": start, **per}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="scan folder (default: the quick synthetic scan)")
    ap.add_argument("--model", default="lurz", help="builder (default lurz)")
    ap.add_argument("--args", default='{"hidden_channels": 8, "layers": 2}',
                    help="builder arguments as JSON (default: a small Lurz model)")
    ap.add_argument("--trials", type=int, default=6, help="number of trials (seeds; default 6)")
    ap.add_argument("--max-iter", type=int, default=3, help="epochs per trial (default 3)")
    ap.add_argument("--no-ray", action="store_true", help="only the in-process mode")
    a = ap.parse_args()
    data = a.data or synthetic_scan(progress=False, n_trials=2000, n_neurons=500,
                                    n_test_images=50, n_repeats=10, n_validation=200)
    cfg = {"model": a.model, "args": json.loads(a.args), "seeds": list(range(1, a.trials + 1)),
           "train": {"max_iter": a.max_iter, "patience": a.max_iter}, "early_stop": False}
    modes = [("in-process (no Ray)", False, None)]
    if not a.no_ray:
        try:
            import ray  # noqa: F401
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            modes += [("Ray, 1 worker", True, 1), ("Ray, 2 workers", True, 2)]
        except ImportError:
            print("ray is not installed: only the in-process mode (pip install 'lviv_c[distributed]')")
    print(f"sweep bench: {a.trials} trials of {a.model}, {a.max_iter} epochs each, on "
          f"{os.path.basename(data)} ({machine()}; in-process OpenMP threads: "
          f"{os.environ.get('OMP_NUM_THREADS', 'all cores')}, Ray: 1 per worker)")
    rows = [run_mode(name, cfg, data, use_ray, workers) for name, use_ray, workers in modes]
    head = (f"{'mode':<22}{'wall s':>8}{'trials/h':>10}{'start':>8}"
            + "".join(f"{k:>10}" for k in PARTS))
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['mode']:<22}{r['wall']:>8.1f}{r['per_hour']:>10.0f}{r['start']:>8.2f}"
              + "".join(f"{r[k]:>10.3f}" for k in PARTS))
    print("per-trial seconds are medians; 'start' = (wall x workers - the trials' own time) / "
          "trials: Ray start-up, scheduling, worker start and transfers")


if __name__ == "__main__":
    main()
